"""Every benchmark runs: ``python benchmarks/X.py --smoke`` exits 0 and ends with its figures as JSON.

The benchmarks are found by glob (a new one is covered without touching this file); each must take
``--smoke`` and name the figures it promises in a module-level ``FIGURES`` tuple (read here with ``ast``,
so a script whose imports broke fails in its own run, with its traceback, not at collection).
"""

from __future__ import annotations

import ast
import doctest
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))
TIMEOUT_S = 180          # a smoke run takes seconds; this only stops a hung one (e.g. DDS discovery)


def declared_figures(script: Path) -> tuple[str, ...]:
    """The script's module-level ``FIGURES`` tuple of strings, without importing it."""
    for node in ast.parse(script.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "FIGURES" for t in targets) and node.value is not None:
            figures = ast.literal_eval(node.value)
            assert isinstance(figures, tuple) and figures and all(isinstance(f, str) for f in figures), \
                f"{script.name}: FIGURES must be a non-empty tuple of strings"
            return figures
    pytest.fail(f"{script.name} declares no module-level FIGURES (the figures its JSON line must carry)")


def lookup(data: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(concrete path, value) for a dotted ``path`` in nested JSON; ``*`` stands for every key or element.

    Example:
        >>> dict(lookup({"a": {"x": 1, "y": 2}, "b": [{"c": 3}]}, "a.*"))
        {'a.x': 1, 'a.y': 2}
        >>> dict(lookup({"b": [{"c": 3}], "s/t": 4}, "b.*.c")), dict(lookup({"s/t": 4}, "s/t"))
        ({'b.0.c': 3}, {'s/t': 4})
    """
    head, _, rest = path.partition(".")
    if head == "*":
        items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
        children = [(str(k), v) for k, v in items]
        if not children:
            yield path, None         # nothing to check: reported as missing
    else:
        children = [(head, data.get(head) if isinstance(data, dict) else None)]
    for key, value in children:
        if rest:
            for sub, found in lookup(value, rest):
                yield f"{key}.{sub}", found
        else:
            yield key, value


def test_common_helpers() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import _common
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert doctest.testmod(_common).failed == 0


def test_benchmarks_are_found() -> None:
    assert len(BENCHMARKS) >= 6, [p.name for p in BENCHMARKS]


@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_benchmark_smoke(script: Path, ros_env: dict[str, str], tmp_path: Path) -> None:
    figures = declared_figures(script)
    # ros_env: the test run's private DDS domain (node_latency's node processes join it), local only, osmesa.
    result = subprocess.run([sys.executable, str(script), "--smoke"], cwd=tmp_path, env=ros_env,
                            capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    report = f"stdout tail:\n{result.stdout[-3000:]}\nstderr tail:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{script.name} --smoke exited {result.returncode}\n{report}"
    lines = result.stdout.strip().splitlines()
    assert lines, f"{script.name} printed nothing\n{report}"
    try:
        data = json.loads(lines[-1])
    except json.JSONDecodeError as err:
        pytest.fail(f"{script.name}: last stdout line is not JSON ({err})\n{report}")
    assert isinstance(data, dict), f"{script.name}: last line is JSON but not an object: {lines[-1][:200]}"
    bad = {path: value for figure in figures for path, value in lookup(data, figure)
           if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)}
    assert not bad, f"{script.name}: figures missing or not finite numbers: {bad}\n{report}"
