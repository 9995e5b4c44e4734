"""Lifting: exact extents of ray-cast boxes and cylinders on a table, turned boxes, noisy masks, support snapping."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.synthesis.config import LiftingConfig
from spatialvlm_ros.synthesis.lifting import LiftedObject, fit_support, lift_object, upright_box
from spatialvlm_ros.synthesis.records import Box3D

CAM = CameraIntrinsics.from_fov(320, 240, 58.0)
PITCH = math.radians(30.0)
EYE = np.array([0.0, 0.0, 0.45])                  # world: x right, y forward, z up; the table is z = 0
# Columns: the optical x (right), y (down) and z (forward) axes in the world.
CAM_TO_WORLD = np.array([[1.0, 0.0, 0.0],
                         [0.0, -math.sin(PITCH), math.cos(PITCH)],
                         [0.0, -math.cos(PITCH), -math.sin(PITCH)]])


def _rays() -> np.ndarray:
    v, u = np.mgrid[0:CAM.height, 0:CAM.width].astype(np.float64)
    optical = np.stack([(u - CAM.cx) / CAM.fx, (v - CAM.cy) / CAM.fy, np.ones_like(u)], axis=-1)
    return optical @ CAM_TO_WORLD.T              # world direction per pixel, optical z component 1


def _box_hits(dirs: np.ndarray, centre: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    to_box = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    origin, d = to_box @ (EYE - centre), dirs @ to_box.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - origin) / d, (half - origin) / d
    near = np.max(np.minimum(t1, t2), axis=-1)
    far = np.min(np.maximum(t1, t2), axis=-1)
    return np.where((near <= far) & (near > 0), near, np.inf)


def _cylinder_hits(dirs: np.ndarray, base: np.ndarray, radius: float, height: float) -> np.ndarray:
    o = EYE - base
    a = dirs[..., 0] ** 2 + dirs[..., 1] ** 2
    b = 2 * (o[0] * dirs[..., 0] + o[1] * dirs[..., 1])
    disc = b * b - 4 * a * (o[0] ** 2 + o[1] ** 2 - radius ** 2)
    with np.errstate(invalid="ignore"):
        side = (-b - np.sqrt(disc)) / (2 * a)
    z = o[2] + side * dirs[..., 2]
    side = np.where((disc >= 0) & (side > 0) & (z >= 0) & (z <= height), side, np.inf)
    cap = (height - o[2]) / dirs[..., 2]
    xy = o[:2] + cap[..., None] * dirs[..., :2]
    cap = np.where((cap > 0) & ((xy ** 2).sum(-1) <= radius ** 2), cap, np.inf)
    return np.minimum(side, cap)


def render(shape: str, yaw: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, ...]:
    """Depth (optical z, metres), the object's mask and the table's mask of one object on a table."""
    dirs = _rays()
    table = np.where(dirs[..., 2] < 0, -EYE[2] / dirs[..., 2], np.inf)
    move = np.array([*shift, 0.0])
    if shape == "box":                             # 9 x 6 cm footprint, 5 cm tall, turned by yaw
        hit = _box_hits(dirs, np.array([0.02, 0.75, 0.025]) + move, np.array([0.03, 0.045, 0.025]), yaw)
    else:                                          # a can: radius 3.3 cm, 12.2 cm tall
        hit = _cylinder_hits(dirs, np.array([-0.03, 0.7, 0.0]) + move, 0.033, 0.122)
    obj = hit < table
    depth = np.where(obj, hit, table).astype(np.float32)   # t along a ray whose optical z is 1 = depth
    return depth, obj, ~obj & np.isfinite(table)


TRUE_SIDES = {"box": (0.06, 0.09, 0.05), "can": (0.066, 0.066, 0.122)}


def lift(depth: np.ndarray, mask: np.ndarray, support_mask: np.ndarray,
         cfg: LiftingConfig = LiftingConfig()) -> LiftedObject:
    rng = np.random.default_rng(0)
    support = fit_support(depth, support_mask, CAM, cfg, rng)
    assert support is not None
    lifted = lift_object(depth, mask, CAM, support.frame.transform, support, cfg)
    assert lifted is not None
    return lifted


def test_upright_box_of_a_turned_box_cloud_gives_its_own_sides() -> None:
    corners = np.array([[x, y, z] for x in (-0.03, 0.03) for y in (-0.045, 0.045) for z in (0.0, 0.05)])
    yaw = math.radians(35.0)
    turn = np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0, 0, 1.0]])
    inside = np.random.default_rng(0).uniform(-1, 1, (500, 3)) * [0.03, 0.045, 0.025] + [0, 0, 0.025]
    box = upright_box(np.vstack([corners, inside]) @ turn.T + [0.8, -0.1, 0.0])
    assert (box.depth_m, box.width_m, box.height_m) == pytest.approx((0.06, 0.09, 0.05), abs=1e-5)
    assert box.centre_m == pytest.approx((0.8, -0.1, 0.025), abs=1e-5)
    # The width side is turned 35 degrees from the y axis; the depth side as much from x.
    assert box.yaw_rad == pytest.approx(yaw, abs=1e-4)
    assert box.gap_m(box) == 0.0
    aabb = box.upper_m - box.lower_m
    assert aabb[1] == pytest.approx(0.09 * math.cos(yaw) + 0.06 * math.sin(yaw), abs=1e-5)


@pytest.mark.parametrize("shape,yaw", [("box", 0.0), ("box", math.radians(30)), ("box", math.radians(-60)),
                                       ("can", 0.0)])
def test_ray_cast_objects_give_their_true_extents(shape: str, yaw: float) -> None:
    # Sub-pixel placements: one image is off by up to a pixel (where the grid falls), the mean is not.
    errors = []
    for k in range(5):
        depth, mask, support = render(shape, yaw, (0.0037 * k, 0.0051 * k))
        lifted = lift(depth, mask, support)
        box = lifted.box
        assert box.bottom_m == 0.0 and lifted.on_support
        assert lifted.border_gap_px > 0 and lifted.depth_coverage == 1.0 and lifted.fragment_ratio == 0.0
        errors.append(np.subtract((box.depth_m, box.width_m, box.height_m), TRUE_SIDES[shape]))
    footprint = 0.85 / CAM.fx                      # one pixel at the object, metres (~4 mm)
    mean, worst = np.mean(errors, axis=0) / footprint, np.max(np.abs(errors), axis=0) / footprint
    # Along the view a pixel spans two footprints of the top face (seen at 28 degrees): looser there. A can's
    # hidden back half leaves its depth short: not checked.
    checked = slice(0, 3) if shape == "box" else slice(1, 3)
    assert np.all(np.abs(mean[checked]) <= 1.0) and np.all(worst[checked] <= 1.3), (mean, worst)
    assert abs(mean[1]) <= 0.6 and abs(mean[2]) <= 0.3, "width and height within a fraction of a pixel"


@pytest.mark.parametrize("grow", [-2, -1, 1, 2])
def test_eroded_and_bleeding_masks_give_the_clean_extents(grow: int) -> None:
    depth, mask, support = render("box", math.radians(30))
    clean = lift(depth, mask, support).box
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(grow) + 1, 2 * abs(grow) + 1))
    noisy_mask = (cv2.dilate if grow > 0 else cv2.erode)(mask.astype(np.uint8), kernel) > 0
    noisy = lift(depth, noisy_mask, support).box
    footprint = 0.85 / CAM.fx
    for side in ("width_m", "depth_m", "height_m"):
        assert getattr(noisy, side) == pytest.approx(getattr(clean, side), abs=0.6 * footprint), side


def test_without_growth_an_eroded_mask_is_short() -> None:
    depth, mask, support = render("box")
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    grown = lift(depth, eroded, support).box
    fixed = lift(depth, eroded, support, LiftingConfig(grow_px=0)).box
    assert fixed.width_m < grown.width_m - 0.005


def test_masks_never_grow_into_pixels_another_detection_claims() -> None:
    depth, mask, support = render("box")
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    rng = np.random.default_rng(0)
    s = fit_support(depth, support, CAM, LiftingConfig(), rng)
    free = lift_object(depth, eroded, CAM, s.frame.transform, s, LiftingConfig())
    blocked = lift_object(depth, eroded, CAM, s.frame.transform, s, LiftingConfig(), claimed=mask & ~eroded)
    assert blocked.n_points == eroded.sum() < free.n_points


def test_a_floating_object_is_not_snapped_to_the_table() -> None:
    depth, mask, support = render("box")
    lifted = lift(depth, mask, support)
    raised = np.where(mask, depth - 0.08, depth).astype(np.float32)    # 8 cm nearer: lifted off the table
    floating = lift(raised, mask, support)
    assert lifted.on_support and not floating.on_support and floating.box.bottom_m > 0.02


def test_an_object_cut_by_the_image_border_touches_it() -> None:
    depth, mask, support = render("can")
    assert lift(depth, mask, support).border_gap_px > 0
    cols = np.flatnonzero(mask.any(axis=0))
    shift = (cols[0] + cols[-1]) // 2               # move the can half out of the image, to the left
    moved_depth, moved_mask = np.zeros_like(depth), np.zeros_like(mask)
    moved_depth[:, :-shift], moved_mask[:, :-shift] = depth[:, shift:], mask[:, shift:]
    lifted = lift_object(moved_depth, moved_mask, CAM, np.eye(4), None, LiftingConfig())
    assert lifted is not None and lifted.border_gap_px == 0


def test_box_gap_of_turned_boxes_is_exact() -> None:
    a = Box3D(centre_m=(0.0, 0.0, 0.1), depth_m=0.2, width_m=0.2, height_m=0.2)
    b = Box3D(centre_m=(0.5, 0.0, 0.1), depth_m=0.2, width_m=0.2, height_m=0.2, yaw_rad=math.pi / 4)
    assert a.gap_m(b) == pytest.approx(0.4 - 0.1 * math.sqrt(2))
    above = Box3D(centre_m=(0.5, 0.0, 0.6), depth_m=0.2, width_m=0.2, height_m=0.2)
    assert a.gap_m(above) == pytest.approx(math.hypot(0.3, 0.3))
