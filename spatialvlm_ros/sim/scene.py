"""Scene layout (seeded) and the MJCF text built from it.

World frame: z up, metres; the table top is the plane ``z = TABLE_TOP_Z``; the camera sits in front
of the table (world -y) looking along +y and down, so world +x is image right. The gripper comes from
the left (world -x) and above, so it never hides the target and the gap stays visible.

With ``viewpoint.random`` the camera is drawn anywhere around the target instead, and the approach from
any side of it: behind the target (the target hides the gripper's near side), beside it, or between the
camera and the target (the gripper hides the target's near side).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from spatialvlm_ros.config import SimConfig
from spatialvlm_ros.errors import SimulationError
from spatialvlm_ros.geometry.gripper import PRESETS, GripperModel, Part
from spatialvlm_ros.sim.appearance import Appearance
from spatialvlm_ros.sim.colours import (FLOOR_RGBA, TABLE_RGBA, WALL_RGBA, ObjectSpec, colour_rgba,
                                        jitter_rgba)

logger = logging.getLogger(__name__)

TABLE_TOP_Z = 0.75
TABLE_HALF = (0.60, 0.40)            # half extents in x, y
TABLE_CENTRE_XY = (0.0, 0.10)
CAMERA_NAME = "rgbd"
GRIPPER_BODY = "gripper"
#: The wrist camera (``build_mjcf(..., wrist_camera=True)``), fixed to the gripper body. In the gripper frame (z
#: along the fingers, y the opening direction, upwards on a level approach) it sits 26 cm behind the grasp point
#: and 10 cm above its axis and looks along the fingers, tilted 14 degrees down: the whole hand is in the lower
#: half of the image, clear of its border (so the data engine keeps it as an object), and the target lies ahead
#: of it. As the gripper closes in, the target grows in this view while the hand does not: the gap shows in
#: sizes, not only along a line of sight. It has the main camera's field of view. These are for the default
#: ``sim`` hand; a larger hand's camera sits further back and up in proportion to its size (:func:`gripper_reach`).
WRIST_CAMERA_NAME = "rgbd_wrist"
WRIST_CAMERA_POS = (0.0, 0.10, -0.26)
WRIST_CAMERA_FORWARD = (0.0, -0.25, 1.0)

#: Half height of each kind: the object's centre sits this far above the table top.
HALF_HEIGHT = {"can": 0.061, "box": 0.035, "ball": 0.035, "bowl": 0.025,
               "mug": 0.048, "bottle": 0.09, "cone": 0.045, "wedge": 0.03}
#: Radius of a vertical cylinder enclosing each kind (overlap test when placing objects).
FOOTPRINT = {"can": 0.033, "box": 0.057, "ball": 0.035, "bowl": 0.085,
             "mug": 0.072, "bottle": 0.032, "cone": 0.042, "wedge": 0.059}
#: The mesh kinds' vertices in the object's frame (MuJoCo draws and collides with their convex hull).
_CONE_SIDES = 20
MESH_VERTICES = {
    "cone": np.vstack([[(0.042 * np.cos(a), 0.042 * np.sin(a), -0.045)
                        for a in np.linspace(0.0, 2 * np.pi, _CONE_SIDES, endpoint=False)], [(0.0, 0.0, 0.045)]]),
    # A ramp: a right triangle 6 cm tall over a 10 x 6 cm footprint, extruded across.
    "wedge": np.array([(x, y, -0.03) for x in (-0.05, 0.05) for y in (-0.03, 0.03)]
                      + [(x, 0.03, 0.03) for x in (-0.05, 0.05)]),
}

# The gripper is drawn from a shape preset of spatialvlm_ros/geometry/gripper.py (``sim.gripper_model``), in
# its own frame: origin = grasp point (centre of the region between the finger pads), +z = approach
# direction (fingers point along it), y = opening direction, x = finger width.
#: Opening between the finger pads of the default ``sim`` gripper (fixed; < a can's diameter).
GRIPPER_OPENING_M = PRESETS["sim"][1]

# Canonical (randomise=False) layout.
_CANONICAL_TARGET_XY = (0.0, 0.05)
_CANONICAL_SLOTS = ((0.20, 0.14), (0.24, -0.06), (0.05, 0.30), (0.38, 0.18), (-0.15, 0.32), (0.42, -0.04))
_CANONICAL_EYE = (0.0, -0.68, 1.30)
_CANONICAL_LOOK_AT = (-0.05, 0.06, 0.86)
_CANONICAL_APPROACH = (np.pi, np.deg2rad(40.0))        # azimuth, elevation of target -> gripper
_CANONICAL_LIGHT = (0.3, -0.4, 2.2)
_PLACE_TRIES = 500
# Random viewpoints: their own random stream (so turning them on leaves the other draws alone), the
# approach's elevation range, and the least angle between the approach and the line of sight (the
# gripper straight between camera and target would hide the whole target).
_VIEW_STREAM = 0x7AE
_VIEW_APPROACH_ELEVATION_DEG = (5.0, 50.0)
_VIEW_MIN_ANGLE_TO_CAMERA_DEG = 30.0
_VIEW_TRIES = 400


@dataclass(frozen=True)
class SceneLayout:
    """Everything the MJCF depends on, drawn once per simulator from the config (and its seed).

    Attributes:
        objects: object specs; index 0 is the target, the rest are distractors.
        xy: (N, 2) object centres on the table, world metres.
        yaw: (N,) rotation about world z, radians.
        rgba: (N, 4) object colours.
        gripper_rgba: (4,) gripper colour.
        approach: (3,) unit vector from the target centre towards the gripper's start.
        camera_eye: (3,) camera position, world.
        camera_look_at: (3,) point the optical axis passes through, world.
        light_pos: (3,) key light position, world (it points at the target).
        light_diffuse: key light intensity in [0, 1].
    """

    objects: tuple[ObjectSpec, ...]
    xy: np.ndarray
    yaw: np.ndarray
    rgba: np.ndarray
    gripper_rgba: np.ndarray
    approach: np.ndarray
    camera_eye: np.ndarray
    camera_look_at: np.ndarray
    light_pos: np.ndarray
    light_diffuse: float

    def centre(self, i: int) -> np.ndarray:
        """Return the world position (3,) of object number i: a can's axis midpoint, a ball's centre, ..."""
        return np.array([*self.xy[i], TABLE_TOP_Z + HALF_HEIGHT[self.objects[i].kind]])


def _approach_vector(azimuth: float, elevation: float) -> np.ndarray:
    return np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])


def _parse_objects(cfg: SimConfig) -> tuple[ObjectSpec, ...]:
    ObjectSpec.make(cfg.gripper_colour, "gripper", allow_gripper=True)
    objects = (ObjectSpec.make(cfg.target_colour, cfg.target),) + tuple(ObjectSpec.parse(p) for p in cfg.distractors)
    phrases = [o.phrase for o in objects]
    if len(set(phrases)) != len(phrases):
        raise SimulationError(f"object phrases must be unique (they are the labels), got {phrases}")
    return objects


class _Pinhole:
    """Projection of the layout's camera (same axes as the MJCF camera), for placing objects in view."""

    def __init__(self, cfg: SimConfig, eye: np.ndarray, look_at: np.ndarray) -> None:
        right, up = _camera_xyaxes(eye, look_at)
        self.rot = np.stack([right, -up, np.cross(right, -up)])        # rows: optical x, y, z in world
        self.eye = eye
        self.f = 0.5 * cfg.height / np.tan(np.deg2rad(cfg.fovy_deg) / 2.0)
        self.size = np.array([cfg.width, cfg.height], dtype=np.float64)

    def project(self, p: np.ndarray, radius: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres (..., 2) of world points (..., 3) and pixel radii (...) of spheres of ``radius``."""
        cam = (p - self.eye) @ self.rot.T
        z = cam[..., 2]
        return self.f * cam[..., :2] / z[..., None] + (self.size - 1) / 2.0, self.f * radius / z


def _random_view(cfg: SimConfig, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Target xy, approach, camera eye and look-at of a random viewpoint (``cfg.viewpoint``), seeded.

    Draws until the target and the gripper, at both ends of its path, are in view and in front of the
    camera, and the approach does not point straight at the camera.

    Raises:
        SimulationError: no draw fits (a field of view too narrow for the distances asked).
    """
    vp = cfg.viewpoint
    rng = np.random.default_rng([cfg.seed, _VIEW_STREAM])
    for _ in range(_VIEW_TRIES):
        target_xy = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.05, 0.25)])
        centre = np.array([*target_xy, TABLE_TOP_Z + HALF_HEIGHT[kind]])
        azimuth = rng.uniform(-np.pi, np.pi)
        to_camera = _approach_vector(azimuth, np.deg2rad(rng.uniform(vp.min_elevation_deg, vp.max_elevation_deg)))
        eye = centre + rng.uniform(vp.min_distance_m, vp.max_distance_m) * to_camera
        look_at = centre + rng.uniform(-0.03, 0.03, size=3)
        approach = _approach_vector(azimuth + rng.uniform(-np.pi, np.pi),
                                    np.deg2rad(rng.uniform(*_VIEW_APPROACH_ELEVATION_DEG)))
        if approach @ to_camera > np.cos(np.deg2rad(_VIEW_MIN_ANGLE_TO_CAMERA_DEG)):
            continue
        camera = _Pinhole(cfg, eye, look_at)
        # The gripper's bounding sphere (it reaches ~12 cm back from the grasp point), at both path ends.
        reach = _bound_radius(kind) + np.array([cfg.start_gap_m, cfg.end_gap_m])
        spheres = np.concatenate([centre[None], centre + (reach[:, None] + 0.05) * approach])
        gripper_radius = max(0.09, gripper_reach(cfg) - 0.05)     # about 5 cm behind the grasp point
        radii = np.array([_bound_radius(kind), gripper_radius, gripper_radius])
        depth = (spheres - eye) @ camera.rot[2]
        if np.any(depth - radii < 0.15):
            continue
        uv, r = camera.project(spheres, radii)
        if np.all((uv - r[:, None] >= 0.02 * camera.size) & (uv + r[:, None] <= 0.98 * camera.size)):
            return target_xy, approach, eye, look_at
    raise SimulationError("no random viewpoint keeps the target and the gripper in view; widen sim.fovy_deg or "
                          "move the camera away (sim.viewpoint.min_distance_m)")


def _bound_radius(kind: str) -> float:
    return float(np.hypot(FOOTPRINT[kind], HALF_HEIGHT[kind]))


def _placeable(p: np.ndarray, kind: str, placed: list[tuple[np.ndarray, str]], target_xy: np.ndarray,
               approach_xy: np.ndarray, camera: _Pinhole) -> np.ndarray:
    """Tell which of the candidate positions ``p`` (M, 2) fit a distractor of ``kind``: (M,) bool.

    It must be on the table, not overlapping, not in the gripper's way, and fully in view without
    hiding or being hidden by another object. All candidates are tested at once (a Python loop over
    hundreds of them was most of a scene's set-up time).
    """
    lo = np.array(TABLE_CENTRE_XY) - np.array(TABLE_HALF) + FOOTPRINT[kind] + 0.02
    hi = np.array(TABLE_CENTRE_XY) + np.array(TABLE_HALF) - FOOTPRINT[kind] - 0.02
    ok = np.all((p >= lo) & (p <= hi), axis=1)
    # Keep the gripper's side of the target free: it comes from there.
    ok &= (p - target_xy) @ approach_xy <= -0.02
    centre = np.concatenate([p, np.full((len(p), 1), TABLE_TOP_Z + HALF_HEIGHT[kind])], axis=1)
    uv, r = camera.project(centre, _bound_radius(kind))
    ok &= np.all((uv - r[:, None] >= 0.05 * camera.size) & (uv + r[:, None] <= 0.95 * camera.size), axis=1)
    for q, other in placed:
        ok &= np.linalg.norm(p - q, axis=1) >= FOOTPRINT[kind] + FOOTPRINT[other] + 0.03
        uv_q, r_q = camera.project(np.array([*q, TABLE_TOP_Z + HALF_HEIGHT[other]]), _bound_radius(other))
        ok &= np.linalg.norm(uv - uv_q, axis=1) >= r + r_q     # else their silhouettes could overlap
    return ok


def make_layout(cfg: SimConfig) -> SceneLayout:
    """Draw the scene layout from ``cfg``; seeded and deterministic when ``cfg.randomise``, canonical otherwise.

    Raises:
        SimulationError: unknown colour or kind, duplicate phrases, or distractors that do not fit.

    Example:
        >>> from spatialvlm_ros.config import SimConfig
        >>> make_layout(SimConfig()).objects[0].phrase
        'red can'
    """
    objects = _parse_objects(cfg)
    rng = np.random.default_rng(cfg.seed)
    rgba = np.stack([colour_rgba(o.colour) for o in objects])
    gripper_rgba = colour_rgba(cfg.gripper_colour)
    if cfg.randomise:
        target_xy = np.array([rng.uniform(-0.08, 0.08), rng.uniform(-0.02, 0.14)])
        # Azimuth mostly away from the camera: a gripper coming towards it would grow and leave the image.
        approach = _approach_vector(np.pi + rng.uniform(-0.45, 0.15), np.deg2rad(rng.uniform(30.0, 50.0)))
        eye = np.array(_CANONICAL_EYE) + rng.uniform(-0.04, 0.04, size=3)
        look_at = np.array(_CANONICAL_LOOK_AT) + rng.uniform(-0.02, 0.02, size=3)
        light_pos = np.array(_CANONICAL_LIGHT) + np.array([*rng.uniform(-0.4, 0.4, size=2), 0.0])
        light_diffuse = float(rng.uniform(0.55, 0.85))
        rgba = np.stack([jitter_rgba(c, rng) for c in rgba])
        gripper_rgba = jitter_rgba(gripper_rgba, rng)
    else:
        target_xy = np.array(_CANONICAL_TARGET_XY)
        approach = _approach_vector(*_CANONICAL_APPROACH)
        eye, look_at = np.array(_CANONICAL_EYE), np.array(_CANONICAL_LOOK_AT)
        light_pos, light_diffuse = np.array(_CANONICAL_LIGHT), 0.7
    if cfg.viewpoint.random:
        target_xy, approach, eye, look_at = _random_view(cfg, objects[0].kind)
    if any(cfg.camera_offset_m):
        eye = eye + np.array(cfg.camera_offset_m)
    approach_xy = approach[:2] / np.linalg.norm(approach[:2])
    camera = _Pinhole(cfg, eye, look_at)

    placed: list[tuple[np.ndarray, str]] = [(target_xy, objects[0].kind)]
    slots = np.empty((0, 2)) if cfg.randomise else np.array(_CANONICAL_SLOTS)
    # The canonical layout must not depend on the seed, so its fallback sampler has a fixed one.
    place_rng = rng if cfg.randomise else np.random.default_rng(0)
    for obj in objects[1:]:
        # Canonical slots first (fixed layout); when none fits, or when randomising, rejection-sample.
        # One draw of all the tries, x and y interleaved: the same numbers as drawing them one by one.
        tries = place_rng.uniform((-0.35, -0.2), (0.5, 0.4), size=(_PLACE_TRIES, 2))
        candidates = np.concatenate([slots, tries])
        fits = np.flatnonzero(_placeable(candidates, obj.kind, placed, target_xy, approach_xy, camera))
        if fits.size == 0:
            raise SimulationError(f"could not place {obj.phrase!r} on the table in view without overlap; "
                                  "use fewer distractors")
        placed.append((candidates[fits[0]], obj.kind))
        slots = np.delete(slots, fits[0], axis=0) if fits[0] < len(slots) else slots
    xy = np.stack([p for p, _ in placed])
    yaw = rng.uniform(-np.pi, np.pi, size=len(objects)) if cfg.randomise else np.full(len(objects), 0.3)
    logger.debug("layout: %s at %s", [o.phrase for o in objects], xy.round(3).tolist())
    return SceneLayout(objects=objects, xy=xy, yaw=yaw, rgba=rgba, gripper_rgba=gripper_rgba, approach=approach,
                       camera_eye=eye, camera_look_at=look_at, light_pos=light_pos, light_diffuse=light_diffuse)


def gripper_axes(approach: np.ndarray) -> np.ndarray:
    """3x3 rotation (columns = gripper x, y, z in world) for a gripper whose fingers point along ``-approach``.

    The opening direction (y) lies in the vertical plane through the approach line, so the camera in front
    sees the two jaws apart, as in the SpatialVLM robot figure.
    """
    z = -approach / np.linalg.norm(approach)
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def _fmt(values: np.ndarray | tuple[float, ...] | list[float]) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _object_geoms(kind: str, material: str, name: str) -> list[str]:
    """MJCF geoms of one object in its body frame (origin = object centre); every part convex (for mj_geomDistance)."""
    common = f'material="{material}"'
    if kind == "can":
        return [f'<geom name="{name}_0" type="cylinder" size="0.033 {HALF_HEIGHT["can"]}" {common}/>']
    if kind == "box":
        return [f'<geom name="{name}_0" type="box" size="0.045 0.035 {HALF_HEIGHT["box"]}" {common}/>']
    if kind == "ball":
        return [f'<geom name="{name}_0" type="sphere" size="{HALF_HEIGHT["ball"]}" {common}/>']
    if kind in MESH_VERTICES:
        return [f'<geom name="{name}_0" type="mesh" mesh="mesh_{kind}" {common}/>']
    if kind == "mug":
        # A closed cylinder and a handle of three capsules on its +x side.
        h = HALF_HEIGHT["mug"]
        handle = ((0.04, -0.025), (0.065, -0.02), (0.065, 0.02), (0.04, 0.025))
        return [f'<geom name="{name}_0" type="cylinder" size="0.04 {h}" {common}/>'] + [
            f'<geom name="{name}_handle{k}" type="capsule" size="0.007" '
            f'fromto="{a[0]} 0 {a[1]} {b[0]} 0 {b[1]}" {common}/>' for k, (a, b) in enumerate(zip(handle, handle[1:]))]
    if kind == "bottle":
        # Body, shoulder and neck: three cylinders stacked, 18 cm in all.
        parts = ((0.032, -0.09, 0.03), (0.022, 0.03, 0.05), (0.013, 0.05, 0.09))
        return [f'<geom name="{name}_{k}" type="cylinder" size="{r} {(top - bottom) / 2:.4g}" '
                f'pos="0 0 {(top + bottom) / 2:.4g}" {common}/>' for k, (r, bottom, top) in enumerate(parts)]
    # bowl: a thin base disk, slanted capsule staves and a capsule rim (a coarse open bowl, all convex parts)
    n, r_bottom, r_top, r_cap, z_lo, z_hi = 12, 0.045, 0.075, 0.01, -0.015, 0.015
    geoms = [f'<geom name="{name}_base" type="cylinder" size="0.05 0.005" pos="0 0 -0.02" {common}/>']
    angles = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    top = np.stack([r_top * np.cos(angles), r_top * np.sin(angles), np.full(n, z_hi)], axis=1)
    for k, a in enumerate(angles):
        bottom = (r_bottom * np.cos(a), r_bottom * np.sin(a), z_lo)
        geoms.append(f'<geom name="{name}_stave{k}" type="capsule" size="{r_cap}" '
                     f'fromto="{_fmt(bottom)} {_fmt(top[k])}" {common}/>')
        geoms.append(f'<geom name="{name}_rim{k}" type="capsule" size="{r_cap}" '
                     f'fromto="{_fmt(top[k])} {_fmt(top[(k + 1) % n])}" {common}/>')
    return geoms


def gripper_opening(cfg: SimConfig) -> float:
    """Opening between the pads of ``cfg``'s gripper: its model's widest times ``sim.gripper_open_fraction``."""
    return PRESETS[cfg.gripper_model][1] * cfg.gripper_open_fraction


def _gripper_solids(cfg: SimConfig) -> tuple[tuple[Part, ...], list[str]]:
    """The parts of ``cfg``'s gripper at its opening (fingers on both jaws), and their geom names."""
    parts, widest = PRESETS[cfg.gripper_model]
    names: list[str] = []
    for k, part in enumerate(parts):        # the order GripperModel.solids places them in
        finger = "gripper_finger" if k == 0 else f"gripper_finger{k}"
        names += [f"{finger}_a", f"{finger}_b"] if part.finger else [f"gripper_part{k}"]
    return GripperModel(cfg.gripper_model, parts, widest).solids(gripper_opening(cfg)), names


def gripper_reach(cfg: SimConfig) -> float:
    """Radius of a sphere about the grasp point that holds the whole gripper of ``cfg`` (view checks)."""
    corners = []
    for p in _gripper_solids(cfg)[0]:
        size = np.asarray(p.size)
        half = size if p.kind == "box" else np.array([size[0], size[0], size[-1] if p.kind == "cylinder" else 0])
        corners += [np.abs(np.asarray(p.centre)) + half, np.abs(np.asarray(p.end)) + half]
    return float(max(np.linalg.norm(c) for c in corners))


def _part_geom(part: Part, name: str) -> str:
    if part.kind == "box":
        shape = f'type="box" size="{_fmt(part.size)}" pos="{_fmt(part.centre)}"'
    elif part.kind == "cylinder":
        shape = f'type="cylinder" size="{_fmt(part.size)}" pos="{_fmt(part.centre)}"'
    else:
        shape = f'type="capsule" size="{_fmt(part.size)}" fromto="{_fmt(part.centre)} {_fmt(part.end)}"'
    return f'<geom name="{name}" {shape} material="m_gripper"/>'


def _gripper_body(cfg: SimConfig, layout: SceneLayout, wrist_camera: bool = False) -> str:
    axes = gripper_axes(layout.approach)
    geoms = [_part_geom(part, name) for part, name in zip(*_gripper_solids(cfg))]
    if wrist_camera:
        # WRIST_CAMERA_POS suits the default hand; a larger one moves it back and up in proportion, to stay in view.
        eye = np.asarray(WRIST_CAMERA_POS) * gripper_reach(cfg) / gripper_reach(replace(cfg, gripper_model="sim"))
        right, up = _camera_xyaxes(eye, eye + WRIST_CAMERA_FORWARD, up=(0.0, 1.0, 0.0))
        geoms.append(f'<camera name="{WRIST_CAMERA_NAME}" pos="{_fmt(eye)}" xyaxes="{_fmt(right)} {_fmt(up)}" '
                     f'fovy="{cfg.fovy_deg}"/>')
    start = layout.centre(0) + 0.5 * layout.approach
    body = "\n      ".join(geoms)
    return f"""
    <body name="{GRIPPER_BODY}" mocap="true" pos="{_fmt(start)}" xyaxes="{_fmt(axes[:, 0])} {_fmt(axes[:, 1])}">
      {body}
    </body>"""


def camera_name(k: int) -> str:
    """The MJCF name of camera ``k``: ``CAMERA_NAME`` for the main one (0), then ``rgbd1``, ``rgbd2``, ..."""
    return f"{CAMERA_NAME}{k or ''}"


def _camera_xyaxes(eye: np.ndarray, look_at: np.ndarray,
                   up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Return the MuJoCo camera's x (image right) and y (image up) axes; it looks along its -z, ``up`` up-ish."""
    forward = (look_at - eye) / np.linalg.norm(look_at - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    return right, np.cross(right, forward)


_PLAIN_SCENERY = (f'<material name="m_table" rgba="{_fmt(TABLE_RGBA)}" specular="0.05" shininess="0.1"/>\n'
                  f'    <material name="m_floor" rgba="{_fmt(FLOOR_RGBA)}" specular="0" shininess="0"/>\n'
                  f'    <material name="m_wall" rgba="{_fmt(WALL_RGBA)}" specular="0" shininess="0"/>')
# MuJoCo builtin textures of each scenery texture family (spatialvlm_ros/sim/appearance.py).
_TEXTURE_BUILTIN = {"flat": 'builtin="flat"', "checker": 'builtin="checker"',
                    "speckle": 'builtin="flat" mark="random" random="0.25"',
                    "gradient": 'builtin="gradient"', "tiles": 'builtin="flat" mark="edge"'}


@dataclass(frozen=True)
class _Look:
    """The MJCF pieces that depend on the appearance: materials, object shades, headlight, clutter."""

    scenery: str
    rgba: np.ndarray
    gripper_rgba: np.ndarray
    gloss: str
    ambient: str
    clutter: str

    @classmethod
    def of(cls, cfg: SimConfig, layout: SceneLayout, appearance: Appearance | None) -> "_Look":
        if appearance is None:
            return cls(_PLAIN_SCENERY, layout.rgba, layout.gripper_rgba, 'specular="0.15" shininess="0.2"',
                       "0.35 0.35 0.35", "")
        scenery = []
        for name, (first, second) in (("table", appearance.table_rgb), ("floor", appearance.floor_rgb),
                                      ("wall", appearance.wall_rgb)):
            scenery.append(f'<texture name="t_{name}" type="2d" {_TEXTURE_BUILTIN[appearance.texture]} '
                           f'rgb1="{_fmt(first)}" rgb2="{_fmt(second)}" markrgb="{_fmt(second)}" width="128" '
                           f'height="128"/>\n    <material name="m_{name}" texture="t_{name}" texuniform="true" '
                           f'texrepeat="{_fmt([appearance.texture_repeat] * 2)}" specular="0.05" shininess="0.1"/>')
        rgba = np.stack([appearance.shade(o.colour, i) for i, o in enumerate(layout.objects)])
        clutter = "".join(
            f'\n    <geom name="clutter{k}" type="{kind}" size="{_fmt([size] * (1 if kind == "sphere" else 3))}" '
            f'pos="{x:.4g} {y:.4g} {size:.4g}" rgba="{_fmt([*rgb, 1.0])}"/>'
            for k, (kind, x, y, size, rgb) in enumerate(appearance.clutter))
        return cls("\n    ".join(scenery), rgba, appearance.shade(cfg.gripper_colour, -1),
                   f'specular="{appearance.specular:.3g}" shininess="{appearance.shininess:.3g}"',
                   _fmt([appearance.ambient] * 3), clutter)


def _appearance_lights(appearance: Appearance, target: np.ndarray) -> str:
    """The appearance's lights, each pointed at the target."""
    return "\n    ".join(
        f'<light name="{"key" if k == 0 else f"light{k}"}" pos="{_fmt(light.pos)}" '
        f'dir="{_fmt(target - np.asarray(light.pos))}" diffuse="{_fmt(light.diffuse)}" specular="0.1 0.1 0.1" '
        f'castshadow="{str(light.shadows).lower()}" cutoff="70"/>'
        for k, light in enumerate(appearance.lights))


#: Physics mode (``build_mjcf(..., free_target=True)``): the dynamic gripper's mass (kg), the mocap body that
#: drives it through a weld, and the soft-constraint references. The weld is 20x softer than a contact
#: (time constant 0.1 s against 0.005 s), so a blocked gripper stays on the surface (under 1 mm in) instead
#: of being pulled into it; 2 kg lets it push or topple a 0.42 kg can.
GRIPPER_DRIVER_BODY = "gripper_driver"
_PHYSICS_GRIPPER_MASS = 2.0
_PHYSICS_WELD_SOLREF = "0.1 1"
_PHYSICS_CONTACT_SOLREF = "0.005 1"     # every contact 4x stiffer than MuJoCo's default (needs a 2 ms step)
PHYSICS_TIMESTEP = 0.002


def _physical_gripper(gripper_xml: str) -> str:
    """Turn the mocap gripper body into a free, gravity-compensated body welded to a mocap driver.

    Works on :func:`_gripper_body`'s text (so that function stays as it is): ``mocap="true"`` becomes a
    free joint plus an explicit inertial; the driver is a geom-less mocap body the simulator moves.
    """
    head, sep, rest = gripper_xml.partition(">")
    if 'mocap="true"' not in head or not sep:
        raise SimulationError("physics mode: the gripper body is not a mocap body; cannot make it free")
    head = head.replace('mocap="true"', 'gravcomp="1"')
    inner = (f'\n      <freejoint name="{GRIPPER_BODY}_free"/>'
             f'\n      <inertial pos="0 0 0" mass="{_PHYSICS_GRIPPER_MASS}" diaginertia="0.01 0.01 0.01"/>')
    return f'{head}>{inner}{rest}\n    <body name="{GRIPPER_DRIVER_BODY}" mocap="true"/>'


def build_mjcf(cfg: SimConfig, layout: SceneLayout, *, tessellation: tuple[int, int] | None = None,
               free_target: bool = False, appearance: Appearance | None = None,
               extra_camera_offsets_m: Sequence[Sequence[float]] = (), wrist_camera: bool = False) -> str:
    """MJCF text of the room, table, objects, mocap gripper, key light and RGB-D camera (or cameras).

    Rendering settings chosen for sensor-like output and CPU speed: no multisampling (segmentation ids
    must not be blended at edges), near/far clip 1 cm / 10 m (``znear``/``zfar`` are fractions of
    ``extent`` = 2 m), a 512 px shadow map (on OSMesa the shadow pass dominates: 2048 px costs ~3x the frame).

    Args:
        cfg: the scene settings (image size, field of view).
        layout: the drawn layout.
        tessellation: (slices, stacks) of the drawn spheres, capsules and cylinders; default MuJoCo's (28, 16).
            A bowl is 24 capsules, so on CPU rendering the triangle count sets much of a frame's cost;
            (16, 8) cuts it to under a third and moves a drawn surface by under 1 mm (a can's side, a ball).
        free_target: physics mode (the reach env's): the target gets a free joint (it rests on the table and
            can be pushed or toppled), and the gripper becomes a dynamic body welded to a mocap driver
            (``GRIPPER_DRIVER_BODY``), so it collides with the target and the table instead of passing
            through. Default False: the static, kinematic scene of the data engine and the demo, whose
            text is unchanged.
        appearance: a randomised look (:mod:`spatialvlm_ros.sim.appearance`): scenery textures, object and
            gripper shades and materials, lights, floor clutter. Default None: the plain look. Geometry and
            truth are the same either way.
        extra_camera_offsets_m: more cameras, ``rgbd1``, ``rgbd2``, ... (``CAMERA_NAME`` and a number): each at
            the main camera's eye plus this (x, y, z) offset, world metres, looking at the same point with the
            same field of view. Default none: the text is unchanged.
        wrist_camera: one more camera, ``WRIST_CAMERA_NAME``, fixed to the gripper body (it moves with the
            gripper; see ``WRIST_CAMERA_POS``). Default False: the text is unchanged.

    Raises:
        SimulationError: ``tessellation`` below 3 slices or stacks (MuJoCo would accept it and draw garbage),
            or a camera offset that is not three finite numbers or that puts the camera on, above or below the
            point it looks at.
    """
    if tessellation is not None and min(tessellation) < 3:
        raise SimulationError(f"tessellation needs at least 3 slices and 3 stacks, got {tessellation}")
    eyes = [layout.camera_eye]
    for offset in extra_camera_offsets_m:
        if np.shape(offset) != (3,) or not np.all(np.isfinite(np.asarray(offset, dtype=float))):
            raise SimulationError(f"a camera offset must be 3 finite numbers (x y z metres), got {offset!r}")
        eyes.append(layout.camera_eye + np.asarray(offset, dtype=float))
        look = layout.camera_look_at - eyes[-1]
        # On the look-at point, or straight above or below it, the camera has no defined "right".
        if np.linalg.norm(np.cross(look, [0.0, 0.0, 1.0])) < 1e-3 * max(np.linalg.norm(look), 1e-9):
            raise SimulationError(f"a camera offset must not put the camera on, above or below the point the cameras "
                                  f"look at, got {offset!r}")
    cameras = "\n    ".join(
        f'<camera name="{camera_name(k)}" pos="{_fmt(eye)}" '
        f'xyaxes="{" ".join(_fmt(v) for v in _camera_xyaxes(eye, layout.camera_look_at))}" fovy="{cfg.fovy_deg}"/>'
        for k, eye in enumerate(eyes))
    light_dir = layout.centre(0) - layout.light_pos
    look = _Look.of(cfg, layout, appearance)
    materials = [f'<material name="m_obj{i}" rgba="{_fmt(c)}" {look.gloss}/>' for i, c in enumerate(look.rgba)]
    materials += [f'<mesh name="mesh_{kind}" vertex="{_fmt(MESH_VERTICES[kind].ravel())}"/>'
                  for kind in sorted({o.kind for o in layout.objects} & set(MESH_VERTICES))]
    bodies = []
    for i, obj in enumerate(layout.objects):
        geoms = "\n      ".join(_object_geoms(obj.kind, f"m_obj{i}", f"obj{i}"))
        if free_target and i == 0:
            geoms = f'<freejoint name="obj{i}_free"/>\n      {geoms}'
        bodies.append(f'<body name="obj{i}" pos="{_fmt(layout.centre(i))}" euler="0 0 {layout.yaw[i]:.6g}">\n'
                      f'      {geoms}\n    </body>')
    tx, ty = TABLE_CENTRE_XY
    hx, hy = TABLE_HALF
    legs = "\n    ".join(
        f'<geom name="table_leg{k}" type="box" size="0.025 0.025 {TABLE_TOP_Z / 2 - 0.01:.4g}" '
        f'pos="{tx + sx * (hx - 0.05):.4g} {ty + sy * (hy - 0.05):.4g} {TABLE_TOP_Z / 2 - 0.02:.4g}" '
        'material="m_table"/>'
        for k, (sx, sy) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))))
    light_diffuse = _fmt([layout.light_diffuse * c for c in cfg.light_rgb])
    extra_lights = ""
    if cfg.extra_lights:   # dimmer lights above the table, at seeded places
        rng = np.random.default_rng([cfg.seed, 0x11647])
        extra_lights = "".join(
            f'\n    <light name="extra{k}" pos="{_fmt([*rng.uniform(-0.8, 0.8, 2), rng.uniform(1.6, 2.4)])}" '
            f'dir="0 0 -1" diffuse="{_fmt([0.25 * c for c in cfg.light_rgb])}" specular="0 0 0" castshadow="false"/>'
            for k in range(cfg.extra_lights))
    key_light = (f'<light name="key" pos="{_fmt(layout.light_pos)}" dir="{_fmt(light_dir)}" diffuse="{light_diffuse}"\n'
                 '           specular="0.1 0.1 0.1" castshadow="true" cutoff="60"/>')
    if appearance is not None:
        key_light, extra_lights = _appearance_lights(appearance, layout.centre(0)), ""
    quality = "" if tessellation is None else f' numslices="{tessellation[0]}" numstacks="{tessellation[1]}"'
    gripper = _gripper_body(cfg, layout, wrist_camera).strip()
    physics = ""
    if free_target:
        gripper = _physical_gripper(gripper)
        physics = (f'\n  <option timestep="{PHYSICS_TIMESTEP}" o_solref="{_PHYSICS_CONTACT_SOLREF}">\n'
                   '    <flag override="enable"/>\n  </option>'
                   f'\n  <equality>\n    <weld body1="{GRIPPER_DRIVER_BODY}" '
                   f'body2="{GRIPPER_BODY}" relpose="0 0 0 1 0 0 0" solref="{_PHYSICS_WELD_SOLREF}"/>\n  </equality>')
    return f"""<mujoco model="spatialvlm_tabletop">
  <compiler angle="radian"/>{physics}
  <statistic extent="2" center="0 0 0.8"/>
  <visual>
    <global offwidth="{cfg.width}" offheight="{cfg.height}"/>
    <quality shadowsize="512" offsamples="0"{quality}/>
    <map znear="0.005" zfar="5"/>
    <headlight ambient="{look.ambient}" diffuse="0.3 0.3 0.3" specular="0 0 0"/>
  </visual>
  <asset>
    {look.scenery}
    <material name="m_gripper" rgba="{_fmt(look.gripper_rgba)}" {look.gloss}/>
    {chr(10).join('    ' + m for m in materials).lstrip()}
  </asset>
  <worldbody>
    {key_light}{extra_lights}
    <geom name="floor" type="plane" size="3 3 0.1" material="m_floor"/>{look.clutter}
    <geom name="wall_back" type="box" size="3 0.02 1.5" pos="0 2.5 1.5" material="m_wall"/>
    <geom name="wall_left" type="box" size="0.02 3 1.5" pos="-2.5 0 1.5" material="m_wall"/>
    <geom name="wall_right" type="box" size="0.02 3 1.5" pos="2.5 0 1.5" material="m_wall"/>
    <geom name="table_top" type="box" size="{hx} {hy} 0.02" pos="{tx} {ty} {TABLE_TOP_Z - 0.02}" material="m_table"/>
    {legs}
    {cameras}
    {chr(10).join('    ' + b for b in bodies).lstrip()}
    {gripper}
  </worldbody>
</mujoco>
"""
