"""Shared fixtures: Flower state isolated in a temp dir, offline, no runtime installs."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_flower_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("flwr-home")
    os.environ["FLWR_HOME"] = str(home)
    os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    os.environ.setdefault("COOPT_CACHE_DIR", str(tmp_path_factory.mktemp("coopt-cache")))
