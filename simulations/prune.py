"""Target-guided pruning: keep a fraction p of an optimized set's samples, chosen from the merged
targets alone (no labels, no images), and write their data-set ids.

    python -m simulations.prune optimized=outputs/run method=kcenter fraction=0.5 seed=0 output=kept.json
    python -m simulations.prune optimized=outputs/run/optimized.safetensors method=zcore fraction=0.3
    python -m simulations.prune optimized=outputs/run method=prototype fraction=0.3 +options.keep=easy

``optimized`` is a run's output folder or its ``optimized.safetensors`` (relative paths are tried
from the working directory, then from the project root). ``method`` is one of
:func:`coopt_flwr.learn.pruning.list_methods` (``random``, ``kcenter``, ``zcore``,
``prototype``), ``options`` its keyword options. The output JSON
(:func:`coopt_flwr.learn.pruning.save_kept_ids`) holds the kept *data-set ids* (the optimized
set's ``ids`` column at the chosen rows), the method, fraction, seed, the number of rows chosen
from, the source file and the method's effective options; the training command reads it with
:func:`coopt_flwr.learn.pruning.load_kept_ids`. One summary line is printed, with the time the
selection took.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from coopt_flwr.config import CONF_DIR
from coopt_flwr.store.storage import OPTIMIZED_FILE
from simulations.common import ROOT

CONF_PATH = str(CONF_DIR)


def input_path(path: str | Path) -> Path:
    """An input file or folder: ``~`` expanded; a relative path from the working directory if it
    exists there, else from the project root."""
    p = Path(str(path)).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    return (ROOT / p).resolve()


def optimized_file(path: str | Path) -> Path:
    """The ``optimized.safetensors`` of a run folder, or the file itself.

    Raises
    ------
    FileNotFoundError
        Naming the path when there is no such file.
    """
    p = input_path(path)
    if p.is_dir():
        p = p / OPTIMIZED_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"no optimized data set at {p} (give a run's output folder or its {OPTIMIZED_FILE})"
        )
    return p


def default_output(source: Path, method: str, fraction: float, seed: int) -> Path:
    """``kept-<method>-p<percent>-s<seed>.json`` beside the optimized set (e.g. ``kept-kcenter-p50-s0``)."""
    pct = f"{100 * float(fraction):g}".replace(".", "_")
    return source.parent / f"kept-{method}-p{pct}-s{int(seed)}.json"


def prune(
    optimized: str | Path,
    method: str,
    fraction: float,
    seed: int = 0,
    output: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Choose the kept samples of an optimized set and write their ids.

    Parameters
    ----------
    optimized
        A run's output folder or its ``optimized.safetensors``.
    method, fraction, seed, options
        As :func:`coopt_flwr.learn.pruning.select`.
    output
        The JSON to write; None: :func:`default_output`.
    progress
        tqdm bars on the method's long loops.
    log
        Receives the one-line summary.

    Returns
    -------
    dict
        ``output`` (Path), ``ids`` (sorted kept data-set ids), ``kept``, ``num_total``,
        ``seconds`` (the selection alone), ``source``, ``method``, ``fraction``, ``seed``,
        ``options`` (effective).
    """
    from coopt_flwr.learn.pruning import method_options, save_kept_ids, select
    from coopt_flwr.store.storage import load_optimized

    source = optimized_file(optimized)
    opt = load_optimized(source)
    ids, targets = np.asarray(opt["ids"], dtype=np.int64), opt["targets"]
    given = dict(options or {})
    start = time.perf_counter()
    rows = select(targets, fraction, method, seed, progress=progress, **given)
    seconds = time.perf_counter() - start
    kept = np.sort(ids[rows])
    effective = {**method_options(method), **given}
    out = Path(output).expanduser() if output else default_output(source, method, fraction, seed)
    save_kept_ids(
        out,
        kept,
        method=method,
        fraction=fraction,
        seed=seed,
        num_total=len(ids),
        source=str(source),
        options=effective,
    )
    log(
        f"[prune] {method} (seed {seed}, {effective}): kept {len(kept)} of {len(ids)} samples "
        f"(p = {float(fraction):g}) of {targets.shape[1]}-d targets in {seconds:.1f} s -> {out}"
    )
    return {
        "output": out,
        "ids": kept,
        "kept": len(kept),
        "num_total": len(ids),
        "seconds": seconds,
        "source": source,
        "method": method,
        "fraction": float(fraction),
        "seed": int(seed),
        "options": effective,
    }


def run_prune(cfg: DictConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """:func:`prune` with the settings of a ``conf/prune.yaml`` config."""
    options = OmegaConf.to_container(cfg.options, resolve=True) if cfg.get("options") else {}
    return prune(
        str(cfg.optimized),
        str(cfg.method),
        float(cfg.fraction),
        int(cfg.seed),
        None if cfg.get("output") in (None, "") else str(cfg.output),
        options,  # type: ignore[arg-type]
        progress=bool(cfg.get("progress", False)),
        log=log,
    )


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="prune")
def main(cfg: DictConfig) -> None:
    run_prune(cfg)


if __name__ == "__main__":
    main()
