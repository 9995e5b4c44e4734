"""The data engine's transformers experts, registered by name on import.

* filter ``clip``: :class:`~spatialvlm_ros.perception.hf.ClipSceneFilter` with the paper's labels;
* objects ``open_vocab``: detector proposals from ``models.detector.object_queries`` (NMS across them), SAM
  masks, region captions; the support mask is the union of the best ``models.detector.support_queries`` masks;
* depth ``monocular``: metric depth at the frame's intrinsics, or at the fallback field of view
  (``models.depth.intrinsics: default_fov``);
* embedder ``clip_text``: CLIP text embeddings of the captions.

Every factory reads the checkpoints and their options from ``SynthesisConfig.models``
(:class:`~spatialvlm_ros.config.ModelsConfig`).
"""

from __future__ import annotations

import logging

import numpy as np

from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.perception.hf import (BoxSegmenter, ClipSceneFilter, ClipTextEmbedder, MonocularDepth,
                                          OpenVocabDetector, RegionCaptioner)
from spatialvlm_ros.synthesis.config import SynthesisConfig
from spatialvlm_ros.synthesis.registry import (DEPTH_SOURCES, EMBEDDERS, FILTERS, OBJECT_EXPERTS, DepthSource,
                                               Detection, Detections, FilterVerdict, ImageFilter, ObjectsExpert,
                                               Sample, TextEmbedder)

logger = logging.getLogger(__name__)


class ClipFilter:
    """Keeps an image when CLIP's most likely label is a scene photo (paper step 1).

    Args:
        clip: the zero-shot labeller.
    """

    def __init__(self, clip: ClipSceneFilter) -> None:
        self.clip = clip

    def keep(self, sample: Sample) -> FilterVerdict:
        """Label the image; the winning label decides."""
        verdict = self.clip.classify(sample.frame.rgb)
        return FilterVerdict(keep=verdict.keep, label=verdict.label)


class OpenVocabObjects:
    """Regions from an open-vocabulary detector, masks from SAM, captions from a region captioner.

    Object and support queries go to the detector in one call; NMS runs across the object queries
    (class-agnostic region proposals) and separately for the support queries. Regions whose mask comes
    back empty are dropped; an empty caption falls back to the query that found the region.

    Args:
        detector: boxes for the queries.
        segmenter: a mask per box.
        captioner: a 1-6 word caption per box.
        object_queries: queries that propose objects.
        support_queries: queries of the floor / tabletop; their best masks form the support mask.
        max_objects: most regions kept, best score first.
    """

    def __init__(self, detector: OpenVocabDetector, segmenter: BoxSegmenter, captioner: RegionCaptioner, *,
                 object_queries: tuple[str, ...], support_queries: tuple[str, ...], max_objects: int) -> None:
        if not object_queries:
            raise ConfigError("experts.objects: open_vocab: need at least one object query")
        self.detector = detector
        self.segmenter = segmenter
        self.captioner = captioner
        self.object_queries = object_queries
        self.support_queries = support_queries
        self.max_objects = max_objects

    def detect(self, sample: Sample, rng: np.random.Generator) -> Detections:
        """Regions of ``sample``; ``rng`` is unused (greedy decoding is deterministic)."""
        del rng
        image = sample.frame.rgb
        queries = self.object_queries + self.support_queries
        groups = [0] * len(self.object_queries) + list(range(1, len(self.support_queries) + 1))
        found = self.detector.detect(image, queries, groups=groups)
        is_object = found.labels < len(self.object_queries)
        objects = found.subset(np.flatnonzero(is_object)[:self.max_objects])
        # Detections come best first, so the first box of each support query is its best one.
        _, first = np.unique(found.labels[~is_object], return_index=True)
        support = found.subset(np.flatnonzero(~is_object)[first])
        masks = self.segmenter.segment(image, np.concatenate([objects.boxes, support.boxes]))
        captions = self.captioner.caption(image, objects.boxes).captions
        detections = []
        for i, (label, caption, mask, score) in enumerate(zip(objects.labels, captions, masks.masks, objects.scores)):
            query = objects.queries[label]
            if not mask.any():
                logger.debug("%s: region %d (%r) has an empty mask; dropped", sample.image_id, i, query)
                continue
            detections.append(Detection(object_id=i, name=query, caption=caption or query, mask=mask,
                                        attributes={"query": query, "score": f"{score:.3f}"}))
        support_mask = masks.masks[len(objects):].any(axis=0) if len(support) else None
        return Detections(objects=tuple(detections), support_mask=support_mask)


class MonocularDepthSource:
    """Metric monocular depth (paper step 3).

    Args:
        model: the depth expert.
        use_frame_intrinsics: use the frame's intrinsics; else assume the model's fallback field of view.
    """

    def __init__(self, model: MonocularDepth, use_frame_intrinsics: bool = True) -> None:
        self.model = model
        self.use_frame_intrinsics = use_frame_intrinsics

    def depth(self, sample: Sample) -> tuple[np.ndarray, CameraIntrinsics]:
        """(H, W) float32 metres and the intrinsics they belong to."""
        pred = self.model.estimate(sample.frame.rgb, sample.frame.intrinsics if self.use_frame_intrinsics else None)
        return pred.depth_m, pred.intrinsics


@FILTERS.register("clip")
def _clip_filter(cfg: SynthesisConfig) -> ImageFilter:
    models = cfg.models
    return ClipFilter(ClipSceneFilter.from_pretrained(models.clip.checkpoint, **models.load_options()))


@OBJECT_EXPERTS.register("open_vocab")
def _open_vocab_objects(cfg: SynthesisConfig) -> ObjectsExpert:
    models = cfg.models
    options = models.load_options()
    return OpenVocabObjects(
        OpenVocabDetector.from_pretrained(models.detector.checkpoint, **options, threshold=models.detector.threshold,
                                          nms_iou=models.detector.nms_iou),
        BoxSegmenter.from_pretrained(models.segmenter.checkpoint, **options),
        RegionCaptioner.from_pretrained(models.captioner.checkpoint, **options,
                                        max_new_tokens=models.captioner.max_new_tokens),
        object_queries=models.detector.object_queries, support_queries=models.detector.support_queries,
        max_objects=models.detector.max_objects)


@DEPTH_SOURCES.register("monocular")
def _monocular_depth(cfg: SynthesisConfig) -> DepthSource:
    models = cfg.models
    return MonocularDepthSource(MonocularDepth.from_pretrained(models.depth.checkpoint, **models.load_options(),
                                                               fallback_fovy_deg=models.depth.fallback_fovy_deg),
                                use_frame_intrinsics=models.depth.intrinsics == "frame")


@EMBEDDERS.register("clip_text")
def _clip_text(cfg: SynthesisConfig) -> TextEmbedder:
    models = cfg.models
    return ClipTextEmbedder.from_pretrained(models.clip.checkpoint, **models.load_options())
