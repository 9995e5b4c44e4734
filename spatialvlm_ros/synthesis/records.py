"""Scene records: the per-image result of scene extraction, and the only input of question synthesis.

Scene frame: when ``canonicalised`` is true it is the paper's canonical frame (REP 103: x forward =
the optical axis projected on the support plane, y left from the camera's viewpoint, z up = the
plane normal, origin on the plane below the camera), so z is the height above the table or floor.
When the support plane could not be fitted it is the camera-aligned stand-in (x = optical z,
y = -optical x, z = -optical y, origin at the camera): left/right, behind/front, widths and
distances still hold approximately, but nothing measured along z is trusted and every
elevation-dependent question is skipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

#: Optical frame (x right, y down, z forward) -> camera-aligned stand-in (x forward, y left, z up).
CAMERA_ALIGNED_ROTATION = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class Box3D:
    """An axis-aligned box in the scene frame, metres.

    Attributes:
        centre_m: (x forward, y left, z up) centre of the box.
        depth_m: extent along x (forward, away from the camera).
        width_m: extent along y (across the view).
        height_m: extent along z (up).

    Example:
        >>> box = Box3D(centre_m=(1.0, 0.0, 0.1), depth_m=0.1, width_m=0.2, height_m=0.2)
        >>> box.bottom_m, round(box.volume_m3, 4)
        (0.0, 0.004)
    """

    centre_m: tuple[float, float, float]
    depth_m: float
    width_m: float
    height_m: float

    @property
    def size_m(self) -> np.ndarray:
        """(3,) extents along x, y, z."""
        return np.array([self.depth_m, self.width_m, self.height_m])

    @property
    def lower_m(self) -> np.ndarray:
        """(3,) minimum corner."""
        return np.asarray(self.centre_m) - self.size_m / 2

    @property
    def upper_m(self) -> np.ndarray:
        """(3,) maximum corner."""
        return np.asarray(self.centre_m) + self.size_m / 2

    @property
    def bottom_m(self) -> float:
        """Height of the box's lowest face above the support plane (z of its minimum corner)."""
        return float(self.centre_m[2] - self.height_m / 2)

    @property
    def volume_m3(self) -> float:
        """Volume of the box."""
        return float(self.depth_m * self.width_m * self.height_m)

    @classmethod
    def from_bounds(cls, lower_m: np.ndarray, upper_m: np.ndarray) -> "Box3D":
        """Box spanning two corners (x forward, y left, z up)."""
        centre = (np.asarray(lower_m) + np.asarray(upper_m)) / 2
        size = np.asarray(upper_m) - np.asarray(lower_m)
        return cls(centre_m=(float(centre[0]), float(centre[1]), float(centre[2])),
                   depth_m=float(size[0]), width_m=float(size[1]), height_m=float(size[2]))


@dataclass(frozen=True)
class SceneObject:
    """One object that survived ambiguity removal.

    Attributes:
        object_id: the expert's id of the object (the simulator's segmentation id for the oracle).
        name: the expert's label of the object (``"red can"`` for the oracle), not shown in questions.
        caption: the region caption (1-6 words, e.g. ``"small red soda can"``).
        reference: how questions name it: ``"the " + caption``, plus a disambiguating clause when another
            object has a near-identical caption (``"the can that's more to the left of the image"``).
        box: its 3D box in the scene frame.
        pixel_centre: (u, v) mean pixel of its mask.
        n_points: points of its cloud after outlier removal.
        attributes: expert attributes (``{"colour": "red", "kind": "can"}`` for the oracle).
    """

    object_id: int
    name: str
    caption: str
    reference: str
    box: Box3D
    pixel_centre: tuple[float, float]
    n_points: int
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SceneRecord:
    """Everything known about one image after extraction.

    Attributes:
        image_id: unique id of the image in its dataset (file stem).
        width: image width, pixels.
        height: image height, pixels.
        canonicalised: whether the support plane was found (see the module docstring for the frame).
        camera_to_scene: (4, 4) row-major transform from the camera optical frame to the scene frame.
        camera_height_m: camera height above the support plane; None when not canonicalised.
        objects: the objects questions may mention.
        dropped: captions removed (background or more than two near-duplicates), for the record.
    """

    image_id: str
    width: int
    height: int
    canonicalised: bool
    camera_to_scene: tuple[tuple[float, ...], ...]
    camera_height_m: float | None
    objects: tuple[SceneObject, ...]
    dropped: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (lists, floats, strings)."""
        out = asdict(self)
        out["camera_to_scene"] = [list(row) for row in self.camera_to_scene]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SceneRecord":
        """Inverse of :meth:`to_json`."""
        objects = tuple(
            SceneObject(**{**o, "box": Box3D(**{**o["box"], "centre_m": tuple(o["box"]["centre_m"])}),
                           "pixel_centre": tuple(o["pixel_centre"])})
            for o in data["objects"])
        return cls(**{**data, "objects": objects, "dropped": tuple(data["dropped"]),
                      "camera_to_scene": tuple(tuple(r) for r in data["camera_to_scene"])})
