#!/usr/bin/env python3
"""Soak: spatial_reward_node under a 30 Hz 640x480 RGB-D camera for minutes. Memory, rate, drops, backlog.

Run::

    python benchmarks/soak.py [minutes] [--rate 30] [--smoke]

``minutes`` defaults to 10. ``--smoke`` runs the same steps for 6 s with 4 frames.

What is measured, and how:

1. ``--frames`` frames of the demo scene (yellow gripper approaching a red can, noisy depth) are rendered once
   at 640x480, as ``benchmarks/node_latency.py`` renders them.
2. ``spatial_reward_node`` runs with its shipped defaults (the shm transport profile) on a private
   ``ROS_DOMAIN_ID``; a camera process publishes the frames at ``--rate`` Hz (image, depth, camera_info, one
   header stamped with the wall clock), cycling; this process receives ``estimates`` and ``/diagnostics``.
3. Every ``--sample-s`` seconds the node's resident memory (``VmRSS``) is read from /proc.

Figures (the JSON last line):

* ``rss_growth_mb``: RSS at the end minus RSS after the warm-up (the first minute, or a quarter of a shorter
  run); ``rss_slope_mb_per_min``: the least-squares slope over the same samples. Target: growth < 5 MB.
* ``output_ratio``: estimates received / frames published after the warm-up. Target >= 0.99.
  ``output_hz_per_minute``: estimates received in each minute / 60 (a shorter last minute over its length).
* ``frames_dropped``: pairs the node overwrote before its worker got to them (its /diagnostics total);
  ``invalid``: estimates flagged invalid; ``latency_trend_ms``: the node latency p50 over the last third of
  the run minus that over the first third (a backlog makes it grow with the run).
* ``cap``: one more node, on compressed colour, at steady state; then one 4096x4096 PNG (the most the default
  ``topics.max_image_pixels`` lets through, but not the camera's size) and one 20000x20000 PNG bomb (1.2 MB):
  ``peak_rss_ratio`` is the node's peak RSS (``VmHWM``) over its steady RSS. Target < 2.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from spatialvlm_ros.messages.conversions import camera_info_fields, stamp_to_ns
from spatialvlm_ros.ros.transport import joined_domain, node_command, ros_environment, stop_process

from _common import BenchmarkParser, emit, percentile
from node_latency import NODE_CONFIG, OPTICAL_FRAME_ID, load_recording, render_frames

FIGURES = ("rss_growth_mb", "rss_slope_mb_per_min", "output_ratio", "output_hz", "input_hz", "frames_dropped",
           "invalid", "latency_trend_ms", "cap.peak_rss_ratio")

SCRIPT = Path(__file__).resolve()
MATCH_TIMEOUT_S = 30.0


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of process ``pid``, MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def header(stamp_ns: int) -> Header:
    """A header stamped ``stamp_ns`` in the optical frame."""
    return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=OPTICAL_FRAME_ID)


def run_camera(data: Path, seconds: float, rate_hz: float, out: Path) -> None:
    """Publish the recording at ``rate_hz`` for ``seconds`` once the node subscribes; write the stamps to ``out``."""
    recording = load_recording(data)
    node = rclpy.create_node("soak_camera")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=NODE_CONFIG.qos.depth,
                     reliability=ReliabilityPolicy.RELIABLE)
    image_pub = node.create_publisher(Image, NODE_CONFIG.topics.image, qos)
    depth_pub = node.create_publisher(Image, NODE_CONFIG.topics.depth, qos)
    info_pub = node.create_publisher(CameraInfo, NODE_CONFIG.topics.camera_info, qos)
    images = [Image(**fields) for fields in recording.rgb]
    depths = [Image(**fields) for fields in recording.depth]
    info = CameraInfo(**camera_info_fields(recording.intrinsics))
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while image_pub.get_subscription_count() < 1 or depth_pub.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("camera: the node did not subscribe")
        time.sleep(0.05)
    stamps: list[int] = []
    first = next_tick = time.monotonic()
    while next_tick < first + seconds:
        time.sleep(max(0.0, next_tick - time.monotonic()))
        now_ns = time.time_ns()
        i = len(stamps) % len(images)
        images[i].header = depths[i].header = info.header = header(now_ns)
        image_pub.publish(images[i])
        depth_pub.publish(depths[i])
        info_pub.publish(info)
        stamps.append(now_ns)
        next_tick = max(next_tick + 1.0 / rate_hz, time.monotonic())
    node.destroy_node()
    out.write_text(json.dumps(stamps))


class Listener:
    """Receive times of ``estimates`` (by stamp, with validity) and the node's latest /diagnostics values."""

    def __init__(self, node: Any) -> None:
        self.estimates: list[tuple[int, int, bool]] = []   # (stamp, receive time, valid)
        self.values: dict[str, str] = {}
        self.sub = node.create_subscription(DiagnosticArray, "estimates", self._on_estimates, 50)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_estimates(self, msg: DiagnosticArray) -> None:
        valid = all(kv.value == "True" for s in msg.status for kv in s.values if kv.key == "valid")
        self.estimates.append((stamp_to_ns(msg.header.stamp), time.time_ns(), valid))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": spatial reward"):
                self.values = {kv.key: kv.value for kv in status.values}


def spin_for(executor: SingleThreadedExecutor, seconds: float, every: float = 0.0, tick: Any = None) -> None:
    """Spin ``executor`` for ``seconds``, calling ``tick()`` every ``every`` seconds if given."""
    end = time.monotonic() + seconds
    next_tick = time.monotonic()
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
        if tick is not None and time.monotonic() >= next_tick:
            tick()
            next_tick += every


def soak(data: Path, seconds: float, rate_hz: float, sample_s: float, logs: Path) -> dict[str, Any]:
    """The node and the camera for ``seconds``; memory, rate, drops and latency as described above."""
    node_proc = subprocess.Popen(node_command("spatial_reward_node"), stdout=open(logs / "node.log", "w"),
                                 stderr=subprocess.STDOUT)
    node = rclpy.create_node("soak_listener")
    listener = Listener(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    samples: list[tuple[float, float]] = []
    camera_out = logs / "stamps.json"
    try:
        deadline = time.monotonic() + MATCH_TIMEOUT_S
        while listener.sub.get_publisher_count() < 1:
            if time.monotonic() > deadline or node_proc.poll() is not None:
                raise RuntimeError("the node did not come up:\n" + (logs / "node.log").read_text()[-2000:])
            executor.spin_once(timeout_sec=0.05)
        camera = subprocess.Popen([sys.executable, str(SCRIPT), "--role", "camera", "--data", str(data),
                                   "--seconds", str(seconds), "--rate", str(rate_hz), "--out", str(camera_out)],
                                  stdout=open(logs / "camera.log", "w"), stderr=subprocess.STDOUT)
        start = time.monotonic()
        while camera.poll() is None:
            spin_for(executor, min(sample_s, 1.0))
            if not samples or time.monotonic() - start - samples[-1][0] >= sample_s:
                samples.append((time.monotonic() - start, rss_mb(node_proc.pid)[0]))
        if camera.returncode != 0:
            raise RuntimeError("camera failed:\n" + (logs / "camera.log").read_text()[-2000:])
        spin_for(executor, 1.5)   # stragglers and a last /diagnostics
        samples.append((time.monotonic() - start, rss_mb(node_proc.pid)[0]))
        if node_proc.poll() is not None:
            raise RuntimeError("the node died:\n" + (logs / "node.log").read_text()[-2000:])
    finally:
        stop_process(node_proc)
        executor.shutdown()
        node.destroy_node()

    stamps = json.loads(camera_out.read_text())
    warmup_s = min(60.0, seconds / 4)
    t0_ns = stamps[0] + int(warmup_s * 1e9)
    steady = [s for s in stamps if s >= t0_ns]
    received = {stamp: (recv, valid) for stamp, recv, valid in listener.estimates}
    answered = [s for s in steady if s in received]
    latency = [(received[s][0] - s) / 1e6 for s in answered]
    third = len(latency) // 3
    per_minute = []
    for m in range(int(np.ceil(seconds / 60))):
        lo, hi = stamps[0] + int(m * 60e9), stamps[0] + int(min((m + 1) * 60, seconds) * 1e9)
        span_s = (hi - lo) / 1e9
        per_minute.append(sum(lo <= s < hi for s in received) / span_s if span_s > 0 else None)
    after = [(t, r) for t, r in samples if t >= warmup_s] or samples[-2:]
    times, rss = np.array([t for t, _ in after]), np.array([r for _, r in after])
    slope = float(np.polyfit(times / 60, rss, 1)[0]) if len(after) >= 2 else 0.0
    window_s = (steady[-1] - steady[0]) / 1e9 if len(steady) > 1 else float("nan")
    return {
        "seconds": seconds, "warmup_s": warmup_s, "rate_hz": rate_hz,
        "input_hz": (len(steady) - 1) / window_s, "output_hz": (len(answered) - 1) / window_s,
        "output_ratio": len(answered) / len(steady), "output_hz_per_minute": per_minute,
        "frames_published": len(stamps), "estimates_received": len(received),
        "frames_dropped": int(listener.values.get("frames_dropped", -1)),
        "frames_received_by_node": int(listener.values.get("frames_received", -1)),
        "invalid": sum(not valid for _, valid in received.values()),
        "latency_ms_p50": percentile(latency, 50), "latency_ms_p95": percentile(latency, 95),
        "latency_trend_ms": (percentile(latency[-third:], 50) - percentile(latency[:third], 50)) if third else 0.0,
        "rss_mb_start": samples[0][1], "rss_mb_after_warmup": float(rss[0]), "rss_mb_end": float(rss[-1]),
        "rss_growth_mb": float(rss[-1] - rss[0]), "rss_slope_mb_per_min": slope,
        "rss_samples": [(round(t, 1), round(r, 2)) for t, r in samples],
    }


def png_bomb(width: int, height: int) -> bytes:
    """A real PNG of black pixels, its zlib stream built from one repeated full-flush deflate block."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = 500 if height % 500 == 0 else 1
    block = b"\0" * ((1 + 3 * width) * rows)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = squeeze.compress(block) + squeeze.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height // rows):
        adler = zlib.adler32(block, adler)
    idat = b"\x78\xda" + repeated * (height // rows) + squeeze.flush() + struct.pack(">I", adler)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def cap_check(data: Path, logs: Path, steady_s: float) -> dict[str, Any]:
    """Peak RSS of a compressed-transport node for its largest single messages, over its steady RSS."""
    recording = load_recording(data)
    node_proc = subprocess.Popen(node_command("spatial_reward_node", overrides={
        "topics.transport": "compressed", "qos.reliability": "reliable"}), stdout=open(logs / "cap_node.log", "w"),
        stderr=subprocess.STDOUT)
    node = rclpy.create_node("soak_cap")
    listener = Listener(node)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = node.create_publisher(CompressedImage, NODE_CONFIG.topics.image + "/compressed", qos)
    depth_pub = node.create_publisher(Image, NODE_CONFIG.topics.depth, qos)
    info_pub = node.create_publisher(CameraInfo, NODE_CONFIG.topics.camera_info, qos)
    first = recording.rgb[0]
    rgb = np.frombuffer(first["data"], np.uint8).reshape(first["height"], first["width"], 3)
    frame_png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    smooth = cv2.resize(rgb, (4096, 4096), interpolation=cv2.INTER_LINEAR)
    large_png = cv2.imencode(".png", cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR))[1].tobytes()
    del smooth
    bomb = png_bomb(20000, 20000)
    depth = Image(**recording.depth[0])
    info = CameraInfo(**camera_info_fields(recording.intrinsics))
    sent = 0

    def publish(payload: bytes) -> None:
        nonlocal sent
        sent += 1
        stamp = 10**18 + sent * 10**8
        depth.header = info.header = header(stamp)
        info_pub.publish(info)
        depth_pub.publish(depth)
        image_pub.publish(CompressedImage(header=header(stamp), format="png", data=array.array("B", payload)))

    try:
        deadline = time.monotonic() + MATCH_TIMEOUT_S
        while image_pub.get_subscription_count() < 1 or listener.sub.get_publisher_count() < 1:
            if time.monotonic() > deadline or node_proc.poll() is not None:
                raise RuntimeError("the cap node did not come up:\n" + (logs / "cap_node.log").read_text()[-2000:])
            executor.spin_once(timeout_sec=0.05)
        spin_for(executor, steady_s, every=1 / 30, tick=lambda: publish(frame_png))
        steady_rss, steady_peak = rss_mb(node_proc.pid)
        before = len(listener.estimates)
        for payload in (large_png, bomb):
            publish(payload)
            spin_for(executor, 1.5)
        after_rss, peak = rss_mb(node_proc.pid)
        answered = len(listener.estimates) - before
    finally:
        stop_process(node_proc)
        executor.shutdown()
        node.destroy_node()
    return {"steady_rss_mb": steady_rss, "steady_peak_rss_mb": steady_peak, "peak_rss_mb": peak,
            "peak_rss_ratio": peak / steady_rss, "rss_after_mb": after_rss, "answered": answered,
            "large_png_bytes": len(large_png), "bomb_png_bytes": len(bomb)}


def read_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--role`` and the options after it are for the camera process."""
    parser = BenchmarkParser(__doc__)
    parser.add_argument("minutes", nargs="?", type=float, default=10.0, smoke=0.1,
                        help="how long the camera publishes (default 10)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz (default 30)")
    parser.add_argument("--frames", type=int, default=60, smoke=4, help="pre-rendered frames the camera cycles")
    parser.add_argument("--sample-s", type=float, default=5.0, smoke=1.0, help="RSS sampling period, s")
    parser.add_argument("--cap-steady-s", type=float, default=5.0, smoke=2.0,
                        help="steady input before the cap check's large messages, s")
    parser.add_domain_id()
    internal = parser.add_argument_group("internal (the camera process the benchmark starts)")
    internal.add_argument("--role", choices=["camera"], help=argparse.SUPPRESS)
    internal.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    internal.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    internal.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def camera_role(data: Path, seconds: float, rate_hz: float, out: Path) -> None:
    """The ``--role camera`` process of a benchmark: :func:`run_camera` in an rclpy context of its own."""
    rclpy.init()
    try:
        run_camera(data, seconds, rate_hz, out)
    finally:
        rclpy.try_shutdown()


def node_environment(domain_id: int | None) -> dict[str, str]:
    """The environment of the node processes (shm transport; a random domain when none is given), joined here."""
    env = ros_environment(domain_id if domain_id is not None else random.randint(10, 99), "shm")
    os.environ.update({k: v for k, v in env.items() if k in ("MUJOCO_GL", "PYOPENGL_PLATFORM")})
    return env


def main(argv: list[str] | None = None) -> None:
    """The soak, or the camera role when ``--role camera`` is given."""
    args = read_args(argv)
    if args.role == "camera":
        camera_role(args.data, args.seconds, args.rate, args.out)
        return
    started = time.monotonic()
    env = node_environment(args.domain_id)
    with tempfile.TemporaryDirectory(prefix="soak_") as tmp_name, joined_domain(env):
        tmp = Path(tmp_name)
        data = tmp / "frames.npz"
        print(f"rendering {args.frames} frames ...", flush=True)
        render_frames(args.frames, data)
        rclpy.init()
        try:
            seconds = 60 * args.minutes
            print(f"soak: {seconds:.0f} s at {args.rate:.0f} Hz, ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']} ...", flush=True)
            result = soak(data, seconds, args.rate, args.sample_s, tmp)
            print("cap check: steady input, then a 4096x4096 PNG and a 20000x20000 PNG bomb ...", flush=True)
            result["cap"] = cap_check(data, tmp, args.cap_steady_s)
        finally:
            rclpy.try_shutdown()
    result["wall_s"] = time.monotonic() - started
    result["targets_met"] = {"rss_growth_lt_5mb": result["rss_growth_mb"] < 5.0,
                             "output_ge_99pct": result["output_ratio"] >= 0.99,
                             "cap_peak_lt_2x": result["cap"]["peak_rss_ratio"] < 2.0}
    print(f"input {result['input_hz']:.1f} Hz, output {result['output_hz']:.1f} Hz "
          f"({100 * result['output_ratio']:.1f}% of frames), dropped {result['frames_dropped']}, "
          f"invalid {result['invalid']}; RSS {result['rss_mb_after_warmup']:.1f} -> {result['rss_mb_end']:.1f} MB "
          f"(slope {result['rss_slope_mb_per_min']:.2f} MB/min); latency trend {result['latency_trend_ms']:.2f} ms; "
          f"cap: peak RSS {result['cap']['peak_rss_ratio']:.2f}x steady", flush=True)
    emit(result)


if __name__ == "__main__":
    main()
