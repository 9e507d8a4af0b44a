"""CoOpt ServerApp: the platform. Thin: settings in, :class:`CoOptStrategy` does the rounds.

Before any node work the run-config is checked completely (:func:`coopt_flwr.config.check_run_config`),
the output folder locked for the run's lifetime (a second run on it is refused at once) and
the data set's size checked against the protocol's needs. A bad value, a busy folder or a
checkpoint that cannot be resumed ends the run with one ``[coopt] error: ...`` line first;
the exception then goes to Flower, which marks the run failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from coopt_flwr.config import ConfigError, check_data_size, check_run_config, load_dataset
from coopt_flwr.store.storage import OutputDirBusyError, lock_output_dir
from strategies.checkpoint import CheckpointError
from strategies.coopt import CoOptStrategy, RoundHook

#: Errors that are the user's to fix: reported as one line, not as a stack of frames.
USER_ERRORS = (ConfigError, OutputDirBusyError, CheckpointError)


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
        try:
            settings = check_run_config(context.run_config, overrides)
            with lock_output_dir(settings.output_dir):
                # The platform indexes D (it needs |D| for shards and the shared set), it does not
                # embed it. In local data mode `dataset` is the platform's own set S is drawn from.
                data = load_dataset(settings)
                check_data_size(settings, len(data))
                strategy = CoOptStrategy(
                    settings,
                    num_samples=len(data),
                    log=lambda s: print(s, flush=True),
                    shared_data=data if settings.data_mode == "local" else None,
                    on_round=on_round,
                )
                strategy.run(grid)
        except USER_ERRORS as err:
            # The reason first, on one line; Flower then logs the exception and fails the run.
            # Without its frames and cause: they would bury the one line that matters.
            print(f"[coopt] error: {err}", flush=True)
            raise err.with_traceback(None) from None

    return app


app = make_server_app()
