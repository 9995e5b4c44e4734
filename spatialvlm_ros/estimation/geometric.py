"""The geometric backend: ground each phrase, lift its masked depth to 3D, measure between clouds.

Needs depth registered to the colour image. Points and results are in the camera optical frame
(x right, y down, z forward), metres.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from spatialvlm_ros.config import EstimatorConfig
from spatialvlm_ros.errors import GroundingError, InputError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.pointcloud import (
    ObjectCloud, backproject, centre_distance, object_cloud, surface_gap,
)
from spatialvlm_ros.perception.experts import DepthSource, Grounder
from spatialvlm_ros.perception.registry import DEPTH_SOURCES, GROUNDERS
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, NoEstimateReason, Pair


@dataclass(frozen=True)
class _Unusable:
    """Why a phrase has no cloud in this frame."""

    reason: NoEstimateReason
    detail: str


class GeometricEstimator:
    """Distance between grounded objects from their back-projected depth.

    Per call, each distinct phrase is grounded and lifted once, however many pairs name it. Subsampling
    draws from a generator seeded with ``config.seed`` at every call, so a frame always gives the same
    answer.

    Frames without depth get the ``monocular`` depth source's depth (and the intrinsics it belongs to)
    when ``config.monocular_depth`` is on; otherwise their estimates are NO_DEPTH.

    Args:
        config: estimator settings (grounder name, depth range, outlier k, point budget, ``models``).
        grounder: overrides the grounder ``config.grounding`` names (tests, custom experts).

    Example:
        >>> from spatialvlm_ros.geometry.camera import CameraIntrinsics
        >>> rgb = np.zeros((60, 80, 3), np.uint8)
        >>> rgb[20:40, 10:30] = (240, 220, 0); rgb[20:40, 50:70] = (220, 10, 10)  # yellow, red patches
        >>> frame = Frame(rgb=rgb, depth_m=np.ones((60, 80), np.float32),
        ...               intrinsics=CameraIntrinsics(fx=100.0, fy=100.0, cx=39.5, cy=29.5, width=80, height=60))
        >>> est = GeometricEstimator(EstimatorConfig())
        >>> [e] = est.estimate(frame, [Pair.parse("yellow gripper -> red can")], DistanceKind.GAP)
        >>> e.valid, round(e.distance_m, 3)
        (True, 0.21)
    """

    name = "geometric"

    def __init__(self, config: EstimatorConfig, grounder: Grounder | None = None) -> None:
        self.config = config
        self.grounder = GROUNDERS.create(config.grounding, config.models) if grounder is None else grounder
        self.depth_source: DepthSource | None = \
            DEPTH_SOURCES.create("monocular", config.models) if config.monocular_depth else None

    def estimate(self, frame: Frame, pairs: Sequence[Pair], kind: DistanceKind) -> list[DistanceEstimate]:
        """One estimate per pair; per-frame problems come back as invalid estimates, never raised.

        ``latency_ms`` of each estimate is the wall time from the start of this call until that
        estimate was ready (so it includes the grounding it shared with earlier pairs).
        """
        start = time.perf_counter()
        kind = DistanceKind(kind)
        if frame.depth_m is None and self.depth_source is not None:
            depth = self.depth_source.depth(frame)
            frame = replace(frame, depth_m=depth.depth_m, intrinsics=depth.intrinsics)
        rng = np.random.default_rng(self.config.seed)
        clouds: dict[str, ObjectCloud | _Unusable] = {}
        results = []
        for pair in pairs:
            for phrase in (pair.gripper, pair.target):
                if phrase not in clouds:
                    clouds[phrase] = self._cloud(frame, phrase, rng)
            results.append(self._measure(frame, pair, kind, clouds[pair.gripper], clouds[pair.target], start))
        return results

    def _cloud(self, frame: Frame, phrase: str, rng: np.random.Generator) -> ObjectCloud | _Unusable:
        cfg = self.config
        try:
            mask = self.grounder.ground(frame, phrase)
        except GroundingError as err:
            return _Unusable(NoEstimateReason.UNKNOWN_PHRASE, str(err))
        n_px = int(np.count_nonzero(mask))
        if n_px < cfg.min_pixels:
            return _Unusable(NoEstimateReason.NOT_VISIBLE,
                             f"{phrase!r} not visible: {n_px} px < min_pixels {cfg.min_pixels}")
        if frame.depth_m is None:
            return _Unusable(NoEstimateReason.NO_DEPTH, "no depth image: the geometric backend needs depth "
                             "registered to the colour image")
        try:
            points = backproject(frame.depth_m, mask, frame.intrinsics, cfg.depth_min_m, cfg.depth_max_m)
            if len(points) < cfg.min_pixels:
                return _Unusable(NoEstimateReason.NO_DEPTH,
                                 f"{phrase!r}: only {len(points)} of {n_px} px have depth in "
                                 f"[{cfg.depth_min_m}, {cfg.depth_max_m}] m (< min_pixels {cfg.min_pixels})")
            return object_cloud(points, cfg.outlier_k, cfg.max_points, rng)
        except InputError as err:
            return _Unusable(NoEstimateReason.BAD_INPUT, f"{phrase!r}: {err}")

    @staticmethod
    def _measure(frame: Frame, pair: Pair, kind: DistanceKind, gripper: ObjectCloud | _Unusable,
                 target: ObjectCloud | _Unusable, start: float) -> DistanceEstimate:
        for side in (gripper, target):
            if isinstance(side, _Unusable):
                return DistanceEstimate.invalid(pair, kind, side.reason, side.detail, stamp_ns=frame.stamp_ns,
                                                frame_id=frame.frame_id,
                                                latency_ms=(time.perf_counter() - start) * 1e3)
        sep = surface_gap(gripper, target) if kind is DistanceKind.GAP else centre_distance(gripper, target)
        return DistanceEstimate(pair=pair, kind=kind, distance_m=sep.distance_m, uncertainty_m=sep.uncertainty_m,
                                valid=True, latency_ms=(time.perf_counter() - start) * 1e3,
                                stamp_ns=frame.stamp_ns, frame_id=frame.frame_id,
                                gripper_point=_point3(sep.point_a), target_point=_point3(sep.point_b))


def _point3(p: np.ndarray) -> tuple[float, float, float]:
    return (float(p[0]), float(p[1]), float(p[2]))
