"""Plots and JSON summaries of a distance trace (demo, bag replay)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_trace(path: str | Path, time_s: Sequence[float], estimate_m: Sequence[float],
               uncertainty_m: Sequence[float], truth_m: Sequence[float] | None, reward: Sequence[float],
               title: str) -> Path:
    """Estimate ± 1 sigma against the truth over time, and the reward below it; returns the PNG path."""
    t = np.asarray(time_s, dtype=float)
    est = np.asarray(estimate_m, dtype=float)
    sigma = np.nan_to_num(np.asarray(uncertainty_m, dtype=float))
    fig, (ax_d, ax_r) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=[3, 1.3])
    if truth_m is not None:
        ax_d.plot(t, np.asarray(truth_m, dtype=float) * 100, color="black", lw=1.5, label="ground truth")
    ax_d.plot(t, est * 100, color="tab:blue", lw=1.2, marker=".", ms=3, label="estimate")
    ax_d.fill_between(t, (est - sigma) * 100, (est + sigma) * 100, color="tab:blue", alpha=0.25,
                      label="estimate ± 1σ")
    invalid = ~np.isfinite(est)
    if invalid.any():
        ax_d.plot(t[invalid], np.zeros(invalid.sum()), "x", color="tab:red", label="no estimate")
    ax_d.set_ylabel("distance (cm)")
    ax_d.set_title(title)
    ax_d.grid(alpha=0.3)
    ax_d.legend(loc="upper right")
    ax_r.plot(t, np.asarray(reward, dtype=float), color="tab:green", lw=1.2)
    ax_r.set_ylabel("reward")
    ax_r.set_xlabel("time (s)")
    ax_r.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON; NaN becomes null so any JSON reader accepts it."""
    path = Path(path)
    path.write_text(json.dumps(_nan_to_none(data), indent=2) + "\n")
    return path


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value
