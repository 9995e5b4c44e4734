"""The compact VLM's second look: a window of the image around two objects, for more pixels on the pair.

The compact model reads 128x96 pixels, so near contact the last centimetres between a gripper and an object
are a pixel or two. Cropping a window around both objects out of a larger frame gives them more of the
model's pixels. The data engine crops its training images with this same rule (around the true pixel
centres, jittered), and the VLM crops at inference around the centres its first look found, so the two
windows match. A crop keeps its native pixels and the image's aspect; it never zooms past ``max_zoom``.

A crop is a narrower camera with its principal point moved (:func:`crop_intrinsics`): distances and
left/right are the same in it, which is why every question the engine asks about a crop stays true.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from spatialvlm_ros.errors import InputError
from spatialvlm_ros.geometry.camera import CameraIntrinsics

#: The narrowest window: the image's size divided by this (the compact model's 128x96 out of 320x240).
MAX_ZOOM = 2.5
#: The window's width: this times the pair's span (its larger side, in image-width units) ...
SPAN_GAIN = 2.0
#: ... plus this share of the image's width, so each object keeps its surroundings (table, shadow).
CONTEXT_SHARE = 0.3


class Window(NamedTuple):
    """A crop of an image: left column, top row, width and height, pixels."""

    x0: int
    y0: int
    width: int
    height: int

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The window's pixels of an (H, W, ...) array, contiguous (a copy: the frame it came from may be reused)."""
        return np.ascontiguousarray(image[self.y0:self.y0 + self.height, self.x0:self.x0 + self.width])


def pair_window(a_px: Sequence[float], b_px: Sequence[float], width: int, height: int, *,
                scale: float = 1.0, shift: Sequence[float] = (0.0, 0.0), max_zoom: float = MAX_ZOOM,
                aspect: float | None = None) -> Window:
    """The window around pixel points ``a_px`` and ``b_px`` ((u, v)) of a ``width`` x ``height`` image.

    Args:
        a_px: one point, pixels.
        b_px: the other.
        width: the image's width, pixels.
        height: its height.
        scale: the window's size is multiplied by this (the data engine's jitter; inference: 1).
        shift: its centre moves by this (u, v), in fractions of the window (the data engine's jitter; inference: 0).
        max_zoom: the window is never narrower than the widest window of its aspect divided by this.
        aspect: the window's width / height (default: the image's); the compact VLM asks for its own, so that a
            16:9 frame gives 4:3 windows.

    The window's width is ``scale * (SPAN_GAIN * span + CONTEXT_SHARE * width)``, clipped between the widest
    window of ``aspect`` that fits the image and that divided by ``max_zoom``; it is centred on the pair's
    midpoint moved by ``shift``, then slid, never shrunk, to lie inside the image. It is at least 1x1.

    Example:
        >>> pair_window((155, 120), (165, 120), 320, 240)   # close together: the narrowest window
        Window(x0=96, y0=72, width=128, height=96)
        >>> pair_window((10, 10), (310, 230), 320, 240)     # far apart: the whole image
        Window(x0=0, y0=0, width=320, height=240)

    Raises:
        InputError: a point that is not finite, or a non-positive scale or zoom.
    """
    a, b, move = (np.asarray(x, dtype=float) for x in (a_px, b_px, shift))
    if not all(np.all(np.isfinite(x)) and x.shape == (2,) for x in (a, b, move)):
        raise InputError(f"pair_window: points and shift must be finite (u, v), got {a_px}, {b_px}, {shift}")
    if width < 1 or height < 1:
        raise InputError(f"pair_window: the image must be at least 1x1, got {width}x{height}")
    aspect = width / height if aspect is None else aspect
    if not (scale > 0 and max_zoom >= 1 and aspect > 0):
        raise InputError(f"pair_window: scale and aspect must be positive and max_zoom at least 1, got {scale}, "
                         f"{aspect}, {max_zoom}")
    widest = min(width, height * aspect)
    span = max(abs(a[0] - b[0]), abs(a[1] - b[1]) * aspect)
    w = float(np.clip(scale * (SPAN_GAIN * span + CONTEXT_SHARE * width), widest / max_zoom, widest))
    w_px = min(width, max(1, int(round(w))))
    h_px = min(height, max(1, int(round(w_px / aspect))))
    centre = (a + b) / 2 + move * (w_px, h_px)
    x0 = int(np.clip(round(centre[0] - w_px / 2), 0, width - w_px))
    y0 = int(np.clip(round(centre[1] - h_px / 2), 0, height - h_px))
    return Window(x0, y0, w_px, h_px)


def crop_intrinsics(intrinsics: CameraIntrinsics, window: Window) -> CameraIntrinsics:
    """The pinhole model of ``window`` cut out of an image with ``intrinsics`` (same focal lengths, moved centre)."""
    return CameraIntrinsics(fx=intrinsics.fx, fy=intrinsics.fy, cx=intrinsics.cx - window.x0,
                            cy=intrinsics.cy - window.y0, width=window.width, height=window.height)


__all__ = ["CONTEXT_SHARE", "MAX_ZOOM", "SPAN_GAIN", "Window", "crop_intrinsics", "pair_window"]
