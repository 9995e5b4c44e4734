"""Temporal filters on the estimated distance (not on the reward), chosen by ``RewardConfig.filter``.

Filters see valid distances only: the tracker never feeds them an invalid estimate, so a dropout
neither drags an EMA towards NaN nor occupies a median slot.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Protocol

import numpy as np

from spatialvlm_ros.config import RewardConfig
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.registry import Registry


class DistanceFilter(Protocol):
    """A stateful filter over a stream of valid distances in metres."""

    def update(self, d: float) -> float:
        """Feed one valid distance; return the filtered distance."""
        ...

    def reset(self) -> None:
        """Forget all history."""
        ...


class PassThrough:
    """No filtering: the filtered distance is the latest one.

    Example:
        >>> PassThrough().update(0.3)
        0.3
    """

    def update(self, d: float) -> float:
        """Return ``d`` unchanged."""
        return d

    def reset(self) -> None:
        """Nothing to forget."""


class EmaFilter:
    """Exponential moving average; ``alpha`` is the weight of the newest distance.

    Example:
        >>> f = EmaFilter(alpha=0.5)
        >>> f.update(1.0), f.update(0.0), f.update(0.0)
        (1.0, 0.5, 0.25)
    """

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise ConfigError("reward.ema_alpha: must be in (0, 1]")
        self.alpha = alpha
        self._state: float | None = None

    def update(self, d: float) -> float:
        """Blend ``d`` into the average; the first distance initialises it (no bias towards 0)."""
        self._state = d if self._state is None else self.alpha * d + (1.0 - self.alpha) * self._state
        return self._state

    def reset(self) -> None:
        """Forget the average."""
        self._state = None


class MedianFilter:
    """Median of the last ``window`` distances: rejects isolated spikes, unlike an average.

    Example:
        >>> f = MedianFilter(window=3)
        >>> [f.update(d) for d in (0.2, 0.2, 5.0, 0.2)]
        [0.2, 0.2, 0.2, 0.2]
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ConfigError("reward.median_window: must be >= 1")
        self._window: deque[float] = deque(maxlen=window)

    def update(self, d: float) -> float:
        """Add ``d`` to the window and return the window's median."""
        self._window.append(d)
        return float(np.median(self._window))

    def reset(self) -> None:
        """Empty the window."""
        self._window.clear()


FILTERS: Registry[Callable[[RewardConfig], DistanceFilter]] = Registry("reward.filter")
FILTERS.register("none")(lambda cfg: PassThrough())
FILTERS.register("ema")(lambda cfg: EmaFilter(cfg.ema_alpha))
FILTERS.register("median")(lambda cfg: MedianFilter(cfg.median_window))


def build_filter(config: RewardConfig) -> DistanceFilter:
    """A fresh filter as named by ``config.filter``.

    Example:
        >>> type(build_filter(RewardConfig(filter="median"))).__name__
        'MedianFilter'
    """
    return FILTERS.create(config.filter, config)
