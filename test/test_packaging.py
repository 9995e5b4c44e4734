"""The package builds the ROS 2 way (``colcon build``) and installs what ``ros2 run``/``ros2 launch`` need.

That includes the compact VLM's weights, which the default VLM backend loads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COPIED = ["package.xml", "setup.py", "setup.cfg", "resource", "spatialvlm_ros", "launch", "config"]


def test_colcon_build_installs_executables_launch_config_and_weights(tmp_path: Path) -> None:
    src = tmp_path / "src" / "spatialvlm_ros"
    src.mkdir(parents=True)
    for name in COPIED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    colcon = Path(sys.executable).with_name("colcon")
    result = subprocess.run([str(colcon), "build", "--event-handlers", "console_cohesion-"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    install = tmp_path / "install" / "spatialvlm_ros"
    for exe in ("spatial_reward_node", "sim_camera_node", "spatialvlm"):
        assert os.access(install / "lib" / "spatialvlm_ros" / exe, os.X_OK), exe   # where `ros2 run` looks
    share = install / "share" / "spatialvlm_ros"
    expected = ["package.xml", "launch/spatial_reward.launch.py", "launch/sim_demo.launch.py",
                "config/spatial_reward.yaml", "config/sim_demo.yaml", "config/fastdds_shm.xml"]
    assert [p for p in expected if not (share / p).is_file()] == []
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "spatialvlm_ros").is_file()
    # The compact VLM's weights travel with the Python package (the default VLM backend loads them from there).
    weights = list(install.glob("lib/python3*/site-packages/spatialvlm_ros/vlm/weights/model.safetensors"))
    assert len(weights) == 1 and weights[0].stat().st_size > 1_000_000
