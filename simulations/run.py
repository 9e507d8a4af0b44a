"""Programmatic launcher of the CoOpt protocol (Hydra): the same ServerApp and ClientApp
that ``flwr run .`` starts, driven through Flower's simulation engine (Ray backend).

    python -m simulations.run                                   # embedded default (digits)
    python -m simulations.run mix=diverse participants=8 target_dim=128
    python -m simulations.run --multirun mix=default,weak,human seed=0,1,2

Hydra's config (``conf/config.yaml``) maps onto the flat Flower run-config keys; the
Flower simulation API gives apps an empty run-config, so the overrides reach both apps
through the app factories instead.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from coopt_flwr.config import Settings
from coopt_flwr.protocol.evolution import format_path
from coopt_flwr.store.storage import SUMMARY_FILE

if TYPE_CHECKING:
    from strategies.coopt import RoundHook

CONF_PATH = str(Path(__file__).resolve().parent.parent / "conf")


def prior_entries(priors: list[Any]) -> str:
    """A mix's ``priors`` list as the run-config string: specs, and lists of specs (evolution
    paths) written ``"a > b"``, joined by commas."""
    return ",".join(format_path(p) if isinstance(p, (list, tuple)) else str(p) for p in priors)


def to_run_config(cfg: DictConfig) -> dict[str, Any]:
    """Flatten the Hydra config into Flower run-config keys (validated by :class:`Settings`)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    run_config = {
        "num-rounds": c["rounds"],
        "dataset": c["dataset"],
        "data-root": c["data_root"],
        "priors": prior_entries(c["mix"]["priors"]),
        "shared-fraction": c["shared_fraction"],
        "target-dim": c["target_dim"],
        "ridge": c["ridge"],
        "seed": c["seed"],
        "min-nodes": c["participants"],
        "max-reassign": c["max_reassign"],
        "step-timeout": c["step_timeout"],
        "batch-size": c["batch_size"],
        "device": c["device"],
        "output-dir": str(c["output_dir"]),
        "upgrade-fraction": c["upgrade_fraction"],
    }
    Settings.from_config({}, run_config)  # fail here, before Ray starts, on a bad value
    return run_config


def launch(
    run_config: dict[str, Any],
    participants: int,
    cpus: int = 1,
    gpus: float = 0.0,
    on_round: RoundHook | None = None,
) -> dict:
    """Run the protocol in a Flower simulation and return the written summary.

    ``on_round`` runs on the platform (this process) after every round, see
    :data:`strategies.coopt.RoundHook`.
    """
    # Imported here so that `--help` and config errors do not pay for Flower and Ray.
    from flwr.simulation import run_simulation

    from coopt_flwr.client_app import make_client_app
    from coopt_flwr.server_app import make_server_app

    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if participants < 1:
        raise ValueError(f"participants must be >= 1, got {participants}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # run_simulation is deprecated in 1.41
        run_simulation(
            server_app=make_server_app(run_config, on_round=on_round),
            client_app=make_client_app(run_config),
            num_supernodes=participants,
            backend_config={"client_resources": {"num_cpus": cpus, "num_gpus": gpus}},
        )
    summary_path = Path(run_config["output-dir"]) / SUMMARY_FILE
    if not summary_path.is_file():
        raise RuntimeError(f"the run ended without writing {summary_path}; see the log above")
    return json.loads(summary_path.read_text())


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    run_config = to_run_config(cfg)
    summary = launch(
        run_config, int(cfg.participants), int(cfg.cpus_per_participant), float(cfg.gpus_per_participant)
    )
    print(
        f"[coopt] wrote {run_config['output-dir']} (complete={summary['complete']}, "
        f"G {summary['g-before']:.3f} -> {summary['g-after']:.3f})"
    )


if __name__ == "__main__":
    main()
