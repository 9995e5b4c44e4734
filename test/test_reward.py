"""Tests of spatialvlm_ros.reward: shaping, bonus, clipping, filters, invalid policies, combination."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatialvlm_ros.config import RewardConfig, from_mapping
from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, NoEstimateReason, Pair
from spatialvlm_ros.reward import (
    EmaFilter, MedianFilter, MultiPairReward, RewardTracker, build_reward, combine_rewards, shape_distance,
)

CAN = Pair("yellow gripper", "red can")
BOX = Pair("yellow gripper", "blue box")


def cfg(**kw: object) -> RewardConfig:
    """A config through the same validated door the nodes use."""
    return from_mapping(RewardConfig, kw)


def est(d: float, pair: Pair = CAN, stamp_ns: int = 0) -> DistanceEstimate:
    return DistanceEstimate(pair=pair, kind=DistanceKind.GAP, distance_m=d, uncertainty_m=0.0, valid=True,
                            stamp_ns=stamp_ns)


def lost(pair: Pair = CAN, stamp_ns: int = 0) -> DistanceEstimate:
    return DistanceEstimate.invalid(pair, DistanceKind.GAP, NoEstimateReason.NOT_VISIBLE, "gone", stamp_ns=stamp_ns)


# --- shaping ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("shaping", "d", "expected"), [
    ("exp", 0.0, 1.0),
    ("exp", 0.1, math.exp(-1.0)),
    ("exp", 0.3, math.exp(-3.0)),
    ("negative", 0.0, 0.0),
    ("negative", 0.25, -2.5),
    ("progress", 0.25, 0.0),   # no previous distance: first step gives 0
])
def test_shaping_values(shaping: str, d: float, expected: float) -> None:
    assert shape_distance(d, cfg(shaping=shaping, scale_m=0.1)) == pytest.approx(expected)


@pytest.mark.parametrize("shaping", ["exp", "negative"])
def test_shaping_decreases_with_distance(shaping: str) -> None:
    d = np.linspace(0.0, 1.0, 50)
    r = shape_distance(d, cfg(shaping=shaping, scale_m=0.2, clip_min=-100.0))
    assert isinstance(r, np.ndarray) and r.shape == d.shape
    assert np.all(np.diff(r) < 0)


@pytest.mark.parametrize("shaping", ["exp", "negative", "progress"])
def test_shaping_nan_distance_gives_nan(shaping: str) -> None:
    assert math.isnan(shape_distance(math.nan, cfg(shaping=shaping), prev_d=0.1))


def test_progress_step_value() -> None:
    c = cfg(shaping="progress", scale_m=0.1, gamma=0.9)
    # gamma * phi(0.1) - phi(0.2) = 0.9 * -1 + 2
    assert shape_distance(0.1, c, prev_d=0.2) == pytest.approx(1.1)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_progress_telescopes(gamma: float) -> None:
    """Sum_t gamma^t r_t = gamma^(T-1) phi(d_T) - phi(d_1) over steps 2..T; for gamma=1 just phi(d_T) - phi(d_1)."""
    c = cfg(shaping="progress", scale_m=0.1, gamma=gamma, clip_min=-1e6, clip_max=1e6, filter="none")
    d = np.random.default_rng(0).uniform(0.0, 0.5, size=20)
    tracker = RewardTracker(c)
    rewards = np.array([tracker.update(est(x)).reward for x in d])
    assert rewards[0] == 0.0
    discounts = gamma ** np.arange(len(d) - 1)
    phi = -d / 0.1
    assert np.sum(discounts * rewards[1:]) == pytest.approx(gamma ** (len(d) - 1) * phi[-1] - phi[0])
    # the vectorised path agrees with the tracker
    vec = shape_distance(d, c, prev_d=np.r_[np.nan, d[:-1]])
    np.testing.assert_allclose(vec, rewards)


@pytest.mark.parametrize(("d", "bonus", "expected"), [
    (0.019, 5.0, -0.19 + 5.0),
    (0.02, 5.0, -0.2),          # threshold is strict
    (0.5, 5.0, -5.0),
    (0.0, 0.0, 0.0),            # bonus 0 disables it
])
def test_success_bonus(d: float, bonus: float, expected: float) -> None:
    c = cfg(shaping="negative", scale_m=0.1, success_threshold_m=0.02, success_bonus=bonus)
    assert shape_distance(d, c) == pytest.approx(expected)


def test_clipping() -> None:
    c = cfg(shaping="negative", scale_m=0.01, clip_min=-1.0, clip_max=0.5,
            success_threshold_m=0.001, success_bonus=3.0)
    np.testing.assert_allclose(shape_distance(np.array([0.0, 0.005, 5.0]), c), [0.5, -0.5, -1.0])


# --- filters ---------------------------------------------------------------------------------

def test_ema_filter() -> None:
    f = EmaFilter(alpha=0.25)
    assert f.update(1.0) == 1.0
    assert f.update(0.0) == pytest.approx(0.75)
    f.reset()
    assert f.update(0.4) == 0.4


def test_median_rejects_single_spike_where_ema_does_not() -> None:
    seq = [0.2, 0.2, 0.2, 3.0, 0.2, 0.2]
    med, ema = MedianFilter(window=5), EmaFilter(alpha=0.6)
    med_out = [med.update(d) for d in seq]
    ema_out = [ema.update(d) for d in seq]
    assert med_out == pytest.approx([0.2] * len(seq))
    assert max(ema_out) > 1.0


def test_median_follows_a_real_step() -> None:
    f = MedianFilter(window=3)
    out = [f.update(d) for d in (0.5, 0.5, 0.1, 0.1, 0.1)]
    assert out == pytest.approx([0.5, 0.5, 0.5, 0.1, 0.1])


@pytest.mark.parametrize("filt", ["ema", "median"])
def test_filters_ignore_invalid_estimates(filt: str) -> None:
    t = RewardTracker(cfg(shaping="negative", filter=filt, ema_alpha=0.5, median_window=3, invalid_policy="nan"))
    t.update(est(0.4))
    t.update(lost())
    step = t.update(est(0.4))
    assert step.distance_m == pytest.approx(0.4)   # a NaN never entered the filter


def test_tracker_reports_filtered_and_raw_distance() -> None:
    t = RewardTracker(cfg(shaping="negative", scale_m=0.1, filter="ema", ema_alpha=0.5))
    t.update(est(0.4))
    step = t.update(est(0.2, stamp_ns=7))
    assert (step.raw_distance_m, step.distance_m, step.stamp_ns) == (0.2, pytest.approx(0.3), 7)
    assert step.reward == pytest.approx(-3.0)
    assert step.valid and not step.held


# --- invalid policies ------------------------------------------------------------------------

def test_hold_last_before_and_after_first_valid() -> None:
    t = RewardTracker(cfg(shaping="exp", scale_m=0.1, filter="none", invalid_policy="hold_last"))
    first = t.update(lost(stamp_ns=1))
    assert math.isnan(first.reward) and math.isnan(first.distance_m)
    assert not first.valid and not first.held
    fresh = t.update(est(0.1, stamp_ns=2))
    held = t.update(lost(stamp_ns=3))
    assert held.reward == fresh.reward and held.distance_m == 0.1
    assert held.held and not held.valid and held.stamp_ns == 3 and math.isnan(held.raw_distance_m)


def test_hold_last_with_progress_gives_no_movement_reward() -> None:
    t = RewardTracker(cfg(shaping="progress", scale_m=0.1, gamma=1.0, filter="none", invalid_policy="hold_last"))
    t.update(est(0.3))
    assert t.update(est(0.2)).reward == pytest.approx(1.0)
    assert t.update(lost()).reward == pytest.approx(0.0)      # held: progress is not repeated
    assert t.update(est(0.1)).reward == pytest.approx(1.0)


@pytest.mark.parametrize("before_valid", [True, False])
def test_nan_policy(before_valid: bool) -> None:
    t = RewardTracker(cfg(filter="none", invalid_policy="nan"))
    if not before_valid:
        t.update(est(0.1))
    step = t.update(lost())
    assert math.isnan(step.reward) and math.isnan(step.distance_m)
    assert not step.valid and not step.held and not step.success


@pytest.mark.parametrize("before_valid", [True, False])
def test_skip_policy(before_valid: bool) -> None:
    t = RewardTracker(cfg(filter="none", invalid_policy="skip"))
    if not before_valid:
        t.update(est(0.1))
    assert t.update(lost()) is None


def test_non_finite_distance_counts_as_invalid() -> None:
    t = RewardTracker(cfg(filter="ema", invalid_policy="nan"))
    assert math.isnan(t.update(est(math.inf)).reward)
    assert t.update(est(0.1)).distance_m == pytest.approx(0.1)


def test_success_flag_uses_filtered_distance() -> None:
    t = RewardTracker(cfg(filter="median", median_window=3, success_threshold_m=0.05, success_bonus=1.0))
    t.update(est(0.01))
    t.update(est(0.01))
    step = t.update(est(0.9))                  # spike: the median stays at 0.01
    assert step.success and step.reward == pytest.approx(math.exp(-0.1) + 1.0)


def test_reset_forgets_filter_and_hold() -> None:
    t = RewardTracker(cfg(shaping="progress", filter="ema", invalid_policy="hold_last"))
    t.update(est(0.5))
    t.reset()
    assert math.isnan(t.update(lost()).reward)       # nothing to hold after reset
    step = t.update(est(0.1))
    assert step.distance_m == pytest.approx(0.1) and step.reward == 0.0   # first step again


# --- combining pairs -------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "expected"), [("mean", 2.0), ("sum", 4.0), ("min", 1.0)])
def test_combine_ignores_nan(mode: str, expected: float) -> None:
    assert combine_rewards([1.0, math.nan, 3.0], mode) == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["mean", "sum", "min"])
def test_combine_all_nan_or_empty_is_nan(mode: str) -> None:
    assert math.isnan(combine_rewards([math.nan, math.nan], mode))
    assert math.isnan(combine_rewards([], mode))


def test_combine_vectorised_over_time() -> None:
    r = np.array([[1.0, 2.0], [math.nan, 4.0], [math.nan, math.nan]])
    np.testing.assert_allclose(combine_rewards(r, "min"), [1.0, 4.0, math.nan])


@pytest.mark.parametrize(("mode", "expected"), [("mean", -1.5), ("sum", -3.0), ("min", -2.0)])
def test_multi_pair_combines(mode: str, expected: float) -> None:
    m = build_reward(cfg(shaping="negative", scale_m=0.1, filter="none", combine=mode), [CAN, BOX])
    out = m.update([est(0.1, CAN, stamp_ns=5), est(0.2, BOX, stamp_ns=6)])
    assert out.reward == pytest.approx(expected)
    assert out.defined and out.n_used == 2 and out.stamp_ns == 6


@pytest.mark.parametrize("policy", ["nan", "skip"])
def test_multi_pair_ignores_invalid_pairs(policy: str) -> None:
    m = build_reward(cfg(shaping="negative", scale_m=0.1, filter="none", invalid_policy=policy, combine="sum"),
                     ["yellow gripper -> red can", "yellow gripper -> blue box"])
    out = m.update([est(0.1, CAN), lost(BOX)])
    assert out.reward == pytest.approx(-1.0) and out.n_used == 1
    assert (out.steps[BOX] is None) == (policy == "skip")


def test_multi_pair_all_invalid_is_flagged_nan() -> None:
    m = build_reward(cfg(invalid_policy="hold_last"), [CAN, BOX])
    out = m.update([lost(CAN), lost(BOX)])
    assert math.isnan(out.reward) and not out.defined and out.n_used == 0


def test_multi_pair_missing_estimate_is_skipped() -> None:
    m = build_reward(cfg(shaping="negative", scale_m=0.1, filter="none"), [CAN, BOX])
    out = m.update([est(0.2, BOX)])
    assert out.steps[CAN] is None and out.reward == pytest.approx(-2.0)


def test_multi_pair_reset() -> None:
    m = build_reward(cfg(filter="ema", invalid_policy="hold_last"), [CAN])
    m.update([est(0.3)])
    m.reset()
    assert not m.update([lost()]).defined


def test_multi_pair_input_errors() -> None:
    m = build_reward(cfg(), [CAN])
    with pytest.raises(InputError, match="untracked pair"):
        m.update([est(0.1, BOX)])
    with pytest.raises(InputError, match="two estimates"):
        m.update([est(0.1), est(0.2)])


@pytest.mark.parametrize(("pairs", "match"), [
    ([], "at least one"),
    ([CAN, CAN], "duplicate pair"),
    (["no arrow here"], "GRIPPER -> OBJECT"),
])
def test_build_reward_pair_errors(pairs: list, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_reward(RewardConfig(), pairs)


# --- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "match"), [
    ({"shaping": "linear"}, "shaping: 'linear' is not one of"),
    ({"filter": "kalman"}, "filter: 'kalman' is not one of"),
    ({"invalid_policy": "zero"}, "invalid_policy: 'zero' is not one of"),
    ({"combine": "max"}, "combine: 'max' is not one of"),
    ({"scale_m": 0.0}, r"reward\.scale_m: must be > 0"),
    ({"gamma": 1.5}, r"reward\.gamma: must be in \(0, 1\]"),
    ({"ema_alpha": 0.0}, r"reward\.ema_alpha"),
    ({"median_window": 0}, r"reward\.median_window"),
    ({"clip_min": 1.0, "clip_max": 1.0}, r"reward\.clip_min: must be < clip_max"),
    ({"success_threshold_m": -0.1}, r"reward\.success_threshold_m"),
    ({"scale_m": "big"}, "scale_m: expected a number"),
    ({"scael_m": 0.1}, "unknown key 'scael_m'"),
])
def test_config_validation(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        from_mapping(RewardConfig, data)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("shaping", "linear", "reward.shaping: unknown 'linear'"),
    ("filter", "kalman", "reward.filter: unknown 'kalman'"),
    ("invalid_policy", "zero", "invalid_policy: 'zero' is not one of"),
])
def test_directly_built_bad_config_fails_at_construction(field: str, value: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RewardTracker(RewardConfig(**{field: value}))


def test_directly_built_bad_combine_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="combine: 'max' is not one of"):
        MultiPairReward(RewardConfig(combine="max"), [CAN])  # type: ignore[arg-type]
