"""Fixtures shared by the learning-stack tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _single_thread(single_torch_thread: None) -> None:
    """Every learning-stack module runs on one torch thread (tests/conftest.py says why)."""
