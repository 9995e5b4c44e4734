"""What every perception expert implements: one small ``Protocol`` per job, and the records they pass.

Images are (H, W, 3) uint8 RGB, boxes are ``x0, y0, x1, y1`` pixels of that image, masks are (H, W) bool,
depth is metres along the optical axis. The jobs:

* model building blocks: :class:`Detector` (text queries -> boxes), :class:`Segmenter` (boxes -> masks),
  :class:`Captioner` (boxes -> short captions);
* what configs choose by name (:mod:`~spatialvlm_ros.perception.registry`): :class:`Grounder` (phrase ->
  mask; the geometric estimator), :class:`DepthSource` (frame -> metric depth; the estimator and the data
  engine), :class:`ImageFilter`, :class:`ObjectsExpert` and :class:`TextEmbedder` (the data engine).

This module holds no implementation and imports no model library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

import numpy as np

from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics

# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExactDistances:
    """What a simulator knows exactly about its gripper: the distances a reach reward measures.

    Attributes:
        gripper: the gripper's label.
        gap_m: object label -> closest surface-to-surface distance from the gripper, metres.
        centre_m: object label -> grasp point to object centre, metres.
    """

    gripper: str
    gap_m: Mapping[str, float]
    centre_m: Mapping[str, float]


@dataclass(frozen=True, eq=False)
class Sample:
    """One input image with what its source knows about it (the data engine's unit of work).

    Attributes:
        image_id: unique, filesystem-safe id (it names the output files and seeds the image's rng).
        frame: the camera frame (RGB, optional depth and intrinsics; segmentation and labels in simulation).
        support_mask: (H, W) bool true floor / tabletop pixels when the source knows them (simulation).
        attributes: per-label attributes the source knows (simulation: colour and kind of each label).
        exact: the simulator's exact gripper-to-object distances, when the source knows them.
    """

    image_id: str
    frame: Frame
    support_mask: np.ndarray | None = None
    attributes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    exact: ExactDistances | None = None


@dataclass(frozen=True, eq=False)
class BoxDetections:
    """Open-vocabulary detections of one image, best first.

    Attributes:
        boxes: (N, 4) float32 ``x0, y0, x1, y1`` pixels, clipped to the image.
        scores: (N,) float32 in [0, 1].
        labels: (N,) int64 index into ``queries`` of the query each box matched best.
        queries: the text queries, in the order the detector saw them.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    queries: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, index: np.ndarray) -> "BoxDetections":
        """The detections at ``index`` (an int index array or a boolean mask), in that order."""
        return BoxDetections(boxes=self.boxes[index], scores=self.scores[index], labels=self.labels[index],
                             queries=self.queries)


@dataclass(frozen=True, eq=False)
class BoxMasks:
    """Masks of box prompts, one per box, in the order of the boxes.

    Attributes:
        masks: (N, H, W) bool at the image size.
        scores: (N,) float32 the segmenter's confidence in each mask (SAM: its predicted IoU).
    """

    masks: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class RegionCaptions:
    """Captions of box crops, in the order of the boxes.

    Attributes:
        captions: cleaned, 0-6 words each, no article (empty when the model said nothing usable).
        raw: what the model generated.
    """

    captions: tuple[str, ...]
    raw: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class DepthPrediction:
    """Metric depth registered to a frame's image.

    Attributes:
        depth_m: (H, W) float32 metres along the optical axis (z); 0 or NaN = no reading.
        intrinsics: the camera the depth belongs to.
        fov_assumed: True when ``intrinsics`` come from an assumed field of view, not from the camera.
    """

    depth_m: np.ndarray
    intrinsics: CameraIntrinsics
    fov_assumed: bool = False


@dataclass(frozen=True)
class FilterVerdict:
    """Keep or drop an image, with the label that decided it."""

    keep: bool
    label: str


@dataclass(frozen=True, eq=False)
class Detection:
    """One region found by an objects expert.

    Attributes:
        object_id: the expert's id for it.
        name: the expert's label.
        caption: region caption, 1-6 words, no article.
        mask: (H, W) bool pixels of the region.
        attributes: anything else the expert knows (colour, kind, score, ...).
    """

    object_id: int
    name: str
    caption: str
    mask: np.ndarray
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Detections:
    """What an objects expert returns for an image.

    Attributes:
        objects: the regions, background ones included (ambiguity removal drops those by caption).
        support_mask: (H, W) bool floor / tabletop pixels for the canonical frame; None if unknown.
    """

    objects: tuple[Detection, ...]
    support_mask: np.ndarray | None


# ---------------------------------------------------------------------------------------------
# Model building blocks
# ---------------------------------------------------------------------------------------------


class Detector(Protocol):
    """Text queries -> scored boxes (open-vocabulary detection)."""

    def detect(self, image: np.ndarray, queries: Sequence[str], groups: Sequence[int] | None = None) -> BoxDetections:
        """Boxes of ``queries`` in ``image`` above the detector's threshold, after NMS, best first.

        ``groups`` gives each query an NMS group: boxes of different groups never suppress each other
        (None: one group, class-agnostic).

        Raises:
            InputError: bad image, no queries, or ``groups`` of the wrong length.
        """
        ...


class Segmenter(Protocol):
    """Box prompts -> one mask each."""

    def segment(self, image: np.ndarray, boxes: np.ndarray) -> BoxMasks:
        """One mask per (N, 4) box; no boxes, no masks.

        Raises:
            InputError: bad image or boxes not (N, 4).
        """
        ...


class Captioner(Protocol):
    """Box crops -> short region captions."""

    def caption(self, image: np.ndarray, boxes: np.ndarray) -> RegionCaptions:
        """One caption per (N, 4) box.

        Raises:
            InputError: bad image or boxes not (N, 4).
        """
        ...


# ---------------------------------------------------------------------------------------------
# Jobs chosen by name in a config
# ---------------------------------------------------------------------------------------------


class Grounder(Protocol):
    """Turns a phrase into the mask of the object it names (``estimator.grounding``)."""

    name: str

    def ground(self, frame: Frame, phrase: str) -> np.ndarray:
        """(H, W) bool mask of ``phrase`` in ``frame``; all False when the object is not visible.

        Raises:
            GroundingError: this grounder cannot interpret ``phrase``.
        """
        ...


class DepthSource(Protocol):
    """Metric depth registered to a frame's image (``experts.depth``; ``estimator.monocular_depth``)."""

    def depth(self, frame: Frame) -> DepthPrediction:
        """Depth of ``frame`` and the intrinsics it belongs to.

        Raises:
            InputError: this source cannot give depth for ``frame``.
        """
        ...


class ImageFilter(Protocol):
    """Semantic image filter (``experts.filter``; SpatialVLM step 1)."""

    def keep(self, frame: Frame) -> FilterVerdict:
        """Decide whether the image is a usable scene photo."""
        ...


class ObjectsExpert(Protocol):
    """Regions with masks, names and captions, plus the support surface (``experts.objects``; steps 2 and 4)."""

    def detect(self, sample: Sample, rng: np.random.Generator) -> Detections:
        """Find the objects of ``sample``; ``rng`` drives any sampling (captions).

        Raises:
            InputError: this expert cannot use ``sample``.
        """
        ...


class TextEmbedder(Protocol):
    """Caption embeddings for ambiguity removal (``experts.embedder``; step 5)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        """(N, D) L2-normalised embeddings of ``texts``."""
        ...
