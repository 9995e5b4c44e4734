#!/usr/bin/env python3
"""Questions on demand while the reward runs at 30 Hz: answer latency, reward rate, and the lifecycle's memory.

Run::

    python benchmarks/question_latency.py [--seconds 30] [--question-hz 2] [--smoke]

It takes about ``seconds`` + 15 s. ``--smoke`` runs the same steps for 4 s with 4 frames.

What is measured, and how:

1. ``--frames`` frames of the demo scene (``config/sim_demo.yaml``: yellow gripper approaching a red can, a blue
   box and a green ball beside it, noisy depth) are rendered once at 640x480, as ``node_latency.py`` renders them.
2. ``spatial_reward_node`` starts with its shipped defaults (geometric estimator, colour prompt, deterministic
   planner, shm transport profile) except ``autostart: false``; this process drives it through its lifecycle
   services: ``rss_mb_before_configure`` (VmRSS from /proc, 1 s after the services appear), ``configure``
   (``configure_s``), ``rss_mb_after_configure``, ``activate``.
3. A camera process publishes the frames at 30 Hz for ``seconds`` (image, depth, camera_info sharing one header
   stamped with the wall clock). After ``--warmup`` s, the first half of the rest runs without questions, the
   second half with ``--question-hz`` questions per second on ``~/question``, in turn: "What is the gap between
   the yellow gripper and the red can?" (one query), "Which object is closest to the red can?" (two queries) and
   "Does the yellow gripper fit between the red can and the blue box?" (one query), the last two with the scene's
   objects as options. A question goes out only when the previous one was answered.
4. After the camera stops: ``deactivate``, ``cleanup``, ``rss_mb_after_cleanup`` (1 s later), ``shutdown``.

Figures (the JSON last line):

* ``answer_ms_p50`` / ``_p95``: question published here -> its answer received here (one machine, one clock), all
  kinds; ``answer_ms_by_kind``: the same per question; ``answers_valid``: the share of valid answers. Target:
  p95 within 100 ms.
* ``output_hz_with_questions`` / ``output_hz_without_questions``: estimates received per second for frames
  stamped in each half (``input_hz``: frames published per second). Target: the reward keeps 30 Hz (>= 29).
* ``rss_mb_before_configure`` / ``_after_configure`` / ``_after_cleanup``. Target: after cleanup within 10% of
  before configure. ``memory_mb`` splits each into the heap (``RssAnon``: what the node allocated) and mapped
  library pages (``RssFile``: code the run touched once, which stays mapped).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import String

from spatialvlm_ros.messages.conversions import stamp_to_ns
from spatialvlm_ros.ros.lifecycle import LifecycleClient
from spatialvlm_ros.ros.transport import joined_domain, node_command, stop_process

from _common import BenchmarkParser, emit, percentile
from node_latency import render_frames
from soak import camera_role, node_environment

FIGURES = ("answer_ms_p50", "answer_ms_p95", "output_hz_with_questions", "output_hz_without_questions", "input_hz",
           "rss_mb_before_configure", "rss_mb_after_configure", "rss_mb_after_cleanup", "configure_s")

SCRIPT = Path(__file__).resolve()
NODE = "/spatial_reward_node"
RATE_HZ = 30.0
MATCH_TIMEOUT_S = 30.0
OBJECTS = ["yellow gripper", "red can", "blue box", "green ball"]
QUESTIONS = [
    ("gap", {"question": "What is the gap between the yellow gripper and the red can?"}),
    ("nearest", {"question": "Which object is closest to the red can?", "options": {"objects": OBJECTS}}),
    ("fit", {"question": "Does the yellow gripper fit between the red can and the blue box?",
             "options": {"objects": OBJECTS}}),
]
TARGET_ANSWER_MS = 100.0
TARGET_OUTPUT_HZ = 29.0


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of process ``pid`` (VmRSS, or RssAnon: heap, RssFile: mapped library pages), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def memory(pid: int) -> dict[str, float]:
    """The resident set (VmRSS) with its heap (RssAnon) and library-page (RssFile) parts, MB."""
    return {field: rss_mb(pid, field) for field in ("VmRSS", "RssAnon", "RssFile")}


class Asker:
    """Publishes questions one at a time and records when each answer came back."""

    def __init__(self, node: Any) -> None:
        self.pub = node.create_publisher(String, f"{NODE}/question", 10)
        node.create_subscription(String, f"{NODE}/answer", self._on_answer, 10)
        self.estimates: list[tuple[int, int]] = []   # (frame stamp, receive time), ns
        node.create_subscription(DiagnosticArray, "estimates", self._on_estimates, 50)
        self.pending: tuple[str, str, int] | None = None   # (id, kind, sent ns)
        self.done: list[dict[str, Any]] = []
        self.count = 0

    def _on_estimates(self, msg: DiagnosticArray) -> None:
        self.estimates.append((stamp_to_ns(msg.header.stamp), time.time_ns()))

    def _on_answer(self, msg: String) -> None:
        received = time.time_ns()
        answer = json.loads(msg.data)
        if self.pending is None or answer.get("id") != self.pending[0]:
            return
        qid, kind, sent = self.pending
        self.done.append({"kind": kind, "ms": (received - sent) / 1e6, "valid": answer["valid"],
                          "reason": answer["reason"], "node_ms": answer["latency_ms"], "text": answer["text"]})
        self.pending = None

    def ask_next(self) -> None:
        """Send the next question unless one is still out."""
        if self.pending is not None:
            return
        kind, body = QUESTIONS[self.count % len(QUESTIONS)]
        self.count += 1
        qid = f"q{self.count}"
        self.pending = (qid, kind, time.time_ns())
        self.pub.publish(String(data=json.dumps({**body, "id": qid})))


def spin(executor: SingleThreadedExecutor, seconds: float) -> None:
    """Spin ``executor`` for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.01)


def measure(data: Path, seconds: float, warmup_s: float, question_hz: float, logs: Path) -> dict[str, Any]:
    """The lifecycle walk and the two halves of the camera run; see the module docstring."""
    node_proc = subprocess.Popen(node_command("spatial_reward_node", overrides={"autostart": "false"}),
                                 stdout=open(logs / "node.log", "w"), stderr=subprocess.STDOUT)
    node = rclpy.create_node("question_latency")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    lifecycle = LifecycleClient(node, NODE, spin=lambda: executor.spin_once(timeout_sec=0.01))
    asker = Asker(node)
    out: dict[str, Any] = {}
    camera_out = logs / "stamps.json"
    try:
        if not lifecycle.wait_for_services(MATCH_TIMEOUT_S):
            raise RuntimeError("no lifecycle services:\n" + (logs / "node.log").read_text()[-2000:])
        spin(executor, 1.0)
        out["state_at_start"] = lifecycle.state()
        out["rss_mb_before_configure"] = rss_mb(node_proc.pid)
        out["memory_mb"] = {"before_configure": memory(node_proc.pid)}
        start = time.monotonic()
        if not lifecycle.change("configure"):
            raise RuntimeError("configure failed:\n" + (logs / "node.log").read_text()[-2000:])
        out["configure_s"] = time.monotonic() - start
        out["rss_mb_after_configure"] = rss_mb(node_proc.pid)
        out["memory_mb"]["after_configure"] = memory(node_proc.pid)
        lifecycle.walk("activate")
        camera = subprocess.Popen([sys.executable, str(SCRIPT), "--role", "camera", "--data", str(data),
                                   "--seconds", str(seconds), "--out", str(camera_out)],
                                  stdout=open(logs / "camera.log", "w"), stderr=subprocess.STDOUT)
        while not asker.estimates and camera.poll() is None:
            executor.spin_once(timeout_sec=0.01)
        first = time.monotonic()
        questions_from = first + warmup_s + (seconds - warmup_s) / 2
        next_question = questions_from
        while camera.poll() is None:
            executor.spin_once(timeout_sec=0.002)
            if time.monotonic() >= next_question:
                asker.ask_next()
                next_question += 1.0 / question_hz
        if camera.returncode != 0:
            raise RuntimeError("camera failed:\n" + (logs / "camera.log").read_text()[-2000:])
        spin(executor, 1.0)                     # the last answer and estimates
        out["final_state_walk"] = lifecycle.walk("deactivate", "cleanup")
        spin(executor, 1.0)
        out["rss_mb_after_cleanup"] = rss_mb(node_proc.pid)
        out["memory_mb"]["after_cleanup"] = memory(node_proc.pid)
        out["final_state"] = lifecycle.walk("shutdown")
        if node_proc.poll() is not None:
            raise RuntimeError("the node died:\n" + (logs / "node.log").read_text()[-2000:])
    finally:
        stop_process(node_proc)
        executor.shutdown()
        node.destroy_node()

    stamps = json.loads(camera_out.read_text())
    t0 = stamps[0] + int(warmup_s * 1e9)
    split = stamps[0] + int((warmup_s + (seconds - warmup_s) / 2) * 1e9)
    received = {stamp for stamp, _ in asker.estimates}
    halves = {"without_questions": [s for s in stamps if t0 <= s < split],
              "with_questions": [s for s in stamps if s >= split]}
    for name, half in halves.items():
        span_s = (half[-1] - half[0]) / 1e9 if len(half) > 1 else float("nan")
        out[f"input_hz_{name}"] = (len(half) - 1) / span_s
        out[f"output_hz_{name}"] = out[f"input_hz_{name}"] * sum(s in received for s in half) / len(half)
    steady = [s for s in stamps if s >= t0]
    out["input_hz"] = (len(steady) - 1) / ((steady[-1] - steady[0]) / 1e9)
    ms = [a["ms"] for a in asker.done]
    out.update(questions=len(asker.done), answer_ms_p50=percentile(ms, 50), answer_ms_p95=percentile(ms, 95),
               answer_ms_max=max(ms, default=None),
               answers_valid=sum(a["valid"] for a in asker.done) / len(asker.done) if asker.done else None,
               answer_ms_by_kind={kind: {"p50": percentile([a["ms"] for a in asker.done if a["kind"] == kind], 50),
                                         "p95": percentile([a["ms"] for a in asker.done if a["kind"] == kind], 95),
                                         "n": sum(a["kind"] == kind for a in asker.done)}
                                  for kind, _ in QUESTIONS},
               node_answer_ms_p50=percentile([a["node_ms"] for a in asker.done], 50),
               invalid_answers=[a for a in asker.done if not a["valid"]][:3],
               example_answers={a["kind"]: a["text"] for a in asker.done})
    return out


def read_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; ``--role camera`` is the camera process the benchmark starts itself."""
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, smoke=4.0, help="camera run, s (default 30)")
    parser.add_argument("--warmup", type=float, default=2.0, smoke=0.5, help="excluded at the start, s (default 2)")
    parser.add_argument("--question-hz", type=float, default=2.0, help="questions per second (default 2)")
    parser.add_argument("--frames", type=int, default=30, smoke=4, help="pre-rendered frames the camera cycles")
    parser.add_domain_id()
    internal = parser.add_argument_group("internal (the camera process the benchmark starts)")
    internal.add_argument("--role", choices=["camera"], help=argparse.SUPPRESS)
    internal.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    internal.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """The benchmark, or the camera role when ``--role camera`` is given."""
    args = read_args(argv)
    if args.role == "camera":
        camera_role(args.data, args.seconds, RATE_HZ, args.out)
        return
    started = time.monotonic()
    env = node_environment(args.domain_id)
    with tempfile.TemporaryDirectory(prefix="question_latency_") as tmp_name, joined_domain(env):
        tmp = Path(tmp_name)
        data = tmp / "frames.npz"
        print(f"rendering {args.frames} frames at 640x480 ...", flush=True)
        render_frames(args.frames, data)
        rclpy.init()
        try:
            print(f"{args.seconds:.0f} s at {RATE_HZ:.0f} Hz, questions at {args.question_hz:g} Hz in the second "
                  f"half, ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']} ...", flush=True)
            result = measure(data, args.seconds, args.warmup, args.question_hz, tmp)
        finally:
            rclpy.try_shutdown()
    result.update(seconds=args.seconds, question_hz=args.question_hz, cpu_count=os.cpu_count(),
                  wall_s=time.monotonic() - started)
    result["targets_met"] = {
        "answer_p95_le_100ms": result["answer_ms_p95"] is not None and result["answer_ms_p95"] <= TARGET_ANSWER_MS,
        "output_with_questions_ge_29hz": result["output_hz_with_questions"] >= TARGET_OUTPUT_HZ,
        "rss_after_cleanup_within_10pct": abs(result["rss_mb_after_cleanup"] / result["rss_mb_before_configure"]
                                              - 1) <= 0.10,
    }
    by_kind = ", ".join(f"{k} {v['p50']:.1f}/{v['p95']:.1f} ms (n={v['n']})"
                        for k, v in result["answer_ms_by_kind"].items() if v["n"])
    print(f"answers: {result['questions']}, p50 {result['answer_ms_p50']:.1f} ms, p95 {result['answer_ms_p95']:.1f} ms"
          f" ({by_kind}); valid {result['answers_valid']:.2f}\n"
          f"reward: {result['output_hz_without_questions']:.2f} Hz without questions, "
          f"{result['output_hz_with_questions']:.2f} Hz with (input {result['input_hz']:.2f} Hz)\n"
          f"RSS: {result['rss_mb_before_configure']:.1f} MB before configure, {result['rss_mb_after_configure']:.1f} "
          f"after configure ({result['configure_s']:.2f} s), {result['rss_mb_after_cleanup']:.1f} after cleanup",
          flush=True)
    emit(result)


if __name__ == "__main__":
    main()
