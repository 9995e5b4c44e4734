"""A gripper's shape in its own frame, posed in the camera frame: distances from it, vectorised.

Convention of every model: the origin is the grasp point, midway between the two fingertip pads; +z
points along the approach (the fingers point along it); y is the direction the fingers open in; x
completes a right-handed frame. The parts are boxes, capsules and cylinders (axis z), axis-aligned in
that frame. Finger parts are given once and placed on both jaws at the current opening.

A pose reported in another convention (a flange, a hand frame) is mapped onto the grasp point by an
offset (``estimator.gripper.offset_xyz`` / ``offset_rpy``): ``T_camera_grasp = T_camera_reported @ offset``.

The presets:

* ``franka_hand``: Franka Emika Panda / FR3 hand, from its public collision meshes: the hand body
  0.062 x 0.204 x 0.058 m above the fingers, each finger 0.021 x 0.021 x 0.053 m, the grasp point
  (``panda_hand_tcp``) 0.1034 m from the flange; opening up to 0.08 m.
* ``robotiq_2f85``: Robotiq 2F-85, from its public dimensions (approximate boxes): the base and
  linkages 0.075 x 0.135 x 0.08 m, fingers with pads 0.022 x 0.016 x 0.08 m, the grasp point 0.15 m
  from the coupling; opening up to 0.085 m.
* ``sim``: this package's simulated gripper (``spatialvlm_ros/sim/scene.py``): two finger boxes 0.044 m
  apart, a palm box, a wrist cylinder; a fixed opening.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from spatialvlm_ros.config.gripper import GripperConfig
from spatialvlm_ros.errors import ConfigError


@dataclass(frozen=True)
class Part:
    """One convex part in the gripper frame.

    Attributes:
        kind: ``"box"`` (``size`` = half extents), ``"capsule"`` (``size`` = (radius,), ``centre`` = one end,
            ``end`` = the other) or ``"cylinder"`` (``size`` = (radius, half length), axis z).
        centre: (3,) the part's centre (a capsule's first end), metres.
        size: see ``kind``.
        end: (3,) a capsule's second end.
        finger: placed on both jaws: its centre's y is measured outward from the inner pad face.
    """

    kind: str
    centre: tuple[float, float, float]
    size: tuple[float, ...]
    end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    finger: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("box", "capsule", "cylinder"):
            raise ConfigError(f"gripper part kind {self.kind!r} is not one of box, capsule, cylinder")
        need = {"box": 3, "capsule": 1, "cylinder": 2}[self.kind]
        if len(self.size) != need or not all(s > 0 and np.isfinite(s) for s in self.size):
            raise ConfigError(f"gripper {self.kind} needs {need} positive size(s), got {self.size}")

    def moved_y(self, dy: float, mirror: bool) -> "Part":
        """The part shifted by ``dy`` along y, then mirrored (y -> -y) when ``mirror``."""
        sign = -1.0 if mirror else 1.0
        c, e = np.array(self.centre), np.array(self.end)
        c[1], e[1] = sign * (c[1] + dy), sign * (e[1] + dy)
        return replace(self, centre=tuple(c), end=tuple(e), finger=False)

    def distance(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed distances of (N, 3) gripper-frame points to the part (< 0 inside); the nearest surface points."""
        c = np.asarray(self.centre)
        if self.kind == "box":
            h = np.asarray(self.size)
            local = q - c
            d = np.abs(local) - h
            outside = np.any(d > 0, axis=1)
            near = np.clip(local, -h, h)
            k = np.argmax(d, axis=1)                                # inside: push out through the nearest face
            rows = np.flatnonzero(~outside)
            near[rows, k[rows]] = np.where(local[rows, k[rows]] >= 0, 1.0, -1.0) * h[k[rows]]
            dist = np.where(outside, np.linalg.norm(np.maximum(d, 0.0), axis=1), d.max(axis=1))
            return dist, near + c
        if self.kind == "capsule":
            (r,), e = self.size, np.asarray(self.end)
            ab = e - c
            t = np.clip((q - c) @ ab / max(float(ab @ ab), 1e-18), 0.0, 1.0)
            foot = c + t[:, None] * ab
            v = q - foot
            n = np.linalg.norm(v, axis=1)
            unit = np.where(n[:, None] > 1e-12, v / np.maximum(n, 1e-12)[:, None], np.array([1.0, 0.0, 0.0]))
            return n - r, foot + r * unit
        r, half = self.size
        local = q - c
        radial = np.linalg.norm(local[:, :2], axis=1)
        dr, dz = radial - r, np.abs(local[:, 2]) - half
        outside = (dr > 0) | (dz > 0)
        unit = np.where(radial[:, None] > 1e-12, local[:, :2] / np.maximum(radial, 1e-12)[:, None],
                        np.array([1.0, 0.0]))
        to_side = np.where(outside, dr > 0, dr >= dz)             # the nearest point is on the curved side
        near_xy = np.where(to_side[:, None], unit * r, local[:, :2])
        capped = np.where(local[:, 2] >= 0, half, -half)
        near_z = np.where(outside | to_side, np.clip(local[:, 2], -half, half), capped)
        dist = np.where(outside, np.hypot(np.maximum(dr, 0.0), np.maximum(dz, 0.0)), np.maximum(dr, dz))
        return dist, np.column_stack([near_xy, near_z]) + c

    def surface_samples(self, spacing: float) -> np.ndarray:
        """(M, 3) points on the part's surface no farther than about ``spacing`` apart (edges included)."""
        c = np.asarray(self.centre)
        if self.kind == "box":
            h = np.asarray(self.size)
            out = []
            for axis in range(3):
                u, v = [a for a in range(3) if a != axis]
                gu = np.linspace(-h[u], h[u], max(2, int(np.ceil(2 * h[u] / spacing)) + 1))
                gv = np.linspace(-h[v], h[v], max(2, int(np.ceil(2 * h[v] / spacing)) + 1))
                uu, vv = np.meshgrid(gu, gv, indexing="ij")
                for s in (-1.0, 1.0):
                    face = np.zeros((uu.size, 3))
                    face[:, u], face[:, v], face[:, axis] = uu.ravel(), vv.ravel(), s * h[axis]
                    out.append(face)
            return np.concatenate(out) + c
        if self.kind == "capsule":
            (r,), e = self.size, np.asarray(self.end)
            ab = e - c
            length = float(np.linalg.norm(ab))
            axis = ab / length if length > 1e-12 else np.array([0.0, 0.0, 1.0])
            sphere = _sphere_points(r, spacing)
            t = np.linspace(0.0, 1.0, max(2, int(np.ceil(length / spacing)) + 1))
            pick = np.abs(sphere @ axis) < 0.5 * spacing + 1e-12                      # the equator ring
            ring = sphere[pick] - np.outer(sphere[pick] @ axis, axis)
            ring = r * ring / np.maximum(np.linalg.norm(ring, axis=1, keepdims=True), 1e-12)
            body = (c + t[:, None, None] * ab + ring[None]).reshape(-1, 3)
            return np.concatenate([sphere + c, sphere + e, body])
        r, half = self.size
        n = max(8, int(np.ceil(2 * np.pi * r / spacing)))
        a = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
        z = np.linspace(-half, half, max(2, int(np.ceil(2 * half / spacing)) + 1))
        side = np.stack(np.broadcast_arrays(r * np.cos(a)[:, None], r * np.sin(a)[:, None], z[None]), -1).reshape(-1, 3)
        rings = np.linspace(0.0, r, max(2, int(np.ceil(r / spacing)) + 1))
        disk = np.stack(np.broadcast_arrays(rings[:, None] * np.cos(a)[None], rings[:, None] * np.sin(a)[None]),
                        -1).reshape(-1, 2)
        caps = np.concatenate([np.column_stack([disk, np.full(len(disk), s * half)]) for s in (-1.0, 1.0)])
        return np.concatenate([side, caps]) + c


def _sphere_points(r: float, spacing: float) -> np.ndarray:
    n = max(16, int(np.ceil(4 * np.pi * r * r / (spacing * spacing))))
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = np.pi * (1 + 5 ** 0.5) * k
    return r * np.column_stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)])


@dataclass(frozen=True, eq=False)
class GripperModel:
    """A gripper's parts in the grasp frame (see the module docstring for the convention).

    Attributes:
        name: preset name or ``"custom"``.
        parts: body parts (fixed) and finger parts (``finger=True``, placed on both jaws).
        max_opening_m: the widest opening between the pads.
        offset: (4, 4) the grasp frame in the reported pose's frame.
    """

    name: str
    parts: tuple[Part, ...]
    max_opening_m: float
    offset: np.ndarray = field(default_factory=lambda: np.eye(4))

    def solids(self, opening_m: float | None = None) -> tuple[Part, ...]:
        """The parts at an opening (default and clamped: ``[0, max_opening_m]``), fingers on both jaws."""
        w = self.max_opening_m if opening_m is None or not np.isfinite(opening_m) or opening_m < 0 else opening_m
        w = min(float(w), self.max_opening_m)
        out: list[Part] = []
        for p in self.parts:
            if not p.finger:
                out.append(p)
                continue
            half_y = p.size[1] if p.kind == "box" else p.size[0]
            out += [p.moved_y(0.5 * w + half_y, False), p.moved_y(0.5 * w + half_y, True)]
        return tuple(out)

    def grasp_pose(self, reported_pose: np.ndarray) -> np.ndarray:
        """(4, 4) the grasp frame in the camera frame, from the reported pose (its frame in the camera frame)."""
        return np.asarray(reported_pose, dtype=np.float64) @ self.offset


class PosedGripper:
    """A gripper model at one pose and opening: signed distances from it, in the camera frame.

    Args:
        model: the shape.
        pose: (4, 4) the *reported* frame in the camera optical frame (the model's offset is applied).
        opening_m: opening between the pads; None = the model's widest.
        spacing_m: spacing of the surface samples used against a completed solid.
    """

    def __init__(self, model: GripperModel, pose: np.ndarray, opening_m: float | None = None,
                 spacing_m: float = 0.0015) -> None:
        self.model = model
        self.pose = model.grasp_pose(pose)
        self.rotation, self.origin = self.pose[:3, :3], self.pose[:3, 3]
        self.parts = model.solids(opening_m)
        self._spacing = spacing_m
        self._samples: np.ndarray | None = None

    @property
    def grasp_point(self) -> np.ndarray:
        """(3,) the grasp point, camera frame."""
        return self.origin.copy()

    def to_gripper(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) camera-frame points in the gripper frame."""
        return (np.asarray(points, dtype=np.float64) - self.origin) @ self.rotation

    def distance(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed distances (< 0 inside) of (N, 3) camera-frame points to the gripper; its nearest points (camera)."""
        q = self.to_gripper(points)
        best = np.full(len(q), np.inf)
        near = np.zeros((len(q), 3))
        for part in self.parts:
            d, n = part.distance(q)
            better = d < best
            best[better], near[better] = d[better], n[better]
        return best, near @ self.rotation.T + self.origin

    def surface_points(self) -> np.ndarray:
        """(M, 3) samples of the gripper's surface, camera frame (cached)."""
        if self._samples is None:
            local = np.concatenate([p.surface_samples(self._spacing) for p in self.parts])
            self._samples = local @ self.rotation.T + self.origin
        return self._samples


def rpy_matrix(rpy: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """3x3 rotation of roll, pitch, yaw (fixed axes x, then y, then z: ``Rz @ Ry @ Rx``, as in URDF)."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def transform(xyz: tuple[float, ...] | np.ndarray, rpy: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """(4, 4) homogeneous transform of a translation and a roll-pitch-yaw rotation."""
    t = np.eye(4)
    t[:3, :3] = rpy_matrix(rpy)
    t[:3, 3] = np.asarray(xyz, dtype=np.float64)
    return t


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of a unit quaternion (x, y, z, w), as geometry_msgs carries it (normalised here)."""
    q = np.array([x, y, z, w], dtype=np.float64)
    n = float(np.linalg.norm(q))
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} has no rotation")
    x, y, z, w = q / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_quaternion(rot: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) unit quaternion of a 3x3 rotation."""
    m = np.asarray(rot, dtype=np.float64)
    t = np.trace(m)
    if t > 0:
        s = 2.0 * np.sqrt(t + 1.0)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s)
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        v = [0.0, 0.0, 0.0]
        v[i] = 0.25 * s
        v[j] = (m[j, i] + m[i, j]) / s
        v[k] = (m[k, i] + m[i, k]) / s
        q = (*v, (m[k, j] - m[j, k]) / s)
    return tuple(float(c) for c in q)  # type: ignore[return-value]


# Presets: (parts, max opening). Finger parts: centre y = 0 puts the inner pad face at the opening.
_FRANKA = ((Part("box", (0.0, 0.0, -0.0744), (0.031, 0.102, 0.029)),                # hand body, flange at z -0.1034
            Part("box", (0.0, 0.0, -0.0185), (0.0105, 0.0105, 0.0265), finger=True)), 0.08)
_ROBOTIQ = ((Part("box", (0.0, 0.0, -0.11), (0.0375, 0.0675, 0.04)),                # base + linkages
             Part("box", (0.0, 0.0, -0.0325), (0.011, 0.008, 0.04), finger=True)), 0.085)
# The simulator's (spatialvlm_ros/sim/scene.py _FINGER_HALF, _FINGER_INNER, _PALM_HALF, wrist).
_SIM = ((Part("box", (0.0, 0.0, 0.0), (0.012, 0.006, 0.025), finger=True),
         Part("box", (0.0, 0.0, -0.037), (0.02, 0.045, 0.012)),
         Part("cylinder", (0.0, 0.0, -0.079), (0.018, 0.03))), 0.044)
PRESETS: dict[str, tuple[tuple[Part, ...], float]] = {"franka_hand": _FRANKA, "robotiq_2f85": _ROBOTIQ, "sim": _SIM}


def parse_parts(text: str) -> tuple[Part, ...]:
    """Parts from ``'box HX HY HZ X Y Z; finger box ...; capsule R X1 Y1 Z1 X2 Y2 Z2; cylinder R H X Y Z'``.

    Raises:
        ConfigError: an entry that is not one of these, naming it.
    """
    parts = []
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        words = entry.split()
        finger = words[0] == "finger"
        words = words[1:] if finger else words
        try:
            kind, numbers = words[0], [float(w) for w in words[1:]]
        except (IndexError, ValueError) as err:
            raise ConfigError(f"estimator.gripper.custom_parts: cannot read {entry!r}") from err
        counts = {"box": 6, "capsule": 7, "cylinder": 5}
        if kind not in counts or len(numbers) != counts[kind]:
            raise ConfigError(f"estimator.gripper.custom_parts: {entry!r} must read 'box HX HY HZ X Y Z', "
                              "'capsule R X1 Y1 Z1 X2 Y2 Z2' or 'cylinder R HALF_LENGTH X Y Z'")
        if kind == "box":
            parts.append(Part("box", tuple(numbers[3:]), tuple(numbers[:3]), finger=finger))
        elif kind == "capsule":
            parts.append(Part("capsule", tuple(numbers[1:4]), (numbers[0],), end=tuple(numbers[4:]), finger=finger))
        else:
            parts.append(Part("cylinder", tuple(numbers[2:]), tuple(numbers[:2]), finger=finger))
    return tuple(parts)


def model_from_config(cfg: GripperConfig) -> GripperModel:
    """The shape model ``cfg`` names, with its offset.

    Raises:
        ConfigError: custom parts that cannot be read.
    """
    if cfg.model == "custom":
        parts, widest = parse_parts(cfg.custom_parts), cfg.custom_max_opening_m
        if not parts:
            raise ConfigError("estimator.gripper.custom_parts: model custom needs at least one part")
    else:
        parts, widest = PRESETS[cfg.model]
    return GripperModel(name=cfg.model, parts=parts, max_opening_m=widest,
                        offset=transform(cfg.offset_xyz, cfg.offset_rpy))
