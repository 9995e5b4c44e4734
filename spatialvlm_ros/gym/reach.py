"""``SpatialVLM/TabletopReach-v0``: move the yellow gripper to the red can, in the project's MuJoCo tabletop.

A physical reach task by default: the can is a free body standing on the table and the gripper a dynamic
body welded to a mocap driver, so the gripper stops at the can's surface or pushes it (MuJoCo ``mj_step``,
``substeps`` steps of 2 ms per env step). Reaching means stopping within 2 cm of the can *without
disturbing it*: a can moved by 1 cm or more, or tilted by 10 degrees or more, is flagged
(``info["target_disturbed"]``, latched for the episode), is never a success and costs a penalty on
every remaining step. ``physics=False`` gives the old kinematic task (a mocap gripper that passes through
the can), kept to reproduce the figures measured on it. The env exists to compare a reward from the camera
(:class:`~spatialvlm_ros.gym.wrapper.SpatialRewardWrapper`) with the
exact one on equal terms: both see the same low-dimensional observation, only the reward differs.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from spatialvlm_ros.config import DepthNoiseConfig, SimConfig
from spatialvlm_ros.errors import ConfigError, SimulationError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.sim import TabletopSim
from spatialvlm_ros.sim.scene import GRIPPER_OPENING_M, HALF_HEIGHT, TABLE_CENTRE_XY, TABLE_HALF, TABLE_TOP_Z

# World frame (z up, metres). The workspace and target region keep gripper and can in the default camera's
# view and the can clear of the canonical distractors (blue box at x 0.20, green ball at x 0.24).
_WORKSPACE_LO = np.array([-0.40, -0.12, TABLE_TOP_Z + 0.03])
_WORKSPACE_HI = np.array([0.20, 0.26, 1.12])
_TARGET_LO = np.array([-0.10, -0.02])
_TARGET_HI = np.array([0.08, 0.14])
_TABLE_LO = np.array(TABLE_CENTRE_XY) - np.array(TABLE_HALF)
_TABLE_HI = np.array(TABLE_CENTRE_XY) + np.array(TABLE_HALF)
_START = np.array([-0.29, 0.05, 1.06])          # where the scripted demo approach starts, above-left of the can
_START_JITTER = np.array([0.05, 0.08, 0.04])
_CONTROL_PERIOD_NS = 100_000_000                # 10 Hz, the render_fps below
_MAX_SPEED = 2.0                                # m/s, the observed gripper velocity's bound (a free move is ~0.15)

#: A second camera for the reach scene, front right of the main one (added to its eye, world metres; it looks at
#: the same point). A single view cannot tell a gripper hovering along its line of sight from one touching the
#: can; this one sees the can from 34-37 degrees aside. Chosen among twelve offsets on the wandering frames and
#: the direction map of ``benchmarks/vlm_reach_frames.py`` (seeds 2,000,500 and 2,001,000+), never on the RL
#: evaluation seeds.
SIDE_CAMERA_OFFSET_M = (0.5, 0.23, 0.05)

DEFAULT_SIM = SimConfig(width=160, height=120, n_frames=2, depth_noise=DepthNoiseConfig(enabled=True))


class TabletopReachEnv(gym.Env[np.ndarray, np.ndarray]):
    """Reach: move the gripper until its surface is within ``success_threshold_m`` of the can's.

    * Action: (3,) float32 in [-1, 1], the gripper's velocity in world x, y, z as a fraction of
      ``max_step_m`` per step (clipped; the gripper stays in a box that the camera sees). With physics it
      moves the mocap driver from where the gripper is; the weld pulls the gripper after it (about 40% of
      the commanded move in one step in free space), and contacts stop it.
    * Observation: float32, the grasp point and the can's centre in the world frame, metres (6,). The
      target is in the observation so one policy serves every randomised layout; the task's distance
      signal is left to the reward. With physics (17,): then also the grasp point's velocity (m/s; the
      gripper is a body with inertia), the can's displacement from where it settled (m), its tilt (in units
      of 90 degrees) and the disturbed flag (0/1), so that the state the reward depends on is observed (a
      latched penalty the policy cannot see is noise to its critic), and the can's centre relative to the
      grasp point (m; stopping within 2 cm of a surface is learnt far faster from it than from two
      absolute positions).
    * Reward: ``-max(gap, 0)``, the true gripper-to-can surface gap in metres (0 when touching), minus
      ``disturbed_penalty_m`` on every step once the can has been disturbed (physics only). Pushing the can
      therefore never pays: the gap term is flat at contact, and the penalty is larger than any gap term.
    * Info: ``true_distance_m`` (the gap), ``is_success`` (0 <= gap < ``success_threshold_m`` and, with
      physics, the can undisturbed), and with physics ``target_moved_m`` (the can's displacement from where
      it settled at reset), ``target_tilt_deg`` and ``target_disturbed`` (moved >= ``max_target_move_m``
      or tilted >= ``max_target_tilt_deg`` at any step of the episode so far).
    * Episodes never terminate; the registered id truncates them at 50 steps (Fetch-style reach).
    * Reset draws the can's position on the table and the gripper's start from the env's seeded
      ``np_random``; render calls draw nothing from it, so wrapped and bare envs see the same episodes.
    * ``render_rgbd()`` gives the RGB-D :class:`~spatialvlm_ros.frame.Frame` of the current state (the
      :class:`~spatialvlm_ros.gym.spatial.RgbdRenderable` protocol); ``render()`` its RGB;
      ``render_rgbd_views()`` the frames of every camera, the main one first (``extra_camera_offsets_m``'s next,
      the wrist camera last).

    Args:
        render_mode: ``"rgb_array"`` or None.
        sim_config: scene and camera (default 160x120 with RealSense-like depth noise). The target region
            suits the canonical layout, so ``randomise`` must stay False.
        max_step_m: largest move per step and axis, metres.
        success_threshold_m: gap under which the gripper has reached the can, metres.
        physics: the physical task (default); False: the kinematic one.
        substeps: MuJoCo steps (2 ms each) per env step, physics only.
        max_target_move_m, max_target_tilt_deg: how far the can may move / tilt before it counts as disturbed.
        disturbed_penalty_m: reward subtracted on each step once the can is disturbed, metres of gap.
        extra_camera_offsets_m: more cameras (e.g. ``(SIDE_CAMERA_OFFSET_M,)``), each at the main camera's eye
            plus this offset, world metres, looking at the same point; default none. They only render.
        wrist_camera: a camera fixed to the gripper (:data:`~spatialvlm_ros.sim.scene.WRIST_CAMERA_POS`); it only
            renders. Default False.

    Raises:
        ConfigError: a bad argument.

    Example:
        >>> env = TabletopReachEnv()
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, round(info["true_distance_m"], 3), info["target_disturbed"]
        ((17,), 0.357, False)
        >>> obs, reward, _, _, info = env.step(np.zeros(3, np.float32))
        >>> reward == -info["true_distance_m"]
        True
        >>> env.close()
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, *, sim_config: SimConfig = DEFAULT_SIM,
                 max_step_m: float = 0.03, success_threshold_m: float = 0.02, physics: bool = True,
                 substeps: int = 50, max_target_move_m: float = 0.01, max_target_tilt_deg: float = 10.0,
                 disturbed_penalty_m: float = 0.5,
                 extra_camera_offsets_m: Sequence[Sequence[float]] = (), wrist_camera: bool = False) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ConfigError(f"render_mode: {render_mode!r} is not one of {[None, *self.metadata['render_modes']]}")
        if sim_config.randomise:
            raise ConfigError("sim_config.randomise: the reach task randomises the can itself; keep it False")
        if not max_step_m > 0:
            raise ConfigError(f"max_step_m: must be > 0, got {max_step_m}")
        if not success_threshold_m > 0:
            raise ConfigError(f"success_threshold_m: must be > 0, got {success_threshold_m}")
        if substeps < 1:
            raise ConfigError(f"substeps: must be >= 1, got {substeps}")
        if not (max_target_move_m > 0 and max_target_tilt_deg > 0 and disturbed_penalty_m >= 0):
            raise ConfigError("max_target_move_m, max_target_tilt_deg: must be > 0; disturbed_penalty_m: >= 0")
        self.physics = physics
        self.substeps = substeps
        self.max_target_move_m = max_target_move_m
        self.max_target_tilt_deg = max_target_tilt_deg
        self.disturbed_penalty_m = disturbed_penalty_m
        self._target_start = np.zeros(3)
        self._tilt_deg = 0.0                   # the can's tilt now (physics), read once per step with its centre
        self._disturbed = False
        self.render_mode = render_mode
        self.max_step_m = max_step_m
        self.success_threshold_m = success_threshold_m
        try:
            self.sim = TabletopSim(sim_config, physics=physics, extra_camera_offsets_m=extra_camera_offsets_m,
                                   wrist_camera=wrist_camera)
        except SimulationError as err:
            raise ConfigError(f"extra_camera_offsets_m: {err}") from err
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        # The can's height never changes, but a zero-width bound trips gymnasium's checker: any z above the table.
        # With physics a pushed can may leave the target region and contacts may nudge the gripper out of the
        # workspace: the bounds then span the table (observations are clipped to them).
        margin = 0.05 if physics else 0.0
        target_lo, target_hi = (_TABLE_LO, _TABLE_HI) if physics else (_TARGET_LO, _TARGET_HI)
        low = np.r_[_WORKSPACE_LO - margin, target_lo, 0.0 if physics else TABLE_TOP_Z]
        high = np.r_[_WORKSPACE_HI + margin, target_hi, _WORKSPACE_HI[2]]
        if physics:   # velocity, can displacement, tilt / 90 deg, disturbed flag, can relative to the gripper
            low = np.r_[low, np.full(3, -_MAX_SPEED), np.full(3, -1.0), 0.0, 0.0, np.full(3, -2.0)]
            high = np.r_[high, np.full(3, _MAX_SPEED), np.full(3, 1.0), 2.0, 1.0, np.full(3, 2.0)]
        self.observation_space = gym.spaces.Box(low=low.astype(np.float32), high=high.astype(np.float32),
                                                dtype=np.float32)
        self._gripper = _START.copy()
        self._target = np.r_[self.sim.layout.xy[0], TABLE_TOP_Z + HALF_HEIGHT[sim_config.target]]
        self._t = 0
        self._episode_key = 0
        self._frames: dict[int, Frame] = {}    # the current state's frame per camera, rendered at most once

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a new can position and gripper start; see the class docstring."""
        super().reset(seed=seed)
        self._target[:2] = self.np_random.uniform(_TARGET_LO, _TARGET_HI)
        self.sim.move_target(self._target[:2])
        self._gripper = _START + self.np_random.uniform(-_START_JITTER, _START_JITTER)
        self._disturbed = False
        if self.physics:
            self.sim.reset_physics(self._gripper)
            self._gripper = self.sim.gripper_position()
            self._target_start, self._tilt_deg = self.sim.target_pose()
            self._target = self._target_start.copy()
        self._episode_key = int(self.np_random.integers(2**31))   # seeds this episode's depth noise
        self._t = 0
        self._frames = {}
        return self._observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move the gripper by ``max_step_m * clip(action, -1, 1)`` and stay in the workspace."""
        move = self.max_step_m * np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        goal = np.clip(self._gripper + move, _WORKSPACE_LO, _WORKSPACE_HI)
        if self.physics:
            self.sim.step_physics(goal, self.substeps)
            self._gripper = self.sim.gripper_position()
            self._target, self._tilt_deg = self.sim.target_pose()
        else:
            self._gripper = goal
        self._t += 1
        self._frames = {}
        info = self._info()
        reward = -max(info["true_distance_m"], 0.0) - self.disturbed_penalty_m * info.get("target_disturbed", False)
        return self._observation(), reward, False, False, info

    def render_rgbd(self) -> Frame:
        """RGB, depth (metres, with the configured sensor noise) and intrinsics of the current state."""
        return self._render_camera(0)

    def render_rgbd_views(self) -> tuple[Frame, ...]:
        """:meth:`render_rgbd` for every camera of the scene, the main one first."""
        return tuple(self._render_camera(k) for k in range(self.sim.n_cameras))

    def _render_camera(self, camera: int) -> Frame:
        if camera not in self._frames:
            # Camera 0 keeps the noise stream it always had; each other camera has its own.
            rng = np.random.default_rng([self._episode_key, self._t, *([camera] if camera else [])])
            self._frames[camera] = self.sim.render_at(self._gripper, _CONTROL_PERIOD_NS * self._t, rng,
                                                      camera).frame
        return self._frames[camera]

    def gripper_pose(self) -> tuple[np.ndarray, float]:
        """The gripper's grasp frame in the camera optical frame (4x4) and its opening (metres), now.

        What a robot knows from its joint angles; the spatial wrapper hands it to an estimator with
        ``estimator.gripper.source: pose`` (model ``sim``). Frames from :meth:`render_rgbd` carry it too.
        """
        return np.array(self.sim.truth_at(self._gripper).gripper_pose_cam), GRIPPER_OPENING_M

    def render(self) -> np.ndarray | None:
        """The current state's RGB image (H, W, 3) uint8 for ``render_mode="rgb_array"``, else None."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; make the env with render_mode='rgb_array'")
            return None
        return self.render_rgbd().rgb

    def close(self) -> None:
        """Free the renderer."""
        self.sim.close()

    def _observation(self) -> np.ndarray:
        obs = np.r_[self._gripper, self._target]
        if self.physics:
            obs = np.r_[obs, self.sim.gripper_velocity(), self._target - self._target_start, self._tilt_deg / 90.0,
                        float(self._disturbed), self._target - self._gripper]
        obs = obs.astype(np.float32)
        return np.clip(obs, self.observation_space.low, self.observation_space.high)

    def _info(self) -> dict[str, Any]:
        gap = self.sim.truth_at(self._gripper).gap_m[self.sim.target_label]
        if not self.physics:
            return {"true_distance_m": gap, "is_success": gap < self.success_threshold_m}
        moved = float(np.linalg.norm(self._target - self._target_start))
        self._disturbed |= moved >= self.max_target_move_m or self._tilt_deg >= self.max_target_tilt_deg
        return {"true_distance_m": gap, "target_moved_m": moved, "target_tilt_deg": self._tilt_deg,
                "target_disturbed": self._disturbed,
                "is_success": bool(0.0 <= gap < self.success_threshold_m and not self._disturbed)}


class TargetDisturbedPenalty(gym.Wrapper):
    """Subtract ``penalty`` from the reward on every step whose ``info["target_disturbed"]`` is set.

    The physical reach env puts this penalty into its own (true) reward. A camera reward from
    :class:`~spatialvlm_ros.gym.wrapper.SpatialRewardWrapper` in ``"replace"`` mode measures distance only, so
    pushing the can away would cost it nothing beyond the gap: wrap it in this to make both rewards pay the
    same for a disturbed can (give ``penalty`` in the camera reward's units, e.g. ``0.5 m / scale_m``).
    """

    def __init__(self, env: gym.Env, penalty: float) -> None:
        super().__init__(env)
        if not penalty >= 0:
            raise ConfigError(f"penalty: must be >= 0, got {penalty}")
        self.penalty = float(penalty)

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step the env; subtract the penalty when the target is disturbed."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        reward = float(reward) - self.penalty * bool(info.get("target_disturbed", False))
        return obs, reward, terminated, truncated, info
