"""How well the compact VLM's gap tracks the truth on the reach env's own camera frames (what ``--reward vlm`` sees).

SpatialVLM/TabletopReach-v0 renders 160x120 RGB. Each episode (seeded, never a training seed) drives the
gripper straight at the can with a proportional controller, slowly enough that the gap shrinks over the
whole episode, and estimates the gap on every frame with the estimator ``--reward vlm`` builds
(``scripts/train_reach.py``: the packaged compact VLM, greedy, one answer, RGB only).

Prints per-episode Spearman(estimate, true gap), and per band of the true gap (< 2 cm, where the reach
counts as a success; 2-5 cm; 5-10 cm; >= 10 cm) the median estimate and median absolute error.

A policy does not approach in a straight line: it explores, and it will find any pose where the reward pays
the success bonus (estimate under 2 cm) without a success. The wandering episodes (as many as ``--episodes``)
drift towards the can under uniform action noise up to a full action on each axis; the benchmark reports how often the
estimate reads under 2 cm when the true gap is at least 5 cm (a **false bonus**) and when it is under 2 cm
(a **true bonus**).

Where those poses are: the **direction map** puts the gripper (kinematic env, its orientation fixed as in the
reach) at exact gaps of 0-12 cm from the can along nine directions (left, right, towards the camera, away
from it, above, and between) and prints the estimate at each. Along the camera's line of sight a single RGB
view sees little change, which is where a policy finds its bonus.

**A second camera**: the env also renders its side camera (``SIDE_CAMERA_OFFSET_M``, or ``--side-offset X Y Z``),
or with ``--wrist`` the wrist camera fixed to the gripper (``WRIST_CAMERA_POS``); the main camera's frames are
the same as without it. Every frame and map cell is estimated in both views: the second view alone
(``second_view_bands``, ``wander_second_view``, ``direction_map.second_view_*``) and the two fused as
``SpatialRewardWrapper(views="all")`` does, the larger estimate (``wander_two_views``,
``direction_map.two_views_*``).

Last line: JSON with ``spearman_per_episode``, ``bands``, ``frames``, ``wander`` (the main view), the second
view's and the fused figures, and ``direction_map`` (direction -> estimates in metres at ``MAP_GAPS_M``;
``far_contact_reads`` / ``near_contact_reads``: the share of its cells with a true gap >= 5 cm / under 2 cm that
read under 2 cm).

``--mirror`` asks every question on the mirror image too and averages (``estimator.vlm.mirror``, what
``--reward vlm_mirror`` uses).

``--zoom-weights DIR`` adds the compact VLM's second look (``estimator.vlm.compact.zoom_weights``): it asks again
on a window around the pair, which needs frames with more pixels than the model reads, so the env then renders
320x240 (``--size`` to change).

Usage: python benchmarks/vlm_reach_frames.py [--episodes 4] [--steps 100] [--weights DIR] [--mirror]
       [--zoom-weights DIR] [--size WxH] [--side-offset X Y Z | --wrist] [--seed-base N] [--smoke]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from scipy.stats import spearmanr

from spatialvlm_ros.config import EstimatorConfig
from spatialvlm_ros.estimation import DistanceEstimator, build_estimator
from spatialvlm_ros.types import DistanceKind, Pair
from spatialvlm_ros.estimation.views import fuse_views
from spatialvlm_ros.gym import REACH_ID
from spatialvlm_ros.gym.reach import DEFAULT_SIM, SIDE_CAMERA_OFFSET_M
from spatialvlm_ros.config import CompactVLMConfig, SimConfig, VLMConfig
from spatialvlm_ros.cli.vlm import image_size

from _common import BenchmarkParser, emit, median

FIGURES = ("side_offset_m.*", "seed_base", "second_view_bands.*.median_abs_error_m",
           "wander_second_view.false_bonus_rate", "direction_map.second_view_far_contact_reads",
           "spearman_per_episode.*", "bands.*.median_estimate_m", "bands.*.median_abs_error_m", "frames",
           "invalid_rate", "wander.far_frames", "wander.near_frames", "wander.false_bonus_rate",
           "direction_map.far_contact_reads", "direction_map.near_contact_reads", "wander_two_views.false_bonus_rate",
           "direction_map.two_views_far_contact_reads", "direction_map.two_views_near_contact_reads")
# wander.true_bonus_rate is NaN (null) when no wandering frame came under 2 cm (a short --smoke run).

BANDS_M = ((0.0, 0.02), (0.02, 0.05), (0.05, 0.10), (0.10, np.inf))
SEED_BASE = 2_000_000        # far from the training (0...) and evaluation (1,000,000...) seeds
PAIR = Pair("yellow gripper", "red can")
SUCCESS_M = 0.02             # the reach's success band, where the reward's bonus is paid
MAP_GAPS_M = (0.0, 0.01, 0.03, 0.05, 0.08, 0.12)
# World directions from the can's centre: the reach camera looks along +y, so -y is towards it.
MAP_DIRECTIONS = {"left": (-1, 0, 0), "right": (1, 0, 0), "towards camera": (0, -1, 0), "away": (0, 1, 0),
                  "above": (0, 0, 1), "above left": (-1, 0, 1), "above towards camera": (0, -1, 1),
                  "above away": (0, 1, 1), "left towards camera": (-1, -1, 0.3)}


def gaps(estimator: DistanceEstimator, frames: tuple) -> np.ndarray:
    """(main view's, second view's, the views' fused) estimates in metres, NaN where invalid or absent."""
    per_view = [estimator.estimate(f, [PAIR], DistanceKind.GAP) for f in frames]
    picks = (per_view[0][0], per_view[1][0] if len(per_view) > 1 else None, fuse_views(per_view)[0])
    return np.array([np.nan if e is None or not e.valid else e.distance_m for e in picks])


def approach(env: gym.Env, estimator: DistanceEstimator, seed: int, steps: int,
             wander: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(estimates (steps, 3): main view, second view, fused; truths) in metres along one slow approach.

    ``wander``: uniform action noise of this size on top of the pull (a seeded random drift around the can).
    """
    obs, _ = env.reset(seed=seed)
    noise = np.random.default_rng(seed)
    estimates, truths = [], []
    for _ in range(steps):
        # Each step asks for 3.6% of the offset to the can's centre (the driver moves 3 cm per unit action); the
        # dynamic gripper lags its driver, so the gap shrinks from ~25 cm to contact over ~90 steps and every
        # band below gets frames.
        pull = 1.2 * (obs[3:6] - obs[:3]) + wander * noise.uniform(-1.0, 1.0, 3)
        obs, _, _, _, info = env.step(np.clip(pull, -1.0, 1.0).astype(np.float32))
        estimates.append(gaps(estimator, env.unwrapped.render_rgbd_views()))
        truths.append(max(info["true_distance_m"], 0.0))
    return np.asarray(estimates), np.asarray(truths)


Grid = dict[str, list[float | None]]


def direction_map(estimator: DistanceEstimator, seed: int, sim_config: SimConfig,
                  cameras: dict[str, Any]) -> tuple[Grid, Grid, Grid]:
    """Direction -> the estimated gap (metres, None where invalid) at each of ``MAP_GAPS_M`` along it.

    Three maps: the main view's, the second camera's (``cameras``: the env's camera arguments), the two fused.
    """
    env = gym.make(REACH_ID, physics=False, sim_config=sim_config, **cameras)
    grids: tuple[Grid, Grid, Grid] = ({}, {}, {})
    try:
        env.reset(seed=seed)
        sim = env.unwrapped.sim
        for name, direction in MAP_DIRECTIONS.items():
            for grid in grids:
                grid[name] = []
            for gap in MAP_GAPS_M:
                position = sim.position_at_gap(np.asarray(direction, dtype=float), gap)
                read = gaps(estimator, tuple(sim.render_at(position, camera=k).frame for k in (0, 1)))
                for grid, value in zip(grids, read):
                    grid[name].append(None if np.isnan(value) else round(float(value), 3))
    finally:
        env.close()
    return grids


def band_figures(estimates: np.ndarray, truths: np.ndarray) -> list[dict[str, Any]]:
    """Per band of ``BANDS_M`` with frames: the frames, the median estimate and the median absolute error."""
    bands = []
    for lo, hi in BANDS_M:
        inside = (truths >= lo) & (truths < hi) & np.isfinite(estimates)
        if inside.any():
            bands.append({"true_gap_m": [lo, None if np.isinf(hi) else hi], "frames": int(inside.sum()),
                          "median_estimate_m": round(median(estimates[inside]), 3),
                          "median_abs_error_m": round(median(np.abs(estimates - truths)[inside]), 3)})
    return bands


def main() -> None:
    """Run the approaches; print the table and the JSON line."""
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--episodes", type=int, default=4, smoke=1)
    parser.add_argument("--steps", type=int, default=100, smoke=10)
    parser.add_argument("--weights", default="", help="compact weights folder (default: the packaged one)")
    parser.add_argument("--mirror", action="store_true", help="also ask on the mirror image and average")
    parser.add_argument("--zoom-weights", default="",
                        help="second look's weights folder (estimator.vlm.compact.zoom_weights; default: none)")
    parser.add_argument("--size", type=image_size, default=None, metavar="WxH",
                        help="the env's render size (default: 160x120, or 320x240 with --zoom-weights)")
    parser.add_argument("--side-offset", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="the second camera's offset from the main eye, metres, world (default: the side "
                             "camera, SIDE_CAMERA_OFFSET_M)")
    parser.add_argument("--wrist", action="store_true",
                        help="the second camera is the wrist camera (fixed to the gripper) instead of a side one")
    parser.add_argument("--seed-base", type=int, default=SEED_BASE,
                        help="first approach seed; wandering episodes from +1000, the map at +500 (choose a "
                             "camera on other seeds than the ones you report)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vlm = VLMConfig(backend="compact", samples=1, mirror=args.mirror,
                    compact=CompactVLMConfig(weights=args.weights, temperature=0.0, zoom_weights=args.zoom_weights))
    estimator = build_estimator(EstimatorConfig(backend="vlm", vlm=vlm))
    width, height = args.size or ((320, 240) if args.zoom_weights else (160, 120))
    sim_config = dataclasses.replace(DEFAULT_SIM, width=width, height=height)
    if args.wrist and args.side_offset is not None:
        parser.error("--wrist makes the wrist camera the second one; --side-offset places a side camera: give one")
    side = tuple(args.side_offset or SIDE_CAMERA_OFFSET_M)
    cameras: dict[str, Any] = {"wrist_camera": True} if args.wrist else {"extra_camera_offsets_m": (side,)}
    second = "the wrist camera" if args.wrist else "the side camera"
    env = gym.make(REACH_ID, sim_config=sim_config, **cameras)
    runs = [approach(env, estimator, args.seed_base + k, args.steps) for k in range(args.episodes)]
    wandering = [approach(env, estimator, args.seed_base + 1000 + k, args.steps, wander=1.0)
                 for k in range(args.episodes)]
    env.close()
    rhos = [float(spearmanr(r[np.isfinite(r[:, 0]), 0], t[np.isfinite(r[:, 0])])[0]) for r, t in runs]
    readings, truths = np.concatenate([r for r, _ in runs]), np.concatenate([t for _, t in runs])
    estimates = readings[:, 0]
    bands, second_bands = band_figures(estimates, truths), band_figures(readings[:, 1], truths)
    how = (" (mirror averaged)" if args.mirror else "") + (" with its second look" if args.zoom_weights else "")
    print(f"compact VLM{how} on {REACH_ID} frames ({width}x{height}): {args.episodes} approaches x {args.steps} steps")
    print("  Spearman per approach: " + ", ".join(f"{r:.2f}" for r in rhos))
    for view, view_bands in (("main view", bands), (second, second_bands)):
        for band in view_bands:
            lo, hi = band["true_gap_m"]
            label = f"{100 * lo:.0f}-{100 * hi:.0f} cm" if hi is not None else f">= {100 * lo:.0f} cm"
            print(f"  {view}, true gap {label:>9}: {band['frames']:3d} frames, median estimate "
                  f"{band['median_estimate_m']:.3f} m, median |error| {band['median_abs_error_m']:.3f} m")
    w_readings, w_true = np.concatenate([r for r, _ in wandering]), np.concatenate([t for _, t in wandering])

    def bonus_rates(w_est: np.ndarray, views: str) -> dict[str, float | int]:
        bonus = w_est < SUCCESS_M      # NaN (invalid) compares False: no bonus
        far, near = w_true >= 0.05, w_true < SUCCESS_M
        rates = {"frames": int(len(w_true)), "far_frames": int(far.sum()), "near_frames": int(near.sum()),
                 "false_bonus_rate": float(bonus[far].mean()) if far.any() else float("nan"),
                 "true_bonus_rate": float(bonus[near].mean()) if near.any() else float("nan")}
        print(f"  wandering ({args.episodes} x {args.steps} steps, {views}): estimate < 2 cm on "
              f"{rates['false_bonus_rate']:.1%} of {rates['far_frames']} frames with a true gap >= 5 cm (false bonus), "
              f"{rates['true_bonus_rate']:.1%} of {rates['near_frames']} frames under 2 cm")
        return rates

    views = (("", "main view"), ("second_view_", second), ("two_views_", "two views"))
    wander = {prefix: bonus_rates(w_readings[:, k], label) for k, (prefix, label) in enumerate(views)}
    grids = direction_map(estimator, args.seed_base + 500, sim_config, cameras)
    gaps_cm = " / ".join(f"{100 * g:.0f}" for g in MAP_GAPS_M)
    print(f"  direction map, estimate (cm) at a true gap of {gaps_cm} cm, main view | {second} | two views:")

    def cm(row: list[float | None]) -> str:
        return " / ".join("inv" if e is None else f"{100 * e:.1f}" for e in row)

    for name in grids[0]:
        print(f"    {name:>21}: " + " | ".join(cm(grid[name]) for grid in grids))

    def contact_reads(cells_of: Grid, keep: Callable[[float], bool]) -> float:
        cells = [e for row in cells_of.values() for g, e in zip(MAP_GAPS_M, row) if keep(g)]
        return float(np.mean([e is not None and e < SUCCESS_M for e in cells]))

    reads = {f"{prefix}{which}_contact_reads": contact_reads(grid, keep)
             for (prefix, _), grid in zip(views, grids)
             for which, keep in (("far", lambda g: g >= 0.05), ("near", lambda g: g < SUCCESS_M))}
    for prefix, label in views:
        print(f"  direction map ({label}): read under 2 cm on {reads[prefix + 'far_contact_reads']:.0%} of the "
              f"cells with a true gap >= 5 cm, {reads[prefix + 'near_contact_reads']:.0%} of those under 2 cm")
    emit({"second_camera": "wrist" if args.wrist else "side", "side_offset_m": None if args.wrist else list(side),
          "seed_base": args.seed_base, "spearman_per_episode": [round(r, 3) for r in rhos], "bands": bands,
          "second_view_bands": second_bands, "frames": int(len(truths)),
          "invalid_rate": float(np.mean(~np.isfinite(estimates))), "wander": wander[""],
          "wander_second_view": wander["second_view_"], "wander_two_views": wander["two_views_"],
          "direction_map": {"gaps_m": list(MAP_GAPS_M), "estimates_m": grids[0],
                            "second_view_estimates_m": grids[1], "two_views_estimates_m": grids[2], **reads}})


if __name__ == "__main__":
    main()
