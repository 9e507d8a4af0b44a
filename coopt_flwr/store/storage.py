"""Atomic writes of the run's artifacts: a reader never sees a half-written file; the output
folder's lock: one run at a time writes there."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

OPTIMIZED_FILE = "optimized.safetensors"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.json"  # the platform's state after the last finished phase
LOCK_FILE = ".lock"  # held (flock) by the run writing the folder

_HASH_CHUNK = 1 << 22  # bytes read at a time when hashing a file

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
    return _write_tensors(Path(path), tensors, metadata, None)


def write_tensors_hashed(
    path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> str:
    """:func:`write_tensors`, returning the sha256 (hex) of the bytes written.

    The digest is taken while the bytes go out, so a large file is not read back to hash it;
    it equals :func:`file_sha256` of the file.
    """
    digest = hashlib.sha256()
    _write_tensors(Path(path), tensors, metadata, digest)
    return digest.hexdigest()


def _write_tensors(
    path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None, digest: Any | None
) -> Path:
    """The writer behind :func:`write_tensors`; ``digest`` (a hashlib object) sees every byte."""
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
            for chunk in (len(raw).to_bytes(8, "little"), raw):
                fh.write(chunk)
                if digest is not None:
                    digest.update(chunk)
            for a in arrays:
                if a.nbytes:
                    view = memoryview(a.reshape(-1)).cast("B")
                    fh.write(view)
                    if digest is not None:
                        digest.update(view)

    return atomic_write(path, write)


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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


class OutputDirBusyError(RuntimeError):
    """Another run holds the lock of the output folder."""


@contextlib.contextmanager
def lock_output_dir(out: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on the output folder ``out`` (created if missing) while inside.

    The lock is ``flock`` on ``<out>/.lock``: the kernel drops it when the holder exits, even
    on SIGKILL, so the file a killed run leaves behind blocks nobody. The file is never
    deleted (unlinking it would let a second run lock a new file while the first still holds
    the old one). It holds the holder's pid, for the message of the run that is refused.

    Raises
    ------
    OutputDirBusyError
        Another process (or another open of the same file) holds the lock.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise OutputDirBusyError(
                f"output-dir {folder} is in use by another run (pid {holder}): wait for it to end, "
                "or give this run another output-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing the last descriptor releases the lock
