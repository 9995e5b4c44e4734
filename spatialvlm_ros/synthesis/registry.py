"""The pluggable experts of the data engine: small ``Protocol`` interfaces, each with a registry by name.

``config.experts`` names one entry of each registry. What is registered in this package, and what
plugs in where (same interface, registered under a new name, chosen in ``config/synthesis.yaml``):

* :data:`FILTERS` (:class:`ImageFilter`): ``none`` keeps every image. A CLIP zero-shot filter plugs in
  here (the paper keeps "an iphone photo of an indoor/outdoor scene" and drops close-ups, products on
  white, artwork, screenshots, text): its ``keep`` labels the image and returns the verdict.
* :data:`OBJECT_EXPERTS` (:class:`ObjectsExpert`): ``sim_oracle`` returns the simulator's true masks,
  names and attributes with sampled captions, and the true tabletop mask. An open-vocabulary detector
  (OWLv2 / Grounding DINO) + NMS + SAM masks + a region captioner (1-6 words) plugs in here; its
  support mask comes from the same segmenter prompted with "floor" / "table".
* :data:`DEPTH_SOURCES` (:class:`DepthSource`): ``sensor`` returns the frame's registered depth. A
  metric monocular estimator (Depth Anything metric / ZoeDepth, plus a field-of-view estimate when the
  image has no intrinsics) plugs in here and returns depth and intrinsics.
* :data:`EMBEDDERS` (:class:`TextEmbedder`): ``char_ngram`` is a deterministic offline stand-in for
  CLIP text embeddings; the CLIP text tower plugs in here.

Factories take the :class:`~spatialvlm_ros.synthesis.config.SynthesisConfig` and return the expert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol

import numpy as np

from spatialvlm_ros.registry import Registry
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.synthesis.config import SynthesisConfig


@dataclass(frozen=True, eq=False)
class Sample:
    """One input image for the engine.

    Attributes:
        image_id: unique, filesystem-safe id (it names the output files and seeds the image's rng).
        frame: the camera frame (RGB, optional depth and intrinsics; segmentation and labels in simulation).
        support_mask: (H, W) bool true floor / tabletop pixels when the source knows them (simulation).
        attributes: per-label attributes the source knows (simulation: colour and kind of each label).
    """

    image_id: str
    frame: Frame
    support_mask: np.ndarray | None = None
    attributes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Detection:
    """One region found by an objects expert.

    Attributes:
        object_id: the expert's id for it.
        name: the expert's label.
        caption: region caption, 1-6 words, no article.
        mask: (H, W) bool pixels of the region.
        attributes: anything else the expert knows (colour, kind, ...).
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


@dataclass(frozen=True)
class FilterVerdict:
    """Keep or drop an image, with the label that decided it."""

    keep: bool
    label: str


class ImageFilter(Protocol):
    """Semantic image filter (paper step 1)."""

    def keep(self, sample: Sample) -> FilterVerdict:
        """Decide whether the image is a usable scene photo."""


class ObjectsExpert(Protocol):
    """Regions with masks and captions, plus the support surface (paper steps 2 and 4's segmentation)."""

    def detect(self, sample: Sample, rng: np.random.Generator) -> Detections:
        """Find the objects of ``sample``; ``rng`` drives any sampling (captions)."""


class DepthSource(Protocol):
    """Metric depth registered to the image (paper step 3)."""

    def depth(self, sample: Sample) -> tuple[np.ndarray, CameraIntrinsics]:
        """Return (H, W) float32 metres (0 / NaN = no reading) and the intrinsics it belongs to."""


class TextEmbedder(Protocol):
    """Caption embeddings for ambiguity removal (paper step 5)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return (N, D) L2-normalised embeddings of ``texts``."""


# Factories take the SynthesisConfig and return the expert.
FILTERS: Registry[Callable[[SynthesisConfig], ImageFilter]] = Registry("experts.filter")
OBJECT_EXPERTS: Registry[Callable[[SynthesisConfig], ObjectsExpert]] = Registry("experts.objects")
DEPTH_SOURCES: Registry[Callable[[SynthesisConfig], DepthSource]] = Registry("experts.depth")
EMBEDDERS: Registry[Callable[[SynthesisConfig], TextEmbedder]] = Registry("experts.embedder")

# The built-in experts register themselves on import; importing them here (after the registries
# exist) means every user of a registry sees them.
from spatialvlm_ros.synthesis import ambiguity, experts, hf_experts  # noqa: E402,F401
