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

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

#: Optical frame (x right, y down, z forward) -> camera-aligned stand-in (x forward, y left, z up).
CAMERA_ALIGNED_ROTATION = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class Box3D:
    """A box standing upright in the scene frame (its footprint may turn about up), metres.

    The footprint is a rectangle in the x-y plane (the support plane when canonicalised), turned by
    ``yaw_rad`` about z; the box spans ``height_m`` along z. ``width_m`` is the footprint's longer side
    and ``depth_m`` its shorter one: an object's width does not change when it is turned on the table.
    ``yaw_rad`` is the angle from the scene x axis (forward) to the box's depth side, in
    ``[-pi/2, pi/2)``; with ``yaw_rad`` 0 the width runs across the view (along y), as an axis-aligned
    box's does.

    Attributes:
        centre_m: (x forward, y left, z up) centre of the box.
        depth_m: the footprint's shorter side (along x when ``yaw_rad`` is 0).
        width_m: the footprint's longer side (along y when ``yaw_rad`` is 0).
        height_m: extent along z (up).
        yaw_rad: turn of the footprint about z, radians.

    Example:
        >>> box = Box3D(centre_m=(1.0, 0.0, 0.1), depth_m=0.1, width_m=0.2, height_m=0.2)
        >>> box.bottom_m, round(box.volume_m3, 4)
        (0.0, 0.004)
        >>> turned = Box3D(centre_m=(1.0, 0.0, 0.1), depth_m=0.1, width_m=0.2, height_m=0.2, yaw_rad=math.pi / 2)
        >>> (turned.upper_m - turned.lower_m).round(3).tolist()          # its axis-aligned bounds
        [0.2, 0.1, 0.2]
    """

    centre_m: tuple[float, float, float]
    depth_m: float
    width_m: float
    height_m: float
    yaw_rad: float = 0.0

    @property
    def size_m(self) -> np.ndarray:
        """(3,) extents along the box's own axes: depth, width, height."""
        return np.array([self.depth_m, self.width_m, self.height_m])

    @property
    def half_bounds_m(self) -> np.ndarray:
        """(3,) half extents of the box's axis-aligned bounds along scene x, y, z."""
        c, s = abs(math.cos(self.yaw_rad)), abs(math.sin(self.yaw_rad))
        return np.array([c * self.depth_m + s * self.width_m, s * self.depth_m + c * self.width_m,
                         self.height_m]) / 2

    @property
    def lower_m(self) -> np.ndarray:
        """(3,) minimum corner of the axis-aligned bounds."""
        return np.asarray(self.centre_m) - self.half_bounds_m

    @property
    def upper_m(self) -> np.ndarray:
        """(3,) maximum corner of the axis-aligned bounds."""
        return np.asarray(self.centre_m) + self.half_bounds_m

    @property
    def bottom_m(self) -> float:
        """Height of the box's lowest face above the support plane (z of its minimum corner)."""
        return float(self.centre_m[2] - self.height_m / 2)

    @property
    def volume_m3(self) -> float:
        """Volume of the box."""
        return float(self.depth_m * self.width_m * self.height_m)

    def footprint_m(self) -> np.ndarray:
        """(4, 2) corners of the footprint rectangle in the x-y plane, counter-clockwise."""
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        depth_axis, width_axis = np.array([c, s]) * self.depth_m / 2, np.array([-s, c]) * self.width_m / 2
        signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=float)
        return np.asarray(self.centre_m[:2]) + signs[:, :1] * depth_axis + signs[:, 1:] * width_axis

    def gap_m(self, other: "Box3D") -> float:
        """Shortest distance between the two boxes, metres (0 when they touch or overlap).

        Both are upright prisms, so the distance is the hypotenuse of the footprints' distance in the
        x-y plane and the gap between their z intervals.

        Example:
            >>> a = Box3D(centre_m=(0.0, 0.0, 0.1), depth_m=0.2, width_m=0.2, height_m=0.2)
            >>> b = Box3D(centre_m=(0.5, 0.0, 0.1), depth_m=0.2, width_m=0.2, height_m=0.2, yaw_rad=math.pi / 4)
            >>> round(a.gap_m(b), 4)                     # b's corner points at a: 0.5 - 0.1 - 0.1 * sqrt(2)
            0.2586
        """
        top, other_top = self.bottom_m + self.height_m, other.bottom_m + other.height_m
        dz = max(0.0, self.bottom_m - other_top, other.bottom_m - top)
        return math.hypot(rectangle_distance(self.footprint_m(), other.footprint_m()), dz)

    @classmethod
    def from_bounds(cls, lower_m: np.ndarray, upper_m: np.ndarray) -> "Box3D":
        """Axis-aligned box spanning two corners (x forward, y left, z up); the longer footprint side is the width."""
        centre = (np.asarray(lower_m) + np.asarray(upper_m)) / 2
        size = np.asarray(upper_m) - np.asarray(lower_m)
        turned = size[0] > size[1]
        return cls(centre_m=(float(centre[0]), float(centre[1]), float(centre[2])),
                   depth_m=float(min(size[0], size[1])), width_m=float(max(size[0], size[1])),
                   height_m=float(size[2]), yaw_rad=-math.pi / 2 if turned else 0.0)


def _segment_distances(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(P, S) distances from (P, 2) points to (S, 2) segments."""
    edge = ends - starts
    t = np.clip(np.einsum("psk,sk->ps", points[:, None] - starts[None], edge) / np.maximum((edge ** 2).sum(1), 1e-30),
                0.0, 1.0)
    closest = starts[None] + t[..., None] * edge[None]
    return np.linalg.norm(points[:, None] - closest, axis=2)


def rectangle_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between two convex quadrilaterals given by their (4, 2) corners in order; 0 when they overlap.

    Example:
        >>> square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
        >>> rectangle_distance(square, square + [3.0, 0.0]), rectangle_distance(square, square + [0.5, 0.5])
        (2.0, 0.0)
    """
    # Separating axes: the edge normals of both; no separating axis means they overlap.
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
        pa, pb = a @ normals.T, b @ normals.T
        if np.all((pa.max(0) >= pb.min(0)) & (pb.max(0) >= pa.min(0))):
            continue
        # Separated: the closest pair is a corner of one and an edge of the other.
        return float(min(_segment_distances(a, b, np.roll(b, -1, axis=0)).min(),
                         _segment_distances(b, a, np.roll(a, -1, axis=0)).min()))
    return 0.0


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
        sigma_centre_m: one standard deviation of the box centre along scene x, y, z (the judge's
            uncertainty model, :mod:`~spatialvlm_ros.synthesis.judge`); zeros when no judge ran.
        sigma_size_m: one standard deviation of depth, width and height.
        on_support: its box reaches down to the support plane (it rests there; its elevation is 0).
        flags: why the judge distrusts this object (``judge.action: flag``); empty when it is trusted.
    """

    object_id: int
    name: str
    caption: str
    reference: str
    box: Box3D
    pixel_centre: tuple[float, float]
    n_points: int
    attributes: Mapping[str, str] = field(default_factory=dict)
    sigma_centre_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sigma_size_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    on_support: bool = False
    flags: tuple[str, ...] = ()


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
        dropped: captions removed (background, more than two near-duplicates, too few points, or the
            judge), for the record.
        dropped_reasons: why, one per ``dropped`` caption (``background``, ``ambiguous``,
            ``too_few_points``, or a judge reason such as ``truncated``).
    """

    image_id: str
    width: int
    height: int
    canonicalised: bool
    camera_to_scene: tuple[tuple[float, ...], ...]
    camera_height_m: float | None
    objects: tuple[SceneObject, ...]
    dropped: tuple[str, ...] = ()
    dropped_reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (lists, floats, strings)."""
        out = asdict(self)
        out["camera_to_scene"] = [list(row) for row in self.camera_to_scene]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SceneRecord":
        """Inverse of :meth:`to_json`."""
        tuples = ("pixel_centre", "sigma_centre_m", "sigma_size_m", "flags")
        objects = tuple(
            SceneObject(**{**o, "box": Box3D(**{**o["box"], "centre_m": tuple(o["box"]["centre_m"])}),
                           **{k: tuple(o[k]) for k in tuples if k in o}})
            for o in data["objects"])
        return cls(**{**data, "objects": objects, "dropped": tuple(data["dropped"]),
                      "dropped_reasons": tuple(data.get("dropped_reasons", ())),
                      "camera_to_scene": tuple(tuple(r) for r in data["camera_to_scene"])})
