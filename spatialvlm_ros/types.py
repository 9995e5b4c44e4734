"""The value types every floor shares.

What is measured (:class:`Pair`, :class:`DistanceKind`) and what comes back (:class:`DistanceEstimate`,
:class:`NoEstimateReason`). A leaf module: it imports only :mod:`spatialvlm_ros.errors`, so the config,
the estimators, the reward and every door speak the same types without importing each other.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from spatialvlm_ros.errors import ConfigError


class DistanceKind(str, enum.Enum):
    """Which distance is measured between the two objects."""

    GAP = "gap"        # closest surface-to-surface distance (0 when touching)
    CENTRE = "centre"  # distance between object centres

    def __str__(self) -> str:
        return self.value


class NoEstimateReason(str, enum.Enum):
    """Why an estimate is invalid."""

    NOT_VISIBLE = "not_visible"        # grounding found (too few) pixels for a phrase
    NO_DEPTH = "no_depth"              # the object's pixels carry no valid depth
    NO_CAMERA_INFO = "no_camera_info"  # intrinsics unknown
    BAD_INPUT = "bad_input"            # the frame itself is unusable (encoding, size mismatch)
    UNKNOWN_PHRASE = "unknown_phrase"  # the grounder cannot parse the text prompt
    UNPARSEABLE = "unparseable"        # a VLM answered without a usable number
    TIMEOUT = "timeout"                # a remote backend did not answer in time
    BACKEND_ERROR = "backend_error"    # the backend failed in an unexpected way
    BACKEND_UNAVAILABLE = "backend_unavailable"  # the backend is not asked: circuit open, or still loading
    NO_GRIPPER_POSE = "no_gripper_pose"  # gripper.source pose, and no pose at (near) the image stamp
    INTERNAL_ERROR = "internal_error"  # an unexpected exception while processing the frame (a bug: see the log)
    ABSTAINED = "abstained"            # a VLM answered that it cannot tell ("I can't tell from this image"): no error

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Pair:
    """A (gripper, object) pair named in text, e.g. ``Pair("yellow gripper", "red can")``."""

    gripper: str
    target: str

    @classmethod
    def parse(cls, text: str) -> "Pair":
        """Parse ``"yellow gripper -> red can"``.

        Example:
            >>> Pair.parse("yellow gripper -> red can")
            Pair(gripper='yellow gripper', target='red can')
            >>> Pair.parse("red can")
            Traceback (most recent call last):
            ...
            spatialvlm_ros.errors.ConfigError: pair 'red can' must read 'GRIPPER -> OBJECT', e.g. ...
        """
        parts = [p.strip() for p in text.split("->")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"pair {text!r} must read 'GRIPPER -> OBJECT', e.g. 'yellow gripper -> red can'")
        return cls(parts[0], parts[1])

    @property
    def slug(self) -> str:
        """Topic-safe name of the target, e.g. ``red_can``."""
        return "".join(c if c.isalnum() else "_" for c in self.target.lower()).strip("_")

    def __str__(self) -> str:
        return f"{self.gripper} -> {self.target}"


Point3 = tuple[float, float, float]


@dataclass(frozen=True, kw_only=True)
class DistanceEstimate:
    """One distance estimate between a gripper and a target in one frame (keyword-only fields).

    Attributes:
        pair: what was measured.
        kind: gap or centre distance.
        distance_m: metres; NaN when ``valid`` is False.
        uncertainty_m: one standard deviation in metres; NaN when unknown or invalid.
        valid: whether ``distance_m`` can be used.
        reason: why not, when invalid.
        detail: a human-readable explanation (logged, published in diagnostics).
        latency_ms: wall time the backend spent on this estimate.
        stamp_ns: stamp of the source frame, integer nanoseconds.
        frame_id: frame of the points below (camera optical frame).
        gripper_point: gripper end of the measured segment (closest point or centre), metres.
        target_point: target end of the measured segment, metres.
        answer_text: the text a VLM answered (None for geometric backends).
        surface: what the target's end of a gap lies on: ``"visible"`` (the surface the camera sees) or
            the primitive the target was completed with (``"cylinder"``, ``"box"``, ``"sphere"``).

    Example:
        >>> e = DistanceEstimate(pair=Pair.parse("yellow gripper -> red can"), kind=DistanceKind.GAP,
        ...                      distance_m=0.2, uncertainty_m=0.01, valid=True)
        >>> e.distance_m, e.reason
        (0.2, None)
    """

    pair: Pair
    kind: DistanceKind
    distance_m: float
    uncertainty_m: float
    valid: bool
    reason: NoEstimateReason | None = None
    detail: str = ""
    latency_ms: float = 0.0
    stamp_ns: int = 0
    frame_id: str = ""
    gripper_point: Point3 | None = None
    target_point: Point3 | None = None
    answer_text: str | None = None
    surface: str = "visible"

    @classmethod
    def invalid(cls, pair: Pair, kind: DistanceKind, reason: NoEstimateReason, detail: str, *,
                stamp_ns: int = 0, frame_id: str = "", latency_ms: float = 0.0) -> "DistanceEstimate":
        """An estimate flagged as "no estimate", with the reason."""
        return cls(pair=pair, kind=kind, distance_m=math.nan, uncertainty_m=math.nan, valid=False,
                   reason=reason, detail=detail, latency_ms=latency_ms, stamp_ns=stamp_ns, frame_id=frame_id)
