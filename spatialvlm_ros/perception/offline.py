"""The offline experts: no model weights, deterministic, the defaults of the data engine.

* :class:`NoFilter` (filter ``none``) keeps every image;
* :class:`SimOracle` (objects ``sim_oracle``) stands in for detector + segmenter + captioner on simulated
  frames: the true masks (segmentation ids) and names, and captions of varying length and detail drawn
  from :data:`CAPTION_WORDS` with the image's seeded generator ("can", "red can", "small red soda can"),
  as a region captioner would vary them; its support mask is the source's true tabletop mask;
* :class:`SensorDepth` (depth ``sensor``) returns the frame's registered depth;
* :class:`CharNgramEmbedder` (embedder ``char_ngram``) stands in for CLIP text embeddings.

They are registered by name in :mod:`~spatialvlm_ros.perception.registry`.
"""

from __future__ import annotations

import zlib

import numpy as np

from spatialvlm_ros.errors import InputError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.perception.experts import (
    DepthPrediction, Detection, Detections, FilterVerdict, Sample,
)

#: Caption vocabulary per object kind: head nouns (with synonyms) and size words.
CAPTION_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "can": {"nouns": ("can", "soda can", "tin can", "drink can"), "sizes": ("small", "little")},
    "box": {"nouns": ("box", "block", "toy block"), "sizes": ("small", "compact")},
    "ball": {"nouns": ("ball", "sphere"), "sizes": ("small", "little")},
    "bowl": {"nouns": ("bowl", "dish"), "sizes": ("wide", "shallow")},
    "mug": {"nouns": ("mug", "cup", "coffee mug"), "sizes": ("small", "little")},
    "bottle": {"nouns": ("bottle", "water bottle"), "sizes": ("tall", "slim")},
    "cone": {"nouns": ("cone", "toy cone"), "sizes": ("small", "pointed")},
    "wedge": {"nouns": ("wedge", "ramp"), "sizes": ("small", "low")},
    "gripper": {"nouns": ("gripper", "robot gripper", "robotic gripper"), "sizes": ()},
}
#: Everyday nouns the captions never use, read as a kind's noun by models that learned only the captions' words
#: (the compact VLM's tokenizer). Kept apart from :data:`CAPTION_WORDS` so that the data engine's captions, and the
#: data every shipped model was trained on, stay as they were.
NOUN_SYNONYMS: dict[str, str] = {"cube": "box", "cuboid": "box", "cylinder": "can",
                                 "hand": "gripper", "effector": "gripper"}   # a robot hand, an end effector
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

    def keep(self, frame: Frame) -> FilterVerdict:
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
            raise InputError("objects expert sim_oracle needs simulator frames; use experts.objects: open_vocab")
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

    def depth(self, frame: Frame) -> DepthPrediction:
        """The frame's registered depth, metres, at the frame's intrinsics.

        Raises:
            InputError: the frame has no depth.
        """
        if frame.depth_m is None:
            raise InputError("no depth image; the 'sensor' depth source needs RGB-D input")
        return DepthPrediction(depth_m=frame.depth_m, intrinsics=frame.intrinsics)


class CharNgramEmbedder:
    """Hashed character n-gram count vectors: deterministic, offline, no model weights.

    Each word of a caption (lower-cased, padded with one space each side) is cut into character
    n-grams, hashed with CRC-32 into ``dim`` buckets and counted, the head noun (last word) with weight
    ``head_weight``: two captions are confusable when they name the same kind of thing. Plain counts,
    not TF-IDF: an IDF over one image's few captions would down-weight exactly that shared head noun.

    With the defaults and the 0.75 threshold, captions with the same head noun collide ("can" /
    "red can": 0.89, "box" / "white box": 0.84, "red can" / "blue can": 0.77) and different heads do
    not ("small red can" / "small red ball": 0.47, "blue can" / "blue box": 0.25). Like CLIP's text
    tower it is weak on colour; that errs on the safe side: a pair gets a position clause, a larger
    group is dropped, and no answer becomes wrong.

    Example:
        >>> emb = CharNgramEmbedder().embed(["can", "red can", "small red ball"])
        >>> round(float(emb[0] @ emb[1]), 2), round(float(emb[1] @ emb[2]), 2)
        (0.89, 0.14)
    """

    def __init__(self, n: int = 3, dim: int = 4096, head_weight: float = 2.0) -> None:
        self.n = n
        self.dim = dim
        self.head_weight = head_weight

    def _counts(self, text: str) -> np.ndarray:
        out = np.zeros(self.dim)
        words = text.lower().split()
        for k, word in enumerate(words):
            padded = f" {word} "
            buckets = [zlib.crc32(padded[i:i + self.n].encode()) % self.dim
                       for i in range(max(1, len(padded) - self.n + 1))]
            np.add.at(out, buckets, self.head_weight if k == len(words) - 1 else 1.0)
        return out

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return (N, dim) L2-normalised n-gram count vectors of ``texts``."""
        if not texts:
            return np.zeros((0, self.dim))
        vectors = np.stack([self._counts(t) for t in texts])
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
