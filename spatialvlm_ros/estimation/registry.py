"""The estimator backends by name (``estimator.backend``): the one place they are registered.

A plug-in backend registers with ``@ESTIMATORS.register("name")`` on a factory taking the
:class:`~spatialvlm_ros.config.EstimatorConfig`.
"""

from __future__ import annotations

from spatialvlm_ros.config import EstimatorConfig
from spatialvlm_ros.estimation.base import DistanceEstimator, EstimatorFactory
from spatialvlm_ros.estimation.geometric import GeometricEstimator
from spatialvlm_ros.estimation.vlm import VLMDistanceEstimator
from spatialvlm_ros.registry import Registry

ESTIMATORS: Registry[EstimatorFactory] = Registry("estimator.backend")
ESTIMATORS.register("geometric")(GeometricEstimator)
ESTIMATORS.register("vlm")(VLMDistanceEstimator.from_estimator_config)


def build_estimator(config: EstimatorConfig) -> DistanceEstimator:
    """Build the backend ``config.backend`` names.

    Example:
        >>> build_estimator(EstimatorConfig()).name
        'geometric'
        >>> build_estimator(EstimatorConfig(backend="magic"))
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: estimator.backend: unknown 'magic'; registered: geometric, vlm
    """
    return ESTIMATORS.create(config.backend, config)
