"""Run the pipeline over a source into a dataset folder (the in-process engine)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from spatialvlm_ros.synthesis.config import SynthesisConfig
from spatialvlm_ros.synthesis.extract import SceneExtractor, image_rng
from spatialvlm_ros.synthesis.questions import synthesize_qa
from spatialvlm_ros.synthesis.sources import Source
from spatialvlm_ros.synthesis.writer import DatasetWriter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    """What a run did.

    Attributes:
        processed: images synthesised by this run.
        skipped: images already done (resume).
        rows: rows in the dataset after the run.
        images: finished images in the dataset.
        filtered: images the filter dropped.
        per_type: rows per question type.
        parquet: whether data.parquet was written.
    """

    processed: int
    skipped: int
    rows: int
    images: int
    filtered: int
    per_type: dict[str, int]
    parquet: bool


def run_local(source: Source, out: Path, cfg: SynthesisConfig,
              on_image: Callable[[str, int], None] | None = None) -> RunSummary:
    """Synthesise every image of ``source`` into the dataset folder ``out``, in this process.

    Args:
        source: the images.
        out: the dataset folder; images already done there are skipped.
        cfg: the settings.
        on_image: called after each image with its id and the number of rows it produced (progress).

    Returns:
        The run's summary.

    Raises:
        ConfigError: bad expert names, or ``out`` made with other settings.
        InputError: an image the experts cannot use.
    """
    writer = DatasetWriter(out, cfg)
    extractor = SceneExtractor(cfg)
    processed = skipped = 0
    for image_id in source.image_ids:
        if writer.is_done(image_id):
            skipped += 1
            if on_image is not None:
                on_image(image_id, 0)
            continue
        sample = source.load(image_id)
        rng = image_rng(cfg.seed, image_id)
        scene = extractor.extract(sample, rng)
        if scene is None:
            writer.mark_filtered(image_id, "filter")
            n_rows = 0
        else:
            pairs = synthesize_qa(scene, rng, cfg.questions)
            writer.write_image(sample.frame.rgb, sample.frame.depth_m, scene, pairs)
            n_rows = len(pairs)
        processed += 1
        if on_image is not None:
            on_image(image_id, n_rows)
    summary = writer.finalize()
    logger.info("synthesised %d images (%d skipped as done): %d rows in %s", processed, skipped, summary["rows"], out)
    return RunSummary(processed=processed, skipped=skipped, rows=summary["rows"], images=summary["images"],
                      filtered=summary["filtered"], per_type=summary["per_type"], parquet=summary["parquet"])
