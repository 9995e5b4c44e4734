"""``SpatialVLM/TabletopReach-v0``: move the yellow gripper to the red can, in the project's MuJoCo tabletop.

A kinematic reach task (the gripper is a mocap body: actions move it, nothing pushes back). It exists to
compare a reward from the camera (:class:`~spatialvlm_ros.gym.wrapper.SpatialRewardWrapper`) with the
exact one on equal terms: both see the same low-dimensional observation, only the reward differs.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from spatialvlm_ros.config import DepthNoiseConfig, SimConfig
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.sim import TabletopSim
from spatialvlm_ros.sim.scene import GRIPPER_OPENING_M, HALF_HEIGHT, TABLE_TOP_Z

# World frame (z up, metres). The workspace and target region keep gripper and can in the default camera's
# view and the can clear of the canonical distractors (blue box at x 0.20, green ball at x 0.24).
_WORKSPACE_LO = np.array([-0.40, -0.12, TABLE_TOP_Z + 0.03])
_WORKSPACE_HI = np.array([0.20, 0.26, 1.12])
_TARGET_LO = np.array([-0.10, -0.02])
_TARGET_HI = np.array([0.08, 0.14])
_START = np.array([-0.29, 0.05, 1.06])          # where the scripted demo approach starts, above-left of the can
_START_JITTER = np.array([0.05, 0.08, 0.04])
_CONTROL_PERIOD_NS = 100_000_000                # 10 Hz, the render_fps below

DEFAULT_SIM = SimConfig(width=160, height=120, n_frames=2, depth_noise=DepthNoiseConfig(enabled=True))


class TabletopReachEnv(gym.Env[np.ndarray, np.ndarray]):
    """Reach: move the gripper until its surface is within ``success_threshold_m`` of the can's.

    * Action: (3,) float32 in [-1, 1], the gripper's velocity in world x, y, z as a fraction of
      ``max_step_m`` per step (clipped; the gripper stays in a box that the camera sees).
    * Observation: (6,) float32, the grasp point and the can's centre in the world frame, metres. The
      target is in the observation so one policy serves every randomised layout; the task's distance
      signal is left to the reward.
    * Reward: ``-max(gap, 0)``, the true gripper-to-can surface gap in metres (0 when touching; there is
      no physics, so the gripper may enter the can).
    * Info: ``true_distance_m`` (the gap) and ``is_success`` (gap < ``success_threshold_m``).
    * Episodes never terminate; the registered id truncates them at 50 steps (Fetch-style reach).
    * Reset draws the can's position on the table and the gripper's start from the env's seeded
      ``np_random``; render calls draw nothing from it, so wrapped and bare envs see the same episodes.
    * ``render_rgbd()`` gives the RGB-D :class:`~spatialvlm_ros.frame.Frame` of the current state (the
      :class:`~spatialvlm_ros.gym.spatial.RgbdRenderable` protocol); ``render()`` its RGB.

    Args:
        render_mode: ``"rgb_array"`` or None.
        sim_config: scene and camera (default 160x120 with RealSense-like depth noise). The target region
            suits the canonical layout, so ``randomise`` must stay False.
        max_step_m: largest move per step and axis, metres.
        success_threshold_m: gap under which the gripper has reached the can, metres.

    Raises:
        ConfigError: a bad argument.

    Example:
        >>> env = TabletopReachEnv()
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, round(info["true_distance_m"], 3)
        ((6,), 0.357)
        >>> obs, reward, *_ = env.step(np.zeros(3, np.float32))
        >>> reward == -info["true_distance_m"]
        True
        >>> env.close()
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, *, sim_config: SimConfig = DEFAULT_SIM,
                 max_step_m: float = 0.03, success_threshold_m: float = 0.02) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ConfigError(f"render_mode: {render_mode!r} is not one of {[None, *self.metadata['render_modes']]}")
        if sim_config.randomise:
            raise ConfigError("sim_config.randomise: the reach task randomises the can itself; keep it False")
        if not max_step_m > 0:
            raise ConfigError(f"max_step_m: must be > 0, got {max_step_m}")
        if not success_threshold_m > 0:
            raise ConfigError(f"success_threshold_m: must be > 0, got {success_threshold_m}")
        self.render_mode = render_mode
        self.max_step_m = max_step_m
        self.success_threshold_m = success_threshold_m
        self.sim = TabletopSim(sim_config)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        # The can's height never changes, but a zero-width bound trips gymnasium's checker: any z above the table.
        self.observation_space = gym.spaces.Box(
            low=np.r_[_WORKSPACE_LO, _TARGET_LO, TABLE_TOP_Z].astype(np.float32),
            high=np.r_[_WORKSPACE_HI, _TARGET_HI, _WORKSPACE_HI[2]].astype(np.float32), dtype=np.float32)
        self._gripper = _START.copy()
        self._target = np.r_[self.sim.layout.xy[0], TABLE_TOP_Z + HALF_HEIGHT[sim_config.target]]
        self._t = 0
        self._episode_key = 0
        self._frame: Frame | None = None       # the current state's frame, rendered at most once

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a new can position and gripper start; see the class docstring."""
        super().reset(seed=seed)
        self._target[:2] = self.np_random.uniform(_TARGET_LO, _TARGET_HI)
        self.sim.move_target(self._target[:2])
        self._gripper = _START + self.np_random.uniform(-_START_JITTER, _START_JITTER)
        self._episode_key = int(self.np_random.integers(2**31))   # seeds this episode's depth noise
        self._t = 0
        self._frame = None
        return self._observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move the gripper by ``max_step_m * clip(action, -1, 1)`` and stay in the workspace."""
        move = self.max_step_m * np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self._gripper = np.clip(self._gripper + move, _WORKSPACE_LO, _WORKSPACE_HI)
        self._t += 1
        self._frame = None
        info = self._info()
        return self._observation(), -max(info["true_distance_m"], 0.0), False, False, info

    def render_rgbd(self) -> Frame:
        """RGB, depth (metres, with the configured sensor noise) and intrinsics of the current state."""
        if self._frame is None:
            rng = np.random.default_rng([self._episode_key, self._t])
            self._frame = self.sim.render_at(self._gripper, _CONTROL_PERIOD_NS * self._t, rng).frame
        return self._frame

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
        return np.r_[self._gripper, self._target].astype(np.float32)

    def _info(self) -> dict[str, Any]:
        gap = self.sim.truth_at(self._gripper).gap_m[self.sim.target_label]
        return {"true_distance_m": gap, "is_success": gap < self.success_threshold_m}
