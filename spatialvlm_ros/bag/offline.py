"""Offline evaluation: the estimator and the reward on every frame of a bag, as fast as it can.

The main thread reads and pairs messages and applies the (stateful, ordered) reward; a small
thread pool decodes images and runs the estimator, whose heavy parts (OpenCV decoding, masks,
KD-trees) release the GIL. Results are consumed in frame order, at most ``2 * workers`` in flight,
so memory stays bounded on long bags.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import os
import threading
import time
from typing import Callable, Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from spatialvlm_ros.bag.records import FrameRecord, RunResult
from spatialvlm_ros.bag.truth import TruthTrace
from spatialvlm_ros.config import SpatialRewardConfig
from spatialvlm_ros.errors import InputError
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, NoEstimateReason, Pair
from spatialvlm_ros.estimation import DistanceEstimator, build_estimator
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.messages.conversions import frame_from_messages
from spatialvlm_ros.messages.rosbag import CameraMessages
from spatialvlm_ros.reward import build_reward


def default_workers() -> int:
    """Estimator threads: one per core, at most 4 (beyond that the GIL-bound parts dominate)."""
    return max(1, min(4, os.cpu_count() or 1))


class _Worker:
    """Decode + estimate one frame; one estimator per thread, as a backend need not be thread-safe."""

    def __init__(self, config: SpatialRewardConfig, pair: Pair, kind: DistanceKind) -> None:
        self._config = config
        self._pair = pair
        self._kind = kind
        self._local = threading.local()

    def _estimator(self) -> DistanceEstimator:
        if not hasattr(self._local, "estimator"):
            self._local.estimator = build_estimator(self._config.estimator)
        return self._local.estimator

    def __call__(self, msgs: CameraMessages) -> tuple[DistanceEstimate, float]:
        start = time.perf_counter()
        try:
            frame = frame_from_messages(msgs.image, msgs.depth, CameraIntrinsics.from_camera_info(msgs.camera_info))
        except InputError as err:
            # The node's policy: an unusable frame is a flagged "no estimate", and the run goes on.
            estimate = DistanceEstimate.invalid(self._pair, self._kind, NoEstimateReason.BAD_INPUT, str(err),
                                                stamp_ns=msgs.stamp_ns)
        else:
            [estimate] = self._estimator().estimate(frame, [self._pair], self._kind)
        return estimate, (time.perf_counter() - start) * 1e3


def _in_order(fn: Callable[[CameraMessages], tuple[DistanceEstimate, float]], items: Iterable[CameraMessages],
              workers: int) -> Iterator[tuple[CameraMessages, tuple[DistanceEstimate, float]]]:
    """``fn`` over ``items`` on a thread pool, results in input order, a bounded number in flight."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bag_estimator") as pool:
        in_flight: collections.deque = collections.deque()
        for item in items:
            in_flight.append((item, pool.submit(fn, item)))
            if len(in_flight) >= 2 * workers:
                done_item, future = in_flight.popleft()
                yield done_item, future.result()
        while in_flight:
            done_item, future = in_flight.popleft()
            yield done_item, future.result()


def run_offline(frames: Iterable[CameraMessages], config: SpatialRewardConfig, *,
                truth: TruthTrace | None, total: int | None = None, workers: int | None = None) -> RunResult:
    """Estimate and reward every frame of ``frames`` for ``config.pairs[0]``.

    Args:
        frames: the bag's camera frames in order (:func:`~spatialvlm_ros.messages.rosbag.camera_messages`).
        config: estimator and reward settings; the first pair and ``estimator.distance`` are evaluated.
        truth: ground truth to align to each frame, if any.
        total: expected number of frames, for the progress bar.
        workers: estimator threads (default :func:`default_workers`).
    """
    pair, kind = config.pairs[0], config.estimator.distance
    reward = build_reward(config.reward, [pair])
    worker = _Worker(config, pair, kind)
    records = []
    # The bar goes to stderr: stdout's last line is the CLI's JSON result.
    progress = Progress(TextColumn("estimating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True)
    start = time.perf_counter()
    with progress:
        task = progress.add_task("frames", total=total)
        for msgs, (estimate, latency_ms) in _in_order(worker, frames, workers or default_workers()):
            step = reward.update([estimate]).steps[pair]
            records.append(FrameRecord(
                stamp_ns=msgs.stamp_ns, estimate_m=estimate.distance_m, uncertainty_m=estimate.uncertainty_m,
                valid=estimate.valid, reason=estimate.reason.value if estimate.reason else "",
                reward=step.reward if step is not None else math.nan,
                truth_m=truth.at(msgs.stamp_ns, msgs.log_time_ns) if truth is not None else math.nan,
                latency_ms=latency_ms))
            progress.advance(task)
    return RunResult(records=tuple(records), wall_s=time.perf_counter() - start)
