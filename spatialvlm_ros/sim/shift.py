"""A held-out "shift" of the simulated scenes: what the compact VLM's training split never shows.

The training split (the data engine's ``sim:N``) paints objects and gripper from
:data:`~spatialvlm_ros.sim.colours.COLOURS`, looks through a 58 degree camera jittered by a few cm around the
canonical eye, under one white key light, and stores lossless, noise-free RGB. :func:`draw_shift` draws a
scene setting that shares none of that:

* colours from :data:`~spatialvlm_ros.sim.colours.MORE_COLOURS` only (grey, silver, brown, beige, pink);
* a field of view in 45-52 or 66-90 degrees, and the camera raised by 10-25 cm or lowered by 8-15 cm, and
  moved sideways by up to 10 cm;
* a warm (~3000 K) or cool (~8000 K) key light and one or two extra lights;
* the image JPEG-compressed (quality 30-60) and with Gaussian sensor noise (sigma 3-8 of 255).

Object kinds stay the simulator's four (can, box, ball, bowl): it has no others.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from spatialvlm_ros.config import SimConfig
from spatialvlm_ros.sim.colours import MORE_COLOURS

#: Held-out colour words of the shift split (the training split draws from ``COLOURS``).
SHIFT_COLOURS = tuple(MORE_COLOURS)
_WARM = (1.0, 0.72, 0.45)     # ~3000 K, relative linear RGB
_COOL = (0.72, 0.85, 1.0)     # ~8000 K


@dataclasses.dataclass(frozen=True)
class ShiftDraw:
    """One scene's shift: the simulator settings to replace and the image degradation to apply."""

    fovy_deg: float
    camera_offset_m: tuple[float, float, float]
    light_rgb: tuple[float, float, float]
    extra_lights: int
    jpeg_quality: int
    noise_sigma: float

    def apply(self, config: SimConfig) -> SimConfig:
        """``config`` with this draw's camera and lights."""
        return dataclasses.replace(config, fovy_deg=self.fovy_deg, camera_offset_m=self.camera_offset_m,
                                   light_rgb=self.light_rgb, extra_lights=self.extra_lights)

    def degrade(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """JPEG round-trip at :attr:`jpeg_quality`, then additive Gaussian noise (uint8 RGB in and out)."""
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        assert ok
        decoded = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32)
        noisy = decoded + rng.normal(0.0, self.noise_sigma, size=decoded.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def draw_shift(rng: np.random.Generator) -> ShiftDraw:
    """Draw one scene's shift (see the module docstring for the ranges)."""
    fovy = float(rng.uniform(45.0, 52.0) if rng.random() < 0.3 else rng.uniform(66.0, 90.0))
    dz = float(rng.uniform(0.10, 0.25) if rng.random() < 0.6 else -rng.uniform(0.08, 0.15))
    offset = (float(rng.uniform(-0.10, 0.10)), float(rng.uniform(-0.05, 0.05)), dz)
    light = _WARM if rng.random() < 0.5 else _COOL
    return ShiftDraw(fovy_deg=fovy, camera_offset_m=offset, light_rgb=light, extra_lights=int(rng.integers(1, 3)),
                     jpeg_quality=int(rng.integers(30, 61)), noise_sigma=float(rng.uniform(3.0, 8.0)))


__all__ = ["SHIFT_COLOURS", "ShiftDraw", "draw_shift"]
