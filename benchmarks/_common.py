"""What every benchmark shares: the ``--smoke`` option, medians / percentiles, and the JSON last line.

A benchmark reads its options with a :class:`BenchmarkParser`, declaring beside each size's full-run
default the tiny one ``--smoke`` stands for; ``--smoke`` only changes those defaults, so a smoke run goes
through the same code as the full one. It ends with :func:`emit`, which prints its figures as one JSON
object on the last line of stdout.

Each benchmark also names, in a module-level tuple of string literals ``FIGURES``, the figures its JSON
must carry as finite numbers: a dotted path for a nested one, ``*`` for every key at its level.
``test/test_benchmarks.py`` reads it without importing the script and checks a ``--smoke`` run against it.

This module is not a benchmark: its name starts with ``_``, so the test does not run it.
"""

from __future__ import annotations

import argparse
import os
import json
import math
import sys
from typing import Any, Mapping, Sequence

import numpy as np

_FULL_ONLY = object()    # an option without a smoke size keeps its default under --smoke


class BenchmarkParser(argparse.ArgumentParser):
    """An argument parser with ``--smoke``: each option may name, beside its full-run default, its smoke size.

    ``--smoke`` only swaps those defaults, so a smoke run takes the same code path as a full one, and an
    option given on the command line still wins over its smoke size.

    Args:
        doc: the script's docstring; its first paragraph describes the command.

    Example:
        >>> p = BenchmarkParser("Demo.")
        >>> _ = p.add_argument("--steps", type=int, default=300, smoke=5)
        >>> p.parse_args([]).steps, p.parse_args(["--smoke"]).steps, p.parse_args(["--smoke", "--steps", "7"]).steps
        (300, 5, 7)
    """

    def __init__(self, doc: str | None) -> None:
        super().__init__(description=(doc or "").split("\n\n")[0])
        self._smoke: dict[str, Any] = {}
        super().add_argument("--smoke", action="store_true",
                             help="tiny sizes, a few seconds: checks that the benchmark runs (figures not meaningful)")

    def add_argument(self, *args: Any, smoke: Any = _FULL_ONLY, **kwargs: Any) -> argparse.Action:
        """``ArgumentParser.add_argument``, plus ``smoke``: the option's default under ``--smoke``."""
        action = super().add_argument(*args, **kwargs)
        if smoke is not _FULL_ONLY:
            self._smoke[action.dest] = smoke
        return action

    def add_domain_id(self, what: str = "a random one") -> None:
        """Add ``--domain-id``, the ROS_DOMAIN_ID of the node processes.

        Its default is the inherited ROS_DOMAIN_ID, so a test can hand the benchmark its private domain;
        without one, ``what``.
        """
        inherited = os.environ.get("ROS_DOMAIN_ID", "")
        self.add_argument("--domain-id", type=int, default=int(inherited) if inherited.isdigit() else None,
                          help=f"ROS_DOMAIN_ID (default: the inherited one if set, else {what})")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """Parse; under ``--smoke`` again, with the smoke sizes as the defaults."""
        parsed = super().parse_args(args, namespace)
        if parsed.smoke:
            self.set_defaults(**self._smoke)
            parsed = super().parse_args(args, namespace)
        return parsed


def percentile(values: Sequence[float], q: float) -> float | None:
    """``q``-th percentile of ``values`` as a float; None (JSON null) when there are none."""
    return float(np.percentile(values, q)) if len(values) else None


def median(values: Sequence[float]) -> float | None:
    """Median of ``values`` as a float; None when there are none."""
    return percentile(values, 50)


def _finite_or_none(value: Any) -> Any:
    """``value`` with every NaN / infinity (nested too) replaced by None, so the line is strict JSON."""
    if isinstance(value, Mapping):
        return {key: _finite_or_none(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def emit(figures: Mapping[str, Any]) -> None:
    """Print ``figures`` as one JSON object on stdout's last line (NaN / infinity as null) and flush.

    Example:
        >>> emit({"ms": np.float64(1.5), "bad": float("nan"), "n": np.int64(3)})
        {"ms": 1.5, "bad": null, "n": 3}
    """
    print(json.dumps(_finite_or_none(figures), allow_nan=False), flush=True)
    sys.stderr.flush()
