"""The offline experts registered by default: no filter, the simulator oracle, sensor depth.

The oracle stands in for detector + segmenter + captioner on simulated frames: it returns the true
masks (segmentation ids) and names, and captions of varying length and detail drawn from
:data:`CAPTION_WORDS` with the image's seeded generator ("can", "red can", "small red soda can"), as a
region captioner would vary them. Its support mask is the source's true tabletop mask.
"""

from __future__ import annotations

import numpy as np

from spatialvlm_ros.errors import InputError
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.synthesis.config import SynthesisConfig
from spatialvlm_ros.synthesis.registry import (DEPTH_SOURCES, FILTERS, OBJECT_EXPERTS, DepthSource, Detection,
                                               Detections, FilterVerdict, ImageFilter, ObjectsExpert, Sample)

#: Caption vocabulary per object kind: head nouns (with synonyms) and size words.
CAPTION_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "can": {"nouns": ("can", "soda can", "tin can", "drink can"), "sizes": ("small", "little")},
    "box": {"nouns": ("box", "block", "toy block"), "sizes": ("small", "compact")},
    "ball": {"nouns": ("ball", "sphere"), "sizes": ("small", "little")},
    "bowl": {"nouns": ("bowl", "dish"), "sizes": ("wide", "shallow")},
    "gripper": {"nouns": ("gripper", "robot gripper", "robotic gripper"), "sizes": ()},
}
#: Chance that a caption carries the colour word, and a size word.
COLOUR_PROBABILITY = 0.6
SIZE_PROBABILITY = 0.3


def sample_caption(colour: str, kind: str, rng: np.random.Generator) -> str:
    """A region caption for a ``<colour> <kind>`` object, 1-4 words.

    Example:
        >>> sorted({sample_caption("red", "can", np.random.default_rng(s)) for s in range(40)})[:4]
        ['drink can', 'little can', 'little red can', 'little red drink can']
    """
    words = CAPTION_WORDS.get(kind, {"nouns": (kind,), "sizes": ()})
    noun = words["nouns"][int(rng.integers(len(words["nouns"])))]
    colour_word = colour if rng.random() < COLOUR_PROBABILITY else ""
    size_word = (words["sizes"][int(rng.integers(len(words["sizes"])))]
                 if words["sizes"] and rng.random() < SIZE_PROBABILITY and not noun.startswith("small") else "")
    return " ".join(w for w in (size_word, colour_word, noun) if w)


class NoFilter:
    """Keeps every image."""

    def keep(self, sample: Sample) -> FilterVerdict:
        """Always keep."""
        return FilterVerdict(keep=True, label="unfiltered")


class SimOracle:
    """True masks, names and attributes from a simulator frame, with sampled captions.

    Raises:
        InputError: (from :meth:`detect`) the frame has no segmentation, i.e. it is not simulated.
    """

    def detect(self, sample: Sample, rng: np.random.Generator) -> Detections:
        """One detection per labelled object visible in the frame, plus the true support mask."""
        frame = sample.frame
        if frame.segmentation is None:
            raise InputError(f"{sample.image_id}: objects expert sim_oracle needs simulator frames; "
                             "use experts.objects: open_vocab")
        present = set(np.unique(frame.segmentation).tolist())
        detections = []
        for name, label in sorted(frame.labels.items(), key=lambda kv: kv[1]):
            if label not in present:
                continue
            attributes = dict(sample.attributes.get(name, {}))
            colour, _, kind = name.partition(" ")
            attributes.setdefault("colour", colour)
            attributes.setdefault("kind", kind)
            detections.append(Detection(object_id=label, name=name, mask=frame.segmentation == label,
                                        caption=sample_caption(attributes["colour"], attributes["kind"], rng),
                                        attributes=attributes))
        return Detections(objects=tuple(detections), support_mask=sample.support_mask)


class SensorDepth:
    """The depth image that came with the frame (a depth camera or the simulator)."""

    def depth(self, sample: Sample) -> tuple[np.ndarray, CameraIntrinsics]:
        """The frame's registered depth, metres.

        Raises:
            InputError: the frame has no depth.
        """
        if sample.frame.depth_m is None:
            raise InputError(f"{sample.image_id}: no depth image; the 'sensor' depth source needs RGB-D input")
        return sample.frame.depth_m, sample.frame.intrinsics


@FILTERS.register("none")
def _no_filter(cfg: SynthesisConfig) -> ImageFilter:
    return NoFilter()


@OBJECT_EXPERTS.register("sim_oracle")
def _sim_oracle(cfg: SynthesisConfig) -> ObjectsExpert:
    return SimOracle()


@DEPTH_SOURCES.register("sensor")
def _sensor_depth(cfg: SynthesisConfig) -> DepthSource:
    return SensorDepth()
