#!/usr/bin/env python3
"""Does spatial_reward_node keep up with a 30 Hz 640x480 RGB-D camera? Latency, rates and drops.

Run::

    python benchmarks/node_latency.py [--seconds 20] [--transport shm|default|both] [--qos best_effort] [--smoke]

It takes about 8 s to render and time the estimator, then ``seconds`` + about 8 s per transport.
``--smoke`` runs the same steps with 4 frames, one estimator pass and 2 s on the shm transport only.

What is measured, and how:

1. ``--frames`` frames of the demo scene (``config/sim_demo.yaml``: yellow gripper approaching a red can,
   depth noise on) are rendered once at 640x480 with MuJoCo and turned into sensor_msgs/Image fields
   (rgb8 colour, 16UC1 depth) with the ``conversions`` helpers.
2. ``estimator_ms``: ``build_estimator(EstimatorConfig()).estimate(frame, pairs, kind)`` (geometric
   backend, colour_prompt grounding, gap) on those frames decoded as the node decodes them, in a process
   of its own with OMP/OpenBLAS/MKL_NUM_THREADS=1 and nothing else of the benchmark running.
3. Per transport (``shm``: ``config/fastdds_shm.xml``; ``default``: Fast DDS as it comes), one after the
   other, on a private ``ROS_DOMAIN_ID`` (``--domain-id``; default: the inherited ``ROS_DOMAIN_ID`` if set,
   so a test can hand it its own, else a random one per transport), four processes share the machine:

   * ``spatial_reward_node`` with ``qos.reliability`` from ``--qos`` (default best_effort, as shipped);
   * an echo node that republishes every colour image unchanged on ``echo``: the floor set by a node
     that does nothing but receive an image and send it on;
   * a camera that publishes the pre-rendered frames at 30 Hz, image, depth and camera_info sharing one
     header stamped with the wall clock at publish time (it never renders);
   * the measurer (this script, an rclpy node) receiving ``estimates`` (header = the source frame's),
     ``echo`` and ``/diagnostics``.

   Latency = receive wall time - header stamp (one machine, one clock). Only frames stamped in the
   steady window count: from ``--warmup`` seconds after the first frame to the last frame published.

How to read the results (targets from the issue):

* ``estimator_ms_p50`` <= 5 ms per 640x480 frame.
* ``output_hz`` >= 29 at ``input_hz`` ~30, with no growing backlog: ``node_latency_trend_ms`` (latency
  p50 over the last third of the window minus that over the first third) stays near 0. ``output_hz`` is
  ``input_hz`` times the share of the window's frames that got an estimate.
* ``node_latency_ms_p50`` <= ``echo_latency_ms_p50`` + 5 ms. Echo latency covers two image hops
  (camera -> echo -> measurer); node latency one image hop (plus depth), decoding, the estimate and one
  small message. ``node_internal_ms_p50`` is the node's own receipt-to-publish time (its /diagnostics).
* ``frames_*`` come from the node's /diagnostics: ``received`` counts colour/depth pairs that arrived,
  ``dropped`` those overwritten by a newer pair before the worker got to them (latest frame wins).
* ``cpu_percent`` is per process over the steady window, 100 = one core busy. All four processes share
  ``cpu_count`` cores; a total near ``100 * cpu_count`` means the figures are bounded by CPU starvation
  on this machine, not only by the node.

The last line printed is one JSON object. Its top-level latency and rate figures come from the shm
profile (what the project ships) when it ran, else from the default transport.
"""

from __future__ import annotations

import argparse
import array
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np
import rclpy
import yaml
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from spatialvlm_ros.config import SimCameraConfig, SpatialRewardConfig, config_path, from_mapping
from spatialvlm_ros.estimation import build_estimator
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.messages.conversions import (
    camera_info_fields, depth_to_image_fields, depth_to_metres, image_to_rgb, rgb_to_image_fields, stamp_to_ns,
)
from spatialvlm_ros.ros.transport import node_command, ros_environment, stop_process

from _common import BenchmarkParser, emit, percentile

FIGURES = ("estimator_ms_p50", "node_latency_ms_p50", "node_latency_ms_p95", "echo_latency_ms_p50", "output_hz",
           "input_hz")

SCRIPT = Path(__file__).resolve()
NODE_CONFIG = SpatialRewardConfig()        # the node runs with its defaults; topics, pairs and kind follow them
RATE_HZ = 30.0
WIDTH, HEIGHT = 640, 480
OPTICAL_FRAME_ID = "camera_color_optical_frame"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MATCH_TIMEOUT_S = 30.0                     # process start + DDS discovery, generous for a loaded machine
TAIL_S = 1.5                               # after the last frame: stragglers and the node's last /diagnostics
TARGET_ESTIMATOR_MS = 5.0
TARGET_OUTPUT_HZ = 29.0
TARGET_OVER_ECHO_MS = 5.0


# ---------------------------------------------------------------------------------------------------------
# Frames: rendered once, stored as message fields
# ---------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Recording:
    """Pre-rendered frames as sensor_msgs/Image fields (``data`` as ``array('B')``) plus the camera model."""

    rgb: list[dict[str, Any]]
    depth: list[dict[str, Any]]
    intrinsics: CameraIntrinsics


def render_frames(n_frames: int, path: Path) -> float:
    """Render the demo scene at 640x480 and save its Image fields to ``path`` (npz).

    Args:
        n_frames: frames along the scripted approach (the camera cycles through them).
        path: output file.

    Returns:
        Mean render time per frame, ms.
    """
    from spatialvlm_ros.sim import TabletopSim  # only this process renders (MuJoCo + OSMesa)

    demo = yaml.safe_load(config_path("sim_demo.yaml").read_text())["sim_camera_node"]["ros__parameters"]
    demo_config = from_mapping(SimCameraConfig, demo)
    sim_config = dataclasses.replace(demo_config.sim, width=WIDTH, height=HEIGHT, n_frames=n_frames)
    with TabletopSim(sim_config) as sim:
        start = time.perf_counter()
        frames = [sim.render(i).frame for i in range(n_frames)]
        render_ms = 1e3 * (time.perf_counter() - start) / n_frames
        intrinsics = sim.intrinsics
    rgb = [rgb_to_image_fields(f.rgb) for f in frames]
    depth = [depth_to_image_fields(f.depth_m, demo_config.depth_encoding) for f in frames]
    meta = {"rgb": {k: v for k, v in rgb[0].items() if k != "data"},
            "depth": {k: v for k, v in depth[0].items() if k != "data"},
            "intrinsics": dataclasses.asdict(intrinsics)}
    np.savez(path, rgb=np.stack([np.frombuffer(f["data"], np.uint8) for f in rgb]),
             depth=np.stack([np.frombuffer(f["data"], np.uint8) for f in depth]), meta=np.array(json.dumps(meta)))
    return render_ms


def load_recording(path: Path) -> Recording:
    """Read what :func:`render_frames` saved.

    ``data`` becomes ``array('B')``: rclpy message setters take it as is, whereas ``bytes`` are checked
    element by element (about 17 ms for one 640x480 rgb8 image).

    Args:
        path: the npz file.

    Returns:
        The frames' Image fields and the camera intrinsics.
    """
    with np.load(path) as saved:
        meta = json.loads(str(saved["meta"]))
        rgb = [dict(meta["rgb"], data=array.array("B", row.tobytes())) for row in saved["rgb"]]
        depth = [dict(meta["depth"], data=array.array("B", row.tobytes())) for row in saved["depth"]]
    return Recording(rgb=rgb, depth=depth, intrinsics=CameraIntrinsics(**meta["intrinsics"]))


# ---------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------

def image_qos(reliability: str) -> QoSProfile:
    """The image QoS the node uses for ``qos.reliability`` (keep last, depth as in its config)."""
    policy = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}[reliability]
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=NODE_CONFIG.qos.depth, reliability=policy)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` with stdout and stderr going to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def log_tail(log: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, indented, for error messages."""
    text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log)"]
    return "\n".join("    " + line for line in text)


# ---------------------------------------------------------------------------------------------------------
# Roles run as separate processes
# ---------------------------------------------------------------------------------------------------------

def time_estimator(recording: Recording, repeats: int) -> dict[str, Any]:
    """Time decoding and ``estimate`` on every frame, ``repeats`` passes, after one warm-up call.

    Args:
        recording: the frames.
        repeats: passes over all frames.

    Returns:
        ``estimator_ms_p50``/``_p95``, ``decode_ms_p50`` (Image fields -> arrays, as the node does),
        ``valid_ratio`` of the estimates and the number of timed ``calls``.
    """
    pairs = list(NODE_CONFIG.pairs)
    kind = NODE_CONFIG.estimator.distance
    estimator = build_estimator(NODE_CONFIG.estimator)
    frames, decode_ms = [], []
    for rgb_fields, depth_fields in zip(recording.rgb, recording.depth):
        start = time.perf_counter()
        rgb = image_to_rgb(SimpleNamespace(**rgb_fields))
        depth = depth_to_metres(SimpleNamespace(**depth_fields))
        decode_ms.append(1e3 * (time.perf_counter() - start))
        frames.append(Frame(rgb=rgb, intrinsics=recording.intrinsics, depth_m=depth, frame_id=OPTICAL_FRAME_ID))
    estimator.estimate(frames[0], pairs, kind)
    estimate_ms, valid = [], []
    for _ in range(repeats):
        for frame in frames:
            start = time.perf_counter()
            estimates = estimator.estimate(frame, pairs, kind)
            estimate_ms.append(1e3 * (time.perf_counter() - start))
            valid.extend(e.valid for e in estimates)
    return {"estimator_ms_p50": percentile(estimate_ms, 50), "estimator_ms_p95": percentile(estimate_ms, 95),
            "decode_ms_p50": percentile(decode_ms, 50), "valid_ratio": float(np.mean(valid)),
            "calls": len(estimate_ms)}


def run_camera(recording: Recording, seconds: float, subscribers: int, warmup_s: float) -> dict[str, Any]:
    """Publish the frames at 30 Hz, cycling, once ``subscribers`` nodes subscribe to the image topic.

    A late tick is published at once and the schedule restarts from it (no catch-up burst), so a
    starved camera shows up as a lower input rate.

    Args:
        recording: the frames.
        seconds: how long to publish.
        subscribers: image subscribers to wait for (the node and the echo).
        warmup_s: CPU use is counted from this long after the first frame.

    Returns:
        ``stamps_ns`` of every frame published, ``publish_ms_p50`` (the three publish calls) and
        ``cpu_percent`` over the steady part.

    Raises:
        RuntimeError: the subscribers did not appear within ``MATCH_TIMEOUT_S``.
    """
    node = rclpy.create_node("latency_camera")
    # Reliable keep-last writers match best-effort and reliable readers alike and never block.
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=NODE_CONFIG.qos.depth,
                     reliability=ReliabilityPolicy.RELIABLE)
    image_pub = node.create_publisher(Image, NODE_CONFIG.topics.image, qos)
    depth_pub = node.create_publisher(Image, NODE_CONFIG.topics.depth, qos)
    info_pub = node.create_publisher(CameraInfo, NODE_CONFIG.topics.camera_info, qos)
    images = [Image(**fields) for fields in recording.rgb]
    depths = [Image(**fields) for fields in recording.depth]
    info = CameraInfo(**camera_info_fields(recording.intrinsics))
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while (image_pub.get_subscription_count() < subscribers or depth_pub.get_subscription_count() < 1
           or info_pub.get_subscription_count() < 1):
        if time.monotonic() > deadline:
            raise RuntimeError(f"camera: fewer than {subscribers} image subscribers after {MATCH_TIMEOUT_S} s")
        time.sleep(0.05)

    stamps_ns: list[int] = []
    publish_ms: list[float] = []
    period = 1.0 / RATE_HZ
    first = next_tick = time.monotonic()
    cpu_mark: tuple[float, float] | None = None
    while next_tick < first + seconds:
        time.sleep(max(0.0, next_tick - time.monotonic()))
        now_ns = time.time_ns()
        header = Header(stamp=Time(sec=now_ns // 1_000_000_000, nanosec=now_ns % 1_000_000_000),
                        frame_id=OPTICAL_FRAME_ID)
        i = len(stamps_ns) % len(images)
        start = time.perf_counter()
        images[i].header = depths[i].header = info.header = header
        image_pub.publish(images[i])
        depth_pub.publish(depths[i])
        info_pub.publish(info)
        publish_ms.append(1e3 * (time.perf_counter() - start))
        stamps_ns.append(now_ns)
        if cpu_mark is None and time.monotonic() >= first + warmup_s:
            cpu_mark = (time.monotonic(), time.process_time())
        next_tick = max(next_tick + period, time.monotonic())
    cpu_percent = None
    if cpu_mark is not None:
        cpu_percent = 100.0 * (time.process_time() - cpu_mark[1]) / (time.monotonic() - cpu_mark[0])
    node.destroy_node()
    return {"stamps_ns": stamps_ns, "publish_ms_p50": percentile(publish_ms, 50), "cpu_percent": cpu_percent}


def run_echo(reliability: str) -> None:
    """Republish every colour image unchanged on ``echo`` until interrupted."""
    node = rclpy.create_node("latency_echo")
    echo_pub = node.create_publisher(Image, "echo", 10)
    node.create_subscription(Image, NODE_CONFIG.topics.image, echo_pub.publish, image_qos(reliability))
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()


class Measurer:
    """Receive times of ``estimates`` and ``echo`` messages and the node's latest /diagnostics values."""

    def __init__(self, node: Node) -> None:
        """Subscribe on ``node`` (reliable, like the node's and the echo's output publishers)."""
        self.estimates: list[tuple[int, int]] = []   # (header stamp, receive time), ns
        self.echoes: list[tuple[int, int]] = []
        self.node_values: dict[str, str] = {}
        self.estimates_sub = node.create_subscription(DiagnosticArray, "estimates", self._on_estimates, 10)
        self.echo_sub = node.create_subscription(Image, "echo", self._on_echo, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_estimates(self, msg: DiagnosticArray) -> None:
        received = time.time_ns()
        self.estimates.append((stamp_to_ns(msg.header.stamp), received))

    def _on_echo(self, msg: Image) -> None:
        received = time.time_ns()
        self.echoes.append((stamp_to_ns(msg.header.stamp), received))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": spatial reward"):
                self.node_values = {kv.key: kv.value for kv in status.values}

    def first_stamp_ns(self) -> int | None:
        """Header stamp of the first frame seen on either output, None before any."""
        stamps = [seen[0][0] for seen in (self.estimates, self.echoes) if seen]
        return min(stamps) if stamps else None


def spin_until(executor: SingleThreadedExecutor, done: Callable[[], bool], timeout_s: float) -> bool:
    """Spin ``executor`` until ``done()`` or ``timeout_s``; returns ``done()``."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return done()


def latency_stats(pairs: Sequence[tuple[int, int]], start_ns: int, end_ns: int) -> dict[str, Any]:
    """Latency figures for (stamp, receive) pairs whose stamp lies in ``[start_ns, end_ns]``.

    Returns:
        ``count``, ``p50``/``p95``/``max`` in ms, and ``trend``: p50 of the last third (by stamp) minus
        p50 of the first third, ms (a growing backlog makes it grow with the window).
    """
    latency = [(received - stamp) / 1e6 for stamp, received in sorted(pairs) if start_ns <= stamp <= end_ns]
    third = len(latency) // 3
    trend = percentile(latency[-third:], 50) - percentile(latency[:third], 50) if third else None
    return {"count": len(latency), "p50": percentile(latency, 50), "p95": percentile(latency, 95),
            "max": max(latency, default=None), "trend": trend}


def run_measure(data: Path, seconds: float, warmup_s: float, reliability: str, logs: Path) -> dict[str, Any]:
    """Start node, echo and camera on this process's ROS domain and measure what comes out.

    Args:
        data: the frames (npz from :func:`render_frames`).
        seconds: how long the camera publishes.
        warmup_s: the start of the run excluded from the figures.
        reliability: the node's (and echo's) image subscription reliability.
        logs: folder for the child processes' logs.

    Returns:
        Rates, latencies, the node's counters and per-process CPU use (see the module docstring).

    Raises:
        RuntimeError: a process failed or nothing got through; the message carries its log tail.
    """
    node_cmd = node_command("spatial_reward_node", overrides={"qos.reliability": reliability})
    procs = {"node": spawn(node_cmd, logs / "node.log"),
             "echo": spawn([sys.executable, str(SCRIPT), "--role", "echo", "--qos", reliability], logs / "echo.log")}
    camera_out = logs / "camera.json"
    node = rclpy.create_node("latency_measurer")
    measurer = Measurer(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if not spin_until(executor, lambda: measurer.estimates_sub.get_publisher_count() > 0
                          and measurer.echo_sub.get_publisher_count() > 0, MATCH_TIMEOUT_S):
            raise RuntimeError(f"node or echo not discovered within {MATCH_TIMEOUT_S} s\n"
                               f"  node log:\n{log_tail(logs / 'node.log')}\n"
                               f"  echo log:\n{log_tail(logs / 'echo.log')}")
        procs["camera"] = spawn([sys.executable, str(SCRIPT), "--role", "camera", "--data", str(data),
                                 "--seconds", str(seconds), "--warmup", str(warmup_s), "--out", str(camera_out)],
                                logs / "camera.log")
        cpu_mark: tuple[float, dict[str, float]] | None = None
        while procs["camera"].poll() is None:
            executor.spin_once(timeout_sec=0.05)
            first = measurer.first_stamp_ns()
            if cpu_mark is None and first is not None and time.time_ns() >= first + warmup_s * 1e9:
                cpu_mark = (time.monotonic(), {"node": cpu_seconds(procs["node"].pid),
                                               "echo": cpu_seconds(procs["echo"].pid), "measurer": time.process_time()})
        cpu_end = {"node": cpu_seconds(procs["node"].pid), "echo": cpu_seconds(procs["echo"].pid),
                   "measurer": time.process_time()}
        cpu_wall = time.monotonic() - cpu_mark[0] if cpu_mark is not None else 0.0
        if procs["camera"].returncode != 0:
            raise RuntimeError(f"camera exited with {procs['camera'].returncode}\n{log_tail(logs / 'camera.log')}")
        spin_until(executor, lambda: False, TAIL_S)
        for name, proc in procs.items():
            if proc.poll() is not None and name != "camera":
                raise RuntimeError(f"{name} died (exit {proc.returncode})\n{log_tail(logs / f'{name}.log')}")
    finally:
        for proc in procs.values():
            stop_process(proc)
        executor.shutdown()
        node.destroy_node()

    camera = json.loads(camera_out.read_text())
    stamps = camera["stamps_ns"]
    start_ns, end_ns = stamps[0] + int(warmup_s * 1e9), stamps[-1]
    window_s = (end_ns - start_ns) / 1e9
    published = sum(start_ns <= s <= end_ns for s in stamps)
    node_lat = latency_stats(measurer.estimates, start_ns, end_ns)
    echo_lat = latency_stats(measurer.echoes, start_ns, end_ns)
    if node_lat["count"] == 0:
        raise RuntimeError(f"no estimates in the steady window\n  node log:\n{log_tail(logs / 'node.log')}")
    input_hz = (published - 1) / window_s
    values = measurer.node_values
    cpu = {name: 100.0 * (cpu_end[name] - cpu_mark[1][name]) / cpu_wall for name in cpu_end} if cpu_wall else {}
    cpu["camera"] = camera["cpu_percent"]
    return {
        "qos": reliability, "window_s": window_s, "input_hz": input_hz,
        "output_hz": input_hz * node_lat["count"] / published, "echo_hz": input_hz * echo_lat["count"] / published,
        "node_latency_ms_p50": node_lat["p50"], "node_latency_ms_p95": node_lat["p95"],
        "node_latency_ms_max": node_lat["max"], "node_latency_trend_ms": node_lat["trend"],
        "echo_latency_ms_p50": echo_lat["p50"], "echo_latency_ms_p95": echo_lat["p95"],
        "node_internal_ms_p50": float(values["latency_ms_p50"]) if "latency_ms_p50" in values else None,
        "frames_published": len(stamps),
        **{f"frames_{k}": int(values[f"frames_{k}"]) if f"frames_{k}" in values else None
           for k in ("received", "processed", "dropped")},
        "camera_publish_ms_p50": camera["publish_ms_p50"],
        "cpu_percent": cpu,
    }


# ---------------------------------------------------------------------------------------------------------
# Orchestration and report
# ---------------------------------------------------------------------------------------------------------

def run_role(role: str, args: list[str], env: dict[str, str], out: Path, timeout_s: float) -> dict[str, Any]:
    """Run this script as ``--role role`` in a fresh process with ``env``; return the JSON it wrote to ``out``.

    Raises:
        RuntimeError: the process failed or timed out (its own error is on stderr already).
    """
    cmd = [sys.executable, str(SCRIPT), "--role", role, "--out", str(out), *args]
    try:
        result = subprocess.run(cmd, env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"{role} did not finish within {timeout_s:.0f} s") from err
    if result.returncode != 0:
        raise RuntimeError(f"{role} failed (exit {result.returncode}); see its error above")
    return json.loads(out.read_text())


def fmt(value: Any) -> str:
    """A table cell: numbers to two decimals, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def print_table(estimator: dict[str, Any], render_ms: float, results: dict[str, dict[str, Any]]) -> None:
    """Human-readable report: estimator figures, then one column per transport."""
    print(f"\nmachine: {os.cpu_count()} cores; frames rendered at {render_ms:.1f} ms each (not during the runs)")
    print(f"estimator (one thread, {estimator['calls']} calls): p50 {estimator['estimator_ms_p50']:.2f} ms, "
          f"p95 {estimator['estimator_ms_p95']:.2f} ms, valid {estimator['valid_ratio']:.2f}; "
          f"decoding Image fields p50 {estimator['decode_ms_p50']:.2f} ms "
          f"(target: estimator <= {TARGET_ESTIMATOR_MS} ms)")
    rows = ["qos", "window_s", "input_hz", "output_hz", "echo_hz", "node_latency_ms_p50", "node_latency_ms_p95",
            "node_latency_ms_max", "node_latency_trend_ms", "echo_latency_ms_p50", "echo_latency_ms_p95",
            "node_internal_ms_p50", "frames_published", "frames_received", "frames_processed", "frames_dropped",
            "camera_publish_ms_p50"]
    names = list(results)
    print(f"\n{'':24}" + "".join(f"{name:>14}" for name in names))
    for row in rows:
        print(f"{row:24}" + "".join(f"{fmt(results[n].get(row)):>14}" for n in names))
    for proc in ("node", "echo", "camera", "measurer"):
        print(f"{'cpu% ' + proc:24}" + "".join(f"{fmt(results[n].get('cpu_percent', {}).get(proc)):>14}"
                                               for n in names))
    for name in names:
        if "error" in results[name]:
            print(f"{name}: FAILED: {results[name]['error']}")


def summary(estimator: dict[str, Any], results: dict[str, dict[str, Any]], seconds: float, qos: str,
            wall_s: float) -> dict[str, Any]:
    """The final JSON object: headline figures (shm if it ran), targets, per-transport breakdown."""
    ok = {name: result for name, result in results.items() if "error" not in result}
    headline = "shm" if "shm" in ok else next(iter(ok), None)
    head = ok.get(headline, {})
    node_p50, echo_p50, output_hz = (head.get(k) for k in ("node_latency_ms_p50", "echo_latency_ms_p50", "output_hz"))
    return {
        "estimator_ms_p50": estimator["estimator_ms_p50"],
        "node_latency_ms_p50": node_p50, "node_latency_ms_p95": head.get("node_latency_ms_p95"),
        "echo_latency_ms_p50": echo_p50, "output_hz": output_hz, "input_hz": head.get("input_hz"),
        "headline_transport": headline,
        "targets_met": {
            "estimator_le_5ms": estimator["estimator_ms_p50"] <= TARGET_ESTIMATOR_MS,
            "output_ge_29hz": output_hz is not None and output_hz >= TARGET_OUTPUT_HZ,
            "node_le_echo_plus_5ms": None if node_p50 is None or echo_p50 is None
            else node_p50 <= echo_p50 + TARGET_OVER_ECHO_MS,
        },
        "estimator": estimator, "transports": results, "qos": qos, "seconds": seconds,
        "cpu_count": os.cpu_count(), "wall_s": wall_s,
    }


def benchmark(args: argparse.Namespace) -> None:
    """Render, time the estimator, measure each transport, print the table and the JSON line."""
    started = time.monotonic()
    transports = ["shm", "default"] if args.transport == "both" else [args.transport]
    if args.domain_id is not None:     # given: each transport in turn on it (the previous one's processes are gone)
        domains = [args.domain_id] * len(transports)
    else:                              # private per run, as ros_environment does
        domains = random.sample(range(10, 100), len(transports))
    with tempfile.TemporaryDirectory(prefix="node_latency_") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "frames.npz"
        print(f"rendering {args.frames} frames at {WIDTH}x{HEIGHT} ...", flush=True)
        render_ms = render_frames(args.frames, data)
        single_thread = dict(os.environ, **{var: "1" for var in THREAD_VARS})
        print("timing the estimator ...", flush=True)
        estimator = run_role("estimator", ["--data", str(data), "--repeats", str(args.repeats)], single_thread,
                             tmp / "estimator.json", 300)
        results: dict[str, dict[str, Any]] = {}
        for transport, domain in zip(transports, domains):
            print(f"{transport}: ROS_DOMAIN_ID {domain}, {args.seconds:.0f} s at {RATE_HZ:.0f} Hz ...", flush=True)
            logs = tmp / transport
            logs.mkdir()
            try:
                results[transport] = run_role(
                    "measure", ["--data", str(data), "--seconds", str(args.seconds), "--warmup", str(args.warmup),
                                "--qos", args.qos, "--logs", str(logs)],
                    ros_environment(domain, transport), logs / "result.json", args.seconds + 3 * MATCH_TIMEOUT_S + 60)
            except RuntimeError as err:
                results[transport] = {"error": str(err)}
    print_table(estimator, render_ms, results)
    wall_s = time.monotonic() - started
    print(f"\ntotal {wall_s:.0f} s")
    emit(summary(estimator, results, args.seconds, args.qos, wall_s))


def read_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; ``--role`` and the options after it are for the processes the script starts itself."""
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, smoke=2.0,
                        help="camera run per transport, s (default 20)")
    parser.add_argument("--transport", choices=["shm", "default", "both"], default="both", smoke="shm",
                        help="shm = config/fastdds_shm.xml, default = Fast DDS as it comes (default both)")
    parser.add_argument("--qos", choices=["best_effort", "reliable"], default="best_effort",
                        help="the node's qos.reliability (default best_effort, as shipped)")
    parser.add_argument("--frames", type=int, default=60, smoke=4,
                        help="pre-rendered frames the camera cycles (default 60)")
    parser.add_argument("--warmup", type=float, default=2.0, smoke=0.5,
                        help="seconds excluded at the start (default 2)")
    parser.add_argument("--repeats", type=int, default=3, smoke=1, help="estimator timing passes over the frames")
    parser.add_domain_id("a random one per transport")
    internal = parser.add_argument_group("internal (processes the benchmark starts)")
    internal.add_argument("--role", choices=["estimator", "measure", "camera", "echo"], help=argparse.SUPPRESS)
    internal.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    internal.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    internal.add_argument("--logs", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point: the benchmark, or one of its roles when ``--role`` is given."""
    args = read_args(argv)
    if args.role is None:
        benchmark(args)
        return
    if args.role == "estimator":
        args.out.write_text(json.dumps(time_estimator(load_recording(args.data), args.repeats)))
        return
    rclpy.init()
    try:
        if args.role == "echo":
            run_echo(args.qos)
        elif args.role == "camera":
            result = run_camera(load_recording(args.data), args.seconds, subscribers=2, warmup_s=args.warmup)
            args.out.write_text(json.dumps(result))
        else:
            args.out.write_text(json.dumps(run_measure(args.data, args.seconds, args.warmup, args.qos, args.logs)))
    except RuntimeError as err:
        print(f"{args.role}: {err}", file=sys.stderr)
        raise SystemExit(1) from err
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
