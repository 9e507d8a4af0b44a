"""Atomic writes of the run's artifacts: a reader never sees a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

OPTIMIZED_FILE = "optimized.safetensors"
SUMMARY_FILE = "summary.json"


def _atomic(path: Path, write: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """Write numpy arrays as safetensors, atomically (temp file + rename)."""
    return _atomic(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def write_json(path: Path, data: Any) -> Path:
    """Write JSON (indented, UTF-8), atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=_jsonable)
            fh.write("\n")

    return _atomic(Path(path), write)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def load_optimized(path: str | Path) -> dict[str, np.ndarray]:
    """Read an ``optimized.safetensors`` (a file or the run's output folder).

    Returns
    -------
    dict
        ``ids`` int64 (N,), ``targets`` float32 (N, n), ``participant`` and ``round`` int64 (N,).
    """
    p = Path(path)
    if p.is_dir():
        p = p / OPTIMIZED_FILE
    if not p.is_file():
        raise FileNotFoundError(f"no optimized data set at {p}")
    try:
        return load_file(str(p))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{p} is not a readable safetensors file: {exc}") from exc
