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

**Two views**: the env also renders its side camera (``SIDE_CAMERA_OFFSET_M``, or ``--side-offset X Y Z``;
the main camera's frames are the same as without it), and every wandering frame and map cell is estimated in
both views and fused as ``SpatialRewardWrapper(views="all")`` does (the larger estimate): ``wander_two_views`` and
``direction_map.two_views_far_contact_reads`` / ``two_views_near_contact_reads``.

Last line: JSON with ``spearman_per_episode``, ``bands``, ``frames``, ``wander``, ``wander_two_views`` and
``direction_map`` (direction -> estimates in metres at ``MAP_GAPS_M``; ``far_contact_reads`` /
``near_contact_reads``: the share of its cells with a true gap >= 5 cm / under 2 cm that read under 2 cm).

``--mirror`` asks every question on the mirror image too and averages (``estimator.vlm.mirror``, what
``--reward vlm_mirror`` uses).

``--zoom-weights DIR`` adds the compact VLM's second look (``estimator.vlm.compact.zoom_weights``): it asks again
on a window around the pair, which needs frames with more pixels than the model reads, so the env then renders
320x240 (``--size`` to change).

Usage: python benchmarks/vlm_reach_frames.py [--episodes 4] [--steps 100] [--weights DIR] [--mirror]
       [--zoom-weights DIR] [--size WxH] [--side-offset X Y Z] [--seed-base N] [--smoke]
"""

from __future__ import annotations

import dataclasses
from typing import Callable

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

FIGURES = ("side_offset_m.*", "seed_base",
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


def gaps(estimator: DistanceEstimator, frames: tuple) -> tuple[float, float]:
    """(main view's estimate, the views' fused estimate) in metres, NaN where invalid."""
    per_view = [estimator.estimate(f, [PAIR], DistanceKind.GAP) for f in frames]
    return tuple(e.distance_m if e.valid else np.nan for e in (per_view[0][0], fuse_views(per_view)[0]))


def approach(env: gym.Env, estimator: DistanceEstimator, seed: int, steps: int,
             wander: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(main-view estimates, two-view estimates, truths) in metres along one slow approach; NaN where invalid.

    ``wander``: uniform action noise of this size on top of the pull (a seeded random drift around the can).
    Only wandering episodes ask the side camera too (the straight approaches report the main view): without
    wander the two-view estimates are the main view's.
    """
    obs, _ = env.reset(seed=seed)
    noise = np.random.default_rng(seed)
    estimates, fused, truths = [], [], []
    for _ in range(steps):
        # Each step asks for 3.6% of the offset to the can's centre (the driver moves 3 cm per unit action); the
        # dynamic gripper lags its driver, so the gap shrinks from ~25 cm to contact over ~90 steps and every
        # band below gets frames.
        pull = 1.2 * (obs[3:6] - obs[:3]) + wander * noise.uniform(-1.0, 1.0, 3)
        obs, _, _, _, info = env.step(np.clip(pull, -1.0, 1.0).astype(np.float32))
        views = env.unwrapped.render_rgbd_views() if wander else (env.unwrapped.render_rgbd(),)
        main, both = gaps(estimator, views)
        estimates.append(main)
        fused.append(both)
        truths.append(max(info["true_distance_m"], 0.0))
    return np.asarray(estimates), np.asarray(fused), np.asarray(truths)


Grid = dict[str, list[float | None]]


def direction_map(estimator: DistanceEstimator, seed: int, sim_config: SimConfig,
                  side_offset_m: tuple[float, ...]) -> tuple[Grid, Grid]:
    """Direction -> the estimated gap (metres, None where invalid) at each of ``MAP_GAPS_M`` along it.

    Two maps: the main view's, and the two views' fused (the second camera at ``side_offset_m``).
    """
    env = gym.make(REACH_ID, physics=False, sim_config=sim_config, extra_camera_offsets_m=(side_offset_m,))
    out: Grid = {}
    two: Grid = {}
    try:
        env.reset(seed=seed)
        sim = env.unwrapped.sim
        for name, direction in MAP_DIRECTIONS.items():
            out[name], two[name] = [], []
            for gap in MAP_GAPS_M:
                position = sim.position_at_gap(np.asarray(direction, dtype=float), gap)
                main, both = gaps(estimator, tuple(sim.render_at(position, camera=k).frame for k in (0, 1)))
                out[name].append(None if np.isnan(main) else round(main, 3))
                two[name].append(None if np.isnan(both) else round(both, 3))
    finally:
        env.close()
    return out, two


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
    parser.add_argument("--side-offset", type=float, nargs=3, default=SIDE_CAMERA_OFFSET_M, metavar=("X", "Y", "Z"),
                        help="the second camera's offset from the main eye, metres, world (default: the side "
                             "camera, SIDE_CAMERA_OFFSET_M)")
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
    side = tuple(args.side_offset)
    env = gym.make(REACH_ID, sim_config=sim_config, extra_camera_offsets_m=(side,))
    runs = [approach(env, estimator, args.seed_base + k, args.steps) for k in range(args.episodes)]
    wandering = [approach(env, estimator, args.seed_base + 1000 + k, args.steps, wander=1.0)
                 for k in range(args.episodes)]
    env.close()
    rhos = [float(spearmanr(e[np.isfinite(e)], t[np.isfinite(e)])[0]) for e, _, t in runs]
    estimates, truths = np.concatenate([e for e, _, _ in runs]), np.concatenate([t for _, _, t in runs])
    bands = []
    for lo, hi in BANDS_M:
        inside = (truths >= lo) & (truths < hi) & np.isfinite(estimates)
        if inside.any():
            bands.append({"true_gap_m": [lo, None if np.isinf(hi) else hi], "frames": int(inside.sum()),
                          "median_estimate_m": round(median(estimates[inside]), 3),
                          "median_abs_error_m": round(median(np.abs(estimates - truths)[inside]), 3)})
    how = (" (mirror averaged)" if args.mirror else "") + (" with its second look" if args.zoom_weights else "")
    print(f"compact VLM{how} on {REACH_ID} frames ({width}x{height}): {args.episodes} approaches x {args.steps} steps")
    print("  Spearman per approach: " + ", ".join(f"{r:.2f}" for r in rhos))
    for band in bands:
        lo, hi = band["true_gap_m"]
        label = f"{100 * lo:.0f}-{100 * hi:.0f} cm" if hi is not None else f">= {100 * lo:.0f} cm"
        print(f"  true gap {label:>9}: {band['frames']:3d} frames, median estimate {band['median_estimate_m']:.3f} m, "
              f"median |error| {band['median_abs_error_m']:.3f} m")
    w_true = np.concatenate([t for _, _, t in wandering])

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

    wander = bonus_rates(np.concatenate([e for e, _, _ in wandering]), "main view")
    wander_two = bonus_rates(np.concatenate([f for _, f, _ in wandering]), "two views")
    grid, grid_two = direction_map(estimator, args.seed_base + 500, sim_config, side)
    gaps_cm = " / ".join(f"{100 * g:.0f}" for g in MAP_GAPS_M)
    print(f"  direction map, estimate (cm) at a true gap of {gaps_cm} cm, main view | two views:")

    def cm(row: list[float | None]) -> str:
        return " / ".join("inv" if e is None else f"{100 * e:.1f}" for e in row)

    for name, row in grid.items():
        print(f"    {name:>21}: {cm(row)} | {cm(grid_two[name])}")

    def contact_reads(cells_of: Grid, keep: Callable[[float], bool]) -> float:
        cells = [e for row in cells_of.values() for g, e in zip(MAP_GAPS_M, row) if keep(g)]
        return float(np.mean([e is not None and e < SUCCESS_M for e in cells]))

    reads = {f"{prefix}{which}_contact_reads": contact_reads(cells, keep)
             for prefix, cells in (("", grid), ("two_views_", grid_two))
             for which, keep in (("far", lambda g: g >= 0.05), ("near", lambda g: g < SUCCESS_M))}
    for prefix, views in (("", "main view"), ("two_views_", "two views")):
        print(f"  direction map ({views}): read under 2 cm on {reads[prefix + 'far_contact_reads']:.0%} of the "
              f"cells with a true gap >= 5 cm, {reads[prefix + 'near_contact_reads']:.0%} of those under 2 cm")
    emit({"side_offset_m": list(side), "seed_base": args.seed_base,
          "spearman_per_episode": [round(r, 3) for r in rhos], "bands": bands,
          "frames": int(len(truths)), "invalid_rate": float(np.mean(~np.isfinite(estimates))), "wander": wander,
          "wander_two_views": wander_two,
          "direction_map": {"gaps_m": list(MAP_GAPS_M), "estimates_m": grid, "two_views_estimates_m": grid_two,
                            **reads}})


if __name__ == "__main__":
    main()
