"""Human-readable summary table of a run (printed by the ServerApp and the launcher)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain-text table with columns sized to their content."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
    return "\n".join([line, sep, *body])


def format_summary(summary: dict[str, Any]) -> str:
    """Render ``summary.json`` content: participants, G, and time per phase of the last round."""
    last = summary["rounds"][-1]
    anchor = last["anchor-partition"]
    # Runs with evolution paths show each participant's stage (0-based) and the upgrades.
    evolving = any(p.get("num-stages", 1) > 1 for p in last["participants"])
    # anchor-rule "consensus" scores every participant; the column is shown only then.
    consensus = any(p.get("consensus") is not None for p in last["participants"])
    rows = []
    for p in last["participants"]:
        stage = [f"{p['stage']}/{p['num-stages'] - 1}"] if evolving else []
        rows.append(
            [
                _fmt(p["partition-id"]),
                p["prior"] or "?",
                p["prior-kind"] or "?",
                *stage,
                _fmt(p["feature-dim"]),
                _fmt(p["uniformity"]),
                *([_fmt(p.get("consensus"), ".3f")] if consensus else []),
                "*" if p["partition-id"] == anchor and p["status"] == "ok" else "",
                _fmt(p["residual"], ".3f"),
                _fmt(p.get("residual-oos"), ".3f"),
                _fmt(p["samples"]),
                _fmt(p["embed-seconds"] + p["align-seconds"], ".1f"),
                p["status"] + (f" ({p['reason']})" if p["reason"] else ""),
            ]
        )
    headers = [
        "part",
        "prior",
        "kind",
        *(["stage"] if evolving else []),
        "dim",
        "uniformity",
        *(["consensus"] if consensus else []),
        "anchor",
        "residual",
        "res oos",
        "samples",
        "embed s",
        "status",
    ]
    phases = "  ".join(f"{k} {v:.1f}s" for k, v in last["phase-seconds"].items())
    complete = "all" if summary["complete"] else f"MISSING {len(summary['missing-ids'])} of"
    lines = [
        "",
        f"CoOpt round {last['round']}: {len(last['participants'])} participants, "
        f"{complete} {summary['num-samples']} samples merged, |S|={summary['shared-samples']}, "
        f"n={summary['target-dim']}",
        table(headers, rows),
        f"anchor: participant {anchor} ({last['anchor-prior']})   "
        f"G before alignment {_fmt(last['g-before'], '.3f')} -> after {_fmt(last['g-after'], '.3f')}"
        f"   reassigned {last['reassigned']}",
        f"time per phase: {phases}",
    ]
    redundancy = last.get("redundancy", 1)
    if redundancy > 1:
        lines.append(
            f"redundancy {redundancy}: every sample the mean of {redundancy} participants' targets, "
            f"{last.get('fewer-contributions', 0)} from fewer"
        )
    if evolving:
        lines.append(f"upgraded at the start of this round: partitions {last.get('upgraded', [])}")
    return "\n".join(lines)
