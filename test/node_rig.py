"""Helpers for tests of spatial_reward_node as a process: a camera, and a watch on what the node publishes.

:class:`FrameStream` publishes one simulated RGB-D frame over and over from a background thread; each message
set (colour rgb8, depth 32FC1 in metres, CameraInfo) shares a fresh header stamp, so every frame the node
answers can be told apart. :class:`Watch` collects a node's estimates, rewards, /diagnostics and answers,
asks it questions and drives its lifecycle services.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float32, Header, String

from spatialvlm_ros.messages.conversions import camera_info_fields, depth_to_image_fields, rgb_to_image_fields
from spatialvlm_ros.ros.lifecycle import LifecycleClient

IMAGE, DEPTH, INFO = "camera/color/image_raw", "camera/aligned_depth_to_color/image_raw", "camera/color/camera_info"
FRAME_ID = "camera_color_optical_frame"
NODE = "/spatial_reward_node"
#: Reliable images (nothing lost on a busy machine) and a fast, short /diagnostics window.
FAST = ["-p", "qos.reliability:=reliable", "-p", "diagnostics_period_s:=0.2", "-p", "diagnostics_window_s:=1.0"]


def values(status: Any) -> dict[str, str]:
    """The key-value pairs of a DiagnosticStatus."""
    return {kv.key: kv.value for kv in status.values}


class FrameStream:
    """Publishes ``frame`` at ``rate_hz`` on the node's default camera topics (under ``ns``) until closed.

    Args:
        node: the test-side rclpy node that publishes.
        frame: a :class:`~spatialvlm_ros.frame.Frame` with depth.
        rate_hz: frames per second.
        ns: namespace of the node under test ("" for the root).
    """

    def __init__(self, node: Any, frame: Any, rate_hz: float = 10.0, ns: str = "") -> None:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        prefix = f"/{ns}/" if ns else ""
        self.image_pub = node.create_publisher(Image, prefix + IMAGE, qos)
        self.depth_pub = node.create_publisher(Image, prefix + DEPTH, qos)
        self.info_pub = node.create_publisher(CameraInfo, prefix + INFO, qos)
        self._rgb = rgb_to_image_fields(frame.rgb)
        self._depth = depth_to_image_fields(frame.depth_m, "32FC1")
        self._info = camera_info_fields(frame.intrinsics)
        self.rate_hz = rate_hz
        self.stamps: list[int] = []
        self.lock = threading.Lock()
        self.paused = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_tick = time.monotonic()
        count = 0
        while not self._stop.is_set():
            if not self.paused:
                count += 1
                stamp_ns = 7_000 * 1_000_000_000 + count * 10_000_000
                header = Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=FRAME_ID)
                self.info_pub.publish(CameraInfo(header=header, **self._info))
                self.depth_pub.publish(Image(header=header, **self._depth))
                self.image_pub.publish(Image(header=header, **self._rgb))
                with self.lock:
                    self.stamps.append(stamp_ns)
            next_tick += 1.0 / self.rate_hz
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def published(self) -> list[int]:
        """Stamps of every frame published so far."""
        with self.lock:
            return list(self.stamps)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Watch:
    """What one node (in namespace ``ns``) publishes, with receive times; asks it questions."""

    def __init__(self, harness: Any, ns: str = "") -> None:
        self.h = harness
        self.prefix = f"/{ns}" if ns else ""
        self.node_name = f"{self.prefix}{NODE}"
        for topic, kind in ((f"{self.prefix}/estimates", DiagnosticArray), (f"{self.prefix}/reward", Float32),
                            ("/diagnostics", DiagnosticArray), (f"{self.node_name}/answer", String)):
            if topic not in harness.messages:
                harness.collect(kind, topic, depth=200)
        self.question_pub = harness.node.create_publisher(String, f"{self.node_name}/question", 10)
        self.lifecycle = LifecycleClient(harness.node, self.node_name)

    def estimates(self) -> list[Any]:
        return self.h.received(f"{self.prefix}/estimates")

    def rewards(self) -> list[Any]:
        return self.h.received(f"{self.prefix}/reward")

    def diagnostics(self) -> list[Any]:
        return [s for m in self.h.received("/diagnostics") for s in m.status if s.hardware_id == self.node_name]

    def status_in(self, state: str, after: int) -> Any:
        """The first /diagnostics status naming ``state`` among those after the first ``after``."""
        self.h.wait_for(lambda: any(values(s).get("state") == state for s in self.diagnostics()[after:]), 5,
                        f"/diagnostics saying {state}")
        return next(s for s in self.diagnostics()[after:] if values(s).get("state") == state)

    def ask(self, question: str, timeout: float = 10.0) -> dict[str, Any]:
        """Publish a question with a fresh id; return the JSON answer to it."""
        qid = f"q{time.monotonic_ns()}"
        topic = f"{self.node_name}/answer"
        self.h.wait_for(lambda: self.question_pub.get_subscription_count() > 0, 10, "the node's ~/question")
        self.question_pub.publish(String(data=json.dumps({"question": question, "id": qid})))

        def answered() -> list[dict[str, Any]]:
            return [a for a in (json.loads(m.data) for m in self.h.received(topic)) if a["id"] == qid]
        self.h.wait_for(lambda: bool(answered()), timeout, f"an answer to {question!r}")
        return answered()[0]

    def quiet_for(self, seconds: float) -> int:
        """How many estimates arrived in the next ``seconds``."""
        before = len(self.estimates())
        time.sleep(seconds)
        return len(self.estimates()) - before
