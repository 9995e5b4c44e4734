"""Shared fixtures: a private DDS domain per test run, node processes, and a test-side rclpy node."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from spatialvlm_ros.ros.transport import node_command, ros_environment, stop_process

REPO = Path(__file__).resolve().parent.parent
# One domain per test run (pid-derived), so parallel runs on one machine never cross-talk.
DOMAIN_ID = 10 + os.getpid() % 90


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """Environment for node processes; the test process joins the same domain."""
    env = ros_environment(DOMAIN_ID, transport="shm")
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION",
                "FASTDDS_DEFAULT_PROFILES_FILE"):
        os.environ[key] = env[key]
    return env


class NodeProcess:
    """A node started as ``python -m spatialvlm_ros.ros.<name> --ros-args ...`` with its log in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(node_command(name) + list(args), env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        status = stop_process(self.proc)
        self._log.close()
        return status


@pytest.fixture
def start_node(ros_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """Start nodes by name with ROS arguments, e.g. ``("spatial_reward_node", "-p", "a:=1")``; stopped at teardown."""
    started: list[NodeProcess] = []

    def start(name: str, *args: str) -> NodeProcess:
        node = NodeProcess(name, list(args), ros_env, tmp_path)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


class HarnessNode:
    """A real rclpy node in the test process, spun in a background thread, that collects messages."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"test_harness_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.messages: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def collect(self, msg_type: type, topic: str, depth: int = 50) -> None:
        """Keep every message on ``topic`` in ``self.messages[topic]``."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        self.messages[topic] = []

        def callback(msg: Any) -> None:
            with self._lock:
                self.messages[topic].append(msg)
        self.node.create_subscription(msg_type, topic, callback,
                                      QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE))

    def received(self, topic: str) -> list[Any]:
        with self._lock:
            return list(self.messages[topic])

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` until true; fail the test naming ``what`` on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        import rclpy
        # Stop the spin thread before the node and context go: a thread left spinning on a shut-down
        # context busy-loops and starves every later test of the GIL.
        self.executor.shutdown(timeout_sec=10)
        self._thread.join(timeout=10)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def test_node(ros_env: dict[str, str]) -> Iterator[HarnessNode]:
    """A fresh test-side node on the run's domain."""
    node = HarnessNode()
    yield node
    node.close()


@pytest.fixture(scope="module")
def qvga_frame() -> Any:
    """A simulated 320x240 tabletop frame (the lifecycle and question tests stream it)."""
    from spatialvlm_ros.config import SimConfig
    from spatialvlm_ros.sim import TabletopSim
    with TabletopSim(SimConfig(width=320, height=240, n_frames=2)) as sim:
        return sim.render(0).frame


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for the whole module: the transformers tests may never try the network."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield
