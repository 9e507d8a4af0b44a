"""Run settings: the flat kebab-case run-config read once at the top of each app.

:data:`DEFAULTS` is the one source of the defaults in code. The same keys and values are the
``[tool.flwr.app.config]`` table of ``pyproject.toml`` (``flwr run`` reads them from there; a
test keeps both equal), and the Hydra configs of ``simulations/`` spell them the same way
(:func:`simulations.common.run_config_overrides` passes them to the app factories).

Validation happens in one place, before any node work: :meth:`Settings.from_config` checks
every value on its own (types and bounds), :func:`check_run_config` adds what needs the
registries and the file system (every prior spec's name and options against its registered
schema, the data-set name, the output folder), and
:func:`check_data_size` what needs the size of the data set. All raise :class:`ConfigError`,
whose message names the key and the fix; the launchers print it as one line.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from coopt_flwr.protocol.alignment import RIDGE_AUTO
from coopt_flwr.protocol.evolution import format_path, parse_path
from coopt_flwr.registry.prior_options import BUILTIN_PRIOR_OPTIONS, check_prior_spec
from coopt_flwr.registry.spec import parse_spec

if TYPE_CHECKING:
    from coopt_flwr.registry.datasets import ImageData


class ConfigError(ValueError):
    """A run-config value the run cannot start with; the message names the key and the fix."""


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
    "max-in-flight": 0,
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

#: ``target-dim`` bounds: the platform holds |D| × n float32 targets, so n is bounded where
#: a typo (``1e9``) would otherwise try a multi-TiB allocation.
MAX_TARGET_DIM = 65_536
#: ``seed`` bounds: the 32-bit range every seeded library here accepts.
MAX_SEED = 2**32 - 1
#: The smallest shared set S the protocol works with: screening cross-fits S in two halves of
#: at least 2 rows (:func:`coopt_flwr.protocol.screening.held_out_residual`) once three
#: participants take part, and the ServerApp cannot know beforehand how many will.
MIN_SHARED_SAMPLES = 4
#: The prior names registered by :mod:`coopt_flwr.registry.priors` (a test keeps them equal),
#: with their option schemas in :mod:`coopt_flwr.registry.prior_options`. Checked here without
#: importing the registry itself: it loads torch and timm, which the platform otherwise never needs.
BUILTIN_PRIORS = tuple(sorted(BUILTIN_PRIOR_OPTIONS))


def load_mix(name: str, conf_dir: Path | None = None) -> list[str]:
    """Prior specs of a named mix, ``conf/mix/<name>.yaml`` with a ``priors:`` list.

    An entry is a spec string, an evolution path string ``"a > b"``, or a list of specs (an
    evolution path, returned joined as ``"a > b"``).
    """
    root = CONF_DIR if conf_dir is None else conf_dir
    path = root / "mix" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (root / "mix").glob("*.yaml"))
        raise ConfigError(f"unknown prior mix {name!r} (no {path}); known mixes: {known}")
    data = yaml.safe_load(path.read_text())
    priors = data.get("priors") if isinstance(data, dict) else None
    entries = [_entry(p) for p in priors] if isinstance(priors, list) else []
    if not entries or any(e is None for e in entries):
        raise ConfigError(
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
        raise ConfigError(f"run-config 'priors' must hold prior specs or lists of specs, got {value!r}")
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
        raise ConfigError(f"ridge must be a number >= 0 or {RIDGE_AUTO!r}, got {value!r}") from None
    if not ridge >= 0 or ridge == float("inf"):
        raise ConfigError(f"ridge must be a finite number >= 0 or {RIDGE_AUTO!r}, got {value!r}")
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
    max_in_flight: int  # 0: auto (strategies.coopt.CoOptStrategy.in_flight_window)
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
        ConfigError
            On an unknown key or an out-of-range value, naming the key.
        """
        merged = dict(DEFAULTS)
        for source in (config, overrides or {}):
            unknown = set(source) - set(DEFAULTS)
            if unknown:
                raise ConfigError(f"unknown run-config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
            merged.update(source)
        c = merged
        mix = str(c["prior-mix"]).strip()
        priors = load_mix(mix) if mix else prior_entries(c["priors"])
        if not priors:
            raise ConfigError("run-config 'priors' is empty and no 'prior-mix' is named")
        try:
            paths = tuple(parse_path(p) for p in priors)
        except ValueError as exc:
            raise ConfigError(f"priors: {exc}") from None
        upgrade_fraction = _number(c, "upgrade-fraction")
        if not 0.0 <= upgrade_fraction <= 1.0:
            raise ConfigError(f"upgrade-fraction must lie in [0, 1], got {c['upgrade-fraction']!r}")
        fraction = _number(c, "shared-fraction")
        if not 0.0 < fraction < 1.0:
            raise ConfigError(
                f"shared-fraction must lie in (0, 1) (|S| / |D|, e.g. 0.1), got {c['shared-fraction']!r}"
            )
        counts = {k: _integer(c, k, 1) for k in ("num-rounds", "min-nodes", "batch-size", "g-max-samples")}
        target_dim = _integer(c, "target-dim", 1, MAX_TARGET_DIM)
        seed = _integer(c, "seed", 0, MAX_SEED)
        max_reassign = _integer(c, "max-reassign", 0)
        max_in_flight = _integer(c, "max-in-flight", 0)
        upload_max_samples = _integer(c, "upload-max-samples", 1)
        _positive(c, "node-wait-timeout", "step-timeout")
        mode = str(c["data-mode"]).strip()
        if mode not in DATA_MODES:
            raise ConfigError(f"data-mode must be one of {DATA_MODES}, got {mode!r}")
        _positive(c, "screen-max-residual", "screen-max-tv", "shard-max-residual")
        redundancy = _redundancy(c["redundancy"], mode)
        out = str(c["output-dir"]).strip()
        output_dir = Path(out) if out else Path("outputs") / time.strftime("%Y%m%d-%H%M%S")
        return cls(
            num_rounds=counts["num-rounds"],
            dataset=str(c["dataset"]),
            data_root=str(c["data-root"]),
            priors=tuple(priors),
            shared_fraction=fraction,
            target_dim=target_dim,
            ridge=parse_ridge(c["ridge"]),
            seed=seed,
            min_nodes=counts["min-nodes"],
            node_wait_timeout=_number(c, "node-wait-timeout"),
            step_timeout=_number(c, "step-timeout"),
            max_reassign=max_reassign,
            max_in_flight=max_in_flight,
            g_max_samples=counts["g-max-samples"],
            batch_size=counts["batch-size"],
            device=str(c["device"]),
            output_dir=output_dir.expanduser().resolve(),
            data_mode=mode,
            screen_max_residual=_number(c, "screen-max-residual"),
            screen_max_tv=_number(c, "screen-max-tv"),
            resume=_bool(c["resume"], "resume"),
            upload_max_samples=upload_max_samples,
            redundancy=redundancy,
            ensemble_weighting=_choice(c, "ensemble-weighting", ENSEMBLE_WEIGHTINGS),
            anchor_rule=_choice(c, "anchor-rule", ANCHOR_RULES),
            alignment=_choice(c, "alignment", ALIGNMENTS),
            standardize_targets=_bool(c["standardize-targets"], "standardize-targets"),
            shard_max_residual=_number(c, "shard-max-residual"),
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
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _choice(c: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = str(c[key]).strip()
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {allowed}, got {c[key]!r}")
    return value


def _redundancy(value: Any, mode: str) -> int:
    """``redundancy``: an integer ≥ 1, and 1 in local data mode (only the holder has its images)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number.is_integer() or number < 1:
        raise ConfigError(f"redundancy must be an integer >= 1, got {value!r}")
    if number > 1 and mode == "local":
        raise ConfigError(
            f"redundancy {int(number)} needs data-mode 'platform': in local data mode only the "
            "participant holding a sample has its image, so no second participant can embed it"
        )
    return int(number)


def _positive(c: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        if not _number(c, key) > 0:  # NaN fails too
            raise ConfigError(f"{key} must be > 0, got {c[key]!r}")


def _number(c: Mapping[str, Any], key: str) -> float:
    """``c[key]`` as a float (``--run-config`` may give numbers as strings), naming the key."""
    value = c[key]
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {value!r}") from None


def _integer(c: Mapping[str, Any], key: str, low: int, high: int | None = None) -> int:
    """``c[key]`` as an int in ``[low, high]``: an int, an integral float (``1e3``) or such a string."""
    value = c[key]
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, (float, str)):
        try:
            number = int(str(value).strip())
        except ValueError:
            try:
                as_float = float(value)
            except ValueError:
                as_float = math.nan
            number = int(as_float) if as_float.is_integer() else None
    bound = f">= {low}" if high is None else f"between {low} and {high:,}"
    if number is None or number < low or (high is not None and number > high):
        raise ConfigError(f"{key} must be an integer {bound}, got {value!r}")
    return number


# ------------------------------------------------------------------ checks before node work
def check_run_config(config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Settings:
    """Validate a run-config completely, before Ray, a SuperLink or any node work starts.

    :meth:`Settings.from_config` (every value alone), then every prior of every evolution path
    against the prior registry (its name, and its argument and options against the prior's
    schema: known keys, values of the right type and in bounds; no network is built), the data
    set against the data-set registry (its name and spec, without loading it) and the output
    folder (a folder, or creatable, and writable).

    Returns
    -------
    Settings
        The validated settings.

    Raises
    ------
    ConfigError
        Naming the key and the fix.
    """
    settings = Settings.from_config(config, overrides)
    _check_priors(settings.paths)
    _check_dataset(settings.dataset)
    _check_output_dir(settings.output_dir)
    return settings


def known_priors() -> list[str]:
    """The prior names a run may use: :data:`BUILTIN_PRIORS`, and when this process has loaded
    the prior registry (a launcher, a test) every name registered there."""
    loaded = sys.modules.get("coopt_flwr.registry.priors")
    names = set(BUILTIN_PRIORS) | (set(loaded.list_priors()) if loaded is not None else set())
    return sorted(names)


def _unknown_name(kind: str, key: str, spec: str, name: str, known: Iterable[str]) -> ConfigError:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return ConfigError(f"{key}: unknown {kind} {name!r} in {spec!r}; {hint}known: {', '.join(known)}")


def _check_priors(paths: Sequence[Sequence[str]], key: str = "priors") -> None:
    """Every stage of every path parses, names a registered prior and passes that prior's
    option schema (:func:`coopt_flwr.registry.prior_options.check_prior_spec`). What needs the
    prior itself (a timm architecture, a checkpoint's contents) is the participant's to check."""
    known = known_priors()
    for path in paths:
        for spec in path:
            try:
                parsed = parse_spec(spec)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{key}: {exc}") from None
            if parsed.name not in known:
                raise _unknown_name("prior", key, spec, parsed.name, known)
            try:
                check_prior_spec(parsed)
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from None


def check_node_prior(value: object) -> tuple[str, ...]:
    """A deployed node's own ``prior`` node config: a spec or an evolution path ``"a > b"``,
    every stage checked as the run-config's priors are (:func:`check_run_config`).

    Returns
    -------
    tuple of str
        The path's stages.

    Raises
    ------
    ConfigError
        Naming the node config key ``prior`` and what is wrong.
    """
    try:
        path = parse_path(str(value))
    except ValueError as exc:
        raise ConfigError(f"node config 'prior': {exc}") from None
    _check_priors([path], key="node config 'prior'")
    return path


def _check_dataset(spec: str) -> None:
    """The data-set spec parses and names a registered data set (the data is not loaded)."""
    from coopt_flwr.registry.datasets import list_datasets  # numpy only; imported when needed

    try:
        name = parse_spec(spec).name
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"dataset: {exc}") from None
    known = list_datasets()
    if name not in known:
        raise _unknown_name("data set", "dataset", spec, name, known)


def _check_output_dir(path: Path) -> None:
    """``output-dir`` is a folder (or can be created as one) that this user may write."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output-dir {path} is an existing file, not a folder; give a folder path")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output-dir {path} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"output-dir {path} is not writable ({existing} does not let this user create files); "
            "give a folder this user may write"
        )


def load_dataset(settings: Settings) -> ImageData:
    """The platform's data set (``dataset``, ``data-root``); a load failure (a missing or
    corrupt file, a bad option, no download) is a :class:`ConfigError` naming the key."""
    from coopt_flwr.registry.datasets import create_dataset

    try:
        return create_dataset(settings.dataset, data_root=settings.data_root or None)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"dataset {settings.dataset!r} cannot be loaded: {exc}") from exc


def shared_set_size(num_samples: int, fraction: float) -> int:
    """|S| of a data set of ``num_samples`` samples, as
    :func:`coopt_flwr.registry.datasets.shared_subset` draws it (a test keeps both equal)."""
    return min(num_samples, max(2, round(fraction * num_samples)))


def check_data_size(settings: Settings, num_samples: int) -> None:
    """Check, once the data set's size is known, that it leaves the protocol a shared set S
    of at least :data:`MIN_SHARED_SAMPLES` samples.

    Raises
    ------
    ConfigError
        Naming the data set, the shared set it gives, and the fix.
    """
    n, fraction = int(num_samples), settings.shared_fraction
    size = shared_set_size(n, fraction) if n >= 2 else n
    if size >= MIN_SHARED_SAMPLES:
        return
    fix = f"use a data set of at least {math.ceil(MIN_SHARED_SAMPLES / fraction)} samples"
    if n > MIN_SHARED_SAMPLES:  # a fraction < 1 can then give enough: rounded up to 3 decimals
        least = math.ceil(1000 * MIN_SHARED_SAMPLES / n) / 1000
        fix = f"raise shared-fraction to at least {least:g}, or {fix}"
    raise ConfigError(
        f"dataset {settings.dataset!r} has {n} samples, so shared-fraction {fraction:g} gives a shared "
        f"set S of {size}; the protocol needs at least {MIN_SHARED_SAMPLES} (screening fits S in two "
        f"halves): {fix}"
    )
