"""Fidelity of the geometric estimator on the demo trajectory, against the simulator's exact truth.

For every combination of grounding (simulator masks, colour prompt), depth (perfect, RealSense-like
noise) and distance (surface gap, centre distance), the demo's approach is rendered once and each
frame is estimated in-process (no ROS). Prints a table and, as its last line, JSON with one entry
per combination: median |error|, MAE, Spearman(estimate, truth), invalid rate, estimator ms p50.

Usage: python benchmarks/estimator_accuracy.py [--frames 120] [--width 640 --height 480] [--smoke]
"""

from __future__ import annotations

import dataclasses
import itertools
import time

from spatialvlm_ros.config import DepthNoiseConfig, EstimatorConfig, SimCameraConfig, config_path, load_config
from spatialvlm_ros.types import DistanceKind, Pair
from spatialvlm_ros.estimation import build_estimator
from spatialvlm_ros.evaluation.metrics import distance_metrics
from spatialvlm_ros.sim import TabletopSim

from _common import BenchmarkParser, emit, median

FIGURES = ("*.median_abs_error_m", "*.mae_m", "*.spearman", "*.invalid_rate", "*.estimator_ms_p50")


def measure(frames: int, width: int, height: int) -> dict[str, dict[str, float]]:
    """Run every combination on the demo scene (config/sim_demo.yaml) and return its metrics."""
    demo = load_config(SimCameraConfig, "sim_camera_node", config_path("sim_demo.yaml")).sim
    results: dict[str, dict[str, float]] = {}
    for noisy in (False, True):
        noise = dataclasses.replace(demo.depth_noise, enabled=noisy) if noisy else DepthNoiseConfig(enabled=False)
        sim_cfg = dataclasses.replace(demo, n_frames=frames, width=width, height=height, depth_noise=noise)
        with TabletopSim(sim_cfg) as sim:
            rendered = [sim.render(i) for i in range(sim.n_frames)]
            pair = Pair(sim.gripper_label, sim.target_label)
        for grounding, kind in itertools.product(("sim_segmentation", "colour_prompt"), DistanceKind):
            estimator = build_estimator(EstimatorConfig(grounding=grounding, distance=kind.value))
            est, truth, ms = [], [], []
            for sf in rendered:
                start = time.perf_counter()
                (e,) = estimator.estimate(sf.frame, [pair], kind)
                ms.append((time.perf_counter() - start) * 1e3)
                est.append(e.distance_m)
                truth.append((sf.truth.gap_m if kind is DistanceKind.GAP else sf.truth.centre_m)[pair.target])
            m = distance_metrics(est, truth)
            key = f"{grounding}/{'noisy' if noisy else 'clean'}_depth/{kind.value}"
            results[key] = {"median_abs_error_m": m["median_abs_error_m"], "mae_m": m["mae_m"],
                            "spearman": m["spearman"], "invalid_rate": m["invalid_rate"],
                            "estimator_ms_p50": median(ms)}
    return results


def main() -> None:
    """Parse arguments, measure, print the table and the JSON line."""
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--frames", type=int, default=120, smoke=4)
    parser.add_argument("--width", type=int, default=640, smoke=160)
    parser.add_argument("--height", type=int, default=480, smoke=120)
    args = parser.parse_args()
    results = measure(args.frames, args.width, args.height)
    print(f"{'grounding / depth / distance':<44} {'median|err| cm':>14} {'MAE cm':>8} {'spearman':>9} "
          f"{'invalid':>8} {'ms p50':>7}")
    for key, m in results.items():
        print(f"{key:<44} {m['median_abs_error_m'] * 100:>14.2f} {m['mae_m'] * 100:>8.2f} {m['spearman']:>9.4f} "
              f"{m['invalid_rate']:>8.2%} {m['estimator_ms_p50']:>7.2f}")
    emit(results)


if __name__ == "__main__":
    main()
