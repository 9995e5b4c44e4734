"""The estimator interface every backend implements (geometric on RGB-D, any spatial VLM on RGB).

Every backend returns the same :class:`~spatialvlm_ros.types.DistanceEstimate`; "no answer" is an
invalid estimate with a :class:`~spatialvlm_ros.types.NoEstimateReason`, never an exception and never
a silent zero.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

from spatialvlm_ros.config import EstimatorConfig
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, Pair


class DistanceEstimator(Protocol):
    """What every backend implements."""

    name: str

    def estimate(self, frame: Frame, pairs: Sequence[Pair], kind: DistanceKind) -> list[DistanceEstimate]:
        """Estimate one distance per pair in ``frame``. Never raises for per-frame problems."""
        ...


EstimatorFactory = Callable[[EstimatorConfig], DistanceEstimator]
