"""spatial_reward_node: camera frames in, gripper-to-object distance and a dense reward out.

Subscribes (relative names, remap freely):
    ``topics.image`` (sensor_msgs/Image, or ``<image>/compressed`` CompressedImage),
    ``topics.depth`` (sensor_msgs/Image 16UC1 mm or 32FC1 m, registered to colour; "" = none),
    ``topics.camera_info`` (sensor_msgs/CameraInfo).
Publishes:
    ``reward`` (std_msgs/Float32): the pairs' rewards combined;
    ``reward/<object>`` and ``distance/<object>`` (std_msgs/Float32) per pair (distance NaN when invalid);
    ``estimates`` (diagnostic_msgs/DiagnosticArray, header = the source frame's): per pair the
    distance, uncertainty, validity, reason, reward and latencies;
    ``markers`` (visualization_msgs/MarkerArray): the measured segment and its length;
    ``/diagnostics`` (diagnostic_msgs/DiagnosticArray): rates, latency, valid ratio, drops and errors over a
    sliding window (``diagnostics_window_s``), and what is wrong when something is.

Latest frame wins: callbacks only park the newest colour/depth pair; one worker thread decodes and
estimates it, so a slow estimate drops frames instead of building a backlog.

The worker never dies of a frame: any exception while processing one becomes a flagged
``internal_error`` estimate (exception type, frame stamp) and the next frame is processed. A supervisor
timer restarts the worker should it ever stop, and /diagnostics says ERROR. Estimators are built in a
background thread (at start and on a parameter change): the old one keeps serving until the new one is
ready, and one that fails to build is refused and its parameters set back.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Deque, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float32
from visualization_msgs.msg import Marker, MarkerArray

from spatialvlm_ros.config import EstimatorConfig, SpatialRewardConfig, to_flat
from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.types import DistanceEstimate, NoEstimateReason, Pair
from spatialvlm_ros.estimation import DistanceEstimator, build_estimator
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.messages.conversions import frame_from_messages, intrinsics_from_camera_info, stamp_to_ns
from spatialvlm_ros.reward import CombinedReward, MultiPairReward, build_reward
from spatialvlm_ros.ros import params
from spatialvlm_ros.ros.gripper_source import GripperSource
from spatialvlm_ros.ros.sync import make_synchronizer

NODE_NAME = "spatial_reward_node"
# Read once at start: changing them would mean re-creating subscriptions mid-stream.
FIXED_AT_START = ("topics.", "qos.", "sync.")
# ... except these, read per frame.
SETTABLE_AT_RUNTIME = ("topics.max_image_pixels",)
SUPERVISOR_PERIOD_S = 0.2      # worker health, estimator swaps
LOG_EVERY_S = 2.0              # the same (pair, reason) is logged at most this often
STARTUP_WAIT_S = 1.0           # a first estimator ready within this starts the node without a "loading" phase
SWAP_WAIT_S = 0.05             # a swap ready within this is answered at once (the executor waits that long)
# Reasons that count as errors in /diagnostics; the others (not_visible, no_depth, ...) describe the scene.
ERROR_REASONS = frozenset({NoEstimateReason.BAD_INPUT, NoEstimateReason.NO_CAMERA_INFO, NoEstimateReason.TIMEOUT,
                           NoEstimateReason.BACKEND_ERROR, NoEstimateReason.BACKEND_UNAVAILABLE,
                           NoEstimateReason.INTERNAL_ERROR})


@dataclass(frozen=True)
class _Pipeline:
    """What one frame goes through; swapped whole when a parameter changes (never half-updated).

    ``estimator`` is None until the first one is built; ``config.estimator`` is always the serving one's.
    """

    config: SpatialRewardConfig
    estimator: DistanceEstimator | None
    reward: MultiPairReward


class _Swap:
    """An estimator being built in a background thread (the executor never waits for a model to load)."""

    def __init__(self, config: EstimatorConfig, initial: bool = False) -> None:
        self.config = config
        self.initial = initial
        self.started = time.monotonic()
        self.estimator: DistanceEstimator | None = None
        self.error = ""
        self.cancelled = False
        self.thread = threading.Thread(target=self._build, name="estimator_build", daemon=True)
        self.thread.start()

    def _build(self) -> None:
        try:
            self.estimator = build_estimator(self.config)
        except Exception as err:   # noqa: BLE001 - any failure refuses the swap, with its reason
            self.error = f"{type(err).__name__}: {err}" if not isinstance(err, ConfigError) else str(err)

    def done(self, wait_s: float = 0.0) -> bool:
        self.thread.join(timeout=wait_s)
        return not self.thread.is_alive()

    def describe(self) -> str:
        return f"{_estimator_name(self.config)} (loading for {time.monotonic() - self.started:.1f} s)"


def _estimator_name(config: EstimatorConfig) -> str:
    if config.backend == "vlm":
        return f"vlm/{config.vlm.backend}"
    return f"{config.backend}/{config.grounding}"


class _Events:
    """Timestamped events (monotonic seconds) of one kind, forgotten once older than the horizon."""

    def __init__(self) -> None:
        self.items: Deque[tuple[float, Any]] = collections.deque()

    def add(self, t: float, value: Any, horizon_s: float) -> None:
        self.items.append((t, value))
        while self.items and self.items[0][0] < t - horizon_s:
            self.items.popleft()

    def since(self, t0: float) -> list[Any]:
        return [v for t, v in self.items if t >= t0]

    def count(self, t0: float) -> int:
        return sum(1 for t, _ in self.items if t >= t0)

    def last(self) -> tuple[float, Any] | None:
        return self.items[-1] if self.items else None


class _Stats:
    """What /diagnostics reports: totals since start, and events over the sliding window (thread-safe)."""

    KINDS = ("colour", "depth", "pairs", "camera_info", "out", "dropped", "estimates", "errors", "latency",
             "restarts", "swap_failures", "internal_errors")

    def __init__(self, window_s: float) -> None:
        self.lock = threading.Lock()
        self.window_s = window_s
        self.started = time.monotonic()
        self.totals = collections.Counter()
        self.events = {kind: _Events() for kind in self.KINDS}

    def add(self, kind: str, value: Any = None, t: float | None = None) -> None:
        t = time.monotonic() if t is None else t
        with self.lock:
            self.totals[kind] += 1
            # Twice the window: a shorter window set at run time still has its events.
            self.events[kind].add(t, value, max(2 * self.window_s, 10.0))


def _rate(count: int, span_s: float) -> float:
    return count / span_s if span_s > 0 else 0.0


class SpatialRewardNode(Node):
    """Measures gripper-to-object distances in camera frames and publishes a dense reward."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.unknown_parameters = params.declare_config_parameters(self, SpatialRewardConfig)
        for name in self.unknown_parameters:
            self.get_logger().error(f"unknown parameter {name!r} ignored (see config/spatial_reward.yaml)")
        config = params.read_config(self, SpatialRewardConfig)
        self._stats = _Stats(config.diagnostics_window_s)
        self._camera_info_key: Any = None
        self._camera_info_error = ""
        self._intrinsics: CameraIntrinsics | None = None
        self._slot: tuple[Any, Any, int] | None = None
        self._slot_cv = threading.Condition()
        self._stopping = False
        self._last_logged: dict[Any, float] = {}
        self._busy: tuple[float, int] | None = None     # (since, frame stamp) while the worker is on a frame
        self._worker: threading.Thread | None = None
        self._worker_death = ""
        self._swap: _Swap | None = None
        self._last_swap_error = ""

        self._pipeline = _Pipeline(config, None, build_reward(config.reward, config.pairs))
        self._swap = _Swap(config.estimator, initial=True)
        if self._swap.done(STARTUP_WAIT_S):
            self._finish_swap()              # raises ConfigError (exit 2) if the estimator cannot be built

        self._reward_pub = self.create_publisher(Float32, "reward", 10)
        self._estimates_pub = self.create_publisher(DiagnosticArray, "estimates", 10)
        self._markers_pub = self.create_publisher(MarkerArray, "markers", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._pair_pubs: dict[str, tuple[Any, Any]] = {}
        self._ensure_pair_publishers(config.pairs)
        self._subscribe(config)
        self._gripper_source = GripperSource(self, config.estimator.gripper)   # estimator.gripper.source: pose
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diag_timer = self.create_timer(config.diagnostics_period_s, self._publish_diagnostics)
        self._supervisor = self.create_timer(SUPERVISOR_PERIOD_S, self._supervise)
        self._start_worker()
        self.get_logger().info(
            f"measuring {[str(p) for p in config.pairs]} ({config.estimator.distance}, "
            f"{_estimator_name(config.estimator)}{'' if self._swap is None else ', loading'}); image "
            f"{self._image_topic}, depth {config.topics.depth or '(none)'}, pairing by {self._sync_kind}")

    # ------------------------------------------------------------------ inputs
    def _subscribe(self, config: SpatialRewardConfig) -> None:
        reliability = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
                       "reliable": ReliabilityPolicy.RELIABLE}[config.qos.reliability]
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=config.qos.depth, reliability=reliability)
        compressed = config.topics.transport == "compressed"
        image_type = CompressedImage if compressed else Image
        self._image_topic = config.topics.image + ("/compressed" if compressed else "")
        self._depth_topic = config.topics.depth
        # A topic name rclpy refuses is a configuration error naming its key, not a traceback.
        for key, topic in (("topics.image", self._image_topic), ("topics.depth", config.topics.depth),
                           ("topics.camera_info", config.topics.camera_info)):
            if topic:
                try:
                    self.resolve_topic_name(topic)
                except Exception as err:   # noqa: BLE001 - rclpy raises several kinds for a bad name
                    raise ConfigError(f"{key}: {topic!r} is not a valid topic name: {err}") from err
        self.create_subscription(CameraInfo, config.topics.camera_info, self._on_camera_info, qos)
        if config.topics.depth:
            self._sync_kind, self._sync_keepalive = make_synchronizer(
                self, (image_type, self._image_topic, qos), (Image, config.topics.depth, qos),
                self._on_frame, config.sync.slop_s, config.sync.queue_size, tap=self._on_stream)
        else:
            self._sync_kind, self._sync_keepalive = "none (monocular)", None
            self.create_subscription(image_type, self._image_topic, self._on_monocular, qos)

    def _on_stream(self, index: int, msg: Any) -> None:
        """Every colour (0) and depth (1) message before pairing: tells "no images" from "never paired"."""
        try:
            stamp = stamp_to_ns(msg.header.stamp)
        except Exception:   # noqa: BLE001 - a message without a usable stamp still arrived
            stamp = 0
        self._stats.add("colour" if index == 0 else "depth", stamp)

    def _on_monocular(self, msg: Any) -> None:
        self._on_stream(0, msg)
        self._on_frame(msg, None)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._stats.add("camera_info")
        key = (msg.width, msg.height, tuple(msg.k))
        if key == self._camera_info_key:
            return
        self._camera_info_key = key
        try:
            self._intrinsics = intrinsics_from_camera_info(msg)
            self._camera_info_error = ""
        except InputError as err:
            self._intrinsics = None
            self._camera_info_error = f"bad camera_info on {self._pipeline.config.topics.camera_info!r}: {err}"
            self._warn(("camera_info",), self._camera_info_error, None)

    def _on_frame(self, image_msg: Any, depth_msg: Any) -> None:
        """Park the newest pair for the worker; an unprocessed older pair is dropped (latest wins)."""
        with self._slot_cv:
            if self._slot is not None:
                self._stats.add("dropped")
            self._slot = (image_msg, depth_msg, time.time_ns())
            self._slot_cv.notify()
        self._stats.add("pairs")

    # ------------------------------------------------------------------ worker
    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._work_guarded, name="spatial_reward_worker", daemon=True)
        self._worker.start()

    def _work_guarded(self) -> None:
        """The worker loop; should it ever end by an exception, record why (the supervisor restarts it)."""
        try:
            self._work()
        except BaseException as err:   # noqa: BLE001 - recorded and reported; the supervisor restarts the worker
            self._worker_death = f"{type(err).__name__}: {err}"
            self.get_logger().error("the worker thread stopped:\n" + "".join(traceback.format_exception(err)))

    def _work(self) -> None:
        while True:
            with self._slot_cv:
                while self._slot is None and not self._stopping:
                    self._slot_cv.wait()
                if self._stopping:
                    return
                item, self._slot = self._slot, None
            stamp_ns = _stamp_or_zero(item[0])
            self._busy = (time.monotonic(), stamp_ns)
            try:
                self._process(*item)
            except Exception as err:   # noqa: BLE001 - publishing or bookkeeping failed: count it, go on
                self._internal_error(err, stamp_ns, "while publishing")
            finally:
                self._busy = None

    def _process(self, image_msg: Any, depth_msg: Any, received_ns: int) -> None:
        pipeline = self._pipeline
        config = pipeline.config
        stamp_ns = _stamp_or_zero(image_msg)
        frame_id = getattr(getattr(image_msg, "header", None), "frame_id", "")
        try:
            estimates = self._estimate(pipeline, image_msg, depth_msg, stamp_ns, frame_id)
        except Exception as err:   # noqa: BLE001 - whatever a frame does, the next one is processed
            detail = self._internal_error(err, stamp_ns, "while estimating")
            estimates = [DistanceEstimate.invalid(p, config.estimator.distance, NoEstimateReason.INTERNAL_ERROR,
                                                  detail, stamp_ns=stamp_ns, frame_id=frame_id)
                         for p in config.pairs]
        combined = pipeline.reward.update(estimates)
        node_latency_ms = (time.time_ns() - received_ns) / 1e6
        self._publish(config, image_msg.header, estimates, combined, node_latency_ms)
        now = time.monotonic()
        self._stats.add("out", t=now)
        self._stats.add("latency", node_latency_ms, t=now)
        for est in estimates:
            self._stats.add("estimates", (est.valid, est.reason.value if est.reason else ""), t=now)
            if not est.valid:
                if est.reason in ERROR_REASONS:
                    self._stats.add("errors", f"{est.reason.value}: {est.detail}", t=now)
                if est.reason is not NoEstimateReason.INTERNAL_ERROR:   # logged with its traceback already
                    self._warn((str(est.pair), est.reason), f"{est.pair}: {est.reason.value}: {est.detail}",
                               stamp_ns)

    def _estimate(self, pipeline: _Pipeline, image_msg: Any, depth_msg: Any, stamp_ns: int,
                  frame_id: str) -> list[DistanceEstimate]:
        config = pipeline.config
        kind = config.estimator.distance

        def flagged(reason: NoEstimateReason, detail: str) -> list[DistanceEstimate]:
            return [DistanceEstimate.invalid(p, kind, reason, detail, stamp_ns=stamp_ns, frame_id=frame_id)
                    for p in config.pairs]

        intrinsics = self._intrinsics
        if intrinsics is None:
            return flagged(NoEstimateReason.NO_CAMERA_INFO, self._camera_info_error
                           or f"no valid CameraInfo received on {config.topics.camera_info!r} yet")
        try:
            frame = frame_from_messages(image_msg, depth_msg, intrinsics, config.topics.max_image_pixels)
            frame = self._gripper_source.attach(frame)      # the robot's gripper pose at the image stamp
        except InputError as err:
            return flagged(NoEstimateReason.BAD_INPUT, str(err))
        if pipeline.estimator is None:
            swap = self._swap
            return flagged(NoEstimateReason.BACKEND_UNAVAILABLE,
                           f"estimator {swap.describe() if swap is not None else 'not built'}")
        estimates = pipeline.estimator.estimate(frame, config.pairs, kind)
        if len(estimates) != len(config.pairs):
            raise RuntimeError(f"estimator {pipeline.estimator.name!r} returned {len(estimates)} estimates for "
                               f"{len(config.pairs)} pairs")
        return estimates

    def _internal_error(self, err: BaseException, stamp_ns: int, where: str) -> str:
        """Count and log (rate-limited, with the traceback) an unexpected exception; its one-line detail."""
        detail = f"{type(err).__name__} {where} frame {stamp_ns}: {err}"
        self._stats.add("internal_errors", detail)
        key = ("internal", type(err).__name__, where)
        if self._should_log(key):
            self.get_logger().error(f"internal error (the node goes on with the next frame): {detail}\n"
                                    + "".join(traceback.format_exception(err)).rstrip())
        return detail

    def _should_log(self, key: Any) -> bool:
        now = time.monotonic()
        if now - self._last_logged.get(key, -math.inf) >= LOG_EVERY_S:
            self._last_logged[key] = now
            return True
        return False

    def _warn(self, key: Any, text: str, stamp_ns: int | None) -> None:
        """Log a problem with the frame stamp, each key (pair and reason) at most every 2 s (a bad stream repeats)."""
        if self._should_log(key):
            self.get_logger().warning(text if stamp_ns is None else f"frame {stamp_ns}: {text}")

    # ------------------------------------------------------------------ supervision
    def _supervise(self) -> None:
        """Restart a worker that stopped; finish estimator swaps (on the executor: parameters change here)."""
        try:
            self._check_worker_and_swap()
        except ConfigError:
            raise                    # the first estimator cannot be built: the node stops (exit 2)
        except Exception as err:   # noqa: BLE001 - the supervisor itself must not take the node down
            if self._should_log(("supervisor", type(err).__name__)):
                self.get_logger().error(f"supervisor: {type(err).__name__}: {err}")

    def _check_worker_and_swap(self) -> None:
        worker = self._worker
        if worker is not None and not worker.is_alive() and not self._stopping:
            death = self._worker_death or "no exception recorded"
            self.get_logger().error(f"the worker thread stopped ({death}); restarting it")
            self._stats.add("restarts", death)
            self._worker_death = ""
            self._start_worker()
        swap = self._swap
        if swap is not None and swap.done():
            self._finish_swap()

    def _finish_swap(self) -> None:
        swap, self._swap = self._swap, None
        assert swap is not None
        if swap.cancelled:
            return
        pipeline = self._pipeline
        if swap.error:
            if swap.initial:
                raise ConfigError(f"cannot build the estimator ({_estimator_name(swap.config)}): {swap.error}")
            self._last_swap_error = f"estimator swap to {_estimator_name(swap.config)} refused: {swap.error}"
            self._stats.add("swap_failures", self._last_swap_error)
            self.get_logger().error(f"{self._last_swap_error}; {_estimator_name(pipeline.config.estimator)} "
                                    "keeps serving and the parameters are set back")
            self._revert_estimator_parameters(pipeline.config.estimator)
            return
        self._pipeline = dataclasses.replace(
            pipeline, config=dataclasses.replace(pipeline.config, estimator=swap.config), estimator=swap.estimator)
        if not swap.initial:
            self.get_logger().info(f"estimator now {_estimator_name(swap.config)} "
                                   f"(built in {time.monotonic() - swap.started:.1f} s)")

    def _revert_estimator_parameters(self, serving: EstimatorConfig) -> None:
        flat = to_flat(SpatialRewardConfig(estimator=serving))
        back = [Parameter(name, value=value) for name, value in flat.items()
                if name.startswith("estimator.") and params.plain(self.get_parameter(name).value) != value]
        if back:
            results = self.set_parameters(back)
            failed = [r.reason for r in results if not r.successful]
            if failed:
                self.get_logger().error(f"could not set the estimator parameters back: {failed}")

    # ------------------------------------------------------------------ outputs
    def _ensure_pair_publishers(self, pairs: Sequence[Pair]) -> None:
        """Publishers ``reward/<object>`` and ``distance/<object>`` per pair; a name ROS refuses is a ConfigError."""
        for pair in pairs:
            if pair.slug not in self._pair_pubs:
                try:
                    self._pair_pubs[pair.slug] = (self.create_publisher(Float32, f"reward/{pair.slug}", 10),
                                                  self.create_publisher(Float32, f"distance/{pair.slug}", 10))
                except Exception as err:   # noqa: BLE001 - rclpy raises several kinds for a bad name
                    raise ConfigError(f"pairs: the object {pair.target!r} gives no valid topic name "
                                      f"(reward/{pair.slug[:40]}...): {err}".splitlines()[0]) from err

    def _publish(self, config: SpatialRewardConfig, header: Any, estimates: list[DistanceEstimate],
                 combined: CombinedReward, node_latency_ms: float) -> None:
        if combined.defined or config.reward.invalid_policy == "nan":
            self._reward_pub.publish(Float32(data=float(combined.reward)))
        out = DiagnosticArray(header=header)
        markers = MarkerArray()
        for i, est in enumerate(estimates):
            step = combined.steps.get(est.pair)
            reward_pub, distance_pub = self._pair_pubs[est.pair.slug]
            distance_pub.publish(Float32(data=float(est.distance_m)))
            if step is not None:
                reward_pub.publish(Float32(data=float(step.reward)))
            out.status.append(_estimate_status(est, step, node_latency_ms))
            if config.publish_markers:
                markers.markers.extend(_segment_markers(header, i, est))
        self._estimates_pub.publish(out)
        if markers.markers:
            self._markers_pub.publish(markers)

    def _diagnosis(self) -> tuple[int, str, dict[str, str]]:
        """Level, message and values of /diagnostics, over the last ``diagnostics_window_s``."""
        config = self._pipeline.config
        s = self._stats
        now = time.monotonic()
        window = config.diagnostics_window_s
        s.window_s = window
        t0 = now - window
        span = min(window, now - s.started)
        with s.lock:
            ev = s.events
            colour, depth = ev["colour"].since(t0), ev["depth"].since(t0)
            pairs, out = ev["pairs"].count(t0), ev["out"].count(t0)
            latencies = ev["latency"].since(t0)
            estimates = ev["estimates"].since(t0)
            errors = ev["errors"].since(t0)
            restarts = ev["restarts"].since(t0)
            swap_failures = ev["swap_failures"].since(t0)
            camera_infos = ev["camera_info"].count(t0)
            dropped = ev["dropped"].count(t0)
            totals = dict(s.totals)
        lat = np.array(latencies) if latencies else np.array([np.nan])
        valid_ratio = float(np.mean([v for v, _ in estimates])) if estimates else float("nan")
        reasons = collections.Counter(r for v, r in estimates if not v)
        swap = self._swap
        values = {
            "input_hz": f"{_rate(pairs, span):.2f}", "output_hz": f"{_rate(out, span):.2f}",
            "colour_hz": f"{_rate(len(colour), span):.2f}",
            "depth_hz": f"{_rate(len(depth), span):.2f}" if self._depth_topic else "",
            "latency_ms_p50": f"{np.percentile(lat, 50):.2f}", "latency_ms_p95": f"{np.percentile(lat, 95):.2f}",
            "valid_ratio": f"{valid_ratio:.3f}",
            "invalid_reasons": ",".join(f"{r}:{n}" for r, n in reasons.most_common()),
            "errors": str(len(errors)), "dropped": str(dropped),
            "last_error": errors[-1] if errors else "",
            "window_s": f"{window:g}",
            "frames_received": str(totals.get("pairs", 0)), "frames_processed": str(totals.get("out", 0)),
            "frames_dropped": str(totals.get("dropped", 0)), "errors_total": str(totals.get("errors", 0)),
            "internal_errors_total": str(totals.get("internal_errors", 0)),
            "worker_restarts": str(totals.get("restarts", 0)),
            "estimator": _estimator_name(config.estimator) if self._pipeline.estimator is not None else "(loading)",
            "estimator_swap": swap.describe() if swap is not None else "",
            "last_swap_error": self._last_swap_error,
            "unknown_parameters": ",".join(self.unknown_parameters),
        }
        worker, busy = self._worker, self._busy
        stall_s = _stall_limit_s(config)
        if worker is None or not worker.is_alive():
            return DiagnosticStatus.ERROR, f"worker stopped ({self._worker_death or 'restarting'})", values
        if restarts:
            return (DiagnosticStatus.ERROR, f"worker stopped and was restarted ({restarts[-1]}); "
                    f"{totals.get('restarts', 0)} restarts so far", values)
        if busy is not None and now - busy[0] > stall_s:
            return (DiagnosticStatus.ERROR, f"worker stalled: busy on frame {busy[1]} for {now - busy[0]:.1f} s "
                    f"(> {stall_s:.0f} s)", values)
        if not colour:
            return DiagnosticStatus.STALE, f"no images on {self._image_topic} for {window:g} s", values
        if self._depth_topic and not depth:
            return (DiagnosticStatus.WARN, f"images on {self._image_topic} but no depth on {self._depth_topic} "
                    f"for {window:g} s", values)
        if self._depth_topic and not pairs:
            offset = _stamp_offset_ms(colour, depth)
            return (DiagnosticStatus.WARN, f"images but no pairing colour/depth (stamp offset {offset:.1f} ms; "
                    f"sync.slop_s {1e3 * config.sync.slop_s:g} ms)", values)
        if self._intrinsics is None:
            if self._camera_info_error:
                return DiagnosticStatus.WARN, self._camera_info_error, values
            return (DiagnosticStatus.WARN, f"no camera_info on {config.topics.camera_info} "
                    f"({camera_infos} messages in {window:g} s)", values)
        if self._pipeline.estimator is None:
            return DiagnosticStatus.WARN, f"estimator {values['estimator_swap']}", values
        if swap_failures:
            return DiagnosticStatus.WARN, swap_failures[-1], values
        if errors or valid_ratio < 0.5 or self.unknown_parameters:
            if reasons:
                reason, n = reasons.most_common(1)[0]
                message = f"{n} of {len(estimates)} estimates in {window:g} s invalid, mostly {reason}"
                if errors:
                    message += f"; last error: {errors[-1]}"
            else:
                message = errors[-1] if errors else "unknown parameters: " + values["unknown_parameters"]
            return DiagnosticStatus.WARN, message, values
        return DiagnosticStatus.OK, "ok", values

    def _publish_diagnostics(self) -> None:
        try:
            level, message, values = self._diagnosis()
        except Exception as err:   # noqa: BLE001 - a diagnosis that fails is itself reported
            level, message, values = DiagnosticStatus.ERROR, f"diagnostics failed: {type(err).__name__}: {err}", {}
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: spatial reward", message=message,
                                  hardware_id=self.get_fully_qualified_name(),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, changed: list[Any]) -> Any:
        """Validate a runtime change; apply it, start an estimator swap, or refuse it (never raises)."""
        try:
            return self._set_parameters(changed)
        except Exception as err:   # noqa: BLE001 - a parameter call must never take the node down
            self.get_logger().error(f"parameter change refused: {type(err).__name__}: {err}")
            return params.set_result(False, f"{type(err).__name__}: {err}")

    def _set_parameters(self, changed: list[Any]) -> Any:
        """Validate a runtime change through the typed config; apply it, start an estimator swap, or refuse it.

        Reward, pairs, markers and diagnostics settings apply at once. An estimator setting starts a build in
        a background thread; the current estimator serves until it is ready. A build that fails within
        ``SWAP_WAIT_S`` is refused here with its reason; one that fails later is reported in the log and
        /diagnostics and its parameters are set back.
        """
        pipeline = self._pipeline
        requested = pipeline.config if self._swap is None else dataclasses.replace(
            pipeline.config, estimator=self._swap.config)
        try:
            config = params.updated_config(requested, changed, FIXED_AT_START, SETTABLE_AT_RUNTIME)
            reward = pipeline.reward
            if (config.reward, config.pairs) != (pipeline.config.reward, pipeline.config.pairs):
                reward = build_reward(config.reward, config.pairs)
            self._ensure_pair_publishers(config.pairs)
        except ConfigError as err:
            self.get_logger().warning(f"parameter change refused: {err}")
            return params.set_result(False, str(err))
        serving = pipeline.config.estimator
        estimator = pipeline.estimator
        if config.estimator != requested.estimator:
            if self._swap is not None and not self._swap.initial:
                if config.estimator == serving:        # back to what serves: forget the pending swap
                    self._swap.cancelled = True
                    self._swap = None
                else:
                    reason = (f"an estimator swap to {self._swap.describe()} is in progress; set estimator.* "
                              "again when it is done")
                    return params.set_result(False, reason)
            elif self._swap is not None:
                return params.set_result(False, f"the first estimator is still loading ({self._swap.describe()})")
            else:
                swap = _Swap(config.estimator)
                if swap.done(SWAP_WAIT_S):
                    if swap.error:
                        reason = f"estimator swap to {_estimator_name(config.estimator)} refused: {swap.error}"
                        self.get_logger().warning(f"parameter change refused: {reason}")
                        return params.set_result(False, reason)
                    serving, estimator = config.estimator, swap.estimator
                else:
                    self._swap = swap
                    self.get_logger().info(f"building estimator {_estimator_name(config.estimator)} in the "
                                           f"background; {_estimator_name(serving)} serves until it is ready")
        self._pipeline = _Pipeline(dataclasses.replace(config, estimator=serving), estimator, reward)
        if config.diagnostics_period_s != pipeline.config.diagnostics_period_s:
            self._diag_timer.timer_period_ns = int(config.diagnostics_period_s * 1e9)
        if config.pairs != pipeline.config.pairs:
            self.get_logger().info(f"now measuring {[str(p) for p in config.pairs]}")
        return params.set_result(True)

    def destroy_node(self) -> None:
        """Stop the worker before the node goes (also after a constructor that failed half-way)."""
        worker = getattr(self, "_worker", None)
        if worker is not None:
            with self._slot_cv:
                self._stopping = True
                self._slot_cv.notify()
            worker.join(timeout=2.0)
        super().destroy_node()


def _stamp_or_zero(msg: Any) -> int:
    try:
        return stamp_to_ns(msg.header.stamp)
    except Exception:   # noqa: BLE001 - a message without a usable stamp is still a frame
        return 0


def _stamp_offset_ms(colour: list[int], depth: list[int]) -> float:
    """Signed offset (depth - colour) between the latest colour stamp and its nearest depth stamp, ms."""
    last = colour[-1]
    nearest = min(depth, key=lambda d: abs(d - last))
    return (nearest - last) / 1e6


def _stall_limit_s(config: SpatialRewardConfig) -> float:
    """How long one frame may take before the worker counts as stalled: 10 s, plus a VLM's own deadline."""
    if config.estimator.backend != "vlm":
        return 10.0
    vlm = config.estimator.vlm
    return 10.0 + 2 * (vlm.openai.timeout_s if vlm.backend == "openai" else vlm.transformers.max_time_s)


def _estimate_status(est: DistanceEstimate, step: Any, node_latency_ms: float) -> DiagnosticStatus:
    values = {
        "distance_m": est.distance_m, "uncertainty_m": est.uncertainty_m, "kind": est.kind.value,
        "valid": est.valid, "reason": est.reason.value if est.reason else "",
        "reward": step.reward if step is not None else float("nan"),
        "filtered_distance_m": step.distance_m if step is not None else float("nan"),
        "estimator_ms": est.latency_ms, "node_latency_ms": node_latency_ms,
    }
    return DiagnosticStatus(
        level=DiagnosticStatus.OK if est.valid else DiagnosticStatus.WARN, name=str(est.pair),
        message="ok" if est.valid else est.detail, hardware_id=est.pair.slug,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def _segment_markers(header: Any, index: int, est: DistanceEstimate) -> list[Marker]:
    """A line between the measured points and a text label; DELETE markers when invalid."""
    line = Marker(header=header, ns=f"spatial/{est.pair.slug}", id=2 * index)
    text = Marker(header=header, ns=f"spatial/{est.pair.slug}", id=2 * index + 1)
    if not est.valid or est.gripper_point is None or est.target_point is None:
        line.action = text.action = Marker.DELETE
        return [line, text]
    a, b = Point(x=est.gripper_point[0], y=est.gripper_point[1], z=est.gripper_point[2]), \
        Point(x=est.target_point[0], y=est.target_point[1], z=est.target_point[2])
    line.type, line.action, line.points = Marker.LINE_LIST, Marker.ADD, [a, b]
    line.scale.x = 0.005
    line.color.r, line.color.g, line.color.a = 0.1, 1.0, 1.0
    line.pose.orientation.w = text.pose.orientation.w = 1.0
    text.type, text.action, text.text = Marker.TEXT_VIEW_FACING, Marker.ADD, f"{est.distance_m * 100:.1f} cm"
    text.pose.position = Point(x=(a.x + b.x) / 2, y=(a.y + b.y) / 2 - 0.03, z=(a.z + b.z) / 2)
    text.scale.z = 0.03
    text.color.r = text.color.g = text.color.b = text.color.a = 1.0
    return [line, text]


def main(args: list[str] | None = None) -> None:
    """Console entry point: ``spatial_reward_node --ros-args --params-file config/spatial_reward.yaml``.

    Exits 2, naming the problem, on a configuration that cannot work (a missing or unreadable parameter
    file, a bad value, an estimator that cannot be built); never with a traceback.
    """
    try:
        rclpy.init(args=args)
    except Exception as err:   # noqa: BLE001 - rcl refuses the arguments (e.g. a parameter file it cannot parse)
        print(f"[FATAL] [{NODE_NAME}]: bad arguments: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from err
    node = None
    try:
        node = SpatialRewardNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ConfigError as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"bad configuration: {err}")
        raise SystemExit(2) from err
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
