"""The floor plan, enforced: import-linter contracts (setup.cfg) and no import circle between the package's parts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parent.parent


def _lint_imports() -> list[str]:
    """The ``lint-imports`` beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("lint-imports")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("lint-imports")
    assert found, "lint-imports is not installed: pip install import-linter (requirements.txt pins it)"
    return [found]


def test_import_linter_contracts_hold() -> None:
    run = subprocess.run([*_lint_imports(), "--no-cache", "setup.cfg"], cwd=REPO, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_no_import_circle_between_the_package_parts() -> None:
    graph = grimp.build_graph("spatialvlm_ros", cache_dir=None)
    parts = sorted(m for m in graph.modules if m.count(".") == 1)
    edges = {a: {b for b in parts if b != a and graph.direct_import_exists(importer=a, imported=b, as_packages=True)}
             for a in parts}
    circles = [(a, b) for a in parts for b in edges[a]
               if graph.find_shortest_chain(importer=b, imported=a, as_packages=True) is not None]
    assert not circles, f"parts that import each other (directly or through others): {circles}"
