"""Tests of spatialvlm_ros.estimation.views: one estimate per pair from several cameras."""

from __future__ import annotations

import dataclasses
import math

import pytest

from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.estimation.views import fuse_views
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, NoEstimateReason, Pair

CAN = Pair.parse("yellow gripper -> red can")
BOX = Pair.parse("yellow gripper -> blue box")


def valid(pair: Pair, metres: float, detail: str = "") -> DistanceEstimate:
    return DistanceEstimate(pair=pair, kind=DistanceKind.GAP, distance_m=metres, uncertainty_m=0.01, valid=True,
                            detail=detail)


def invalid(pair: Pair, reason: NoEstimateReason = NoEstimateReason.NOT_VISIBLE) -> DistanceEstimate:
    return DistanceEstimate(pair=pair, kind=DistanceKind.GAP, distance_m=math.nan, uncertainty_m=math.nan,
                            valid=False, reason=reason)


def test_each_pair_takes_the_largest_valid_view() -> None:
    """Per pair, independently: the can from view 1, the box from view 0; the detail names the view."""
    can, box = fuse_views([[valid(CAN, 0.01), valid(BOX, 0.20, "seen")], [valid(CAN, 0.07), valid(BOX, 0.12)]])
    assert (can.distance_m, box.distance_m) == (0.07, 0.20)
    assert can.detail.endswith("view 1") and box.detail == "seen; largest of 2 valid views' estimates: view 0"


def test_invalid_views_are_left_out_and_all_invalid_gives_the_first() -> None:
    slow = dataclasses.replace(valid(CAN, 0.02), latency_ms=5.0)
    [fused] = fuse_views([[invalid(CAN)], [dataclasses.replace(valid(CAN, 0.03), latency_ms=2.0)], [slow]])
    assert fused.valid and fused.distance_m == 0.03 and fused.latency_ms == 7.0   # the estimate cost both
    [fused] = fuse_views([[invalid(CAN, NoEstimateReason.NO_DEPTH)], [invalid(CAN)]])
    assert not fused.valid and fused.reason is NoEstimateReason.NO_DEPTH


def test_one_view_passes_through_unchanged() -> None:
    estimate = valid(CAN, 0.05, "as measured")
    assert fuse_views([[estimate]]) == (estimate,)


@pytest.mark.parametrize(("per_view", "match"), [
    ([], "^views: no camera"),
    ([[valid(CAN, 0.1)], [valid(BOX, 0.1)]], "^views: .*different pairs"),
    ([[valid(CAN, 0.1)], []], "^views: .*different pairs"),
])
def test_views_that_cannot_be_fused_are_refused(per_view: list, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        fuse_views(per_view)
