"""Tests of spatialvlm_ros.sim: camera model, depth, segmentation, ground truth, noise, determinism."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from spatialvlm_ros.config import DepthNoiseConfig, SimConfig
from spatialvlm_ros.errors import SimulationError
from spatialvlm_ros.sim import SimFrame, TabletopSim, apply_depth_noise
from spatialvlm_ros.sim.render import GLContext
from spatialvlm_ros.sim.scene import FOOTPRINT, make_layout

SMALL = SimConfig(width=160, height=120, n_frames=8)


@pytest.fixture(scope="module")
def sim() -> TabletopSim:
    with TabletopSim(SMALL) as s:
        yield s


@pytest.fixture(scope="module")
def frames(sim: TabletopSim) -> list[SimFrame]:
    return [sim.render(i) for i in (0, sim.n_frames - 1)]


def _backproject(step: SimFrame, mask: np.ndarray) -> np.ndarray:
    """World points (N, 3) of the masked pixels, from depth, intrinsics and the true camera pose."""
    cam = step.frame.intrinsics
    v, u = np.nonzero(mask)
    z = step.frame.depth_m[v, u].astype(np.float64)
    pts = np.stack([(u - cam.cx) * z / cam.fx, (v - cam.cy) * z / cam.fy, z], axis=1)
    pose = step.truth.camera_pose_world
    return pts @ pose[:3, :3].T + pose[:3, 3]


def test_labels_and_frame_fields(sim: TabletopSim, frames: list[SimFrame]) -> None:
    assert sim.labels == {"yellow gripper": 0, "red can": 1, "blue box": 2, "green ball": 3}
    frame = frames[0].frame
    assert frame.rgb.shape == (120, 160, 3) and frame.rgb.dtype == np.uint8
    assert frame.depth_m.dtype == np.float32 and frame.segmentation.dtype == np.int32
    assert frame.frame_id == "camera_color_optical_frame"
    assert set(np.unique(frame.segmentation)) == {-1, 0, 1, 2, 3}
    assert frames[1].truth.gap_m.keys() == {"red can", "blue box", "green ball"}


def test_intrinsics_from_fovy(sim: TabletopSim) -> None:
    cam = sim.intrinsics
    assert (cam.width, cam.height) == (160, 120)
    assert cam.fy == pytest.approx(60.0 / np.tan(np.deg2rad(SMALL.fovy_deg) / 2))
    assert cam.fx == cam.fy and (cam.cx, cam.cy) == (79.5, 59.5)


def test_true_centres_project_onto_their_segments(sim: TabletopSim, frames: list[SimFrame]) -> None:
    for step in frames:
        for phrase, centre in step.truth.object_positions_cam.items():
            u, v = np.rint(step.frame.intrinsics.project(centre[None])[0]).astype(int)
            assert step.frame.segmentation[v, u] == sim.labels[phrase], phrase


def test_depth_backprojects_onto_the_can_surface(frames: list[SimFrame]) -> None:
    """Depth (as z-depth), intrinsics and camera pose together put every can pixel on the true cylinder."""
    for step in frames:
        pts = _backproject(step, step.frame.segmentation == step.frame.labels["red can"])
        axis = step.truth.object_positions_world["red can"]
        radial = np.linalg.norm(pts[:, :2] - axis[:2], axis=1)
        on_side = np.abs(radial - 0.033) < 0.003
        on_top = np.abs(pts[:, 2] - (axis[2] + 0.061)) < 0.003
        assert len(pts) > 100 and np.all(on_side | on_top)


def test_depth_at_ball_centre_is_analytic_z() -> None:
    """Depth at the ball centre's pixel equals the z of the ray-sphere hit (z-depth, not ray length)."""
    cfg = SimConfig(width=160, height=120, n_frames=2, target="ball", distractors=())
    with TabletopSim(cfg) as s:
        step = s.render(0)
    cam, centre = step.frame.intrinsics, step.truth.object_positions_cam["red ball"]
    u, v = np.rint(cam.project(centre[None])[0])
    ray = np.array([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, 1.0])     # z component 1: t is z-depth
    a, b, c = ray @ ray, -2 * ray @ centre, centre @ centre - 0.035 ** 2
    z_true = (-b - np.sqrt(b * b - 4 * a * c)) / (2 * a)
    assert step.frame.depth_m[int(v), int(u)] == pytest.approx(z_true, abs=0.002)
    assert z_true * np.linalg.norm(ray) - z_true > 0.002       # z-depth and range differ here: the test can tell


@pytest.mark.parametrize("target", ["can", "box", "ball", "bowl", "mug", "bottle", "cone", "wedge"])
def test_gap_falls_linearly_from_start_to_end(target: str) -> None:
    cfg = dataclasses.replace(SMALL, target=target, n_frames=10, start_gap_m=0.25, end_gap_m=0.02)
    with TabletopSim(cfg) as s:
        truths = [s.truth(i) for i in range(s.n_frames)]
    phrase = f"red {target}"
    gaps = np.array([t.gap_m[phrase] for t in truths])
    np.testing.assert_allclose(gaps, np.linspace(0.25, 0.02, 10), atol=1e-5)
    assert np.all(np.diff(gaps) < 0)
    assert all(t.centre_m[phrase] > t.gap_m[phrase] for t in truths)
    np.testing.assert_allclose(s.trajectory[-1], truths[-1].gripper_position_world)


def _point_to_geom(sim: TabletopSim, geom: int, point: np.ndarray) -> float:
    """Analytic distance from a world point to a box or cylinder geom (0 inside)."""
    import mujoco  # here, not at the top: spatialvlm_ros.sim must pick the GL backend before mujoco loads

    model, data = sim.model, sim.data
    local = data.geom_xmat[geom].reshape(3, 3).T @ (point - data.geom_xpos[geom])
    size = model.geom_size[geom]
    if model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_BOX:
        return float(np.linalg.norm(local - np.clip(local, -size, size)))
    assert model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_CYLINDER
    return float(np.hypot(max(np.hypot(local[0], local[1]) - size[0], 0.0), max(abs(local[2]) - size[1], 0.0)))


def test_gap_matches_analytic_sphere_distance() -> None:
    cfg = SimConfig(width=32, height=24, n_frames=5, target="ball", distractors=())
    with TabletopSim(cfg) as s:
        gripper_geoms = [g for g in range(s.model.ngeom) if s.model.geom_bodyid[g] == s.model.body("gripper").id]
        assert len(gripper_geoms) == 4
        for i in range(s.n_frames):
            truth = s.truth(i)
            centre = truth.object_positions_world["red ball"]
            analytic = min(_point_to_geom(s, g, centre) for g in gripper_geoms) - 0.035
            assert truth.gap_m["red ball"] == pytest.approx(analytic, abs=1e-6)
            closest = truth.gap_points_cam["red ball"]
            assert np.linalg.norm(closest[1] - closest[0]) == pytest.approx(analytic, abs=1e-6)


def test_grasp_point_sits_between_the_finger_pads(sim: TabletopSim) -> None:
    sim.truth(0)
    fingers = [sim.model.geom(f"gripper_finger_{k}").id for k in "ab"]
    midpoint = sim.data.geom_xpos[fingers].mean(axis=0)
    np.testing.assert_allclose(midpoint, sim.trajectory[0], atol=1e-9)


def test_colours_read_as_their_names(frames: list[SimFrame]) -> None:
    """HSV hue of the gripper is yellow, of the target red; the table is unsaturated."""
    frame = frames[0].frame
    hsv = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2HSV)                 # OpenCV hue in [0, 180)
    gripper = hsv[frame.segmentation == 0]
    can = hsv[frame.segmentation == 1]
    assert np.all((gripper[:, 0] > 20) & (gripper[:, 0] < 35)) and np.median(gripper[:, 1]) > 150
    assert np.all((can[:, 0] < 8) | (can[:, 0] > 172)) and np.median(can[:, 1]) > 150
    table = hsv[frame.rgb.shape[0] * 3 // 4, :, 1]
    assert np.median(table) < 60


def test_randomised_scenes_are_deterministic_per_seed() -> None:
    noise = DepthNoiseConfig(enabled=True)
    cfgs = [SimConfig(width=64, height=48, n_frames=4, randomise=True, seed=seed, depth_noise=noise)
            for seed in (3, 3, 4)]
    steps = []
    for cfg in cfgs:
        with TabletopSim(cfg) as s:
            steps.append(s.render(2))
    a, b, c = steps
    np.testing.assert_array_equal(a.frame.rgb, b.frame.rgb)
    np.testing.assert_array_equal(a.frame.depth_m, b.frame.depth_m)
    assert a.truth.gap_m == b.truth.gap_m
    assert not np.array_equal(a.frame.rgb, c.frame.rgb)
    assert a.truth.object_positions_world["blue box"].tolist() != c.truth.object_positions_world["blue box"].tolist()


def test_canonical_layout_ignores_the_seed() -> None:
    truths = []
    for seed in (0, 7):
        with TabletopSim(dataclasses.replace(SMALL, seed=seed, n_frames=3)) as s:
            truths.append(s.truth(1))
    np.testing.assert_array_equal(truths[0].gripper_position_world, truths[1].gripper_position_world)


@pytest.mark.parametrize("z", [0.5, 1.0, 2.0])
def test_noise_sigma_grows_with_z_squared(z: float) -> None:
    cfg = DepthNoiseConfig(enabled=True, sigma_at_1m_m=0.002, edge_dropout=0.0)
    noisy = apply_depth_noise(np.full((200, 200), z), cfg, np.random.default_rng(0))
    assert noisy.mean() == pytest.approx(z, abs=1e-3)
    assert noisy.std() == pytest.approx(0.002 * z * z, rel=0.05)


def test_noise_range_limits_and_edge_dropout() -> None:
    cfg = DepthNoiseConfig(enabled=True, sigma_at_1m_m=0.0, edge_dropout=0.5, min_range_m=0.2, max_range_m=3.0)
    depth = np.ones((100, 100))
    depth[:, 50:] = 2.0                                         # a vertical step: columns 49 and 50 are edges
    depth[:10] = 5.0                                            # beyond max range
    depth[-10:] = 0.1                                           # nearer than min range
    noisy = apply_depth_noise(depth, cfg, np.random.default_rng(1))
    assert np.all(noisy[:10] == 0) and np.all(noisy[-10:] == 0)
    middle = noisy[20:80]
    edge = middle[:, 49:51]
    assert np.mean(edge == 0) == pytest.approx(0.5, abs=0.1)
    assert np.all(np.delete(middle, [49, 50], axis=1) > 0)
    np.testing.assert_array_equal(apply_depth_noise(depth, DepthNoiseConfig(), np.random.default_rng(1)),
                                  depth.astype(np.float32))


def test_rendered_noise_zeroes_out_of_range_pixels() -> None:
    noise = DepthNoiseConfig(enabled=True, max_range_m=1.2)
    with TabletopSim(dataclasses.replace(SMALL, n_frames=2, depth_noise=noise)) as s:
        step = s.render(0)
    depth, seg = step.frame.depth_m, step.frame.segmentation
    assert np.all(depth <= 1.2) and np.mean(depth == 0) > 0.2         # the far wall and floor read nothing
    assert np.mean(depth[seg == 1] > 0) > 0.8                           # the can mostly reads


@pytest.mark.parametrize(("override", "match"), [
    ({"target_colour": "teal"}, "unknown colour 'teal'"),
    ({"gripper_colour": "chartreuse"}, "unknown colour 'chartreuse'"),
    ({"target": "banana"}, "unknown object kind 'banana'"),
    ({"distractors": ("blue",)}, "expected '<colour> <kind>'"),
    ({"distractors": ("red can",)}, "must be unique"),
])
def test_bad_scene_raises_simulation_error(override: dict, match: str) -> None:
    with pytest.raises(SimulationError, match=match):
        TabletopSim(dataclasses.replace(SMALL, **override))


def test_step_out_of_range(sim: TabletopSim) -> None:
    with pytest.raises(SimulationError, match="out of range"):
        sim.render(sim.n_frames)


def _assert_same_frame(a: SimFrame, b: SimFrame) -> None:
    np.testing.assert_array_equal(a.frame.rgb, b.frame.rgb)
    np.testing.assert_array_equal(a.frame.depth_m, b.frame.depth_m)
    np.testing.assert_array_equal(a.frame.segmentation, b.frame.segmentation)


RANDOM = SimConfig(width=96, height=72, n_frames=2, randomise=True, seed=5, distractors=("blue bowl", "green ball"))


def test_shared_context_renders_what_an_own_context_renders(sim: TabletopSim) -> None:
    with TabletopSim(RANDOM) as own:
        expected = own.render(1)
    with GLContext(64, 48) as gl:               # smaller than the images: renderers draw in their own buffers
        with TabletopSim(SMALL, gl_context=gl) as other, TabletopSim(RANDOM, gl_context=gl) as shared:
            other.render(0)                      # another scene's objects and framebuffer in the same context
            _assert_same_frame(shared.render(1), expected)
            _assert_same_frame(other.render(0), sim.render(0))


def test_closing_a_sim_leaves_the_shared_context_and_its_other_sims_working() -> None:
    with GLContext(96, 72) as gl:
        keep = TabletopSim(RANDOM, gl_context=gl)
        before = keep.render(1)
        with TabletopSim(SMALL, gl_context=gl) as dropped:
            dropped.render(0)
        assert not gl.closed
        _assert_same_frame(keep.render(1), before)
        with TabletopSim(dataclasses.replace(RANDOM, seed=6), gl_context=gl) as new:    # reuses freed GL ids
            new.render(0)
        _assert_same_frame(keep.render(1), before)
    # Closing the context closed the sim still using it: its GL objects went with the context.
    with pytest.raises(SimulationError, match="after close"):
        keep.render(1)
    with pytest.raises(SimulationError, match="after close"):
        TabletopSim(SMALL, gl_context=gl)


def test_own_contexts_interleaved_stay_correct() -> None:
    configs = [RANDOM, dataclasses.replace(RANDOM, seed=9, target="ball")]
    alone = []
    for cfg in configs:
        with TabletopSim(cfg) as s:
            alone.append([s.render(i) for i in (0, 1)])
    a, b = (TabletopSim(cfg) for cfg in configs)
    with a, b:
        for i in (0, 1):
            _assert_same_frame(a.render(i), alone[0][i])
            _assert_same_frame(b.render(i), alone[1][i])
        a.render(0)                              # a's context is current when b closes:
        b.close()                                # b must free its objects in its own context, not in a's
        _assert_same_frame(a.render(1), alone[0][1])


def test_shadows_and_tessellation_change_only_the_look() -> None:
    """Without shadows the colours change but depth and labels do not; coarse shapes keep depth on the can."""
    with TabletopSim(SMALL) as s:
        shaded = s.render(0)
    with TabletopSim(SMALL, shadows=False) as s:
        flat = s.render(0)
    np.testing.assert_array_equal(flat.frame.depth_m, shaded.frame.depth_m)
    np.testing.assert_array_equal(flat.frame.segmentation, shaded.frame.segmentation)
    assert not np.array_equal(flat.frame.rgb, shaded.frame.rgb)
    with TabletopSim(SMALL, shadows=False, tessellation=(16, 8)) as s:
        coarse = s.render(0)
    assert coarse.truth.gap_m == shaded.truth.gap_m
    pts = _backproject(coarse, coarse.frame.segmentation == coarse.frame.labels["red can"])
    axis = coarse.truth.object_positions_world["red can"]
    on_side = np.abs(np.linalg.norm(pts[:, :2] - axis[:2], axis=1) - 0.033) < 0.003
    on_top = np.abs(pts[:, 2] - (axis[2] + 0.061)) < 0.003
    assert len(pts) > 100 and np.all(on_side | on_top)
    with pytest.raises(SimulationError, match="at least 3 slices"):
        TabletopSim(SMALL, tessellation=(16, 2))


def test_placement_is_deterministic_and_keeps_objects_apart() -> None:
    distractors = ("blue box", "green ball", "yellow bowl", "blue can", "green can")
    cfgs = [SimConfig(randomise=True, seed=seed, distractors=distractors) for seed in (11, 11, 12)]
    a, b, c = (make_layout(cfg) for cfg in cfgs)
    np.testing.assert_array_equal(a.xy, b.xy)
    np.testing.assert_array_equal(a.yaw, b.yaw)
    assert not np.array_equal(a.xy, c.xy)
    for layout in (a, c):
        kinds = [o.kind for o in layout.objects]
        for i in range(len(kinds)):
            for j in range(i):
                assert np.linalg.norm(layout.xy[i] - layout.xy[j]) >= FOOTPRINT[kinds[i]] + FOOTPRINT[kinds[j]]
    # The canonical layout fills its fixed slots in order, whatever the seed.
    canonical = [make_layout(dataclasses.replace(SMALL, seed=seed)) for seed in (0, 3)]
    np.testing.assert_array_equal(canonical[0].xy, canonical[1].xy)
    np.testing.assert_array_equal(canonical[0].xy[1:], [(0.20, 0.14), (0.24, -0.06)])


def test_an_extra_camera_sees_the_same_state_from_its_own_place(sim: TabletopSim, frames: list[SimFrame]) -> None:
    """Camera 1 sits at the main eye plus its offset, looks at the same point, and back-projects onto the can."""
    offset = np.array([0.5, 0.23, 0.05])
    with TabletopSim(SMALL, extra_camera_offsets_m=[offset]) as two:
        assert two.n_cameras == 2
        position = sim.trajectory[sim.n_frames - 1]
        main, side = (two.render_at(position, camera=k) for k in (0, 1))
        # The main camera renders what a sim without the extra one renders.
        _assert_same_frame(main, sim.render_at(position))
        assert (main.frame.frame_id, side.frame.frame_id) == ("camera_color_optical_frame",
                                                              "camera1_color_optical_frame")
        assert side.truth.gap_m == main.truth.gap_m
        np.testing.assert_allclose(side.truth.camera_pose_world[:3, 3], main.truth.camera_pose_world[:3, 3] + offset,
                                   atol=1e-9)
        assert not np.array_equal(side.frame.rgb, main.frame.rgb)
        # Its depth, intrinsics and pose put the can's pixels on the can: the view is geometrically right.
        pts = _backproject(side, side.frame.segmentation == side.frame.labels["red can"])
        axis = side.truth.object_positions_world["red can"]
        assert len(pts) > 50
        assert np.median(np.abs(np.linalg.norm(pts[:, :2] - axis[:2], axis=1) - 0.033)) < 0.003
        # The camera-frame truth is in camera 1's frame: the grasp point maps back to the same world point.
        grasp = side.truth.camera_pose_world @ np.r_[side.truth.gripper_position_cam, 1.0]
        np.testing.assert_allclose(grasp[:3], position, atol=1e-9)
        with pytest.raises(SimulationError, match="camera 2 out of range"):
            two.render_at(position, camera=2)
    with pytest.raises(SimulationError, match="3 finite numbers"):
        TabletopSim(SMALL, extra_camera_offsets_m=[(0.1, np.nan, 0.0)])
    layout = make_layout(SMALL)
    with pytest.raises(SimulationError, match="above or below the point"):
        TabletopSim(SMALL, extra_camera_offsets_m=[layout.camera_look_at + (0.0, 0.0, 0.5) - layout.camera_eye])


def test_a_wrist_camera_rides_on_the_gripper_and_sees_the_hand_and_the_can(sim: TabletopSim) -> None:
    """The wrist camera keeps its place on the gripper as it moves, sees the hand and the can, and is geometric."""
    from spatialvlm_ros.sim.scene import WRIST_CAMERA_POS, gripper_axes
    with TabletopSim(SMALL, wrist_camera=True) as wristed:
        assert wristed.n_cameras == 2
        near, far = sim.trajectory[sim.n_frames - 1], sim.trajectory[0]
        main, wrist = (wristed.render_at(near, camera=k) for k in (0, 1))
        _assert_same_frame(main, sim.render_at(near))         # the main camera's frames do not change
        assert wrist.frame.frame_id == "camera1_color_optical_frame"
        axes = gripper_axes(wristed.layout.approach)
        for position in (near, far):
            pose = wristed.render_at(position, camera=1).truth.camera_pose_world
            np.testing.assert_allclose(pose[:3, 3], position + axes @ WRIST_CAMERA_POS, atol=1e-6)
            # It looks along the fingers, tilted towards their axis (the gripper's z; optical z is forward).
            assert 0.9 < pose[:3, 2] @ axes[:, 2] < 0.99
        # The whole hand is in the lower half, clear of the border; the can is ahead of it and grows as it nears.
        seg = wrist.frame.segmentation
        rows, cols = np.nonzero(seg == 0)
        can = seg == wrist.frame.labels["red can"]
        assert len(rows) > 0.02 * seg.size and rows.mean() > seg.shape[0] / 2
        assert min(rows.min(), cols.min(), seg.shape[0] - 1 - rows.max(), seg.shape[1] - 1 - cols.max()) >= 5
        assert np.nonzero(can)[0].mean() < rows.mean()
        assert can.sum() > 1.2 * (wristed.render_at(far, camera=1).frame.segmentation == seg[can][0]).sum()
        pts = _backproject(wrist, seg == wrist.frame.labels["red can"])
        axis = wrist.truth.object_positions_world["red can"]
        on_side = np.abs(np.linalg.norm(pts[:, :2] - axis[:2], axis=1) - 0.033) < 0.003
        on_top = np.abs(pts[:, 2] - (axis[2] + 0.061)) < 0.003
        assert np.mean(on_side | on_top) > 0.95
    # With physics the camera rides on the free gripper body too.
    with TabletopSim(SMALL, wrist_camera=True, physics=True) as physical:
        assert physical.n_cameras == 2
        assert np.any(physical.render_at(near, camera=1).frame.segmentation == 0)


def test_more_kinds_render_with_their_own_silhouettes_and_stand_on_the_table() -> None:
    """Mugs, bottles and the mesh solids: each seen, each its true height, meshes declared only where used."""
    from spatialvlm_ros.sim import MORE_KINDS
    from spatialvlm_ros.sim.scene import HALF_HEIGHT, TABLE_TOP_Z, build_mjcf, make_layout
    cfg = SimConfig(seed=3, randomise=True, target="mug", distractors=("blue bottle", "green cone", "white wedge"))
    with TabletopSim(cfg) as s:
        step = s.render(0)
        for phrase in ("red mug", "blue bottle", "green cone", "white wedge"):
            kind = phrase.split()[1]
            assert (step.frame.segmentation == step.frame.labels[phrase]).sum() > 30, phrase
            body = s.model.body(f"obj{[o.phrase for o in s.layout.objects].index(phrase)}").id
            geoms = [g for g in range(s.model.ngeom) if s.model.geom_bodyid[g] == body]
            lows, highs = zip(*((s.data.geom_xpos[g][2] - s.model.geom_rbound[g],
                                 s.data.geom_xpos[g][2] + s.model.geom_rbound[g]) for g in geoms))
            # Bounding spheres overshoot; the object's centre is its half height above the table.
            assert s.truth(0).object_positions_world[phrase][2] == pytest.approx(TABLE_TOP_Z + HALF_HEIGHT[kind])
            assert min(lows) <= TABLE_TOP_Z + 0.005 and max(highs) >= TABLE_TOP_Z + 2 * HALF_HEIGHT[kind] - 0.005
    assert set(MORE_KINDS) == {"mug", "bottle", "cone", "wedge"}
    plain = SimConfig(seed=3, randomise=True)
    assert "<mesh" not in build_mjcf(plain, make_layout(plain))     # the old scenes' text is unchanged
    assert build_mjcf(cfg, make_layout(cfg)).count("<mesh ") == 2


def test_an_unknown_kind_names_every_known_one() -> None:
    with pytest.raises(SimulationError, match="unknown object kind 'spoon'.*mug, bottle, cone, wedge"):
        TabletopSim(SimConfig(target="spoon"))
