"""Tests of spatialvlm_ros.gym: the reach env, the spatial reward wrapper (single and vector)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from scipy.stats import spearmanr

from spatialvlm_ros.config import EstimatorConfig, RewardConfig, SimConfig
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.estimation import DistanceEstimator, build_estimator
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.gym import (
    INFO_KEYS, REACH_ID, RgbdRenderable, SpatialRewardVectorWrapper, SpatialRewardWrapper, TabletopReachEnv,
)
from spatialvlm_ros.gym.reach import DEFAULT_SIM

PAIR = "yellow gripper -> red can"
NEGATIVE = RewardConfig(shaping="negative", scale_m=0.1, filter="none")
# A narrow camera that sees the can but not the gripper's start: estimates go invalid, valid, invalid again.
NARROW = SimConfig(width=160, height=120, n_frames=2, fovy_deg=20.0, distractors=())


@pytest.fixture(scope="module")
def estimator() -> DistanceEstimator:
    return build_estimator(EstimatorConfig(grounding="colour_prompt"))


@pytest.fixture
def closing() -> Iterator[Callable[[gym.Env], gym.Env]]:
    """Register envs to close at teardown, newest first.

    Every env owns an OpenGL context; freeing one while another's is current corrupts that one, so
    nothing is left to the garbage collector.
    """
    envs: list[gym.Env] = []

    def keep(env: gym.Env) -> gym.Env:
        envs.append(env)
        return env
    yield keep
    for env in reversed(envs):
        env.close()


def towards_target(obs: np.ndarray) -> np.ndarray:
    """Scripted policy: full speed towards the can's centre."""
    return np.clip((obs[3:6] - obs[:3]) / 0.03, -1.0, 1.0).astype(np.float32)


def away_from_target(obs: np.ndarray) -> np.ndarray:
    """Scripted policy: up and to the left, out of the narrow camera's view."""
    return np.array([-1.0, 0.0, 1.0], dtype=np.float32)


def test_reach_env_implements_the_frame_protocol(closing: Callable) -> None:
    env = closing(TabletopReachEnv(render_mode="rgb_array"))
    assert isinstance(env, RgbdRenderable)
    env.reset(seed=0)
    frame = env.render_rgbd()
    assert frame.depth_m is not None and frame.rgb.shape == (120, 160, 3)
    assert env.render() is frame.rgb          # rendered once per state


def test_reset_moves_the_can_in_the_rendered_scene(closing: Callable) -> None:
    env = closing(TabletopReachEnv())
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        frame = env.render_rgbd()
        truth = env.sim.truth_at(obs[:3])
        centre = truth.object_positions_cam["red can"]
        u, v = np.rint(frame.intrinsics.project(centre[None])[0]).astype(int)
        assert frame.segmentation[v, u] == frame.labels["red can"]
        np.testing.assert_allclose(truth.object_positions_world["red can"], obs[3:6], atol=1e-6)
        end = env.sim.truth(env.sim.n_frames - 1).gap_m["red can"]   # the scripted approach follows the can
        assert end == pytest.approx(env.sim.config.end_gap_m, abs=1e-6)


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")  # wrapped on purpose
@pytest.mark.parametrize("wrapped", [False, True])
def test_env_checker_passes(wrapped: bool, estimator: DistanceEstimator, closing: Callable) -> None:
    env = closing(gym.make(REACH_ID, render_mode="rgb_array"))
    if wrapped:
        check_env(closing(SpatialRewardWrapper(env, estimator, PAIR)), skip_render_check=False)
    else:
        check_env(env.unwrapped)


@pytest.mark.parametrize(("width", "height", "max_median_error_m"), [
    (160, 120, 0.05),   # the colour mask's opening erodes the 12 mm fingers: estimates read a few cm long
    (320, 240, 0.01),
])
def test_scripted_approach_reaches_and_spatial_distance_tracks_truth(
        width: int, height: int, max_median_error_m: float, estimator: DistanceEstimator, closing: Callable) -> None:
    sim_config = dataclasses.replace(DEFAULT_SIM, width=width, height=height)
    # Kinematic: full speed into the can would push the physical one away.
    env = closing(SpatialRewardWrapper(TabletopReachEnv(sim_config=sim_config, physics=False), estimator, PAIR,
                                       reward_config=NEGATIVE))
    spatial, true = [], []
    for seed in (0, 1):
        obs, info = env.reset(seed=seed)
        for _ in range(10):
            spatial.append(info["spatial_distance_m"])
            true.append(info["true_distance_m"])
            obs, _, _, _, info = env.step(towards_target(obs))
        assert info["is_success"], f"seed {seed}: the scripted approach ends {info['true_distance_m']:.3f} m away"
    assert spearmanr(spatial, true).statistic > 0.9
    assert np.median(np.abs(np.subtract(spatial, true))) < max_median_error_m


@pytest.mark.parametrize("mode", ["replace", "add", "info"])
def test_modes(mode: str, estimator: DistanceEstimator, closing: Callable) -> None:
    env = closing(SpatialRewardWrapper(gym.make(REACH_ID), estimator, PAIR, reward_config=NEGATIVE, mode=mode))
    obs, info = env.reset(seed=3)
    assert set(INFO_KEYS) <= info.keys() and "true_distance_m" in info
    for _ in range(3):
        obs, reward, _, _, info = env.step(towards_target(obs))
        assert set(INFO_KEYS) | {"true_distance_m", "is_success"} <= info.keys()
        assert info["spatial_distance_valid"] and info["spatial_reason"] == ""
        assert info["spatial_reward"] == pytest.approx(-info["spatial_distance_m"] / 0.1)
        env_reward = -info["true_distance_m"]
        expected = {"replace": info["spatial_reward"], "add": env_reward + info["spatial_reward"],
                    "info": env_reward}[mode]
        assert isinstance(reward, float) and reward == pytest.approx(expected)


@pytest.mark.parametrize("policy", ["hold_last", "nan"])
def test_invalid_estimates_follow_the_policy(policy: str, estimator: DistanceEstimator, closing: Callable) -> None:
    """The narrow camera does not see the gripper at the start nor after it leaves again."""
    config = RewardConfig(shaping="negative", scale_m=0.1, filter="none", invalid_policy=policy)
    env = closing(SpatialRewardWrapper(TabletopReachEnv(sim_config=NARROW), estimator, PAIR, reward_config=config))
    obs, info = env.reset(seed=0)
    steps = [(math.nan, info)]
    for policy_fn in [towards_target] * 12 + [away_from_target] * 12:
        obs, reward, _, _, info = env.step(policy_fn(obs))
        steps.append((reward, info))
    valid = [i["spatial_distance_valid"] for _, i in steps]
    first_valid, last_valid = valid.index(True), len(valid) - 1 - valid[::-1].index(True)
    assert 0 < first_valid < last_valid < len(steps) - 1, valid
    for k, (reward, info) in enumerate(steps):
        if info["spatial_distance_valid"]:
            assert info["spatial_reward"] == pytest.approx(-info["spatial_distance_m"] / 0.1)
            continue
        assert info["spatial_reason"] == "not_visible" and math.isnan(info["spatial_distance_m"])
        if policy == "hold_last" and k > last_valid:
            assert reward == steps[last_valid][0]       # the last valid distance, held
        else:
            assert math.isnan(info["spatial_reward"])   # "nan", or nothing to hold yet: never a silent 0
            assert k == 0 or math.isnan(reward)


def test_skip_adds_nothing_for_an_object_out_of_view(estimator: DistanceEstimator, closing: Callable) -> None:
    config = RewardConfig(shaping="negative", invalid_policy="skip")
    env = closing(SpatialRewardWrapper(gym.make(REACH_ID), estimator, "yellow gripper -> purple box",
                                       reward_config=config, mode="add"))
    _, info = env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(3, np.float32))
    assert not info["spatial_distance_valid"] and info["spatial_reason"] == "not_visible"
    assert math.isnan(info["spatial_reward"]) and reward == -info["true_distance_m"]


def test_rgb_only_frames_come_from_render(estimator: DistanceEstimator, closing: Callable) -> None:
    base = closing(TabletopReachEnv(render_mode="rgb_array"))
    env = closing(SpatialRewardWrapper(base, estimator, PAIR, reward_config=NEGATIVE, mode="info",
                                       intrinsics=base.sim.intrinsics))
    _, info = env.reset(seed=0)
    assert not info["spatial_distance_valid"] and info["spatial_reason"] == "no_depth"


def test_several_pairs_give_arrays_in_pair_order(estimator: DistanceEstimator, closing: Callable) -> None:
    pairs = [PAIR, "yellow gripper -> blue box"]
    env = closing(SpatialRewardWrapper(gym.make(REACH_ID), estimator, pairs, reward_config=NEGATIVE))
    _, info = env.reset(seed=0)
    assert [str(p) for p in env.pairs] == pairs
    assert info["spatial_distance_m"].shape == (2,) and info["spatial_distance_valid"].all()
    assert info["spatial_reward"] == pytest.approx(-info["spatial_distance_m"].mean() / 0.1)


def test_reset_clears_the_filter_state(estimator: DistanceEstimator, closing: Callable) -> None:
    config = RewardConfig(shaping="negative", scale_m=0.1, filter="ema", ema_alpha=0.3)

    def rewards(env: gym.Env, seed: int) -> list[float]:
        obs, info = env.reset(seed=seed)
        out = [info["spatial_reward"]]
        for _ in range(4):
            obs, reward, *_ = env.step(towards_target(obs))
            out.append(reward)
        return out

    used = closing(SpatialRewardWrapper(gym.make(REACH_ID), estimator, PAIR, reward_config=config))
    fresh = closing(SpatialRewardWrapper(gym.make(REACH_ID), estimator, PAIR, reward_config=config))
    rewards(used, seed=5)
    assert rewards(used, seed=6) == rewards(fresh, seed=6)


def test_vector_wrapper_matches_single_wrappers(estimator: DistanceEstimator, closing: Callable) -> None:
    """Same seeds and actions, across an autoreset (episodes are 50 steps)."""
    n, steps, seeds = 3, 53, [7, 8, 9]
    config = RewardConfig(shaping="progress", scale_m=0.1, filter="ema")   # stateful: exposes any mix-up
    vec = closing(SpatialRewardVectorWrapper(SyncVectorEnv([lambda: gym.make(REACH_ID)] * n), estimator, PAIR,
                                             reward_config=config, mode="add"))
    singles = [closing(SpatialRewardWrapper(gym.make(REACH_ID), estimator, PAIR, reward_config=config, mode="add"))
               for _ in range(n)]
    _, vinfo = vec.reset(seed=seeds)
    sinfo = [env.reset(seed=s)[1] for env, s in zip(singles, seeds)]
    assert vinfo["spatial_reward"].tolist() == [i["spatial_reward"] for i in sinfo]
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, n, 3)).astype(np.float32)
    done = np.zeros(n, dtype=bool)
    for t in range(steps):
        _, vrewards, vterm, vtrunc, vinfo = vec.step(actions[t])
        for i, env in enumerate(singles):
            if done[i]:   # NEXT_STEP autoreset: this step reset sub-env i, with reward 0
                _, info = env.reset()
                reward = 0.0
                done[i] = False
            else:
                _, reward, term, trunc, info = env.step(actions[t, i])
                done[i] = term or trunc
            assert vrewards[i] == reward, (t, i)
            assert vinfo["spatial_distance_m"][i] == info["spatial_distance_m"], (t, i)
            assert vinfo["_spatial_reward"][i]
        assert (vterm | vtrunc).tolist() == done.tolist()
    assert t >= 50  # the loop crossed an autoreset


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mode": "swap"}, "^mode: 'swap'"),
    ({"estimator": object()}, "^estimator: object has no estimate"),
    ({"pairs": "yellow gripper"}, "^pairs: "),
    ({"pairs": []}, "^pairs: "),
    ({"kind": "diagonal"}, "^kind: 'diagonal'"),
    ({"reward_config": {"shaping": "exp"}}, "^reward_config: expected a RewardConfig"),
    ({"reward_config": RewardConfig(invalid_policy="skip")}, "^reward_config.invalid_policy: 'skip'"),
    ({"intrinsics": (1.0, 1.0)}, "^intrinsics: expected CameraIntrinsics"),
    ({"intrinsics": CameraIntrinsics.from_fov(160, 120, 58.0)}, "^intrinsics: .*render_mode"),
])
def test_bad_arguments_name_the_argument(kwargs: dict, match: str, estimator: DistanceEstimator,
                                         closing: Callable) -> None:
    env = closing(gym.make(REACH_ID))
    args = {"estimator": estimator, "pairs": PAIR, **kwargs}
    with pytest.raises(ConfigError, match=match):
        SpatialRewardWrapper(env, **args)


def test_env_without_frames_is_refused(estimator: DistanceEstimator, closing: Callable) -> None:
    with pytest.raises(ConfigError, match=r"^env: .*render_rgbd"):
        SpatialRewardWrapper(closing(gym.make("Pendulum-v1")), estimator, PAIR)


def test_vector_wrapper_refuses_same_step_autoreset(estimator: DistanceEstimator, closing: Callable) -> None:
    envs = closing(SyncVectorEnv([lambda: gym.make(REACH_ID)], autoreset_mode=AutoresetMode.SAME_STEP))
    with pytest.raises(ConfigError, match="^env: autoreset_mode must be NEXT_STEP"):
        SpatialRewardVectorWrapper(envs, estimator, PAIR)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"render_mode": "human"}, "^render_mode: 'human'"),
    ({"max_step_m": 0.0}, "^max_step_m: "),
    ({"success_threshold_m": -1.0}, "^success_threshold_m: "),
    ({"sim_config": SimConfig(randomise=True)}, "^sim_config.randomise: "),
    ({"substeps": 0}, "^substeps: "),
    ({"extra_camera_offsets_m": [(0.1, 0.2)]}, "^extra_camera_offsets_m: .*3 finite numbers"),
])
def test_reach_env_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TabletopReachEnv(**kwargs)


def gentle_approach(obs: np.ndarray, gap_m: float) -> np.ndarray:
    """Scripted policy: towards the can's centre, slowing down to stop about 8 mm short of its surface."""
    direction = (obs[3:6] - obs[:3]) / np.linalg.norm(obs[3:6] - obs[:3])
    return (direction * min(1.0, max(gap_m - 0.008, 0.0) / 0.012)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 3])
def test_physical_reach_cannot_be_solved_by_pushing_through(seed: int, closing: Callable) -> None:
    env = closing(gym.make(REACH_ID))
    obs, info = env.reset(seed=seed)
    gaps, rewards, infos = [], [], []
    truncated = False
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(towards_target(obs))
        assert not terminated
        gaps.append(info["true_distance_m"])
        rewards.append(reward)
        infos.append(info)
    assert not any(i["is_success"] for i in infos[-10:]), "driving through the can must not count as reaching it"
    assert info["target_disturbed"] and (info["target_moved_m"] >= 0.01 or info["target_tilt_deg"] >= 10.0)
    # The policy sees what the reward depends on: the can's displacement, its tilt and the latched flag.
    np.testing.assert_allclose(np.linalg.norm(obs[9:12]), info["target_moved_m"], atol=1e-5)
    assert obs[12] == pytest.approx(info["target_tilt_deg"] / 90.0, abs=1e-5) and obs[13] == 1.0
    # The gripper stops at (or pushes) the surface: no interpenetration beyond the soft contacts' give.
    assert min(gaps) > -0.002, f"the gripper entered the can by {-min(gaps) * 1e3:.1f} mm"
    # Once disturbed, every step pays the penalty: worse than any undisturbed step could be.
    first = next(k for k, i in enumerate(infos) if i["target_disturbed"])
    assert max(rewards[first:]) <= -0.5 < min(rewards[:first])


@pytest.mark.parametrize("seed", [0, 3])
def test_physical_reach_gentle_approach_succeeds(seed: int, closing: Callable) -> None:
    env = closing(gym.make(REACH_ID))
    obs, info = env.reset(seed=seed)
    truncated = False
    while not truncated:
        obs, reward, _, truncated, info = env.step(gentle_approach(obs, info["true_distance_m"]))
    assert info["is_success"] and not info["target_disturbed"]
    assert 0.0 <= info["true_distance_m"] < 0.02 and info["target_moved_m"] < 1e-3
    assert obs[13] == 0.0 and np.linalg.norm(obs[9:12]) < 1e-3
    assert reward == -info["true_distance_m"]


def test_physical_reach_observes_the_gripper_velocity(closing: Callable) -> None:
    env = closing(gym.make(REACH_ID))
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs[6:9], 0.0, atol=1e-3)   # at rest after reset
    before = obs[:3].copy()
    obs, *_ = env.step(np.array([1.0, 0.0, 0.0], np.float32))
    # A body with inertia, pulled after its driver: moving along +x, at a speed the last move roughly implies.
    assert obs[6] > 0.0 and abs(obs[7]) < 0.2 * obs[6]
    assert 0.3 < obs[6] / ((obs[0] - before[0]) / 0.1) < 3.0


def test_physical_scene_is_an_option_and_the_static_scene_is_unchanged() -> None:
    from spatialvlm_ros.sim.scene import build_mjcf, make_layout
    cfg = SimConfig()
    layout = make_layout(cfg)
    static = build_mjcf(cfg, layout)
    assert static == build_mjcf(cfg, layout, free_target=False)
    assert "freejoint" not in static and "equality" not in static and 'mocap="true"' in static
    physical = build_mjcf(cfg, layout, free_target=True)
    assert physical.count("<freejoint") == 2 and "<weld" in physical


class _SideReadsFurther:
    """Wraps an estimator: in the side camera's frames every distance reads 10 cm more (fusion must pick it)."""

    def __init__(self, inner: DistanceEstimator) -> None:
        self.inner = inner

    def estimate(self, frame: Any, pairs: Any, kind: Any) -> list:
        found = self.inner.estimate(frame, pairs, kind)
        if frame.frame_id != "camera1_color_optical_frame":
            return found
        return [dataclasses.replace(e, distance_m=e.distance_m + 0.1) for e in found]


def test_all_views_fuse_each_cameras_estimate(estimator: DistanceEstimator, closing: Callable) -> None:
    """With a second camera and views="all", the reward reads the larger of the two cameras' estimates."""
    from spatialvlm_ros.gym.reach import SIDE_CAMERA_OFFSET_M
    from spatialvlm_ros.types import DistanceKind, Pair
    side_further = _SideReadsFurther(estimator)
    env = closing(gym.make(REACH_ID, extra_camera_offsets_m=(SIDE_CAMERA_OFFSET_M,)))
    wrapped = SpatialRewardWrapper(env, side_further, PAIR, reward_config=NEGATIVE, views="all")
    plain = closing(SpatialRewardWrapper(gym.make(REACH_ID), estimator, PAIR, reward_config=NEGATIVE))
    obs, _ = wrapped.reset(seed=4)
    plain.reset(seed=4)
    for _ in range(6):
        action = towards_target(obs)
        obs, reward, _, _, info = wrapped.step(action)
        _, _, _, _, plain_info = plain.step(action)
        main, side = env.unwrapped.render_rgbd_views()
        [from_side] = estimator.estimate(side, [Pair.parse(PAIR)], DistanceKind.GAP)
        assert from_side.valid and info["spatial_distance_m"] == pytest.approx(from_side.distance_m + 0.1)
        assert reward == pytest.approx(-info["spatial_distance_m"] / 0.1)
        # The extra camera only renders: the main view and the episode are those of an env without it.
        assert plain_info["true_distance_m"] == info["true_distance_m"]
        np.testing.assert_array_equal(main.rgb, plain.unwrapped.render_rgbd().rgb)
    vec = closing(SpatialRewardVectorWrapper(
        SyncVectorEnv([lambda: gym.make(REACH_ID, extra_camera_offsets_m=(SIDE_CAMERA_OFFSET_M,))]), side_further,
        PAIR, reward_config=NEGATIVE, views="all"))
    vec.reset(seed=[4])
    _, _, _, _, vinfo = vec.step(np.zeros((1, 3), np.float32))
    _, side = vec.unwrapped.envs[0].unwrapped.render_rgbd_views()
    assert vinfo["spatial_distance_m"][0] == pytest.approx(
        estimator.estimate(side, [Pair.parse(PAIR)], DistanceKind.GAP)[0].distance_m + 0.1)


def test_the_wrist_camera_renders_last_and_changes_nothing_else(closing: Callable) -> None:
    """``wrist_camera=True``: one more view, last, that moves with the gripper; the main view and episode as without."""
    wristed, plain = closing(gym.make(REACH_ID, wrist_camera=True)), closing(gym.make(REACH_ID))
    obs, _ = wristed.reset(seed=4)
    plain.reset(seed=4)
    before = wristed.unwrapped.render_rgbd_views()
    for _ in range(5):
        action = towards_target(obs)
        obs, _, _, _, info = wristed.step(action)
        _, _, _, _, plain_info = plain.step(action)
    main, wrist = wristed.unwrapped.render_rgbd_views()
    assert len(before) == 2 and wrist.frame_id == "camera1_color_optical_frame"
    assert info["true_distance_m"] == plain_info["true_distance_m"]
    np.testing.assert_array_equal(main.rgb, plain.unwrapped.render_rgbd().rgb)
    assert not np.array_equal(wrist.rgb, before[1].rgb)     # the gripper moved, and the camera with it


class _Recording:
    """Passes estimates through and keeps the frames it was asked about."""

    def __init__(self, estimator: DistanceEstimator) -> None:
        self.estimator, self.frames = estimator, []

    def estimate(self, frame: Any, pairs: Any, kind: Any) -> list[Any]:
        self.frames.append(frame)
        return self.estimator.estimate(frame, pairs, kind)


def test_views_last_reads_the_wrist_camera_alone(estimator: DistanceEstimator, closing: Callable) -> None:
    """views="last": the reward reads the env's last camera (the wrist one) only, with that camera's own pose."""
    from spatialvlm_ros.types import DistanceKind, Pair
    recording = _Recording(estimator)
    env = closing(gym.make(REACH_ID, wrist_camera=True))
    wrapped = SpatialRewardWrapper(env, recording, PAIR, reward_config=NEGATIVE, views="last")
    obs, _ = wrapped.reset(seed=4)
    for _ in range(3):
        obs, reward, _, _, info = wrapped.step(towards_target(obs))
    _, wrist = env.unwrapped.render_rgbd_views()
    assert [f.frame_id for f in recording.frames] == ["camera1_color_optical_frame"] * 4   # reset and 3 steps
    # Not the env's gripper_pose(), which is in the main camera's frame: the wrist frame's own.
    np.testing.assert_array_equal(recording.frames[-1].gripper_pose, wrist.gripper_pose)
    assert not np.allclose(wrist.gripper_pose, env.unwrapped.gripper_pose()[0])
    [expected] = estimator.estimate(wrist, [Pair.parse(PAIR)], DistanceKind.GAP)
    assert info["spatial_distance_m"] == pytest.approx(expected.distance_m)
    vec_recording = _Recording(estimator)
    vec = closing(SpatialRewardVectorWrapper(SyncVectorEnv([lambda: gym.make(REACH_ID, wrist_camera=True)]),
                                             vec_recording, PAIR, reward_config=NEGATIVE, views="last"))
    vec.reset(seed=[4])
    vec.step(np.zeros((1, 3), np.float32))
    assert {f.frame_id for f in vec_recording.frames} == {"camera1_color_optical_frame"}


@pytest.mark.parametrize(("env_id", "kwargs", "match"), [
    (REACH_ID, {"views": "both"}, "^views: 'both'"),
    (REACH_ID, {"views": "all", "intrinsics": CameraIntrinsics.from_fov(160, 120, 58.0)}, "^views: 'all' takes"),
    ("Pendulum-v1", {"views": "all"}, "^env: .*render_rgbd_views"),
    ("Pendulum-v1", {"views": "last"}, "^env: .*render_rgbd_views.*views='last'"),
])
def test_bad_views_are_refused(env_id: str, kwargs: dict, match: str, estimator: DistanceEstimator,
                               closing: Callable) -> None:
    with pytest.raises(ConfigError, match=match):
        SpatialRewardWrapper(closing(gym.make(env_id)), estimator, PAIR, **kwargs)


def test_views_that_are_not_frames_are_a_clear_error(estimator: DistanceEstimator, closing: Callable) -> None:
    """An env whose render_rgbd_views() gives nothing usable: a ConfigError naming it, not an IndexError."""

    class NoViews(gym.Wrapper):
        def render_rgbd_views(self) -> tuple:
            return ()

    env = SpatialRewardWrapper(closing(NoViews(gym.make(REACH_ID))), estimator, PAIR, views="all")
    with pytest.raises(ConfigError, match=r"^env: .*render_rgbd_views\(\) must give a non-empty tuple of Frame"):
        env.reset(seed=0)
    vec = closing(SpatialRewardVectorWrapper(SyncVectorEnv([lambda: NoViews(gym.make(REACH_ID))]), estimator, PAIR,
                                             views="all"))
    with pytest.raises(ConfigError, match=r"^env: sub-env 0 render_rgbd_views"):
        vec.reset(seed=0)
