"""Scene extraction: one image -> a :class:`SceneRecord` (paper steps 1-5), experts chosen by config."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from spatialvlm_ros.errors import InputError
from spatialvlm_ros.geometry.camera import pixel_centre
from spatialvlm_ros.perception.experts import Sample
from spatialvlm_ros.perception.registry import DEPTH_SOURCES, EMBEDDERS, FILTERS, OBJECT_EXPERTS
from spatialvlm_ros.synthesis.ambiguity import disambiguate, is_background
from spatialvlm_ros.synthesis.config import SynthesisConfig
from spatialvlm_ros.synthesis.judge import JudgeCounts, object_reasons, object_sigmas
from spatialvlm_ros.synthesis.lifting import fit_support, lift_object
from spatialvlm_ros.synthesis.records import CAMERA_ALIGNED_ROTATION, SceneObject, SceneRecord

logger = logging.getLogger(__name__)


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """The generator of one image, derived from (seed, image id) alone.

    Every random choice about an image (captions, RANSAC, subsampling, questions, rounding) draws from
    it, so an image's output does not depend on which other images were processed, in what order, on
    which worker, or whether the run was resumed.

    Example:
        >>> image_rng(0, "a").random() == image_rng(0, "a").random() != image_rng(1, "a").random()
        True
    """
    return np.random.default_rng([seed, zlib.crc32(image_id.encode())])


@dataclass(frozen=True, eq=False)
class ExtractedScene:
    """One image's scene record, and its objects' cleaned point clouds when ``output.save_point_clouds``.

    Attributes:
        record: what the questions are asked about (serialised to ``scenes/<id>.json``).
        clouds_m: object id -> (N, 3) float32 points in the scene frame (the record's ``camera_to_scene``
            applied), metres: the points its box spans; empty unless the settings save them (they are
            the bulk of a result).
        counts: objects seen and dropped (or flagged) by reason; question synthesis adds its counts.
    """

    record: SceneRecord
    clouds_m: Mapping[int, np.ndarray]
    counts: JudgeCounts


class SceneExtractor:
    """Filter, detect, lift, canonicalise, disambiguate and judge one image.

    Args:
        cfg: the synthesis settings; ``cfg.experts`` names the experts of
            :mod:`~spatialvlm_ros.perception.registry` to use, ``cfg.models`` configures the learned ones.

    Raises:
        ConfigError: an expert name is not registered, or a learned expert's checkpoint cannot be loaded.
    """

    def __init__(self, cfg: SynthesisConfig) -> None:
        self.cfg = cfg
        self.filter = FILTERS.create(cfg.experts.filter, cfg.models)
        self.objects = OBJECT_EXPERTS.create(cfg.experts.objects, cfg.models)
        self.depth = DEPTH_SOURCES.create(cfg.experts.depth, cfg.models)
        self.embedder = EMBEDDERS.create(cfg.experts.embedder, cfg.models)

    def extract(self, sample: Sample, rng: np.random.Generator) -> ExtractedScene | None:
        """The scene record of ``sample`` (and its objects' clouds when saved), or None when the filter drops it.

        Raises:
            InputError: the experts cannot use the sample (e.g. no depth for the sensor source); the
                message starts with the image id.
        """
        try:
            return self._extract(sample, rng)
        except InputError as err:
            raise InputError(f"{sample.image_id}: {err}") from err

    def _extract(self, sample: Sample, rng: np.random.Generator) -> ExtractedScene | None:
        verdict = self.filter.keep(sample.frame)
        if not verdict.keep:
            logger.debug("%s dropped by the filter: %s", sample.image_id, verdict.label)
            return None
        detections = self.objects.detect(sample, rng)
        depth = self.depth.depth(sample.frame)
        depth_m, intrinsics = depth.depth_m, depth.intrinsics
        lift, judge = self.cfg.lifting, self.cfg.judge
        support = fit_support(depth_m, detections.support_mask, intrinsics, lift, rng)
        if support is None:
            to_scene = np.eye(4)
            to_scene[:3, :3] = CAMERA_ALIGNED_ROTATION
            camera_height = None
        else:
            to_scene, camera_height = support.frame.transform, support.frame.camera_height_m

        # Captions are disambiguated first (cheap, and background regions need no 3D), then lifted.
        centres = np.array([pixel_centre(d.mask) for d in detections.objects]).reshape(-1, 2)
        amb = self.cfg.ambiguity
        names = disambiguate([d.caption for d in detections.objects], centres, self.embedder,
                             amb.similarity_threshold, amb.background)
        counts = JudgeCounts(objects=len(detections.objects))
        dropped: list[tuple[str, str]] = []
        for i in names.dropped:
            caption = detections.objects[i].caption
            dropped.append((caption, "background" if is_background(caption, amb.background) else "ambiguous"))
        # How many masks claim each pixel: a mask never grows into another's pixels.
        claims = np.zeros(depth_m.shape, dtype=np.int16)
        for det in detections.objects:
            claims += det.mask
        priors = judge.priors
        objects = []
        clouds: dict[int, np.ndarray] = {}
        for det, reference, centre in zip(detections.objects, names.references, centres):
            if reference is None:
                continue
            lifted = lift_object(depth_m, det.mask, intrinsics, to_scene, support, lift, claimed=claims > det.mask)
            if lifted is None:
                dropped.append((det.caption, "too_few_points"))
                continue
            reasons: tuple[str, ...] = ()
            sigma_centre = sigma_size = (0.0, 0.0, 0.0)
            if judge.enabled:
                reasons = object_reasons(lifted, det.caption, judge, priors)
                sigma_centre, sigma_size = object_sigmas(lifted, judge)
                if reasons and judge.action == "drop":
                    dropped.append((det.caption, ",".join(reasons)))
                    continue
            objects.append(SceneObject(object_id=det.object_id, name=det.name, caption=det.caption,
                                       reference=reference, box=lifted.box,
                                       pixel_centre=(float(centre[0]), float(centre[1])), n_points=lifted.n_points,
                                       attributes=dict(det.attributes), sigma_centre_m=sigma_centre,
                                       sigma_size_m=sigma_size, on_support=lifted.on_support, flags=reasons))
            if self.cfg.output.save_point_clouds:
                clouds[det.object_id] = lifted.points_m.astype(np.float32)
        for _, why in dropped:
            for reason in why.split(","):
                counts[f"object:{reason}"] += 1
        record = SceneRecord(image_id=sample.image_id, width=intrinsics.width, height=intrinsics.height,
                             canonicalised=support is not None,
                             camera_to_scene=tuple(tuple(float(v) for v in row) for row in to_scene),
                             camera_height_m=camera_height, objects=tuple(objects),
                             dropped=tuple(c for c, _ in dropped), dropped_reasons=tuple(r for _, r in dropped))
        return ExtractedScene(record=record, clouds_m=clouds, counts=counts)
