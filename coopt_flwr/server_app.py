"""CoOpt ServerApp: the platform. Thin: settings in, :class:`CoOptStrategy` does the rounds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from coopt_flwr.config import Settings
from coopt_flwr.registry.datasets import create_dataset
from strategies.coopt import CoOptStrategy, RoundHook


def make_server_app(
    overrides: Mapping[str, Any] | None = None, on_round: RoundHook | None = None
) -> ServerApp:
    """Build the ServerApp; ``overrides`` stand in for the run-config (programmatic launches).

    ``on_round`` is called after every round with its result and the merged set (programmatic
    launches that measure the merged targets, e.g. ``simulations/evolve.py``).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings = Settings.from_config(context.run_config, overrides)
        # The platform indexes D (it needs |D| for shards and the shared set), it does not embed
        # it. In local data mode `dataset` is the platform's own set that S is drawn from and sent.
        data = create_dataset(settings.dataset, data_root=settings.data_root or None)
        strategy = CoOptStrategy(
            settings,
            num_samples=len(data),
            log=lambda s: print(s, flush=True),
            shared_data=data if settings.data_mode == "local" else None,
            on_round=on_round,
        )
        strategy.run(grid)

    return app


app = make_server_app()
