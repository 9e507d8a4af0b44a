"""Load: how long one CoOpt round takes, and what it costs the platform, with K participants.

    python -m simulations.bench_load --participants 100 1000 --output outputs/bench-load
    python -m simulations.bench_load --participants 1000 mix=weak      # more simulations.run keys

Each K runs ``python -m simulations.run num-supernodes=K`` (the embedded default: digits, the
default mix cycled over the participants, one round) in a fresh process, so Ray starts anew
every time, and reads the run's ``summary.json``: wall time of the whole command, the round's
phases (uniformity, align, merge ...), how many participants ended ok, whether every sample was
merged exactly once (``complete``, ``missing-ids``), and the platform's resident memory; and
where the time went: the participants' own embedding and alignment seconds (summed over all of
them, as they report them), against the wall time of the phases. Prints a table and writes
``bench_load.json``. A timed run is valid only on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from coopt_flwr.store.report import table
from coopt_flwr.store.storage import SUMMARY_FILE, write_json


def run_once(k: int, out: Path, extra: list[str]) -> dict[str, Any]:
    """One round with ``k`` virtual participants; the row of the table."""
    run_dir = out / f"k{k}"
    # A finished run in the folder would be resumed (done in seconds): every K starts afresh.
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "simulations.run", f"num-supernodes={k}", f"output-dir={run_dir}", *extra]
    print(f"[bench-load] K={k}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / f"k{k}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"error: K={k} failed (exit {done.returncode}):\n" + "\n".join(tail))
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    last = summary["rounds"][-1]
    nodes = last["participants"]
    return {
        "participants": k,
        "wall_s": round(wall, 1),
        "phase_s": {name: round(float(s), 1) for name, s in last["phase-seconds"].items()},
        "ok": sum(n.get("status") == "ok" for n in nodes),
        "participant_embed_s": round(sum(float(n.get("embed-seconds", 0.0)) for n in nodes), 1),
        "participant_align_s": round(sum(float(n.get("align-seconds", 0.0)) for n in nodes), 1),
        "complete": bool(summary["complete"]),
        "missing_ids": len(summary["missing-ids"]),
        "samples": int(summary["num-samples"]),
        "platform_memory_mb": summary["platform-memory-mb"],  # baseline, peak, merged-targets
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--output", type=Path, default=Path("outputs/bench-load"))
    ap.add_argument("overrides", nargs="*", help="more simulations.run overrides, e.g. mix=weak")
    args = ap.parse_args(argv)
    if any(k < 2 for k in args.participants):
        ap.error("--participants: at least 2 each")
    args.output.mkdir(parents=True, exist_ok=True)
    rows = [run_once(k, args.output, args.overrides) for k in args.participants]
    phases = sorted({p for r in rows for p in r["phase_s"]})
    headers = ["K", "wall (s)", *[f"{p} (s)" for p in phases], "participants' embed + align (s)"]
    headers += ["ok", "complete", "platform MiB (start / peak)"]
    cells = [
        [
            r["participants"],
            r["wall_s"],
            *[r["phase_s"].get(p, "") for p in phases],
            f"{r['participant_embed_s']} + {r['participant_align_s']}",
            r["ok"],
            r["complete"],
            "{baseline} / {peak}".format(**r["platform_memory_mb"]),
        ]
        for r in rows
    ]
    print(table(headers, [[str(c) for c in row] for row in cells]))
    write_json(args.output / "bench_load.json", {"overrides": args.overrides, "runs": rows})
    return 0 if all(r["complete"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
