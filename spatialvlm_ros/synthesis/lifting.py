"""Lifting (paper steps 3-4): masked depth -> clean per-object clouds -> canonical frame -> 3D boxes.

Outlier removal is DBSCAN (largest cluster) with a radius scaled to the object, written on
``scipy.spatial.cKDTree`` + ``scipy.sparse.csgraph``: scipy is already a dependency, scikit-learn is
not, and the two calls are all DBSCAN needs. The radius is a fraction of the object's robust
diagonal (the paper's "thresholds scaled to object size"), floored at a few pixel footprints so a
small or far object, whose points are sparse, is not shattered into singletons.

The canonical frame comes from a RANSAC plane (0.05 m) fitted to the support-surface pixels only
(floor / tabletop, from the objects expert), never to the whole scene, where a wall or a large box
face can out-vote the table.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.geometry.plane import CanonicalFrame, canonical_frame, fit_plane
from spatialvlm_ros.geometry.pointcloud import backproject
from spatialvlm_ros.synthesis.config import LiftingConfig
from spatialvlm_ros.synthesis.records import Box3D

logger = logging.getLogger(__name__)

#: Box bounds are these percentiles of the cleaned cloud along each scene axis (a few stray points
#: on a silhouette must not inflate the box).
BOX_PERCENTILES = (1.0, 99.0)


def largest_cluster(points: np.ndarray, eps_m: float, min_samples: int) -> np.ndarray:
    """DBSCAN, keeping only the largest cluster (its core and border points).

    Args:
        points: (N, 3) points, metres.
        eps_m: neighbourhood radius.
        min_samples: neighbours (the point included) that make a core point.

    Returns:
        (N,) bool, True for the points of the largest cluster (all False if there is no core point).

    Example:
        >>> blob = np.random.default_rng(0).normal(0.0, 0.01, (200, 3))
        >>> far = np.array([[0.5, 0.5, 0.5], [0.51, 0.5, 0.5]])
        >>> keep = largest_cluster(np.vstack([blob, far]), eps_m=0.02, min_samples=4)
        >>> int(keep[:200].sum()) > 190, bool(keep[200:].any())
        (True, False)
    """
    tree = cKDTree(points)
    pairs = tree.query_pairs(eps_m, output_type="ndarray")
    n = len(points)
    degree = np.bincount(pairs.ravel(), minlength=n) + 1
    core = degree >= min_samples
    if not core.any():
        return np.zeros(n, dtype=bool)
    both_core = pairs[core[pairs[:, 0]] & core[pairs[:, 1]]]
    graph = coo_matrix((np.ones(len(both_core)), (both_core[:, 0], both_core[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    biggest = np.bincount(label[core]).argmax()
    in_cluster = core & (label == biggest)
    # Border points: not core, but within eps of a core point of the cluster.
    touching = pairs[in_cluster[pairs[:, 0]] | in_cluster[pairs[:, 1]]]
    in_cluster[touching.ravel()] = True
    return in_cluster


def clean_object_points(depth_m: np.ndarray, mask: np.ndarray, intrinsics: CameraIntrinsics, cfg: LiftingConfig,
                        rng: np.random.Generator) -> np.ndarray | None:
    """Back-project one object's mask, subsample, and keep its largest DBSCAN cluster.

    Returns:
        (N, 3) optical-frame points, or None when fewer than ``cfg.min_pixels`` valid pixels or cluster
        points remain.
    """
    points = backproject(depth_m, mask, intrinsics, cfg.depth_min_m, cfg.depth_max_m)
    n_valid = len(points)
    if n_valid < cfg.min_pixels:
        return None
    if n_valid > cfg.max_points:
        # Evenly spaced in mask order from a random start: O(max_points) and density stays even.
        step = n_valid / cfg.max_points
        points = points[((rng.random() + np.arange(cfg.max_points)) * step).astype(np.intp)]
    lower, upper = np.percentile(points, [5.0, 95.0], axis=0)
    footprint = float(np.median(points[:, 2])) / intrinsics.fx * np.sqrt(n_valid / len(points))
    eps = max(cfg.cluster_eps_fraction * float(np.linalg.norm(upper - lower)), cfg.cluster_eps_pixels * footprint)
    points = points[largest_cluster(points, eps, cfg.cluster_min_samples)]
    return points if len(points) >= min(cfg.min_pixels, cfg.max_points) else None


def support_frame(depth_m: np.ndarray, support_mask: np.ndarray | None, intrinsics: CameraIntrinsics,
                  cfg: LiftingConfig, rng: np.random.Generator) -> CanonicalFrame | None:
    """The paper's canonical frame from the support-surface pixels; None when it cannot be built.

    RANSAC (``cfg.plane_threshold_m``, 0.05 m) runs on the floor / tabletop pixels only; up is the plane
    normal on the camera's side, forward the optical axis projected on the plane.
    """
    if support_mask is None:
        logger.debug("no support mask: scene not canonicalised")
        return None
    points = backproject(depth_m, support_mask, intrinsics, cfg.depth_min_m, cfg.depth_max_m)
    if len(points) < cfg.plane_min_pixels:
        logger.debug("%d support pixels < %d: scene not canonicalised", len(points), cfg.plane_min_pixels)
        return None
    if len(points) > cfg.plane_max_points:
        points = points[rng.choice(len(points), cfg.plane_max_points, replace=False)]
    plane = fit_plane(points, threshold_m=cfg.plane_threshold_m, iterations=cfg.plane_iterations,
                      min_inliers=cfg.plane_min_pixels, rng=rng)
    return None if plane is None else canonical_frame(plane)


def scene_box(points_cam: np.ndarray, camera_to_scene: np.ndarray) -> Box3D:
    """Axis-aligned box of optical-frame points in the scene frame (robust percentile bounds).

    Example:
        >>> pts = np.array([[x, y, 2.0] for x in (-0.1, 0.1) for y in (-0.2, 0.2)])
        >>> to_scene = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]])
        >>> box = scene_box(pts, to_scene)
        >>> box.centre_m, round(box.width_m, 3), round(box.height_m, 3)
        ((2.0, 0.0, 0.0), 0.2, 0.4)
    """
    scene = points_cam @ camera_to_scene[:3, :3].T + camera_to_scene[:3, 3]
    lower, upper = np.percentile(scene, BOX_PERCENTILES, axis=0)
    return Box3D.from_bounds(lower, upper)
