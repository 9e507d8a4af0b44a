"""Run settings: the flat kebab-case run-config read once at the top of each app.

:data:`DEFAULTS` is the one source of the defaults in code. The same keys and values are the
``[tool.flwr.app.config]`` table of ``pyproject.toml`` (``flwr run`` reads them from there; a
test keeps both equal), and the Hydra configs of ``simulations/`` spell them the same way
(:func:`simulations.common.run_config_overrides` passes them to the app factories).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from coopt_flwr.protocol.alignment import RIDGE_AUTO
from coopt_flwr.protocol.evolution import format_path, parse_path


def conf_dir() -> Path:
    """The Hydra configs and named prior mixes: the copy packaged in the wheel
    (``coopt_flwr/conf``) when there is one, else the checkout's ``conf/``."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return packaged if packaged.is_dir() else here.parent / "conf"


CONF_DIR = conf_dir()

DEFAULTS: dict[str, Any] = {
    "num-rounds": 1,
    "dataset": "digits",
    "data-root": "",
    # the entries of conf/mix/default.yaml, comma-separated (a test keeps both equal)
    "priors": "efficientnet_lite0?size=64,timm:resnet10t?size=32,weak:efficientnet_lite0?size=32,human",
    "prior-mix": "",
    "shared-fraction": 0.1,
    "target-dim": 64,
    "ridge": "auto",
    "seed": 42,
    "min-nodes": 2,
    "node-wait-timeout": 120.0,
    "step-timeout": 600.0,
    "max-reassign": 2,
    "g-max-samples": 512,
    "batch-size": 128,
    "device": "",
    "output-dir": "",
    "data-mode": "platform",
    "screen-max-residual": 1.0,
    "screen-max-tv": 0.6,
    "resume": True,
    "upload-max-samples": 4096,
    "upgrade-fraction": 0.2,
    "redundancy": 1,
    "ensemble-weighting": "mean",
    "anchor-rule": "uniformity",
    "alignment": "ridge",
    "standardize-targets": False,
    "shard-max-residual": 0.95,
}

#: ``data-mode`` values: the platform owns D and assigns shards, or every node brings its own data.
DATA_MODES = ("platform", "local")
#: ``anchor-rule`` values: argmin of the uniformity V, or argmin of the consensus score.
ANCHOR_RULES = ("uniformity", "consensus")
#: ``alignment`` values: the method of :func:`coopt_flwr.protocol.alignment.fit_alignment`.
ALIGNMENTS = ("ridge", "procrustes")
#: ``ensemble-weighting`` values: how the r aligned targets of a sample are averaged.
ENSEMBLE_WEIGHTINGS = ("mean", "residual")


def load_mix(name: str, conf_dir: Path | None = None) -> list[str]:
    """Prior specs of a named mix, ``conf/mix/<name>.yaml`` with a ``priors:`` list.

    An entry is a spec string, an evolution path string ``"a > b"``, or a list of specs (an
    evolution path, returned joined as ``"a > b"``).
    """
    root = CONF_DIR if conf_dir is None else conf_dir
    path = root / "mix" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (root / "mix").glob("*.yaml"))
        raise ValueError(f"unknown prior mix {name!r} (no {path}); known mixes: {known}")
    data = yaml.safe_load(path.read_text())
    priors = data.get("priors") if isinstance(data, dict) else None
    entries = [_entry(p) for p in priors] if isinstance(priors, list) else []
    if not entries or any(e is None for e in entries):
        raise ValueError(
            f"{path} must hold a non-empty list of prior spec strings (or lists of specs, "
            "evolution paths) under 'priors'"
        )
    return [e for e in entries if e is not None]


def prior_entries(value: str | Sequence[Any]) -> list[str]:
    """The run-config's ``priors``: a comma-separated string (what ``flwr run --run-config``
    gives) or a list of entries, each a spec, an evolution path ``"a > b"`` or a list of specs
    (a path, returned as ``"a > b"``); blank entries are dropped.

    Raises
    ------
    ValueError
        If an entry is neither a string nor a list of strings.
    """
    items = list(value) if _is_list(value) else str(value).split(",")
    entries = [_entry(p) for p in items]
    if any(e is None for e in entries):
        raise ValueError(f"run-config 'priors' must hold prior specs or lists of specs, got {value!r}")
    return [e.strip() for e in entries if e is not None and e.strip()]


def _entry(p: object) -> str | None:
    """A prior entry as a string: a spec or path as it is, a list of specs joined ``a > b``."""
    if isinstance(p, str):
        return p
    if _is_list(p) and p and all(isinstance(s, str) for s in p):
        return format_path(p)
    return None


def parse_ridge(value: object) -> float | None:
    """The run-config's ``ridge``: a relative strength ≥ 0, or ``"auto"`` (None: chosen each
    round by cross-fitted residual on the shared set, :func:`coopt_flwr.protocol.alignment.select_ridge`)."""
    if isinstance(value, str) and value.strip().lower() == RIDGE_AUTO:
        return None
    try:
        ridge = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"ridge must be a number >= 0 or {RIDGE_AUTO!r}, got {value!r}") from None
    if not ridge >= 0 or ridge == float("inf"):
        raise ValueError(f"ridge must be a finite number >= 0 or {RIDGE_AUTO!r}, got {value!r}")
    return ridge


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


@dataclass(frozen=True)
class Settings:
    """Validated run settings (see :data:`DEFAULTS` for the keys).

    ``priors`` holds the configured entries as given, each a prior spec or an evolution path
    ``"a > b > c"`` (:mod:`coopt_flwr.protocol.evolution`); ``paths`` the same entries split into stages.
    """

    num_rounds: int
    dataset: str
    data_root: str
    priors: tuple[str, ...]
    shared_fraction: float
    target_dim: int
    ridge: float | None  # None: "auto", chosen each round on the shared set
    seed: int
    min_nodes: int
    node_wait_timeout: float
    step_timeout: float
    max_reassign: int
    g_max_samples: int
    batch_size: int
    device: str
    output_dir: Path
    upgrade_fraction: float
    paths: tuple[tuple[str, ...], ...]
    data_mode: str
    screen_max_residual: float
    screen_max_tv: float
    resume: bool
    upload_max_samples: int
    redundancy: int
    ensemble_weighting: str
    anchor_rule: str
    alignment: str
    standardize_targets: bool
    shard_max_residual: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Settings:
        """Build settings from a flat run-config (missing keys take :data:`DEFAULTS`).

        Raises
        ------
        ValueError
            On an unknown key or an out-of-range value, naming the key.
        """
        merged = dict(DEFAULTS)
        for source in (config, overrides or {}):
            unknown = set(source) - set(DEFAULTS)
            if unknown:
                raise ValueError(f"unknown run-config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
            merged.update(source)
        c = merged
        mix = str(c["prior-mix"]).strip()
        priors = load_mix(mix) if mix else prior_entries(c["priors"])
        if not priors:
            raise ValueError("run-config 'priors' is empty and no 'prior-mix' is named")
        paths = tuple(parse_path(p) for p in priors)
        upgrade_fraction = float(c["upgrade-fraction"])
        if not 0.0 <= upgrade_fraction <= 1.0:
            raise ValueError(f"upgrade-fraction must lie in [0, 1], got {upgrade_fraction}")
        fraction = float(c["shared-fraction"])
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"shared-fraction must lie in (0, 1), got {fraction}")
        _positive(c, "num-rounds", "target-dim", "min-nodes", "batch-size", "g-max-samples")
        _positive(c, "node-wait-timeout", "step-timeout")
        if int(c["max-reassign"]) < 0:
            raise ValueError(f"max-reassign must be >= 0, got {c['max-reassign']}")
        mode = str(c["data-mode"]).strip()
        if mode not in DATA_MODES:
            raise ValueError(f"data-mode must be one of {DATA_MODES}, got {mode!r}")
        _positive(c, "screen-max-residual", "screen-max-tv", "upload-max-samples", "shard-max-residual")
        redundancy = _redundancy(c["redundancy"], mode)
        out = str(c["output-dir"]).strip()
        output_dir = Path(out) if out else Path("outputs") / time.strftime("%Y%m%d-%H%M%S")
        return cls(
            num_rounds=int(c["num-rounds"]),
            dataset=str(c["dataset"]),
            data_root=str(c["data-root"]),
            priors=tuple(priors),
            shared_fraction=fraction,
            target_dim=int(c["target-dim"]),
            ridge=parse_ridge(c["ridge"]),
            seed=int(c["seed"]),
            min_nodes=int(c["min-nodes"]),
            node_wait_timeout=float(c["node-wait-timeout"]),
            step_timeout=float(c["step-timeout"]),
            max_reassign=int(c["max-reassign"]),
            g_max_samples=int(c["g-max-samples"]),
            batch_size=int(c["batch-size"]),
            device=str(c["device"]),
            output_dir=output_dir.expanduser().resolve(),
            data_mode=mode,
            screen_max_residual=float(c["screen-max-residual"]),
            screen_max_tv=float(c["screen-max-tv"]),
            resume=_bool(c["resume"], "resume"),
            upload_max_samples=int(c["upload-max-samples"]),
            redundancy=redundancy,
            ensemble_weighting=_choice(c, "ensemble-weighting", ENSEMBLE_WEIGHTINGS),
            anchor_rule=_choice(c, "anchor-rule", ANCHOR_RULES),
            alignment=_choice(c, "alignment", ALIGNMENTS),
            standardize_targets=_bool(c["standardize-targets"], "standardize-targets"),
            shard_max_residual=float(c["shard-max-residual"]),
            upgrade_fraction=upgrade_fraction,
            paths=paths,
        )

    def path_for(self, partition_id: int) -> tuple[str, ...]:
        """The evolution path of a partition: the list is assigned round-robin."""
        return self.paths[partition_id % len(self.paths)]

    def prior_for(self, partition_id: int, stage: int = 0) -> str:
        """The prior spec of a partition at an evolution stage (0 = its first prior).

        Raises
        ------
        ValueError
            If the partition's path has no such stage.
        """
        path = self.path_for(partition_id)
        if not 0 <= stage < len(path):
            raise ValueError(f"partition {partition_id} has no evolution stage {stage} (path {path})")
        return path[stage]


def _bool(value: Any, key: str) -> bool:
    # A run-config from the command line may carry "true"/"false" as strings.
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{key} must be true or false, got {value!r}")


def _choice(c: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = str(c[key]).strip()
    if value not in allowed:
        raise ValueError(f"{key} must be one of {allowed}, got {c[key]!r}")
    return value


def _redundancy(value: Any, mode: str) -> int:
    """``redundancy``: an integer ≥ 1, and 1 in local data mode (only the holder has its images)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number.is_integer() or number < 1:
        raise ValueError(f"redundancy must be an integer >= 1, got {value!r}")
    if number > 1 and mode == "local":
        raise ValueError(
            f"redundancy {int(number)} needs data-mode 'platform': in local data mode only the "
            "participant holding a sample has its image, so no second participant can embed it"
        )
    return int(number)


def _positive(c: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        if float(c[key]) <= 0:
            raise ValueError(f"{key} must be > 0, got {c[key]}")
