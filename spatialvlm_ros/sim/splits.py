"""The two scene distributions of the compact VLM: the training split and the held-out shift split.

Each draws, from a random stream, the scene settings that are not the question's answer: the camera
rig, the gripper model and its opening, and the look (:mod:`spatialvlm_ros.sim.appearance`). The caller
chooses the objects, their colour words and the gripper's gap.

============  ==========================================  ===========================================
              training split (``sim:N``, ``--split sim``)  shift split (``--split shift``), held out
============  ==========================================  ===========================================
camera rig    in front of the table, fovy 48-80 deg,       anywhere around the target
              dollied to keep the table in frame, moved    (``sim.viewpoint.random``), fovy 42-48 or
              -10..+20 cm in height, +-10 cm sideways      80-90 deg
gripper       ``sim`` or ``franka_hand``, 30-100% open     ``robotiq_2f85``, 30-100% open
textures      flat, checker, speckle                       gradient, tiles
lights        1-3, 3800-6800 K                             1-3, 2500-3300 K or 7800-10000 K
sensor        mild: JPEG 55-95 on 60%, noise sigma 0-4     JPEG 30-60 and noise sigma 3-8 on all
============  ==========================================  ===========================================

Both draw each colour word's shade the same way, and use the same colour words and object kinds. A third
split, ``plain``, is the look the data engine drew before domain randomisation (one 58 deg camera jittered
by a few cm, the ``sim`` gripper, untextured scenery, one white light, clean images): the distribution the
first compact model was trained and scored on. A fourth, ``around`` (``sim-around:N``), is the training
split with the camera anywhere around the target (fovy 48-80 deg) and the approach from any side: it
shares the shift split's camera placement, but none of its fields of view, grippers, textures or lights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from spatialvlm_ros.config import SimConfig, ViewpointConfig
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.sim.appearance import Appearance, draw_shift, draw_training

_CANONICAL_FOVY_DEG = 58.0
# The canonical camera's line of sight (scene.py _CANONICAL_EYE - _CANONICAL_LOOK_AT), for the dolly.
_CANONICAL_SIGHT = np.array([0.05, -0.74, 0.44])
#: The scene distributions, by the name ``spatialvlm evaluate --split`` takes.
SPLITS = ("sim", "shift", "plain", "around")
#: Share of training scenes whose gripper starts within 5 cm of the target (contact included).
NEAR_CONTACT_SHARE = 0.3


def near_contact_gap(rng: np.random.Generator) -> float:
    """A gripper-to-target gap for a training or shift scene, metres.

    0-5 cm on :data:`NEAR_CONTACT_SHARE` of scenes (contact included), else 5-30 cm.
    """
    return float(rng.uniform(0.0, 0.05) if rng.random() < NEAR_CONTACT_SHARE else rng.uniform(0.05, 0.30))


def training_scene(config: SimConfig, rng: np.random.Generator, around: bool = False,
                   ) -> tuple[SimConfig, Appearance]:
    """``config`` with a training camera rig and gripper, and a training look (see the module docstring).

    ``around`` (the ``around`` split) puts the camera anywhere around the target instead of in front of the
    table, and the approach on any side, with the training fields of view, grippers and looks.
    """
    fovy = float(rng.uniform(48.0, 80.0))
    rig: dict[str, Any]
    if around:
        # Farther for a narrow view, nearer for a wide one, so the target and the gripper's path stay in frame.
        wide = (fovy - 48.0) / 32.0
        rig = {"viewpoint": ViewpointConfig(random=True, min_distance_m=0.8 - 0.3 * wide,
                                            max_distance_m=1.2 - 0.4 * wide)}
    else:
        # Move the camera back along its line of sight as the view narrows (and in as it widens), by the
        # square root of the focal length's change: the table stays in frame but its size on screen varies.
        dolly = np.sqrt(np.tan(np.deg2rad(_CANONICAL_FOVY_DEG) / 2) / np.tan(np.deg2rad(fovy) / 2)) - 1.0
        offset = dolly * _CANONICAL_SIGHT + np.array([rng.uniform(-0.10, 0.10), rng.uniform(-0.05, 0.05),
                                                      rng.uniform(-0.10, 0.20)])
        rig = {"camera_offset_m": tuple(float(v) for v in offset)}
    config = dataclasses.replace(config, fovy_deg=fovy, **rig,
                                 gripper_model=("sim", "franka_hand")[int(rng.integers(2))],
                                 gripper_open_fraction=float(rng.uniform(0.3, 1.0)))
    return config, draw_training(rng)


def shift_scene(config: SimConfig, rng: np.random.Generator) -> tuple[SimConfig, Appearance]:
    """``config`` with the held-out shift's camera rig and gripper, and a shift look (module docstring)."""
    narrow = rng.random() < 0.4
    fovy = float(rng.uniform(42.0, 48.0) if narrow else rng.uniform(80.0, 90.0))
    # A narrow view needs the camera farther away to keep the target and the gripper's path in frame.
    viewpoint = ViewpointConfig(random=True, min_distance_m=0.8 if narrow else 0.5,
                                max_distance_m=1.2 if narrow else 0.8)
    config = dataclasses.replace(config, fovy_deg=fovy, viewpoint=viewpoint, gripper_model="robotiq_2f85",
                                 gripper_open_fraction=float(rng.uniform(0.3, 1.0)))
    return config, draw_shift(rng)


def split_scene(split: str, config: SimConfig, rng: np.random.Generator) -> tuple[SimConfig, Appearance | None]:
    """``config`` drawn like split ``split`` (one of :data:`SPLITS`); the look is None for ``plain``.

    Raises:
        ConfigError: an unknown split.
    """
    if split == "plain":
        return config, None
    if split not in SPLITS:
        raise ConfigError(f"split: {split!r} is not one of {list(SPLITS)}")
    if split == "shift":
        return shift_scene(config, rng)
    return training_scene(config, rng, around=split == "around")


__all__ = ["NEAR_CONTACT_SHARE", "SPLITS", "near_contact_gap", "shift_scene", "split_scene", "training_scene"]
