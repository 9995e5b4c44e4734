"""Environment for running nodes as separate processes on one DDS domain (demo, tests, benchmarks)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from spatialvlm_ros.config import config_path


def ros_environment(domain_id: int | None = None, transport: str = "shm") -> dict[str, str]:
    """A copy of ``os.environ`` for ROS 2 child processes on their own, local-only DDS domain.

    Args:
        domain_id: ``ROS_DOMAIN_ID`` (0-101 are safe with default ports); random in 10-99 if None,
            so concurrent runs (two test sessions, a robot on the LAN) do not see each other.
        transport: ``"shm"`` loads ``config/fastdds_shm.xml`` (large shared-memory segment, fast
            for images); ``"default"`` leaves Fast DDS as it comes.
    """
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else random.randint(10, 99))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"   # never leave the machine
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env.setdefault("MUJOCO_GL", "osmesa")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"])
    env["PYTHONUNBUFFERED"] = "1"
    if transport == "shm":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(config_path("fastdds_shm.xml"))
    elif transport == "default":
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    else:
        raise ValueError(f"transport must be 'shm' or 'default', got {transport!r}")
    return env


# What a process needs in its own environment to join the domain of children started with ros_environment().
_DOMAIN_KEYS = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION", "FASTDDS_DEFAULT_PROFILES_FILE")


@contextlib.contextmanager
def joined_domain(env: Mapping[str, str]) -> Iterator[None]:
    """Put this process on the DDS domain described by ``env`` while inside; restore the environment after.

    rcl and Fast DDS read these variables when a context / participant is created, so create the
    rclpy context inside the block.
    """
    saved = {k: os.environ.get(k) for k in _DOMAIN_KEYS}
    for key in _DOMAIN_KEYS:
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def node_command(node: str, param_files: Sequence[str | Path] = (), overrides: Mapping[str, Any] | None = None,
                 ) -> list[str]:
    """Command line that runs one of this package's nodes in a new Python process.

    Example:
        >>> node_command("spatial_reward_node", ["a.yaml"], {"reward.shaping": "exp"})[2:]
        ['spatialvlm_ros.ros.spatial_reward_node', '--ros-args', '--params-file', 'a.yaml', '-p', 'reward.shaping:=exp']
    """
    cmd = [sys.executable, "-m", f"spatialvlm_ros.ros.{node}", "--ros-args"]
    for path in param_files:
        cmd += ["--params-file", str(path)]
    for key, value in (overrides or {}).items():
        cmd += ["-p", f"{key}:={value}"]
    return cmd


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """SIGINT (rclpy shuts down cleanly), then SIGKILL after ``timeout_s``; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
