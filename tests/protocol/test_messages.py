"""Tests for coopt_flwr.protocol.messages: the zero-copy view of a Flower Array."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coopt_flwr.protocol.messages import array_view

_DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_])


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(dtype=_DTYPES, shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6)),
    st.booleans(),
)
def test_view_equals_numpy_and_shares_the_message_bytes(a: np.ndarray, fortran: bool) -> None:
    a = np.asfortranarray(a) if fortran else a
    arr = Array(a)
    view = array_view(arr)
    expected = arr.numpy()
    assert view.dtype == expected.dtype and view.shape == expected.shape
    np.testing.assert_array_equal(view, expected)
    assert not view.flags.writeable  # a view into immutable message bytes, never a copy
    if view.size:
        assert np.shares_memory(view, np.frombuffer(arr.data, dtype=np.uint8))


def test_big_endian_arrays_keep_their_values() -> None:
    a = np.arange(6, dtype=">f4").reshape(2, 3)
    np.testing.assert_array_equal(array_view(Array(a)), a)


def test_truncated_data_is_refused() -> None:
    arr = Array(np.ones((4, 3), dtype=np.float32))
    bad = Array(dtype=arr.dtype, shape=arr.shape, stype=arr.stype, data=arr.data[:-4])
    with pytest.raises(ValueError, match="header says"):
        array_view(bad)


def test_not_npy_bytes_are_refused() -> None:
    bad = Array(dtype="float32", shape=(2,), stype="numpy.ndarray", data=b"not an npy buffer at all")
    with pytest.raises(ValueError):
        array_view(bad)
