"""``spatialvlm demo``: the paper's Fig. 5 robot demo, live over ROS 2.

Starts ``spatial_reward_node`` and ``sim_camera_node`` as separate processes on a private DDS
domain, records everything they publish into a rosbag2 (mcap), prints a live table, and writes a
plot and ``summary.json`` scoring the estimate against the simulator's ground truth.

The reward node starts unconfigured (``autostart: false``); the demo drives it through the standard
lifecycle services (``configure``, ``activate``, checked with ``get_state``), asks it one spatial question
on ``~/question`` once the approach has ended, and shuts it down (``finalized``) before stopping it.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rich.console import Console
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float32, String
from visualization_msgs.msg import MarkerArray

from spatialvlm_ros.config import SimCameraConfig, SpatialRewardConfig, config_path, load_config
from spatialvlm_ros.types import Pair
from spatialvlm_ros.evaluation.metrics import distance_metrics, latency_metrics
from spatialvlm_ros.evaluation.report import plot_trace, write_json
from spatialvlm_ros.messages.conversions import stamp_to_ns
from spatialvlm_ros.ros.lifecycle import LifecycleClient, LifecycleError
from spatialvlm_ros.ros.transport import joined_domain, node_command, ros_environment, stop_process

log = logging.getLogger(__name__)

REWARD_NODE = "/spatial_reward_node"


@dataclass
class _Row:
    """What is known about one camera frame, keyed by its stamp."""

    truth_m: float = float("nan")
    frame_index: int = -1
    estimate_m: float = float("nan")
    uncertainty_m: float = float("nan")
    reward: float = float("nan")
    valid: bool = False
    reason: str = ""
    latency_ms: float = float("nan")      # frame stamp -> estimate received here
    received_s: float = float("nan")

    @property
    def answered(self) -> bool:
        """Whether the reward node's estimate for this frame arrived."""
        return not math.isnan(self.received_s)


@dataclass
class _Trace:
    rows: dict[int, _Row] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def row(self, stamp_ns: int) -> _Row:
        return self.rows.setdefault(stamp_ns, _Row())


class _Recorder(Node):
    """Writes every topic of the demo to a bag (serialized as received) and collects the trace."""

    def __init__(self, bag_path: Path, topics: dict[str, type], target: str, console: Console,
                 context: rclpy.Context) -> None:
        super().__init__("spatialvlm_demo_recorder", context=context)
        self.trace = _Trace()
        self._target = target
        self._console = console
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        self._writer = Writer(bag_path, version=9, storage_plugin=StoragePlugin.MCAP)
        # MCAP's own chunk compression (zstd): any MCAP reader opens it, and synthetic frames shrink ~4.5x.
        self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        self._write_lock = threading.Lock()
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.answers: list[dict[str, Any]] = []
        self.question_pub = self.create_publisher(String, f"{REWARD_NODE}/question", 10)
        self.create_subscription(String, f"{REWARD_NODE}/answer", self._on_answer, 10)
        for topic, msg_type in topics.items():
            type_name = f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"
            # Bags name topics absolutely, as `ros2 bag record` does (the nodes run in the root namespace).
            conn = self._writer.add_connection("/" + topic.lstrip("/"), type_name, typestore=self._typestore)
            self.create_subscription(msg_type, topic, self._make_callback(topic, msg_type, conn), qos, raw=True)

    def _make_callback(self, topic: str, msg_type: type, conn: Any) -> Any:
        def callback(data: bytes) -> None:
            now_ns = time.time_ns()
            with self._write_lock:
                self._writer.write(conn, now_ns, data)
            if topic == "estimates":
                self._on_estimates(deserialize_message(data, msg_type), now_ns)
            elif topic == "ground_truth":
                self._on_truth(deserialize_message(data, msg_type))
        return callback

    def _on_answer(self, msg: String) -> None:
        with self.trace.lock:
            self.answers.append(json.loads(msg.data))

    def ask(self, question: str, timeout_s: float) -> dict[str, Any]:
        """Ask the reward node ``question`` on ``~/question``; its JSON answer."""
        qid = f"demo-{time.monotonic_ns()}"
        _wait(lambda: self.question_pub.get_subscription_count() > 0, timeout_s, "the reward node's ~/question")
        self.question_pub.publish(String(data=json.dumps({"question": question, "id": qid})))

        def answer() -> dict[str, Any] | None:
            with self.trace.lock:
                return next((a for a in self.answers if a.get("id") == qid), None)
        _wait(lambda: answer() is not None, timeout_s, f"an answer to {question!r}")
        return answer()  # type: ignore[return-value]

    def _on_truth(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self._target:
                values = {kv.key: kv.value for kv in status.values}
                with self.trace.lock:
                    row = self.trace.row(stamp_to_ns(msg.header.stamp))
                    row.truth_m = float(values["gap_m"])
                    row.frame_index = int(values["frame_index"])

    def _on_estimates(self, msg: DiagnosticArray, now_ns: int) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        for status in msg.status:
            if Pair.parse(status.name).target != self._target:
                continue
            v = {kv.key: kv.value for kv in status.values}
            with self.trace.lock:
                row = self.trace.row(stamp)
                row.estimate_m, row.uncertainty_m = float(v["distance_m"]), float(v["uncertainty_m"])
                row.reward, row.valid, row.reason = float(v["reward"]), v["valid"] == "True", v["reason"]
                row.latency_ms, row.received_s = (now_ns - stamp) / 1e6, now_ns / 1e9
                truth, index = row.truth_m, row.frame_index
            est = f"{row.estimate_m * 100:7.2f} ± {row.uncertainty_m * 100:4.2f}" if row.valid \
                else f"{'no estimate':>14} ({row.reason})"
            self._console.print(f"{index:>5}  {est:>16}  {truth * 100:7.2f}  {row.reward:7.3f}  "
                                f"{row.latency_ms:7.1f}", highlight=False)

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def run_demo(config_file: Path | None = None, out_root: Path = Path("results"), frames: int | None = None,
             domain_id: int | None = None, transport: str = "shm") -> Path:
    """Run the demo; return the results folder. See the module docstring."""
    config_file = Path(config_file) if config_file else config_path("sim_demo.yaml")
    # The recorder and the reward node both subscribe to the image before the first frame goes out.
    # The recorder pairs every frame with its ground truth, so it waits for that topic's match as well.
    sim_overrides: dict[str, Any] = {"min_subscribers": 2, "min_truth_subscribers": 1,
                                     **({"sim.n_frames": frames} if frames else {})}
    sim_cfg = load_config(SimCameraConfig, "sim_camera_node", config_file, overrides=sim_overrides)
    reward_cfg = load_config(SpatialRewardConfig, "spatial_reward_node", config_file)
    target = f"{sim_cfg.sim.target_colour} {sim_cfg.sim.target}"
    out = Path(out_root) / datetime.now().strftime("demo-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=False)
    env = ros_environment(domain_id, transport)
    console = Console(highlight=False)
    console.print(f"[bold]spatialvlm demo[/]: '{reward_cfg.pairs[0]}' over ROS 2 "
                  f"(ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, {sim_cfg.sim.n_frames} frames "
                  f"{sim_cfg.sim.width}x{sim_cfg.sim.height} at {sim_cfg.rate_hz} Hz)")
    topics = {sim_cfg.topics.image: Image, sim_cfg.topics.depth: Image, sim_cfg.topics.camera_info: CameraInfo,
              "ground_truth": DiagnosticArray, "ground_truth/distance": Float32, "estimates": DiagnosticArray,
              "reward": Float32, "markers": MarkerArray, "/diagnostics": DiagnosticArray}
    for pair in reward_cfg.pairs:
        topics[f"reward/{pair.slug}"] = Float32
        topics[f"distance/{pair.slug}"] = Float32

    context = rclpy.Context()
    with joined_domain(env):   # this process records on the same private domain as its children
        rclpy.init(context=context)
        recorder = _Recorder(out / "bag", topics, target, console, context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(recorder)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    logs = {name: open(out / f"{name}.log", "w") for name in ("spatial_reward_node", "sim_camera_node")}
    procs: dict[str, subprocess.Popen] = {}
    lifecycle = LifecycleClient(recorder, REWARD_NODE)
    extra: dict[str, Any] = {}
    try:
        procs["spatial_reward_node"] = _start_node("spatial_reward_node", config_file, env, logs,
                                                   {"autostart": "false"})
        if not lifecycle.wait_for_services(30):
            raise TimeoutError(f"spatial_reward_node's lifecycle services did not appear; see "
                               f"{out / 'spatial_reward_node.log'}")
        extra["lifecycle"] = _bring_up(lifecycle, console, out)
        _wait(lambda: recorder.count_subscribers(sim_cfg.topics.image) >= 1, 30, "the reward node's subscription")
        console.print(f"[bold]{'frame':>5}  {'estimate (cm)':>16}  {'truth':>7}  {'reward':>7}  {'lat ms':>7}[/]")
        procs["sim_camera_node"] = _start_node("sim_camera_node", config_file, env, logs, sim_overrides)
        timeout = 30 + 3 * sim_cfg.sim.n_frames / sim_cfg.rate_hz
        if procs["sim_camera_node"].wait(timeout=timeout) != 0:
            raise RuntimeError(f"sim_camera_node failed; see {out / 'sim_camera_node.log'}")
        _wait_quiet(recorder.trace, quiet_s=1.0, timeout_s=10.0)
        extra["question"] = _ask(recorder, console, f"What is the gap between the {reward_cfg.pairs[0].gripper} "
                                                    f"and the {reward_cfg.pairs[0].target}?")
        extra["lifecycle"]["final_state"] = lifecycle.walk("shutdown")
        console.print(f"lifecycle: shutdown -> {extra['lifecycle']['final_state']}")
    finally:
        for proc in procs.values():
            stop_process(proc, timeout_s=5)
        executor.shutdown(timeout_sec=10)
        spin.join(timeout=10)   # never leave a thread spinning on a context that is about to go
        recorder.close()
        recorder.destroy_node()
        rclpy.try_shutdown(context=context)
        for f in logs.values():
            f.close()
    summary = _summarise(recorder.trace, out, reward_cfg, sim_cfg, env, extra)
    console.print_json(data={k: summary[k] for k in ("median_abs_error_m", "mae_m", "spearman", "latency_ms_p50",
                                                     "latency_ms_p95", "output_hz", "invalid_rate")})
    console.print(f"results in [bold]{out}[/] (bag/, trace.png, summary.json, node logs)")
    return out


def demo_cli(args: Any) -> int:
    """``spatialvlm demo``: :func:`run_demo` from parsed arguments."""
    run_demo(config_file=args.config, out_root=args.out, frames=args.frames, domain_id=args.domain_id,
             transport=args.transport)
    return 0


def _start_node(name: str, config_file: Path, env: dict[str, str], logs: dict[str, Any],
                overrides: dict[str, Any] | None = None) -> subprocess.Popen:
    return subprocess.Popen(node_command(name, [config_file], overrides), env=env, stdout=logs[name],
                            stderr=subprocess.STDOUT)


def _bring_up(lifecycle: LifecycleClient, console: Console, out: Path) -> dict[str, Any]:
    """configure, then activate the reward node through its lifecycle services; check it is active."""
    states = [lifecycle.state()]
    timings = {}
    for transition in ("configure", "activate"):
        start = time.monotonic()
        if not lifecycle.change(transition):
            raise LifecycleError(f"spatial_reward_node: {transition} failed; see {out / 'spatial_reward_node.log'}")
        timings[f"{transition}_s"] = time.monotonic() - start
        states.append(lifecycle.state())
    if states[-1] != "active":
        raise LifecycleError(f"spatial_reward_node is {states[-1]} after configure and activate")
    console.print(f"lifecycle: {' -> '.join(states)} (configure {timings['configure_s']:.2f} s, activate "
                  f"{timings['activate_s']:.2f} s)")
    return {"states": states, **timings}


def _ask(recorder: _Recorder, console: Console, question: str) -> dict[str, Any]:
    """One question on ~/question about the last frame; printed, and kept for summary.json."""
    answer = recorder.ask(question, timeout_s=10.0)
    console.print(f"asked {question!r}: {answer['text']} ({answer['latency_ms']:.1f} ms)")
    keep = ("question", "valid", "reason", "text", "value", "unit", "uncertainty_m", "kind", "stamp", "latency_ms")
    return {k: answer.get(k) for k in keep}


def _wait_quiet(trace: _Trace, quiet_s: float, timeout_s: float) -> None:
    """Wait until no new estimate arrived for ``quiet_s`` (the last frames are still in flight)."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        with trace.lock:
            n = sum(r.answered for r in trace.rows.values())
        if n == last:
            return
        last = n
        time.sleep(quiet_s)


def _summarise(trace: _Trace, out: Path, reward_cfg: SpatialRewardConfig, sim_cfg: SimCameraConfig,
               env: dict[str, str], extra: dict[str, Any]) -> dict[str, Any]:
    with trace.lock:
        rows = sorted((stamp, row) for stamp, row in trace.rows.items() if row.frame_index >= 0)
    # Frames the node skipped (latest frame wins under load) are "dropped", not "invalid".
    answered = [(stamp, r) for stamp, r in rows if r.answered]
    metrics = distance_metrics([r.estimate_m for _, r in answered], [r.truth_m for _, r in answered])
    lat = latency_metrics([r.latency_ms for _, r in answered], [r.received_s for _, r in answered])
    t0 = rows[0][0] if rows else 0
    plot_trace(out / "trace.png", [(stamp - t0) / 1e9 for stamp, _ in answered], [r.estimate_m for _, r in answered],
               [r.uncertainty_m for _, r in answered], [r.truth_m for _, r in answered],
               [r.reward for _, r in answered],
               title=f"{reward_cfg.pairs[0]}: {reward_cfg.estimator.distance} distance "
                     f"({reward_cfg.estimator.grounding}, depth noise "
                     f"{'on' if sim_cfg.sim.depth_noise.enabled else 'off'})")
    summary = {
        "median_abs_error_m": metrics["median_abs_error_m"], "mae_m": metrics["mae_m"],
        "spearman": metrics["spearman"], **lat, "invalid_rate": metrics["invalid_rate"],
        "frames_published": len(rows), "frames_answered": len(answered),
        "dropped_rate": 1.0 - len(answered) / len(rows) if rows else float("nan"),
        "within_0.75_1.25x": metrics["within_0.75_1.25x"], "within_0.5_2x": metrics["within_0.5_2x"],
        "pair": str(reward_cfg.pairs[0]), "distance": reward_cfg.estimator.distance.value,
        "grounding": reward_cfg.estimator.grounding, "depth_noise": sim_cfg.sim.depth_noise.enabled,
        "resolution": f"{sim_cfg.sim.width}x{sim_cfg.sim.height}", "rate_hz": sim_cfg.rate_hz,
        "ros_domain_id": int(env["ROS_DOMAIN_ID"]),
        "fastdds_profile": env.get("FASTDDS_DEFAULT_PROFILES_FILE", "default"),
        **extra,
    }
    write_json(out / "summary.json", summary)
    return summary
