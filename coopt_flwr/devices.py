"""The machine under the code: device choice, the C allocator, resident memory.

One place for what every layer needs from the machine: :func:`resolve_device` (CUDA when
present, else CPU, never a hard ``.cuda()``), glibc's allocator knobs (:func:`tune_cpu_allocator`
for training, :func:`trim_heap` for the platform's uploads) through one cached libc lookup, and
:func:`current_rss_mb`. torch is imported only by :func:`resolve_device`, so the platform's
strategy can use the rest without loading it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["available_cpus", "current_rss_mb", "resolve_device", "trim_heap", "tune_cpu_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Return ``device``, or CUDA when available (else CPU) for None / ``"auto"``.

    Raises
    ------
    ValueError
        For an unparseable device string, or CUDA requested where it is not available.
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    return dev


@functools.cache
def _libc() -> Any:
    """glibc, or ``None`` where the C library is another one (macOS, musl) or not loadable."""
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is None or not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
            return None
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except OSError:
        return None
    return libc


@functools.cache
def tune_cpu_allocator() -> bool:
    """Make glibc malloc keep freed memory for reuse, process-wide (once; later calls are no-ops).

    Training on the CPU allocates and frees activation buffers of tens of MB every step. glibc's
    defaults give such buffers back to the OS and take them again, one page fault per 4 KiB page:
    measured on a 2-core machine with a CIFAR ResNet-10 at batch 256, fixing the mmap threshold
    at 32 MiB and the trim threshold at 1 GiB halves the page faults and raises throughput by
    ~15 % with no measurable change in peak resident memory.

    Returns
    -------
    bool
        Whether the tuning is in effect (False off glibc, e.g. macOS or musl).
    """
    libc = _libc()
    if libc is None:
        return False
    return libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc; a no-op elsewhere).

    gRPC and the message inflation free their buffers on other threads' malloc arenas, which
    glibc keeps: without a trim after each reply the platform's resident memory creeps up by a
    part or so per upload, and its peak with it.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def current_rss_mb() -> float:
    """Resident memory of this process now, in MiB (0 where /proc is not available)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * resource.getpagesize() / 2**20


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)
