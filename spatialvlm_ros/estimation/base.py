"""The estimator interface shared by every backend (geometric now; VLMs later).

Every backend returns the same :class:`DistanceEstimate`; "no answer" is an invalid estimate with
a :class:`NoEstimateReason`, never an exception and never a silent zero.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.registry import Registry

if TYPE_CHECKING:
    from spatialvlm_ros.config import EstimatorConfig
    from spatialvlm_ros.frame import Frame


class DistanceKind(str, enum.Enum):
    """Which distance is measured between the two objects."""

    GAP = "gap"        # closest surface-to-surface distance (0 when touching)
    CENTRE = "centre"  # distance between object centres


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


@dataclass(frozen=True)
class DistanceEstimate:
    """One distance estimate between a gripper and a target in one frame.

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

    @classmethod
    def invalid(cls, pair: Pair, kind: DistanceKind, reason: NoEstimateReason, detail: str, *,
                stamp_ns: int = 0, frame_id: str = "", latency_ms: float = 0.0) -> "DistanceEstimate":
        """An estimate flagged as "no estimate", with the reason."""
        return cls(pair=pair, kind=kind, distance_m=math.nan, uncertainty_m=math.nan, valid=False,
                   reason=reason, detail=detail, latency_ms=latency_ms, stamp_ns=stamp_ns, frame_id=frame_id)


class DistanceEstimator(Protocol):
    """What every backend implements."""

    name: str

    def estimate(self, frame: "Frame", pairs: Sequence[Pair], kind: DistanceKind) -> list[DistanceEstimate]:
        """Estimate one distance per pair in ``frame``. Never raises for per-frame problems."""
        ...


EstimatorFactory = Callable[["EstimatorConfig"], DistanceEstimator]
ESTIMATORS: Registry[EstimatorFactory] = Registry("estimator.backend")
register_estimator = ESTIMATORS.register


def build_estimator(config: "EstimatorConfig") -> DistanceEstimator:
    """Build the backend named by ``config.backend``."""
    # Importing the backends registers them; kept here so a plain import of base stays light.
    from spatialvlm_ros.estimation import geometric  # noqa: F401
    from spatialvlm_ros.vlm import base as vlm  # noqa: F401
    return ESTIMATORS.create(config.backend, config)
