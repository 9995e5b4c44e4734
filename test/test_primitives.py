"""Shape completion: primitive fits to partial clouds, the support plane, and the estimator measuring to them."""

import numpy as np
import pytest

from spatialvlm_ros.config import CompletionConfig, EstimatorConfig
from spatialvlm_ros.estimation.geometric import GeometricEstimator
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.geometry.plane import Plane, canonical_frame
from spatialvlm_ros.geometry.primitives import (
    complete, fit_box, fit_cylinder, fit_sphere, shape_of, shapes_for,
)
from spatialvlm_ros.geometry.support import find_support
from spatialvlm_ros.types import DistanceKind, Pair

CAM = CameraIntrinsics.from_fov(640, 480, 58.0)
TABLE_Y = 0.25              # the table plane 0.25 m below the optical centre; the camera looks along it
WALL_Z = 2.0
NOISE = 0.001               # depth noise of the synthetic clouds (1 sigma), metres
FRAME = canonical_frame(Plane(normal=np.array([0.0, -1.0, 0.0]), offset=TABLE_Y, inliers=np.ones(0, bool)))
GREY, YELLOW, RED = (140, 135, 130), (235, 205, 25), (205, 30, 25)


def _rays() -> np.ndarray:
    u, v = np.meshgrid(np.arange(CAM.width), np.arange(CAM.height))
    return np.stack([(u - CAM.cx) / CAM.fx, (v - CAM.cy) / CAM.fy, np.ones(u.shape)], axis=-1)


def _hit_cylinder(rays, x, z, radius, height):
    """Depth of the first hit of an upright cylinder standing on the table (axis along optical y)."""
    rx, ry, rz = rays[..., 0], rays[..., 1], rays[..., 2]
    a = rx * rx + rz * rz
    b = -2 * (rx * x + rz * z)
    c = x * x + z * z - radius * radius
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        t_side = (-b - np.sqrt(disc)) / (2 * a)
    y_side = t_side * ry
    side = np.where((disc >= 0) & (y_side >= TABLE_Y - height) & (y_side <= TABLE_Y), t_side, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_top = (TABLE_Y - height) / ry
    on_top = (t_top > 0) & ((t_top * rx - x) ** 2 + (t_top * rz - z) ** 2 <= radius * radius)
    return np.minimum(side, np.where(on_top, t_top, np.inf))


def _hit_box(rays, lower, upper):
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = np.asarray(lower) / rays, np.asarray(upper) / rays
    near = np.minimum(t0, t1).max(axis=-1)
    far = np.maximum(t0, t1).min(axis=-1)
    return np.where((near <= far) & (near > 0), near, np.inf)


def _hit_sphere(rays, centre, radius):
    c = np.asarray(centre)
    a, b = np.einsum("...i,...i", rays, rays), rays @ c
    disc = b * b - a * (c @ c - radius ** 2)
    with np.errstate(invalid="ignore"):
        t = (b - np.sqrt(disc)) / a
    return np.where(disc >= 0, t, np.inf)


def _render(hits, colours, seed=0):
    """Table, wall and the objects' hit depths -> a Frame (noisy depth) and the object id image."""
    rays = _rays()
    with np.errstate(divide="ignore"):
        table = np.where(rays[..., 1] > 0, TABLE_Y / rays[..., 1], np.inf)
    depths = np.stack([np.full(table.shape, WALL_Z), table] + hits)
    ids = np.argmin(depths, axis=0)
    depth = depths.min(axis=0)
    depth = depth + np.random.default_rng(seed).normal(0.0, NOISE, depth.shape)
    rgb = np.array([GREY, GREY] + colours, np.uint8)[ids]
    return Frame(rgb=rgb, intrinsics=CAM, depth_m=depth.astype(np.float32)), ids - 2


def _visible_points(frame, ids, k):
    z = frame.depth_m[ids == k].astype(np.float64)
    v, u = np.nonzero(ids == k)
    return np.column_stack([(u - CAM.cx) * z / CAM.fx, (v - CAM.cy) * z / CAM.fy, z])


# --- fits of partial clouds ------------------------------------------------------------------------

@pytest.mark.parametrize("visible", ["whole view", "left half hidden"])
def test_cylinder_fit_recovers_a_partly_seen_can(visible):
    frame, ids = _render([_hit_cylinder(_rays(), 0.02, 0.70, 0.033, 0.122)], [RED])
    points = _visible_points(frame, ids, 0)
    if visible == "left half hidden":                   # an occluder (the gripper) hides part of it
        points = points[points[:, 0] > 0.02]
    cyl = fit_cylinder(FRAME.to_canonical(points), FRAME)
    assert cyl is not None and cyl.shape == "cylinder"
    assert cyl.size[0] == pytest.approx(0.033, abs=0.002)             # radius
    assert 2 * cyl.size[1] == pytest.approx(0.122, abs=0.004)         # height: base on the table
    np.testing.assert_allclose(cyl.centre_camera, [0.02, TABLE_Y - 0.061, 0.70], atol=0.003)


def test_box_fit_recovers_a_box_seen_from_above():
    frame, ids = _render([_hit_box(_rays(), (-0.05, TABLE_Y - 0.07, 0.62), (0.04, TABLE_Y, 0.69))], [RED])
    box = fit_box(FRAME.to_canonical(_visible_points(frame, ids, 0)), FRAME)
    assert box is not None
    assert sorted(np.round(2 * box.size[:2], 3)) == pytest.approx([0.07, 0.09], abs=0.004)
    assert 2 * box.size[2] == pytest.approx(0.07, abs=0.004)
    np.testing.assert_allclose(box.centre_camera, [-0.005, TABLE_Y - 0.035, 0.655], atol=0.003)


def test_sphere_fit_recovers_a_ball_on_the_table():
    frame, ids = _render([_hit_sphere(_rays(), (0.03, TABLE_Y - 0.035, 0.65), 0.035)], [RED])
    ball = fit_sphere(FRAME.to_canonical(_visible_points(frame, ids, 0)), FRAME)
    assert ball is not None
    assert ball.size[0] == pytest.approx(0.035, abs=0.002)
    np.testing.assert_allclose(ball.centre_camera, [0.03, TABLE_Y - 0.035, 0.65], atol=0.003)


def test_a_bad_fit_is_refused():
    frame, ids = _render([_hit_box(_rays(), (-0.05, TABLE_Y - 0.07, 0.62), (0.04, TABLE_Y, 0.69))], [RED])
    points = _visible_points(frame, ids, 0)
    refused = complete(points, FRAME, NOISE, ("cylinder",))           # a box is no cylinder
    assert refused.primitive is None and refused.detail
    chosen = complete(points, FRAME, NOISE)                            # the best fit of all three
    assert chosen.primitive is not None and chosen.primitive.shape == "box"


def test_closest_point_on_a_completed_solid():
    frame, ids = _render([_hit_cylinder(_rays(), 0.0, 0.70, 0.033, 0.122)], [RED])
    cyl = complete(_visible_points(frame, ids, 0), FRAME, NOISE, ("cylinder",)).primitive
    behind = np.array([[0.0, TABLE_Y - 0.06, 0.70 + 0.033 + 0.02]])   # 2 cm behind the can's hidden back
    distance, nearest = cyl.closest(behind)
    assert distance[0] == pytest.approx(0.02, abs=0.002)
    assert nearest[0, 2] == pytest.approx(0.733, abs=0.002)


@pytest.mark.parametrize("phrase, shape", [("red can", "cylinder"), ("the blue coffee mug", "cylinder"),
                                           ("green block", "box"), ("a small cube", "box"),
                                           ("yellow ball", "sphere"), ("green bowl", None)])
def test_the_noun_names_the_primitive(phrase, shape):
    assert shape_of(phrase) == shape


def test_grippers_are_never_completed_and_other_nouns_try_every_shape():
    assert shapes_for("yellow gripper") == () and shapes_for("white robot hand") == ()
    assert shapes_for("red thing") == ("cylinder", "box", "sphere")


def test_support_plane_is_found_under_the_objects():
    frame, _ = _render([_hit_cylinder(_rays(), 0.02, 0.70, 0.033, 0.122)], [RED])
    surface = find_support(frame.depth_m, CAM)
    assert surface is not None
    assert surface.canonical.camera_height_m == pytest.approx(TABLE_Y, abs=0.003)
    np.testing.assert_allclose(np.abs(surface.plane.normal), [0.0, 1.0, 0.0], atol=0.01)


# --- the estimator measures to the completed surface ---------------------------------------------

def _can_with_gripper_behind():
    """A red can and a yellow block behind it to the right: the can's closest side is hidden from the camera.

    Can axis at x = 0, z = 0.70 (radius 0.033); the block's nearest corner at x = 0.045, z = 0.72, so the
    true gap is |(0.045, 0.02)| - 0.033 = 16.2 mm, to a point on the can's far side. The visible sides
    are 24.7 mm apart.
    """
    rays = _rays()
    hits = [_hit_box(rays, (0.045, TABLE_Y - 0.10, 0.72), (0.085, TABLE_Y - 0.04, 0.78)),
            _hit_cylinder(rays, 0.0, 0.70, 0.033, 0.122)]
    frame, _ = _render(hits, [YELLOW, RED])
    return frame, float(np.hypot(0.045, 0.02) - 0.033)


def test_gap_to_a_completed_can_recovers_its_hidden_side():
    frame, truth = _can_with_gripper_behind()
    pair = Pair.parse("yellow gripper -> red can")
    [completed] = GeometricEstimator(EstimatorConfig()).estimate(frame, [pair], DistanceKind.GAP)
    [visible] = GeometricEstimator(EstimatorConfig(completion=CompletionConfig(enabled=False))).estimate(
        frame, [pair], DistanceKind.GAP)
    assert completed.surface == "cylinder" and visible.surface == "visible"
    assert completed.distance_m == pytest.approx(truth, abs=0.003)
    assert visible.distance_m > truth + 0.006                          # the visible sides are farther apart
    assert completed.target_point[2] > 0.70                              # on the can's far (hidden) half
    assert abs(completed.distance_m - truth) < 2 * completed.uncertainty_m


def test_a_target_no_primitive_explains_is_measured_on_its_visible_surface():
    rays = _rays()
    # Two touching boxes in one colour: an L-shaped block, neither a cylinder nor one box.
    hits = [_hit_box(rays, (-0.12, TABLE_Y - 0.05, 0.70), (-0.06, TABLE_Y, 0.76)),
            _hit_box(rays, (0.0, TABLE_Y - 0.05, 0.66), (0.10, TABLE_Y, 0.70)),
            _hit_box(rays, (0.0, TABLE_Y - 0.05, 0.70), (0.04, TABLE_Y, 0.80))]
    frame, _ = _render(hits, [YELLOW, RED, RED])
    pair = Pair.parse("yellow gripper -> red thing")
    [e] = GeometricEstimator(EstimatorConfig()).estimate(frame, [pair], DistanceKind.GAP)
    [visible] = GeometricEstimator(EstimatorConfig(completion=CompletionConfig(enabled=False))).estimate(
        frame, [pair], DistanceKind.GAP)
    assert e.valid and e.surface == "visible"
    assert e.distance_m == visible.distance_m
    assert e.distance_m == pytest.approx(0.06, abs=0.008)
