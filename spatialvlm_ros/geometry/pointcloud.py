"""Masked back-projection, robust per-object point clouds and the distance between two objects.

All points are in the camera optical frame (x right, y down, z forward), metres. Only the pixels of
an object's mask are ever lifted to 3D: a full-image cloud is never built.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from spatialvlm_ros.errors import InputError
from spatialvlm_ros.geometry.camera import CameraIntrinsics

# 1.4826 * MAD estimates one standard deviation of a normal distribution.
MAD_TO_SIGMA = 1.4826
# Floor on the robust sigma: a fronto-parallel face has MAD ~ 0 in depth, and without a floor every
# point off that exact depth (sensor noise, a visible side face) would count as an outlier.
MIN_SIGMA_M = 0.005
# Axial depth noise of a structured-light / stereo camera at 1 m (RealSense-like, grows with z^2).
DEPTH_SIGMA_AT_1M_M = 0.002
# Extent is taken between these percentiles so a few stray points do not inflate it.
EXTENT_PERCENTILES = (2.0, 98.0)
# How many of the closest cross-object pairs the gap uncertainty looks at.
GAP_SPREAD_K = 8


def backproject(depth_m: np.ndarray, mask: np.ndarray, intrinsics: CameraIntrinsics,
                depth_min_m: float = 0.0, depth_max_m: float = np.inf) -> np.ndarray:
    """Lift the masked pixels with a valid depth reading to 3D points.

    Readings that are 0, NaN, inf or outside ``[depth_min_m, depth_max_m]`` are dropped.

    Args:
        depth_m: (H, W) depth in metres, registered to the image ``mask`` was drawn on.
        mask: (H, W) bool, the object's pixels.
        intrinsics: pinhole model of that image.
        depth_min_m: nearest valid reading.
        depth_max_m: farthest valid reading.

    Returns:
        (N, 3) float64 points in the camera optical frame (x right, y down, z forward), metres.

    Raises:
        InputError: ``depth_m`` or ``mask`` does not match the camera size.

    Example:
        >>> cam = CameraIntrinsics(fx=100.0, fy=100.0, cx=1.0, cy=1.0, width=3, height=3)
        >>> depth = np.full((3, 3), 2.0, dtype=np.float32)
        >>> mask = np.zeros((3, 3), bool); mask[1, 2] = True
        >>> backproject(depth, mask, cam)
        array([[0.02, 0.  , 2.  ]])
    """
    size = (intrinsics.height, intrinsics.width)
    if depth_m.shape != size:
        raise InputError(f"depth shape {depth_m.shape} does not match the camera's (H, W) {size}")
    if mask.shape != size:
        raise InputError(f"mask shape {mask.shape} does not match the camera's (H, W) {size}")
    # flatnonzero + divmod is ~10x faster than 2-D np.nonzero on a 640x480 mask.
    idx = np.flatnonzero(mask)
    z = depth_m.reshape(-1)[idx]
    # Two comparisons reject 0, NaN (compares False), +-inf and the out-of-range readings together.
    lowest = max(depth_min_m, np.finfo(np.float32).tiny)
    highest = min(depth_max_m, np.finfo(np.float32).max)
    ok = (z >= lowest) & (z <= highest)
    idx, z = idx[ok], z[ok].astype(np.float64)
    v, u = np.divmod(idx, intrinsics.width)
    x = (u - intrinsics.cx) * z / intrinsics.fx
    y = (v - intrinsics.cy) * z / intrinsics.fy
    # An (N, 3) view of a (3, N) array: per-axis statistics downstream then run over contiguous rows,
    # ~10x faster than axis-0 reductions of a C-ordered (N, 3) array.
    return np.stack([x, y, z]).T


def inlier_mask(points: np.ndarray, k: float, min_sigma_m: float = MIN_SIGMA_M) -> np.ndarray:
    """Points within ``k`` robust sigmas (MAD-based) of the median on every axis.

    The main outliers of a masked object are depth-edge "flying pixels" on its silhouette, whose depth
    lies between the object and the background; they sit far out on the z axis and are dropped here.
    Per-axis MAD is O(N) and vectorised; DBSCAN-style clustering would cost far more than the 5 ms
    per-frame budget. Its price: on a round object seen edge-on, the far rim can be trimmed with
    a small ``k``.

    Args:
        points: (N, 3) points.
        k: how many robust sigmas to keep.
        min_sigma_m: floor on the robust sigma, metres.

    Returns:
        (N,) bool, True for points to keep.

    Example:
        >>> pts = np.array([[0.0, 0.0, 1.0], [0.01, 0.0, 1.01], [0.0, 0.01, 0.99], [0.0, 0.0, 1.6]])
        >>> inlier_mask(pts, k=3.0)
        array([ True,  True,  True, False])
    """
    rows = np.ascontiguousarray(points.T)      # (3, N): see backproject
    deviation = np.abs(rows - np.median(rows, axis=1, keepdims=True))
    sigma = np.maximum(MAD_TO_SIGMA * np.median(deviation, axis=1), min_sigma_m)
    return np.all(deviation <= k * sigma[:, None], axis=0)


@dataclass(frozen=True, eq=False)
class ObjectCloud:
    """The robust point cloud of one object, camera optical frame, metres.

    Attributes:
        points: (N, 3) points after subsampling and outlier removal.
        centroid: (3,) mean of ``points`` (the centre of the *visible* surface, not of the solid).
    """

    points: np.ndarray
    centroid: np.ndarray

    @property
    def n_points(self) -> int:
        """Number of points."""
        return len(self.points)

    # Bounds are computed on first use: the distance estimator never needs them.
    @functools.cached_property
    def _bounds(self) -> np.ndarray:
        return np.percentile(self.points.T, EXTENT_PERCENTILES, axis=1)

    @property
    def lower(self) -> np.ndarray:
        """(3,) per-axis 2nd percentile of ``points``."""
        return self._bounds[0]

    @property
    def upper(self) -> np.ndarray:
        """(3,) per-axis 98th percentile of ``points``."""
        return self._bounds[1]

    @property
    def extent(self) -> np.ndarray:
        """(3,) robust size along x, y, z, metres."""
        return self.upper - self.lower


def object_cloud(points: np.ndarray, outlier_k: float = 3.0, max_points: int = 3000,
                 rng: np.random.Generator | None = None) -> ObjectCloud:
    """Subsample to ``max_points`` (for speed), drop outliers, summarise.

    Args:
        points: (N, 3) back-projected points of one object, N >= 1.
        outlier_k: robust sigmas kept by :func:`inlier_mask`.
        max_points: subsample to at most this many points, evenly spaced in mask order from a random
            start (O(max_points), unlike a permutation, and the density stays even over the mask).
        rng: source of the subsampling; ``np.random.default_rng(0)`` when None (deterministic).

    Returns:
        The object's cloud.

    Raises:
        InputError: ``points`` is not (N, 3) with N >= 1, or no point survives outlier removal.

    Example:
        >>> pts = np.array([[0.0, 0.0, 1.0], [0.1, 0.0, 1.0], [0.0, 0.1, 1.0], [0.1, 0.1, 1.0]])
        >>> cloud = object_cloud(pts)
        >>> cloud.n_points, cloud.centroid.round(3).tolist()
        (4, [0.05, 0.05, 1.0])
    """
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise InputError(f"need (N, 3) points with N >= 1, got shape {points.shape}")
    rows = np.ascontiguousarray(points.T)      # (3, N): see backproject
    if rows.shape[1] > max_points:
        rng = np.random.default_rng(0) if rng is None else rng
        step = rows.shape[1] / max_points
        rows = rows[:, ((rng.random() + np.arange(max_points)) * step).astype(np.intp)]
    rows = rows[:, inlier_mask(rows.T, outlier_k)]
    if rows.shape[1] == 0:
        raise InputError(f"outlier removal kept no points: outlier_k={outlier_k} is too small")
    return ObjectCloud(points=rows.T, centroid=rows.mean(axis=1))


@dataclass(frozen=True, eq=False)
class Separation:
    """How far apart two objects are, camera optical frame, metres.

    Attributes:
        distance_m: the distance.
        uncertainty_m: one standard deviation of ``distance_m`` (see the function that made it).
        point_a: (3,) the end of the measured segment on the first object.
        point_b: (3,) the end on the second object.
    """

    distance_m: float
    uncertainty_m: float
    point_a: np.ndarray
    point_b: np.ndarray


def _sq_distance_to_box(rows: np.ndarray, box_rows: np.ndarray) -> np.ndarray:
    """(N,) squared distance from (3, N) points to the bounding box of (3, M) points (0 inside)."""
    lower, upper = box_rows.min(axis=1, keepdims=True), box_rows.max(axis=1, keepdims=True)
    outside = np.maximum(np.maximum(lower - rows, rows - upper), 0.0)
    return np.einsum("ij,ij->j", outside, outside)


def surface_gap(a: ObjectCloud, b: ObjectCloud,
                depth_sigma_at_1m_m: float = DEPTH_SIGMA_AT_1M_M) -> Separation:
    """Closest surface-to-surface distance between two clouds (0 when they touch or interpenetrate).

    An unpruned KD-tree query of 3000 points against 3000 costs ~3 ms, so the search is bounded first:

    1. a cheap real pair (the point of ``a`` nearest to ``b``'s centroid and its nearest point in
       ``b``) gives an upper bound ``ub`` on the gap;
    2. points farther than ``ub`` from the other cloud's bounding box cannot be in the closest pair and
       are dropped (on objects side by side this keeps a thin slab of each);
    3. the smaller remainder is queried against a KD-tree of the larger with ``distance_upper_bound``.

    Uncertainty (1 sigma) combines two cheap terms in quadrature:

    * sampling: the standard deviation of the ``GAP_SPREAD_K`` smallest nearest-neighbour distances
      (those within ``ub``). It is large when the clouds are sparse near the gap or the minimum hinges
      on a few stray points.
    * depth noise: each closest point's axial noise ``depth_sigma_at_1m_m * z^2`` (structured light /
      stereo), combined for both points and projected on the gap direction (rays ~ z).

    Biases it does not cover: only visible surfaces are measured, so a hidden back surface closer to
    the other object is missed, and a sparse cloud over-estimates the gap by up to its point spacing.

    Example:
        >>> a = object_cloud(np.array([[0.0, 0.0, 1.0], [0.0, 0.01, 1.0]]))
        >>> b = object_cloud(np.array([[0.05, 0.0, 1.0], [0.06, 0.0, 1.0]]))
        >>> sep = surface_gap(a, b)
        >>> round(sep.distance_m, 3), sep.point_a.tolist(), sep.point_b.tolist()
        (0.05, [0.0, 0.0, 1.0], [0.05, 0.0, 1.0])
    """
    rows_a, rows_b = np.ascontiguousarray(a.points.T), np.ascontiguousarray(b.points.T)   # see backproject
    to_b = rows_a - b.centroid[:, None]
    probe = rows_a[:, np.argmin(np.einsum("ij,ij->j", to_b, to_b))]
    to_probe = rows_b - probe[:, None]
    ub_sq = float(np.min(np.einsum("ij,ij->j", to_probe, to_probe)))
    # True bounding boxes here: the percentile ones of ObjectCloud could prune a closest point.
    near_a = rows_a[:, _sq_distance_to_box(rows_a, rows_b) <= ub_sq].T
    near_b = rows_b[:, _sq_distance_to_box(rows_b, rows_a) <= ub_sq].T
    swapped = len(near_a) > len(near_b)
    small, large = (near_b, near_a) if swapped else (near_a, near_b)
    # The tree is tiny after pruning: an unbalanced build is ~2x cheaper and queries just as fast here.
    tree = cKDTree(large, balanced_tree=False, compact_nodes=False)
    dist, idx = tree.query(small, distance_upper_bound=np.sqrt(ub_sq) * (1 + 1e-9) + 1e-12)
    best = int(np.argmin(dist))
    p_small, p_large = small[best], large[idx[best]]
    found = dist[np.isfinite(dist)]
    spread = float(np.std(np.partition(found, min(GAP_SPREAD_K, len(found)) - 1)[:GAP_SPREAD_K]))
    gap = float(dist[best])
    direction_z = abs(p_large[2] - p_small[2]) / gap if gap > 0 else 1.0  # touching: worst case
    depth_noise = depth_sigma_at_1m_m * np.hypot(p_small[2] ** 2, p_large[2] ** 2) * direction_z
    point_a, point_b = (p_large, p_small) if swapped else (p_small, p_large)
    return Separation(distance_m=gap, uncertainty_m=float(np.hypot(spread, depth_noise)),
                      point_a=point_a, point_b=point_b)


def centre_distance(a: ObjectCloud, b: ObjectCloud) -> Separation:
    """Distance between the centroids of the two visible surfaces.

    Uncertainty (1 sigma) is the standard error of the difference of the two means along the line
    joining them, ``sqrt(u^T (C_a / n_a + C_b / n_b) u)``; sensor noise is inside the covariances. It does
    not cover the bias of measuring visible-surface centroids instead of solid centres.

    Example:
        >>> a = object_cloud(np.array([[0.0, 0.0, 1.0], [0.02, 0.0, 1.0]]))
        >>> b = object_cloud(np.array([[0.1, 0.0, 1.0], [0.12, 0.0, 1.0]]))
        >>> round(centre_distance(a, b).distance_m, 3)
        0.1
    """
    delta = b.centroid - a.centroid
    distance = float(np.linalg.norm(delta))
    u = delta / distance if distance > 0 else np.zeros(3)
    var = sum(float(u @ _covariance(c.points.T) @ u) / c.n_points for c in (a, b))
    return Separation(distance_m=distance, uncertainty_m=float(np.sqrt(var)),
                      point_a=a.centroid, point_b=b.centroid)


def _covariance(rows: np.ndarray) -> np.ndarray:
    """(3, 3) sample covariance of (3, N) points; zero for a single point."""
    return np.cov(rows) if rows.shape[1] > 1 else np.zeros((3, 3))
