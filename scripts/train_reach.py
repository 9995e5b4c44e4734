"""Train SAC on SpatialVLM/TabletopReach-v0 with the true reward and with rewards read off the camera.

All runs share seeds, step budget, hyperparameters, observation and reward shaping; only the gap the reward is
computed from differs: (a) ``true``, the exact gap from the simulator; (b) ``geometric`` (alias ``spatial``),
the geometric estimator's gap on the rendered RGB-D frame (colour-prompt grounding, sensor depth with
RealSense-like noise); (c) ``vlm``, the packaged compact spatial VLM's answer to "What is the gap between the
yellow gripper and the red can?" on the RGB frame alone (no depth); (d) ``vlm_two_views``, the same model asked
the same on two cameras' RGB frames (the main one and a second front right of it, ``SIDE_CAMERA_OFFSET_M``),
the larger answer taken (``SpatialRewardWrapper(views="all")``); (e) ``vlm_mirror``, the same model asked on the
main camera's RGB frame and on its mirror image, the two answers averaged (``estimator.vlm.mirror``); (f)
``vlm_wrist``, the same question on the frames of the wrist camera fixed to the gripper alone
(``wrist_camera=True``, ``views="last"``; the policy still observes what the others do). Each is
shaped by the same :class:`RewardConfig` (``negative``, ``scale_m`` 0.1, so ``-gap / 0.1 m``; on the physical task
plus a success bonus while the gap reads under 2 cm), no filter.

The env is the physical reach task (a free can; pushing or toppling it is flagged ``target_disturbed``). No
gap measurement sees that, so :class:`TargetDisturbedPenalty` takes the env's penalty for a disturbed can
(0.5 m of gap per step, 5 in reward units) from its info, for all three rewards alike. ``--kinematic`` trains
on the old kinematic task (the gripper passes through the can; no penalty, no bonus, the SAC settings its
figures were measured with).

Evaluation always uses the TRUE success criterion (``is_success`` at the episode's last step: 0 <= true gap
< 2 cm and the can undisturbed), with a deterministic policy on fixed evaluation seeds. Each reward is
trained once per seed. Writes a plot and a JSON file and prints the final figures (mean and spread over seeds).

Usage: python scripts/train_reach.py [--steps 20000] [--eval-every 2000]
       [--rewards true geometric vlm vlm_two_views vlm_mirror vlm_wrist]
       [--seeds 0 1 2] [--jobs 2] [--out docs/rl_reach] [--reuse docs/rl_reach.json] [--vlm-weights DIR]

``--reuse FILE [FILE ...]`` keeps those files' runs of the rewards not trained now (say, after retraining the VLM,
train ``--rewards vlm`` again and keep the true and geometric runs; a reward's runs come from the first file that
has them); each file must have the same task, steps, evaluation, seeds and settings, or the script refuses it.
``--rewards`` with no reward after it and ``--reuse`` trains nothing and combines the files' runs into ``--out``.
``--vlm-weights DIR`` reads the VLM rewards with a candidate's compact weights instead of the packaged ones (to
measure a model before shipping it). The JSON records them as ``vlm_weights`` ("packaged" without the option) for
the VLM runs trained in that call, outside the compared settings (they change no true or geometric run), so
``--reuse`` does not check them: combine VLM runs of different weights only on purpose.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC

from spatialvlm_ros.config import EstimatorConfig, RewardConfig, VLMConfig, from_flat, to_flat
from spatialvlm_ros.estimation import build_estimator
from spatialvlm_ros.gym import REACH_ID, SpatialRewardWrapper
from spatialvlm_ros.gym.reach import SIDE_CAMERA_OFFSET_M, TargetDisturbedPenalty
from spatialvlm_ros.reward import shape_distance

logger = logging.getLogger("train_reach")
REPO = Path(__file__).resolve().parent.parent
PAIR = "yellow gripper -> red can"
# Every reward is -gap in units of 10 cm: in metres it is too small for SAC's default entropy scale to learn
# quickly. Every frame is taken as it is (a filter's lag would make the reward depend on history, not state).
SCALE_M = 0.1
EVAL_SEED_BASE = 1_000_000   # evaluation episodes never share a seed with training ones


@dataclasses.dataclass(frozen=True)
class TaskSetup:
    """What a task trains with: SAC's settings and the reward shaping every gap source shares."""

    sac: dict
    reward: RewardConfig
    observation_gain: tuple[float, ...] | None = None   # per-dimension factors the policy's inputs are scaled by

    def wrap(self, env: gym.Env) -> gym.Env:
        """``env`` with its observations multiplied by :attr:`observation_gain` (unchanged when None)."""
        if self.observation_gain is None:
            return env
        gain = np.asarray(self.observation_gain, dtype=np.float32)
        space = env.observation_space
        scaled = gym.spaces.Box(space.low * gain, space.high * gain, dtype=np.float32)
        return gym.wrappers.TransformObservation(env, lambda obs: (obs * gain).astype(np.float32), scaled)


SETUPS = {
    # Tuned on the true reward only (training seeds 0 and 1, evaluation seeds 1,000,000+): with SAC's defaults
    # (gamma 0.99, lr 3e-4, 64x64), no bonus and absolute positions only, the true reward itself ended at 0% on
    # the physical task. The bonus makes the success band (< 2 cm) worth committing to; the shorter horizon and
    # larger critic steadied learning near the can; the scaled relative offset did most (see the README).
    "physical": TaskSetup(
        sac={"gamma": 0.95, "learning_rate": 1e-3, "learning_starts": 1000, "policy_kwargs": {"net_arch": [256, 256]}},
        reward=RewardConfig(shaping="negative", scale_m=SCALE_M, success_threshold_m=0.02, success_bonus=1.0,
                            filter="none", invalid_policy="hold_last"),
        # The gripper's velocity and the can's offset from it in decimetres per second / decimetres: metres leave
        # the few centimetres that decide success at the second decimal of an input.
        observation_gain=(1.0,) * 6 + (10.0,) * 3 + (1.0,) * 5 + (10.0,) * 3),
    # The settings the kinematic figures were measured with (a 6-D observation needs no more than 64x64).
    "kinematic": TaskSetup(
        sac={"learning_starts": 1000, "policy_kwargs": {"net_arch": [64, 64]}},
        reward=RewardConfig(shaping="negative", scale_m=SCALE_M, filter="none", invalid_policy="hold_last")),
}


def setup_for(kinematic: bool) -> TaskSetup:
    """The settings of the kinematic or the physical task."""
    return SETUPS["kinematic" if kinematic else "physical"]


_COMPACT_VLM = EstimatorConfig(backend="vlm", vlm=VLMConfig(backend="compact", samples=1))
#: The estimators behind the camera rewards: geometric on RGB-D, and the compact VLM (greedy, one answer) on RGB.
CAMERA_ESTIMATORS = {
    "geometric": EstimatorConfig(backend="geometric", grounding="colour_prompt"),
    "vlm": _COMPACT_VLM,
    "vlm_two_views": _COMPACT_VLM,
    "vlm_mirror": dataclasses.replace(_COMPACT_VLM, vlm=dataclasses.replace(_COMPACT_VLM.vlm, mirror=True)),
    "vlm_wrist": _COMPACT_VLM,
}
#: The camera rewards that read two views (the env then renders the side camera too; it only renders).
TWO_VIEWS = {"vlm_two_views"}
#: The camera rewards that read the wrist camera alone (the env then renders it too; it only renders).
WRIST_VIEW = {"vlm_wrist"}


@dataclasses.dataclass(frozen=True)
class EvalPoint:
    """True-criterion evaluation after ``steps`` training steps."""

    steps: int
    success_rate: float
    mean_final_gap_m: float
    disturbed_rate: float = float("nan")   # episodes that ended with the can disturbed (physical task only)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One training run: its reward source, learning curve and cost."""

    reward: str
    seed: int
    curve: tuple[EvalPoint, ...]
    wall_s: float
    spatial_invalid_rate: float   # fraction of training steps whose estimate was invalid (NaN for true)


class TrueGapReward(gym.Wrapper):
    """The reference reward: the simulator's exact gap (``info["true_distance_m"]``), shaped like the camera's."""

    def __init__(self, env: gym.Env, config: RewardConfig) -> None:
        super().__init__(env)
        self.config = config

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Step the env; replace its reward by the shaped true gap (0 when touching)."""
        obs, _, terminated, truncated, info = self.env.step(action)
        return obs, shape_distance(max(info["true_distance_m"], 0.0), self.config), terminated, truncated, info


def camera_estimator(reward: str, vlm_weights: str = "") -> EstimatorConfig:
    """The estimator settings behind camera reward ``reward``.

    ``vlm_weights``: a compact weights folder the VLM rewards read with ("" = the packaged weights).
    """
    config = CAMERA_ESTIMATORS[reward]
    if config.backend != "vlm" or not vlm_weights:
        return config
    return from_flat(EstimatorConfig, {**to_flat(config), "vlm.compact.weights": vlm_weights})


def make_train_env(reward: str, kinematic: bool = False, vlm_weights: str = "") -> gym.Env:
    """The reach env, its reward from the simulator (``true``) or from the camera (``geometric``, ``vlm``, ...)."""
    cameras = (SIDE_CAMERA_OFFSET_M,) if reward in TWO_VIEWS else ()
    env = gym.make(REACH_ID, physics=not kinematic, extra_camera_offsets_m=cameras, wrist_camera=reward in WRIST_VIEW)
    setup = setup_for(kinematic)
    config = setup.reward
    if reward in CAMERA_ESTIMATORS:
        estimator = build_estimator(camera_estimator(reward, vlm_weights))
        shaped = SpatialRewardWrapper(env, estimator, PAIR, reward_config=config, mode="replace",
                                      views="all" if reward in TWO_VIEWS else "last" if reward in WRIST_VIEW
                                      else "main")
    else:
        shaped = TrueGapReward(env, config)
    if not kinematic:
        shaped = TargetDisturbedPenalty(shaped, env.unwrapped.disturbed_penalty_m / SCALE_M)
    return setup.wrap(shaped)


def evaluate(model: SAC, env: gym.Env, episodes: int, steps: int) -> EvalPoint:
    """Success rate by the true criterion at each episode's last step, deterministic actions."""
    successes, gaps, disturbed = [], [], []
    for k in range(episodes):
        obs, info = env.reset(seed=EVAL_SEED_BASE + k)
        done = False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        successes.append(bool(info["is_success"]))
        gaps.append(float(info["true_distance_m"]))
        disturbed.append(float(info.get("target_disturbed", np.nan)))
    return EvalPoint(steps=steps, success_rate=float(np.mean(successes)), mean_final_gap_m=float(np.mean(gaps)),
                     disturbed_rate=float(np.mean(disturbed)))


class _InvalidCounter:
    """Counts spatial estimates flagged invalid during training (an SB3 functional callback)."""

    def __init__(self) -> None:
        self.steps = 0
        self.invalid = 0

    def __call__(self, locals_: dict, globals_: dict) -> bool:
        for info in locals_["infos"]:
            self.steps += 1
            self.invalid += not info.get("spatial_distance_valid", True)
        return True


def train(reward: str, steps: int, eval_every: int, eval_episodes: int, seed: int,
          kinematic: bool = False, vlm_weights: str = "") -> RunResult:
    """Train SAC for ``steps`` with ``reward``, evaluating every ``eval_every`` steps."""
    start = time.perf_counter()
    setup = setup_for(kinematic)
    env = make_train_env(reward, kinematic, vlm_weights)
    eval_env = setup.wrap(gym.make(REACH_ID, physics=not kinematic))   # no rendering: reads the true success flag
    model = SAC("MlpPolicy", env, seed=seed, verbose=0, **setup.sac)
    counter = _InvalidCounter()
    curve = [evaluate(model, eval_env, eval_episodes, 0)]
    while model.num_timesteps < steps:
        model.learn(min(eval_every, steps - model.num_timesteps), reset_num_timesteps=False, callback=counter)
        curve.append(evaluate(model, eval_env, eval_episodes, model.num_timesteps))
        last = curve[-1]
        logger.info("%s seed %d: %d steps, success %.2f, final gap %.3f m, disturbed %.2f, %.0f s", reward, seed,
                    last.steps, last.success_rate, last.mean_final_gap_m, last.disturbed_rate,
                    time.perf_counter() - start)
    env.close()
    eval_env.close()
    invalid = counter.invalid / counter.steps if reward in CAMERA_ESTIMATORS and counter.steps else float("nan")
    return RunResult(reward=reward, seed=seed, curve=tuple(curve), wall_s=time.perf_counter() - start,
                     spatial_invalid_rate=invalid)


def plot(results: list[RunResult], path: Path) -> None:
    """Success rate (true criterion) against training steps, one curve per reward."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for reward in dict.fromkeys(r.reward for r in results):
        runs = [r for r in results if r.reward == reward]
        steps = [p.steps for p in runs[0].curve]
        rates = np.array([[p.success_rate for p in r.curve] for r in runs])
        line, = ax.plot(steps, rates.mean(axis=0), marker="o", label=f"{reward} reward ({len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(steps, rates.min(axis=0), rates.max(axis=0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("training steps")
    ax.set_ylabel("success rate (true criterion)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("SAC on SpatialVLM/TabletopReach-v0")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _init_worker(threads: int) -> None:
    """Logging and torch threads, in the main process and in each worker."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(threads)


def settings(args: argparse.Namespace, setup: TaskSetup) -> dict[str, Any]:
    """What makes two runs comparable: the task, its SAC and reward settings, the budget and the evaluation."""
    gain = None if setup.observation_gain is None else list(setup.observation_gain)
    return {"env": REACH_ID, "task": "kinematic" if args.kinematic else "physical",
            "algorithm": "SAC (stable-baselines3)", "sac_settings": setup.sac, "observation_gain": gain,
            "steps": args.steps, "eval_every": args.eval_every, "eval_episodes": args.eval_episodes,
            "seeds": list(args.seeds), "reward_config": dataclasses.asdict(setup.reward)}


def reused_runs(path: Path, wanted: dict[str, Any], training: list[str]) -> list[RunResult]:
    """The runs of ``path`` (an earlier summary) whose rewards are not in ``training``.

    Raises:
        SystemExit: the file is not this script's JSON, or was made with other settings (its runs would not
            be comparable).
    """
    try:
        earlier = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"--reuse {path}: cannot read it ({err})") from err
    # Compared as JSON reads them back (tuples become lists).
    differ = sorted(key for key, value in wanted.items() if json.loads(json.dumps(value)) != earlier.get(key))
    if differ:
        raise SystemExit(f"--reuse {path}: made with other settings ({', '.join(differ)}); its runs are not "
                         "comparable")
    return [RunResult(reward=r["reward"], seed=r["seed"], curve=tuple(EvalPoint(**p) for p in r["curve"]),
                      wall_s=r["wall_s"], spatial_invalid_rate=r["spatial_invalid_rate"])
            for r in earlier["runs"] if r["reward"] not in training]


def reuse_all(paths: list[Path], wanted: dict[str, Any],
              training: list[str]) -> tuple[list[RunResult], list[dict[str, Any]]]:
    """:func:`reused_runs` over several files: each reward's runs from the first file that has them.

    Returns:
        The runs, and per file that gave some, ``{"file", "rewards"}`` (what ``reused_from`` records).
    """
    runs: list[RunResult] = []
    sources = []
    for path in paths:
        taken = training + sorted({r.reward for r in runs})
        more = reused_runs(path, wanted, taken)
        if more:
            runs += more
            sources.append({"file": str(path), "rewards": sorted({r.reward for r in more})})
    return runs, sources


def main() -> None:
    """Parse arguments, train each reward, write the plot and JSON, print the final figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rewards", "--reward", dest="rewards", nargs="*",
                        choices=("true", "spatial", *CAMERA_ESTIMATORS),
                        default=["true", "geometric", "vlm", "vlm_two_views", "vlm_mirror"],
                        help="reward source(s) to train with, in order (spatial = geometric); none with --reuse: "
                             "only combine the files' runs")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--eval-every", type=int, default=2_000)
    parser.add_argument("--eval-episodes", type=int, default=30)
    parser.add_argument("--seeds", "--seed", dest="seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinematic", action="store_true", help="the old kinematic task (the gripper passes "
                        "through the can)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (the machine is shared)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "rl_reach")
    parser.add_argument("--reuse", type=Path, nargs="+", default=[], help="earlier JSON files of this script whose "
                        "runs of other rewards to keep (same settings; a reward's runs from the first file with them)")
    parser.add_argument("--vlm-weights", default="", help="compact weights folder the VLM rewards read with "
                        "(default: the packaged weights)")
    args = parser.parse_args()
    _init_worker(args.threads)

    setup = setup_for(args.kinematic)
    rewards = list(dict.fromkeys("geometric" if r == "spatial" else r for r in args.rewards))
    reused, sources = reuse_all(args.reuse, settings(args, setup), rewards)
    runs = [(r, args.steps, args.eval_every, args.eval_episodes, seed, args.kinematic, args.vlm_weights)
            for r in rewards for seed in args.seeds]
    if not runs and not reused:
        parser.error("nothing to train (--rewards is empty) and nothing reused (--reuse)")
    if not runs:
        results = []
    elif args.jobs > 1:
        # Fresh processes (spawn): each run gets its own renderer and torch state; results keep the run order.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_init_worker,
                                 initargs=(args.threads,)) as pool:
            results = list(pool.map(train, *zip(*runs)))
    else:
        results = [train(*run) for run in runs]
    results = reused + results
    rewards = list(dict.fromkeys(r.reward for r in results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(results, args.out.with_suffix(".png"))
    final = {reward: float(np.mean([r.curve[-1].success_rate for r in results if r.reward == reward]))
             for reward in rewards}
    final_by_seed = {reward: [r.curve[-1].success_rate for r in results if r.reward == reward] for reward in rewards}
    summary = {
        **settings(args, setup),
        "final_success_rate": final, "final_success_rate_by_seed": final_by_seed,
        "reused_from": sources or None,
        "vlm_weights": args.vlm_weights or "packaged",
        "runs": [dataclasses.asdict(r) for r in results],
    }
    for reward in CAMERA_ESTIMATORS:
        if {"true", reward} <= final.keys() and final["true"] > 0:
            summary[f"{reward}_over_true"] = final[reward] / final["true"]
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    for r in results:
        last = r.curve[-1]
        print(f"{r.reward:>13} reward, seed {r.seed}: success {last.success_rate:.2f} at {last.steps} steps, "
              f"final gap {last.mean_final_gap_m:.3f} m, disturbed {last.disturbed_rate:.2f}, {r.wall_s:.0f} s")
    for reward in CAMERA_ESTIMATORS:
        if f"{reward}_over_true" in summary:
            print(f"{reward} / true success: {summary[f'{reward}_over_true']:.2f}")


if __name__ == "__main__":
    main()
