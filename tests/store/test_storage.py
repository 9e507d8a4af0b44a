import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coopt_flwr.store.storage import (
    LOCK_FILE,
    OutputDirBusyError,
    file_sha256,
    load_optimized,
    lock_output_dir,
    write_json,
    write_tensors,
    write_tensors_hashed,
)

ROOT = Path(__file__).resolve().parents[2]


def test_roundtrip_and_no_temp_files_left(tmp_path):
    tensors = {"ids": np.arange(4, dtype=np.int64), "targets": np.ones((4, 3), np.float32)}
    write_tensors(tmp_path / "optimized.safetensors", tensors)
    write_json(tmp_path / "summary.json", {"a": np.float32(1.5), "b": np.arange(2), "c": tmp_path})
    out = load_optimized(tmp_path)
    np.testing.assert_array_equal(out["ids"], tensors["ids"])
    assert json.loads((tmp_path / "summary.json").read_text())["b"] == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimized.safetensors", "summary.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_corrupt_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_optimized(tmp_path / "none.safetensors")
    bad = tmp_path / "optimized.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_optimized(bad)


def test_streamed_safetensors_are_read_by_the_official_loader(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    arrays = {
        "targets": np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32),
        "ids": np.arange(7, dtype=np.int64),
        "empty": np.zeros((0, 3), np.float32),
        "mask": np.array([True, False, True]),
        "f64-view": np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2],  # not contiguous
    }
    write_tensors(tmp_path / "x.safetensors", arrays, metadata={"target-dim": "5"})
    back = load_file(str(tmp_path / "x.safetensors"))
    assert set(back) == set(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype
    with safe_open(str(tmp_path / "x.safetensors"), "np") as fh:
        assert fh.metadata() == {"target-dim": "5"}
    with pytest.raises(TypeError, match="unsupported dtype"):
        write_tensors(tmp_path / "y.safetensors", {"c": np.zeros(2, np.complex64)})
    assert not list(tmp_path.glob(".y.safetensors.*"))  # no temp file left behind


def test_hashed_write_gives_the_file_digest_and_the_same_bytes(tmp_path):
    arrays = {"a": np.arange(10, dtype=np.float32).reshape(2, 5), "b": np.zeros(0, np.int64)}
    digest = write_tensors_hashed(tmp_path / "h.safetensors", arrays, metadata={"k": "v"})
    write_tensors(tmp_path / "p.safetensors", arrays, metadata={"k": "v"})
    assert digest == file_sha256(tmp_path / "h.safetensors") == file_sha256(tmp_path / "p.safetensors")
    assert digest == hashlib.sha256((tmp_path / "h.safetensors").read_bytes()).hexdigest()


# ------------------------------------------------------------------ the output folder's lock
_HOLD = """
import sys, time
from coopt_flwr.store.storage import lock_output_dir
with lock_output_dir(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(folder):
    """A second process holding the folder's lock (it prints 'locked' once it does)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_lock_on_one_folder_is_refused_and_the_first_released_on_exit(tmp_path):
    out = tmp_path / "run"
    with lock_output_dir(out) as folder:
        assert folder == out and (out / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(OutputDirBusyError, match=rf"output-dir {out} is in use by another run \(pid"):
            with lock_output_dir(out):
                pass
    with lock_output_dir(out):  # released when the first one ended
        pass
    with pytest.raises(RuntimeError), lock_output_dir(out):
        raise RuntimeError("the run failed")
    with lock_output_dir(out):  # released on an error too
        pass


def test_a_lock_held_by_another_process_is_refused_and_a_killed_holder_blocks_nobody(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(OutputDirBusyError, match=rf"pid {proc.pid}\)"):
            with lock_output_dir(tmp_path):
                pass
    finally:
        proc.kill()  # SIGKILL: no clean-up runs, the lock file stays
        proc.wait()
    assert (tmp_path / LOCK_FILE).is_file()
    with lock_output_dir(tmp_path):  # the stale file does not block
        pass
