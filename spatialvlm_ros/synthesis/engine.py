"""Run the pipeline over a source into a dataset folder: the in-process engine and the per-image step it shares.

Both engines (this one and :mod:`spatialvlm_ros.synthesis.ray_engine`) run :func:`synthesize_image` on
each image and hand its :class:`ImageResult` to the same :class:`DatasetWriter`, so for the same
settings and seed they write byte-identical datasets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from spatialvlm_ros.synthesis.config import SynthesisConfig
from spatialvlm_ros.synthesis.extract import SceneExtractor, image_rng
from spatialvlm_ros.synthesis.judge import CountingReviewer, QuestionJudge
from spatialvlm_ros.synthesis.questions import QAPair, exact_gripper_qa, synthesize_qa
from spatialvlm_ros.synthesis.records import SceneRecord
from spatialvlm_ros.synthesis.sources import Source
from spatialvlm_ros.synthesis.writer import DatasetWriter

logger = logging.getLogger(__name__)

#: Progress callback: image id and the number of rows it produced (0 for skipped or filtered images).
ProgressCallback = Callable[[str, int], None]


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
        judge: objects and candidate questions seen, kept, and dropped (or flagged) by reason, summed over
            the dataset (see :class:`~spatialvlm_ros.synthesis.judge.JudgeCounts`).
    """

    processed: int
    skipped: int
    rows: int
    images: int
    filtered: int
    per_type: dict[str, int]
    parquet: bool
    judge: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_writer(cls, processed: int, skipped: int, summary: dict[str, Any]) -> "RunSummary":
        """Combine a run's counts with :meth:`DatasetWriter.finalize`'s summary."""
        return cls(processed=processed, skipped=skipped, rows=summary["rows"], images=summary["images"],
                   filtered=summary["filtered"], per_type=summary["per_type"], parquet=summary["parquet"],
                   judge=summary["judge"])


@dataclass(frozen=True, eq=False)
class ImageResult:
    """Everything the writer needs about one processed image.

    Attributes:
        image_id: the image.
        rgb: (H, W, 3) uint8 image.
        depth_m: (H, W) float32 metres; None when the settings do not save depth (or the image has none).
        scene: the scene record; None when the filter dropped the image.
        pairs: the image's question-answer pairs (empty when filtered).
        clouds_m: object id -> cleaned cloud in the scene frame; empty unless the settings save them.
        counts: objects and candidate questions seen, kept and dropped by reason (empty when filtered).
    """

    image_id: str
    rgb: np.ndarray
    depth_m: np.ndarray | None
    scene: SceneRecord | None
    pairs: tuple[QAPair, ...]
    clouds_m: Mapping[int, np.ndarray] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)


def synthesize_image(source: Source, extractor: SceneExtractor, image_id: str) -> ImageResult:
    """Load, extract and question one image; the result depends on (settings, seed, image id) alone.

    Raises:
        InputError: an image the experts cannot use.
    """
    sample = source.load(image_id)
    rng = image_rng(extractor.cfg.seed, image_id)
    extracted = extractor.extract(sample, rng)
    cfg = extractor.cfg
    # Depth only travels on when it is saved: it is the largest array, and Ray ships results between processes.
    depth_m = sample.frame.depth_m if cfg.output.save_depth else None
    if extracted is None:
        return ImageResult(image_id=image_id, rgb=sample.frame.rgb, depth_m=depth_m, scene=None, pairs=())
    reviewer: QuestionJudge | CountingReviewer = (QuestionJudge(cfg.judge, extracted.counts) if cfg.judge.enabled
                                                  else CountingReviewer(extracted.counts))
    pairs = tuple(synthesize_qa(extracted.record, rng, cfg.questions, reviewer))
    if sample.exact is not None:
        exact = exact_gripper_qa(extracted.record, sample.exact, rng, cfg.questions)
        reviewer.counts["exact"] += len(exact)      # not judged: the simulator's truth
        pairs += tuple(exact)
    return ImageResult(image_id=image_id, rgb=sample.frame.rgb, depth_m=depth_m, scene=extracted.record, pairs=pairs,
                       clouds_m=extracted.clouds_m, counts=reviewer.counts.to_json())


def write_result(writer: DatasetWriter, result: ImageResult) -> int:
    """Write one image's files (or its filtered marker) and return its number of rows."""
    if result.scene is None:
        writer.mark_filtered(result.image_id, "filter")
        return 0
    writer.write_image(result.rgb, result.depth_m, result.scene, list(result.pairs), result.clouds_m, result.counts)
    return len(result.pairs)


def run_local(source: Source, out: Path, cfg: SynthesisConfig,
              on_image: ProgressCallback | None = None) -> RunSummary:
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

    Example:
        >>> import tempfile
        >>> from spatialvlm_ros.synthesis.sources import open_source
        >>> cfg = SynthesisConfig()
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     summary = run_local(open_source("sim:1", cfg), Path(tmp), cfg)
        >>> summary.processed, summary.rows        # 24 questions + 4 with the simulator's exact gripper distances
        (1, 28)
    """
    writer = DatasetWriter(out, cfg)
    extractor = SceneExtractor(cfg)
    processed = skipped = 0
    for image_id in source.image_ids:
        if writer.is_done(image_id):
            skipped += 1
            n_rows = 0
        else:
            n_rows = write_result(writer, synthesize_image(source, extractor, image_id))
            processed += 1
        if on_image is not None:
            on_image(image_id, n_rows)
    summary = RunSummary.from_writer(processed, skipped, writer.finalize())
    logger.info("synthesised %d images (%d skipped as done): %d rows in %s", processed, skipped, summary.rows, out)
    return summary
