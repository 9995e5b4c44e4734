"""Live evaluation: replay a bag over DDS into a real ``spatial_reward_node`` and record its answers.

The node runs as a subprocess (the same code path as on a robot) on a private, local-only DDS
domain; this process plays the camera topics at the recorded timing (scaled by ``rate``), with
``/clock`` when ``rosgraph_msgs`` is importable (the node then runs on sim time), and collects the
node's ``estimates``. Only the camera topics are replayed: a bag recorded by ``spatialvlm demo``
also holds the old node's outputs, which must not mix with the new ones.

``spatialvlm eval-bag --live`` runs :func:`evaluate_bag_live_cli`: the bag evaluator
(:mod:`spatialvlm_ros.bag`, rclpy-free) with :func:`live_replay` handed in. This is the one module
that joins the two, so the evaluator never imports rclpy.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import math
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader

from spatialvlm_ros.bag.evaluate import LiveReplay, evaluate_bag_cli
from spatialvlm_ros.bag.records import FrameRecord, RunResult
from spatialvlm_ros.bag.truth import TruthTrace
from spatialvlm_ros.config import SpatialRewardConfig, to_flat, unflatten
from spatialvlm_ros.errors import BagError
from spatialvlm_ros.types import Pair
from spatialvlm_ros.messages.conversions import stamp_to_ns
from spatialvlm_ros.messages.rosbag import CameraTopics, deserialize, read_messages, topic_types
from spatialvlm_ros.ros.transport import joined_domain, node_command, ros_environment, stop_process

try:
    from rosgraph_msgs.msg import Clock
except ImportError:  # a ROS install without rosgraph_msgs: replay on wall time
    Clock = None

log = logging.getLogger(__name__)

NODE = "spatial_reward_node"
_RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


@dataclass(frozen=True)
class _Sent:
    """A colour frame as published: its header stamp, bag time and wall time of publishing (ns)."""

    stamp_ns: int
    log_time_ns: int
    published_ns: int


def _ros_type(name: str) -> type:
    """The rclpy message class of a bag type name, e.g. ``sensor_msgs/msg/Image``."""
    package, kind, cls = name.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), cls)
    except (ImportError, AttributeError) as err:
        raise BagError(f"cannot replay {name}: its ROS message package is not importable") from err


def node_parameters(config: SpatialRewardConfig, topics: CameraTopics) -> dict[str, Any]:
    """The node's parameter file for this replay: ``config`` on the bag's topics, with reliable QoS.

    Example:
        >>> topics = CameraTopics("/cam/image_raw/compressed", True, "/cam/depth", "/cam/camera_info")
        >>> flat = node_parameters(SpatialRewardConfig(), topics)[NODE]["ros__parameters"]
        >>> flat["topics"]["image"], flat["topics"]["transport"], flat["qos"]["reliability"]
        ('/cam/image_raw', 'compressed', 'reliable')
    """
    flat = to_flat(config)
    flat.update({"topics.image": topics.image.removesuffix("/compressed") if topics.compressed else topics.image,
                 "topics.transport": "compressed" if topics.compressed else "raw",
                 "topics.depth": topics.depth or "", "topics.camera_info": topics.camera_info,
                 # A replay scores every frame: no loss on the way in.
                 "qos.reliability": "reliable"})
    return {NODE: {"ros__parameters": unflatten(flat)}}


class _Player(Node):
    """Publishes the bag's camera topics and collects the node's estimates for one pair."""

    def __init__(self, context: rclpy.Context, types: dict[str, str], topics: CameraTopics, pair: Pair) -> None:
        super().__init__("spatialvlm_bag_player", context=context)
        camera = [topics.image, topics.camera_info] + ([topics.depth] if topics.depth else [])
        self.publishers_by_topic = {t: self.create_publisher(_ros_type(types[t]), t, _RELIABLE) for t in camera}
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if Clock is not None else None
        self.answers: dict[int, tuple[dict[str, str], int]] = {}   # stamp -> (status values, received ns)
        self.lock = threading.Lock()
        self._pair_name = str(pair)
        self.create_subscription(DiagnosticArray, "estimates", self._on_estimates, _RELIABLE)

    def _on_estimates(self, msg: DiagnosticArray) -> None:
        now = time.time_ns()
        for status in msg.status:
            if status.name == self._pair_name:
                with self.lock:
                    self.answers[stamp_to_ns(msg.header.stamp)] = ({kv.key: kv.value for kv in status.values}, now)

    def answered(self) -> int:
        with self.lock:
            return len(self.answers)

    def publish(self, topic: str, log_time_ns: int, data: bytes) -> None:
        if self.clock_pub is not None:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = divmod(log_time_ns, 1_000_000_000)
            self.clock_pub.publish(msg)
        self.publishers_by_topic[topic].publish(bytes(data))


def _wait(predicate: Any, timeout_s: float, what: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None:
            raise BagError(f"{NODE} exited with status {proc.returncode} while {what}; see {log_path}")
        if time.monotonic() > deadline:
            raise BagError(f"timed out after {timeout_s:.0f} s {what}; see {log_path}")
        time.sleep(0.05)


def _replay(player: _Player, reader: AnyReader, topics: CameraTopics, rate: float) -> list[_Sent]:
    """Publish the camera topics at the recorded pace; return the colour frames sent."""
    for conn, log_ns, data in read_messages(reader, [topics.camera_info]):
        # The node answers no frame before it knows the intrinsics: send them ahead and wait until
        # the node acknowledged them (a sample sent while discovery is still settling arrives only
        # by a late retransmission, after the first frames).
        player.publish(conn.topic, log_ns, data)
        if not player.publishers_by_topic[conn.topic].wait_for_all_acked(Duration(seconds=5)):
            log.warning("%s did not acknowledge the first camera_info; early frames may lack intrinsics", NODE)
        break
    sent = []
    wall0 = bag0 = None
    for conn, log_ns, data in read_messages(reader, player.publishers_by_topic):
        if wall0 is None:
            wall0, bag0 = time.monotonic(), log_ns
        delay = wall0 + (log_ns - bag0) / 1e9 / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        player.publish(conn.topic, log_ns, data)
        if conn.topic == topics.image:
            stamp = stamp_to_ns(deserialize(reader, data, conn.msgtype).header.stamp)
            sent.append(_Sent(stamp, log_ns, time.time_ns()))
    return sent


def _wait_quiet(player: _Player, expected: int, quiet_s: float = 1.0, timeout_s: float = 10.0) -> None:
    """Wait for the last frames still in flight: until all are answered or none arrived for ``quiet_s``."""
    start = last_change = time.monotonic()
    last = player.answered()
    while last < expected and time.monotonic() - last_change < quiet_s and time.monotonic() - start < timeout_s:
        time.sleep(0.02)
        if player.answered() != last:
            last, last_change = player.answered(), time.monotonic()


def _record(sent: _Sent, answer: tuple[dict[str, str], int] | None, truth: TruthTrace | None) -> FrameRecord:
    truth_m = truth.at(sent.stamp_ns, sent.log_time_ns) if truth is not None else math.nan
    if answer is None:
        return FrameRecord(stamp_ns=sent.stamp_ns, estimate_m=math.nan, uncertainty_m=math.nan, valid=False,
                           reason="no_output", reward=math.nan, truth_m=truth_m, latency_ms=math.nan)
    values, received_ns = answer
    return FrameRecord(stamp_ns=sent.stamp_ns, estimate_m=float(values["distance_m"]),
                       uncertainty_m=float(values["uncertainty_m"]), valid=values["valid"] == "True",
                       reason=values["reason"], reward=float(values["reward"]), truth_m=truth_m,
                       latency_ms=(received_ns - sent.published_ns) / 1e6)


def run_live(reader: AnyReader, topics: CameraTopics, config: SpatialRewardConfig, *, truth: TruthTrace | None,
             out_dir: Path, rate: float = 1.0, domain_id: int | None = None,
             startup_timeout_s: float = 30.0) -> RunResult:
    """Replay ``reader``'s camera topics into a fresh ``spatial_reward_node`` and record its estimates.

    Args:
        reader: the open bag.
        topics: what to replay (see :func:`~spatialvlm_ros.messages.rosbag.resolve_topics`).
        config: the node's configuration; its first pair is recorded.
        truth: ground truth to align to each frame, if any.
        out_dir: where the node's parameter file and log go.
        rate: replay speed factor (2.0 = twice as fast as recorded).
        domain_id: ``ROS_DOMAIN_ID`` (default: random in 10-99, see ``ros_environment``).
        startup_timeout_s: how long the node may take to start and match the topics.

    Returns:
        One record per colour frame published; frames the node never answered have reason ``no_output``.

    Raises:
        BagError: the node did not start or exited, or the bag cannot be read.
    """
    pair = config.pairs[0]
    params_file = out_dir / f"{NODE}.yaml"
    params_file.write_text(yaml.safe_dump(node_parameters(config, topics), sort_keys=False))
    log_path = out_dir / f"{NODE}.log"
    env = ros_environment(domain_id, transport="shm")
    cmd = node_command(NODE, [params_file], {"use_sim_time": "true"} if Clock is not None else None)
    log.info("live replay on ROS_DOMAIN_ID=%s at %.2gx, %s %s", env["ROS_DOMAIN_ID"], rate, NODE,
             "on sim time (/clock)" if Clock is not None else "on wall time")
    with joined_domain(env), open(log_path, "w") as node_log:
        context = rclpy.Context()
        rclpy.init(context=context)
        try:
            player = _Player(context, topic_types(reader), topics, pair)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(player)
            spin = threading.Thread(target=executor.spin, daemon=True)
            spin.start()
            proc = subprocess.Popen(cmd, env=env, stdout=node_log, stderr=subprocess.STDOUT)
            try:
                _wait(lambda: player.count_publishers("estimates") > 0
                      and all(p.get_subscription_count() > 0 for p in player.publishers_by_topic.values()),
                      startup_timeout_s, f"waiting for {NODE} to start and subscribe", proc, log_path)
                start = time.perf_counter()
                sent = _replay(player, reader, topics, rate)
                _wait_quiet(player, expected=len(sent))
                wall_s = time.perf_counter() - start
            finally:
                stop_process(proc, timeout_s=5)
                executor.shutdown(timeout_sec=10)
                spin.join(timeout=10)   # never leave a thread spinning on a context that is about to go
                player.destroy_node()
        finally:
            rclpy.try_shutdown(context=context)
    with player.lock:
        answers = dict(player.answers)
    log.info("%s answered %d of %d frames", NODE, sum(s.stamp_ns in answers for s in sent), len(sent))
    return RunResult(records=tuple(_record(s, answers.get(s.stamp_ns), truth) for s in sent), wall_s=wall_s)


def live_replay(rate: float = 1.0, domain_id: int | None = None) -> LiveReplay:
    """The live mode of :func:`~spatialvlm_ros.bag.evaluate.evaluate_bag`: :func:`run_live` at ``rate``.

    Args:
        rate: replay speed factor (> 0).
        domain_id: ``ROS_DOMAIN_ID`` (default: random in 10-99).

    Raises:
        BagError: ``rate`` is not > 0.
    """
    return LiveReplay(run=functools.partial(run_live, rate=rate, domain_id=domain_id), rate=rate)


def evaluate_bag_live_cli(args: argparse.Namespace) -> int:
    """``spatialvlm eval-bag --live``: :func:`~spatialvlm_ros.bag.evaluate.evaluate_bag_cli` replaying over DDS."""
    return evaluate_bag_cli(args, live=live_replay(args.rate, args.domain_id))
