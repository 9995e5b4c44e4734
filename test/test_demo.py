"""``spatialvlm demo`` end to end: two node processes over DDS, a bag, a plot and summary.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rosbags.rosbag2 import Reader

from conftest import DOMAIN_ID

SUMMARY_KEYS = {"median_abs_error_m", "mae_m", "spearman", "latency_ms_p50", "latency_ms_p95", "output_hz",
                "invalid_rate"}


def test_demo_writes_bag_plot_and_summary(tmp_path: Path, ros_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spatialvlm_ros.cli", "demo", "--frames", "15", "--out", str(tmp_path),
         "--domain-id", str(DOMAIN_ID)], env=ros_env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = tmp_path.glob("demo-*")
    assert str(run.name) in result.stdout.replace("\n", "")        # the folder is named at the end
    summary = json.loads((run / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["frames_published"] == 15 and summary["frames_answered"] >= 13
    assert summary["median_abs_error_m"] < 0.02 and summary["spearman"] > 0.9
    assert (run / "trace.png").stat().st_size > 10_000
    with Reader(run / "bag") as bag:
        counts = {c.topic: c.msgcount for c in bag.connections}
    assert counts["/camera/color/image_raw"] == 15 and counts["/ground_truth"] == 15
    assert counts["/estimates"] >= 13 and counts["/reward"] >= 13
