"""Programmatic launcher of the CoOpt protocol (Hydra): the same ServerApp and ClientApp
that ``flwr run .`` starts, driven through Flower's simulation engine (Ray backend).

    python -m simulations.run                                   # embedded default (digits)
    python -m simulations.run mix=diverse num-supernodes=8 target-dim=128
    python -m simulations.run --multirun mix=default,weak,human seed=0,1,2

Hydra's config (``conf/config.yaml``) spells the flat Flower run-config keys as the run-config
does and passes them on as they are (:func:`simulations.common.run_config_overrides`), with
Flower's ``num-supernodes`` / ``client-resources-num-cpus`` / ``-gpus`` for the simulation.
The Flower simulation API gives apps an empty run-config, so the overrides reach both apps
through the app factories instead.

Every value is checked before Ray starts (:func:`preflight`); a bad one, an output folder in
use by another run or a checkpoint that cannot be resumed ends the command with one
``error: ...`` line and exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from coopt_flwr.config import (
    CONF_DIR,
    ConfigError,
    Settings,
    check_data_size,
    check_run_config,
    load_dataset,
)
from coopt_flwr.store.storage import SUMMARY_FILE, OutputDirBusyError, lock_output_dir
from simulations.common import run_config_overrides

if TYPE_CHECKING:
    from strategies.coopt import RoundHook

CONF_PATH = str(CONF_DIR)


def launch(
    run_config: dict[str, Any],
    num_supernodes: int,
    cpus: int = 1,
    gpus: float = 0.0,
    on_round: RoundHook | None = None,
) -> dict:
    """Run the protocol in a Flower simulation of ``num_supernodes`` virtual SuperNodes (each
    with ``cpus`` / ``gpus``) and return the written summary.

    ``on_round`` runs on the platform (this process) after every round, see
    :data:`strategies.coopt.RoundHook`.
    """
    # Imported here so that `--help` and config errors do not pay for Flower and Ray.
    from flwr.simulation import run_simulation

    from coopt_flwr.client_app import make_client_app
    from coopt_flwr.server_app import make_server_app
    from simulations.linkstate import install as install_faster_sweep

    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if num_supernodes < 1:
        raise ConfigError(f"num-supernodes must be >= 1, got {num_supernodes}")
    install_faster_sweep()  # Flower 1.41's delivery sweep, K x messages stored per sweep
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # run_simulation is deprecated in 1.41
        run_simulation(
            server_app=make_server_app(run_config, on_round=on_round),
            client_app=make_client_app(run_config),
            num_supernodes=num_supernodes,
            backend_config={"client_resources": {"num_cpus": cpus, "num_gpus": gpus}},
        )
    summary_path = Path(run_config["output-dir"]) / SUMMARY_FILE
    if not summary_path.is_file():
        raise RuntimeError(f"the run ended without writing {summary_path}; see the log above")
    return json.loads(summary_path.read_text())


def preflight(run_config: Mapping[str, Any], num_supernodes: Any) -> Settings:
    """Check a launch completely before Ray starts: the run-config
    (:func:`coopt_flwr.config.check_run_config`), the simulation's size against ``min-nodes``,
    the data set's size (it is loaded here, once: the ServerApp in this process reuses it) and
    that no other run holds the output folder.

    Raises
    ------
    ConfigError, OutputDirBusyError
        With the one-line reason.
    """
    settings = check_run_config({}, run_config)
    try:
        nodes = int(num_supernodes)
    except (TypeError, ValueError):
        nodes = 0
    if nodes < 1 or (nodes != num_supernodes and str(nodes) != str(num_supernodes).strip()):
        raise ConfigError(f"num-supernodes must be an integer >= 1, got {num_supernodes!r}")
    if settings.min_nodes > nodes:
        raise ConfigError(
            f"min-nodes {settings.min_nodes} exceeds num-supernodes {nodes}: the run would wait "
            "for nodes that never come; lower min-nodes or raise num-supernodes"
        )
    check_data_size(settings, len(load_dataset(settings)))
    with lock_output_dir(settings.output_dir):
        pass  # only a probe: the ServerApp holds the lock for the run
    return settings


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is the user's to fix (a bad value, a busy output folder, a checkpoint
    that cannot be resumed): reported as one line rather than a traceback."""
    if isinstance(err, (ConfigError, OutputDirBusyError)):
        return True
    # Only a process that imported the checkpoint module can have raised its error; looked up
    # rather than imported, so that a config error does not pay for importing Flower.
    checkpoint = sys.modules.get("strategies.checkpoint")
    return checkpoint is not None and isinstance(err, checkpoint.CheckpointError)


def launch_hydra(cfg: DictConfig, run_config: dict[str, Any], on_round: RoundHook | None = None) -> dict:
    """:func:`launch` with the simulation keys of a Hydra config: ``num-supernodes``,
    ``client-resources-num-cpus`` and ``client-resources-num-gpus`` (Flower's names)."""
    return launch(
        run_config,
        int(cfg["num-supernodes"]),
        int(cfg["client-resources-num-cpus"]),
        float(cfg["client-resources-num-gpus"]),
        on_round=on_round,
    )


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_config = run_config_overrides(cfg)
        preflight(run_config, cfg["num-supernodes"])
        summary = launch_hydra(cfg, run_config)
    except Exception as err:
        if not is_user_error(err):
            raise
        sys.exit(f"error: {err}")  # one line and exit status 1, no traceback
    print(
        f"[coopt] wrote {run_config['output-dir']} (complete={summary['complete']}, "
        f"G {summary['g-before']:.3f} -> {summary['g-after']:.3f})"
    )


if __name__ == "__main__":
    main()
