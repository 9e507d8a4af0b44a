"""The deployment benchmark's memory gate, over fake results (the benchmark itself takes minutes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simulations import bench_deploy
from simulations.bench_deploy import DEFAULT_MAX_PEAK_RATIO, memory_check, memory_table, peak_ratio


def _payload(peak: float, before: float = 152.1, merged: float = 101.6) -> dict[str, Any]:
    """A :func:`bench_deploy.payload` row with the figures the gate reads (MiB)."""
    return {
        "scenario": "50,000-sample shard at n = 512",
        "upload_max_samples": 4096,
        "round_wall_seconds": 169.0,
        "samples": 52_000,
        "merged_targets_mb": merged,
        "platform_baseline_mb": before,
        "platform_peak_mb": peak,
        "platform_peak_over_baseline_per_merged": peak_ratio(peak, before, merged),
        "superlink_peak_mb": 398.1,
        "samples_lost": 0,
    }


# The three measured rows of docs/DEPLOYMENT.md: (before, peak, merged) -> ratio, passes 2.0?
@pytest.mark.parametrize(
    ("before", "peak", "ratio", "passed"),
    [(154.7, 423.8, 2.65, False), (152.4, 388.5, 2.32, False), (152.1, 324.9, 1.70, True)],
)
def test_the_documented_rows_are_gated_at_the_documented_bound(
    before: float, peak: float, ratio: float, passed: bool
) -> None:
    check = memory_check(_payload(peak, before))
    assert check["max_ratio"] == DEFAULT_MAX_PEAK_RATIO == 2.0
    assert check["ratio"] == pytest.approx(ratio, abs=0.005) and check["passed"] is passed
    assert check["platform_peak_mb"] == peak and check["platform_baseline_mb"] == before
    word = "passed" if passed else "FAILED"
    assert check["message"].startswith(f"memory check {word}: platform peak {peak:.1f} MiB")
    assert f"(peak - before) / merged = {ratio:.2f}" in check["message"]


def test_the_bound_is_inclusive_and_an_option() -> None:
    at_bound = _payload(peak=100.0 + 2 * 50.0, before=100.0, merged=50.0)  # exactly 2.0
    assert memory_check(at_bound)["passed"]
    assert not memory_check(at_bound, max_ratio=1.99)["passed"]
    assert memory_check(_payload(423.8, 154.7), max_ratio=3.0)["passed"]


@pytest.mark.parametrize(
    "payload", [_payload(300.0, merged=0.0), _payload(float("nan")), _payload(300.0, merged=float("inf"))]
)
def test_a_ratio_that_cannot_be_measured_fails(payload: dict[str, Any]) -> None:
    check = memory_check(payload)
    assert not check["passed"] and check["ratio"] is None
    assert check["message"].startswith("memory check FAILED: no ratio to check")


def test_the_table_puts_the_absolute_peak_beside_the_ratio() -> None:
    payload = _payload(324.9)
    header, _, row = memory_table(payload, memory_check(payload))
    cells = dict(zip(header.strip("|").split("|"), row.strip("|").split("|"), strict=True))
    cells = {k.strip(): v.strip() for k, v in cells.items()}
    assert cells["platform peak RSS (MiB)"] == "324.9" and cells["(peak - before) / merged"] == "1.70"
    assert cells["bound"] == "2.00" and cells["merged targets (MiB)"] == "101.6"


@pytest.mark.parametrize(("peak", "status"), [(324.9, 0), (388.5, 1)])
def test_main_ends_with_the_verdict_and_its_exit_status(
    peak: float, status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(bench_deploy, "payload", lambda workdir, cifar, part: _payload(peak, before=152.4))
    assert bench_deploy.main(["--nodes", "--payload", "--output", str(tmp_path)]) == status
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("memory check FAILED" if status else "memory check passed")
    saved = json.loads((tmp_path / "bench_deploy.json").read_text())  # written before the verdict
    assert saved["memory_check"]["passed"] is (status == 0)
    assert saved["memory_check"]["platform_peak_mb"] == peak


def test_main_without_the_payload_checks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert bench_deploy.main(["--nodes", "--output", str(tmp_path)]) == 0
    assert "memory check" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_deploy.main(["--nodes", "--payload", "--max-peak-ratio", "0", "--output", str(tmp_path)])
