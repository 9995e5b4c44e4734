"""The perception experts by name: the one place each is registered.

Each registry maps the names a config uses to a factory taking the
:class:`~spatialvlm_ros.config.ModelsConfig` (checkpoints and options of the learned experts; the
offline experts ignore it) and returning the expert:

========================  ===========================  ==============================================
registry                  chosen by                    names
========================  ===========================  ==============================================
:data:`GROUNDERS`         ``estimator.grounding``      ``colour_prompt``, ``sim_segmentation``, ``open_vocab``
:data:`DEPTH_SOURCES`     ``experts.depth``;           ``sensor``, ``monocular``
                          ``estimator.monocular_depth``
:data:`FILTERS`           ``experts.filter``           ``none``, ``clip``
:data:`OBJECT_EXPERTS`    ``experts.objects``          ``sim_oracle``, ``open_vocab``
:data:`EMBEDDERS`         ``experts.embedder``         ``char_ngram``, ``clip_text``
========================  ===========================  ==============================================

The learned experts' factories import :mod:`~spatialvlm_ros.perception.hf` (and through it torch and
transformers) only when called, so importing this module loads no model library. A new expert
implements a protocol of :mod:`~spatialvlm_ros.perception.experts` and is registered at the bottom of
this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from spatialvlm_ros.config import ModelsConfig
from spatialvlm_ros.perception.experts import (
    DepthSource, Grounder, ImageFilter, ObjectsExpert, TextEmbedder,
)
from spatialvlm_ros.perception.grounding import ColourPromptGrounder, SimSegmentationGrounder
from spatialvlm_ros.perception.offline import CharNgramEmbedder, NoFilter, SensorDepth, SimOracle
from spatialvlm_ros.registry import Registry

if TYPE_CHECKING:
    from spatialvlm_ros.perception.hf import BoxSegmenter, OpenVocabDetector

E = TypeVar("E")

GROUNDERS: Registry[Callable[[ModelsConfig], Grounder]] = Registry("estimator.grounding")
DEPTH_SOURCES: Registry[Callable[[ModelsConfig], DepthSource]] = Registry("experts.depth")
FILTERS: Registry[Callable[[ModelsConfig], ImageFilter]] = Registry("experts.filter")
OBJECT_EXPERTS: Registry[Callable[[ModelsConfig], ObjectsExpert]] = Registry("experts.objects")
EMBEDDERS: Registry[Callable[[ModelsConfig], TextEmbedder]] = Registry("experts.embedder")


def _offline(expert: Callable[[], E]) -> Callable[[ModelsConfig], E]:
    """The factory of an expert that needs no model settings."""
    def factory(models: ModelsConfig) -> E:
        del models
        return expert()
    return factory


def _detector(models: ModelsConfig) -> "OpenVocabDetector":
    """The open-vocabulary detector of ``models.detector``."""
    from spatialvlm_ros.perception.hf import OpenVocabDetector
    section = models.detector
    return OpenVocabDetector.from_pretrained(section.checkpoint, **models.load_options(), threshold=section.threshold,
                                             nms_iou=section.nms_iou)


def _segmenter(models: ModelsConfig) -> "BoxSegmenter":
    """The box-prompted segmenter of ``models.segmenter``."""
    from spatialvlm_ros.perception.hf import BoxSegmenter
    return BoxSegmenter.from_pretrained(models.segmenter.checkpoint, **models.load_options())


def _open_vocab_grounder(models: ModelsConfig) -> Grounder:
    """``open_vocab``: the detector's best box for the phrase, segmented."""
    from spatialvlm_ros.perception.open_vocab import OpenVocabGrounder
    return OpenVocabGrounder(_detector(models), _segmenter(models))


def _monocular_depth(models: ModelsConfig) -> DepthSource:
    """``monocular``: metric depth of ``models.depth``, at the frame's intrinsics or the fallback field of view."""
    from spatialvlm_ros.perception.hf import MonocularDepth
    section = models.depth
    return MonocularDepth.from_pretrained(section.checkpoint, **models.load_options(),
                                          fallback_fovy_deg=section.fallback_fovy_deg,
                                          use_frame_intrinsics=section.intrinsics == "frame")


def _clip_filter(models: ModelsConfig) -> ImageFilter:
    """``clip``: CLIP zero-shot scene labels of ``models.clip`` (the paper's keep / drop labels)."""
    from spatialvlm_ros.perception.hf import ClipSceneFilter
    return ClipSceneFilter.from_pretrained(models.clip.checkpoint, **models.load_options())


def _open_vocab_objects(models: ModelsConfig) -> ObjectsExpert:
    """``open_vocab``: detector proposals (``models.detector`` queries), masks, captions (``models.captioner``)."""
    from spatialvlm_ros.perception.hf import RegionCaptioner
    from spatialvlm_ros.perception.open_vocab import OpenVocabObjects
    captioner = RegionCaptioner.from_pretrained(models.captioner.checkpoint, **models.load_options(),
                                                max_new_tokens=models.captioner.max_new_tokens)
    return OpenVocabObjects(_detector(models), _segmenter(models), captioner,
                            object_queries=models.detector.object_queries,
                            support_queries=models.detector.support_queries, max_objects=models.detector.max_objects)


def _clip_text_embedder(models: ModelsConfig) -> TextEmbedder:
    """``clip_text``: CLIP text-tower embeddings of ``models.clip``."""
    from spatialvlm_ros.perception.hf import ClipTextEmbedder
    return ClipTextEmbedder.from_pretrained(models.clip.checkpoint, **models.load_options())


GROUNDERS.register("colour_prompt")(_offline(ColourPromptGrounder))
GROUNDERS.register("sim_segmentation")(_offline(SimSegmentationGrounder))
GROUNDERS.register("open_vocab")(_open_vocab_grounder)

DEPTH_SOURCES.register("sensor")(_offline(SensorDepth))
DEPTH_SOURCES.register("monocular")(_monocular_depth)

FILTERS.register("none")(_offline(NoFilter))
FILTERS.register("clip")(_clip_filter)

OBJECT_EXPERTS.register("sim_oracle")(_offline(SimOracle))
OBJECT_EXPERTS.register("open_vocab")(_open_vocab_objects)

EMBEDDERS.register("char_ngram")(_offline(CharNgramEmbedder))
EMBEDDERS.register("clip_text")(_clip_text_embedder)
