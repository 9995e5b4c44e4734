"""RANSAC plane fit and the canonical table-up frame."""

import numpy as np
import pytest

from spatialvlm_ros.errors import InputError
from spatialvlm_ros.geometry.plane import Plane, canonical_frame, fit_plane


def _camera_axes(pitch_deg):
    """Optical axes (x right, y down, z forward) in a world with z up, camera looking along +x, pitched down."""
    p = np.deg2rad(pitch_deg)
    forward = np.array([np.cos(p), 0.0, -np.sin(p)])
    right = np.array([0.0, -1.0, 0.0])
    return np.column_stack([right, np.cross(forward, right), forward])   # columns: x, y, z


def _table_scene(pitch_deg, height, n=3000, outlier_fraction=0.3, seed=0):
    """Table points (world z = 0, 5 mm noise) plus uniform clutter, in the optical frame of a camera at ``height``."""
    rng = np.random.default_rng(seed)
    n_out = int(n * outlier_fraction)
    table = np.column_stack([rng.uniform(0.3, 2.0, n - n_out), rng.uniform(-1.0, 1.0, n - n_out),
                             rng.normal(0.0, 0.005, n - n_out)])
    clutter = rng.uniform([0.3, -1.0, 0.1], [2.0, 1.0, 0.6], (n_out, 3))
    world = np.concatenate([table, clutter])
    cam_r = _camera_axes(pitch_deg)
    optical = (world - [0.0, 0.0, height]) @ cam_r                    # R^T (p - t), row-wise
    is_table = np.arange(n) < n - n_out
    return optical, is_table, cam_r


@pytest.mark.parametrize("pitch_deg, height, seed", [(30.0, 0.6, 0), (55.0, 1.1, 1), (10.0, 0.4, 2)])
def test_ransac_recovers_plane_with_30_percent_outliers(pitch_deg, height, seed):
    points, is_table, cam_r = _table_scene(pitch_deg, height, seed=seed)
    plane = fit_plane(points, rng=np.random.default_rng(seed))
    true_up = cam_r.T @ [0.0, 0.0, 1.0]
    assert abs(plane.normal @ true_up) > np.cos(np.deg2rad(1.0))
    assert abs(plane.offset) == pytest.approx(height, abs=5e-3)
    assert np.linalg.norm(plane.normal) == pytest.approx(1.0)
    assert plane.inliers[is_table].mean() > 0.99
    assert plane.inliers[~is_table].mean() < 0.15                     # only clutter within 5 cm of the table


def test_ransac_is_deterministic_for_a_seed():
    points, _, _ = _table_scene(30.0, 0.6)
    a, b = (fit_plane(points, rng=np.random.default_rng(7)) for _ in range(2))
    np.testing.assert_array_equal(a.normal, b.normal)
    np.testing.assert_array_equal(a.inliers, b.inliers)


@pytest.mark.parametrize("points", [
    np.zeros((10, 3)) + [0.0, 0.0, 1.0],                                # too few points
    np.column_stack([np.linspace(0, 1, 200), np.zeros(200), np.ones(200)]),   # collinear: no plane
])
def test_ransac_returns_none_without_a_plane(points):
    assert fit_plane(points) is None


def test_ransac_rejects_bad_shape():
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        fit_plane(np.zeros((100, 2)))


@pytest.mark.parametrize("flip", [1.0, -1.0])
@pytest.mark.parametrize("pitch_deg, height", [(30.0, 0.6), (70.0, 1.0)])
def test_canonical_frame_axes(pitch_deg, height, flip):
    cam_r = _camera_axes(pitch_deg)
    up_optical = cam_r.T @ [0.0, 0.0, 1.0]
    # n . x + d = 0 with the camera at world height ``height``; either orientation of the normal
    plane = Plane(normal=flip * up_optical, offset=flip * height, inliers=np.ones(0, bool))
    cf = canonical_frame(plane)
    np.testing.assert_allclose(cf.up, up_optical, atol=1e-12)
    np.testing.assert_allclose(cf.forward, cam_r.T @ [1.0, 0.0, 0.0], atol=1e-12)   # world +x: optical axis on table
    np.testing.assert_allclose(cf.left, cam_r.T @ [0.0, 1.0, 0.0], atol=1e-12)
    assert np.linalg.det(cf.rotation) == pytest.approx(1.0)
    assert cf.camera_height_m == pytest.approx(height)
    # A point 0.25 m above the table, 1 m ahead of the camera's foot, 0.1 m to its left.
    world = np.array([1.0, 0.1, 0.25])
    optical = cam_r.T @ (world - [0.0, 0.0, height])
    np.testing.assert_allclose(cf.to_canonical(optical[None])[0], world, atol=1e-12)
    np.testing.assert_allclose((cf.transform @ np.append(optical, 1.0))[:3], world, atol=1e-12)


def test_canonical_frame_from_fitted_plane_puts_table_at_zero_height():
    points, is_table, _ = _table_scene(40.0, 0.8)
    cf = canonical_frame(fit_plane(points))
    heights = cf.to_canonical(points)[:, 2]
    assert np.abs(heights[is_table]).max() < 0.03
    assert np.all(heights[~is_table] > 0.05)


@pytest.mark.parametrize("normal, offset", [
    ((0.0, 0.0, -1.0), 1.0),                    # camera looking straight down at the table
    ((0.0, 0.0005, -1.0), 1.0),                 # ... almost straight down
    ((0.0, -1.0, 0.0), 0.0),                    # camera on the plane
])
def test_canonical_frame_degenerate_returns_none(normal, offset):
    normal = np.asarray(normal) / np.linalg.norm(normal)
    assert canonical_frame(Plane(normal=normal, offset=offset, inliers=np.ones(0, bool))) is None
