"""Fixtures shared by the learning-stack tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # On a shared 2-core machine, OpenMP threads stall whenever another process holds a core
    # (tests ran 3-5x slower); one thread keeps these CPU tests fast and their timing stable.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
