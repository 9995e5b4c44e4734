"""Offline evaluation: the estimator and the reward on every frame of a bag, as fast as it can.

The main thread reads and pairs messages and applies the (stateful, ordered) reward; a small
thread pool decodes images and runs the estimator, whose heavy parts (OpenCV decoding, masks,
KD-trees) release the GIL. Results are consumed in frame order, at most ``2 * workers`` in flight,
so memory stays bounded on long bags.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from spatialvlm_ros.bag.records import FrameRecord, RunResult
from spatialvlm_ros.bag.truth import TruthTrace
from spatialvlm_ros.config import SpatialRewardConfig
from spatialvlm_ros.errors import BagError, InputError
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, NoEstimateReason, Pair
from spatialvlm_ros.estimation import DistanceEstimator, build_estimator
from spatialvlm_ros.messages.conversions import frame_from_messages, intrinsics_from_camera_info
from spatialvlm_ros.messages.gripper_pose import GripperPoses
from spatialvlm_ros.messages.rosbag import CameraMessages
from spatialvlm_ros.reward import build_reward

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Estimator threads: one per core, at most 4 (beyond that the GIL-bound parts dominate)."""
    return max(1, min(4, os.cpu_count() or 1))


class _Worker:
    """Decode + estimate one frame; one estimator per thread, as a backend need not be thread-safe."""

    def __init__(self, config: SpatialRewardConfig, pair: Pair, kind: DistanceKind,
                 gripper: GripperPoses | None = None) -> None:
        self._config = config
        self._gripper = gripper
        self._pair = pair
        self._kind = kind
        self._local = threading.local()

    def _estimator(self) -> DistanceEstimator:
        if not hasattr(self._local, "estimator"):
            self._local.estimator = build_estimator(self._config.estimator)
        return self._local.estimator

    def __call__(self, msgs: CameraMessages) -> tuple[DistanceEstimate, float]:
        start = time.perf_counter()
        # The node's policy: an unusable frame is a flagged "no estimate", and the run goes on.
        try:
            estimate = self._estimate(msgs)
        except Exception as err:   # noqa: BLE001 - one frame never ends the run
            log.error("internal error on frame %d: %s: %s", msgs.stamp_ns, type(err).__name__, err, exc_info=True)
            estimate = self._flagged(msgs, NoEstimateReason.INTERNAL_ERROR, f"{type(err).__name__}: {err}")
        return estimate, (time.perf_counter() - start) * 1e3

    def _flagged(self, msgs: CameraMessages, reason: NoEstimateReason, detail: str) -> DistanceEstimate:
        return DistanceEstimate.invalid(self._pair, self._kind, reason, detail, stamp_ns=msgs.stamp_ns)

    def _estimate(self, msgs: CameraMessages) -> DistanceEstimate:
        try:
            intrinsics = intrinsics_from_camera_info(msgs.camera_info)
        except InputError as err:
            return self._flagged(msgs, NoEstimateReason.NO_CAMERA_INFO, str(err))
        try:
            frame = frame_from_messages(msgs.image, msgs.depth, intrinsics, self._config.topics.max_image_pixels)
        except InputError as err:
            return self._flagged(msgs, NoEstimateReason.BAD_INPUT, str(err))
        if self._gripper is not None:
            frame = self._gripper.attach(frame)
        [estimate] = self._estimator().estimate(frame, [self._pair], self._kind)
        return estimate


def _in_order(fn: Callable[[CameraMessages], tuple[DistanceEstimate, float]], items: Iterable[CameraMessages],
              workers: int) -> Iterator[tuple[CameraMessages, tuple[DistanceEstimate, float]]]:
    """``fn`` over ``items`` on a thread pool, results in input order, a bounded number in flight.

    Should ``items`` fail (a corrupt bag), the frames already read are finished and yielded first, then the
    error is raised.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bag_estimator") as pool:
        in_flight: collections.deque = collections.deque()
        failure: BagError | None = None
        try:
            for item in items:
                in_flight.append((item, pool.submit(fn, item)))
                if len(in_flight) >= 2 * workers:
                    done_item, future = in_flight.popleft()
                    yield done_item, future.result()
        except BagError as err:
            failure = err
        while in_flight:
            done_item, future = in_flight.popleft()
            yield done_item, future.result()
        if failure is not None:
            raise failure


def run_offline(frames: Iterable[CameraMessages], config: SpatialRewardConfig, *,
                truth: TruthTrace | None, total: int | None = None, workers: int | None = None,
                gripper: GripperPoses | None = None) -> RunResult:
    """Estimate and reward every frame of ``frames`` for ``config.pairs[0]``.

    Args:
        frames: the bag's camera frames in order (:func:`~spatialvlm_ros.messages.rosbag.camera_messages`).
        config: estimator and reward settings; the first pair and ``estimator.distance`` are evaluated.
        truth: ground truth to align to each frame, if any.
        total: expected number of frames, for the progress bar.
        workers: estimator threads (default :func:`default_workers`).
        gripper: the bag's gripper poses (``estimator.gripper.source: pose``), paired to each frame by stamp.
    """
    pair, kind = config.pairs[0], config.estimator.distance
    reward = build_reward(config.reward, [pair])
    worker = _Worker(config, pair, kind, gripper)
    records = []
    # The bar goes to stderr: stdout's last line is the CLI's JSON result.
    progress = Progress(TextColumn("estimating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True)
    start = time.perf_counter()
    error = ""
    with progress:
        task = progress.add_task("frames", total=total)
        try:
            for msgs, (estimate, latency_ms) in _in_order(worker, frames, workers or default_workers()):
                records.append(_record(msgs, estimate, latency_ms, reward.update([estimate]).steps[pair], truth))
                progress.advance(task)
        except BagError as err:   # the bag broke off: keep what was evaluated, say where it stopped
            error = str(err)
    return RunResult(records=tuple(records), wall_s=time.perf_counter() - start, error=error)


def _record(msgs: CameraMessages, estimate: DistanceEstimate, latency_ms: float, step: Any,
            truth: TruthTrace | None) -> FrameRecord:
    return FrameRecord(
        stamp_ns=msgs.stamp_ns, estimate_m=estimate.distance_m, uncertainty_m=estimate.uncertainty_m,
        valid=estimate.valid, reason=estimate.reason.value if estimate.reason else "",
        reward=step.reward if step is not None else math.nan,
        truth_m=truth.at(msgs.stamp_ns, msgs.log_time_ns) if truth is not None else math.nan,
        latency_ms=latency_ms)
