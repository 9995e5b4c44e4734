"""Errors of the bag evaluator."""

from spatialvlm_ros.errors import SpatialVLMError


class BagError(SpatialVLMError):
    """A bag cannot be evaluated: missing, truncated or corrupt, or without the topics asked for."""
