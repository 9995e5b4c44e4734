"""``SpatialRewardVectorWrapper``: the spatial reward for every sub-env of a vector env, frames batched per step."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium.core import ActType, ObsType
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.vector.vector_env import ArrayType

from spatialvlm_ros.config import RewardConfig
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.estimation.base import DistanceEstimator
from spatialvlm_ros.types import DistanceKind, Pair
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.gym.spatial import (
    GRIPPER_POSE, INFO_KEYS, Mode, SpatialObservation, SpatialTerm, Views, attach_env_pose, check_rgbd_env,
)


class SpatialRewardVectorWrapper(VectorWrapper[ObsType, ActType, ObsType, ActType, ArrayType]):
    """:class:`~spatialvlm_ros.gym.wrapper.SpatialRewardWrapper` for a vector env: same arguments, same rewards.

    Per step, every sub-env's frame is fetched in one ``call("render_rgbd")`` (``render()`` with
    ``intrinsics``), then estimated by one estimator; each sub-env keeps its own filter state. Info keys
    are arrays over sub-envs (with the ``_key`` masks gymnasium uses), shaped ``(num_envs,)`` for one pair
    and ``(num_envs, n_pairs)`` for several.

    Autoreset must be ``NEXT_STEP`` (gymnasium's default): on the step that resets a sub-env its filter
    state is cleared and primed with the new episode's first frame, as :meth:`SpatialRewardWrapper.reset`
    does, and its reward is the env's (0, not a transition), whatever the mode. ``SAME_STEP`` is refused:
    the frame a step renders would already show the next episode.

    Args:
        env: a vector env whose sub-envs implement ``render_rgbd()`` (or render RGB, with ``intrinsics``).
        estimator: see :class:`~spatialvlm_ros.gym.wrapper.SpatialRewardWrapper`.
        pairs: see there.
        kind: see there.
        reward_config: see there.
        mode: see there.
        intrinsics: see there.
        views: see there.

    Raises:
        ConfigError: a bad argument (the message starts with its name), or an autoreset mode other than NEXT_STEP.

    Example:
        >>> import gymnasium as gym
        >>> import spatialvlm_ros.gym
        >>> from spatialvlm_ros.config import EstimatorConfig
        >>> from spatialvlm_ros.estimation import build_estimator
        >>> envs = gym.make_vec("SpatialVLM/TabletopReach-v0", num_envs=2, vectorization_mode="sync")
        >>> envs = SpatialRewardVectorWrapper(envs, build_estimator(EstimatorConfig()), "yellow gripper -> red can")
        >>> _ = envs.reset(seed=0)
        >>> _, rewards, _, _, info = envs.step(envs.action_space.sample())
        >>> rewards.shape, info["spatial_distance_valid"].tolist()
        ((2,), [True, True])
        >>> envs.close()
    """

    def __init__(self, env: VectorEnv[ObsType, ActType, ArrayType], estimator: DistanceEstimator,
                 pairs: Sequence[Pair | str] | Pair | str = "yellow gripper -> red can", *,
                 kind: DistanceKind | str = DistanceKind.GAP, reward_config: RewardConfig = RewardConfig(),
                 mode: Mode = "replace", intrinsics: CameraIntrinsics | None = None, views: Views = "main") -> None:
        super().__init__(env)
        self._term = SpatialTerm(estimator, pairs, kind, reward_config, mode, intrinsics, n_envs=env.num_envs,
                                 views=views)
        autoreset = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if AutoresetMode(autoreset) is not AutoresetMode.NEXT_STEP:
            raise ConfigError(f"env: autoreset_mode must be NEXT_STEP, got {autoreset}; with SAME_STEP the frame "
                              "after a final step already shows the next episode")
        # A SyncVectorEnv can be checked now; other vector envs fail on the first frame request.
        for sub_env in getattr(env.unwrapped, "envs", ()):
            check_rgbd_env(sub_env, intrinsics, views)
        self._autoreset = np.zeros(env.num_envs, dtype=bool)

    @property
    def pairs(self) -> tuple[Pair, ...]:
        """The measured pairs, in the order of multi-pair info arrays."""
        return self._term.pairs

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[ObsType, dict[str, Any]]:
        """Reset every sub-env and its filter state; first frames prime the filters and fill the info keys."""
        obs, info = self.env.reset(seed=seed, options=options)
        for i in range(self.num_envs):
            self._term.reset(i)
        self._autoreset[:] = False
        return obs, {**info, **self._info(self._observe())}

    def step(self, actions: ActType) -> tuple[ObsType, ArrayType, ArrayType, ArrayType, dict[str, Any]]:
        """Step every sub-env, estimate on all new frames, and return the rewards ``mode`` asks for."""
        obs, env_rewards, terminations, truncations, info = self.env.step(actions)
        # Sub-envs that ended last step were reset by this one: a new episode, a fresh filter.
        for i in np.flatnonzero(self._autoreset):
            self._term.reset(int(i))
        observations = self._observe()
        spatial = np.array([o.reward for o in observations])
        rewards = np.where(self._autoreset, env_rewards, self._term.mix(env_rewards, spatial))
        self._autoreset = np.logical_or(terminations, truncations)
        return obs, rewards, terminations, truncations, {**info, **self._info(observations)}

    def _frames(self) -> list[list[Frame]]:
        """Per sub-env, its views (one unless ``views="all"``), the main camera's first."""
        if self._term.intrinsics is not None:
            views = [[self._term.rgb_frame(rgb)] for rgb in self.env.render()]
        else:
            views = [self._term.views_of(got, f"sub-env {i}")
                     for i, got in enumerate(self.env.call(self._term.render_method))]
        # An env's gripper_pose() is in its main camera's frame: it can only complete that view.
        if self._term.main_first and any(v[0].gripper_pose is None for v in views):
            try:
                poses = self.env.call(GRIPPER_POSE)
            except AttributeError:     # the sub-envs do not know their gripper pose
                return views
            views = [[attach_env_pose(v[0], p), *v[1:]] for v, p in zip(views, poses)]
        return views

    def _observe(self) -> list[SpatialObservation]:
        return [self._term.observe(i, views) for i, views in enumerate(self._frames())]

    def _info(self, observations: list[SpatialObservation]) -> dict[str, Any]:
        per_env = [o.info() for o in observations]
        out: dict[str, Any] = {}
        for key in INFO_KEYS:
            out[key] = np.array([info[key] for info in per_env])
            out[f"_{key}"] = np.ones(self.num_envs, dtype=bool)
        return out
