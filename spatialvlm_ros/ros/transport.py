"""Environment for running nodes as separate processes on one DDS domain (demo, tests, benchmarks)."""

from __future__ import annotations

import os
import random

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
