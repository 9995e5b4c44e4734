"""One estimate per pair from several cameras' estimates of the same moment.

A single camera cannot tell a gripper that hovers in front of or behind an object, along its line of sight,
from one that touches it: both look alike in the image, and an estimator reads a gap that is too small.
Another camera sees that line from aside. So a gap is taken to be as large as the largest valid estimate
among the views: the gripper counts as touching only when every view that answered says so.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.types import DistanceEstimate


def fuse_views(per_view: Sequence[Sequence[DistanceEstimate]]) -> tuple[DistanceEstimate, ...]:
    """Per pair, the largest valid estimate over the views; the first view's estimate when none is valid.

    Args:
        per_view: one sequence of estimates per camera, each in the same pair order.

    Returns:
        One estimate per pair (on a tie, the later view's). A fused estimate's ``detail`` says which view it
        came from, and its ``latency_ms`` is the sum over the views (what the estimate cost).

    Raises:
        ConfigError: no views, or views whose pairs differ.

    Example:
        >>> from spatialvlm_ros.types import DistanceKind, Pair
        >>> pair = Pair.parse("yellow gripper -> red can")
        >>> def gap(m): return DistanceEstimate(pair=pair, kind=DistanceKind.GAP, distance_m=m, uncertainty_m=0.01,
        ...                                     valid=True)
        >>> [round(e.distance_m, 2) for e in fuse_views([[gap(0.01)], [gap(0.08)]])]
        [0.08]
    """
    if not per_view:
        raise ConfigError("views: no camera gave estimates")
    pairs = [tuple(e.pair for e in view) for view in per_view]
    if any(p != pairs[0] for p in pairs[1:]):
        raise ConfigError(f"views: the cameras' estimates are of different pairs: {pairs}")
    if len(per_view) == 1:
        return tuple(per_view[0])
    fused = []
    for estimates in zip(*per_view):
        cost_ms = sum(e.latency_ms for e in estimates)
        valid = [(e.distance_m, k) for k, e in enumerate(estimates) if e.valid]
        if not valid:
            fused.append(dataclasses.replace(estimates[0], latency_ms=cost_ms))
            continue
        _, k = max(valid)
        chosen = estimates[k]
        note = f"largest of {len(valid)} valid views' estimates: view {k}"
        fused.append(dataclasses.replace(chosen, detail=f"{chosen.detail}; {note}" if chosen.detail else note,
                                         latency_ms=cost_ms))
    return tuple(fused)
