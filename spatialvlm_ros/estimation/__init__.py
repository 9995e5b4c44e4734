"""Distance estimators: one interface (:class:`DistanceEstimator`), many backends chosen by config."""

from spatialvlm_ros.estimation.base import (
    DistanceEstimate, DistanceEstimator, DistanceKind, NoEstimateReason, Pair, build_estimator,
    register_estimator,
)

__all__ = ["DistanceEstimate", "DistanceEstimator", "DistanceKind", "NoEstimateReason", "Pair",
           "build_estimator", "register_estimator"]
