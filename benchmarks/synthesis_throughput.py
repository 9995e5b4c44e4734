"""Throughput of the data engine with the simulator-oracle experts at 320x240.

Measurements over the same ``sim:N`` scenes, after a one-image warm-up run (so one-off imports, e.g.
pandas under the Parquet writer and the OpenGL loader, are not charged to the images):

* end to end, one process (``run_local``): scene build + CPU rendering (OSMesa) + extraction + QA + files;
* without rendering, one process: the scenes rendered beforehand, then extraction + QA + files, timed alone;
* QA synthesis alone (questions, templates, rounding) on the extracted scene records;
* end to end on Ray Data (``run_ray``) with ``--ray-workers`` workers (default 2) on a local Ray, rendering
  included; Ray's own start-up is timed apart, the workers' start-up (imports) is inside the run, and the
  steady rate (first to last image) is given beside it.

Prints a table and, as its last line, JSON with ``images_per_s`` and ``qa_per_s`` (one process, end to end,
rendering included), their ``*_without_rendering`` twins, ``qa_synthesis_only_per_s``,
``render_s_per_image`` (scene build + render + table mask, per image) and ``ray_images_per_s``.

Usage: MUJOCO_GL=osmesa python benchmarks/synthesis_throughput.py [--images 40] [--ray-workers 2] [--no-ray] [--smoke]
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from spatialvlm_ros.synthesis.config import SynthesisConfig, load_synthesis_config
from spatialvlm_ros.synthesis.engine import run_local
from spatialvlm_ros.synthesis.extract import SceneExtractor, image_rng
from spatialvlm_ros.synthesis.questions import synthesize_qa
from spatialvlm_ros.perception.experts import Sample
from spatialvlm_ros.synthesis.sources import SimSource

from _common import BenchmarkParser, emit

FIGURES = ("images_per_s", "qa_per_s", "images_per_s_without_rendering", "qa_per_s_without_rendering",
           "qa_synthesis_only_per_s", "render_s_per_image", "ray_images_per_s", "ray_qa_per_s")


class _Prerendered:
    """A source whose samples were loaded (rendered) before timing starts."""

    def __init__(self, source: SimSource) -> None:
        self._samples = {i: source.load(i) for i in source.image_ids}

    @property
    def image_ids(self) -> tuple[str, ...]:
        return tuple(self._samples)

    def load(self, image_id: str) -> Sample:
        return self._samples[image_id]


def measure_local(cfg: SynthesisConfig, n_images: int, tmp: Path) -> dict[str, float]:
    """One process: end to end, without rendering, and QA synthesis alone."""
    source = SimSource(n_images, cfg)
    run_local(SimSource(1, cfg), tmp / "warm_up", cfg)

    start = time.perf_counter()
    summary = run_local(source, tmp / "end_to_end", cfg)
    end_to_end_s = time.perf_counter() - start

    start = time.perf_counter()
    prerendered = _Prerendered(source)
    render_s = time.perf_counter() - start
    start = time.perf_counter()
    run_local(prerendered, tmp / "no_render", cfg)
    no_render_s = time.perf_counter() - start

    extractor = SceneExtractor(cfg)
    extracted = [(extractor.extract(prerendered.load(i), image_rng(cfg.seed, i)), i) for i in prerendered.image_ids]
    scenes = [(scene.record, i) for scene, i in extracted if scene is not None]   # None: dropped by the filter
    start = time.perf_counter()
    n_qa = sum(len(synthesize_qa(record, image_rng(cfg.seed + 1, i), cfg.questions)) for record, i in scenes)
    qa_only_s = time.perf_counter() - start
    return {
        "images": n_images, "rows": summary.rows, "width": cfg.sim.width, "height": cfg.sim.height,
        "images_per_s": n_images / end_to_end_s, "qa_per_s": summary.rows / end_to_end_s,
        "images_per_s_without_rendering": n_images / no_render_s,
        "qa_per_s_without_rendering": summary.rows / no_render_s,
        "qa_synthesis_only_per_s": n_qa / qa_only_s, "render_s_per_image": render_s / n_images,
    }


def measure_ray(cfg: SynthesisConfig, n_images: int, workers: int, tmp: Path) -> dict[str, float]:
    """Ray Data on a local Ray with ``workers`` one-CPU workers, rendering included; Ray is shut down after."""
    from spatialvlm_ros.synthesis.ray_engine import import_ray, run_ray
    ray = import_ray()
    start = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
    try:
        init_s = time.perf_counter() - start
        stamps: list[float] = []
        start = time.perf_counter()
        summary = run_ray(SimSource(n_images, cfg), tmp / "ray", cfg, num_workers=workers,
                          on_image=lambda image_id, n: stamps.append(time.perf_counter()))
        run_s = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {"ray_workers": workers, "ray_init_s": init_s, "ray_images_per_s": summary.processed / run_s,
            "ray_qa_per_s": summary.rows / run_s,
            "ray_images_per_s_steady": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None}


def main() -> None:
    """Command-line entry point."""
    parser = BenchmarkParser(__doc__)
    parser.add_argument("--images", type=int, default=40, smoke=2)
    parser.add_argument("--ray-workers", type=int, default=2, smoke=1)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray measurement (ray_images_per_s: null)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_synthesis_config()
    with tempfile.TemporaryDirectory() as tmp:
        figures: dict[str, float | None] = {**measure_local(cfg, args.images, Path(tmp)),
                                            "images_per_s_includes_rendering": True}
        figures.update({"ray_images_per_s": None} if args.no_ray
                       else measure_ray(cfg, args.images, args.ray_workers, Path(tmp)))
    for key, value in figures.items():
        print(f"{key:34s} {value if value is None or isinstance(value, (bool, int)) else round(value, 3)}")
    emit(figures)


if __name__ == "__main__":
    main()
