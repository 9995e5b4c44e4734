"""Cost of the spatial reward wrapper on SpatialVLM/TabletopReach-v0, against the env's own step + render.

Per step, medians over ``--steps`` steps (random actions, seeded; resets are not timed):

* the bare env's ``step()`` + ``render()`` (its camera frame, which the wrapper needs anyway);
* the wrapped env's ``step()`` with the geometric backend (colour-prompt grounding, sensor depth), which
  renders the RGB-D frame and estimates on it;
* the estimator alone on the wrapped env's frames;
* a ``SyncVectorEnv`` of ``--num-envs`` reach envs, bare (step + render) and wrapped, in env steps per second.

Prints a table and, as its last line, JSON with ``env_step_render_ms``, ``wrapped_step_ms``, ``ratio``,
``estimator_ms``, ``vector_step_render_steps_per_s`` and ``vector_wrapped_steps_per_s``.

Usage: python benchmarks/wrapper_overhead.py [--steps 300] [--num-envs 8] [--width 160 --height 120] [--smoke]
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import gymnasium as gym
import numpy as np

from spatialvlm_ros.config import EstimatorConfig
from spatialvlm_ros.types import DistanceKind, Pair
from spatialvlm_ros.estimation import build_estimator
from spatialvlm_ros.gym import REACH_ID, SpatialRewardVectorWrapper, SpatialRewardWrapper
from spatialvlm_ros.gym.reach import DEFAULT_SIM

from _common import BenchmarkParser, emit, median, percentile

FIGURES = ("env_step_render_ms", "wrapped_step_ms", "ratio", "estimator_ms", "vector_step_render_steps_per_s",
           "vector_wrapped_steps_per_s")
PAIR = "yellow gripper -> red can"


def step_times(step: Callable[[np.ndarray], bool], reset: Callable[[], None], actions: np.ndarray) -> np.ndarray:
    """Wall time (ms) of ``step(action)`` for each action; ``reset()`` (untimed) whenever step returns done."""
    reset()
    times = np.empty(len(actions))
    for k, action in enumerate(actions):
        start = time.perf_counter()
        done = step(action)
        times[k] = (time.perf_counter() - start) * 1e3
        if done:
            reset()
    return times


def single(env: gym.Env, actions: np.ndarray, render: bool) -> np.ndarray:
    """Step times of one env, with an explicit ``render()`` after each step when ``render``."""
    def step(action: np.ndarray) -> bool:
        _, _, terminated, truncated, _ = env.step(action)
        if render:
            env.render()
        return terminated or truncated
    return step_times(step, lambda: env.reset(seed=0), actions)


def vector(envs: gym.vector.VectorEnv, actions: np.ndarray, render: bool) -> float:
    """Env steps per second of a vector env (each call steps every sub-env)."""
    envs.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
        if render:
            envs.render()
    return envs.num_envs * len(actions) / (time.perf_counter() - start)


def main() -> None:
    """Parse arguments, measure, print the table and the JSON line."""
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--steps", type=int, default=300, smoke=8)
    parser.add_argument("--num-envs", type=int, default=8, smoke=2)
    parser.add_argument("--width", type=int, default=DEFAULT_SIM.width)
    parser.add_argument("--height", type=int, default=DEFAULT_SIM.height)
    args = parser.parse_args()
    sim_config = dataclasses.replace(DEFAULT_SIM, width=args.width, height=args.height)
    estimator = build_estimator(EstimatorConfig(grounding="colour_prompt"))
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(args.steps, 3)).astype(np.float32)

    def make() -> gym.Env:
        return gym.make(REACH_ID, render_mode="rgb_array", sim_config=sim_config)

    with make() as env:
        bare = single(env, actions, render=True)
    with SpatialRewardWrapper(make(), estimator, PAIR) as env:
        wrapped = single(env, actions, render=False)
        env.reset(seed=1)
        frames = []
        for action in actions[:40]:
            env.step(action)
            frames.append(env.get_wrapper_attr("render_rgbd")())   # cached: the frame the step estimated on
    pair = Pair.parse(PAIR)
    estimator_ms = []
    for frame in frames:
        start = time.perf_counter()
        estimator.estimate(frame, [pair], DistanceKind.GAP)
        estimator_ms.append((time.perf_counter() - start) * 1e3)

    vec_actions = rng.uniform(-1, 1, size=(max(1, args.steps // args.num_envs), args.num_envs, 3)).astype(np.float32)
    # Vector envs are no context managers; each is closed before the next opens its GL contexts.
    envs = gym.vector.SyncVectorEnv([make] * args.num_envs)
    vec_bare = vector(envs, vec_actions, render=True)
    envs.close()
    envs = SpatialRewardVectorWrapper(gym.vector.SyncVectorEnv([make] * args.num_envs), estimator, PAIR)
    vec_wrapped = vector(envs, vec_actions, render=False)
    envs.close()

    result = {
        "width": args.width, "height": args.height, "steps": args.steps, "num_envs": args.num_envs,
        "env_step_render_ms": median(bare), "wrapped_step_ms": median(wrapped),
        "ratio": median(wrapped) / median(bare), "estimator_ms": median(estimator_ms),
        "vector_step_render_steps_per_s": vec_bare, "vector_wrapped_steps_per_s": vec_wrapped,
    }
    print(f"{'measure':<44} {'median ms':>10} {'p90 ms':>8}")
    for label, times in (("env step + render (bare)", bare), ("wrapped step (render + geometric estimate)", wrapped),
                         ("estimator alone", estimator_ms)):
        print(f"{label:<44} {median(times):>10.2f} {percentile(times, 90):>8.2f}")
    print(f"wrapped / bare: {result['ratio']:.2f}x (target <= 1.5x)")
    print(f"{args.num_envs} envs (SyncVectorEnv): bare step + render {vec_bare:.0f} env steps/s, "
          f"wrapped {vec_wrapped:.0f} env steps/s")
    emit(result)


if __name__ == "__main__":
    main()
