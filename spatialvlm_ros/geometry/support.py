"""The support surface of a frame: the table plane fitted to its depth, with the table's extent on it.

Grounding finds achromatic objects as what stands on the table (:mod:`~spatialvlm_ros.perception.grounding`),
and shape completion sits objects on it (:mod:`~spatialvlm_ros.geometry.primitives`); both ask for the
same frame's surface, so :func:`support_of` keeps the last one it computed.

Points are in the camera optical frame (x right, y down, z forward), metres.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import cv2
import numpy as np

from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.geometry.plane import CanonicalFrame, Plane, canonical_frame, fit_plane

#: Pixel stride of the depth samples the plane is fitted to (640x480 -> 40x30 points).
SUPPORT_STRIDE = 16
#: RANSAC hypotheses: with half the samples on the table, 64 miss it with p ~ 2e-4.
SUPPORT_ITERATIONS = 64
#: RANSAC inlier distance: the sensor noise at 1.5 m (2 mm at 1 m, growing with z^2) and then some.
SUPPORT_THRESHOLD_M = 0.012
#: How far past the visible table an object may stand, or the gripper hover, and still count as over it.
FOOTPRINT_MARGIN_M = 0.25
# |cos| between a plane's normal and the optical axis above which it faces the camera (a wall ahead).
_MAX_FACING = 0.97
# A second plane parallel to the first (|cos| above this), this much nearer the camera and with at least
# this share of the first one's samples is a table standing on the first (the floor).
_PARALLEL = 0.97
_MIN_TABLE_HEIGHT_M = 0.1
_MIN_TABLE_SHARE = 0.3
#: Fewest table samples (of the strided grid) for a support surface.
MIN_SUPPORT_POINTS = 40


@dataclass(frozen=True, eq=False)
class SupportSurface:
    """A table plane and where on it the table extends.

    Attributes:
        plane: the fitted plane, its normal turned to point up (towards the camera).
        canonical: the table-up frame on the plane (x forward, y left, z up).
        footprint: (M, 2) counter-clockwise convex polygon in canonical x, y: the visible table's convex
            hull grown by ``FOOTPRINT_MARGIN_M``.
        inlier_rms_m: RMS distance of the plane's inliers from it.
    """

    plane: Plane
    canonical: CanonicalFrame
    footprint: np.ndarray
    inlier_rms_m: float

    def height(self, points: np.ndarray) -> np.ndarray:
        """(N,) height of (N, 3) points above the plane, metres (negative below)."""
        return points @ self.plane.normal + self.plane.offset

    def over_table(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: the point's foot on the plane lies within :attr:`footprint`."""
        xy = self.canonical.to_canonical(points)[:, :2]
        return inside_convex(xy, self.footprint)


def inside_convex(xy: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) bool: which (N, 2) points lie inside (or on) a counter-clockwise convex (M, 2) polygon.

    Example:
        >>> square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
        >>> inside_convex(np.array([[0.5, 0.5], [1.5, 0.5]]), square).tolist()
        [True, False]
    """
    start = polygon
    edge = np.roll(polygon, -1, axis=0) - polygon
    ok = np.ones(len(xy), bool)
    for (sx, sy), (ex, ey) in zip(start, edge):
        ok &= ex * (xy[:, 1] - sy) - ey * (xy[:, 0] - sx) >= 0.0
    return ok


def _grow(polygon: np.ndarray, margin: float) -> np.ndarray:
    """Push each vertex of a convex polygon ``margin`` away from its centroid (a cheap outward offset)."""
    centre = polygon.mean(axis=0)
    away = polygon - centre
    return polygon + margin * away / np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-9)


def grid_points(depth_m: np.ndarray, intrinsics: CameraIntrinsics, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Back-project every ``stride``-th pixel with a reading: (N, 3) points and their (N,) flat grid index.

    The grid is ``depth_m[::stride, ::stride]``; the index is into its flattened form.
    """
    z = np.ascontiguousarray(depth_m[::stride, ::stride], dtype=np.float64)
    idx = np.flatnonzero((z > 0) & np.isfinite(z))
    zs = z.reshape(-1)[idx]
    v, u = np.divmod(idx, z.shape[1])
    u = u * stride
    v = v * stride
    points = np.column_stack([(u - intrinsics.cx) * zs / intrinsics.fx, (v - intrinsics.cy) * zs / intrinsics.fy, zs])
    return points, idx


def _next_plane(points: np.ndarray, among: np.ndarray, threshold_m: float, min_points: int,
                rng: np.random.Generator) -> Plane | None:
    """The dominant plane of ``points[among]``, its normal turned up (towards the camera), inliers over all points."""
    candidates = np.flatnonzero(among)
    if len(candidates) < min_points:
        return None
    plane = fit_plane(points[candidates], threshold_m=threshold_m, iterations=SUPPORT_ITERATIONS,
                      min_inliers=min_points, rng=rng)
    if plane is None:
        return None
    normal, offset = (plane.normal, plane.offset) if plane.offset > 0 else (-plane.normal, -plane.offset)
    return Plane(normal=normal, offset=offset, inliers=np.abs(points @ normal + offset) <= threshold_m)


def find_support(depth_m: np.ndarray, intrinsics: CameraIntrinsics, *, stride: int = SUPPORT_STRIDE,
                 threshold_m: float = SUPPORT_THRESHOLD_M, margin_m: float = FOOTPRINT_MARGIN_M,
                 min_points: int = MIN_SUPPORT_POINTS) -> SupportSurface | None:
    """Fit the table plane to a depth image (RANSAC on a strided grid) and outline the table on it.

    The dominant plane is taken to be the table (true of a camera looking at a tabletop, the views this
    package is for), except that a plane the camera faces head-on (a wall ahead) is passed over, and a
    parallel plane above the dominant one (a table on the floor) wins when it holds a good share of the samples.

    Returns:
        The surface, or None: too few readings, no plane, or a camera looking along the plane.

    Example:
        >>> cam = CameraIntrinsics.from_fov(64, 48, 58.0)
        >>> v = np.arange(48)[:, None].repeat(64, axis=1)
        >>> depth = np.where(v > cam.cy + 2, 0.4 * cam.fy / np.maximum(v - cam.cy, 1e-9), 0.0).astype(np.float32)
        >>> surface = find_support(depth, cam, stride=2, min_points=50)
        >>> round(surface.canonical.camera_height_m, 3)
        0.4
    """
    points, idx = grid_points(depth_m, intrinsics, stride)
    if len(points) < min_points:
        return None
    rng = np.random.default_rng(0)
    plane = _next_plane(points, np.ones(len(points), bool), threshold_m, min_points, rng)
    if plane is not None and abs(plane.normal[2]) > _MAX_FACING:
        # A plane the camera looks straight at (a wall ahead) cannot be a table under its view: the next one.
        plane = _next_plane(points, ~plane.inliers, threshold_m, min_points, rng)
    if plane is None or abs(plane.normal[2]) > _MAX_FACING:
        return None
    # The floor around a table can outnumber it: a parallel plane nearer the camera, with a good share of
    # the samples, is the table on that floor.
    higher = (_next_plane(points, ~plane.inliers, threshold_m, min_points, rng)
              if plane.inliers.sum() < (1.0 - _MIN_TABLE_SHARE) * len(points) else None)
    if (higher is not None and abs(higher.normal @ plane.normal) > _PARALLEL
            and higher.offset < plane.offset - _MIN_TABLE_HEIGHT_M
            and higher.inliers.sum() >= _MIN_TABLE_SHARE * plane.inliers.sum()):
        plane = higher
    frame = canonical_frame(plane)
    if frame is None:
        return None
    # The table is the largest patch of inliers on the image grid; walls and legs that cross the plane's
    # height add thin lines of inliers far away, which an opening removes.
    grid_shape = depth_m[::stride, ::stride].shape
    grid = np.zeros(grid_shape[0] * grid_shape[1], np.uint8)
    grid[idx[plane.inliers]] = 1
    grid = cv2.morphologyEx(grid.reshape(grid_shape), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(grid, connectivity=8)
    if n < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    table = (labels.reshape(-1) == largest)[idx]
    if table.sum() < min_points // 2:
        return None
    inliers = points[table]
    rms = float(np.sqrt(np.mean((inliers @ plane.normal + plane.offset) ** 2)))
    xy = frame.to_canonical(inliers)[:, :2].astype(np.float32)
    hull = cv2.convexHull(xy).reshape(-1, 2).astype(np.float64)
    if len(hull) < 3:
        return None
    x, y = hull[:, 0], hull[:, 1]
    if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:          # make it counter-clockwise
        hull = hull[::-1]
    return SupportSurface(plane=plane, canonical=frame, footprint=_grow(hull, margin_m), inlier_rms_m=rms)


_lock = threading.Lock()
_last: tuple[weakref.ref, CameraIntrinsics, SupportSurface | None] | None = None


def support_of(depth_m: np.ndarray, intrinsics: CameraIntrinsics) -> SupportSurface | None:
    """:func:`find_support` of this depth image, computed once: the last image's surface is kept.

    The cache holds a weak reference to the array, so an array is never kept alive by it. Do not
    modify a depth image in place between calls.
    """
    global _last
    with _lock:
        last = _last
    if last is not None and last[0]() is depth_m and last[1] == intrinsics:
        return last[2]
    surface = find_support(depth_m, intrinsics)
    with _lock:
        _last = (weakref.ref(depth_m), intrinsics, surface)
    return surface
