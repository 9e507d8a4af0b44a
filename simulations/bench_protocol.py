"""Scaling of the collaborative data optimization with the number of participants K.

    python -m simulations.bench_protocol --data npz:../shared/data/cifar10/train.npz?subset=10000 \
        --prior efficientnet_lite0?size=96 --participants 1 2 4 --output outputs/bench-protocol

Every participant holds the same prior, so the only difference between runs is how the
work is split. ``sequential`` is one party embedding the whole data set alone with one
thread (what one Ray worker gets with ``client-resources-num-cpus=1``); a run with K
participants on W = min(K, cores) workers ideally takes sequential / W for the embedding,
plus alignment and the fixed cost of starting workers. Prints a table and writes
``bench_protocol.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from coopt_flwr.devices import available_cpus
from coopt_flwr.store.report import table
from coopt_flwr.store.storage import write_json


def sequential_seconds(data_spec: str, prior_spec: str, seed: int, threads: int = 1) -> float:
    """Wall time for one party to embed every image of ``data_spec`` with ``prior_spec``."""
    import torch

    from coopt_flwr.registry.datasets import create_dataset
    from coopt_flwr.registry.priors import create_prior

    data = create_dataset(data_spec)
    prior = create_prior(prior_spec, seed=seed, device="cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        prior.embed(data.images[:8])  # warm-up: first-call allocations are not embedding work
        start = time.perf_counter()
        for s in range(0, len(data), 1024):
            prior.embed(data.images[s : s + 1024], None if data.labels is None else data.labels[s : s + 1024])
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def collaborative(data_spec: str, prior_spec: str, k: int, seed: int, out: Path, fraction: float) -> dict:
    """One protocol run with ``k`` participants holding ``prior_spec``; phase times."""
    from simulations.run import launch

    t = time.perf_counter()
    summary = launch(
        {
            "dataset": data_spec,
            "priors": prior_spec,
            "min-nodes": k,
            "seed": seed,
            "shared-fraction": fraction,
            "output-dir": str(out / f"k{k}"),
        },
        num_supernodes=k,
    )
    wall = time.perf_counter() - t
    if not summary["complete"]:
        raise RuntimeError(f"K={k}: {len(summary['missing-ids'])} samples without targets")
    phases = summary["rounds"][-1]["phase-seconds"]
    return {"participants": k, "wall_seconds": wall, **{f"{p}_seconds": v for p, v in phases.items()}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="digits", help="data-set spec (default: digits)")
    parser.add_argument(
        "--prior", default="efficientnet_lite0?size=64", help="prior spec of every participant"
    )
    parser.add_argument("--participants", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--shared-fraction", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="outputs/bench-protocol")
    args = parser.parse_args(argv)
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    out = Path(args.output).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    cores = available_cpus()  # the cores this process may use, as the strategy's window counts them

    seq = sequential_seconds(args.data, args.prior, args.seed)
    print(f"[bench-protocol] sequential (one party, one thread): {seq:.1f} s", flush=True)
    runs = []
    for k in args.participants:
        run = collaborative(args.data, args.prior, k, args.seed, out, args.shared_fraction)
        workers = min(k, cores)
        run["workers"] = workers
        run["ideal_embedding_seconds"] = seq / workers
        # uniformity (S per participant, worker start-up) + align (the shards) is the embedding work
        run["embedding_seconds"] = run["uniformity_seconds"] + run["align_seconds"]
        run["ratio_to_ideal"] = run["embedding_seconds"] / run["ideal_embedding_seconds"]
        runs.append(run)
        print(f"[bench-protocol] K={k}: {run['embedding_seconds']:.1f} s embedding+alignment", flush=True)

    rows = [
        [
            str(r["participants"]),
            str(r["workers"]),
            f"{r['uniformity_seconds']:.1f}",
            f"{r['align_seconds']:.1f}",
            f"{r['embedding_seconds']:.1f}",
            f"{r['ideal_embedding_seconds']:.1f}",
            f"{r['ratio_to_ideal']:.2f}",
            f"{r['wall_seconds']:.1f}",
        ]
        for r in runs
    ]
    print(
        table(
            ["K", "workers", "uniformity s", "align s", "total s", "sequential/W s", "ratio", "wall s"], rows
        )
    )
    result = {
        "data": args.data,
        "prior": args.prior,
        "cores": cores,
        "sequential_seconds": seq,
        "shared_fraction": args.shared_fraction,
        "runs": runs,
    }
    write_json(out / "bench_protocol.json", result)
    return result


if __name__ == "__main__":
    main()
