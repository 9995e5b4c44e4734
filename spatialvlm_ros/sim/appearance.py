"""Domain randomisation: everything about a scene's look that is not the answer to a spatial question.

The data engine's scenes must teach the compact VLM geometry, not the look of one renderer. An
:class:`Appearance` is drawn per scene and changes only the pixels, never the geometry or the truth:

* scenery textures (table, floor, walls) from a *texture family*, their colours, and unlabelled clutter
  on the floor;
* object and gripper shades: each colour word's hue, saturation and brightness jittered within what a
  person would still call that colour; matte to glossy materials;
* one to three lights of random direction, colour temperature and strength, shadows on or off;
* the sensor: white balance, exposure, gamma, blur, noise and JPEG, applied to the rendered RGB.

Two disjoint draws exist. :func:`draw_training` is the data engine's (``sim:N``); :func:`draw_shift` is
the held-out shift split's (``--split shift``). The shift uses texture families and colour temperatures
training never shows, and stronger sensor damage. The scene settings that go with each draw (camera rig,
gripper model, gaps) live with the callers (:class:`~spatialvlm_ros.synthesis.sources.SimSource`,
:func:`~spatialvlm_ros.evaluation.vlm_benchmark.approach_trajectories`), which say what they hold out.
"""

from __future__ import annotations

import colorsys
import dataclasses
from typing import Literal

import cv2
import numpy as np

from spatialvlm_ros.sim.colours import PALETTE

#: Texture families of the scenery. Training draws from the first three, the shift split from the last two.
TRAINING_TEXTURES = ("flat", "checker", "speckle")
SHIFT_TEXTURES = ("gradient", "tiles")
#: Colour temperature of the lights, kelvin: training draws inside, the shift split outside.
TRAINING_KELVIN = (3800.0, 6800.0)
SHIFT_KELVIN = ((2500.0, 3300.0), (7800.0, 10000.0))

# How far each colour word's hue may move (degrees) and still be called that word. Orange and yellow
# are narrow (a few degrees turn one into the other); green and blue span wide bands.
_HUE_TOLERANCE_DEG = {"red": 7.0, "orange": 5.0, "yellow": 5.0, "green": 18.0, "cyan": 8.0, "blue": 12.0,
                      "purple": 10.0, "magenta": 8.0, "brown": 6.0, "pink": 8.0, "beige": 5.0}
_ACHROMATIC_VALUE = {"white": (0.80, 0.97), "black": (0.02, 0.12), "grey": (0.32, 0.55), "silver": (0.58, 0.75)}


@dataclasses.dataclass(frozen=True)
class Light:
    """One light: position (world), colour (linear RGB, strength included), whether it casts shadows."""

    pos: tuple[float, float, float]
    diffuse: tuple[float, float, float]
    shadows: bool


@dataclasses.dataclass(frozen=True)
class Sensor:
    """Camera image damage, applied in this order: white balance and exposure, gamma, blur, noise, JPEG.

    Attributes:
        wb_gain: per-channel (R, G, B) gains.
        exposure: overall gain.
        gamma: output = input ** (1 / gamma) on [0, 1].
        blur_sigma_px: Gaussian blur (0: none).
        noise_sigma: additive Gaussian noise, of 255.
        jpeg_quality: JPEG round trip at this quality (0: none).
    """

    wb_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    exposure: float = 1.0
    gamma: float = 1.0
    blur_sigma_px: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int = 0

    def apply(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Damaged copy of a uint8 (H, W, 3) RGB image."""
        image = rgb.astype(np.float32) / 255.0 * (self.exposure * np.asarray(self.wb_gain, dtype=np.float32))
        image = np.clip(image, 0.0, 1.0) ** (1.0 / self.gamma) * 255.0
        if self.blur_sigma_px > 0:
            image = cv2.GaussianBlur(image, (0, 0), self.blur_sigma_px)
        if self.noise_sigma > 0:
            image = image + rng.normal(0.0, self.noise_sigma, size=image.shape).astype(np.float32)
        out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        if self.jpeg_quality:
            ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:   # OpenCV without a JPEG codec: keep the image rather than lose the scene
                return out
            out = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return out


@dataclasses.dataclass(frozen=True)
class Appearance:
    """One scene's look (see the module docstring); :func:`~spatialvlm_ros.sim.scene.build_mjcf` draws it.

    Attributes:
        texture: scenery texture family (:data:`TRAINING_TEXTURES` or :data:`SHIFT_TEXTURES`).
        table_rgb: the table's two texture colours, linear RGB.
        floor_rgb: the floor's two texture colours.
        wall_rgb: the walls' two texture colours.
        texture_repeat: texture tiles per metre.
        specular: objects' and gripper's specular reflection.
        shininess: their shininess.
        lights: the lights (the first one is the key light).
        ambient: the headlight's ambient level.
        clutter: unlabelled shapes on the floor: (kind, x, y, size, rgb), world metres.
        shade_seed: seeds each colour word's shade (:meth:`shade`).
        sensor: the image damage.
    """

    texture: str
    table_rgb: tuple[tuple[float, float, float], tuple[float, float, float]]
    floor_rgb: tuple[tuple[float, float, float], tuple[float, float, float]]
    wall_rgb: tuple[tuple[float, float, float], tuple[float, float, float]]
    texture_repeat: float
    specular: float
    shininess: float
    lights: tuple[Light, ...]
    ambient: float
    clutter: tuple[tuple[str, float, float, float, tuple[float, float, float]], ...]
    shade_seed: int
    sensor: Sensor

    def shade(self, colour: str, index: int) -> np.ndarray:
        """RGBA of colour word ``colour`` for object ``index`` of the scene (the gripper is -1)."""
        rng = np.random.default_rng([self.shade_seed, index + 1])
        return np.array([*shade_rgb(colour, rng), 1.0])


def shade_rgb(colour: str, rng: np.random.Generator) -> tuple[float, float, float]:
    """A random shade of a colour word that a person would still call by that word (linear RGB).

    Chromatic words move in hue within the word's tolerance, lose up to a third of their saturation and
    change brightness by -30..+10%; white, black, grey and silver stay nearly neutral at their brightness.
    """
    base = np.asarray(PALETTE[colour][:3], dtype=np.float64)
    if colour in _ACHROMATIC_VALUE:
        value = rng.uniform(*_ACHROMATIC_VALUE[colour])
        tint = rng.uniform(-0.03, 0.03, size=3) * value
        return tuple(float(c) for c in np.clip(value + tint, 0.0, 1.0))  # type: ignore[return-value]
    h, s, v = colorsys.rgb_to_hsv(*base)
    h = (h + rng.uniform(-1.0, 1.0) * _HUE_TOLERANCE_DEG.get(colour, 6.0) / 360.0) % 1.0
    s = s * rng.uniform(0.7, 1.0)
    v = min(1.0, v * rng.uniform(0.7, 1.1))
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


def kelvin_rgb(kelvin: float) -> tuple[float, float, float]:
    """Relative linear RGB of a black body at ``kelvin`` (Tanner Helland's fit), largest channel 1.

    Written here: the fit is a few lines and no installed package offers it.
    """
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.7 * (t - 60) ** -0.1332
    g = 99.47 * np.log(t) - 161.12 if t <= 66 else 288.12 * (t - 60) ** -0.0755
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.52 * np.log(t - 10) - 305.04)
    rgb = np.clip(np.array([r, g, b]), 1.0, 255.0)
    return tuple(float(c) for c in rgb / rgb.max())  # type: ignore[return-value]


def _scenery_colours(rng: np.random.Generator, value: tuple[float, float]) -> tuple[tuple[float, float, float], ...]:
    """Two low-saturation colours (a texture's two tones) of brightness in ``value``."""
    h, s, v = rng.uniform(), rng.uniform(0.0, 0.3), rng.uniform(*value)
    first = colorsys.hsv_to_rgb(h, s, v)
    second = colorsys.hsv_to_rgb((h + rng.uniform(-0.08, 0.08)) % 1.0, s * rng.uniform(0.5, 1.2),
                                 float(np.clip(v * rng.uniform(0.6, 1.3), 0.02, 1.0)))
    return tuple(float(c) for c in first), tuple(float(c) for c in np.clip(second, 0.0, 1.0))  # type: ignore


def _draw(rng: np.random.Generator, split: Literal["train", "shift"]) -> Appearance:
    textures = TRAINING_TEXTURES if split == "train" else SHIFT_TEXTURES
    if split == "train":
        kelvin = rng.uniform(*TRAINING_KELVIN)
    else:
        kelvin = rng.uniform(*SHIFT_KELVIN[int(rng.integers(2))])
    light_rgb = np.asarray(kelvin_rgb(kelvin))
    lights = []
    for k in range(int(rng.integers(1, 4))):
        azimuth, elevation = rng.uniform(-np.pi, np.pi), np.deg2rad(rng.uniform(30.0, 80.0))
        distance = rng.uniform(1.2, 2.2)
        pos = (distance * np.cos(elevation) * np.cos(azimuth), 0.1 + distance * np.cos(elevation) * np.sin(azimuth),
               0.75 + distance * np.sin(elevation))
        strength = rng.uniform(0.45, 0.9) if k == 0 else rng.uniform(0.1, 0.35)
        lights.append(Light(pos=tuple(float(p) for p in pos), diffuse=tuple(float(c) for c in strength * light_rgb),
                            shadows=k == 0 and bool(rng.random() < 0.35)))
    clutter = []
    for _ in range(int(rng.integers(0, 5))):
        side = rng.integers(3)          # behind the table, or beside it (left, right)
        x, y = ((rng.uniform(-1.2, 1.2), rng.uniform(0.7, 1.6)) if side == 0 else
                (float(np.sign(side - 1.5)) * rng.uniform(0.8, 1.5), rng.uniform(-0.4, 1.2)))
        clutter.append((("box", "cylinder", "sphere")[int(rng.integers(3))], float(x), float(y),
                        float(rng.uniform(0.05, 0.25)), tuple(float(c) for c in rng.uniform(0.05, 0.95, size=3))))
    if split == "train":
        sensor = Sensor(wb_gain=tuple(float(g) for g in rng.uniform(0.9, 1.1, size=3)),  # type: ignore[arg-type]
                        exposure=float(rng.uniform(0.75, 1.25)), gamma=float(rng.uniform(0.8, 1.25)),
                        blur_sigma_px=float(rng.uniform(0.3, 1.0)) if rng.random() < 0.3 else 0.0,
                        noise_sigma=float(rng.uniform(0.0, 4.0)),
                        jpeg_quality=int(rng.integers(55, 96)) if rng.random() < 0.6 else 0)
    else:
        sensor = Sensor(wb_gain=tuple(float(g) for g in rng.uniform(0.85, 1.15, size=3)),  # type: ignore[arg-type]
                        exposure=float(rng.uniform(0.7, 1.3)), gamma=float(rng.uniform(0.75, 1.3)),
                        blur_sigma_px=float(rng.uniform(0.5, 1.2)) if rng.random() < 0.5 else 0.0,
                        noise_sigma=float(rng.uniform(3.0, 8.0)), jpeg_quality=int(rng.integers(30, 61)))
    return Appearance(
        texture=textures[int(rng.integers(len(textures)))],
        table_rgb=_scenery_colours(rng, (0.25, 0.8)), floor_rgb=_scenery_colours(rng, (0.1, 0.6)),
        wall_rgb=_scenery_colours(rng, (0.4, 0.95)), texture_repeat=float(rng.uniform(2.0, 12.0)),
        specular=float(rng.uniform(0.0, 0.6)), shininess=float(rng.uniform(0.0, 0.8)), lights=tuple(lights),
        ambient=float(rng.uniform(0.2, 0.45)), clutter=tuple(clutter), shade_seed=int(rng.integers(2**31)),
        sensor=sensor)


def draw_training(rng: np.random.Generator) -> Appearance:
    """The data engine's randomised look.

    :data:`TRAINING_TEXTURES`, lights within :data:`TRAINING_KELVIN`, mild sensor damage (JPEG 55-95 on 60%
    of images, noise sigma 0-4, blur on 30%).
    """
    return _draw(rng, "train")


def draw_shift(rng: np.random.Generator) -> Appearance:
    """The held-out shift split's look.

    :data:`SHIFT_TEXTURES`, lights of :data:`SHIFT_KELVIN`, JPEG 30-60 and noise sigma 3-8 on every image,
    blur on half.
    """
    return _draw(rng, "shift")


__all__ = ["SHIFT_KELVIN", "SHIFT_TEXTURES", "TRAINING_KELVIN", "TRAINING_TEXTURES", "Appearance", "Light",
           "Sensor", "draw_shift", "draw_training", "kelvin_rgb", "shade_rgb"]
