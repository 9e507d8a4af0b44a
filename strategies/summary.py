"""``summary.json``: one entry per round and the run's state after its last round.

Every key is kebab-case, like the run-config: participants are
:meth:`strategies.records.NodeRecord.public`, ``config`` the run-config keys of the run's
:class:`coopt_flwr.config.Settings`.
"""

from __future__ import annotations

import resource
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from coopt_flwr.config import DEFAULTS, Settings
from coopt_flwr.protocol.alignment import RIDGE_AUTO
from coopt_flwr.protocol.merge import MergedTargets
from strategies.records import RoundResult

__all__ = ["config_summary", "round_summary", "run_summary"]


def config_summary(settings: Settings) -> dict[str, Any]:
    """The run's settings under their run-config keys (:data:`coopt_flwr.config.DEFAULTS`).

    ``priors`` is the list of configured entries (a spec or an evolution path ``"a > b"``
    each, after ``prior-mix`` is resolved), ``output-dir`` the resolved path. ``prior-mix`` is
    left out (it is resolved into ``priors``), and so is the derived ``paths``.
    """
    values = {f.name.replace("_", "-"): getattr(settings, f.name) for f in fields(settings)}
    config: dict[str, Any] = {}
    for key in DEFAULTS:
        if key in values:
            v = values[key]
            config[key] = list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v
    if settings.ridge is None:  # the run-config's spelling, not the dataclass's
        config["ridge"] = RIDGE_AUTO
    return config


def round_summary(r: RoundResult) -> dict[str, Any]:
    """The summary entry of one round."""
    return {
        "round": r.round,
        "anchor-partition": r.anchor_partition,
        "anchor-prior": r.anchor_prior,
        "g-before": r.g_before,
        "g-after": r.g_after,
        "phase-seconds": r.phase_seconds,
        "missing": r.missing,
        "reassigned": r.reassigned,
        "upgraded": r.upgraded,
        "redundancy": r.redundancy,
        "fewer-contributions": r.fewer_contributions,
        "ridge": r.ridge,
        "metrics": r.metrics,
        "participants": [n.public() for n in r.nodes],
    }


def run_summary(
    last: RoundResult,
    *,
    settings: Settings,
    merged: MergedTargets,
    shared_samples: int,
    rounds: list[dict[str, Any]],
    resumes: list[dict[str, Any]],
    baseline_rss_mb: float,
    namespace: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """The content of ``summary.json`` after the round ``last``.

    Parameters
    ----------
    last
        The round just finished.
    settings
        The run's settings.
    merged
        The merged set after ``last``.
    shared_samples
        |S|.
    rounds
        :func:`round_summary` of every round so far (``last`` included).
    resumes
        Where each restart picked up the run.
    baseline_rss_mb
        The platform's resident memory before the first round.
    namespace
        Local data mode: participant name → its block of global ids (``id-namespace``).
    """
    missing = merged.missing_ids()
    # Rows merged in a round whose anchor differs from this round's live in that anchor's
    # space, not this one's (local mode: a participant absent since then kept its rows).
    anchors = {int(r["round"]): (r["anchor-partition"], r["anchor-prior"]) for r in rounds}
    latest = (last.anchor_partition, last.anchor_prior)
    other = [q for q, a in anchors.items() if a != latest]
    stale = int(np.isin(merged.round, other).sum()) if other else 0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    merged_mb = merged.targets.nbytes / 2**20
    summary = {
        "num-samples": merged.num_samples,
        "shared-samples": shared_samples,
        "target-dim": settings.target_dim,
        "data-mode": settings.data_mode,
        "complete": bool(len(missing) == 0 and stale == 0),
        "missing-ids": missing.tolist(),
        "stale-samples": stale,
        "anchor": {
            "partition": last.anchor_partition,
            "prior": last.anchor_prior,
            "rule": settings.anchor_rule,
        },
        "g-before": last.g_before,
        "g-after": last.g_after,
        "participants": [r.public() for r in last.nodes],
        "rounds": rounds,
        "resumes": resumes,
        "platform-memory-mb": {
            "baseline": round(baseline_rss_mb, 1),
            "peak": round(peak_mb, 1),
            "merged-targets": round(merged_mb, 1),
        },
        "config": config_summary(settings),
    }
    if namespace is not None:
        summary["id-namespace"] = namespace
    return summary
