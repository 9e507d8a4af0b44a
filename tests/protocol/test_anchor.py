"""The anchor rule: argmin of the platform's uniformity, ties to the lowest partition id."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coopt_flwr.protocol.anchor import choose_anchor, uniformity_order

# Few distinct values, so that ties are common.
_values = st.dictionaries(
    st.integers(min_value=0, max_value=50), st.sampled_from([-3.5, -2.0, -1.25, -0.5, 0.0]), min_size=1
)


def test_the_most_uniform_partition_is_the_anchor():
    assert choose_anchor({0: -0.5, 1: -2.0, 2: -1.0}) == 1
    assert choose_anchor({7: -0.1}) == 7


def test_a_tie_goes_to_the_lowest_partition_whatever_the_order_given():
    assert choose_anchor({5: -2.0, 2: -2.0, 9: -1.0}) == 2
    assert choose_anchor({2: -2.0, 5: -2.0}) == choose_anchor({5: -2.0, 2: -2.0}) == 2


@given(_values)
def test_choose_anchor_is_argmin_then_lowest_partition(values):
    anchor = choose_anchor(values)
    best = min(values.values())
    assert values[anchor] == best
    assert anchor == min(p for p, v in values.items() if v == best)


@given(_values)
def test_the_order_is_by_value_then_partition(values):
    order = uniformity_order(values)
    assert sorted(order) == sorted(values) and order[0] == choose_anchor(values)
    keys = [(values[p], p) for p in order]
    assert keys == sorted(keys)


def test_no_candidate_is_a_clear_error():
    with pytest.raises(ValueError, match="no candidate for the anchor"):
        choose_anchor({})


def test_nan_cannot_be_ranked():
    with pytest.raises(ValueError, match="partition 3 has uniformity NaN"):
        choose_anchor({1: -1.0, 3: math.nan})


def test_numpy_values_work_as_the_platform_computes_them():
    assert choose_anchor({0: np.float64(-1.0), 1: np.float32(-1.5)}) == 1
