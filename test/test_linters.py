"""Linters as tests, the ROS 2 way (ament_flake8 / ament_pep257), over the package, tests and scripts."""

from __future__ import annotations

from pathlib import Path

from ament_flake8.main import main_with_errors as flake8_main
from ament_pep257.main import main as pep257_main

REPO = Path(__file__).resolve().parent.parent
CODE = [str(REPO / p) for p in ("spatialvlm_ros", "launch", "benchmarks", "scripts", "setup.py") if (REPO / p).exists()]
TESTS = [str(REPO / "test")]


def test_flake8() -> None:
    rc, errors = flake8_main(argv=["--config", str(REPO / "setup.cfg"), *CODE, *TESTS])
    assert rc == 0, f"flake8 found {len(errors)} problem(s):\n" + "\n".join(errors)


def test_pep257_google_docstrings() -> None:
    # Google style (the project's): summary line, Args/Returns/Example sections, imperative not enforced.
    assert pep257_main(argv=[*CODE, "--convention", "google", "--add-ignore", "D105", "D107"]) == 0


def test_pep257_tests_need_no_docstrings_but_well_formed_ones() -> None:
    ignore = ["D100", "D101", "D102", "D103", "D104", "D105", "D107"]
    assert pep257_main(argv=[*TESTS, "--convention", "google", "--add-ignore", *ignore]) == 0
