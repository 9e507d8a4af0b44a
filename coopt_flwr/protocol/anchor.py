"""The anchor rule: the participant whose shared-set targets are the most uniform.

Every participant aligns its targets to the anchor's. The platform picks the lowest
uniformity V (:func:`coopt_flwr.protocol.uniformity.uniformity`, lower is more uniform); on a
tie, the lowest partition id, so the choice never depends on the order replies arrived in or
on the nodes' random ids. The strategy and the in-process replay both use this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["choose_anchor", "uniformity_order"]


def uniformity_order(uniformities: Mapping[int, float]) -> list[int]:
    """Partitions from the most to the least uniform, ties in increasing partition order.

    Parameters
    ----------
    uniformities
        The platform's uniformity value V of each candidate, keyed by partition id.

    Returns
    -------
    list of int
        The partition ids sorted by ``(V, partition)``; the first is the anchor.

    Raises
    ------
    ValueError
        If a value is NaN (it has no place in the order).
    """
    for partition, value in uniformities.items():
        if math.isnan(value):
            raise ValueError(f"partition {partition} has uniformity NaN; it cannot be ranked")
    return sorted(uniformities, key=lambda p: (uniformities[p], p))


def choose_anchor(uniformities: Mapping[int, float]) -> int:
    """The anchor: argmin of the uniformity, ties to the lowest partition id.

    Parameters
    ----------
    uniformities
        The platform's uniformity value V of each accepted participant, keyed by partition id.

    Returns
    -------
    int
        The anchor's partition id.

    Raises
    ------
    ValueError
        If there is no candidate, or a value is NaN.
    """
    if not uniformities:
        raise ValueError("no candidate for the anchor: no participant has a uniformity value")
    return uniformity_order(uniformities)[0]
