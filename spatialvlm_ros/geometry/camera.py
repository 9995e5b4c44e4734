"""Pinhole camera intrinsics.

Frame convention everywhere in this package: the camera *optical* frame, x right, y down,
z forward (REP 103), metres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from spatialvlm_ros.errors import InputError


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an undistorted image, in pixels.

    Example:
        >>> cam = CameraIntrinsics.from_fov(width=640, height=480, fovy_deg=45.0)
        >>> round(cam.fy, 1), cam.cx
        (579.4, 319.5)
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise InputError(f"camera size must be positive, got {self.width}x{self.height}")
        if not (np.isfinite(self.fx) and np.isfinite(self.fy) and self.fx > 0 and self.fy > 0):
            raise InputError(f"focal lengths must be positive and finite, got fx={self.fx} fy={self.fy}")

    @classmethod
    def from_k(cls, k: Sequence[float] | np.ndarray, width: int, height: int) -> "CameraIntrinsics":
        """Build from a row-major 3x3 K matrix (9 numbers, as in sensor_msgs/CameraInfo.k)."""
        k = np.asarray(k, dtype=np.float64).reshape(-1)
        if k.size != 9:
            raise InputError(f"K must have 9 entries, got {k.size}")
        return cls(fx=float(k[0]), fy=float(k[4]), cx=float(k[2]), cy=float(k[5]),
                   width=int(width), height=int(height))

    @classmethod
    def from_camera_info(cls, info: Any) -> "CameraIntrinsics":
        """Build from anything shaped like sensor_msgs/CameraInfo (fields ``k``, ``width``, ``height``).

        Duck-typed so the core stays free of ROS imports (rclpy messages and rosbags messages both fit).
        """
        try:
            return cls.from_k(info.k, info.width, info.height)
        except AttributeError as err:
            raise InputError(f"not a CameraInfo-like object: {err}") from err

    @classmethod
    def from_fov(cls, width: int, height: int, fovy_deg: float) -> "CameraIntrinsics":
        """Square pixels, principal point at the image centre, vertical field of view in degrees."""
        fy = float(0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2.0))
        return cls(fx=fy, fy=fy, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0, width=width, height=height)

    @property
    def k(self) -> np.ndarray:
        """The 3x3 K matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project (N, 3) optical-frame points to (N, 2) pixel coordinates (u, v)."""
        points = np.asarray(points, dtype=np.float64)
        z = points[:, 2]
        return np.stack([self.fx * points[:, 0] / z + self.cx, self.fy * points[:, 1] / z + self.cy], axis=1)


def pixel_centre(mask: np.ndarray) -> tuple[float, float]:
    """(u, v) mean pixel of a boolean (H, W) mask; NaN, NaN when it is empty."""
    v, u = np.divmod(np.flatnonzero(mask), mask.shape[1])
    return (float(u.mean()), float(v.mean())) if len(u) else (float("nan"), float("nan"))
