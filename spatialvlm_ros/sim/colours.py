"""Named colours and object phrases ("red can") for the simulated scenes.

The data engine's colours (:data:`COLOURS`) are saturated and spread over the hue circle, plus white and
black; :data:`MORE_COLOURS` adds the rest of the colour-prompt grounder's everyday vocabulary (grey,
silver, brown, beige, pink). The scenery (table, floor, walls) is low-saturation: a grounder must tell an
achromatic object from it by shape (it stands on the table), not by colour alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialvlm_ros.errors import SimulationError

#: Linear RGBA in [0, 1] of the colour words the data engine samples its scenes from.
COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.06, 0.06, 1.0),
    "orange": (0.95, 0.45, 0.02, 1.0),
    "yellow": (0.95, 0.82, 0.04, 1.0),
    "green": (0.08, 0.65, 0.12, 1.0),
    "cyan": (0.04, 0.70, 0.78, 1.0),
    "blue": (0.08, 0.22, 0.85, 1.0),
    "purple": (0.50, 0.12, 0.75, 1.0),
    "magenta": (0.85, 0.08, 0.65, 1.0),
    "white": (0.92, 0.92, 0.92, 1.0),
    "black": (0.05, 0.05, 0.05, 1.0),
}

#: More colour words the scenes may paint (an object or the gripper), beside :data:`COLOURS`: the rest of
#: the everyday vocabulary of the colour-prompt grounder. Kept apart so the data engine, which samples
#: its scenes from :data:`COLOURS`, draws the same scenes as before.
MORE_COLOURS: dict[str, tuple[float, float, float, float]] = {
    "grey": (0.42, 0.42, 0.42, 1.0),
    "silver": (0.66, 0.67, 0.70, 1.0),
    "brown": (0.42, 0.22, 0.08, 1.0),
    "beige": (0.86, 0.76, 0.56, 1.0),
    "pink": (0.98, 0.50, 0.68, 1.0),
}

#: Every colour word a phrase may use: :data:`COLOURS` and :data:`MORE_COLOURS`.
PALETTE: dict[str, tuple[float, float, float, float]] = {**COLOURS, **MORE_COLOURS}

#: Scenery colours: low saturation (HSV S < 0.2), so no vivid colour word matches them.
TABLE_RGBA = (0.60, 0.56, 0.50, 1.0)
FLOOR_RGBA = (0.36, 0.36, 0.38, 1.0)
WALL_RGBA = (0.78, 0.78, 0.76, 1.0)

#: Object kinds the data engine draws its scenes from by default (the gripper is not an object kind).
KINDS = ("can", "box", "ball", "bowl")
#: More kinds the scene builder knows: a mug (with a handle), a bottle (with a neck) and two mesh solids. Kept
#: apart, like :data:`MORE_COLOURS`, so the default scenes (and the shipped model's data) are drawn as before;
#: ``sim.kinds`` of the data engine's YAML adds them.
MORE_KINDS = ("mug", "bottle", "cone", "wedge")
#: Every kind the scene builder knows: :data:`KINDS` and :data:`MORE_KINDS`.
ALL_KINDS = KINDS + MORE_KINDS


def colour_rgba(name: str) -> np.ndarray:
    """RGBA (4,) float array of a colour word.

    Raises:
        SimulationError: the word is not in :data:`PALETTE`.

    Example:
        >>> colour_rgba("red")[:3].round(2).tolist()
        [0.85, 0.06, 0.06]
    """
    try:
        return np.asarray(PALETTE[name], dtype=np.float64)
    except KeyError as err:
        raise SimulationError(f"unknown colour {name!r}; known: {', '.join(PALETTE)}") from err


def jitter_rgba(rgba: np.ndarray, rng: np.random.Generator, amount: float = 0.04) -> np.ndarray:
    """Small per-channel perturbation that keeps the hue family (used when randomising)."""
    out = rgba.copy()
    out[:3] = np.clip(out[:3] + rng.uniform(-amount, amount, size=3), 0.0, 1.0)
    return out


@dataclass(frozen=True)
class ObjectSpec:
    """One object of the scene, named by its phrase.

    Attributes:
        colour: colour word (a key of :data:`PALETTE`).
        kind: ``"gripper"`` or one of :data:`ALL_KINDS`.
    """

    colour: str
    kind: str

    @property
    def phrase(self) -> str:
        """``"<colour> <kind>"``, the label the grounders and ground truth use."""
        return f"{self.colour} {self.kind}"

    @classmethod
    def make(cls, colour: str, kind: str, *, allow_gripper: bool = False) -> "ObjectSpec":
        """Validated constructor.

        Raises:
            SimulationError: unknown colour or kind.
        """
        colour_rgba(colour)
        if kind not in ALL_KINDS and not (allow_gripper and kind == "gripper"):
            raise SimulationError(f"unknown object kind {kind!r}; known: {', '.join(ALL_KINDS)}")
        return cls(colour=colour, kind=kind)

    @classmethod
    def parse(cls, phrase: str) -> "ObjectSpec":
        """Parse ``"<colour> <kind>"`` (e.g. ``"blue box"``).

        Raises:
            SimulationError: not two words, or an unknown colour or kind.

        Example:
            >>> ObjectSpec.parse("blue box").kind
            'box'
        """
        words = phrase.split()
        if len(words) != 2:
            raise SimulationError(f"object {phrase!r}: expected '<colour> <kind>', e.g. 'blue box'")
        return cls.make(words[0], words[1])
