"""The colour vocabulary of the colour-prompt grounder: everyday colour words as directions in CIELAB.

Shading scales a surface's colour towards black: in CIELAB, ``(L + 16, a, b)`` shrinks along a ray from
the origin. A colour word is therefore a *direction* (its hue and how saturated it is for its lightness),
and a pixel is compared with each word by the angle between its direction and the word's: the same
for the lit and the shaded side of an object. What direction cannot tell apart, lightness does, once per
object: white, silver, grey and black lie on one ray (the achromatic axis), and so, nearly, do orange
and brown; :func:`lightness_name` picks among them from an object's bright pixels.

Everything per pixel is a table look-up: a 64x64x64 RGB table (:func:`colour_table`, built once, 4.4 MB)
holds, for each quantised colour, the angle to every word (half-degrees, uint8) and the lightness; a
pixel's row is :func:`table_index` of its colour.

Vocabulary (:data:`VOCABULARY`): white, silver, grey (gray), black, brown, beige, pink, magenta, purple
(violet), red, orange, yellow, green, cyan, blue. The prototypes are the colours' usual sRGB looks,
checked against MuJoCo renders of every word under random light (``sim/colours.py`` PALETTE).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import cv2
import numpy as np

from spatialvlm_ros.errors import GroundingError

#: Words that mean the same colour.
SYNONYMS = {"gray": "grey", "violet": "purple"}

#: The achromatic words, by the lightness (CIELAB L of their lit side) that tells them apart.
ACHROMATIC_LIGHTNESS = {"white": 93.0, "silver": 76.0, "grey": 48.0, "black": 8.0}


@dataclass(frozen=True)
class ColourWord:
    """One colour of the vocabulary.

    Attributes:
        name: the word.
        hue_deg: CIELAB hue angle ``atan2(b, a)``, degrees (unused for achromatic words).
        saturation: chroma over ``L + 16``: how colourful it is for its lightness (0 = achromatic).
        lightness: CIELAB L of its lit side (tells apart words on one ray: orange / brown, white / black).
        on_support: found as an object standing on the support plane (depth) and then chosen by colour,
            because scenery (tables, walls, floors) shares its look: the achromatic words and beige.
    """

    name: str
    hue_deg: float
    saturation: float
    lightness: float
    on_support: bool = False

    @property
    def achromatic(self) -> bool:
        """White, silver, grey or black."""
        return self.name in ACHROMATIC_LIGHTNESS


VOCABULARY: tuple[ColourWord, ...] = (
    ColourWord("red", 36.0, 1.35, 48.0),
    ColourWord("orange", 58.0, 1.00, 65.0),
    ColourWord("brown", 60.0, 0.68, 35.0),
    ColourWord("yellow", 93.0, 0.83, 85.0),
    ColourWord("beige", 84.0, 0.27, 78.0, on_support=True),
    ColourWord("green", 138.0, 1.05, 55.0),
    ColourWord("cyan", -145.0, 0.45, 65.0),
    ColourWord("blue", -60.0, 1.80, 30.0),
    ColourWord("purple", -42.0, 1.60, 35.0),
    ColourWord("magenta", -18.0, 1.25, 50.0),
    ColourWord("pink", -4.0, 0.60, 68.0),
    *(ColourWord(name, 0.0, 0.0, lightness, on_support=True) for name, lightness in ACHROMATIC_LIGHTNESS.items()),
)
#: Colour word -> its index in :data:`VOCABULARY` (a column of the colour table).
INDEX = {word.name: i for i, word in enumerate(VOCABULARY)}
WORDS = {word.name: word for word in VOCABULARY}
#: The column of the colour table holding CIELAB L (0..100), and the one holding the angle to the
#: nearest word of the whole vocabulary.
LIGHTNESS_COLUMN = len(VOCABULARY)
NEAREST_COLUMN = len(VOCABULARY) + 1

#: Pixels whose brightest channel is below this (0..255) are too dark to show a hue: only the
#: achromatic axis (black) matches them.
MIN_CHROMATIC_VALUE = 35
#: A pixel matches a chromatic word only if it is at least this fraction as saturated (chroma over
#: ``L + 16``) as the word: 99.5% of the inner pixels of the simulator's objects are, after JPEG.
MIN_SATURATION_FRACTION = 0.55
# Quantisation of the table: 6 bits per channel.
_BITS = 6
_SHIFT = 8 - _BITS
_WORD_RE = re.compile(r"[a-z]+")


def _directions(lab: np.ndarray) -> np.ndarray:
    """Unit (N, 3) directions of CIELAB ``(L + 16, a, b)`` rows (float, L in 0..100)."""
    v = np.column_stack([lab[:, 0] + 16.0, lab[:, 1], lab[:, 2]])
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)


def _word_directions() -> np.ndarray:
    """(K, 3) unit direction of each word of :data:`VOCABULARY` (achromatic: the L axis)."""
    rows = []
    for word in VOCABULARY:
        h = np.deg2rad(word.hue_deg)
        rows.append([1.0, word.saturation * np.cos(h), word.saturation * np.sin(h)])
    rows = np.asarray(rows)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (..., 3) float32 of sRGB uint8 pixels: L in 0..100, a and b around 0 (cv2.cvtColor).

    Example:
        >>> to_lab(np.array([[[255, 255, 255]]], np.uint8)).round(0).tolist()
        [[[100.0, 0.0, 0.0]]]
    """
    lab = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2Lab)
    lab = lab.reshape(rgb.shape).astype(np.float32)
    lab[..., 0] *= 100.0 / 255.0
    lab[..., 1:] -= 128.0
    return lab


#: Colours per block while :func:`colour_table` is built: its float64 intermediates are (block, K) arrays, so
#: building peaks at about 6 MB instead of 117 MB for all 64**3 colours at once (a node's RSS after configure
#: was 85 MB higher, now 12 MB; some of such a peak stays with the allocator after it is freed).
_BLOCK = 4096


@functools.cache
def colour_table(min_value: int = MIN_CHROMATIC_VALUE, min_saturation: int = 0) -> np.ndarray:
    """(K + 2, 64**3) uint8: per quantised RGB, the angle to each word in half-degrees, L, the nearest angle.

    One row per word (in :data:`VOCABULARY` order), then :data:`LIGHTNESS_COLUMN` (CIELAB L, 0..100) and
    :data:`NEAREST_COLUMN` (the angle to the nearest word); one column per colour, :func:`table_index`.
    Stored row by row, so looking up one quantity for many pixels is one contiguous ``take``. Built once
    per setting (about 0.3 s, :data:`_BLOCK` colours at a time) and shared.

    Args:
        min_value: colours whose brightest channel (0..255) is below this match only the achromatic
            words (too dark to show a hue).
        min_saturation: colours whose HSV saturation (0..255) is below this match only the achromatic words.
    """
    words = _word_directions()
    n = 1 << (3 * _BITS)
    table = np.empty((len(VOCABULARY) + 2, n), np.uint8)
    mask = (1 << _BITS) - 1
    for start in range(0, n, _BLOCK):
        index = np.arange(start, min(start + _BLOCK, n))
        # The colour at the middle of each quantisation cell, the inverse of table_index.
        q = np.stack([index >> (2 * _BITS), (index >> _BITS) & mask, index & mask], axis=-1)
        rgb = ((q << _SHIFT) + (1 << _SHIFT) // 2).astype(np.uint8)
        table[:, start:start + len(index)] = _table_columns(rgb, words, min_value, min_saturation)
    return table


def _table_columns(rgb: np.ndarray, words: np.ndarray, min_value: int, min_saturation: int) -> np.ndarray:
    """The :func:`colour_table` columns of (N, 3) uint8 colours, given the words' unit directions."""
    lab = to_lab(rgb).astype(np.float64)
    cos = np.clip(_directions(lab) @ words.T, -1.0, 1.0)
    angles = np.minimum(np.degrees(np.arccos(cos)) * 2.0, 255.0)
    top = rgb.max(axis=1).astype(np.int32)
    saturation = (top - rgb.min(axis=1)) * 255 // np.maximum(top, 1)
    dark = (top < min_value) | (saturation < min_saturation)
    # A colour far less saturated than a word is not that word, whatever its hue: JPEG's chroma bleeds a
    # little of an object's hue into the dark or grey rim around it.
    ratio = np.hypot(lab[:, 1], lab[:, 2]) / (lab[:, 0] + 16.0)
    for k, word in enumerate(VOCABULARY):
        if word.saturation > 0:
            angles[ratio < MIN_SATURATION_FRACTION * word.saturation, k] = 255.0
    angles[dark] = 255.0
    angles[dark, INDEX["white"]:LIGHTNESS_COLUMN] = 0.0
    columns = np.empty((len(VOCABULARY) + 2, len(rgb)), np.uint8)
    columns[:LIGHTNESS_COLUMN] = np.round(angles).T
    columns[LIGHTNESS_COLUMN] = np.round(np.clip(lab[:, 0], 0, 100))
    columns[NEAREST_COLUMN] = columns[:LIGHTNESS_COLUMN].min(axis=0)
    return columns


def table_index(rgb: np.ndarray) -> np.ndarray:
    """Row of :func:`colour_table` of each pixel of an (..., 3) uint8 RGB array, as (...) int32."""
    q = (rgb >> _SHIFT).astype(np.int32)
    return (q[..., 0] << (2 * _BITS)) | (q[..., 1] << _BITS) | q[..., 2]


def canonical(word: str) -> str:
    """The vocabulary's spelling of a colour word (``gray`` -> ``grey``)."""
    return SYNONYMS.get(word, word)


def parse_colour(phrase: str) -> str:
    """The one colour word in ``phrase``, in the vocabulary's spelling.

    Raises:
        GroundingError: no known colour word, or two different ones.

    Example:
        >>> parse_colour("the Yellow gripper"), parse_colour("a gray mug")
        ('yellow', 'grey')
        >>> parse_colour("gripper")
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.GroundingError: colour_prompt cannot ground 'gripper': name a colour ...
    """
    colours = sorted({canonical(w) for w in _WORD_RE.findall(phrase.lower()) if canonical(w) in INDEX})
    if not colours:
        raise GroundingError(f"colour_prompt cannot ground {phrase!r}: name a colour "
                             f"({', '.join(INDEX)}), e.g. 'yellow gripper'")
    if len(colours) > 1:
        raise GroundingError(f"colour_prompt cannot ground {phrase!r}: it names several colours {colours}")
    return colours[0]


#: Words that direction alone cannot tell apart (one ray, or nearly): a pixel matches the family, and
#: :func:`lightness_name` names each object of it.
FAMILIES: tuple[tuple[str, ...], ...] = (tuple(ACHROMATIC_LIGHTNESS), ("orange", "brown"))


def family(name: str) -> tuple[str, ...]:
    """The words ``name`` shares pixels with (itself alone for most words).

    Example:
        >>> family("brown"), family("red")
        (('orange', 'brown'), ('red',))
    """
    for members in FAMILIES:
        if name in members:
            return members
    return (name,)


def classify(table: np.ndarray, index: np.ndarray, groups: list[tuple[str, ...]], *, margin_deg: float,
             max_angle_deg: float) -> np.ndarray:
    """Which group of named colours each pixel belongs to: (N,) int8 index into ``groups``, -1 for none.

    A pixel goes to the nearest group (a group's angle is its nearest word's), so the named colours
    compete: orange and yellow split. It stays out unless that group is also within ``margin_deg`` of
    the nearest word of the whole vocabulary (so an unnamed colour's pixels stay out) and within
    ``max_angle_deg`` of the pixel.

    Args:
        table: :func:`colour_table`.
        index: (N,) :func:`table_index` of the pixels.
        groups: the named colours' families (:func:`family`), one per class.
        margin_deg: how much farther than the vocabulary's nearest word a named group may be.
        max_angle_deg: farthest a pixel may be from its group.

    Example:
        >>> pixels = np.array([[240, 120, 20], [240, 210, 20], [90, 90, 90]], np.uint8)
        >>> classify(colour_table(), table_index(pixels), [("yellow",), family("orange")], margin_deg=6.0,
        ...          max_angle_deg=20.0).tolist()
        [1, 0, -1]
    """
    best = np.zeros(len(index), np.int8)
    nearest: np.ndarray | None = None
    for k, group in enumerate(groups):
        angle = table[INDEX[group[0]]].take(index)
        for name in group[1:]:
            np.minimum(angle, table[INDEX[name]].take(index), out=angle)
        if nearest is None:
            nearest = angle
        else:
            best[angle < nearest] = k
            np.minimum(nearest, angle, out=nearest)
    assert nearest is not None
    limit = np.minimum(table[NEAREST_COLUMN].take(index).astype(np.int16) + int(round(2 * margin_deg)),
                       int(round(2 * max_angle_deg)))
    best[nearest > limit] = -1
    return best


def lightness_of(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(N,) uint8 CIELAB L (0..100) of pixels given by their :func:`table_index`."""
    return table[LIGHTNESS_COLUMN].take(index)


#: The percentile of an object's pixels' CIELAB L that stands for its lightness: its lit side, past
#: its shaded side and most specular highlights.
LIGHTNESS_PERCENTILE = 90.0


def object_lightness(lightness: np.ndarray) -> float:
    """An object's lightness from its pixels' CIELAB L (:data:`LIGHTNESS_PERCENTILE`)."""
    return float(np.percentile(lightness, LIGHTNESS_PERCENTILE))


def lightness_name(lightness: np.ndarray, family: tuple[str, ...], named: set[str], *,
                   margin: float = 20.0) -> str:
    """Which word of a one-ray ``family`` (e.g. the achromatic words) an object is, from its pixels' L.

    The word whose lightness is nearest the object's (:func:`object_lightness`) wins, where an unnamed
    word must be nearer by ``margin`` than a named one to win: white and silver, 17 apart, are told
    apart only when both are named.

    Example:
        >>> lightness_name(np.array([90.0, 95.0, 60.0]), ("white", "silver", "grey", "black"), {"white"})
        'white'
        >>> lightness_name(np.array([40.0, 50.0, 30.0]), ("white", "silver", "grey", "black"), {"white"})
        'grey'
    """
    level = object_lightness(lightness)
    cost = {name: abs(WORDS[name].lightness - level) - (margin if name in named else 0.0) for name in family}
    return min(cost, key=cost.__getitem__)
