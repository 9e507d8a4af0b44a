"""Atomic writes of the run's artifacts: a reader never sees a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

OPTIMIZED_FILE = "optimized.safetensors"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.json"  # the platform's state after the last finished phase

# safetensors dtype names of the numpy dtypes we write.
_ST_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}


def atomic_write(path: Path, write: Any, mode: int | None = None) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temp file beside it, then a rename.

    Readers see the old file or the new one, never a half-written one; on any error the temp
    file is removed and the old file stays. ``mode`` sets the permissions (``mkstemp`` makes
    0600 files); None keeps 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """Write numpy arrays as safetensors, atomically (temp file + rename), without copies.

    ``safetensors.numpy.save_file`` first turns every array into a ``bytes`` copy, which
    doubles the platform's memory when it writes a merged data set as large as its RAM
    allows. The format is a little-endian u64 header length, a JSON header of dtype, shape and
    byte offsets, then the raw bytes; this writes each array straight from its buffer (the
    official reader loads the result, a test checks).
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    arrays, offset = [], 0
    for name in sorted(tensors):  # the order safetensors itself uses
        a = np.asarray(tensors[name])
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))  # no copy when already so
        dtype = _ST_DTYPES.get(a.dtype)
        if dtype is None:
            raise TypeError(f"write_tensors: {name} has unsupported dtype {a.dtype}")
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        arrays.append(a)
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # 8-byte alignment of the data section

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(len(raw).to_bytes(8, "little"))
            fh.write(raw)
            for a in arrays:
                if a.nbytes:
                    fh.write(memoryview(a.reshape(-1)).cast("B"))

    return atomic_write(Path(path), write)


def write_json(path: Path, data: Any) -> Path:
    """Write JSON (indented, UTF-8), atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=_jsonable)
            fh.write("\n")

    return atomic_write(Path(path), write)


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
        ``ids`` int64 (N,), ``targets`` float32 (N, n), ``participant``, ``round``, ``stage``
        and ``contributions`` int64 (N,) (files written before ``contributions`` existed lack
        it), and ``local-index`` int64 (N,) in local data mode.
    """
    p = Path(path)
    if p.is_dir():
        p = p / OPTIMIZED_FILE
    if not p.is_file():
        raise FileNotFoundError(f"no optimized data set at {p}")
    return load_tensors(p)


def load_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read any safetensors file written by :func:`write_tensors`.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing or unreadable (corrupt) file, naming it.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no tensor file at {p}")
    try:
        return load_file(str(p))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{p} is not a readable safetensors file: {exc}") from exc
