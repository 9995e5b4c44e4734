"""Stateful reward: one :class:`RewardTracker` per pair, combined over pairs by :class:`MultiPairReward`.

Per frame a tracker filters the distance, shapes it with :func:`shape_distance` and applies the
invalid-estimate policy; the multi-pair reward combines the trackers' rewards, ignoring pairs that
gave none. Stamps are integer nanoseconds, distances metres.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from spatialvlm_ros.config import RewardConfig
from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.types import DistanceEstimate, Pair
from spatialvlm_ros.reward.filters import build_filter
from spatialvlm_ros.reward.shaping import FloatArray, get_shaping, shape_distance


def _check_choice(config: RewardConfig, name: str) -> None:
    # from_mapping checks Literal fields, but a RewardConfig built directly skips that check.
    choices = typing.get_args(typing.get_type_hints(RewardConfig)[name])
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(f"reward.{name}: {value!r} is not one of {list(choices)}")


@dataclass(frozen=True)
class RewardStep:
    """The reward of one pair in one frame.

    Attributes:
        reward: shaped, bonus-added, clipped reward; NaN when there is none.
        distance_m: filtered distance the reward is based on, metres; NaN when there is none.
        raw_distance_m: the estimate's distance as received, metres (NaN for invalid estimates).
        valid: the reward comes from a fresh valid estimate of this frame.
        held: the reward repeats the last valid filtered distance (``invalid_policy="hold_last"``).
        success: ``distance_m`` is under ``success_threshold_m``.
        stamp_ns: stamp of the estimate's source frame, integer nanoseconds.
    """

    reward: float
    distance_m: float
    raw_distance_m: float
    valid: bool
    held: bool
    success: bool
    stamp_ns: int


class RewardTracker:
    """Distance estimates of one pair -> dense reward, one :class:`RewardStep` per frame.

    Invalid estimates (``valid`` False or a non-finite distance) never reach the filter. What they
    yield depends on ``config.invalid_policy``: ``"hold_last"`` re-uses the last valid filtered
    distance (``held=True``; a NaN reward before any valid estimate), ``"nan"`` a NaN reward,
    ``"skip"`` no step at all (``None``).

    Example:
        >>> from spatialvlm_ros.types import DistanceKind, NoEstimateReason
        >>> pair = Pair.parse("yellow gripper -> red can")
        >>> tracker = RewardTracker(RewardConfig(shaping="negative", scale_m=0.1, filter="none"))
        >>> tracker.update(DistanceEstimate(pair=pair, kind=DistanceKind.GAP, distance_m=0.2, uncertainty_m=0.01,
        ...                                 valid=True, stamp_ns=1)).reward
        -2.0
        >>> lost = DistanceEstimate.invalid(pair, DistanceKind.GAP, NoEstimateReason.NOT_VISIBLE, "", stamp_ns=2)
        >>> step = tracker.update(lost)
        >>> step.reward, step.held, step.valid
        (-2.0, True, False)
    """

    def __init__(self, config: RewardConfig) -> None:
        _check_choice(config, "invalid_policy")
        self.config = config
        self._filter = build_filter(config)
        get_shaping(config.shaping)  # fail now, not on the first frame, if the shaping is unknown
        self._last_d: float | None = None  # last filtered distance: potential for "progress", hold value

    def reset(self) -> None:
        """Forget the filter history and the held distance (call at an episode start)."""
        self._filter.reset()
        self._last_d = None

    def update(self, estimate: DistanceEstimate) -> RewardStep | None:
        """Reward for ``estimate``; ``None`` only for an invalid estimate under ``"skip"``."""
        if estimate.valid and math.isfinite(estimate.distance_m):
            d = self._filter.update(estimate.distance_m)
            step = self._step(d, estimate, valid=True, held=False)
            self._last_d = d
            return step
        if self.config.invalid_policy == "skip":
            return None
        if self.config.invalid_policy == "hold_last" and self._last_d is not None:
            return self._step(self._last_d, estimate, valid=False, held=True)
        return RewardStep(reward=math.nan, distance_m=math.nan, raw_distance_m=estimate.distance_m,
                          valid=False, held=False, success=False, stamp_ns=estimate.stamp_ns)

    def _step(self, d: float, estimate: DistanceEstimate, *, valid: bool, held: bool) -> RewardStep:
        # A held distance is shaped as "observed again": identical reward for exp/negative, and for
        # progress the no-movement reward, so held frames neither invent nor repeat progress.
        reward = shape_distance(d, self.config, prev_d=self._last_d)
        return RewardStep(reward=reward, distance_m=d, raw_distance_m=estimate.distance_m, valid=valid,
                          held=held, success=d < self.config.success_threshold_m, stamp_ns=estimate.stamp_ns)


def combine_rewards(rewards: npt.ArrayLike, mode: str, axis: int = -1) -> float | FloatArray:
    """Combine per-pair rewards along ``axis`` by ``mode`` (``"mean"``, ``"sum"``, ``"min"``).

    NaN entries are ignored; where every entry is NaN (or there are none) the result is NaN.

    Example:
        >>> combine_rewards([1.0, np.nan, 3.0], "mean")
        2.0
        >>> combine_rewards([[1.0, 2.0], [np.nan, np.nan]], "sum")
        array([ 3., nan])
    """
    r = np.asarray(rewards, dtype=np.float64)
    used = ~np.isnan(r)
    count = used.sum(axis=axis)
    if mode == "min":
        combined = np.where(used, r, np.inf).min(axis=axis, initial=np.inf)
    elif mode in ("mean", "sum"):
        combined = np.where(used, r, 0.0).sum(axis=axis)
        if mode == "mean":
            combined = combined / np.maximum(count, 1)  # count 0 is masked to NaN just below
    else:
        raise ConfigError(f"reward.combine: {mode!r} is not one of ['mean', 'sum', 'min']")
    combined = np.where(count > 0, combined, np.nan)
    return float(combined) if combined.ndim == 0 else combined


@dataclass(frozen=True)
class CombinedReward:
    """The reward of all pairs in one frame.

    Attributes:
        reward: per-pair rewards combined by ``config.combine``; NaN when no pair gave one.
        defined: ``reward`` is not NaN (at least one pair contributed).
        n_used: how many pairs contributed a reward.
        steps: each pair's step; ``None`` where the pair was skipped or had no estimate this frame.
        stamp_ns: latest stamp among this frame's estimates, integer nanoseconds (0 if none).
    """

    reward: float
    defined: bool
    n_used: int
    steps: Mapping[Pair, RewardStep | None]
    stamp_ns: int


class MultiPairReward:
    """One :class:`RewardTracker` per pair, combined into one reward per frame.

    Example:
        >>> from spatialvlm_ros.types import DistanceKind
        >>> cfg = RewardConfig(shaping="negative", scale_m=0.1, filter="none", combine="sum")
        >>> multi = MultiPairReward(cfg, ["yellow gripper -> red can", "yellow gripper -> blue box"])
        >>> can, box = multi.pairs
        >>> gap = dict(kind=DistanceKind.GAP, uncertainty_m=0.0, valid=True)
        >>> out = multi.update([DistanceEstimate(pair=can, distance_m=0.1, **gap),
        ...                     DistanceEstimate(pair=box, distance_m=0.2, **gap)])
        >>> out.reward, out.n_used
        (-3.0, 2)
    """

    def __init__(self, config: RewardConfig, pairs: Sequence[Pair | str]) -> None:
        _check_choice(config, "combine")
        parsed = [p if isinstance(p, Pair) else Pair.parse(p) for p in pairs]
        if not parsed:
            raise ConfigError("pairs: name at least one 'GRIPPER -> OBJECT' pair")
        if len(set(parsed)) != len(parsed):
            raise ConfigError(f"pairs: duplicate pair in {[str(p) for p in parsed]}")
        self.config = config
        self._trackers = {p: RewardTracker(config) for p in parsed}

    @property
    def pairs(self) -> tuple[Pair, ...]:
        """The tracked pairs, in configuration order."""
        return tuple(self._trackers)

    def tracker(self, pair: Pair) -> RewardTracker:
        """The tracker of ``pair``."""
        return self._trackers[pair]

    def reset(self) -> None:
        """Reset every tracker (call at an episode start)."""
        for tracker in self._trackers.values():
            tracker.reset()

    def update(self, estimates: Iterable[DistanceEstimate]) -> CombinedReward:
        """Feed one frame's estimates (at most one per pair) and combine the pairs' rewards.

        Raises:
            InputError: an estimate names an untracked pair, or a pair appears twice.
        """
        steps: dict[Pair, RewardStep | None] = dict.fromkeys(self._trackers)
        seen: set[Pair] = set()
        stamp_ns = 0
        for est in estimates:
            if est.pair not in self._trackers:
                raise InputError(f"estimate for untracked pair '{est.pair}'; tracked: {[str(p) for p in self.pairs]}")
            if est.pair in seen:
                raise InputError(f"two estimates for pair '{est.pair}' in one frame")
            seen.add(est.pair)
            steps[est.pair] = self._trackers[est.pair].update(est)
            stamp_ns = max(stamp_ns, est.stamp_ns)
        rewards = [s.reward for s in steps.values() if s is not None]
        n_used = sum(not math.isnan(r) for r in rewards)
        reward = combine_rewards(rewards, self.config.combine)
        return CombinedReward(reward=reward, defined=n_used > 0, n_used=n_used,
                              steps=types.MappingProxyType(steps), stamp_ns=stamp_ns)


def build_reward(config: RewardConfig, pairs: Sequence[Pair | str]) -> MultiPairReward:
    """The multi-pair reward for ``pairs`` (``Pair`` or ``"GRIPPER -> OBJECT"`` strings).

    Example:
        >>> build_reward(RewardConfig(), ["yellow gripper -> red can"]).pairs
        (Pair(gripper='yellow gripper', target='red can'),)
    """
    return MultiPairReward(config, pairs)
