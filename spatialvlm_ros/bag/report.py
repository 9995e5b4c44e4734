"""What an evaluation writes: metrics, CSV, plots, and a copy of the bag with the reward added."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from spatialvlm_ros.bag.records import FrameRecord, RunResult, write_csv
from spatialvlm_ros.errors import BagError
from spatialvlm_ros.types import Pair
from spatialvlm_ros.evaluation.metrics import distance_metrics, latency_metrics
from spatialvlm_ros.evaluation.report import plot_trace, write_json
from spatialvlm_ros.messages.rosbag import read_messages

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)

FLOAT32 = "std_msgs/msg/Float32"


def summarise(result: RunResult) -> dict[str, Any]:
    """Metrics of a run: accuracy against the truth (NaN without truth), invalid rate, latency, rate.

    ``frames_per_s`` counts the frames answered per second of the run's wall time.

    Example:
        >>> rec = [FrameRecord(i, 0.1 * i, 0.01, True, "", 0.5, 0.1 * i, 3.0) for i in range(1, 5)]
        >>> m = summarise(RunResult(tuple(rec), wall_s=0.5))
        >>> m["mae_m"], m["spearman"], m["frames_per_s"]
        (0.0, 1.0, 8.0)
    """
    records = result.records
    metrics: dict[str, Any] = dict(distance_metrics([r.estimate_m for r in records], [r.truth_m for r in records]))
    answered = [r for r in records if r.reason != "no_output"]
    metrics.update(latency_metrics([r.latency_ms for r in answered if math.isfinite(r.latency_ms)], []))
    del metrics["output_hz"]  # no output times here; frames_per_s below is the rate
    rewards = np.array([r.reward for r in records], dtype=float)
    metrics.update({
        "frames_answered": len(answered),
        "frames_with_truth": sum(math.isfinite(r.truth_m) for r in records),
        "frames_per_s": len(answered) / result.wall_s if result.wall_s > 0 else math.nan,
        "wall_s": result.wall_s,
        "reward_mean": float(np.nanmean(rewards)) if np.isfinite(rewards).any() else math.nan,
    })
    return metrics


def plot_errors(path: Path, records: Sequence[FrameRecord], title: str) -> Path | None:
    """Histogram of estimate - truth in centimetres; None (no file) when no frame has both."""
    err = np.array([r.estimate_m - r.truth_m for r in records], dtype=float)
    err = err[np.isfinite(err)] * 100
    if err.size == 0:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(err, bins=min(50, max(10, err.size // 5)), color="tab:blue", alpha=0.8)
    ax.axvline(0.0, color="black", lw=1)
    ax.axvline(float(np.median(err)), color="tab:red", lw=1.2, ls="--", label=f"median {np.median(err):+.2f} cm")
    ax.set_xlabel("estimate - truth (cm)")
    ax.set_ylabel("frames")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out: Path, records: Sequence[FrameRecord], metrics: Mapping[str, Any], title: str) -> dict[str, Any]:
    """Write ``frames.csv``, ``trace.png``, ``errors.png`` (with truth) and ``metrics.json`` into ``out``.

    Returns:
        The metrics as written: NaN became None (null), so the CLI prints what the file holds.
    """
    write_csv(out / "frames.csv", records)
    t0 = records[0].stamp_ns
    has_truth = any(math.isfinite(r.truth_m) for r in records)
    plot_trace(out / "trace.png", [(r.stamp_ns - t0) / 1e9 for r in records], [r.estimate_m for r in records],
               [r.uncertainty_m for r in records], [r.truth_m for r in records] if has_truth else None,
               [r.reward for r in records], title=title)
    plot_errors(out / "errors.png", records, title=title)
    return json.loads(write_json(out / "metrics.json", metrics).read_text())


def _free_topic(name: str, taken: set[str]) -> str:
    # A bag recorded from the live node already has `reward` etc.; never mix old and new values.
    return name if name not in taken and "/" + name not in taken else f"eval/{name}"


def write_annotated_bag(reader: AnyReader, dest: Path, records: Sequence[FrameRecord], pair: Pair) -> dict[str, str]:
    """Copy every message of ``reader`` into a new mcap bag at ``dest``, plus the evaluation's outputs.

    Adds ``reward`` and ``distance/<slug>`` (std_msgs/Float32, bag time = frame stamp): the distance
    of every frame (NaN when invalid, as the node publishes it) and the reward where there is one.
    Where the bag already has a topic of that name, the new one goes under ``eval/``.

    Returns:
        ``{"reward": topic, "distance": topic}``, the names used.
    """
    types = get_typestore(Stores.LATEST)
    float32 = types.types[FLOAT32]
    taken = {c.topic for c in reader.connections}
    names = {"reward": _free_topic("reward", taken), "distance": _free_topic(f"distance/{pair.slug}", taken)}
    added: list[tuple[int, str, bytes]] = []
    for r in records:
        added.append((r.stamp_ns, names["distance"], types.serialize_cdr(float32(data=r.estimate_m), FLOAT32)))
        if math.isfinite(r.reward):
            added.append((r.stamp_ns, names["reward"], types.serialize_cdr(float32(data=r.reward), FLOAT32)))
    added.sort(key=lambda item: item[0])
    try:
        with Writer(dest, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            copies = {}
            for conn in reader.connections:
                key = (conn.topic, conn.msgtype)
                if key not in copies:
                    copies[key] = writer.add_connection(
                        conn.topic, conn.msgtype, typestore=reader.typestore,
                        serialization_format=conn.ext.serialization_format,
                        offered_qos_profiles=conn.ext.offered_qos_profiles)
            new = {topic: writer.add_connection(topic, FLOAT32, typestore=types) for topic in names.values()}
            i = 0
            # Merge by time, so the copy reads in order with any player.
            for conn, log_ns, data in read_messages(reader, taken):
                while i < len(added) and added[i][0] <= log_ns:
                    writer.write(new[added[i][1]], added[i][0], added[i][2])
                    i += 1
                writer.write(copies[(conn.topic, conn.msgtype)], log_ns, data)
            for stamp_ns, topic, data in added[i:]:
                writer.write(new[topic], stamp_ns, data)
    except WriterError as err:
        raise BagError(f"cannot write the annotated bag {dest}: {err}") from err
    return names
