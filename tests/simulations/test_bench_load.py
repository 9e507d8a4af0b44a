"""simulations.bench_load: the row read from a run's summary, the table, JSON and exit code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from simulations import bench_load


def _fake_run(complete: bool):
    def run(cmd, capture_output, text):
        k = int(next(a for a in cmd if a.startswith("num-supernodes="))[len("num-supernodes=") :])
        out = Path(next(a for a in cmd if a.startswith("output-dir="))[len("output-dir=") :])
        out.mkdir(parents=True)
        nodes = [
            {"status": "ok" if i else "rejected", "embed-seconds": 0.5, "align-seconds": 0.25}
            for i in range(k)
        ]
        summary = {
            "complete": complete,
            "missing-ids": [] if complete else [3, 4],
            "num-samples": 1797,
            "platform-memory-mb": {"baseline": 100.0, "peak": 150.0, "merged-targets": 0.4},
            "rounds": [{"phase-seconds": {"uniformity": 2.0, "align": 1.0}, "participants": nodes}],
        }
        (out / "summary.json").write_text(json.dumps(summary))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


def test_rows_table_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_load.subprocess, "run", _fake_run(True))
    assert bench_load.main(["--participants", "4", "8", "--output", str(tmp_path), "mix=weak"]) == 0
    data = json.loads((tmp_path / "bench_load.json").read_text())
    assert data["overrides"] == ["mix=weak"]
    first = data["runs"][0]
    assert (first["participants"], first["ok"], first["complete"], first["missing_ids"]) == (4, 3, True, 0)
    assert (first["participant_embed_s"], first["participant_align_s"]) == (2.0, 1.0)
    assert first["phase_s"] == {"uniformity": 2.0, "align": 1.0}
    out = capsys.readouterr().out
    assert "align (s)" in out and "100.0 / 150.0" in out and "mix=weak" in out


def test_an_incomplete_round_exits_1_and_a_failed_run_names_its_k(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_load.subprocess, "run", _fake_run(False))
    assert bench_load.main(["--participants", "4", "--output", str(tmp_path)]) == 1
    monkeypatch.setattr(
        bench_load.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "boom\n")
    )
    with pytest.raises(SystemExit, match="K=5 failed"):
        bench_load.main(["--participants", "5", "--output", str(tmp_path / "b")])
    with pytest.raises(SystemExit):
        bench_load.main(["--participants", "1"])
