"""Throughput of the data engine with the simulator-oracle experts at 320x240, in one process.

Three measurements over the same ``sim:N`` scenes:

* end to end (``run_local``): scene build + CPU rendering (OSMesa) + extraction + QA + writing files;
* without rendering: the same scenes rendered beforehand, then extraction + QA + writing, timed alone;
* QA synthesis alone (questions, templates, rounding) on the extracted scene records.

Prints a table and, as its last line, JSON with ``images_per_s`` and ``qa_per_s`` (end to end,
rendering included), their ``*_without_rendering`` twins, ``qa_synthesis_only_per_s``, ``render_s_per_image``
and ``ray_images_per_s`` (null: the Ray engine is not implemented).

Usage: MUJOCO_GL=osmesa python benchmarks/synthesis_throughput.py [--images 40]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from spatialvlm_ros.synthesis.config import load_synthesis_config
from spatialvlm_ros.synthesis.engine import run_local
from spatialvlm_ros.synthesis.extract import SceneExtractor, image_rng
from spatialvlm_ros.synthesis.questions import synthesize_qa
from spatialvlm_ros.synthesis.registry import Sample
from spatialvlm_ros.synthesis.sources import SimSource


class _Prerendered:
    """A source whose samples were loaded (rendered) before timing starts."""

    def __init__(self, source: SimSource) -> None:
        self._samples = {i: source.load(i) for i in source.image_ids}

    @property
    def image_ids(self) -> tuple[str, ...]:
        return tuple(self._samples)

    def load(self, image_id: str) -> Sample:
        return self._samples[image_id]


def measure(n_images: int) -> dict[str, float | None]:
    """Run the three measurements and return the figures."""
    cfg = load_synthesis_config()
    source = SimSource(n_images, cfg)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run_local(source, Path(tmp) / "end_to_end", cfg)
        end_to_end_s = time.perf_counter() - start

        start = time.perf_counter()
        prerendered = _Prerendered(source)
        render_s = time.perf_counter() - start
        start = time.perf_counter()
        run_local(prerendered, Path(tmp) / "no_render", cfg)
        no_render_s = time.perf_counter() - start

    extractor = SceneExtractor(cfg)
    scenes = [(extractor.extract(prerendered.load(i), image_rng(cfg.seed, i)), i) for i in prerendered.image_ids]
    start = time.perf_counter()
    n_qa = sum(len(synthesize_qa(scene, image_rng(cfg.seed + 1, i), cfg.questions)) for scene, i in scenes)
    qa_only_s = time.perf_counter() - start
    return {
        "images": n_images, "rows": summary.rows, "width": cfg.sim.width, "height": cfg.sim.height,
        "images_per_s": n_images / end_to_end_s, "qa_per_s": summary.rows / end_to_end_s,
        "images_per_s_without_rendering": n_images / no_render_s,
        "qa_per_s_without_rendering": summary.rows / no_render_s,
        "qa_synthesis_only_per_s": n_qa / qa_only_s, "render_s_per_image": render_s / n_images,
        "ray_images_per_s": None,
    }


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    figures = measure(args.images)
    for key, value in figures.items():
        print(f"{key:34s} {value if value is None or isinstance(value, int) else round(value, 3)}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
