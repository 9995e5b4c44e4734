"""Metrics of a distance trace: errors, rank correlation, ratio bands, invalid rate, latency."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats


def distance_metrics(estimate_m: Sequence[float], truth_m: Sequence[float]) -> dict[str, float]:
    """Score an estimate trace against the truth, frame by frame.

    NaN estimates count as invalid (reported in ``invalid_rate``) and are left out of the errors.
    Ratio bands compare ``estimate / truth`` (frames with a truth of 0 are left out of those).

    Example:
        >>> m = distance_metrics([0.11, 0.19, float("nan"), 0.41], [0.1, 0.2, 0.3, 0.4])
        >>> round(m["mae_m"], 3), m["invalid_rate"], m["spearman"]
        (0.01, 0.25, 1.0)
    """
    est = np.asarray(estimate_m, dtype=np.float64)
    truth = np.asarray(truth_m, dtype=np.float64)
    if est.shape != truth.shape:
        raise ValueError(f"estimate and truth differ in length: {est.shape} vs {truth.shape}")
    n = est.size
    ok = np.isfinite(est) & np.isfinite(truth)
    err = np.abs(est[ok] - truth[ok])
    nonzero = ok & (truth > 0)
    ratio = est[nonzero] / truth[nonzero]
    spearman = math.nan
    if ok.sum() >= 3 and np.ptp(est[ok]) > 0 and np.ptp(truth[ok]) > 0:
        spearman = float(stats.spearmanr(est[ok], truth[ok]).statistic)
    nan = math.nan
    return {
        "frames": n,
        "valid_frames": int(ok.sum()),
        "invalid_rate": float(1.0 - np.isfinite(est).sum() / n) if n else nan,
        "median_abs_error_m": float(np.median(err)) if err.size else nan,
        "mae_m": float(np.mean(err)) if err.size else nan,
        "median_rel_error": float(np.median(np.abs(ratio - 1.0))) if ratio.size else nan,
        "within_0.5_2x": float(np.mean((ratio >= 0.5) & (ratio <= 2.0))) if ratio.size else nan,
        "within_0.75_1.25x": float(np.mean((ratio >= 0.75) & (ratio <= 1.25))) if ratio.size else nan,
        "spearman": spearman,
    }


def latency_metrics(latency_ms: Sequence[float], output_times_s: Sequence[float]) -> dict[str, float]:
    """Median and 95th-percentile latency, and the output rate over the span of the outputs.

    Example:
        >>> latency_metrics([10, 20, 30], [0.0, 0.5, 1.0])["output_hz"]
        2.0
    """
    lat = np.asarray(latency_ms, dtype=np.float64)
    times = np.sort(np.asarray(output_times_s, dtype=np.float64))
    span = times[-1] - times[0] if times.size > 1 else 0.0
    return {
        "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else math.nan,
        "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else math.nan,
        "output_hz": float((times.size - 1) / span) if span > 0 else math.nan,
    }
