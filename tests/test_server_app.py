"""The ServerApp on bad input: the reason first, on one line, before any node work; the output
folder locked for the run's lifetime."""

from __future__ import annotations

import json
import traceback

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from harness import InProcessGrid, register_counting_prior

from coopt_flwr.client_app import make_client_app
from coopt_flwr.config import MIN_SHARED_SAMPLES, ConfigError, Settings, shared_set_size
from coopt_flwr.protocol.merge import MergedTargets
from coopt_flwr.server_app import make_server_app
from coopt_flwr.store.storage import OutputDirBusyError, lock_output_dir
from strategies.checkpoint import CheckpointError, Checkpoints, PlatformState

PRIORS = "counting:a?dim=12,counting:b?dim=10,human"


class _NoGrid:
    """A grid that must not be touched: the run has to stop before any node work."""

    def __getattr__(self, name):
        raise AssertionError(f"the ServerApp used the grid ({name}) before refusing its input")


def _context() -> Context:
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})


def _refused(overrides, capsys, error=ConfigError, first=True) -> str:
    """Run the ServerApp, expect ``error``; return its error line (``first``: the first line)."""
    with pytest.raises(error) as info:
        make_server_app(overrides)(_NoGrid(), _context())
    lines = capsys.readouterr().out.splitlines()
    line = f"[coopt] error: {info.value}"
    assert line == lines[0] if first else line in lines
    assert "\n" not in str(info.value)
    # Flower logs the exception with its frames: only the ServerApp's own, no chained cause.
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert traceback.extract_tb(info.value.__traceback__)[-1].name == "main"
    return line


@pytest.mark.parametrize(
    "override,match",
    [
        ({"shared-fraction": 1.5}, "shared-fraction must lie in (0, 1)"),
        ({"priors": "human,efficientnet_lit0"}, "unknown prior 'efficientnet_lit0'"),
        ({"dataset": "nosuch"}, "unknown data set 'nosuch'"),
        ({"seed": -1}, "seed must be an integer between 0 and"),
        ({"target-dim": 1e9}, "target-dim must be an integer between 1 and 65,536"),
        ({"dataset": "npz:/no/such/file.npz"}, "dataset 'npz:/no/such/file.npz' cannot be loaded"),
    ],
)
def test_bad_values_stop_the_run_with_one_line_first(tmp_path, capsys, override, match):
    line = _refused({"output-dir": str(tmp_path / "out"), **override}, capsys)
    assert match in line


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    afile = tmp_path / "out"
    afile.write_text("not a folder")
    assert "is an existing file" in _refused({"output-dir": str(afile)}, capsys)


def test_a_second_run_on_the_same_output_dir_is_refused_at_start(tmp_path, capsys):
    with lock_output_dir(tmp_path):  # the first run
        line = _refused({"output-dir": str(tmp_path)}, capsys, OutputDirBusyError)
    assert "is in use by another run" in line


def test_a_data_set_too_small_for_the_shared_set_is_refused_on_the_server(tmp_path, capsys):
    path = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8), y=np.arange(30) % 3)
    line = _refused({"output-dir": str(tmp_path / "out"), "dataset": f"npz:{path}"}, capsys)
    assert "has 30 samples, so shared-fraction 0.1 gives a shared set S of 3" in line


def test_a_tampered_checkpoint_stops_the_run_with_one_line(tmp_path, capsys):
    overrides = {"output-dir": str(tmp_path), "target-dim": 4}
    checkpoints = Checkpoints(Settings.from_config({}, overrides), log=lambda s: None)
    merged = MergedTargets(1797, 4)
    checkpoints.save(1, "done", {}, None, None, merged, PlatformState())
    tensors = tmp_path / json.loads(checkpoints.path.read_text())["tensors"]
    tensors.write_bytes(tensors.read_bytes()[:-8] + bytes(8))
    line = _refused(overrides, capsys, CheckpointError, first=False)  # after the folder's name
    assert "does not match the sha256" in line


def test_the_smallest_shared_set_allowed_carries_a_run_and_the_folder_stays_locked(tmp_path):
    # 40 images and shared-fraction 0.1: |S| = 4, the minimum, with three participants, so
    # screening's held-out check runs on it (30 images, |S| = 3, crashed there).
    register_counting_prior()
    overrides = {
        "dataset": "digits?subset=40",
        "priors": PRIORS,
        "output-dir": str(tmp_path),
        "target-dim": 6,
        "min-nodes": 3,
        "node-wait-timeout": 5.0,
        "step-timeout": 60.0,
    }
    assert shared_set_size(40, 0.1) == MIN_SHARED_SAMPLES
    busy = []

    def on_round(result, merged):
        with pytest.raises(OutputDirBusyError):  # held by the running ServerApp
            with lock_output_dir(tmp_path):
                pass
        busy.append(result.round)

    grid = InProcessGrid(make_client_app(overrides), 3)
    make_server_app(overrides, on_round=on_round)(grid, _context())
    summary = json.loads((tmp_path / "summary.json").read_text())
    # It completes (below 4, screening raised); whom it accepts on so small an S is screening's.
    assert busy == [1] and summary["complete"] and len(summary["participants"]) == 3
    with lock_output_dir(tmp_path):  # released when the run ended
        pass
