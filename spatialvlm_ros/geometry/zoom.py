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


def pair_window(a_px: Sequence[float], b_px: Sequence[float], width: int, height: int, *,
                scale: float = 1.0, shift: Sequence[float] = (0.0, 0.0), max_zoom: float = MAX_ZOOM) -> Window:
    """The window around pixel points ``a_px`` and ``b_px`` ((u, v)) of a ``width`` x ``height`` image.

    Its width is ``scale * (SPAN_GAIN * span + CONTEXT_SHARE * width)``, clipped to ``[width / max_zoom,
    width]``, and its height keeps the image's aspect; it is centred on the pair's midpoint moved by ``shift``
    (fractions of the window), then slid, never shrunk, to lie inside the image. ``scale`` and ``shift`` are
    the data engine's jitter; inference leaves them at 1 and 0.

    Example:
        >>> pair_window((155, 120), (165, 120), 320, 240)   # close together: the narrowest window
        Window(x0=96, y0=72, width=128, height=96)
        >>> pair_window((10, 10), (310, 230), 320, 240)     # far apart: the whole image
        Window(x0=0, y0=0, width=320, height=240)

    Raises:
        InputError: a point that is not finite, or a non-positive scale or zoom.
    """
    a, b = np.asarray(a_px, dtype=float), np.asarray(b_px, dtype=float)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and a.shape == b.shape == (2,)):
        raise InputError(f"pair_window: points must be finite (u, v), got {a_px} and {b_px}")
    if scale <= 0 or max_zoom < 1:
        raise InputError(f"pair_window: scale must be positive and max_zoom at least 1, got {scale}, {max_zoom}")
    aspect = width / height
    span = max(abs(a[0] - b[0]), abs(a[1] - b[1]) * aspect)
    w = float(np.clip(scale * (SPAN_GAIN * span + CONTEXT_SHARE * width), width / max_zoom, width))
    w_px = int(round(w))
    h_px = min(height, int(round(w_px / aspect)))
    centre = (a + b) / 2 + np.asarray(shift, dtype=float) * (w_px, h_px)
    x0 = int(np.clip(round(centre[0] - w_px / 2), 0, width - w_px))
    y0 = int(np.clip(round(centre[1] - h_px / 2), 0, height - h_px))
    return Window(x0, y0, w_px, h_px)


def crop_intrinsics(intrinsics: CameraIntrinsics, window: Window) -> CameraIntrinsics:
    """The pinhole model of ``window`` cut out of an image with ``intrinsics`` (same focal lengths, moved centre)."""
    return CameraIntrinsics(fx=intrinsics.fx, fy=intrinsics.fy, cx=intrinsics.cx - window.x0,
                            cy=intrinsics.cy - window.y0, width=window.width, height=window.height)


def mask_centre(mask: np.ndarray) -> tuple[float, float] | None:
    """(u, v) mean pixel of a boolean mask; None when it is empty."""
    rows, cols = np.nonzero(mask)
    return (float(cols.mean()), float(rows.mean())) if len(rows) else None


__all__ = ["CONTEXT_SHARE", "MAX_ZOOM", "SPAN_GAIN", "Window", "crop_intrinsics", "mask_centre", "pair_window"]
