"""Shared fixtures: Flower state isolated in a temp dir, offline, no runtime installs."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_flower_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("flwr-home")
    os.environ["FLWR_HOME"] = str(home)
    os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    os.environ.setdefault("COOPT_CACHE_DIR", str(tmp_path_factory.mktemp("coopt-cache")))


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """One torch thread for a module: on a shared 2-core machine OpenMP threads stall whenever
    another process holds a core (CPU tests ran 3-9x slower on 2 threads)."""
    import torch  # here, not at the top: most tests never load torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
