"""Typed reads of a reply's records (strategies.replies), against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from coopt_flwr.protocol.merge import ReplyError
from strategies.replies import reply_array, reply_float, reply_int, reply_record, reply_str


def test_int_field_must_be_an_int_in_range():
    rec = ConfigRecord({"a": 3, "b": 3.0, "c": "3", "d": True, "e": -1})
    assert reply_int(rec, "a", low=0, high=3) == 3
    for key in ("b", "c", "d"):
        with pytest.raises(ReplyError, match="not an int"):
            reply_int(rec, key)
    with pytest.raises(ReplyError, match="outside"):
        reply_int(rec, "e", low=0)
    assert reply_int(rec, "missing", default=7) == 7
    with pytest.raises(ReplyError, match="no 'missing'"):
        reply_int(rec, "missing")


def test_float_field_must_be_a_finite_number():
    rec = ConfigRecord({"a": 0.5, "b": 2, "c": float("inf"), "d": float("nan"), "e": "0.5", "f": False})
    assert reply_float(rec, "a") == 0.5 and reply_float(rec, "b") == 2.0
    for key in ("c", "d"):
        with pytest.raises(ReplyError, match="not finite"):
            reply_float(rec, key)
    for key in ("e", "f"):
        with pytest.raises(ReplyError, match="not a number"):
            reply_float(rec, key)
    with pytest.raises(ReplyError, match="below"):
        reply_float(rec, "a", low=1.0)


def test_str_field_and_records_are_typed():
    rec = ConfigRecord({"name": "x", "n": 1})
    assert reply_str(rec, "name") == "x"
    with pytest.raises(ReplyError, match="not a str"):
        reply_str(rec, "n")
    content = RecordDict({"node": rec, "arrays": ArrayRecord({"t": Array(np.zeros((2, 3), np.float32))})})
    assert reply_record(content, "node", ConfigRecord) is rec
    with pytest.raises(ReplyError, match="is a ConfigRecord, expected an ArrayRecord"):
        reply_record(content, "node", ArrayRecord)
    with pytest.raises(ReplyError, match="no 'other' record"):
        reply_record(content, "other", ConfigRecord)


def test_array_is_viewed_and_a_lying_npy_header_is_refused_without_allocating():
    arrays = ArrayRecord({"t": Array(np.arange(6, dtype=np.float32).reshape(2, 3))})
    assert np.array_equal(reply_array(arrays, "t"), np.arange(6).reshape(2, 3))
    big = Array(np.zeros(1, np.float32))
    header = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
    big.data = header.ljust(10 + 118, b" ")[:-1] + b"\n"  # a header claiming 4 TB, no data
    with pytest.raises(ReplyError, match="t: array data holds 0 bytes, its header says 4000000000000"):
        reply_array(ArrayRecord({"t": big}), "t")
    with pytest.raises(ReplyError, match="no 'u' array"):
        reply_array(arrays, "u")
