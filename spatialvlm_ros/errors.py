"""One error hierarchy for the whole package.

Foreign errors (OpenCV, MuJoCo, rclpy, yaml) are re-raised as one of these with ``from err`` so
callers catch one family. Per-frame problems that are expected on a robot (object out of view,
no depth) are *not* errors: they come back as an invalid :class:`DistanceEstimate` with a reason.
"""


class SpatialVLMError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(SpatialVLMError, ValueError):
    """A configuration key is unknown, missing, of the wrong type or out of range."""


class InputError(SpatialVLMError, ValueError):
    """An input frame or message cannot be used (wrong encoding, size mismatch, ...)."""


class GroundingError(SpatialVLMError, ValueError):
    """A text prompt cannot be turned into a mask (e.g. no known colour word)."""


class SimulationError(SpatialVLMError, RuntimeError):
    """The simulator could not build or render a scene."""


class BagError(SpatialVLMError):
    """A bag cannot be read or evaluated: missing, truncated or corrupt, or without the topics asked for."""
