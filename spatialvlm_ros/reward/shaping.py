"""Distance -> reward shaping: a registry of shaping functions plus bonus and clipping.

Everything here is stateless and vectorised over numpy arrays, so the same code serves the live
:class:`~spatialvlm_ros.reward.tracker.RewardTracker`, a gym wrapper and offline bag evaluation.
Distances are in metres.
"""

from __future__ import annotations

from typing import Protocol, overload

import numpy as np
import numpy.typing as npt

from spatialvlm_ros.config import RewardConfig
from spatialvlm_ros.registry import Registry

FloatArray = npt.NDArray[np.float64]


class Shaping(Protocol):
    """A shaping function: filtered distance (and the previous one) -> reward, before bonus and clip."""

    def __call__(self, d: FloatArray, prev_d: FloatArray, config: RewardConfig) -> FloatArray:
        """``prev_d`` is NaN where there is no previous distance (first step); NaN ``d`` gives NaN."""
        ...


def get_shaping(name: str) -> Shaping:
    """The shaping function registered as ``name``.

    Example:
        >>> get_shaping("negative")(np.array([0.2]), np.array([np.nan]), RewardConfig(scale_m=0.1))
        array([-2.])
    """
    return SHAPINGS.get(name)


def _potential(d: FloatArray, config: RewardConfig) -> FloatArray:
    return -d / config.scale_m


def _exp(d: FloatArray, prev_d: FloatArray, config: RewardConfig) -> FloatArray:
    return np.exp(-d / config.scale_m)


def _negative(d: FloatArray, prev_d: FloatArray, config: RewardConfig) -> FloatArray:
    return _potential(d, config)


def _progress(d: FloatArray, prev_d: FloatArray, config: RewardConfig) -> FloatArray:
    # Potential-based shaping (Ng et al. 1999) keeps the optimal policy of the sparse task.
    progress = config.gamma * _potential(d, config) - _potential(prev_d, config)
    # No previous distance: no progress yet, but an unknown current distance stays unknown (NaN).
    first = np.isnan(prev_d) & ~np.isnan(d)
    return np.where(first, 0.0, progress)


# The one place shapings are registered; a plug-in adds ``SHAPINGS.register("name")(function)``.
SHAPINGS: Registry[Shaping] = Registry("reward.shaping")
SHAPINGS.register("exp")(_exp)
SHAPINGS.register("negative")(_negative)
SHAPINGS.register("progress")(_progress)


@overload
def shape_distance(d: float, config: RewardConfig, *, prev_d: float | None = None) -> float: ...


@overload
def shape_distance(d: npt.ArrayLike, config: RewardConfig, *,
                   prev_d: npt.ArrayLike | None = None) -> float | FloatArray: ...


def shape_distance(d: npt.ArrayLike, config: RewardConfig, *,
                   prev_d: npt.ArrayLike | None = None) -> float | FloatArray:
    """Reward for (already filtered) distance(s) ``d`` in metres: shaping, success bonus, clipping.

    Args:
        d: distance(s) in metres, scalar or array; NaN gives a NaN reward.
        config: shaping, ``scale_m``, ``gamma``, success threshold and bonus, clip range.
        prev_d: the previous step's distance(s), used by ``"progress"`` only; None or NaN means
            "first step" (progress 0). For a time series pass ``d`` shifted by one step.

    Returns:
        A float for scalar input, else an array shaped like ``d`` broadcast with ``prev_d``.

    Example:
        >>> cfg = RewardConfig(shaping="exp", scale_m=0.1, success_threshold_m=0.02, success_bonus=1.0)
        >>> round(shape_distance(0.1, cfg), 4)
        0.3679
        >>> shape_distance(np.array([0.0, 0.5]), cfg).round(4)   # 0.0 is a success: 1 + 1
        array([2.    , 0.0067])
        >>> prog = RewardConfig(shaping="progress", scale_m=0.1, gamma=1.0)
        >>> d = np.array([0.30, 0.25, 0.10])
        >>> shape_distance(d, prog, prev_d=np.r_[np.nan, d[:-1]]).round(3)
        array([0. , 0.5, 1.5])
    """
    d_arr = np.asarray(d, dtype=np.float64)
    prev_arr = np.full_like(d_arr, np.nan) if prev_d is None else np.asarray(prev_d, dtype=np.float64)
    reward = get_shaping(config.shaping)(d_arr, prev_arr, config)
    if config.success_bonus != 0.0:
        # NaN < threshold is False, so an unknown distance never earns the bonus.
        reward = reward + np.where(d_arr < config.success_threshold_m, config.success_bonus, 0.0)
    reward = np.clip(reward, config.clip_min, config.clip_max)
    return float(reward) if reward.ndim == 0 else reward
