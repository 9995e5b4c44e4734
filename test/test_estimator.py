"""The geometric estimator on analytically ray-cast RGB-D scenes."""

import re
import subprocess
import sys
from dataclasses import dataclass, replace

import numpy as np
import pytest

from spatialvlm_ros.config import EstimatorConfig
from spatialvlm_ros.estimation import build_estimator, loads_models, preflight_estimator
from spatialvlm_ros.estimation.geometric import GeometricEstimator
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.perception.grounding import ColourPromptGrounder
from spatialvlm_ros.types import DistanceKind, NoEstimateReason, Pair

CAM = CameraIntrinsics.from_fov(640, 480, 58.0)
TABLE_Y = 0.25          # table plane 0.25 m below the optical centre (optical y points down)
WALL_Z = 2.0            # back wall
YELLOW, RED, GREEN, GREY = (235, 205, 25), (205, 30, 25), (30, 170, 40), (140, 135, 130)
PAIR = Pair.parse("yellow gripper -> red can")


@dataclass(frozen=True)
class Box:
    lower: tuple[float, float, float]
    upper: tuple[float, float, float]
    rgb: tuple[int, int, int]

    def hit(self, rays):
        """Depth (= ray parameter, rays have z = 1) of the first hit, inf on a miss: slab method."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = np.asarray(self.lower) / rays, np.asarray(self.upper) / rays
        near = np.minimum(t0, t1).max(axis=-1)
        far = np.maximum(t0, t1).min(axis=-1)
        return np.where((near <= far) & (near > 0), near, np.inf)


@dataclass(frozen=True)
class Sphere:
    centre: tuple[float, float, float]
    radius: float
    rgb: tuple[int, int, int]

    def hit(self, rays):
        c = np.asarray(self.centre)
        a, b = np.einsum("...i,...i", rays, rays), rays @ c
        disc = b * b - a * (c @ c - self.radius ** 2)
        with np.errstate(invalid="ignore"):
            t = (b - np.sqrt(disc)) / a
        return np.where(disc >= 0, t, np.inf)


# Objects rest on the table, side by side in front of the camera, so their closest points are visible.
SCENES = {
    "boxes": (Box((-0.12, 0.17, 0.70), (-0.03, TABLE_Y, 0.78), YELLOW),
              Box((0.02, 0.15, 0.70), (0.10, TABLE_Y, 0.80), RED), 0.05),
    "spheres": (Sphere((-0.09, TABLE_Y - 0.04, 0.75), 0.04, YELLOW),
                Sphere((0.05, TABLE_Y - 0.05, 0.75), 0.05, RED), 0.14 - 0.09),
}


def render(objects, stamp_ns=0):
    """Ray-cast a table, a back wall and ``objects``: RGB, depth in metres (z), segmentation ids."""
    u, v = np.meshgrid(np.arange(CAM.width), np.arange(CAM.height))
    rays = np.stack([(u - CAM.cx) / CAM.fx, (v - CAM.cy) / CAM.fy, np.ones(u.shape)], axis=-1)
    with np.errstate(divide="ignore"):
        table = np.where(rays[..., 1] > 0, TABLE_Y / rays[..., 1], np.inf)
    depths = np.stack([np.full(u.shape, WALL_Z), table] + [o.hit(rays) for o in objects])
    ids = np.argmin(depths, axis=0)
    colours = np.array([GREY, GREY] + [o.rgb for o in objects], np.uint8)
    return Frame(rgb=colours[ids], intrinsics=CAM, depth_m=depths.min(axis=0).astype(np.float32),
                 stamp_ns=stamp_ns, segmentation=(ids - 2).astype(np.int32),
                 labels={"yellow gripper": 0, "red can": 1})


@pytest.fixture(scope="module")
def frames():
    return {name: render(scene[:2], stamp_ns=123) for name, scene in SCENES.items()}


@pytest.mark.parametrize("grounding", ["colour_prompt", "sim_segmentation"])
@pytest.mark.parametrize("scene", sorted(SCENES))
def test_gap_matches_the_analytic_scene(frames, scene, grounding):
    est = build_estimator(EstimatorConfig(grounding=grounding))
    [e] = est.estimate(frames[scene], [PAIR], DistanceKind.GAP)
    assert e.valid and e.reason is None
    assert e.distance_m == pytest.approx(SCENES[scene][2], abs=5e-3)
    assert 0 < e.uncertainty_m < 0.01
    assert np.linalg.norm(np.subtract(e.target_point, e.gripper_point)) == pytest.approx(e.distance_m)
    assert e.gripper_point[0] < e.target_point[0]                       # gripper on the left
    assert (e.stamp_ns, e.frame_id) == (123, "camera_color_optical_frame")
    assert e.latency_ms > 0


def test_centre_distance_of_spheres(frames):
    [e] = GeometricEstimator(EstimatorConfig()).estimate(frames["spheres"], [PAIR], DistanceKind.CENTRE)
    # Visible-surface centroids sit in front of the sphere centres, so only x, y separation is exact.
    assert e.valid and e.distance_m == pytest.approx(np.hypot(0.14, 0.01), abs=5e-3)
    assert e.gripper_point[2] < 0.75 and e.target_point[2] < 0.75
    assert np.isfinite(e.uncertainty_m)


def test_centre_distance_survives_flying_pixels(frames):
    """Silhouette pixels read depths between the object and the wall; the robust cloud ignores them."""
    clean = frames["boxes"]
    red = clean.segmentation == 1
    edge = np.zeros_like(red)
    for shift in (1, 2, -1, -2):                                           # 2-px bands, left and right
        edge |= red & ~np.roll(red, shift, axis=1)
    depth = clean.depth_m.copy()
    depth[edge] = np.random.default_rng(0).uniform(0.9, WALL_Z - 0.05, edge.sum())
    noisy = replace(clean, depth_m=depth)
    robust, naive = (GeometricEstimator(EstimatorConfig(outlier_k=k)) for k in (3.0, 1e3))
    [reference] = robust.estimate(clean, [PAIR], DistanceKind.CENTRE)
    assert robust.estimate(noisy, [PAIR], DistanceKind.CENTRE)[0].distance_m == pytest.approx(
        reference.distance_m, abs=2e-3)
    assert abs(naive.estimate(noisy, [PAIR], DistanceKind.CENTRE)[0].distance_m - reference.distance_m) > 0.01


def test_estimates_are_deterministic(frames):
    est = GeometricEstimator(EstimatorConfig(max_points=500))
    first, second = (est.estimate(frames["boxes"], [PAIR], "gap")[0] for _ in range(2))
    assert (first.distance_m, first.gripper_point) == (second.distance_m, second.gripper_point)
    assert first.kind is DistanceKind.GAP


def _paint(frame, rows, cols, rgb):
    img = frame.rgb.copy()
    img[rows, cols] = rgb
    return replace(frame, rgb=img)


def _depth_on(frame, mask, value):
    depth = frame.depth_m.copy()
    depth[mask] = value
    return replace(frame, depth_m=depth)


def _red(frame):
    return frame.segmentation == 1


@pytest.mark.parametrize("make_frame, pair, reason, detail", [
    (lambda f: f, "yellow gripper -> green ball", NoEstimateReason.NOT_VISIBLE,
     "'green ball' not visible: 0 px < min_pixels 30"),
    (lambda f: _paint(f, slice(10, 14), slice(10, 14), GREEN), "yellow gripper -> green ball",
     NoEstimateReason.NOT_VISIBLE, "'green ball' not visible: 16 px < min_pixels 30"),
    (lambda f: _depth_on(f, _red(f), np.nan), str(PAIR), NoEstimateReason.NO_DEPTH, "'red can': only 0 of"),
    (lambda f: _depth_on(f, _red(f), 0.0), str(PAIR), NoEstimateReason.NO_DEPTH, "'red can': only 0 of"),
    (lambda f: _depth_on(f, _red(f), 9.0), str(PAIR), NoEstimateReason.NO_DEPTH, r"in \[0.1, 5.0\] m"),
    (lambda f: replace(f, depth_m=None), str(PAIR), NoEstimateReason.NO_DEPTH, "no depth image"),
    (lambda f: f, "gripper -> red can", NoEstimateReason.UNKNOWN_PHRASE, "name a colour"),
])
def test_invalid_estimates_carry_reason_and_detail(frames, make_frame, pair, reason, detail):
    frame = make_frame(frames["boxes"])
    [e] = GeometricEstimator(EstimatorConfig()).estimate(frame, [Pair.parse(pair)], DistanceKind.GAP)
    assert not e.valid and e.reason is reason
    assert np.isnan(e.distance_m) and np.isnan(e.uncertainty_m)
    assert re.search(detail, e.detail), e.detail
    assert e.stamp_ns == 123 and e.frame_id == frame.frame_id


class CountingGrounder(ColourPromptGrounder):
    """Counts calls per phrase."""

    def __init__(self):
        super().__init__()
        self.calls = {}

    def ground(self, frame, phrase):
        self.calls[phrase] = self.calls.get(phrase, 0) + 1
        return super().ground(frame, phrase)


def test_each_phrase_is_grounded_once_and_pairs_fail_independently(frames):
    grounder = CountingGrounder()
    est = GeometricEstimator(EstimatorConfig(), grounder=grounder)
    pairs = [PAIR, Pair.parse("yellow gripper -> green ball"), Pair.parse("red can -> yellow gripper")]
    gap, missing, reverse = est.estimate(frames["boxes"], pairs, DistanceKind.GAP)
    assert grounder.calls == {"yellow gripper": 1, "red can": 1, "green ball": 1}
    assert gap.valid and reverse.valid and not missing.valid
    assert reverse.distance_m == pytest.approx(gap.distance_m)
    assert missing.reason is NoEstimateReason.NOT_VISIBLE


class WrongSizeGrounder:
    """A broken expert: masks of the wrong size."""

    name = "wrong_size"

    def ground(self, frame, phrase):
        return np.ones((100, 100), bool)


def test_bad_mask_from_a_grounder_is_flagged_not_raised(frames):
    [e] = GeometricEstimator(EstimatorConfig(), grounder=WrongSizeGrounder()).estimate(
        frames["boxes"], [PAIR], DistanceKind.GAP)
    assert e.reason is NoEstimateReason.BAD_INPUT
    assert "'yellow gripper': mask shape (100, 100)" in e.detail


def test_build_estimator_gives_the_geometric_backend():
    est = build_estimator(EstimatorConfig(backend="geometric"))
    assert isinstance(est, GeometricEstimator) and est.name == "geometric"


def test_a_model_build_is_tried_in_a_child_process_that_reports_why_it_fails(tmp_path):
    # The real compact weights build in the child; a weights folder that does not exist is refused with the
    # child's reason, and the process that asked never imports torch either way.
    from spatialvlm_ros.config import VLMConfig
    script = (
        "import sys\n"
        "from spatialvlm_ros.config import CompactVLMConfig, EstimatorConfig, VLMConfig\n"
        "from spatialvlm_ros.estimation import loads_models, preflight_estimator\n"
        "good = EstimatorConfig(backend='vlm')\n"
        f"missing = {str(tmp_path / 'none')!r}\n"
        "bad = EstimatorConfig(backend='vlm', vlm=VLMConfig(compact=CompactVLMConfig(weights=missing)))\n"
        "assert loads_models(good) and loads_models(bad)\n"
        "print(repr(preflight_estimator(good)))\n"
        "print(preflight_estimator(bad))\n"
        "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    good, bad, torch_imported = done.stdout.strip().splitlines()
    assert good == "''"
    assert str(tmp_path / "none") in bad
    assert torch_imported == "False"
    assert not loads_models(EstimatorConfig(backend="vlm", vlm=VLMConfig(backend="openai")))


def test_a_build_check_that_outlives_its_timeout_is_a_refusal():
    reason = preflight_estimator(EstimatorConfig(grounding="open_vocab"), timeout_s=0.01)
    assert reason.startswith("TimeoutError: the estimator did not build within 0 s")


def test_a_build_check_that_dies_without_a_reason_is_a_refusal(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")          # exits 1 and says nothing
    assert preflight_estimator(EstimatorConfig(grounding="open_vocab")) == "the build check exited with 1: "
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert preflight_estimator(EstimatorConfig(grounding="open_vocab")).startswith("FileNotFoundError: cannot start")
