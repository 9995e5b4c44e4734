"""The tabletop simulator: a mocap gripper approaching a target object, seen by an RGB-D camera.

Reproduces the SpatialVLM robot demo (a yellow gripper closing in on a red can) with exact ground
truth for every frame, so distance estimators and reward shaping can be checked against it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import mujoco
import numpy as np

from spatialvlm_ros.config import SimConfig
from spatialvlm_ros.errors import SimulationError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.sim.appearance import Appearance
from spatialvlm_ros.sim.noise import apply_depth_noise
from spatialvlm_ros.sim.render import GLContext, RgbdRenderer
from spatialvlm_ros.sim.scene import (GRIPPER_BODY, GRIPPER_DRIVER_BODY, WRIST_CAMERA_NAME, build_mjcf, camera_name,
                                      gripper_axes, gripper_opening, make_layout)

logger = logging.getLogger(__name__)

OPTICAL_FRAME_ID = "camera_color_optical_frame"
#: Default spacing of ``stamp_ns`` between trajectory steps (30 fps) when the caller gives no stamp.
FRAME_PERIOD_NS = 33_333_333
#: MuJoCo camera axes (x right, y up, looking along -z) -> optical axes (x right, y down, z forward).
_MJ_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])
_GAP_TOL_M = 1e-7                    # trajectory solver tolerance on the gap
# Sphere tracing converges slowly along a line that grazes a concave surface (a bowl's rim): 500 steps may
# end a fraction of a micrometre short of the tolerance, which is still far below anything measured.
_GAP_ACCEPT_M = 1e-5
_DIST_MAX_M = 10.0                   # mj_geomDistance search radius; larger than the scene
_WOBBLE = (0.06, 0.03)               # lateral and vertical wobble of the approach line, radians


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """Exact geometry of one trajectory step.

    The gripper's position is its *grasp point*: the centre of the region between the two finger pads.
    An object's position is its body centre (a can's axis midpoint, a ball's centre, a box's centre, a
    bowl's centre at half its height). Keys of the dicts are object phrases (``"red can"``).

    Attributes:
        gap_m: closest surface-to-surface distance from the gripper (any of its geoms) to each object, metres
            (negative if they interpenetrate).
        centre_m: grasp point to object centre distance, metres.
        gap_points_cam: (2, 3) closest points per object, row 0 on the gripper, row 1 on the object, optical frame.
        gripper_position_cam: (3,) grasp point, camera optical frame (x right, y down, z forward), metres.
        object_positions_cam: (3,) object centres, optical frame, metres.
        gripper_position_world: (3,) grasp point, world frame (z up, table top at z = 0.75), metres.
        object_positions_world: (3,) object centres, world frame, metres.
        camera_pose_world: (4, 4) pose of the optical frame in the world (maps optical points to world).
        gripper_pose_cam: (4, 4) the gripper's grasp frame (origin = grasp point, z = approach, y = opening;
            the ``sim`` gripper model's convention) in the camera optical frame.
    """

    gap_m: Mapping[str, float]
    centre_m: Mapping[str, float]
    gap_points_cam: Mapping[str, np.ndarray]
    gripper_position_cam: np.ndarray
    object_positions_cam: Mapping[str, np.ndarray]
    gripper_position_world: np.ndarray
    object_positions_world: Mapping[str, np.ndarray]
    camera_pose_world: np.ndarray
    gripper_pose_cam: np.ndarray


@dataclass(frozen=True, eq=False)
class SimFrame:
    """One rendered trajectory step: the camera frame an estimator sees plus the truth behind it."""

    index: int
    frame: Frame
    truth: GroundTruth


class TabletopSim:
    """MuJoCo tabletop scene with a scripted gripper approach, rendered as RGB-D + segmentation.

    Kinematics only (no physics step): the gripper is a mocap body placed on a precomputed path whose
    gripper-to-target gap falls linearly from ``cfg.start_gap_m`` to ``cfg.end_gap_m`` (exactly, solved
    with ``mj_geomDistance``), along a line from the upper left with a slight wobble.

    Rendering is offscreen OpenGL; importing :mod:`spatialvlm_ros.sim` defaults ``MUJOCO_GL`` to
    ``osmesa`` (CPU), set ``MUJOCO_GL=egl`` before the import to use a GPU.

    Args:
        config: scene, camera, trajectory and noise settings.
        gl_context: an OpenGL context shared with other simulators (one per worker when building many
            scenes: creating a context and its first frame cost more than a whole frame); :meth:`close`
            leaves it open. Default: a context of the simulator's own, freed by :meth:`close`.
        shadows: draw the key light's shadows; off halves a frame's cost on CPU rendering.
        tessellation: (slices, stacks) of the drawn round shapes, see :func:`~spatialvlm_ros.sim.scene.build_mjcf`;
            default MuJoCo's (28, 16). The ground truth uses the exact shapes either way.
        physics: a free target and a dynamic gripper welded to a mocap driver (see
            :func:`~spatialvlm_ros.sim.scene.build_mjcf`'s ``free_target``), stepped with
            :meth:`reset_physics` / :meth:`step_physics`; the ground truth follows the target where it is.
            Default False: the kinematic scene, unchanged.
        appearance: a randomised look (:mod:`spatialvlm_ros.sim.appearance`; its sensor damage is the
            caller's to apply). Default None: the plain look.
        extra_camera_offsets_m: more cameras, each at the main camera's eye plus this (x, y, z) offset, world
            metres, looking at the same point (:func:`~spatialvlm_ros.sim.scene.build_mjcf`); rendered with
            ``render_at(..., camera=k)``, k from 1. Default none.
        wrist_camera: a camera fixed to the gripper (:data:`~spatialvlm_ros.sim.scene.WRIST_CAMERA_POS`), the
            last one (``camera=n_cameras - 1``); it moves with the gripper. Default False.

    Raises:
        SimulationError: unknown colour or kind, objects that do not fit, no OpenGL context, ``gl_context``
            already closed.

    Example:
        >>> from spatialvlm_ros.config import SimConfig
        >>> with TabletopSim(SimConfig(width=64, height=48, n_frames=3)) as sim:
        ...     step = sim.render(2)
        >>> sorted(step.frame.labels.items(), key=lambda kv: kv[1])[:2]
        [('yellow gripper', 0), ('red can', 1)]
        >>> round(step.truth.gap_m["red can"], 4)
        0.01
    """

    def __init__(self, config: SimConfig, *, gl_context: GLContext | None = None, shadows: bool = True,
                 tessellation: tuple[int, int] | None = None, physics: bool = False,
                 appearance: Appearance | None = None,
                 extra_camera_offsets_m: Sequence[Sequence[float]] = (), wrist_camera: bool = False) -> None:
        self.config = config
        self.physics = physics
        self.layout = make_layout(config)
        self.gripper_opening_m = gripper_opening(config)
        self._xml = build_mjcf(config, self.layout, tessellation=tessellation, free_target=physics,
                               appearance=appearance, extra_camera_offsets_m=extra_camera_offsets_m,
                               wrist_camera=wrist_camera)
        try:
            self.model = mujoco.MjModel.from_xml_string(self._xml)
        except ValueError as err:
            raise SimulationError(f"MuJoCo rejected the generated scene: {err}") from err
        self.data = mujoco.MjData(self.model)

        gripper_body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, GRIPPER_BODY)
        self._gripper_body = gripper_body
        driver = GRIPPER_DRIVER_BODY if physics else GRIPPER_BODY
        self._mocap = int(self.model.body_mocapid[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, driver)])
        self._camera_names = [camera_name(k) for k in range(1 + len(extra_camera_offsets_m))]
        self._camera_names += [WRIST_CAMERA_NAME] if wrist_camera else []
        self._cams = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, n) for n in self._camera_names]
        self.gripper_label = f"{config.gripper_colour} gripper"
        self._phrases = [o.phrase for o in self.layout.objects]
        self._labels = {self.gripper_label: 0, **{p: i + 1 for i, p in enumerate(self._phrases)}}

        # geom id -> object id (0 gripper, i + 1 object i, -1 scenery): the segmentation labels.
        body_object = np.full(self.model.nbody, -1, dtype=np.int32)
        body_object[gripper_body] = 0
        for i in range(len(self._phrases)):
            body_object[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, f"obj{i}")] = i + 1
        self._geom_object = body_object[self.model.geom_bodyid]
        self._gripper_geoms = np.flatnonzero(self._geom_object == 0)
        self._scenery_geoms = np.flatnonzero(self._geom_object == -1)
        self._object_geoms = [np.flatnonzero(self._geom_object == i + 1) for i in range(len(self._phrases))]
        self._object_centres = np.stack([self.layout.centre(i) for i in range(len(self._phrases))])
        self._target_body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "obj0")

        self._gripper_axes = gripper_axes(self.layout.approach)
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self._gripper_axes.reshape(-1))
        self.data.mocap_quat[self._mocap] = quat
        if physics:
            self._gripper_qpos = int(self.model.jnt_qposadr[self.model.body_jntadr[gripper_body]])
            self._gripper_dof = int(self.model.jnt_dofadr[self.model.body_jntadr[gripper_body]])
            self._target_qpos = int(self.model.jnt_qposadr[self.model.body_jntadr[self._target_body]])
            self._target_dof = int(self.model.jnt_dofadr[self.model.body_jntadr[self._target_body]])
            self.data.qpos[self._gripper_qpos + 3:self._gripper_qpos + 7] = quat
        self._trajectory = self._solve_trajectory()

        self._intrinsics = CameraIntrinsics.from_fov(config.width, config.height,
                                                     float(self.model.cam_fovy[self._cams[0]]))
        self._warn_if_out_of_view()
        self._renderers = [RgbdRenderer(self.model, name, config.width, config.height, self._geom_object,
                                        gl_context=gl_context, shadows=shadows) for name in self._camera_names]
        logger.info("tabletop sim: %s, %d frames, gap %.3f -> %.3f m, %dx%d", list(self._labels), config.n_frames,
                    config.start_gap_m, config.end_gap_m, config.width, config.height)

    # ------------------------------------------------------------------ properties

    @property
    def intrinsics(self) -> CameraIntrinsics:
        """Exact pinhole model of the rendered images (square pixels, centred principal point, MuJoCo fovy)."""
        return self._intrinsics

    @property
    def labels(self) -> dict[str, int]:
        """Phrase -> segmentation id: the gripper is 0, the target 1, distractors 2, 3, ..."""
        return dict(self._labels)

    @property
    def target_label(self) -> str:
        """Phrase of the target object (``"red can"``)."""
        return self._phrases[0]

    @property
    def n_frames(self) -> int:
        """Number of trajectory steps."""
        return self.config.n_frames

    @property
    def trajectory(self) -> np.ndarray:
        """(n_frames, 3) world positions of the gripper's grasp point along the approach (a copy)."""
        return self._trajectory.copy()

    @property
    def mjcf(self) -> str:
        """The generated MJCF text (for inspection or the MuJoCo viewer)."""
        return self._xml

    # ------------------------------------------------------------------ geometry

    def _set_gripper(self, position_world: np.ndarray) -> None:
        self.data.mocap_pos[self._mocap] = position_world
        if self.physics:   # the gripper body itself is free: place it (its orientation stays as it is)
            self.data.qpos[self._gripper_qpos:self._gripper_qpos + 3] = position_world
        # Kinematics only: body/geom poses, then camera and light poses (which mj_kinematics leaves out).
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def _gap(self, obj: int, fromto: np.ndarray | None = None) -> float:
        """Min signed distance between any gripper geom and any geom of object ``obj`` (current state)."""
        return self._geoms_gap(self._gripper_geoms, self._object_geoms[obj], fromto)

    def object_gap(self, a: str, b: str) -> float:
        """Exact surface-to-surface gap between the objects named ``a`` and ``b`` (their phrases), metres.

        Raises:
            SimulationError: a phrase that names no object of the scene.
        """
        try:
            ia, ib = self._phrases.index(a), self._phrases.index(b)
        except ValueError as err:
            raise SimulationError(f"no object {a!r} or {b!r}; objects: {self._phrases}") from err
        return self._geoms_gap(self._object_geoms[ia], self._object_geoms[ib])

    def _geoms_gap(self, geoms_a: np.ndarray, geoms_b: np.ndarray, fromto: np.ndarray | None = None) -> float:
        best = np.inf
        pair = np.empty(6)
        for g1 in geoms_a:
            for g2 in geoms_b:
                d = mujoco.mj_geomDistance(self.model, self.data, int(g1), int(g2), _DIST_MAX_M, pair)
                if d < best:
                    best = d
                    if fromto is not None:
                        fromto[:] = pair
        return float(best)

    def _solve_trajectory(self) -> np.ndarray:
        """Grasp-point positions whose gap to the target is exactly linear in the step index.

        Each step moves along a line from the target centre (direction = approach with a smooth wobble);
        the distance along it is found by sphere tracing from outside: the gap is 1-Lipschitz in that
        distance, so stepping in by (gap - wanted) never passes the outermost solution.
        """
        cfg = self.config
        axes = gripper_axes(self.layout.approach)
        t = np.linspace(0.0, 1.0, cfg.n_frames)
        gaps = cfg.start_gap_m + (cfg.end_gap_m - cfg.start_gap_m) * t
        wobble = (_WOBBLE[0] * np.sin(3 * np.pi * t)[:, None] * axes[:, 0]
                  + _WOBBLE[1] * np.sin(2 * np.pi * t + 0.5)[:, None] * axes[:, 1])
        directions = self.layout.approach + wobble
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        return np.stack([self.position_at_gap(direction, wanted) for wanted, direction in zip(gaps, directions)])

    def position_at_gap(self, direction: np.ndarray, gap_m: float) -> np.ndarray:
        """The grasp point on the ray from the target's centre along ``direction`` (3,) whose gap is ``gap_m``.

        The gripper keeps its orientation, so off its approach line (``direction`` anywhere) it is not aimed
        at the target. Leaves the gripper there. World metres.

        Raises:
            SimulationError: ``direction`` is not a finite non-zero 3-vector, ``gap_m`` is not finite, or the solver
                did not converge (a ray that grazes the target).
        """
        direction = np.asarray(direction, dtype=np.float64)
        norm = float(np.linalg.norm(direction)) if direction.shape == (3,) else 0.0
        if not (np.isfinite(norm) and norm > 0 and np.isfinite(gap_m)):
            raise SimulationError(f"position_at_gap needs a finite non-zero direction (3,) and a finite gap, got "
                                  f"{direction!r}, {gap_m!r}")
        direction = direction / norm
        centre = self._object_centres[0]
        s = gap_m + 0.5                           # the gripper and any object fit in 0.5 m: start outside
        for _ in range(500):
            self._set_gripper(centre + s * direction)
            error = self._gap(0) - gap_m
            if abs(error) < _GAP_TOL_M:
                break
            s -= error
        else:
            if not abs(error) <= _GAP_ACCEPT_M:
                raise SimulationError(f"could not place the gripper {gap_m:.3f} m from {self.target_label!r} "
                                      f"(residual {error:.2e} m)")
        return centre + s * direction

    def scenery_gap(self) -> float:
        """Gap between the gripper and the scenery (table, floor, walls, clutter) as it stands now, metres."""
        return self._geoms_gap(self._gripper_geoms, self._scenery_geoms)

    def _warn_if_out_of_view(self) -> None:
        """Log a warning when the gripper's bounding spheres leave the image at either end of the path.

        The default layouts keep it in view; a large ``start_gap_m`` or a narrow ``fovy_deg`` may not.
        """
        for i in (0, self.n_frames - 1):
            self._set_gripper(self._trajectory[i])
            pose = self._camera_pose()
            cam = (self.data.geom_xpos[self._gripper_geoms] - pose[:3, 3]) @ pose[:3, :3]
            radius = self.model.geom_rbound[self._gripper_geoms] * self._intrinsics.fy / cam[:, 2]
            uv = self._intrinsics.project(cam)
            size = np.array([self._intrinsics.width, self._intrinsics.height])
            if np.any(cam[:, 2] <= 0) or np.any(uv - radius[:, None] < 0) or np.any(uv + radius[:, None] > size):
                logger.warning("the gripper may leave the image at step %d; reduce start_gap_m or widen fovy_deg", i)

    def _camera_pose(self, camera: int = 0) -> np.ndarray:
        pose = np.eye(4)
        pose[:3, :3] = self.data.cam_xmat[self._cams[camera]].reshape(3, 3) @ _MJ_TO_OPTICAL
        pose[:3, 3] = self.data.cam_xpos[self._cams[camera]]
        return pose

    def _check_index(self, i: int) -> None:
        if not 0 <= i < self.n_frames:
            raise SimulationError(f"trajectory step {i} out of range [0, {self.n_frames})")

    def truth(self, i: int) -> GroundTruth:
        """Set the scene to step ``i`` and return its ground truth without rendering (cheap).

        Raises:
            SimulationError: ``i`` out of range.
        """
        self._check_index(i)
        return self.truth_at(self._trajectory[i])

    def truth_at(self, position_world: np.ndarray, camera: int = 0) -> GroundTruth:
        """Put the grasp point at ``position_world`` (3,), world metres, and return the ground truth (cheap).

        Any position is accepted, off the scripted trajectory too (a policy moving the gripper); the
        gripper keeps its orientation. Nothing stops it from entering an object (no physics): gaps go negative.
        Camera-frame fields are in ``camera``'s optical frame (0 the main camera; see :attr:`n_cameras`).

        Raises:
            SimulationError: ``position_world`` is not three finite numbers, or no such camera.
        """
        self._check_camera(camera)
        grasp = np.array(position_world, dtype=np.float64)
        if grasp.shape != (3,) or not np.all(np.isfinite(grasp)):
            raise SimulationError(f"gripper position must be 3 finite numbers (world metres), got {position_world!r}")
        self._set_gripper(grasp)
        if self.physics:
            self._object_centres[0] = self.data.xpos[self._target_body]
        pose = self._camera_pose(camera)
        rot, eye = pose[:3, :3], pose[:3, 3]

        def to_cam(p: np.ndarray) -> np.ndarray:
            cam = (np.asarray(p) - eye) @ rot
            cam.setflags(write=False)
            return cam

        gap, centre, points, obj_cam, obj_world = {}, {}, {}, {}, {}
        fromto = np.empty(6)
        for k, phrase in enumerate(self._phrases):
            gap[phrase] = self._gap(k, fromto)
            points[phrase] = to_cam(fromto.reshape(2, 3))
            centre[phrase] = float(np.linalg.norm(self._object_centres[k] - grasp))
            obj_world[phrase] = self._object_centres[k].copy()
            obj_world[phrase].setflags(write=False)
            obj_cam[phrase] = to_cam(self._object_centres[k])
        grasp_cam = to_cam(grasp)
        gripper_cam = np.eye(4)
        gripper_cam[:3, :3] = rot.T @ self._gripper_axes
        gripper_cam[:3, 3] = grasp_cam
        gripper_cam.setflags(write=False)
        grasp.setflags(write=False)
        pose.setflags(write=False)
        return GroundTruth(gap_m=gap, centre_m=centre, gap_points_cam=points, gripper_position_cam=grasp_cam,
                           object_positions_cam=obj_cam, gripper_position_world=grasp, object_positions_world=obj_world,
                           camera_pose_world=pose, gripper_pose_cam=gripper_cam)

    # ------------------------------------------------------------------ rendering

    def render(self, i: int, stamp_ns: int | None = None) -> SimFrame:
        """Set the scene to trajectory step ``i`` and render it.

        Args:
            i: step index in ``[0, n_frames)``.
            stamp_ns: frame time, integer nanoseconds; default ``i * FRAME_PERIOD_NS`` (30 fps).

        Returns:
            The frame (RGB, z-depth in metres with the configured noise, segmentation ids as in
            :attr:`labels`, -1 for scenery) and its ground truth.

        Raises:
            SimulationError: ``i`` out of range.
        """
        self._check_index(i)
        return self._render_state(self._trajectory[i], i, i * FRAME_PERIOD_NS if stamp_ns is None else int(stamp_ns),
                                  np.random.default_rng([self.config.seed, i]))

    def render_at(self, position_world: np.ndarray, stamp_ns: int = 0,
                  rng: np.random.Generator | None = None, camera: int = 0) -> SimFrame:
        """Put the grasp point at ``position_world`` (3,), world metres, and render (see :meth:`truth_at`).

        Args:
            position_world: grasp point, world frame, metres.
            stamp_ns: frame time, integer nanoseconds.
            rng: draws the depth noise; default seeded with ``(config.seed, stamp_ns)``, so a frame is reproducible.
            camera: which camera renders (0 the main one; ``extra_camera_offsets_m`` adds more). Its frame's
                ``frame_id`` is ``camera_color_optical_frame`` for camera 0, ``camera<k>_color_optical_frame``
                for camera k.

        Returns:
            The frame and its ground truth, with ``index`` -1 (not a trajectory step).

        Raises:
            SimulationError: ``position_world`` is not three finite numbers, or no such camera.
        """
        return self._render_state(position_world, -1, int(stamp_ns),
                                  np.random.default_rng([self.config.seed, int(stamp_ns)]) if rng is None else rng,
                                  camera)

    @property
    def n_cameras(self) -> int:
        """How many cameras the scene has: the main one, ``extra_camera_offsets_m``'s and the wrist camera."""
        return len(self._cams)

    def _check_camera(self, camera: int) -> None:
        if not 0 <= camera < len(self._cams):
            raise SimulationError(f"camera {camera} out of range [0, {len(self._cams)})")

    def _render_state(self, position_world: np.ndarray, index: int, stamp_ns: int,
                      rng: np.random.Generator, camera: int = 0) -> SimFrame:
        start = time.perf_counter()
        truth = self.truth_at(position_world, camera)
        rgb, depth, segmentation = self._renderers[camera].render(self.data)
        depth = apply_depth_noise(depth, self.config.depth_noise, rng)
        frame_id = OPTICAL_FRAME_ID if camera == 0 else OPTICAL_FRAME_ID.replace("camera", f"camera{camera}", 1)
        frame = Frame(rgb=rgb, intrinsics=self._intrinsics, depth_m=depth, stamp_ns=stamp_ns,
                      frame_id=frame_id, segmentation=segmentation, labels=self.labels,
                      gripper_pose=truth.gripper_pose_cam, gripper_opening_m=self.gripper_opening_m)
        logger.debug("rendered step %d in %.1f ms", index, 1e3 * (time.perf_counter() - start))
        return SimFrame(index=index, frame=frame, truth=truth)

    def move_target(self, xy_world: np.ndarray) -> None:
        """Move the target object's centre to ``xy_world`` (2,) on the table, world metres, and re-solve the trajectory.

        Distractors stay where they are; the caller keeps the target clear of them (no overlap check).
        :attr:`layout` keeps the layout as drawn; the ground truth follows the move.

        Raises:
            SimulationError: ``xy_world`` is not two finite numbers.
        """
        xy = np.array(xy_world, dtype=np.float64)
        if xy.shape != (2,) or not np.all(np.isfinite(xy)):
            raise SimulationError(f"target position must be 2 finite numbers (world x, y metres), got {xy_world!r}")
        self._object_centres[0, :2] = xy
        self.model.body_pos[self._target_body] = self._object_centres[0]
        if self.physics:
            self._object_centres[0, 2] = self.layout.centre(0)[2]
            self.data.qpos[self._target_qpos:self._target_qpos + 3] = self._object_centres[0]
            self.data.qpos[self._target_qpos + 3:self._target_qpos + 7] = self.model.body_quat[self._target_body]
        self._trajectory = self._solve_trajectory()

    # ------------------------------------------------------------------ physics (physics=True only)

    def reset_physics(self, gripper_world: np.ndarray, settle_steps: int = 40) -> None:
        """Reset the physics: gripper, target, velocities; then let the target settle.

        The gripper goes to ``gripper_world`` (its nominal orientation), the target stands upright where
        :meth:`move_target` put it, all velocities are zeroed, and the target settles on the table.

        Raises:
            SimulationError: not a physics simulator.
        """
        self._require_physics()
        self.data.qvel[:] = 0.0
        self.data.qpos[self._gripper_qpos + 3:self._gripper_qpos + 7] = self.data.mocap_quat[self._mocap]
        self._set_gripper(np.asarray(gripper_world, dtype=np.float64))
        self.data.qacc_warmstart[:] = 0.0
        for _ in range(settle_steps):
            mujoco.mj_step(self.model, self.data)
        self._sync_target()
        # The scripted approach follows the target where it settled (solving it moves the gripper: put it back).
        gripper = self.gripper_position()
        self._trajectory = self._solve_trajectory()
        self._set_gripper(gripper)

    def step_physics(self, driver_world: np.ndarray, substeps: int) -> None:
        """Move the gripper's mocap driver to ``driver_world`` and run ``substeps`` MuJoCo steps.

        The weld pulls the gripper after the driver, and contacts stop it at (or push) whatever it meets.
        """
        self._require_physics()
        self.data.mocap_pos[self._mocap] = driver_world
        for _ in range(substeps):
            mujoco.mj_step(self.model, self.data)
        mujoco.mj_kinematics(self.model, self.data)   # mj_step leaves body poses one integration step behind qpos
        mujoco.mj_camlight(self.model, self.data)
        self._sync_target()

    def gripper_position(self) -> np.ndarray:
        """The grasp point where the simulation has it, world metres (3,) (a copy)."""
        return self.data.xpos[self._gripper_body].copy()

    def gripper_velocity(self) -> np.ndarray:
        """The grasp point's linear velocity, world m/s (3,) (a free joint's first three dofs; physics only)."""
        self._require_physics()
        return self.data.qvel[self._gripper_dof:self._gripper_dof + 3].copy()

    def target_pose(self) -> tuple[np.ndarray, float]:
        """Return the target's centre (3,), world metres, and its tilt from upright, degrees.

        The tilt is the angle between the target body's z axis and world z.
        """
        z_axis = self.data.xmat[self._target_body].reshape(3, 3)[:, 2]
        return self.data.xpos[self._target_body].copy(), float(np.degrees(np.arccos(np.clip(z_axis[2], -1.0, 1.0))))

    def _sync_target(self) -> None:
        self._object_centres[0] = self.data.xpos[self._target_body]

    def _require_physics(self) -> None:
        if not self.physics:
            raise SimulationError("physics steps need TabletopSim(..., physics=True)")

    def close(self) -> None:
        """Free the renderers, and their OpenGL contexts unless one was given (idempotent)."""
        for renderer in self._renderers:
            renderer.close()

    def __enter__(self) -> "TabletopSim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
