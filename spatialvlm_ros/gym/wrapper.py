"""``SpatialRewardWrapper``: a reward measured by the camera, replacing, adding to or beside the env's."""

from __future__ import annotations

from typing import Any, Sequence, SupportsFloat

import gymnasium as gym
from gymnasium.core import ActType, ObsType

from spatialvlm_ros.config import RewardConfig
from spatialvlm_ros.estimation.base import DistanceEstimator
from spatialvlm_ros.types import DistanceKind, Pair
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.gym.spatial import (Mode, SpatialObservation, SpatialTerm, Views, check_rgbd_env,
                                        with_env_gripper_pose)


class SpatialRewardWrapper(gym.Wrapper[ObsType, ActType, ObsType, ActType], gym.utils.RecordConstructorArgs):
    """After every step, estimate gripper-to-object distances in the env's camera frame and reward them.

    The frame comes from the env's ``render_rgbd()`` (or, with ``intrinsics``, from ``render()`` as RGB
    only; see :mod:`spatialvlm_ros.gym.spatial`). Distances are shaped by the project's reward module:
    filtered, shaped, clipped, invalid estimates handled by ``reward_config.invalid_policy``. The filter
    state is cleared on :meth:`reset`, whose frame primes it (so ``"progress"`` shaping has a start).

    ``mode`` says what the agent gets: ``"replace"`` the spatial reward, ``"add"`` env reward + spatial
    reward, ``"info"`` the env reward unchanged. Every mode adds to ``info`` (on reset too):
    ``spatial_distance_m`` (raw estimate, metres, NaN when invalid), ``spatial_distance_valid``,
    ``spatial_reason`` (why not, ``""`` when valid), ``spatial_reward`` (NaN when there is none: the
    ``"nan"`` policy, or ``"hold_last"`` before the first valid estimate). With several pairs the first
    three hold arrays in pair order. ``true_distance_m`` comes from the env's own info when it knows it.

    A vector version exists: :class:`~spatialvlm_ros.gym.vector.SpatialRewardVectorWrapper`.

    Args:
        env: the env to wrap.
        estimator: a :class:`~spatialvlm_ros.estimation.DistanceEstimator` (``build_estimator(...)``).
        pairs: ``"GRIPPER -> OBJECT"`` text or :class:`~spatialvlm_ros.estimation.Pair`, one or several.
        kind: ``"gap"`` (surface to surface) or ``"centre"``.
        reward_config: shaping, filter, success bonus, clipping, invalid policy, combination over pairs.
        mode: ``"replace"``, ``"add"`` or ``"info"``.
        intrinsics: use ``render()`` RGB with these intrinsics instead of ``render_rgbd()``.
        views: ``"main"`` (default) the env's main camera; ``"all"`` every camera the env's
            ``render_rgbd_views()`` gives, each pair estimated in each view and fused (the largest valid
            estimate: one camera confuses a gripper hovering along its line of sight with contact); ``"last"``
            the last of those cameras alone (a camera on the gripper, as the reach env's ``wrist_camera``).

    Raises:
        ConfigError: a bad argument (the message starts with its name), or an env that cannot give frames.

    Example:
        >>> import gymnasium as gym
        >>> import spatialvlm_ros.gym
        >>> from spatialvlm_ros.config import EstimatorConfig, RewardConfig
        >>> from spatialvlm_ros.estimation import build_estimator
        >>> env = SpatialRewardWrapper(gym.make("SpatialVLM/TabletopReach-v0"), build_estimator(EstimatorConfig()),
        ...                            "yellow gripper -> red can",
        ...                            reward_config=RewardConfig(shaping="negative", scale_m=1.0, filter="none"))
        >>> _ = env.reset(seed=0)
        >>> _, reward, _, _, info = env.step(env.action_space.sample())
        >>> info["spatial_distance_valid"], reward == info["spatial_reward"] == -info["spatial_distance_m"]
        (True, True)
        >>> abs(info["spatial_distance_m"] - info["true_distance_m"]) < 0.05   # camera vs truth, metres
        True
        >>> env.close()
    """

    def __init__(self, env: gym.Env[ObsType, ActType], estimator: DistanceEstimator,
                 pairs: Sequence[Pair | str] | Pair | str = "yellow gripper -> red can", *,
                 kind: DistanceKind | str = DistanceKind.GAP, reward_config: RewardConfig = RewardConfig(),
                 mode: Mode = "replace", intrinsics: CameraIntrinsics | None = None, views: Views = "main") -> None:
        # Recorded as given, not deep-copied: an estimator is a live object (weights, locks, HTTP sessions).
        gym.utils.RecordConstructorArgs.__init__(self, estimator=estimator, pairs=pairs, kind=kind,
                                                 reward_config=reward_config, mode=mode, intrinsics=intrinsics,
                                                 views=views, _disable_deepcopy=True)
        gym.Wrapper.__init__(self, env)
        self._term = SpatialTerm(estimator, pairs, kind, reward_config, mode, intrinsics, n_envs=1, views=views)
        check_rgbd_env(env, intrinsics, views)

    @property
    def pairs(self) -> tuple[Pair, ...]:
        """The measured pairs, in the order of multi-pair info arrays."""
        return self._term.pairs

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[ObsType, dict[str, Any]]:
        """Reset the env and the filter state; the first frame primes the filter and fills the info keys."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._term.reset(0)
        return obs, {**info, **self._observe().info()}

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env, estimate on the new frame, and return the reward ``mode`` asks for."""
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        spatial = self._observe()
        reward = float(self._term.mix(float(env_reward), spatial.reward))
        return obs, reward, terminated, truncated, {**info, **spatial.info()}

    def _observe(self) -> SpatialObservation:
        return self._term.observe(0, self._frames())

    def _frames(self) -> list[Frame]:
        """The views to estimate in (one unless ``views="all"``), the main camera's first."""
        if self._term.intrinsics is not None:
            views = [self._term.rgb_frame(self.env.render())]
        else:
            views = self._term.views_of(self.env.get_wrapper_attr(self._term.render_method)(), self.env)
        # An env's gripper_pose() is in its main camera's frame: it can only complete that view.
        if not self._term.main_first:
            return views
        return [with_env_gripper_pose(self.env, views[0]), *views[1:]]
