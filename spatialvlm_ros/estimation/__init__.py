"""Distance estimators: one interface (:class:`DistanceEstimator`), backends chosen by ``estimator.backend``.

* :mod:`~spatialvlm_ros.estimation.geometric`: ground each phrase, lift its depth, measure between clouds;
* :mod:`~spatialvlm_ros.estimation.vlm`: ask any spatial VLM and parse the metres from its answer;
* :mod:`~spatialvlm_ros.estimation.registry`: the backends by name and :func:`build_estimator`.
"""

from spatialvlm_ros.estimation.base import DistanceEstimator
from spatialvlm_ros.estimation.registry import (ESTIMATORS, build_error, build_estimator, loads_models,
                                                preflight_estimator)

__all__ = ["ESTIMATORS", "DistanceEstimator", "build_error", "build_estimator", "loads_models", "preflight_estimator"]
