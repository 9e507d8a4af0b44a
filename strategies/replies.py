"""Typed reads of a participant's reply: every record, field and array checked before use.

A participant controls every byte of its reply. Each value is checked for its type and range
before the platform uses it; a failure is a :class:`coopt_flwr.protocol.merge.ReplyError`
whose message ends up in the summary. Python's ``int()`` and ``float()`` are no check: they
take ``"3"``, ``b"3"``, ``True`` and ``2.5`` alike, and ``int(inf)`` raised OverflowError, which
no handler expected (the platform crashed on one participant's ``cached = inf``).
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from coopt_flwr.protocol.merge import ReplyError
from coopt_flwr.protocol.messages import array_view

__all__ = ["reply_array", "reply_float", "reply_int", "reply_record", "reply_str"]

_Record = TypeVar("_Record", ConfigRecord, ArrayRecord)


def reply_record(content: RecordDict, name: str, kind: type[_Record]) -> _Record:
    """The record ``name`` of a reply's content, which must be a ``kind``.

    Parameters
    ----------
    content
        The reply's content.
    name
        The record's name (:data:`coopt_flwr.protocol.messages.NODE`, ``ARRAYS``).
    kind
        ``ConfigRecord`` or ``ArrayRecord``.

    Raises
    ------
    ReplyError
        The record is missing or of another type (a ConfigRecord where the arrays belong
        made the platform call ``.numpy()`` on a float: AttributeError, a crash).
    """
    if name not in content:
        raise ReplyError(f"no {name!r} record")
    record = content[name]
    if not isinstance(record, kind):
        expected = kind.__name__
        article = "an" if expected[0] in "AEIOU" else "a"
        raise ReplyError(f"record {name!r} is a {type(record).__name__}, expected {article} {expected}")
    return record


def _value(record: ConfigRecord, key: str, default: Any) -> Any:
    if key in record:
        return record[key]
    if default is None:
        raise ReplyError(f"no {key!r}")
    return default


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def reply_int(
    record: ConfigRecord,
    key: str,
    low: int | None = None,
    high: int | None = None,
    default: int | None = None,
) -> int:
    """``record[key]``: an int (not a bool, a float or a string) in ``[low, high]``.

    Parameters
    ----------
    record
        A reply's node ConfigRecord.
    key
        The field.
    low, high
        Inclusive bounds; None: unbounded.
    default
        The value of a missing field; None: the field is required.

    Raises
    ------
    ReplyError
        Missing, of another type, or out of range.
    """
    value = _value(record, key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReplyError(f"{key} is {type(value).__name__} {_shown(value)}, not an int")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ReplyError(f"{key} {value} outside [{low}, {high}]")
    return value


def reply_float(
    record: ConfigRecord, key: str, low: float | None = None, default: float | None = None
) -> float:
    """``record[key]``: a finite number (a float or an int, not a bool or a string), ``>= low``.

    Parameters
    ----------
    record
        A reply's node ConfigRecord.
    key
        The field.
    low
        Inclusive lower bound; None: unbounded.
    default
        The value of a missing field; None: the field is required.

    Raises
    ------
    ReplyError
        Missing, of another type, not finite, or below ``low``.
    """
    value = _value(record, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReplyError(f"{key} is {type(value).__name__} {_shown(value)}, not a number")
    value = float(value)
    if not math.isfinite(value):
        raise ReplyError(f"{key} {value} is not finite")
    if low is not None and value < low:
        raise ReplyError(f"{key} {value:g} is below {low:g}")
    return value


def reply_str(record: ConfigRecord, key: str, default: str | None = None) -> str:
    """``record[key]``: a string (``default`` for a missing field; None: required).

    Raises
    ------
    ReplyError
        Missing or of another type.
    """
    value = _value(record, key, default)
    if not isinstance(value, str):
        raise ReplyError(f"{key} is {type(value).__name__} {_shown(value)}, not a str")
    return value


def reply_array(record: ArrayRecord, key: str) -> np.ndarray:
    """``record[key]`` as a read-only numpy view (:func:`coopt_flwr.protocol.messages.array_view`).

    Not ``Array.numpy()``: ``np.load`` allocates what the npy header claims before it reads the
    data, so a few bytes claiming 10¹² × 10⁶ floats raised MemoryError (a crash); the view
    checks the header against the bytes that came.

    Raises
    ------
    ReplyError
        The key is missing, or its bytes are not a well-formed npy buffer of a non-object
        dtype (or not numpy's serialization).
    """
    if key not in record:
        raise ReplyError(f"no {key!r} array")
    try:
        return array_view(record[key])
    except (ValueError, TypeError) as exc:
        raise ReplyError(f"{key}: {exc}") from exc
