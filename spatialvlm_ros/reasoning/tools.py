"""The atomic spatial queries a reasoning planner may make, answered by whichever estimator is configured.

:class:`SpatialTools` is the interface; two implementations answer it on one frame:

* :class:`EstimatorTools`: any :class:`~spatialvlm_ros.estimation.base.DistanceEstimator` for distances
  (the geometric one on RGB-D, or a VLM through :class:`~spatialvlm_ros.estimation.vlm.VLMDistanceEstimator`);
  relations from the measured points and the table plane, sizes from the grounded clouds when the
  estimator is geometric.
* :class:`VLMTools`: a spatial VLM asked each query in words, on RGB alone (distances, relations, sizes).

Every answer is a :class:`Measurement`; one that could not be made says why in ``note`` and has value None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from spatialvlm_ros.estimation.base import DistanceEstimator
from spatialvlm_ros.estimation.geometric import GeometricEstimator
from spatialvlm_ros.estimation.vlm import abstains
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.plane import fit_plane
from spatialvlm_ros.geometry.pointcloud import backproject
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, Pair
from spatialvlm_ros.vlm.base import SpatialVLM, VLMAnswer, VLMError
from spatialvlm_ros.vlm.labels import hedges, yes_no
from spatialvlm_ros.vlm.prompts import reference
from spatialvlm_ros.vlm.templates import QUANTITY_QUESTIONS, RELATION_WORDS

#: Relations :meth:`SpatialTools.relation` answers (the data engine's position relations).
RELATIONS = ("left", "right", "above", "below", "front", "behind")
#: Sizes :meth:`SpatialTools.size` answers.
DIMENSIONS = ("height", "width")


@dataclass(frozen=True)
class Measurement:
    """The answer to one atomic query.

    Attributes:
        query: what was asked, e.g. ``distance(red can, blue box)``.
        value: metres (distances, sizes), True/False (relations), or None when nothing usable came back.
        sigma_m: one standard deviation of a metric value (NaN when unknown or not metric).
        note: how it was answered, or why there is no value.
    """

    query: str
    value: float | bool | None
    sigma_m: float = math.nan
    note: str = ""

    @property
    def ok(self) -> bool:
        """Whether the query has a usable value."""
        return self.value is not None


class SpatialTools(Protocol):
    """The atomic spatial queries on one frame. Never raises for a query that cannot be answered."""

    def objects(self) -> list[str]:
        """The object phrases this frame is known to hold (empty when the tools cannot list them)."""
        ...

    def distance(self, a: str, b: str) -> Measurement:
        """Centre-to-centre distance between ``a`` and ``b``, metres."""
        ...

    def gap(self, a: str, b: str) -> Measurement:
        """Surface-to-surface gap between ``a`` and ``b``, metres (0 when touching)."""
        ...

    def relation(self, a: str, relation: str, b: str) -> Measurement:
        """Whether ``a`` is ``relation`` (:data:`RELATIONS`) ``b``, from the camera's point of view."""
        ...

    def size(self, a: str, dimension: str) -> Measurement:
        """The ``dimension`` (:data:`DIMENSIONS`) of ``a``, metres."""
        ...


def _check_choice(value: str, choices: Sequence[str], what: str) -> str | None:
    return None if value in choices else f"unknown {what} {value!r}; one of {list(choices)}"


class EstimatorTools:
    """Queries answered by a distance estimator on one frame; every estimate is made once and cached.

    Relations compare the centre estimates' end points in the camera optical frame (x right, y down,
    z forward): left/right along x, front/behind along z, above/below along the table's normal when a
    plane fits the depth image (else along -y).

    Args:
        estimator: any distance estimator.
        frame: the frame every query is about.
        objects: the object phrases the frame holds (default: the frame's simulator labels).
    """

    def __init__(self, estimator: DistanceEstimator, frame: Frame, objects: Sequence[str] | None = None) -> None:
        self.estimator = estimator
        self.frame = frame
        self._objects = list(frame.labels) if objects is None else list(objects)
        self._estimates: dict[tuple[str, str, DistanceKind], DistanceEstimate] = {}
        self._up: np.ndarray | None = None

    def objects(self) -> list[str]:
        """See :meth:`SpatialTools.objects`."""
        return list(self._objects)

    def _estimate(self, a: str, b: str, kind: DistanceKind) -> DistanceEstimate:
        key = (a, b, kind)
        if key not in self._estimates:
            [self._estimates[key]] = self.estimator.estimate(self.frame, [Pair(a, b)], kind)
        return self._estimates[key]

    def _metric(self, a: str, b: str, kind: DistanceKind) -> Measurement:
        e = self._estimate(a, b, kind)
        query = f"{kind.value}({a}, {b})"
        if not e.valid:
            return Measurement(query, None, note=f"{e.reason}: {e.detail}")
        return Measurement(query, e.distance_m, e.uncertainty_m, note=f"{self.estimator.name} estimate")

    def distance(self, a: str, b: str) -> Measurement:
        """See :meth:`SpatialTools.distance`."""
        return self._metric(a, b, DistanceKind.CENTRE)

    def gap(self, a: str, b: str) -> Measurement:
        """See :meth:`SpatialTools.gap`."""
        return self._metric(a, b, DistanceKind.GAP)

    def _up_axis(self) -> np.ndarray:
        if self._up is None:
            self._up = np.array([0.0, -1.0, 0.0])
            depth = self.frame.depth_m
            if depth is not None:
                points = backproject(depth, np.ones(depth.shape, bool), self.frame.intrinsics)[::7]
                plane = fit_plane(points, threshold_m=0.01, iterations=100) if len(points) >= 100 else None
                if plane is not None:
                    normal = np.asarray(plane.normal, dtype=np.float64)
                    self._up = normal if normal @ self._up > 0 else -normal
        return self._up

    def relation(self, a: str, relation: str, b: str) -> Measurement:
        """See :meth:`SpatialTools.relation`."""
        query = f"{relation}({a}, {b})"
        bad = _check_choice(relation, RELATIONS, "relation")
        if bad:
            return Measurement(query, None, note=bad)
        e = self._estimate(a, b, DistanceKind.CENTRE)
        if not e.valid or e.gripper_point is None or e.target_point is None:
            why = f"{e.reason}: {e.detail}" if not e.valid else f"{self.estimator.name} gives no 3D points"
            return Measurement(query, None, note=why)
        pa, pb = np.asarray(e.gripper_point), np.asarray(e.target_point)
        axis = {"left": np.array([-1.0, 0.0, 0.0]), "right": np.array([1.0, 0.0, 0.0]),
                "front": np.array([0.0, 0.0, -1.0]), "behind": np.array([0.0, 0.0, 1.0]),
                "above": self._up_axis(), "below": -self._up_axis()}[relation]
        offset = float((pa - pb) @ axis)
        return Measurement(query, offset > 0, note=f"offset {offset:+.3f} m along {relation}")

    def size(self, a: str, dimension: str) -> Measurement:
        """See :meth:`SpatialTools.size`: extents of the grounded cloud (geometric estimator only)."""
        query = f"{dimension}({a})"
        bad = _check_choice(dimension, DIMENSIONS, "dimension")
        if bad:
            return Measurement(query, None, note=bad)
        if not isinstance(self.estimator, GeometricEstimator) or self.frame.depth_m is None:
            return Measurement(query, None, note=f"sizes need the geometric estimator on RGB-D, "
                                                 f"not {self.estimator.name}")
        cfg = self.estimator.config
        try:
            mask = self.estimator.grounder.ground(self.frame, a)
        except ValueError as err:  # GroundingError, InputError
            return Measurement(query, None, note=str(err))
        points = backproject(self.frame.depth_m, mask, self.frame.intrinsics, cfg.depth_min_m, cfg.depth_max_m)
        if len(points) < cfg.min_pixels:
            return Measurement(query, None, note=f"{a!r}: {len(points)} points with depth")
        up = self._up_axis()
        heights = points @ up
        if dimension == "height":
            value = float(np.percentile(heights, 99) - np.percentile(heights, 1))
        else:
            flat = points - np.outer(heights, up)
            spread = flat - np.median(flat, axis=0)
            # Width: the larger horizontal extent, along the principal axis of the footprint.
            _, _, vt = np.linalg.svd(spread[:: max(1, len(spread) // 500)], full_matrices=False)
            along = spread @ vt[0]
            value = float(np.percentile(along, 99) - np.percentile(along, 1))
        return Measurement(query, value, note="extent of the visible cloud")


class VLMTools:
    """Queries asked of a spatial VLM in words about one RGB image (the data engine's phrasings).

    Args:
        vlm: the model.
        frame: the frame every query is about.
        objects: the object phrases the frame holds (default: the frame's simulator labels).
    """

    def __init__(self, vlm: SpatialVLM, frame: Frame, objects: Sequence[str] | None = None) -> None:
        self.vlm = vlm
        self.frame = frame
        self._objects = list(frame.labels) if objects is None else list(objects)

    def objects(self) -> list[str]:
        """See :meth:`SpatialTools.objects`."""
        return list(self._objects)

    def _ask(self, query: str, question: str) -> VLMAnswer | Measurement:
        """The model's answer, or the failed :class:`Measurement` when none came."""
        try:
            return self.vlm.ask(self.frame.rgb, question)
        except VLMError as err:
            return Measurement(query, None, note=f"backend_error: {err}")

    def _metric(self, query: str, question: str) -> Measurement:
        answer = self._ask(query, question)
        if isinstance(answer, Measurement):
            return answer
        parsed = answer.parsed
        if abstains(answer):
            return Measurement(query, None, note=f"abstained: {answer.text!r}")
        if not parsed.valid:
            return Measurement(query, None, note=f"unparseable: {answer.text!r}")
        sigma = parsed.spread_m if parsed.spread_m > 0 else math.nan
        return Measurement(query, parsed.value_m, sigma, note=f"asked {question!r}: {answer.text!r}")

    def distance(self, a: str, b: str) -> Measurement:
        """See :meth:`SpatialTools.distance`."""
        question = QUANTITY_QUESTIONS["distance"][0].format(A=reference(a), B=reference(b))
        return self._metric(f"centre({a}, {b})", question)

    def gap(self, a: str, b: str) -> Measurement:
        """See :meth:`SpatialTools.gap`."""
        question = QUANTITY_QUESTIONS["gap"][0].format(A=reference(a), B=reference(b))
        return self._metric(f"gap({a}, {b})", question)

    def relation(self, a: str, relation: str, b: str) -> Measurement:
        """See :meth:`SpatialTools.relation`."""
        query = f"{relation}({a}, {b})"
        bad = _check_choice(relation, RELATIONS, "relation")
        if bad:
            return Measurement(query, None, note=bad)
        question = f"Is {reference(a)} {RELATION_WORDS[relation]['rel'][0]} {reference(b)}?"
        answer = self._ask(query, question)
        if isinstance(answer, Measurement):
            return answer
        label = yes_no(answer.text, (reference(a), reference(b)))
        if label is None and hedges(answer.text):
            return Measurement(query, None, note=f"abstained: {answer.text!r}")
        if label is None:
            return Measurement(query, None, note=f"no yes/no in {answer.text!r}")
        return Measurement(query, label == "yes", note=f"asked {question!r}: {answer.text!r}")

    def size(self, a: str, dimension: str) -> Measurement:
        """See :meth:`SpatialTools.size`."""
        query = f"{dimension}({a})"
        bad = _check_choice(dimension, DIMENSIONS, "dimension")
        if bad:
            return Measurement(query, None, note=bad)
        return self._metric(query, QUANTITY_QUESTIONS[dimension][0].format(A=reference(a)))
