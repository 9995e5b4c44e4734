"""Back-projection, robust object clouds and distances, on analytic geometry."""

import numpy as np
import pytest

from spatialvlm_ros.errors import InputError
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.geometry.pointcloud import (
    backproject, centre_distance, inlier_mask, object_cloud, surface_gap,
)

CAM = CameraIntrinsics(fx=500.0, fy=480.0, cx=310.0, cy=245.0, width=640, height=480)


def test_backproject_is_exact_pinhole_inverse():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 3.0, (CAM.height, CAM.width)).astype(np.float32)
    mask = rng.random((CAM.height, CAM.width)) < 0.05
    points = backproject(depth, mask, CAM)
    v, u = np.nonzero(mask)                         # row-major order, as backproject returns
    assert points.shape == (len(u), 3)
    np.testing.assert_allclose(points[:, 2], depth[v, u], rtol=1e-6)
    np.testing.assert_allclose(CAM.project(points), np.column_stack([u, v]), atol=1e-6)


@pytest.mark.parametrize("bad", [0.0, np.nan, np.inf, -1.0, 0.05, 9.0])
def test_backproject_drops_invalid_readings(bad):
    depth = np.full((CAM.height, CAM.width), 1.0, np.float32)
    mask = np.zeros(depth.shape, bool)
    mask[100, 100:110] = True
    depth[100, 100:104] = bad
    points = backproject(depth, mask, CAM, depth_min_m=0.1, depth_max_m=5.0)
    assert len(points) == 6
    assert np.all(points[:, 2] == 1.0)


def test_backproject_empty_mask_gives_no_points():
    depth = np.ones((CAM.height, CAM.width), np.float32)
    assert backproject(depth, np.zeros(depth.shape, bool), CAM).shape == (0, 3)


@pytest.mark.parametrize("depth_shape, mask_shape, what", [
    ((480, 641), (480, 640), "depth"),
    ((480, 640), (240, 320), "mask"),
])
def test_backproject_rejects_shape_mismatch(depth_shape, mask_shape, what):
    with pytest.raises(InputError, match=f"{what} shape"):
        backproject(np.ones(depth_shape, np.float32), np.ones(mask_shape, bool), CAM)


def _grid(lower, upper, n=40):
    """Points on a regular grid filling the box [lower, upper] (a flat face if one side is 0)."""
    axes = [np.linspace(lo, hi, n if hi > lo else 1) for lo, hi in zip(lower, upper)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def test_object_cloud_centroid_and_extent():
    face = _grid((0.1, -0.05, 1.0), (0.3, 0.05, 1.0))   # 0.2 x 0.1 m face, fronto-parallel at 1 m
    cloud = object_cloud(face)
    np.testing.assert_allclose(cloud.centroid, [0.2, 0.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(cloud.extent, [0.2, 0.1, 0.0], rtol=0.05, atol=1e-9)
    assert cloud.n_points == len(face)


def test_outlier_removal_drops_flying_pixels():
    rng = np.random.default_rng(1)
    face = _grid((-0.05, -0.05, 0.8), (0.05, 0.05, 0.8))
    face[:, 2] += rng.normal(0.0, 0.002, len(face))               # sensor noise stays
    # Flying pixels: silhouette pixels whose depth lies between the object (0.8 m) and the wall (2 m).
    edge = np.abs(face[:, 0]) > 0.049
    flying = face[edge].copy()
    flying[:, 2] = rng.uniform(0.9, 1.9, len(flying))
    flying[:, :2] *= flying[:, 2:] / 0.8                           # same pixel, farther along its ray
    cloud = object_cloud(np.concatenate([face, flying]), outlier_k=3.0)
    assert cloud.n_points == len(face)
    assert cloud.points[:, 2].max() < 0.82
    np.testing.assert_allclose(cloud.centroid, [0.0, 0.0, 0.8], atol=1e-3)


def test_inlier_mask_floor_keeps_a_flat_face_with_its_noise():
    face = _grid((-0.05, -0.05, 1.0), (0.05, 0.05, 1.0))
    face[::7, 2] += 0.004                                          # MAD in z is 0: the floor matters
    assert inlier_mask(face, k=3.0).all()


def test_object_cloud_subsampling_is_capped_and_seeded():
    points = _grid((0, 0, 1), (0.1, 0.1, 1.1), n=20)              # 8000 points
    a = object_cloud(points, max_points=500, rng=np.random.default_rng(3))
    b = object_cloud(points, max_points=500, rng=np.random.default_rng(3))
    assert a.n_points <= 500
    np.testing.assert_array_equal(a.points, b.points)


def test_object_cloud_rejects_empty_input():
    with pytest.raises(InputError, match="N >= 1"):
        object_cloud(np.zeros((0, 3)))


def _visible_sphere(centre, radius, n=20000):
    """Dense points on the half of a sphere the camera (at the origin) sees."""
    i = np.arange(n) + 0.5
    polar, azimuth = np.arccos(1 - 2 * i / n), np.pi * (1 + 5 ** 0.5) * i     # Fibonacci sphere
    normals = np.column_stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)])
    centre = np.asarray(centre, float)
    facing = normals @ -centre > 0
    return centre + radius * normals[facing]


@pytest.mark.parametrize("r_a, r_b", [(0.04, 0.05), (0.06, 0.03)])   # second case: a is the larger cloud
def test_surface_gap_of_spheres_side_by_side(r_a, r_b):
    c_a, c_b = np.array([-0.1, 0.0, 0.8]), np.array([0.08, 0.02, 0.8])
    a = object_cloud(_visible_sphere(c_a, r_a))
    b = object_cloud(_visible_sphere(c_b, r_b))
    sep = surface_gap(a, b)
    assert sep.distance_m == pytest.approx(np.linalg.norm(c_b - c_a) - r_a - r_b, abs=2e-3)
    assert np.linalg.norm(sep.point_a - c_a) == pytest.approx(r_a, abs=1e-6)   # ends on the right objects
    assert np.linalg.norm(sep.point_b - c_b) == pytest.approx(r_b, abs=1e-6)
    assert np.linalg.norm(sep.point_b - sep.point_a) == pytest.approx(sep.distance_m)
    assert 0 < sep.uncertainty_m < 0.01


def test_surface_gap_is_zero_when_touching():
    a = object_cloud(_grid((0.0, 0.0, 1.0), (0.1, 0.1, 1.0)))
    b = object_cloud(_grid((0.1, 0.0, 1.0), (0.2, 0.1, 1.0)))
    sep = surface_gap(a, b)
    assert sep.distance_m == 0.0
    assert np.isfinite(sep.uncertainty_m)


def test_gap_uncertainty_grows_with_noise():
    rng = np.random.default_rng(2)
    a_pts, b_pts = _grid((0.0, 0.0, 1.0), (0.1, 0.1, 1.0)), _grid((0.15, 0.0, 1.0), (0.25, 0.1, 1.0))
    clean = surface_gap(object_cloud(a_pts), object_cloud(b_pts))
    noisy = surface_gap(*(object_cloud(p + rng.normal(0, 0.003, p.shape)) for p in (a_pts, b_pts)))
    assert noisy.uncertainty_m > clean.uncertainty_m


def test_centre_distance_between_faces():
    a = object_cloud(_grid((0.0, 0.0, 1.0), (0.1, 0.1, 1.0)))
    b = object_cloud(_grid((0.3, 0.0, 1.4), (0.4, 0.1, 1.4)))
    sep = centre_distance(a, b)
    assert sep.distance_m == pytest.approx(0.5)
    np.testing.assert_allclose(sep.point_a, [0.05, 0.05, 1.0])
    np.testing.assert_allclose(sep.point_b, [0.35, 0.05, 1.4])
    assert 0 <= sep.uncertainty_m < 1e-2


def test_object_cloud_says_when_outlier_k_leaves_nothing():
    points = np.random.default_rng(4).uniform(0.0, 1.0, (101, 3))
    with pytest.raises(InputError, match="kept no points: outlier_k=1e-06"):
        object_cloud(points, outlier_k=1e-6)


@pytest.mark.parametrize("a, b", [((150, 120), (170, 125)), ((5, 5), (40, 30)), ((300, 200), (310, 235)),
                                  ((10, 10), (310, 230)), ((100, 50), (260, 60))])
@pytest.mark.parametrize("scale, shift", [(1.0, (0.0, 0.0)), (0.8, (0.15, -0.15)), (1.25, (-0.15, 0.15))])
def test_pair_window_keeps_the_aspect_the_image_and_both_points(
        a: tuple, b: tuple, scale: float, shift: tuple) -> None:
    from spatialvlm_ros.geometry.zoom import MAX_ZOOM, pair_window
    x0, y0, w, h = pair_window(a, b, 320, 240, scale=scale, shift=shift)
    assert 0 <= x0 and 0 <= y0 and x0 + w <= 320 and y0 + h <= 240
    assert abs(w * 240 - h * 320) <= 320            # the image's aspect, to a pixel's rounding
    assert 320 / MAX_ZOOM - 1 <= w <= 320
    if scale == 1.0 and shift == (0.0, 0.0):       # the inference window holds both points
        for u, v in (a, b):
            assert x0 <= u < x0 + w and y0 <= v < y0 + h
    # Farther apart never gives a narrower window.
    wider = pair_window(a, (2 * b[0] - a[0], 2 * b[1] - a[1]), 320, 240, scale=scale, shift=shift)
    assert wider.width >= w


def test_pair_window_refuses_bad_input_and_is_never_empty() -> None:
    from spatialvlm_ros.geometry.zoom import Window, pair_window
    for bad in ({"a_px": (np.nan, 1.0)}, {"shift": (0.1,)}, {"shift": (np.nan, 0.0)}):
        with pytest.raises(InputError, match="finite"):
            pair_window(**{"a_px": (1.0, 1.0), "b_px": (2.0, 3.0), "width": 320, "height": 240, **bad})
    for bad in ({"scale": 0.0}, {"scale": np.nan}, {"aspect": -1.0}, {"max_zoom": 0.5}):
        with pytest.raises(InputError, match="scale"):
            pair_window((1.0, 1.0), (2.0, 3.0), 320, 240, **bad)
    with pytest.raises(InputError, match="1x1"):
        pair_window((0.0, 0.0), (0.0, 0.0), 0, 240)
    assert pair_window((0.0, 0.0), (0.0, 0.0), 1, 1) == Window(0, 0, 1, 1)
    x0, y0, w, h = pair_window((3.0, 1.0), (5.0, 1.0), 640, 2)
    assert w >= 1 and h >= 1 and x0 + w <= 640 and y0 + h <= 2


def test_pair_window_of_another_aspect_fits_frames_of_any_shape() -> None:
    from spatialvlm_ros.geometry.zoom import pair_window
    for width, height in ((427, 240), (240, 320), (320, 240)):
        x0, y0, w, h = pair_window((100, 100), (140, 110), width, height, aspect=4 / 3)
        assert abs(3 * w - 4 * h) <= 4 and x0 + w <= width and y0 + h <= height
        assert pair_window((0, 0), (width, height), width, height, aspect=4 / 3).width == min(width, height * 4 // 3)


def test_a_cropped_frame_sees_every_point_where_the_whole_frame_does() -> None:
    from spatialvlm_ros.frame import Frame
    from spatialvlm_ros.geometry.zoom import Window
    cam = CameraIntrinsics.from_fov(width=320, height=240, fovy_deg=58.0)
    rng = np.random.default_rng(0)
    frame = Frame(rgb=rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), intrinsics=cam,
                  depth_m=rng.uniform(0.3, 2.0, (240, 320)).astype(np.float32),
                  segmentation=rng.integers(-1, 5, (240, 320)).astype(np.int32), labels={"red can": 3})
    window = Window(40, 30, 160, 120)
    crop = frame.crop(window)
    assert crop.rgb.shape == (120, 160, 3) and crop.depth_m.shape == crop.segmentation.shape == (120, 160)
    np.testing.assert_array_equal(crop.rgb, frame.rgb[30:150, 40:200])
    assert crop.labels == frame.labels
    points = np.array([[0.1, -0.05, 0.8], [-0.02, 0.03, 1.2]])
    np.testing.assert_allclose(crop.intrinsics.project(points), cam.project(points) - [40, 30])
    with pytest.raises(InputError, match="not inside"):
        frame.crop(Window(200, 30, 160, 120))
