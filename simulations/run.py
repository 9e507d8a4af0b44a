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
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from coopt_flwr.config import CONF_DIR
from coopt_flwr.store.storage import SUMMARY_FILE
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

    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if num_supernodes < 1:
        raise ValueError(f"num-supernodes must be >= 1, got {num_supernodes}")
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
    run_config = run_config_overrides(cfg)
    summary = launch_hydra(cfg, run_config)
    print(
        f"[coopt] wrote {run_config['output-dir']} (complete={summary['complete']}, "
        f"G {summary['g-before']:.3f} -> {summary['g-after']:.3f})"
    )


if __name__ == "__main__":
    main()
