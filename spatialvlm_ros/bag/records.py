"""What an evaluation produces per camera frame, in both modes (offline and live replay)."""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class FrameRecord:
    """The estimate, reward and truth of one camera frame for the evaluated pair.

    Attributes:
        stamp_ns: header stamp of the colour image, integer nanoseconds.
        estimate_m: estimated distance, metres; NaN when there is none.
        uncertainty_m: one standard deviation of the estimate, metres; NaN when unknown.
        valid: the estimate can be used.
        reason: why not, when invalid (a ``NoEstimateReason`` value, or ``no_output`` when the live
            node never answered this frame); empty when valid.
        reward: the pair's reward for this frame; NaN when there is none.
        truth_m: ground-truth distance aligned to this frame, metres; NaN when unknown.
        latency_ms: offline: decode + estimate time of this frame; live: from publishing the frame
            to receiving the node's estimate. NaN when not answered.
    """

    stamp_ns: int
    estimate_m: float
    uncertainty_m: float
    valid: bool
    reason: str
    reward: float
    truth_m: float
    latency_ms: float


@dataclass(frozen=True)
class RunResult:
    """The per-frame records of one run and how long it took.

    Attributes:
        records: one per evaluated colour frame, in bag order.
        wall_s: wall time of the processing loop (offline) or of the replay (live), seconds.
        error: why the run stopped before the end of the bag (a corrupt chunk); "" when it reached the end.
    """

    records: tuple[FrameRecord, ...]
    wall_s: float
    error: str = ""


def write_csv(path: str | Path, records: Sequence[FrameRecord]) -> Path:
    """Write ``records`` as CSV, one row per frame, columns named as the record fields.

    Example:
        >>> import tempfile
        >>> row = FrameRecord(1, 0.1, 0.01, True, "", 0.37, 0.11, 4.2)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     print(write_csv(Path(tmp) / "frames.csv", [row]).read_text().splitlines()[1])
        1,0.1,0.01,True,,0.37,0.11,4.2
    """
    path = Path(path)
    names = [f.name for f in dataclasses.fields(FrameRecord)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows(dataclasses.astuple(r) for r in records)
    return path
