"""Named colours and object phrases ("red can") for the simulated scenes.

The object colours are deliberately saturated and spread over the hue circle so an HSV
colour-threshold grounder finds them; the scenery (table, floor, walls) is low-saturation so it
never matches a named hue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spatialvlm_ros.errors import SimulationError

#: Linear RGBA in [0, 1] of every colour word a phrase may use.
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

#: Scenery colours: low saturation (HSV S < 0.2) so no named hue matches them.
TABLE_RGBA = (0.60, 0.56, 0.50, 1.0)
FLOOR_RGBA = (0.36, 0.36, 0.38, 1.0)
WALL_RGBA = (0.78, 0.78, 0.76, 1.0)

#: Object kinds the scene builder knows (the gripper is not an object kind).
KINDS = ("can", "box", "ball", "bowl")


def colour_rgba(name: str) -> np.ndarray:
    """RGBA (4,) float array of a colour word.

    Raises:
        SimulationError: the word is not in :data:`COLOURS`.

    Example:
        >>> colour_rgba("red")[:3].round(2).tolist()
        [0.85, 0.06, 0.06]
    """
    try:
        return np.asarray(COLOURS[name], dtype=np.float64)
    except KeyError as err:
        raise SimulationError(f"unknown colour {name!r}; known: {', '.join(COLOURS)}") from err


def jitter_rgba(rgba: np.ndarray, rng: np.random.Generator, amount: float = 0.04) -> np.ndarray:
    """Small per-channel perturbation that keeps the hue family (used when randomising)."""
    out = rgba.copy()
    out[:3] = np.clip(out[:3] + rng.uniform(-amount, amount, size=3), 0.0, 1.0)
    return out


@dataclass(frozen=True)
class ObjectSpec:
    """One object of the scene, named by its phrase.

    Attributes:
        colour: colour word (a key of :data:`COLOURS`).
        kind: ``"gripper"`` or one of :data:`KINDS`.
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
        if kind not in KINDS and not (allow_gripper and kind == "gripper"):
            raise SimulationError(f"unknown object kind {kind!r}; known: {', '.join(KINDS)}")
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
