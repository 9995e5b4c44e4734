"""Shape completion: a primitive (upright cylinder, upright box, sphere) fitted to an object's visible cloud.

A depth camera sees an object's near side only. Measured from the visible surface, the gap to a gripper
behind the object, or behind the gripper's own fingers, is too long by up to the object's depth. Fitted
to the visible points in the table's canonical frame (:mod:`~spatialvlm_ros.geometry.plane`), a
primitive restores the hidden side: cylinders and boxes stand upright on the table (their base is the
table plane when their lowest visible point is near it), a sphere resting on the table touches it.

Fits return a :class:`Primitive` with the residual of the visible points and how well the fit is
pinned down; :func:`complete` chooses among them (by the name's noun when it names a shape, else by
residual) and refuses when no primitive explains the points.

Points are in the camera optical frame (x right, y down, z forward), metres, unless said otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from spatialvlm_ros.geometry.plane import CanonicalFrame

#: Object nouns that name a primitive.
NOUN_SHAPES: dict[str, str] = {
    **dict.fromkeys(("can", "cup", "mug", "bottle", "cylinder", "tin", "jar", "glass", "tube"), "cylinder"),
    **dict.fromkeys(("box", "cube", "block", "carton", "brick", "crate", "package"), "box"),
    **dict.fromkeys(("ball", "sphere", "orb"), "sphere"),
}
SHAPES = ("cylinder", "box", "sphere")
#: Nouns of things no primitive describes: never completed.
NOT_PRIMITIVE = frozenset(("gripper", "hand", "finger", "fingers", "claw", "effector", "jaw", "jaws", "arm",
                           "robot", "tool", "bowl", "plate", "cloth", "mug", "cup", "bottle", "cone", "wedge",
                           "ramp"))
#: An object whose lowest visible point is within this of the table stands on it.
ON_TABLE_M = 0.03
#: Fewest points a fit needs, and most it uses (an even thinning of the rest).
MIN_FIT_POINTS = 40
MAX_FIT_POINTS = 800
#: Points within this of the top count as the top face of a cylinder or box (and the rest as its sides).
_TOP_BAND_M = 0.006
_WORD = re.compile(r"[a-z]+")


def shape_of(phrase: str) -> str | None:
    """The primitive a phrase's noun names, if any (its last shape noun wins).

    Example:
        >>> shape_of("the red soda can"), shape_of("blue toy block"), shape_of("green bowl")
        ('cylinder', 'box', None)
    """
    shapes = [NOUN_SHAPES[w] for w in _WORD.findall(phrase.lower()) if w in NOUN_SHAPES]
    return shapes[-1] if shapes else None


def shapes_for(phrase: str) -> tuple[str, ...]:
    """The primitives to try for a phrase.

    The one its noun names; none for a gripper (or any noun of :data:`NOT_PRIMITIVE`); else all of them
    (the best fit wins).

    Example:
        >>> shapes_for("red can"), shapes_for("yellow gripper"), shapes_for("green thing")
        (('cylinder',), (), ('cylinder', 'box', 'sphere'))
    """
    shape = shape_of(phrase)
    if shape is not None:
        return (shape,)
    if NOT_PRIMITIVE & set(_WORD.findall(phrase.lower())):
        return ()
    return SHAPES


@dataclass(frozen=True, eq=False)
class Primitive:
    """A solid fitted to an object's visible points, in a table-up canonical frame.

    Attributes:
        shape: ``"cylinder"``, ``"box"`` or ``"sphere"``.
        frame: the canonical frame the parameters are in (z up from the table plane).
        centre: (3,) centre of the solid, canonical metres (a cylinder's or box's at mid-height).
        size: cylinder (radius, half height); box (half x, half y, half height) along its own axes;
            sphere (radius,).
        yaw: rotation of a box about the vertical, radians (0 for the others).
        rms_m: RMS distance of the visible points from the solid's surface.
        sigma_m: one-sigma uncertainty of the surface position where it was not seen (from the fit's
            parameter covariance).
        n_points: points fitted.
    """

    shape: str
    frame: CanonicalFrame
    centre: np.ndarray
    size: np.ndarray
    yaw: float
    rms_m: float
    sigma_m: float
    n_points: int

    @property
    def centre_camera(self) -> np.ndarray:
        """(3,) the solid's centre in the camera optical frame."""
        return self.frame.origin + self.frame.rotation.T @ self.centre

    def closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance of (N, 3) camera-frame points to the solid (0 inside) and the nearest solid points.

        Returns:
            (N,) distances, metres; (N, 3) the nearest point of the solid to each, camera optical frame.
        """
        q = self.frame.to_canonical(points) - self.centre
        if self.shape == "sphere":
            norm = np.linalg.norm(q, axis=1)
            r = self.size[0]
            scale = np.where(norm > r, r / np.maximum(norm, 1e-12), 1.0)
            near = q * scale[:, None]
        elif self.shape == "cylinder":
            r, half = self.size
            radial = np.linalg.norm(q[:, :2], axis=1)
            scale = np.where(radial > r, r / np.maximum(radial, 1e-12), 1.0)
            near = np.column_stack([q[:, :2] * scale[:, None], np.clip(q[:, 2], -half, half)])
        else:
            c, s = np.cos(self.yaw), np.sin(self.yaw)
            rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])      # box axes -> canonical
            local = q @ rot
            near = np.clip(local, -self.size, self.size) @ rot.T
        distance = np.linalg.norm(q - near, axis=1)
        camera = self.frame.origin + (near + self.centre) @ self.frame.rotation
        return distance, camera

    def surface_distance(self, points: np.ndarray) -> np.ndarray:
        """(N,) unsigned distance of (N, 3) canonical-frame points to the solid's surface."""
        q = points - self.centre
        if self.shape == "sphere":
            return np.abs(np.linalg.norm(q, axis=1) - self.size[0])
        if self.shape == "cylinder":
            r, half = self.size
            radial = np.linalg.norm(q[:, :2], axis=1) - r
            vertical = np.abs(q[:, 2]) - half
            outside = np.hypot(np.maximum(radial, 0.0), np.maximum(vertical, 0.0))
            return np.where((radial > 0) | (vertical > 0), outside, -np.maximum(radial, vertical))
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local = q @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        d = np.abs(local) - self.size
        outside = np.linalg.norm(np.maximum(d, 0.0), axis=1)
        return np.where(np.any(d > 0, axis=1), outside, -d.max(axis=1))


def _base_height(z: np.ndarray) -> float:
    """The base of an upright solid: the table (0) when its lowest points are near it, else the lowest."""
    low = float(np.percentile(z, 2))
    return 0.0 if low < ON_TABLE_M else low


def fit_cylinder(points: np.ndarray, frame: CanonicalFrame) -> Primitive | None:
    """An upright cylinder through canonical-frame ``points``; None when they do not pin one down.

    The side comes from a circle fit, the top and base from the heights. The circle is fitted
    algebraically (Kasa) to the side points' x, y, then refined by Gauss-Newton on the geometric
    residual; with too little side visible, to the outline of the top face.

    Example:
        >>> from spatialvlm_ros.geometry.plane import Plane, canonical_frame
        >>> frame = canonical_frame(Plane(normal=np.array([0.0, -1.0, 0.0]), offset=0.5, inliers=np.ones(0, bool)))
        >>> a = np.linspace(-2.0, 2.0, 200); z = np.tile(np.linspace(0.0, 0.12, 10), 20)
        >>> side = np.column_stack([0.6 - 0.03 * np.cos(a), 0.03 * np.sin(a), z])   # the near half of a can
        >>> cyl = fit_cylinder(side, frame)
        >>> np.round(cyl.size, 3).tolist(), np.round(cyl.centre, 3).tolist()
        ([0.03, 0.06], [0.6, 0.0, 0.06])
    """
    if len(points) < MIN_FIT_POINTS:
        return None
    z = points[:, 2]
    top = float(np.percentile(z, 99))
    base = _base_height(z)
    if top - base < 0.01:
        return None
    side = points[z < top - _TOP_BAND_M]
    xy = side[:, :2] if len(side) >= MIN_FIT_POINTS else None
    if xy is None:
        lid = points[z >= top - _TOP_BAND_M, :2].astype(np.float32)
        if len(lid) < MIN_FIT_POINTS:
            return None
        xy = cv2.convexHull(lid).reshape(-1, 2).astype(np.float64)
        if len(xy) < 5:
            return None
    x, y = xy[:, 0], xy[:, 1]
    a = np.column_stack([2 * x, 2 * y, np.ones(len(x))])
    sol, *_ = np.linalg.lstsq(a, x * x + y * y, rcond=None)
    cx, cy = sol[0], sol[1]
    r = np.sqrt(max(sol[2] + cx * cx + cy * cy, 1e-12))
    params = np.array([cx, cy, r])
    for _ in range(10):
        d = np.hypot(x - params[0], y - params[1])
        d = np.maximum(d, 1e-9)
        res = d - params[2]
        jac = np.column_stack([-(x - params[0]) / d, -(y - params[1]) / d, -np.ones(len(x))])
        step, *_ = np.linalg.lstsq(jac, -res, rcond=None)
        params = params + step
        if np.linalg.norm(step) < 1e-7:
            break
    cx, cy, r = params
    if not 0.005 < r < 0.25:
        return None
    d = np.maximum(np.hypot(x - cx, y - cy), 1e-9)
    res = d - r
    jac = np.column_stack([-(x - cx) / d, -(y - cy) / d, -np.ones(len(x))])
    sigma = _fit_sigma(jac, res)
    centre = np.array([cx, cy, 0.5 * (top + base)])
    prim = Primitive(shape="cylinder", frame=frame, centre=centre, size=np.array([r, 0.5 * (top - base)]), yaw=0.0,
                     rms_m=0.0, sigma_m=sigma, n_points=len(points))
    return _with_residual(prim, points)


def fit_sphere(points: np.ndarray, frame: CanonicalFrame) -> Primitive | None:
    """A sphere through canonical-frame ``points``; None when they do not pin one down.

    It rests on the table (centre height = radius) when its lowest points are near it, else it is free.

    Example:
        >>> from spatialvlm_ros.geometry.plane import Plane, canonical_frame
        >>> frame = canonical_frame(Plane(normal=np.array([0.0, -1.0, 0.0]), offset=0.5, inliers=np.ones(0, bool)))
        >>> u, v = np.meshgrid(np.linspace(2.0, 4.2, 20), np.linspace(0.2, 2.9, 20))
        >>> cap = np.column_stack([np.cos(u.ravel()) * np.sin(v.ravel()), np.sin(u.ravel()) * np.sin(v.ravel()),
        ...                        np.cos(v.ravel())]) * 0.035 + [0.6, 0.0, 0.035]
        >>> ball = fit_sphere(cap, frame)
        >>> round(float(ball.size[0]), 4), np.round(ball.centre, 3).tolist()
        (0.035, [0.6, -0.0, 0.035])
    """
    if len(points) < MIN_FIT_POINTS:
        return None
    x, y, z = points.T
    on_table = float(np.percentile(z, 2)) < ON_TABLE_M
    sq = np.einsum("ij,ij->i", points, points)
    if on_table:
        # |p|^2 - 2 x cx - 2 y cy - 2 z r + (cx^2 + cy^2) = 0, linear in (cx, cy, r, k); centre (cx, cy, r).
        a = np.column_stack([2 * x, 2 * y, 2 * z, -np.ones(len(x))])
        sol, *_ = np.linalg.lstsq(a, sq, rcond=None)
        params = np.array([sol[0], sol[1], sol[2]])
    else:
        a = np.column_stack([2 * x, 2 * y, 2 * z, np.ones(len(x))])
        sol, *_ = np.linalg.lstsq(a, sq, rcond=None)
        centre = sol[:3]
        params = np.array([*centre, np.sqrt(max(sol[3] + centre @ centre, 1e-12))])
    for _ in range(10):
        centre, r = params[:3], (params[2] if on_table else params[3])
        diff = points - centre
        d = np.maximum(np.linalg.norm(diff, axis=1), 1e-9)
        step, *_ = np.linalg.lstsq(_sphere_jacobian(diff / d[:, None], on_table), r - d, rcond=None)
        params = params + step
        if np.linalg.norm(step) < 1e-7:
            break
    centre = np.array(params[:3])
    r = float(params[2] if on_table else params[3])
    if not 0.005 < r < 0.25:
        return None
    diff = points - centre
    d = np.maximum(np.linalg.norm(diff, axis=1), 1e-9)
    sigma = _fit_sigma(_sphere_jacobian(diff / d[:, None], on_table), d - r)
    prim = Primitive(shape="sphere", frame=frame, centre=centre, size=np.array([r]), yaw=0.0, rms_m=0.0,
                     sigma_m=sigma, n_points=len(points))
    return _with_residual(prim, points)


def _sphere_jacobian(unit: np.ndarray, on_table: bool) -> np.ndarray:
    """Jacobian of the radial residuals ``|p - c| - r`` in the sphere's parameters.

    On the table the parameters are (cx, cy, r) with the centre at height r; else (cx, cy, cz, r).
    """
    if on_table:
        return np.column_stack([-unit[:, 0], -unit[:, 1], -unit[:, 2] - 1.0])
    return np.column_stack([-unit, -np.ones(len(unit))])


def fit_box(points: np.ndarray, frame: CanonicalFrame) -> Primitive | None:
    """An upright box through canonical-frame ``points``; None when they do not pin one down.

    The footprint is the minimum-area rectangle of their x, y (two side faces span it, as does the top
    face), the top and base come from the heights. One face seen flat on leaves the depth unknown: None.

    Example:
        >>> from spatialvlm_ros.geometry.plane import Plane, canonical_frame
        >>> frame = canonical_frame(Plane(normal=np.array([0.0, -1.0, 0.0]), offset=0.5, inliers=np.ones(0, bool)))
        >>> t = np.linspace(-1.0, 1.0, 30); z = np.linspace(0.0, 0.07, 12)
        >>> face_a = np.array([[0.555, 0.035 * a, h] for a in t for h in z])       # near face, x = 0.6 - 0.045
        >>> face_b = np.array([[0.6 + 0.045 * a, -0.035, h] for a in t for h in z])  # right face
        >>> box = fit_box(np.concatenate([face_a, face_b]), frame)
        >>> np.round(np.sort(box.size[:2]), 3).tolist(), round(float(box.size[2]), 3)
        ([0.035, 0.045], 0.035)
    """
    if len(points) < MIN_FIT_POINTS:
        return None
    z = points[:, 2]
    top = float(np.percentile(z, 99))
    base = _base_height(z)
    if top - base < 0.01:
        return None
    (cx, cy), (w, h), angle = cv2.minAreaRect(points[:, :2].astype(np.float32))
    yaw = np.deg2rad(angle)
    c, s = np.cos(yaw), np.sin(yaw)
    # Robust extents along the rectangle's axes (the rectangle itself hugs the noise).
    local = (points[:, :2] - [cx, cy]) @ np.array([[c, -s], [s, c]])
    lo, hi = np.percentile(local, [1, 99], axis=0)
    half = 0.5 * (hi - lo)
    if np.min(half) < 0.005 or np.max(half) > 0.3:
        return None
    mid = np.array([cx, cy]) + np.array([[c, -s], [s, c]]) @ (0.5 * (hi + lo))
    centre = np.array([mid[0], mid[1], 0.5 * (top + base)])
    prim = Primitive(shape="box", frame=frame, centre=centre, size=np.array([half[0], half[1], 0.5 * (top - base)]),
                     yaw=float(yaw), rms_m=0.0, sigma_m=0.0, n_points=len(points))
    prim = _with_residual(prim, points)
    # Each face's position is a percentile of ~sqrt(N) edge points: its uncertainty is the noise over sqrt(n).
    return Primitive(**{**prim.__dict__, "sigma_m": prim.rms_m / np.sqrt(max(len(points), 1) / 4.0)})


def _fit_sigma(jac: np.ndarray, residual: np.ndarray) -> float:
    """One-sigma uncertainty of the fitted surface's position: the largest parameter standard deviation."""
    dof = max(len(residual) - jac.shape[1], 1)
    var = float(residual @ residual) / dof
    try:
        cov = np.linalg.inv(jac.T @ jac) * var
    except np.linalg.LinAlgError:
        return float("inf")
    return float(np.sqrt(max(np.max(np.diag(cov)), 0.0)))


def _with_residual(prim: Primitive, points: np.ndarray) -> Primitive:
    """``prim`` with its RMS residual over ``points`` (robust: the worst 5% are left out)."""
    d = prim.surface_distance(points)
    kept = np.sort(d)[: max(1, int(0.95 * len(d)))]
    return Primitive(**{**prim.__dict__, "rms_m": float(np.sqrt(np.mean(kept ** 2)))})


def _outward(prim: Primitive, points: np.ndarray) -> np.ndarray:
    """(N, 3) outward normal of the solid's face nearest each canonical-frame point (not normalised)."""
    q = points - prim.centre
    if prim.shape == "sphere":
        return q
    if prim.shape == "cylinder":
        r, half = prim.size
        radial = np.linalg.norm(q[:, :2], axis=1)
        top = (np.abs(q[:, 2]) - half) > (radial - r)
        side = np.column_stack([q[:, :2], np.zeros(len(q))])
        return np.where(top[:, None], np.column_stack([np.zeros((len(q), 2)), np.sign(q[:, 2])]), side)
    c, s = np.cos(prim.yaw), np.sin(prim.yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    local = q @ rot
    axis = np.argmax(np.abs(local) / prim.size, axis=1)
    normal = np.zeros_like(local)
    normal[np.arange(len(q)), axis] = np.sign(local[np.arange(len(q)), axis])
    return normal @ rot.T


def facing_share(prim: Primitive, points: np.ndarray) -> float:
    """Share of canonical-frame ``points`` on faces of ``prim`` that face its frame's camera.

    A camera sees only the faces of a convex solid that face it, so a fit whose visible points lie on
    faces turned away (a cylinder bulging away from the camera fitted to a concave arc) is wrong.
    """
    camera = np.array([0.0, 0.0, prim.frame.camera_height_m])
    return float(np.mean(np.einsum("ij,ij->i", _outward(prim, points), camera - points) > 0))


_FITS = {"cylinder": fit_cylinder, "box": fit_box, "sphere": fit_sphere}
#: A completion is trusted when the visible points sit within this many depth-noise sigmas of it (RMS) ...
MAX_RMS_SIGMAS = 2.0
#: ... plus this (modelling slack: tessellated renders, bevelled real edges).
RMS_SLACK_M = 0.0015
#: ... and at least this share of them lie on faces that face the camera.
MIN_FACING = 0.8


@dataclass(frozen=True)
class CompletionResult:
    """The primitive a completion chose, or why none.

    Attributes:
        primitive: the fitted solid; None when no fit was good enough.
        detail: why not (empty when a primitive was chosen).
    """

    primitive: Primitive | None
    detail: str = ""


def complete(points: np.ndarray, frame: CanonicalFrame, noise_sigma_m: float, shapes: tuple[str, ...] = SHAPES, *,
             max_rms_sigmas: float = MAX_RMS_SIGMAS) -> CompletionResult:
    """Fit a primitive to an object's visible points and keep it when it explains them.

    Args:
        points: (N, 3) visible points of the object, camera optical frame, metres.
        frame: the table's canonical frame.
        noise_sigma_m: depth noise (1 sigma) at the object's range: the RMS a perfect fit leaves.
        shapes: the primitives to fit (:func:`shapes_for` the phrase); the lowest residual wins.
        max_rms_sigmas: the largest RMS residual kept, in ``noise_sigma_m`` (plus ``RMS_SLACK_M``).

    Returns:
        The chosen primitive, or None with the reason: no fit, residual too large, or faces turned
        away from the camera.

    Example:
        >>> from spatialvlm_ros.geometry.plane import Plane, canonical_frame
        >>> frame = canonical_frame(Plane(normal=np.array([0.0, -1.0, 0.0]), offset=0.5, inliers=np.ones(0, bool)))
        >>> flat = np.column_stack([np.full(100, 0.0), np.linspace(-0.05, 0.05, 100), np.full(100, 0.45)])
        >>> complete(flat, frame, 0.001).detail
        'no cylinder or box or sphere fits the points'
    """
    if len(points) > MAX_FIT_POINTS:                  # evenly thinned: a fit needs no more (speed)
        points = points[np.linspace(0, len(points) - 1, MAX_FIT_POINTS).astype(np.intp)]
    canonical = frame.to_canonical(points)
    tolerance = max_rms_sigmas * noise_sigma_m + RMS_SLACK_M
    fits = []
    for name in shapes:
        prim = _FITS[name](canonical, frame)
        if prim is not None and np.isfinite(prim.sigma_m):
            fits.append(prim)
    if not fits:
        return CompletionResult(None, f"no {' or '.join(shapes) or 'primitive'} fits the points")
    best = min(fits, key=lambda p: p.rms_m)
    if best.rms_m > tolerance:
        return CompletionResult(None, f"{best.shape} fit residual {best.rms_m * 1e3:.1f} mm > {tolerance * 1e3:.1f} mm")
    facing = facing_share(best, canonical)
    if facing < MIN_FACING:
        return CompletionResult(None, f"{best.shape} fit: only {facing:.0%} of the points face the camera")
    return CompletionResult(best)
