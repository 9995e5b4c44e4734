"""Speed of the compact spatial VLM backend (``estimator.vlm.backend: compact``) on this machine's CPU.

Asks the robot's question ("What is the gap between the <gripper> and the <target>?") about rendered
frames of simulated approaches (held-out seeds), through the backend's public ``ask_batch``, so the time
includes resizing, tokenizing, encoding the image, decoding the answer and parsing it:

* batch 1 on one torch thread: wall time per query, median and 95th percentile over ``--queries``;
* batch 32 on one torch thread: queries per second over ``--queries`` (rounded up to whole batches),
  every query with its own frame.

Prints a table and, as its last line, JSON with ``compact_ms_per_query_p50``, ``compact_ms_per_query_p95``,
``compact_queries_per_s_batch32``, ``parameters``, ``weights`` and ``zoom_weights``. ``--zoom-weights DIR`` times
the answers with the second look (``estimator.vlm.compact.zoom_weights``): every gap question is asked twice.

Usage: python benchmarks/vlm_speed.py [--weights DIR] [--zoom-weights DIR] [--queries 200] [--smoke]
"""

from __future__ import annotations

import time

import numpy as np
import torch

from spatialvlm_ros.types import DistanceKind
from spatialvlm_ros.evaluation.vlm_benchmark import EVAL_SEED_OFFSET, approach_trajectories
from spatialvlm_ros.config import CompactVLMConfig
from spatialvlm_ros.vlm.compact.backend import PACKAGED_WEIGHTS, CompactVLM
from spatialvlm_ros.vlm.compact.network import count_parameters
from spatialvlm_ros.vlm.prompts import distance_question

from _common import BenchmarkParser, emit, percentile

FIGURES = ("compact_ms_per_query_p50", "compact_ms_per_query_p95", "compact_queries_per_s_batch32", "parameters")


def frames_and_questions(n: int) -> tuple[list[np.ndarray], list[str]]:
    """``n`` frames (320x240, the data engine's size) of held-out approaches and the gap question of each."""
    images, questions = [], []
    for trajectory in approach_trajectories(max(1, n // 20), 20, EVAL_SEED_OFFSET + 500):
        images += list(trajectory.images)
        questions += [distance_question(trajectory.pair, DistanceKind.GAP)] * len(trajectory.images)
    return images[:n], questions[:n]


def main() -> None:
    """Measure batch 1 and batch 32 on one thread; print the table and the JSON line."""
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--weights", default="", help=f"weights folder (default: the packaged {PACKAGED_WEIGHTS})")
    parser.add_argument("--queries", type=int, default=200, smoke=4, help="queries per measurement")
    parser.add_argument("--zoom-weights", default="", help="the second look's weights folder (default: none)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, questions = frames_and_questions(max(args.queries, 32))
    one = CompactVLM.from_config(CompactVLMConfig(weights=args.weights, batch_size=1, zoom_weights=args.zoom_weights))
    one.ask(images[0], questions[0])  # warm-up: first-call allocations
    times = []
    for k in range(args.queries):
        start = time.perf_counter()
        answer = one.ask(images[k % len(images)], questions[k % len(questions)])
        times.append((time.perf_counter() - start) * 1e3)
    batched = CompactVLM.from_config(CompactVLMConfig(weights=args.weights, batch_size=32,
                                                      zoom_weights=args.zoom_weights))
    batches = -(-args.queries // 32)
    start = time.perf_counter()
    for b in range(batches):
        picked = [(32 * b + j) % len(images) for j in range(32)]
        batched.ask_batch([images[i] for i in picked], [questions[i] for i in picked])
    per_s = 32 * batches / (time.perf_counter() - start)
    p50, p95 = (percentile(times, q) for q in (50, 95))
    second = f", with the second look of {args.zoom_weights}" if args.zoom_weights else ""
    print(f"compact VLM ({count_parameters(one.model):,} parameters{second}), one torch thread, {args.queries} "
          "queries")
    print(f"  e.g. {questions[0]!r} -> {answer.text!r}")
    print(f"  batch 1:  {p50:.1f} ms per query (p50), {p95:.1f} ms (p95)")
    print(f"  batch 32: {per_s:.0f} queries/s")
    emit({"compact_ms_per_query_p50": round(p50, 2), "compact_ms_per_query_p95": round(p95, 2),
          "compact_queries_per_s_batch32": round(per_s, 1), "parameters": count_parameters(one.model),
          "weights": args.weights or str(PACKAGED_WEIGHTS), "zoom_weights": args.zoom_weights or None})


if __name__ == "__main__":
    main()
