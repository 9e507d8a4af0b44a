"""The training command on digits: end to end in seconds, exported weights that load back,
the held-out probe, resume, keep-ids, and clear refusals of optimized sets that do not fit."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from coopt_flwr.learn.export import load_student, read_student_meta
from coopt_flwr.learn.optimized import fingerprint
from coopt_flwr.learn.probe import extract_features
from coopt_flwr.learn.student import Student
from coopt_flwr.learn.training import CHECKPOINT_LAST, load_checkpoint
from coopt_flwr.registry.datasets import create_dataset
from coopt_flwr.store.storage import load_optimized, write_json, write_tensors
from simulations.train import CONF_PATH, main, run_train, stratified_holdout

SPEC = "digits?subset=200"
N = 200
DIM = 16


def _run_output(
    folder: Path, *, ids=None, spec: str = SPEC, summary: dict | bool | None = None, **extra
) -> Path:
    """A protocol run's output: targets carrying the class (a random projection of the one-hot
    label plus noise), and a summary.json recording the data set like the platform's."""
    data = create_dataset(spec)
    ids = np.arange(len(data), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    rng = np.random.default_rng(0)
    labels = data.labels[np.minimum(ids, len(data) - 1)]
    targets = (
        np.eye(10)[labels] @ rng.normal(size=(10, DIM)) + 0.3 * rng.normal(size=(len(ids), DIM))
    ).astype(np.float32)
    zeros = np.zeros(len(ids), dtype=np.int64)
    arrays = {"ids": ids, "targets": targets, "participant": zeros, "round": zeros, "stage": zeros, **extra}
    write_tensors(folder / "optimized.safetensors", arrays)
    if summary is not False:
        record = {
            "num-samples": len(data),
            "data-mode": "platform",
            "complete": True,
            "config": {"dataset": spec, "data-root": ""},
        }
        write_json(folder / "summary.json", {**record, **(summary or {})})
    return folder


def _cfg(run: Path, out: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_PATH, version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
                f"optimized={run}",
                f"output-dir={out}",
                "epochs=2",
                "batch-size=32",
                "progress=false",
                *overrides,
            ],
        )


@pytest.fixture
def run(tmp_path) -> Path:
    return _run_output(tmp_path / "run")


def test_the_command_trains_probes_and_exports_a_loadable_student(run, tmp_path):
    out = tmp_path / "out"
    lines: list[str] = []
    record = run_train(_cfg(run, out), log=lines.append)
    # The data set came from summary.json; 20 of each class, 4 held out per class for the probe.
    assert record["dataset"] == SPEC
    assert record["samples"] == {
        "optimized": N,
        "kept": None,
        "trained": 160,
        "held_out": 40,
        "probe_train": 160,
    }
    assert record["epochs"] == pytest.approx(2.0) and len(record["losses"]) == 2
    assert len(record["curve"]) == 2 and 0.0 <= record["probe_acc"] <= 1.0
    assert (
        record["probe_acc"] == record["curve"][-1][1]
        and record["probe_acc_untrained"] == record["curve"][0][1]
    )
    assert json.loads((out / "train.json").read_text())["probe_acc"] == record["probe_acc"]
    assert lines[-1].startswith("[train] cifar_resnet10 on 160 samples of digits?subset=200: 2.0 epochs")
    assert "probe accuracy" in lines[-1]

    meta = read_student_meta(out)
    assert meta.optimized_fingerprint == fingerprint(load_optimized(run)) == record["optimized_fingerprint"]
    assert (meta.arch, meta.input_size, meta.target_dim) == ("cifar_resnet10", (3, 8, 8), DIM)
    # The exported weights give the features of the trained student (its final checkpoint).
    student = Student.create("cifar_resnet10", DIM, seed=123)
    load_checkpoint(out / "checkpoints" / "segment-00" / CHECKPOINT_LAST, [student])
    model = load_student(out, device="cpu")
    images = create_dataset(SPEC).images[:32]
    kw = {"mean": meta.mean, "std": meta.std}
    assert np.allclose(
        extract_features(model, images, **kw), extract_features(student.backbone, images, **kw), atol=1e-5
    )
    assert tuple(record["normalization"]["mean"]) == meta.mean


def test_the_holdout_is_stratified_seeded_and_never_trained_on():
    labels = np.repeat(np.arange(3), [10, 5, 1])
    mask = stratified_holdout(labels, 0.2, seed=3)
    assert [int(mask[labels == c].sum()) for c in range(3)] == [2, 1, 0]  # a lone sample stays in
    assert np.array_equal(mask, stratified_holdout(labels, 0.2, seed=3))
    assert not np.array_equal(mask, stratified_holdout(labels, 0.2, seed=4))
    assert not stratified_holdout(labels, 0.0, seed=3).any()
    with pytest.raises(ValueError, match="probe-holdout"):
        stratified_holdout(labels, 1.0, seed=3)


def test_probe_holdout_zero_trains_on_everything(run, tmp_path):
    record = run_train(_cfg(run, tmp_path / "out", "probe-holdout=0", "epochs=1"), log=lambda s: None)
    assert record["samples"]["trained"] == N and record["samples"]["held_out"] == 0
    assert record["probe_acc"] is None and record["curve"] == []


def test_a_time_budget_and_an_explicit_dataset(run, tmp_path):
    # Same ids, other image size: the pairing is by row index.
    cfg = _cfg(
        run, tmp_path / "out", "epochs=null", "time-budget-s=0.5", "dataset='digits?subset=200&size=16'"
    )
    record = run_train(cfg, log=lambda s: None)
    assert record["image_size"] == [16, 16] and record["train_seconds"] >= 0.5


def test_resume_continues_for_the_budget_left(run, tmp_path):
    out = tmp_path / "out"
    first = run_train(_cfg(run, out, "epochs=1"), log=lambda s: None)
    lines: list[str] = []
    second = run_train(_cfg(run, out, "epochs=2", "resume=true"), log=lines.append)
    assert any("resuming after 1.00 epochs" in line for line in lines)
    assert second["epochs"] == pytest.approx(2.0) and len(second["losses"]) == 2
    assert second["losses"][0] == first["losses"][0] and [s["segment"] for s in second["resumed_from"]] == [
        "segment-00"
    ]
    assert (out / "checkpoints" / "segment-01" / CHECKPOINT_LAST).is_file()
    third = run_train(_cfg(run, out, "epochs=2", "resume=true"), log=lambda s: None)
    assert third["epochs"] == pytest.approx(2.0) and third["steps"] == second["steps"]  # nothing left to do
    with pytest.raises(ValueError, match=r"cannot resume.*seed"):
        run_train(_cfg(run, out, "epochs=3", "resume=true", "seed=1"), log=lambda s: None)
    fresh = run_train(_cfg(run, out, "epochs=1"), log=lambda s: None)  # resume=false starts over
    assert fresh["resumed_from"] == [] and not (out / "checkpoints" / "segment-01").exists()


def test_keep_ids_trains_on_the_kept_ids_only(run, tmp_path, monkeypatch):
    # The pruning module's reader (its own tests cover it): a JSON with the kept ids.
    fake = types.ModuleType("coopt_flwr.learn.pruning")
    fake.load_kept_ids = lambda path: np.asarray(json.loads(Path(path).read_text())["ids"], dtype=np.int64)
    monkeypatch.setitem(sys.modules, "coopt_flwr.learn.pruning", fake)
    kept = tmp_path / "kept.json"
    kept.write_text(json.dumps({"ids": list(range(0, N, 2))}))
    record = run_train(_cfg(run, tmp_path / "out", f"keep-ids={kept}", "epochs=1"), log=lambda s: None)
    s = record["samples"]
    assert s["kept"] == 100 and s["trained"] < 100 and s["held_out"] == 40 and s["probe_train"] == 160
    kept.write_text(json.dumps({"ids": [0, 500]}))
    with pytest.raises(ValueError, match="not in the optimized set"):
        run_train(_cfg(run, tmp_path / "out2", f"keep-ids={kept}"), log=lambda s: None)


# ---------------------------------------------------------------------------- refusals
def test_ids_beyond_the_data_set_are_refused(tmp_path):
    run = _run_output(tmp_path / "run", ids=np.arange(250), summary=False)
    with pytest.raises(ValueError, match=r"holds id 249, outside the data set's range \[0, 200\)"):
        run_train(_cfg(run, tmp_path / "out", f"dataset='{SPEC}'"), log=lambda s: None)


def test_a_data_set_of_another_size_than_the_runs_is_refused(run, tmp_path):
    with pytest.raises(
        ValueError, match=r"made from a data set of 200 samples \(digits\?subset=200\), but digits holds 1797"
    ):
        run_train(_cfg(run, tmp_path / "out", "dataset=digits"), log=lambda s: None)
    assert not (tmp_path / "out").exists()  # refused before any output


def test_local_data_mode_sets_are_refused(tmp_path):
    run = _run_output(tmp_path / "a", summary={"data-mode": "local"})
    with pytest.raises(ValueError, match="local-data-mode run"):
        run_train(_cfg(run, tmp_path / "out"), log=lambda s: None)
    run = _run_output(tmp_path / "b", summary=False, **{"local-index": np.arange(N, dtype=np.int64)})
    with pytest.raises(ValueError, match="local data mode"):
        run_train(_cfg(run, tmp_path / "out", f"dataset='{SPEC}'"), log=lambda s: None)


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no optimized set at"):
        run_train(_cfg(tmp_path / "nowhere", tmp_path / "out"), log=lambda s: None)
    run = _run_output(tmp_path / "run", summary=False)
    with pytest.raises(ValueError, match="pass dataset=SPEC"):
        run_train(_cfg(run, tmp_path / "out"), log=lambda s: None)


def test_the_cli_prints_one_summary_line(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli"
    argv = ["train", f"optimized={run / 'optimized.safetensors'}", f"output-dir={out}"]
    argv += [f"hydra.run.dir={tmp_path / 'hydra'}", "epochs=1", "batch-size=64", "progress=false"]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("[train] cifar_resnet10 on 160 samples") and str(out) in last
    assert (out / "student.safetensors").is_file() and (out / "train.json").is_file()
