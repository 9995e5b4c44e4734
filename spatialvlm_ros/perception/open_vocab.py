"""Open-vocabulary experts composed of a detector, a box-prompted segmenter and (for objects) a captioner.

* :class:`OpenVocabGrounder` (grounding ``open_vocab``): phrase -> the best box's mask;
* :class:`OpenVocabObjects` (objects ``open_vocab``): region proposals with masks, captions and a support mask.

They work on the protocols of :mod:`~spatialvlm_ros.perception.experts`, not on a model library;
:mod:`~spatialvlm_ros.perception.registry` builds them with the transformers models of
:mod:`~spatialvlm_ros.perception.hf`.
"""

from __future__ import annotations

import logging

import numpy as np

from spatialvlm_ros.errors import ConfigError, GroundingError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.perception.experts import Captioner, Detection, Detections, Detector, Sample, Segmenter

logger = logging.getLogger(__name__)


class OpenVocabGrounder:
    """Phrase -> mask: the detector's best box for the phrase (above its threshold), segmented in that box.

    The mask is cut to its box: a box prompt means "the object in this box", and a mask leaking past
    it (onto the table, say) would drag the object's point cloud with it. No box above the threshold
    gives an all-False mask (not visible), as :class:`~spatialvlm_ros.perception.experts.Grounder` asks.

    Args:
        detector: open-vocabulary detector (its threshold decides visibility).
        segmenter: box-prompted segmenter.
    """

    name = "open_vocab"

    def __init__(self, detector: Detector, segmenter: Segmenter) -> None:
        self.detector = detector
        self.segmenter = segmenter

    def ground(self, frame: Frame, phrase: str) -> np.ndarray:
        """See :meth:`~spatialvlm_ros.perception.experts.Grounder.ground`."""
        if not phrase.strip():
            raise GroundingError("open_vocab cannot ground an empty phrase")
        found = self.detector.detect(frame.rgb, [phrase])
        mask = np.zeros(frame.rgb.shape[:2], bool)
        if not len(found):
            return mask
        box = found.boxes[:1]
        x0, y0 = np.floor(box[0, :2]).astype(int)
        x1, y1 = np.ceil(box[0, 2:]).astype(int)
        mask[y0:y1, x0:x1] = self.segmenter.segment(frame.rgb, box).masks[0, y0:y1, x0:x1]
        return mask


class OpenVocabObjects:
    """Regions from an open-vocabulary detector, masks from a box-prompted segmenter, captions from a captioner.

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

    Raises:
        ConfigError: no object query.
    """

    def __init__(self, detector: Detector, segmenter: Segmenter, captioner: Captioner, *,
                 object_queries: tuple[str, ...], support_queries: tuple[str, ...], max_objects: int) -> None:
        if not object_queries:
            raise ConfigError("models.detector.object_queries: need at least one object query")
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
