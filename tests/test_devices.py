"""Device choice and the allocator helpers of coopt_flwr.devices."""

from __future__ import annotations

import pytest
import torch

from coopt_flwr.devices import current_rss_mb, resolve_device, trim_heap, tune_cpu_allocator


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"invalid device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"CUDA is not available"):
            resolve_device("cuda")


def test_allocator_helpers_are_idempotent_and_safe() -> None:
    first = tune_cpu_allocator()
    assert tune_cpu_allocator() is first  # cached: a process-wide setting applied once
    trim_heap()  # a no-op off glibc; never raises
    assert current_rss_mb() > 0 or not __import__("pathlib").Path("/proc/self/statm").exists()
