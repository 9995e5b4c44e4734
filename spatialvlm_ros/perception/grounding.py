"""The offline grounders: a text phrase ("the red can") -> a boolean pixel mask of that object.

Both implement :class:`~spatialvlm_ros.perception.experts.Grounder` and are registered by name in
:mod:`~spatialvlm_ros.perception.registry` (``estimator.grounding``): ``sim_segmentation`` (simulator
object ids) and ``colour_prompt`` (HSV thresholds). The learned one, ``open_vocab``, is in
:mod:`~spatialvlm_ros.perception.open_vocab`.
"""

from __future__ import annotations

import re
import weakref
from typing import Mapping

import cv2
import numpy as np

from spatialvlm_ros.errors import ConfigError, GroundingError
from spatialvlm_ros.frame import Frame

_ARTICLES = ("the ", "a ", "an ")


def _normalise(text: str) -> str:
    text = " ".join(text.lower().split())
    for article in _ARTICLES:
        if text.startswith(article):
            return text[len(article):]
    return text


class SimSegmentationGrounder:
    """Masks from a simulator's segmentation image, looked up by object name in ``frame.labels``.

    The phrase matches a label exactly, else case- and article-insensitively ("The Red Can"), else by
    its last word when exactly one label ends with it ("can" -> "red can").

    Example:
        >>> from spatialvlm_ros.frame import Frame
        >>> from spatialvlm_ros.geometry.camera import CameraIntrinsics
        >>> seg = np.array([[-1, 3], [3, 7]], dtype=np.int32)
        >>> frame = Frame(rgb=np.zeros((2, 2, 3), np.uint8), segmentation=seg, labels={"red can": 3},
        ...               intrinsics=CameraIntrinsics(fx=1.0, fy=1.0, cx=0.5, cy=0.5, width=2, height=2))
        >>> SimSegmentationGrounder().ground(frame, "the can")
        array([[False,  True],
               [ True, False]])
    """

    name = "sim_segmentation"

    def ground(self, frame: Frame, phrase: str) -> np.ndarray:
        """See :meth:`~spatialvlm_ros.perception.experts.Grounder.ground`."""
        if frame.segmentation is None:
            raise GroundingError(f"sim_segmentation cannot ground {phrase!r}: the frame has no segmentation "
                                 "image (not from a simulator); use grounding 'colour_prompt' on a robot")
        return frame.segmentation == self._lookup(frame.labels, phrase)

    @staticmethod
    def _lookup(labels: Mapping[str, int], phrase: str) -> int:
        if phrase in labels:
            return labels[phrase]
        wanted = _normalise(phrase)
        by_name = {_normalise(name): obj_id for name, obj_id in labels.items()}
        if wanted in by_name:
            return by_name[wanted]
        last = wanted.rsplit(" ", 1)[-1]
        hits = [name for name in by_name if name.rsplit(" ", 1)[-1] == last]
        if len(hits) == 1:
            return by_name[hits[0]]
        if hits:
            raise GroundingError(f"{phrase!r} is ambiguous: it could be any of {sorted(hits)}")
        raise GroundingError(f"no object called {phrase!r} in the scene; known: {sorted(labels)}")


# OpenCV hue is degrees / 2 (0..179); red wraps around 0, hence two ranges.
HUE_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "red": ((0, 8), (170, 179)),
    "orange": ((9, 20),),
    "yellow": ((21, 34),),
    "green": ((35, 85),),
    "cyan": ((86, 100),),
    "blue": ((101, 130),),
    "purple": ((131, 150),),
    "pink": ((151, 169),),
}
_COLOURS = tuple(HUE_RANGES)


def _hue_to_class() -> np.ndarray:
    """Build the cv2.LUT table mapping an OpenCV hue to 1 + the index of its colour in ``_COLOURS``."""
    lut = np.zeros(256, np.uint8)
    for i, colour in enumerate(_COLOURS):
        for lo, hi in HUE_RANGES[colour]:
            lut[lo:hi + 1] = i + 1
    return lut


# The hue ranges do not overlap, so one class image per frame serves every phrase.
_HUE_TO_CLASS = _hue_to_class()
_WORD = re.compile(r"[a-z]+")


def parse_colour(phrase: str) -> str:
    """The one colour word in ``phrase``.

    Raises:
        GroundingError: no known colour word, or two different ones.

    Example:
        >>> parse_colour("the Yellow gripper")
        'yellow'
        >>> parse_colour("gripper")
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.GroundingError: colour_prompt cannot ground 'gripper': name a colour ...
    """
    colours = sorted({w for w in _WORD.findall(phrase.lower()) if w in HUE_RANGES})
    if not colours:
        raise GroundingError(f"colour_prompt cannot ground {phrase!r}: name a colour "
                             f"({', '.join(HUE_RANGES)}), e.g. 'yellow gripper'")
    if len(colours) > 1:
        raise GroundingError(f"colour_prompt cannot ground {phrase!r}: it names several colours {colours}")
    return colours[0]


class ColourPromptGrounder:
    """Masks by colour: HSV threshold, morphological open, then the dominant connected component(s).

    Components of at least ``keep_ratio`` times the largest one's area are kept, so an object split in
    two by an occluder (the gripper in front of the can) stays whole. Two objects of the same colour
    cannot be told apart: name a colour that is unique in the scene.

    Args:
        min_saturation: pixels greyer than this (0..255) are never a colour.
        min_value: pixels darker than this (0..255) are never a colour (shadows).
        keep_ratio: keep components at least this fraction of the largest one.
        min_area_px: drop components smaller than this.

    Example:
        >>> from spatialvlm_ros.frame import Frame
        >>> from spatialvlm_ros.geometry.camera import CameraIntrinsics
        >>> rgb = np.zeros((40, 40, 3), np.uint8); rgb[10:20, 5:15] = (250, 20, 10)
        >>> frame = Frame(rgb=rgb, intrinsics=CameraIntrinsics.from_fov(40, 40, 60.0))
        >>> int(ColourPromptGrounder().ground(frame, "red can").sum())
        100
    """

    name = "colour_prompt"

    def __init__(self, *, min_saturation: int = 80, min_value: int = 50, keep_ratio: float = 0.25,
                 min_area_px: int = 10) -> None:
        if not (0 <= min_saturation <= 255 and 0 <= min_value <= 255):
            raise ConfigError("colour_prompt: min_saturation and min_value must be in 0..255")
        if not 0 < keep_ratio <= 1:
            raise ConfigError("colour_prompt: keep_ratio must be in (0, 1]")
        self.min_saturation = min_saturation
        self.min_value = min_value
        self.keep_ratio = keep_ratio
        self.min_area_px = min_area_px
        self._kernel = np.ones((3, 3), np.uint8)
        # Colour classes of the last frame: the estimator grounds two or more phrases per frame.
        self._class_cache: tuple[weakref.ref, np.ndarray] | None = None

    def _colour_classes(self, frame: Frame) -> np.ndarray:
        """(H, W) uint8: 1 + index in ``_COLOURS`` per pixel, 0 where too grey or dark."""
        cache = self._class_cache
        if cache is not None and cache[0]() is frame:
            return cache[1]
        hsv = cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2HSV)
        vivid = cv2.inRange(hsv, (0, self.min_saturation, self.min_value), (255, 255, 255))
        classes = cv2.bitwise_and(cv2.LUT(cv2.extractChannel(hsv, 0), _HUE_TO_CLASS), vivid)
        self._class_cache = (weakref.ref(frame), classes)
        return classes

    def ground(self, frame: Frame, phrase: str) -> np.ndarray:
        """See :meth:`~spatialvlm_ros.perception.experts.Grounder.ground`."""
        colour_class = _COLOURS.index(parse_colour(phrase)) + 1
        binary = cv2.compare(self._colour_classes(frame), colour_class, cv2.CMP_EQ)
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, self._kernel)
        mask = np.zeros(binary.shape, bool)
        # Label only the bounding box of what survived: labelling the full image costs ~10x more.
        x, y, w, h = cv2.boundingRect(binary)
        if w == 0:
            return mask
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary[y:y + h, x:x + w], connectivity=8)
        areas = stats[1:n, cv2.CC_STAT_AREA]
        keep = np.zeros(n, bool)
        keep[1:] = areas >= max(self.min_area_px, self.keep_ratio * areas.max())
        mask[y:y + h, x:x + w] = keep[labels]
        return mask
