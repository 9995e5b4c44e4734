"""The Ray Data engine: the local engine's dataset, resumable, reachable from the CLI, clear when Ray is absent."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from spatialvlm_ros.cli import build_parser, main
from spatialvlm_ros.cli.synthesize import synthesize_cli
from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.perception.experts import Sample
from spatialvlm_ros.synthesis.config import SynthesisConfig
from spatialvlm_ros.synthesis.engine import run_local
from spatialvlm_ros.synthesis.sources import SimSource, open_source

N_IMAGES = 3
CFG = SynthesisConfig()
#: Rows a sim image yields: the sampled questions and the exact gripper-distance ones.
ROWS_PER_IMAGE = CFG.questions.per_image + CFG.questions.exact_per_image


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """One local Ray (2 CPUs) for the module: starting Ray costs seconds, each run only starts its actors."""
    pytest.importorskip("ray.data")
    import ray
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """``sim:3`` written by the local engine, and the order in which it reported the images."""
    out = tmp_path_factory.mktemp("local")
    order: list[str] = []
    run_local(open_source(f"sim:{N_IMAGES}", CFG), out, CFG, on_image=lambda image_id, n: order.append(image_id))
    return out, order


def dataset_files(root: Path) -> dict[str, bytes]:
    """Every file of a dataset folder by relative path (the settings file included)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_ray_engine_writes_the_local_engines_dataset(ray_cluster: Any, local_dataset: tuple[Path, list[str]],
                                                     tmp_path: Path) -> None:
    from spatialvlm_ros.synthesis.ray_engine import run_ray
    local, local_order = local_dataset
    order: list[tuple[str, int]] = []
    summary = run_ray(open_source(f"sim:{N_IMAGES}", CFG), tmp_path, CFG,
                      on_image=lambda image_id, n: order.append((image_id, n)), num_workers=2)
    assert summary.processed == N_IMAGES and summary.skipped == 0 and summary.rows == N_IMAGES * ROWS_PER_IMAGE
    assert [image_id for image_id, _ in order] == local_order               # same order, not just same set
    assert dataset_files(tmp_path) == dataset_files(local)                  # byte-identical, PNGs and Parquet too
    assert ray_cluster.is_initialized()                                     # a caller's Ray is left running


def test_ray_engine_resumes(ray_cluster: Any, local_dataset: tuple[Path, list[str]], tmp_path: Path) -> None:
    from spatialvlm_ros.synthesis.ray_engine import run_ray
    run_ray(open_source("sim:2", CFG), tmp_path, CFG, num_workers=2)       # an earlier, smaller run
    (tmp_path / "done" / "sim000001").unlink()                              # ... interrupted mid-image
    (tmp_path / "qa" / "sim000001.jsonl").write_text("half a file")
    reported: list[str] = []
    summary = run_ray(open_source(f"sim:{N_IMAGES}", CFG), tmp_path, CFG,
                      on_image=lambda image_id, n: reported.append(image_id), num_workers=2)
    assert (summary.processed, summary.skipped) == (2, 1)
    summary = run_ray(open_source(f"sim:{N_IMAGES}", CFG), tmp_path, CFG, on_image=lambda i, n: reported.append(i))
    assert (summary.processed, summary.skipped) == (0, N_IMAGES)           # nothing left: Ray is not even used
    assert len(reported) == 2 * N_IMAGES
    assert (tmp_path / "data.jsonl").read_bytes() == (local_dataset[0] / "data.jsonl").read_bytes()


def test_cli_engine_ray(ray_cluster: Any, local_dataset: tuple[Path, list[str]], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert main(["synthesize", "--input", "sim:2", "--out", str(out), "--engine", "ray"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["engine"] == "ray" and summary["processed"] == 2 and summary["rows"] == 2 * ROWS_PER_IMAGE
    # Rows are per image and images in id order, so sim:2's rows open sim:3's.
    local_rows = (local_dataset[0] / "data.jsonl").read_text().splitlines()
    assert (out / "data.jsonl").read_text().splitlines() == local_rows[:2 * ROWS_PER_IMAGE]


class _FailingSource(SimSource):
    """``sim:N`` whose last image cannot be loaded, as a corrupt input would be."""

    def load(self, image_id: str) -> Sample:
        if image_id == self.image_ids[-1]:
            raise InputError(f"{image_id}: corrupt image")
        return super().load(image_id)


def test_worker_errors_come_back_as_the_packages_errors(ray_cluster: Any, tmp_path: Path) -> None:
    from spatialvlm_ros.synthesis.ray_engine import run_ray
    # The workers cannot import this test module: ship the source class by value.
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with pytest.raises(InputError, match="sim000001: corrupt image"):
        run_ray(_FailingSource(2, CFG), tmp_path, CFG, num_workers=1)
    assert (tmp_path / "done" / "sim000000").exists()                    # what finished before the error stays


def test_missing_ray_is_a_config_error_naming_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ray", "ray.data"):
        monkeypatch.setitem(sys.modules, name, None)                        # `import ray` now raises ImportError
    args = build_parser().parse_args(["synthesize", "--input", "sim:1", "--out", str(tmp_path), "--engine", "ray"])
    with pytest.raises(ConfigError, match=r"pip install 'ray\[data\]'"):
        synthesize_cli(args)
    assert not (tmp_path / "done").exists()                                 # failed before touching the folder
