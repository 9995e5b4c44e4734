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
    ``/diagnostics`` (diagnostic_msgs/DiagnosticArray): input/output rate, latency, valid ratio, drops.

Latest frame wins: callbacks only park the newest colour/depth pair; one worker thread decodes and
estimates it, so a slow estimate drops frames instead of building a backlog.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float32
from visualization_msgs.msg import Marker, MarkerArray

from spatialvlm_ros.config import SpatialRewardConfig
from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, NoEstimateReason, Pair
from spatialvlm_ros.estimation import DistanceEstimator, build_estimator
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.messages.conversions import frame_from_messages, stamp_to_ns
from spatialvlm_ros.reward import CombinedReward, MultiPairReward, build_reward
from spatialvlm_ros.ros import params
from spatialvlm_ros.ros.sync import make_synchronizer

NODE_NAME = "spatial_reward_node"
# Read once at start: changing them would mean re-creating subscriptions mid-stream.
FIXED_AT_START = ("topics.", "qos.", "sync.")


@dataclass(frozen=True)
class _Pipeline:
    """What one frame goes through; swapped whole when a parameter changes (never half-updated)."""

    config: SpatialRewardConfig
    pairs: tuple[Pair, ...]
    kind: DistanceKind
    estimator: DistanceEstimator
    reward: MultiPairReward

    @classmethod
    def build(cls, config: SpatialRewardConfig) -> "_Pipeline":
        return cls(config, config.pairs, config.estimator.distance,
                   build_estimator(config.estimator), build_reward(config.reward, config.pairs))


class _Stats:
    """Rolling figures for /diagnostics (thread-safe: the worker writes, a timer reads)."""

    def __init__(self, window: int = 300) -> None:
        self.lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.valid = 0
        self.errors = 0
        self.last_error = ""
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=window)
        self.valid_flags: collections.deque[bool] = collections.deque(maxlen=window)
        self.out_times: collections.deque[float] = collections.deque(maxlen=window)
        self.in_times: collections.deque[float] = collections.deque(maxlen=window)


def _rate(times: Sequence[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


class SpatialRewardNode(Node):
    """Measures gripper-to-object distances in camera frames and publishes a dense reward."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, automatically_declare_parameters_from_overrides=True, **node_kwargs)
        self.unknown_parameters = params.declare_config_parameters(self, SpatialRewardConfig)
        for name in self.unknown_parameters:
            self.get_logger().error(f"unknown parameter {name!r} ignored (see config/spatial_reward.yaml)")
        config = params.read_config(self, SpatialRewardConfig)
        self._pipeline = _Pipeline.build(config)
        self._stats = _Stats()
        self._camera_info: Any = None
        self._intrinsics: CameraIntrinsics | None = None
        self._slot: tuple[Any, Any, int] | None = None
        self._slot_cv = threading.Condition()
        self._stopping = False
        self._last_logged: dict[str, float] = {}

        self._reward_pub = self.create_publisher(Float32, "reward", 10)
        self._estimates_pub = self.create_publisher(DiagnosticArray, "estimates", 10)
        self._markers_pub = self.create_publisher(MarkerArray, "markers", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._pair_pubs: dict[str, tuple[Any, Any]] = {}
        self._ensure_pair_publishers(self._pipeline.pairs)
        self._subscribe(config)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diag_timer = self.create_timer(config.diagnostics_period_s, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="spatial_reward_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"measuring {[str(p) for p in self._pipeline.pairs]} ({config.estimator.distance}, "
            f"{config.estimator.backend}/{config.estimator.grounding}); image {self._image_topic}, "
            f"depth {config.topics.depth or '(none)'}, pairing by {self._sync_kind}")

    # ------------------------------------------------------------------ inputs
    def _subscribe(self, config: SpatialRewardConfig) -> None:
        reliability = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
                       "reliable": ReliabilityPolicy.RELIABLE}[config.qos.reliability]
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=config.qos.depth, reliability=reliability)
        compressed = config.topics.transport == "compressed"
        image_type = CompressedImage if compressed else Image
        self._image_topic = config.topics.image + ("/compressed" if compressed else "")
        self.create_subscription(CameraInfo, config.topics.camera_info, self._on_camera_info, qos)
        if config.topics.depth:
            self._sync_kind, self._sync_keepalive = make_synchronizer(
                self, (image_type, self._image_topic, qos), (Image, config.topics.depth, qos),
                self._on_frame, config.sync.slop_s, config.sync.queue_size)
        else:
            self._sync_kind, self._sync_keepalive = "none (monocular)", None
            self.create_subscription(image_type, self._image_topic, lambda m: self._on_frame(m, None), qos)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        if msg is self._camera_info:
            return
        self._camera_info = msg
        try:
            self._intrinsics = CameraIntrinsics.from_camera_info(msg)
        except InputError as err:
            self._intrinsics = None
            self._note_error(f"bad camera_info: {err}")

    def _on_frame(self, image_msg: Any, depth_msg: Any) -> None:
        """Park the newest pair for the worker; an unprocessed older pair is dropped (latest wins)."""
        now = time.monotonic()
        with self._slot_cv:
            if self._slot is not None:
                self._stats.dropped += 1
            self._slot = (image_msg, depth_msg, time.time_ns())
            self._slot_cv.notify()
        with self._stats.lock:
            self._stats.received += 1
            self._stats.in_times.append(now)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            with self._slot_cv:
                while self._slot is None and not self._stopping:
                    self._slot_cv.wait()
                if self._stopping:
                    return
                item, self._slot = self._slot, None
            self._process(*item)

    def _process(self, image_msg: Any, depth_msg: Any, received_ns: int) -> None:
        pipeline = self._pipeline
        stamp_ns = stamp_to_ns(image_msg.header.stamp)
        frame_id = image_msg.header.frame_id
        try:
            frame = self._to_frame(image_msg, depth_msg)
        except InputError as err:
            reason = NoEstimateReason.NO_CAMERA_INFO if self._intrinsics is None else NoEstimateReason.BAD_INPUT
            self._note_error(str(err), stamp_ns)
            estimates = [DistanceEstimate.invalid(p, pipeline.kind, reason, str(err), stamp_ns=stamp_ns,
                                                  frame_id=frame_id) for p in pipeline.pairs]
        else:
            estimates = pipeline.estimator.estimate(frame, pipeline.pairs, pipeline.kind)
        combined = pipeline.reward.update(estimates)
        node_latency_ms = (time.time_ns() - received_ns) / 1e6
        self._publish(image_msg.header, estimates, combined, node_latency_ms)
        with self._stats.lock:
            self._stats.processed += 1
            self._stats.latencies_ms.append(node_latency_ms)
            self._stats.out_times.append(time.monotonic())
            self._stats.valid_flags.extend(est.valid for est in estimates)
        for est in estimates:
            if not est.valid and est.reason not in (NoEstimateReason.BAD_INPUT, NoEstimateReason.NO_CAMERA_INFO):
                self._warn(f"{est.pair}: {est.detail}", stamp_ns)

    def _to_frame(self, image_msg: Any, depth_msg: Any) -> Frame:
        if self._intrinsics is None:
            raise InputError(f"no valid CameraInfo received on {self._pipeline.config.topics.camera_info!r} yet")
        return frame_from_messages(image_msg, depth_msg, self._intrinsics)

    def _note_error(self, text: str, stamp_ns: int | None = None) -> None:
        with self._stats.lock:
            self._stats.errors += 1
            self._stats.last_error = text
        self._warn(text, stamp_ns)

    def _warn(self, text: str, stamp_ns: int | None) -> None:
        """Log a problem with the frame stamp, each distinct text at most every 2 s (a bad stream repeats)."""
        now = time.monotonic()
        if now - self._last_logged.get(text, -math.inf) >= 2.0:
            self._last_logged[text] = now
            self.get_logger().warning(text if stamp_ns is None else f"frame {stamp_ns}: {text}")

    # ------------------------------------------------------------------ outputs
    def _ensure_pair_publishers(self, pairs: Sequence[Pair]) -> None:
        for pair in pairs:
            if pair.slug not in self._pair_pubs:
                self._pair_pubs[pair.slug] = (self.create_publisher(Float32, f"reward/{pair.slug}", 10),
                                              self.create_publisher(Float32, f"distance/{pair.slug}", 10))

    def _publish(self, header: Any, estimates: list[DistanceEstimate], combined: CombinedReward,
                 node_latency_ms: float) -> None:
        if combined.defined or self._pipeline.config.reward.invalid_policy == "nan":
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
            if self._pipeline.config.publish_markers:
                markers.markers.extend(_segment_markers(header, i, est))
        self._estimates_pub.publish(out)
        if markers.markers:
            self._markers_pub.publish(markers)

    def _publish_diagnostics(self) -> None:
        s = self._stats
        with s.lock:
            lat = np.array(s.latencies_ms) if s.latencies_ms else np.array([np.nan])
            valid_ratio = float(np.mean(s.valid_flags)) if s.valid_flags else float("nan")
            values = {"input_hz": f"{_rate(s.in_times):.2f}", "output_hz": f"{_rate(s.out_times):.2f}",
                      "latency_ms_p50": f"{np.percentile(lat, 50):.2f}",
                      "latency_ms_p95": f"{np.percentile(lat, 95):.2f}",
                      "valid_ratio": f"{valid_ratio:.3f}", "frames_received": str(s.received),
                      "frames_processed": str(s.processed), "frames_dropped": str(s.dropped),
                      "errors": str(s.errors), "last_error": s.last_error,
                      "unknown_parameters": ",".join(self.unknown_parameters)}
            errors = s.errors
            receiving = len(s.in_times) > 0 and time.monotonic() - s.in_times[-1] < 5.0
        if not receiving:
            level, message = DiagnosticStatus.STALE, f"no frames on {self._image_topic}"
        elif self.unknown_parameters or errors or valid_ratio < 0.5:
            level, message = DiagnosticStatus.WARN, s.last_error or "low valid ratio or unknown parameters"
        else:
            level, message = DiagnosticStatus.OK, "ok"
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: spatial reward", message=message,
                                  hardware_id=self.get_fully_qualified_name(),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, changed: list[Any]) -> Any:
        """Validate a runtime change through the typed config; apply it atomically or refuse it."""
        try:
            config = params.updated_config(self._pipeline.config, changed, FIXED_AT_START)
            pipeline = _Pipeline.build(config)
        except ConfigError as err:
            self.get_logger().warning(f"parameter change refused: {err}")
            return params.set_result(False, str(err))
        self._ensure_pair_publishers(pipeline.pairs)
        self._pipeline = pipeline
        self.get_logger().info(f"now measuring {[str(p) for p in pipeline.pairs]}")
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
    """Console entry point: ``spatial_reward_node --ros-args --params-file config/spatial_reward.yaml``."""
    rclpy.init(args=args)
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
