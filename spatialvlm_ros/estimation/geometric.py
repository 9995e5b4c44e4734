"""The geometric backend: ground each phrase, lift its masked depth to 3D, measure between clouds.

Needs depth registered to the colour image. Points and results are in the camera optical frame
(x right, y down, z forward), metres.

For a gap, the target's hidden side is restored first (``estimator.completion``): a cylinder, box or
sphere standing on the table plane is fitted to its visible points (:mod:`~spatialvlm_ros.geometry.primitives`)
and, when it explains them, the gap is measured from the gripper's points to that solid. The estimate's
``surface`` says which. Its uncertainty (1 sigma) combines, in quadrature:

* depth noise at the measured range (``estimator.sensor.depth_sigma_at_1m_m``, growing with range^2),
  along the gap;
* mask-edge uncertainty (``estimator.sensor.edge_px`` at the range), across the line of sight;
* occlusion: the share of the gripper's outline that borders a nearer surface, times the gap's
  sensitivity to what is hidden there;
* completion: the fit's residual and parameter uncertainty where the gap ends on a hidden part;
* sampling: the spread of the closest point pairs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np
from scipy.spatial import cKDTree

from spatialvlm_ros.config import EstimatorConfig
from spatialvlm_ros.errors import GroundingError, InputError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.pointcloud import (
    ObjectCloud, Separation, backproject, centre_distance, object_cloud, surface_gap,
)
from spatialvlm_ros.geometry.gripper import PosedGripper, model_from_config
from spatialvlm_ros.geometry.primitives import Primitive, complete, shapes_for
from spatialvlm_ros.geometry.support import SupportSurface, support_of
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
        self.gripper_model = model_from_config(config.gripper) if config.gripper.source == "pose" else None

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
        if self.gripper_model is not None:
            return self._estimate_posed(frame, pairs, kind, rng, start)
        masks = self._ground(frame, [p for pair in pairs for p in (pair.gripper, pair.target)])
        if frame.depth_m is not None:
            masks = _resolve_contested(masks, frame.depth_m)
        clouds: dict[str, _Object | _Unusable] = {}
        results = []
        for pair in pairs:
            for phrase in (pair.gripper, pair.target):
                if phrase not in clouds:
                    clouds[phrase] = self._cloud(frame, phrase, masks[phrase], rng)
            results.append(self._measure(frame, pair, kind, clouds[pair.gripper], clouds[pair.target], start))
        return results

    def _estimate_posed(self, frame: Frame, pairs: Sequence[Pair], kind: DistanceKind, rng: np.random.Generator,
                        start: float) -> list[DistanceEstimate]:
        """``estimator.gripper.source: pose``: the gripper is its model at the frame's pose; only targets grounded."""
        assert self.gripper_model is not None
        if frame.gripper_pose is None:
            return [DistanceEstimate.invalid(
                pair, kind, NoEstimateReason.NO_GRIPPER_POSE,
                "estimator.gripper.source is pose but the frame has no gripper pose at its stamp (none received, "
                f"or none within estimator.gripper.pose_tolerance_s {self.config.gripper.pose_tolerance_s} s)",
                stamp_ns=frame.stamp_ns, frame_id=frame.frame_id, latency_ms=(time.perf_counter() - start) * 1e3)
                for pair in pairs]
        opening = self.config.gripper.opening_m
        if opening < 0 and frame.gripper_opening_m is not None:
            opening = frame.gripper_opening_m
        gripper = PosedGripper(self.gripper_model, frame.gripper_pose, opening if opening >= 0 else None)
        masks = self._ground(frame, [pair.target for pair in pairs])
        if frame.depth_m is not None:
            masks = _resolve_contested(masks, frame.depth_m)
        clouds: dict[str, _Object | _Unusable] = {}
        results = []
        for pair in pairs:
            if pair.target not in clouds:
                clouds[pair.target] = self._cloud(frame, pair.target, masks[pair.target], rng)
            results.append(self._measure_posed(frame, pair, kind, gripper, clouds[pair.target], start))
        return results

    def _measure_posed(self, frame: Frame, pair: Pair, kind: DistanceKind, gripper: PosedGripper,
                       target: _Object | _Unusable, start: float) -> DistanceEstimate:
        """Gap from the posed gripper model to the target's (completed) surface, or grasp point to its centre."""
        if isinstance(target, _Unusable):
            return DistanceEstimate.invalid(pair, kind, target.reason, target.detail, stamp_ns=frame.stamp_ns,
                                            frame_id=frame.frame_id, latency_ms=(time.perf_counter() - start) * 1e3)
        points = target.cloud.points
        signed, on_gripper = gripper.distance(points)
        inside = signed < -_POSE_INSIDE_M            # the gripper's own pixels grounded as the target
        if np.count_nonzero(~inside) >= self.config.min_pixels:
            points, signed, on_gripper = points[~inside], signed[~inside], on_gripper[~inside]
            target = _Object(cloud=replace(target.cloud, points=points, centroid=points.mean(axis=0)),
                             edges=target.edges)
        prim = self._complete(frame, pair.target, target)
        sensor, pose_sigma = self.config.sensor, self.config.gripper.pose_sigma_m
        if kind is not DistanceKind.GAP:
            centre = prim.centre_camera if prim is not None else target.cloud.centroid
            grasp = gripper.grasp_point
            spread = float(np.std(points, axis=0).max()) / np.sqrt(len(points)) if prim is None else prim.sigma_m
            sigma = float(np.hypot(spread, pose_sigma))
            return self._estimate(frame, pair, kind, float(np.linalg.norm(centre - grasp)), sigma, grasp, centre,
                                  "visible" if prim is None else prim.shape, f"sigma {sigma * 1e3:.1f} mm", start)
        best = int(np.argmin(signed))
        gap, point_a, point_b, surface, hidden = float(signed[best]), on_gripper[best], points[best], "visible", 0.0
        if prim is not None:
            samples = gripper.surface_points()
            distance, nearest = prim.closest(samples)
            k = int(np.argmin(distance))
            if distance[k] < gap:
                gap, point_a, point_b, surface = float(distance[k]), samples[k], nearest[k], prim.shape
                hidden = float(np.min(np.linalg.norm(points - point_b, axis=1)))
        terms = _posed_terms(frame, point_a, point_b, target, prim, hidden, sensor.depth_sigma_at_1m_m,
                             sensor.edge_px, pose_sigma)
        sigma = float(np.sqrt(sum(v * v for v in terms.values())))
        detail = "gripper from pose; sigma " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in terms.items()) + " mm"
        return self._estimate(frame, pair, kind, gap, sigma, point_a, point_b, surface, detail, start)

    def _ground(self, frame: Frame, phrases: Sequence[str]) -> dict[str, np.ndarray | GroundingError]:
        """Each distinct phrase's mask (or why it has none), all phrases together when the grounder can."""
        phrases = list(dict.fromkeys(phrases))
        ground_all = getattr(self.grounder, "ground_all", None)
        if ground_all is not None:
            return ground_all(frame, phrases)
        masks: dict[str, np.ndarray | GroundingError] = {}
        for phrase in phrases:
            try:
                masks[phrase] = self.grounder.ground(frame, phrase)
            except GroundingError as err:
                masks[phrase] = err
        return masks

    def _cloud(self, frame: Frame, phrase: str, mask: np.ndarray | GroundingError,
               rng: np.random.Generator) -> _Object | _Unusable:
        cfg = self.config
        if isinstance(mask, GroundingError):
            return _Unusable(NoEstimateReason.UNKNOWN_PHRASE, str(mask))
        n_px = int(np.count_nonzero(mask))
        if n_px < cfg.min_pixels:
            return _Unusable(NoEstimateReason.NOT_VISIBLE,
                             f"{phrase!r} not visible: {n_px} px < min_pixels {cfg.min_pixels}")
        if frame.depth_m is None:
            return _Unusable(NoEstimateReason.NO_DEPTH, "no depth image: the geometric backend needs depth "
                             "registered to the colour image")
        try:
            if mask.shape == frame.depth_m.shape:
                mask = _consistent_depth(mask, frame.depth_m, cfg.sensor.depth_sigma_at_1m_m)
            points = backproject(frame.depth_m, mask, frame.intrinsics, cfg.depth_min_m, cfg.depth_max_m)
            if len(points) < cfg.min_pixels:
                return _Unusable(NoEstimateReason.NO_DEPTH,
                                 f"{phrase!r}: only {len(points)} of {n_px} px have depth in "
                                 f"[{cfg.depth_min_m}, {cfg.depth_max_m}] m (< min_pixels {cfg.min_pixels})")
            cloud = object_cloud(points, cfg.outlier_k, cfg.max_points, rng)
        except InputError as err:
            return _Unusable(NoEstimateReason.BAD_INPUT, f"{phrase!r}: {err}")
        support = support_of(frame.depth_m, frame.intrinsics) if cfg.completion.enabled else None
        return _Object(cloud=cloud, edges=_occlusion_edges(mask, frame, support))

    def _complete(self, frame: Frame, phrase: str, target: _Object) -> Primitive | None:
        """The target's completed shape, or None (completion off, no table, no good fit)."""
        cfg = self.config
        shapes = shapes_for(phrase)
        if not cfg.completion.enabled or frame.depth_m is None or not shapes:
            return None
        surface = support_of(frame.depth_m, frame.intrinsics)
        if surface is None:
            return None
        points = target.cloud.points
        height = surface.height(points)
        if np.percentile(height, 5) < -0.01:              # not above this plane: it is not the table
            return None
        noise = cfg.sensor.depth_sigma_at_1m_m * float(np.median(points[:, 2])) ** 2
        result = complete(points, surface.canonical, noise, shapes, max_rms_sigmas=cfg.completion.max_rms_sigmas)
        return result.primitive

    def _measure(self, frame: Frame, pair: Pair, kind: DistanceKind, gripper: _Object | _Unusable,
                 target: _Object | _Unusable, start: float) -> DistanceEstimate:
        for side in (gripper, target):
            if isinstance(side, _Unusable):
                return DistanceEstimate.invalid(pair, kind, side.reason, side.detail, stamp_ns=frame.stamp_ns,
                                                frame_id=frame.frame_id,
                                                latency_ms=(time.perf_counter() - start) * 1e3)
        assert isinstance(gripper, _Object) and isinstance(target, _Object)
        if kind is not DistanceKind.GAP:
            sep = centre_distance(gripper.cloud, target.cloud)
            return self._estimate(frame, pair, kind, sep.distance_m, sep.uncertainty_m, sep.point_a, sep.point_b,
                                  "visible", "", start)
        sensor = self.config.sensor
        visible = surface_gap(gripper.cloud, target.cloud, sensor.depth_sigma_at_1m_m)
        prim = self._complete(frame, pair.target, target)
        if prim is None:
            sep, surface, hidden = visible, "visible", 0.0
        else:
            sep, hidden = _gap_to_solid(gripper.cloud, target.cloud, prim, visible)
            surface = prim.shape
        thickness = _thickness_sensitivity(gripper.cloud.points, target.cloud.points, prim, sep.distance_m)
        terms = _uncertainty_terms(frame, sep, gripper, target, prim, hidden, thickness, sensor.depth_sigma_at_1m_m,
                                   sensor.edge_px, spread=visible.uncertainty_m)
        sigma = float(np.sqrt(sum(v * v for v in terms.values())))
        detail = "sigma " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in terms.items()) + " mm"
        return self._estimate(frame, pair, kind, sep.distance_m, sigma, sep.point_a, sep.point_b, surface, detail,
                              start)

    @staticmethod
    def _estimate(frame: Frame, pair: Pair, kind: DistanceKind, distance: float, sigma: float, point_a: np.ndarray,
                  point_b: np.ndarray, surface: str, detail: str, start: float) -> DistanceEstimate:
        return DistanceEstimate(pair=pair, kind=kind, distance_m=float(distance), uncertainty_m=float(sigma),
                                valid=True, detail=detail, latency_ms=(time.perf_counter() - start) * 1e3,
                                stamp_ns=frame.stamp_ns, frame_id=frame.frame_id, gripper_point=_point3(point_a),
                                target_point=_point3(point_b), surface=surface)


@dataclass(frozen=True, eq=False)
class _Object:
    """A phrase's robust cloud and its occlusion edges (see :func:`_occlusion_edges`)."""

    cloud: ObjectCloud
    edges: tuple[np.ndarray, np.ndarray]

    def occluded_near(self, point: np.ndarray, frame: Frame, radius_m: float) -> float:
        """Share of the object's edges within ``radius_m`` of ``point`` (projected) that lie behind something."""
        uv, behind = self.edges
        if len(uv) == 0 or point[2] <= 0:
            return 0.0
        centre = frame.intrinsics.project(point[None])[0]
        radius_px = radius_m * frame.intrinsics.fx / point[2]
        near = np.einsum("ij,ij->i", uv - centre, uv - centre) <= radius_px * radius_px
        return float(np.mean(behind[near])) if near.any() else 0.0


# A mask pixel on the object's rim is kept when its depth lies within the depth range of the object's
# interior nearby (this window, pixels) give or take this much (plus 3 noise sigmas): JPEG bleeds a
# little colour across silhouettes, onto whatever lies behind or in front.
_RIM_WINDOW_PX = 5
_RIM_TOLERANCE_M = 0.01
# Mask pixels this close to another mask are contested; their depth is compared with each mask's core
# within this window (pixels, half width).
_CONTEST_PX = 2
_CONTEST_WINDOW_PX = 4
# A pixel lies behind its neighbour when their inverse depths differ by this (1/m) more than the surface's
# slope: a step of 8 mm at 0.8 m, 12 mm at 1 m (the noise of a difference is ~0.003 /m).
_OCCLUSION_STEP_INV_M = 0.012
# Pixels this close to the table plane are the table.
_TABLE_HEIGHT_M = 0.008
# Occlusion is looked for within this of the gap's ends, and what it hides may reach this much closer
# (at most the gap itself).
OCCLUSION_RADIUS_M = 0.03
OCCLUSION_REACH_M = 0.05
# How far the gripper may go on behind its visible side (a finger's thickness, a finger behind the other).
HIDDEN_DEPTH_M = 0.02
# With the gripper from its pose, target points this deep inside the gripper model are its own pixels.
_POSE_INSIDE_M = 0.002
#: Weights of the uncertainty terms, fitted so that 68% / 95% of the errors fall within 1 / 2 sigma on
#: 60 training approaches in the simulator (seeds 0-59, random viewpoints, JPEG, noisy depth; the held-out
#: figures of benchmarks/estimator_accuracy.py use seeds from 2,000,000): depth noise along the gap;
#: mask-edge blur across it; the spread of the closest pairs; the share of the gripper's (or an
#: uncompleted target's) edges near the gap that lie behind something, times the gap up to
#: OCCLUSION_REACH_M (what is hidden may be closer); the completion's fit residual and parameter
#: uncertainty; how far the completed surface's end lies from anything seen; how much shorter the gap
#: gets if the gripper goes on HIDDEN_DEPTH_M behind its visible side.
SIGMA_WEIGHTS = {"depth": 1.0, "edge": 0.1, "sampling": 0.75, "gripper_occluded": 0.3, "target_occluded": 1.0,
                 "completion": 0.5, "hidden": 0.02, "gripper_thickness": 0.2}
_KERNEL3 = np.ones((3, 3), np.uint8)
_KERNEL_RIM = np.ones((_RIM_WINDOW_PX, _RIM_WINDOW_PX), np.uint8)


def _crop(mask: np.ndarray, depth: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """The mask (uint8) and depth (float32, no reading = 0) around the mask's bounding box, padded."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    window = (slice(max(y - pad, 0), min(y + h + pad, mask.shape[0])),
              slice(max(x - pad, 0), min(x + w + pad, mask.shape[1])))
    z = depth[window].astype(np.float32)
    z[~np.isfinite(z)] = 0.0
    return mask[window].view(np.uint8), z, window


def _resolve_contested(masks: dict[str, np.ndarray | GroundingError],
                       depth: np.ndarray) -> dict[str, np.ndarray | GroundingError]:
    """Give the pixels where two objects' masks meet to the object whose depth they share.

    Where two objects touch in the image, JPEG blurs their colours into each other, and a rim pixel of
    one can read as the other's colour: a fleck of the gripper on the target's edge puts a gripper
    point on the target, and the gap goes to zero. Each mask pixel within ``_CONTEST_PX`` of another
    mask is kept only if its depth is nearer the local mean depth of its own mask's core than of the
    other mask's core.
    """
    shaped = {p: m for p, m in masks.items() if isinstance(m, np.ndarray) and m.shape == depth.shape and m.any()}
    if len(shaped) < 2:
        return masks
    out = dict(masks)
    kernel = np.ones((2 * _CONTEST_PX + 1, 2 * _CONTEST_PX + 1), np.uint8)
    window = (2 * _CONTEST_WINDOW_PX + 1, 2 * _CONTEST_WINDOW_PX + 1)
    for phrase, mask in shaped.items():
        others = np.zeros(depth.shape, bool)
        for other, m in shaped.items():
            if other != phrase:
                others |= m
        band = mask & cv2.dilate(others.view(np.uint8), kernel).view(bool)
        if not band.any():
            continue
        x, y, w, h = cv2.boundingRect(band.view(np.uint8))
        pad = _CONTEST_WINDOW_PX + _CONTEST_PX
        rows = slice(max(y - pad, 0), min(y + h + pad, depth.shape[0]))
        cols = slice(max(x - pad, 0), min(x + w + pad, depth.shape[1]))
        z = np.nan_to_num(depth[rows, cols].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        near_other = cv2.dilate(others[rows, cols].view(np.uint8), kernel).view(bool)
        near_self = cv2.dilate(mask[rows, cols].view(np.uint8), kernel).view(bool)
        own = (mask[rows, cols] & ~near_other & (z > 0)).astype(np.float32)
        theirs = (others[rows, cols] & ~near_self & (z > 0)).astype(np.float32)
        own_n, their_n = cv2.blur(own, window), cv2.blur(theirs, window)
        own_z = cv2.blur(own * z, window) / np.maximum(own_n, 1e-6)
        their_z = cv2.blur(theirs * z, window) / np.maximum(their_n, 1e-6)
        b = band[rows, cols] & (z > 0) & (own_n > 0) & (their_n > 0)
        lost = b & (np.abs(z - their_z) < np.abs(z - own_z))
        if lost.any():
            kept = mask.copy()
            kept[rows, cols] &= ~lost
            out[phrase] = kept
    return out


def _consistent_depth(mask: np.ndarray, depth: np.ndarray, sigma_at_1m: float) -> np.ndarray:
    """``mask`` without the rim pixels whose depth disagrees with the object's interior next to them."""
    m, z, window = _crop(mask, depth, _RIM_WINDOW_PX)
    inner = cv2.erode(m, _KERNEL3).view(bool) & (z > 0)
    if not inner.any():
        return mask
    near = cv2.erode(np.where(inner, z, np.float32(1e6)), _KERNEL_RIM)
    far = cv2.dilate(np.where(inner, z, np.float32(0.0)), _KERNEL_RIM)
    tolerance = _RIM_TOLERANCE_M + 3.0 * sigma_at_1m * z * z
    # A rim pixel with no interior near it (a part only a pixel or two thin) has nothing to disagree with.
    keep = inner | (far <= 0) | ((z >= near - tolerance) & (z <= far + tolerance))
    out = mask.copy()
    out[window] &= keep
    return out


def _occlusion_edges(mask: np.ndarray, frame: Frame, support: SupportSurface | None) -> tuple[np.ndarray, np.ndarray]:
    """Where an object may go on out of sight: its edge pixels, and which of them lie behind something.

    The edges are the mask's outline and its inner depth steps. An edge pixel lies behind something when
    its neighbour is nearer by a jump that stands out from the surface's slope on both sides (in inverse
    depth, which is affine in the pixel coordinates on a plane, so a surface seen at a grazing angle is
    no step): another object in front (the target before the gripper's fingertips) or the object's own
    nearer part (one finger before the other). The table (``support``) in front of an object's base
    hides nothing.

    Returns:
        (M, 2) float pixel coordinates (u, v) of the edge pixels and (M,) bool "behind something".
    """
    m, z, window = _crop(mask, frame.depth_m, 3)
    h, w = z.shape
    inside = m.view(bool) & (z > 0)
    valid = z > 0
    occluders = valid
    if support is not None:
        cam, (nx, ny, nz) = frame.intrinsics, support.plane.normal
        across = nx * (np.arange(window[1].start, window[1].stop) - cam.cx) / cam.fx
        down = ny * (np.arange(window[0].start, window[0].stop) - cam.cy) / cam.fy
        height = (across[None, :] + down[:, None] + nz) * z + support.plane.offset
        occluders = valid & (height > _TABLE_HEIGHT_M)
    inverse = np.full((h + 4, w + 4), np.nan, np.float32)            # padded: neighbours off the crop are unknown
    inverse[2:-2, 2:-2] = np.where(valid, 1.0 / np.where(valid, z, 1.0), np.nan)
    blockers = np.zeros((h + 4, w + 4), bool)
    blockers[2:-2, 2:-2] = occluders

    def shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
        return a[2 + dy:2 + dy + h, 2 + dx:2 + dx + w]

    here = shifted(inverse, 0, 0)
    behind = np.zeros(z.shape, bool)
    with np.errstate(invalid="ignore"):
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):           # the occluder's side
            near1, near2, far1 = shifted(inverse, dy, dx), shifted(inverse, 2 * dy, 2 * dx), shifted(inverse, -dy, -dx)
            slope = np.fmax(np.abs(near2 - near1), np.abs(here - far1))
            behind |= (near1 - here > _OCCLUSION_STEP_INV_M + slope) & shifted(blockers, dy, dx)
    behind &= inside
    edges = (inside & ~cv2.erode(m, _KERNEL3).view(bool)) | behind
    v, u = np.nonzero(edges)
    uv = np.column_stack([u + window[1].start, v + window[0].start]).astype(np.float64)
    return uv, behind[v, u]


def _gap_to_solid(gripper: ObjectCloud, target: ObjectCloud, prim: Primitive,
                  visible: Separation) -> tuple[Separation, float]:
    """The gap from the gripper's points to the completed solid.

    Also returns how far its target end lies from the nearest visible target point (0 when the gap
    ends on the seen surface).
    """
    distance, nearest = prim.closest(gripper.points)
    best = int(np.argmin(distance))
    point_b = nearest[best]
    gap = float(distance[best])
    if gap > visible.distance_m:                        # the solid hugs the visible side a little inside
        return visible, 0.0
    hidden = float(np.min(np.linalg.norm(target.points - point_b, axis=1)))
    return Separation(distance_m=gap, uncertainty_m=visible.uncertainty_m, point_a=gripper.points[best],
                      point_b=point_b), hidden


def _thickness_sensitivity(gripper: np.ndarray, target: np.ndarray, prim: Primitive | None, gap: float) -> float:
    """How much shorter the gap would be if the gripper went on ``HIDDEN_DEPTH_M`` behind what the camera sees.

    The camera sees the gripper's near side; its far side (the back of a finger, the finger behind the
    other) may be the part closest to the target, when the target lies beyond the gripper along the
    line of sight. Each gripper point is pushed that far along its ray and the gap measured again.
    """
    lower, upper = target.min(axis=0), target.max(axis=0)
    reach = gap + HIDDEN_DEPTH_M
    outside = np.maximum(np.maximum(lower - gripper, gripper - upper), 0.0)
    near = gripper[np.einsum("ij,ij->i", outside, outside) <= reach * reach]
    if len(near) == 0:
        return 0.0
    pushed = near + HIDDEN_DEPTH_M * near / np.linalg.norm(near, axis=1, keepdims=True)
    if prim is not None:
        shorter = float(prim.closest(pushed)[0].min())
    else:
        shorter = float(cKDTree(target).query(pushed, distance_upper_bound=reach)[0].min())
    return max(gap - shorter, 0.0) if np.isfinite(shorter) else 0.0


def _uncertainty_terms(frame: Frame, sep: Separation, gripper: _Object, target: _Object, prim: Primitive | None,
                       hidden: float, thickness: float, sigma_at_1m: float, edge_px: float,
                       spread: float) -> dict[str, float]:
    """The one-sigma terms of a gap, metres, weighted by :data:`SIGMA_WEIGHTS` (combined in quadrature)."""
    a, b = sep.point_a, sep.point_b
    delta = b - a
    gap = float(np.linalg.norm(delta))
    along_z = abs(float(delta[2])) / gap if gap > 0 else 1.0
    across = np.sqrt(max(1.0 - along_z * along_z, 0.0))
    za, zb = float(a[2]), float(b[2])
    raw = {
        "depth": sigma_at_1m * float(np.hypot(za * za, zb * zb)) * along_z,
        "edge": edge_px / frame.intrinsics.fx * float(np.hypot(za, zb)) * across,
        "sampling": spread,
        "gripper_occluded": gripper.occluded_near(a, frame, OCCLUSION_RADIUS_M) * min(gap, OCCLUSION_REACH_M),
        "target_occluded": 0.0 if prim is not None else
        target.occluded_near(b, frame, OCCLUSION_RADIUS_M) * min(gap, OCCLUSION_REACH_M),
        "completion": 0.0 if prim is None else float(np.hypot(prim.rms_m, prim.sigma_m if hidden > 0.003 else 0.0)),
        "hidden": hidden,
        "gripper_thickness": thickness,
    }
    return {name: SIGMA_WEIGHTS[name] * value for name, value in raw.items()}


def _posed_terms(frame: Frame, a: np.ndarray, b: np.ndarray, target: _Object, prim: Primitive | None, hidden: float,
                 sigma_at_1m: float, edge_px: float, pose_sigma: float) -> dict[str, float]:
    """The one-sigma terms of a gap from a posed gripper: the target's side only, plus the pose's calibration."""
    delta = b - a
    gap = float(np.linalg.norm(delta))
    along_z = abs(float(delta[2])) / gap if gap > 1e-9 else 1.0
    across = np.sqrt(max(1.0 - along_z * along_z, 0.0))
    zb = float(b[2])
    raw = {
        "depth": sigma_at_1m * zb * zb * along_z,
        "edge": edge_px / frame.intrinsics.fx * zb * across,
        "target_occluded": 0.0 if prim is not None else
        target.occluded_near(b, frame, OCCLUSION_RADIUS_M) * min(gap, OCCLUSION_REACH_M),
        "completion": 0.0 if prim is None else float(np.hypot(prim.rms_m, prim.sigma_m if hidden > 0.003 else 0.0)),
        "hidden": hidden,
    }
    weighted = {name: SIGMA_WEIGHTS[name] * value for name, value in raw.items()}
    weighted["pose"] = pose_sigma
    return weighted


def _point3(p: np.ndarray) -> tuple[float, float, float]:
    return (float(p[0]), float(p[1]), float(p[2]))
