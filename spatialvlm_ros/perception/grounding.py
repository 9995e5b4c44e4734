"""The offline grounders: a text phrase ("the red can") -> a boolean pixel mask of that object.

Both implement :class:`~spatialvlm_ros.perception.experts.Grounder` and are registered by name in
:mod:`~spatialvlm_ros.perception.registry` (``estimator.grounding``): ``sim_segmentation`` (simulator
object ids) and ``colour_prompt`` (everyday colour words in CIELAB, :mod:`~spatialvlm_ros.perception.colours`).
The learned one, ``open_vocab``, is in :mod:`~spatialvlm_ros.perception.open_vocab`.
"""

from __future__ import annotations

import weakref
from typing import Iterable, Mapping

import cv2
import numpy as np

from spatialvlm_ros.errors import ConfigError, GroundingError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.support import SupportSurface, support_of
from spatialvlm_ros.perception import colours
from spatialvlm_ros.perception.colours import parse_colour

__all__ = ["ColourPromptGrounder", "SimSegmentationGrounder", "parse_colour"]

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


_UNSET = object()
# Of the objects a family word names, those within this lightness (CIELAB L) of the best match are kept
# (the parts of one object split by an occluder).
_LIGHTNESS_TOLERANCE = 4.0
# CIELAB L under which a pixel is black, when black competes with another achromatic word.
_BLACK_BELOW = 20
# Depth jump between neighbouring pixels that separates two objects: this, or this fraction of the range.
_EDGE_JUMP_M, _EDGE_JUMP_FRACTION = 0.01, 0.02


class _FrameState:
    """What every phrase of one frame shares.

    The coarse colour look-up, the support surface and the coarse foreground (pixels standing on the table).
    """

    def __init__(self, frame: Frame, table: np.ndarray, coarse: int) -> None:
        self.frame_ref = weakref.ref(frame)
        self.coarse = coarse
        # The pixel at the centre of each coarse cell: an object of a cell's size is still seen.
        small = frame.rgb[coarse // 2::coarse, coarse // 2::coarse]
        self.small_shape = small.shape[:2]
        self.index = colours.table_index(small).reshape(-1)
        # Classes of the coarse pixels per set of competing colour groups.
        self.classes: dict[tuple[tuple[str, ...], ...], np.ndarray] = {}
        self.support: SupportSurface | None | object = _UNSET
        self.foreground: np.ndarray | None | object = _UNSET


def _foreground(depth: np.ndarray, us: np.ndarray, vs: np.ndarray, frame: Frame, surface: SupportSurface,
                min_height_m: float, max_height_m: float, spacing: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Which pixels of a grid of depth samples (at pixel columns ``us``, rows ``vs``) stand on the table.

    Returns:
        (h, w) bool: above the plane, over the table, and not on a depth discontinuity (which splits
        objects; ``spacing`` pixels between samples scale the jump that counts as one); and (h, w) bool:
        pixels with a reading on or below the plane.
    """
    cam = frame.intrinsics
    z = depth.astype(np.float64)
    valid = (z > 0) & np.isfinite(z)
    z = np.where(valid, z, 0.0)
    points = np.stack([(us[None, :] - cam.cx) * z / cam.fx, (vs[:, None] - cam.cy) * z / cam.fy, z], axis=-1)
    flat = points.reshape(-1, 3)
    height = surface.height(flat).reshape(z.shape)
    fg = valid & (height > min_height_m) & (height < max_height_m)
    if fg.any():
        where = np.flatnonzero(fg)
        fg.reshape(-1)[where] = surface.over_table(flat[where])
    # Only the farther side of a discontinuity is cut: it separates an object from what it hides
    # and leaves the nearer one whole (thin parts such as fingers would not survive losing both sides).
    far = np.where(valid, z, np.inf)
    jump = spacing * np.maximum(_EDGE_JUMP_M, _EDGE_JUMP_FRACTION * z)
    edge = np.zeros(z.shape, bool)
    with np.errstate(invalid="ignore"):                      # inf - inf between two pixels without a reading
        step = far[:, 1:] - far[:, :-1]                      # > 0: the right pixel is farther
        edge[:, 1:] |= step > jump[:, 1:]
        edge[:, :-1] |= -step > jump[:, :-1]
        step = far[1:, :] - far[:-1, :]
        edge[1:, :] |= step > jump[1:, :]
        edge[:-1, :] |= -step > jump[:-1, :]
    return fg & ~edge, valid & (height <= min_height_m)


class ColourPromptGrounder:
    """Masks by colour word: a CIELAB vocabulary, the request's colours competing, objects by lightness.

    Each pixel is compared with the vocabulary's words by direction in CIELAB
    (:mod:`~spatialvlm_ros.perception.colours`): shading does not change it. A pixel belongs to the
    nearest *named* colour when that colour is also (nearly) the nearest word of the whole vocabulary, so
    an orange object stays out of "yellow gripper" and, with :meth:`ground_all`, the phrases of one
    request compete for the pixels. Then a morphological open and the dominant connected component(s):
    components of at least ``keep_ratio`` times the largest one's area are kept, so an object split in two
    by an occluder (the gripper in front of the can) stays whole. Words that direction cannot tell apart
    (white / silver / grey / black, orange / brown) are told apart per component by lightness.

    Achromatic words and beige share their look with scenery (table, walls, floor), so with depth they
    are found among what stands on the support plane (:mod:`~spatialvlm_ros.geometry.support`): pixels
    above the table, over it, split at depth discontinuities; without depth, by colour alone.

    The work is done on every ``coarse``-th pixel first, then at full resolution around what was found.
    Two objects of the same colour cannot be told apart: name a colour that is unique in the scene.

    Args:
        min_saturation: pixels whose HSV saturation (0..255) is below this match only achromatic words.
        min_value: pixels whose brightest channel (0..255) is below this match only achromatic words.
        margin_deg: how much farther (CIELAB angle) than the vocabulary's nearest word a named colour may be.
        max_angle_deg: farthest a pixel may be from its colour.
        keep_ratio: keep components at least this fraction of the largest one.
        min_area_px: drop components smaller than this.
        coarse: pixel stride of the first pass.
        min_height_m: how far above the table plane a pixel must be to stand on it.

    Example:
        >>> from spatialvlm_ros.frame import Frame
        >>> from spatialvlm_ros.geometry.camera import CameraIntrinsics
        >>> rgb = np.zeros((40, 40, 3), np.uint8); rgb[10:20, 5:15] = (250, 20, 10)
        >>> frame = Frame(rgb=rgb, intrinsics=CameraIntrinsics.from_fov(40, 40, 60.0))
        >>> int(ColourPromptGrounder().ground(frame, "red can").sum())
        100
    """

    name = "colour_prompt"

    def __init__(self, *, min_saturation: int = 0, min_value: int = colours.MIN_CHROMATIC_VALUE,
                 margin_deg: float = 6.0, max_angle_deg: float = 22.0, keep_ratio: float = 0.25,
                 min_area_px: int = 10, coarse: int = 4, min_height_m: float = 0.008) -> None:
        if not (0 <= min_saturation <= 255 and 0 <= min_value <= 255):
            raise ConfigError("colour_prompt: min_saturation and min_value must be in 0..255")
        if not 0 < keep_ratio <= 1:
            raise ConfigError("colour_prompt: keep_ratio must be in (0, 1]")
        if margin_deg < 0 or not 0 < max_angle_deg <= 90:
            raise ConfigError("colour_prompt: margin_deg must be >= 0 and max_angle_deg in (0, 90]")
        if coarse < 1 or min_height_m < 0:
            raise ConfigError("colour_prompt: coarse must be >= 1 and min_height_m >= 0")
        self.min_saturation = min_saturation
        self.min_value = min_value
        self.margin_deg = margin_deg
        self.max_angle_deg = max_angle_deg
        self.keep_ratio = keep_ratio
        self.min_area_px = min_area_px
        self.coarse = coarse
        self.min_height_m = min_height_m
        self.max_height_m = 1.0
        self._kernel = np.ones((3, 3), np.uint8)
        # Built here (about 0.3 s, shared by every grounder with these settings), not on the first frame.
        self._table = colours.colour_table(self.min_value, self.min_saturation)
        # What the phrases of the last frame share, and the colours competing in a ground_all call.
        self._state: _FrameState | None = None
        self._competition: tuple[weakref.ref, tuple[str, ...]] | None = None

    # ------------------------------------------------------------------ public

    def ground(self, frame: Frame, phrase: str) -> np.ndarray:
        """See :meth:`~spatialvlm_ros.perception.experts.Grounder.ground`.

        Alone, the phrase's colour competes with the vocabulary only; inside :meth:`ground_all`, with
        the other phrases' colours too.
        """
        colour = parse_colour(phrase)
        competition = self._competition
        named = competition[1] if competition is not None and competition[0]() is frame else ()
        return self._mask(frame, colour, tuple(sorted({colour, *named})))

    def ground_all(self, frame: Frame, phrases: Iterable[str]) -> dict[str, np.ndarray | GroundingError]:
        """Masks of all ``phrases`` of one request, their colours competing for the pixels.

        Returns:
            phrase -> its mask, or the :class:`GroundingError` that says why it cannot be grounded.
        """
        out: dict[str, np.ndarray | GroundingError] = {}
        named: dict[str, str] = {}
        for phrase in dict.fromkeys(phrases):
            try:
                named[phrase] = parse_colour(phrase)
            except GroundingError as err:
                out[phrase] = err
        self._competition = (weakref.ref(frame), tuple(sorted(set(named.values()))))
        try:
            for phrase in named:
                out[phrase] = self.ground(frame, phrase)
        finally:
            self._competition = None
        return out

    # ------------------------------------------------------------------ internals

    def _frame_state(self, frame: Frame) -> _FrameState:
        state = self._state
        if state is not None and state.frame_ref() is frame:
            return state
        self._state = _FrameState(frame, self._table, self.coarse)
        return self._state

    def _support(self, frame: Frame, state: _FrameState) -> SupportSurface | None:
        if state.support is _UNSET:
            state.support = None if frame.depth_m is None else support_of(frame.depth_m, frame.intrinsics)
        return state.support  # type: ignore[return-value]

    def _coarse_foreground(self, frame: Frame, state: _FrameState) -> np.ndarray | None:
        if state.foreground is _UNSET:
            surface = self._support(frame, state)
            if surface is None:
                state.foreground = None
            else:
                hs, ws = state.small_shape
                c = state.coarse
                vs = np.arange(hs) * c + c // 2
                us = np.arange(ws) * c + c // 2
                state.foreground = _foreground(frame.depth_m[np.ix_(vs, us)], us, vs, frame, surface,
                                               self.min_height_m, self.max_height_m, spacing=c)[0]
        return state.foreground  # type: ignore[return-value]

    def _keep(self, binary: np.ndarray, lightness: np.ndarray, colour: str, named: tuple[str, ...],
              min_area: int) -> np.ndarray:
        """The components of ``binary`` that are ``colour``: the largest ones, or in a family, by lightness.

        In a family (white / silver / grey / black, orange / brown), each component is named by its
        lightness (:func:`~spatialvlm_ros.perception.colours.lightness_name`). Components named
        ``colour`` that touch form one object (the faces of a box, lit and shaded, or a gripper's parts
        cut apart at depth steps); the object that matches best is kept (the lightest for the family's
        lightest word, the darkest for its darkest, else the nearest in lightness), with any other object
        within ``_LIGHTNESS_TOLERANCE`` of it (the parts of one object split by an occluder).
        """
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        areas = stats[:, cv2.CC_STAT_AREA].copy()
        areas[0] = 0
        members = colours.family(colour)
        if len(members) == 1:
            keep = areas >= max(min_area, self.keep_ratio * areas.max(), 1)
            keep[0] = False
            return keep[labels]
        rivals = set(named) & set(members)
        named_c = np.zeros(n, bool)
        for k in np.flatnonzero(areas >= min_area):
            named_c[k] = colours.lightness_name(lightness[labels == k], members, rivals) == colour
        candidates = named_c[labels]
        if not candidates.any():
            return candidates
        touching = cv2.dilate(candidates.view(np.uint8), self._kernel, iterations=2)
        n_obj, objects = cv2.connectedComponents(touching, connectivity=8)
        objects = np.where(candidates, objects, 0)
        rank = members.index(colour)                 # members run from the lightest to the darkest
        target = colours.WORDS[colour].lightness
        errors = np.full(n_obj, np.inf)
        for k in range(1, n_obj):
            pixels = lightness[objects == k]
            if len(pixels) == 0:
                continue
            level = colours.object_lightness(pixels)
            errors[k] = -level if rank == 0 else level if rank == len(members) - 1 else abs(level - target)
        chosen = errors <= errors.min() + _LIGHTNESS_TOLERANCE
        chosen[0] = False
        return chosen[objects]

    @staticmethod
    def _lightness_band(lightness: np.ndarray, colour: str, named: tuple[str, ...]) -> np.ndarray | bool:
        """Black against the other achromatic words, per pixel.

        A black object touching a grey one (the gripper on a can) is one component, so when black
        competes with another achromatic word, its pixels are the dark ones.
        """
        if colour == "black":
            return lightness < _BLACK_BELOW
        if colour in colours.ACHROMATIC_LIGHTNESS and "black" in named:
            return lightness >= _BLACK_BELOW
        return True

    def _mask(self, frame: Frame, colour: str, named: tuple[str, ...]) -> np.ndarray:
        state = self._frame_state(frame)
        groups = list(dict.fromkeys(colours.family(c) for c in named))
        group = groups.index(colours.family(colour))
        word = colours.WORDS[colour]
        hs, ws = state.small_shape
        h, w = frame.rgb.shape[:2]
        mask = np.zeros((h, w), bool)

        # Coarse pass: where is it? (Family words are named per object at full resolution: at this scale
        # an object's rim mixes with its surroundings, and two objects touching in the image merge.)
        key = tuple(groups)
        if key not in state.classes:
            state.classes[key] = colours.classify(self._table, state.index, groups, margin_deg=self.margin_deg,
                                                  max_angle_deg=self.max_angle_deg)
        classes = state.classes[key]
        lightness = colours.lightness_of(self._table, state.index).reshape(hs, ws)
        binary = (classes == group).reshape(hs, ws) & self._lightness_band(lightness, colour, named)
        foreground = self._coarse_foreground(frame, state) if word.on_support else None
        if foreground is not None:
            binary &= foreground
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.view(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        if len(colours.family(colour)) > 1:
            found = np.flatnonzero(areas >= 1) + 1
        else:
            found = np.flatnonzero(areas >= 0.5 * self.keep_ratio * areas.max(initial=0)) + 1
        if len(found) == 0:
            return mask
        c, pad = state.coarse, 2 * state.coarse
        rects = []
        for k in found:
            x, y, bw, bh = (int(v) for v in stats[k, :4])
            rects.append((max(y * c - pad, 0), min((y + bh) * c + pad, h),
                          max(x * c - pad, 0), min((x + bw) * c + pad, w)))
        y0, y1 = min(r[0] for r in rects), max(r[1] for r in rects)
        x0, x1 = min(r[2] for r in rects), max(r[3] for r in rects)

        # Full resolution around each find, in one canvas over their union.
        shape = (y1 - y0, x1 - x0)
        coloured = np.zeros(shape, bool)
        standing = np.zeros(shape, bool) if foreground is not None else None
        table = np.zeros(shape, bool)
        lightness = np.zeros(shape, np.uint8)
        surface = self._support(frame, state) if foreground is not None else None
        for ry0, ry1, rx0, rx1 in rects:
            index = colours.table_index(frame.rgb[ry0:ry1, rx0:rx1]).reshape(-1)
            classes = colours.classify(self._table, index, groups, margin_deg=self.margin_deg,
                                       max_angle_deg=self.max_angle_deg)
            window = (slice(ry0 - y0, ry1 - y0), slice(rx0 - x0, rx1 - x0))
            lit = colours.lightness_of(self._table, index).reshape(ry1 - ry0, rx1 - rx0)
            band = self._lightness_band(lit, colour, named)
            coloured[window] |= (classes == group).reshape(ry1 - ry0, rx1 - rx0) & band
            lightness[window] = lit
            if surface is not None:
                on, below = _foreground(frame.depth_m[ry0:ry1, rx0:rx1], np.arange(rx0, rx1), np.arange(ry0, ry1),
                                        frame, surface, self.min_height_m, self.max_height_m)
                standing[window] |= on
                table[window] |= below
        binary = coloured if standing is None else coloured & standing
        binary = cv2.morphologyEx(binary.view(np.uint8), cv2.MORPH_OPEN, self._kernel)
        roi = self._keep(binary, lightness, colour, named, min_area=self.min_area_px)
        if standing is not None and roi.any():
            # Depth discontinuities cut the object's rim off: grow back into its colour there.
            grown = cv2.dilate(roi.view(np.uint8), self._kernel, iterations=2).view(bool)
            roi |= grown & coloured & ~table
        mask[y0:y1, x0:x1] = roi
        return mask
