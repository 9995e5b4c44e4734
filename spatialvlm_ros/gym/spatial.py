"""What the single and the vector wrapper share: the frame protocol, argument checks, estimate -> reward.

Frame protocol. A wrapped env gives its camera frame in one of two ways:

* it implements ``render_rgbd() -> Frame`` (on the env itself or any wrapper below; found with
  ``get_wrapper_attr``): RGB, registered depth and intrinsics of the *current* state, the way
  :class:`~spatialvlm_ros.gym.reach.TabletopReachEnv` does;
* with ``views="all"``, it implements ``render_rgbd_views() -> tuple[Frame, ...]``: every camera's frame of
  the current state, the main camera first; each pair is estimated in every view and the views fused
  (:func:`~spatialvlm_ros.estimation.views.fuse_views`: the largest valid estimate); with ``views="last"``
  only the last of those frames is read (a camera on the gripper, as the reach env's ``wrist_camera``);
* or, when the wrapper is given ``intrinsics``, its ``render()`` (``render_mode="rgb_array"``) is taken as a
  monocular RGB frame with those intrinsics and no depth (the geometric backend then answers "no depth";
  a VLM backend does not need it).

An env that knows the true distance puts it in its own ``info["true_distance_m"]``; the wrappers pass
the env's info through, so it appears beside the spatial keys.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
import numpy.typing as npt

from spatialvlm_ros.config import RewardConfig
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, Pair
from spatialvlm_ros.estimation.base import DistanceEstimator
from spatialvlm_ros.estimation.views import fuse_views
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.reward.tracker import CombinedReward, MultiPairReward

Mode = Literal["replace", "add", "info"]
MODES: tuple[str, ...] = typing.get_args(Mode)
#: The info keys the wrappers add (the env's own ``true_distance_m`` comes through when it has one).
INFO_KEYS = ("spatial_distance_m", "spatial_distance_valid", "spatial_reason", "spatial_reward")
RENDER_RGBD = "render_rgbd"
RENDER_RGBD_VIEWS = "render_rgbd_views"
Views = Literal["main", "all", "last"]
VIEWS: tuple[str, ...] = typing.get_args(Views)
#: An env that knows its gripper's pose (a robot's kinematics, a simulator) offers ``gripper_pose() ->
#: (4x4 pose in the camera optical frame, opening in metres or None)``; the wrappers attach it to each frame
#: that has none, for an estimator with ``estimator.gripper.source: pose``.
GRIPPER_POSE = "gripper_pose"


def attach_env_pose(frame: Frame, answer: Any) -> Frame:
    """``frame`` with the pose an env's ``gripper_pose()`` gave (pose, opening), unless it has one already."""
    if frame.gripper_pose is not None or answer is None:
        return frame
    pose, opening = answer if isinstance(answer, tuple) else (answer, None)
    return dataclasses.replace(frame, gripper_pose=np.asarray(pose, dtype=np.float64),
                               gripper_opening_m=None if opening is None else float(opening))


def with_env_gripper_pose(env: Any, frame: Frame) -> Frame:
    """``frame`` with the env's gripper pose when the env (or a wrapper below) offers ``gripper_pose()``."""
    if frame.gripper_pose is not None:
        return frame
    try:
        method = env.get_wrapper_attr(GRIPPER_POSE)
    except AttributeError:
        return frame
    return attach_env_pose(frame, method())


@runtime_checkable
class RgbdRenderable(Protocol):
    """An env that renders its current state as an RGB-D :class:`~spatialvlm_ros.frame.Frame`."""

    def render_rgbd(self) -> Frame:
        """RGB, registered depth (metres) and intrinsics of the current state."""
        ...


@dataclass(frozen=True)
class SpatialObservation:
    """What the camera said about one env in one step.

    Attributes:
        estimates: one estimate per pair, in pair order.
        combined: the pairs' rewards after filtering, shaping and the invalid policy.
    """

    estimates: tuple[DistanceEstimate, ...]
    combined: CombinedReward

    @property
    def reward(self) -> float:
        """The spatial reward; NaN when no pair gave one (see ``RewardConfig.invalid_policy``)."""
        return self.combined.reward

    def info(self) -> dict[str, Any]:
        """The info keys: scalars for one pair, arrays in pair order for several.

        ``spatial_distance_m`` is the raw estimate in metres (NaN when invalid), ``spatial_reason`` the
        :class:`~spatialvlm_ros.estimation.NoEstimateReason` value or ``""``, ``spatial_reward`` the
        combined reward (NaN when none).
        """
        distance = np.array([e.distance_m for e in self.estimates])
        valid = np.array([e.valid for e in self.estimates])
        reason = np.array(["" if e.reason is None else e.reason.value for e in self.estimates])
        if len(self.estimates) == 1:
            return {"spatial_distance_m": float(distance[0]), "spatial_distance_valid": bool(valid[0]),
                    "spatial_reason": str(reason[0]), "spatial_reward": self.reward}
        return {"spatial_distance_m": distance, "spatial_distance_valid": valid, "spatial_reason": reason,
                "spatial_reward": self.reward}


class SpatialTerm:
    """Checked wrapper arguments plus one :class:`MultiPairReward` per env: frames in, rewards out.

    Args:
        estimator: any :class:`~spatialvlm_ros.estimation.DistanceEstimator`.
        pairs: ``"GRIPPER -> OBJECT"`` strings or :class:`Pair` objects (one or a sequence).
        kind: gap or centre distance.
        reward_config: shaping, filter, invalid policy, combination over pairs.
        mode: ``"replace"``, ``"add"`` or ``"info"``.
        intrinsics: take frames from ``render()`` (RGB only) with these intrinsics instead of ``render_rgbd()``.
        n_envs: how many envs (one filter state each).
        views: ``"main"`` the env's main camera (``render_rgbd()``); ``"all"`` every camera
            (``render_rgbd_views()``), fused per pair; ``"last"`` the last of those cameras alone.

    Raises:
        ConfigError: a bad argument; the message starts with its name.
    """

    def __init__(self, estimator: DistanceEstimator, pairs: Sequence[Pair | str] | Pair | str,
                 kind: DistanceKind | str, reward_config: RewardConfig, mode: Mode,
                 intrinsics: CameraIntrinsics | None, n_envs: int, views: Views = "main") -> None:
        if mode not in MODES:
            raise ConfigError(f"mode: {mode!r} is not one of {list(MODES)}")
        if views not in VIEWS:
            raise ConfigError(f"views: {views!r} is not one of {list(VIEWS)}")
        if views != "main" and intrinsics is not None:
            raise ConfigError(f"views: {views!r} takes frames from render_rgbd_views(); intrinsics= (render() "
                              "RGB) has the main view only")
        if not callable(getattr(estimator, "estimate", None)):
            raise ConfigError(f"estimator: {type(estimator).__name__} has no estimate(frame, pairs, kind) method; "
                              "build one with build_estimator(EstimatorConfig(...))")
        try:
            self.kind = DistanceKind(kind)
        except ValueError as err:
            raise ConfigError(f"kind: {kind!r} is not one of {[k.value for k in DistanceKind]}") from err
        if not isinstance(reward_config, RewardConfig):
            raise ConfigError(f"reward_config: expected a RewardConfig, got {type(reward_config).__name__}")
        if mode == "replace" and reward_config.invalid_policy == "skip":
            raise ConfigError("reward_config.invalid_policy: 'skip' cannot skip a gym step in mode 'replace' "
                              "(the step needs a reward); use 'hold_last' or 'nan'")
        if intrinsics is not None and not isinstance(intrinsics, CameraIntrinsics):
            raise ConfigError(f"intrinsics: expected CameraIntrinsics or None, got {type(intrinsics).__name__}")
        if isinstance(pairs, (str, Pair)):
            pairs = [pairs]
        try:
            parsed = [p if isinstance(p, Pair) else Pair.parse(p) for p in pairs]
        except ConfigError as err:
            raise ConfigError(f"pairs: {err}") from err
        self.estimator = estimator
        self.reward_config = reward_config
        self.mode = mode
        self.intrinsics = intrinsics
        self.views = views
        self._rewards = [MultiPairReward(reward_config, parsed) for _ in range(n_envs)]
        self.pairs = self._rewards[0].pairs

    def reset(self, i: int) -> None:
        """Forget env ``i``'s filter state and held distance (its episode starts anew)."""
        self._rewards[i].reset()

    @property
    def render_method(self) -> str:
        """The env method that gives the frames (when no ``intrinsics``): one frame, or a tuple of views."""
        return RENDER_RGBD if self.views == "main" else RENDER_RGBD_VIEWS

    @property
    def main_first(self) -> bool:
        """Whether the first view estimated in is the env's main camera (whose frame its gripper_pose() is in)."""
        return self.views != "last"

    def views_of(self, got: Any, source: Any) -> list[Frame]:
        """What :attr:`render_method` gave, as the list of views to estimate in (one unless ``views="all"``).

        Raises:
            ConfigError: with ``views`` "all" or "last", not a non-empty sequence of :class:`Frame` (``source``
                names the env).
        """
        if self.views == "main":
            return [got]
        views = list(got) if isinstance(got, (list, tuple)) else []
        if not views or not all(isinstance(f, Frame) for f in views):
            raise ConfigError(f"env: {source} {RENDER_RGBD_VIEWS}() must give a non-empty tuple of Frame, "
                              f"got {type(got).__name__}")
        return views[-1:] if self.views == "last" else views

    def observe(self, i: int, views: Sequence[Frame]) -> SpatialObservation:
        """Estimate every pair in each of env ``i``'s views, fuse them per pair, and update its reward state."""
        estimates = fuse_views([self.estimator.estimate(f, self.pairs, self.kind) for f in views])
        return SpatialObservation(estimates=estimates, combined=self._rewards[i].update(estimates))

    def rgb_frame(self, rgb: np.ndarray) -> Frame:
        """A monocular frame from ``render()`` output (only when ``intrinsics`` were given)."""
        assert self.intrinsics is not None  # callers use render_rgbd() otherwise
        return Frame(rgb=np.asarray(rgb), intrinsics=self.intrinsics)

    def mix(self, env_reward: npt.ArrayLike, spatial_reward: npt.ArrayLike) -> np.ndarray:
        """The reward the agent gets, elementwise over envs, by ``mode``.

        ``"replace"`` returns the spatial reward, ``"info"`` the env's, ``"add"`` their sum. A NaN spatial
        reward stays NaN (the ``"nan"`` policy, or ``"hold_last"`` before any valid estimate), except that
        under ``"skip"`` a skipped step adds nothing.
        """
        env_r = np.asarray(env_reward, dtype=np.float64)
        spatial = np.asarray(spatial_reward, dtype=np.float64)
        if self.mode == "replace":
            return spatial
        if self.mode == "info":
            return env_r
        if self.reward_config.invalid_policy == "skip":
            spatial = np.where(np.isnan(spatial), 0.0, spatial)
        return env_r + spatial


def check_rgbd_env(env: Any, intrinsics: CameraIntrinsics | None, views: Views = "main") -> None:
    """Raise :class:`ConfigError` unless ``env`` can give frames the way the wrapper will ask for them."""
    if views != "main":
        if not env.has_wrapper_attr(RENDER_RGBD_VIEWS):
            raise ConfigError(f"env: {env} has no {RENDER_RGBD_VIEWS}() -> tuple[Frame, ...] for views={views!r}")
    elif intrinsics is None:
        if not env.has_wrapper_attr(RENDER_RGBD):
            raise ConfigError(f"env: {env} has no {RENDER_RGBD}() -> Frame; implement it, or pass intrinsics= "
                              "to use render() RGB frames without depth")
    elif env.render_mode != "rgb_array":
        raise ConfigError(f"intrinsics: RGB frames come from render(), which needs render_mode 'rgb_array', "
                          f"but the env's render_mode is {env.render_mode!r}")
