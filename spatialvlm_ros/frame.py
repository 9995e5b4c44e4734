"""The one input record every estimator takes: an RGB(-D) camera frame with its intrinsics."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from spatialvlm_ros.errors import InputError
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.geometry.zoom import Window, crop_intrinsics


@dataclass(frozen=True, eq=False)
class Frame:
    """One camera frame.

    Attributes:
        rgb: (H, W, 3) uint8, RGB channel order.
        intrinsics: pinhole model of ``rgb`` (depth is registered to it).
        depth_m: (H, W) float32 metres, registered to ``rgb``; 0, NaN and inf mean "no reading".
            None for a monocular camera.
        stamp_ns: acquisition time, integer nanoseconds (ROS time of the image header).
        frame_id: the camera optical frame (x right, y down, z forward).
        segmentation: (H, W) int32 object ids from a simulator, -1 for background; None on a robot.
        labels: object name -> id in ``segmentation`` (simulator only).
        gripper_pose: (4, 4) the gripper's reported frame in the camera optical frame at ``stamp_ns``
            (from the robot's kinematics, tf, a pose topic or the simulator); None when unknown.
            ``estimator.gripper.offset_*`` maps it onto the model's grasp point.
        gripper_opening_m: opening between the finger pads, metres (a JointState); None when unknown.
    """

    rgb: np.ndarray
    intrinsics: CameraIntrinsics
    depth_m: np.ndarray | None = None
    stamp_ns: int = 0
    frame_id: str = "camera_color_optical_frame"
    segmentation: np.ndarray | None = None
    labels: Mapping[str, int] = field(default_factory=dict)
    gripper_pose: np.ndarray | None = None
    gripper_opening_m: float | None = None

    def __post_init__(self) -> None:
        h, w = self.intrinsics.height, self.intrinsics.width
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise InputError(f"rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.rgb.shape[:2] != (h, w):
            raise InputError(f"rgb is {self.rgb.shape[1]}x{self.rgb.shape[0]} but camera_info says {w}x{h}")
        if self.depth_m is not None and self.depth_m.shape != (h, w):
            raise InputError(
                f"depth is {self.depth_m.shape[1]}x{self.depth_m.shape[0]} but rgb is {w}x{h}; "
                "depth must be registered (aligned) to the colour image")
        if self.segmentation is not None and self.segmentation.shape != (h, w):
            raise InputError(f"segmentation shape {self.segmentation.shape} does not match rgb {(h, w)}")
        if self.gripper_pose is not None:
            pose = np.asarray(self.gripper_pose, dtype=np.float64)
            if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
                raise InputError(f"gripper_pose must be a finite 4x4 transform, got shape {pose.shape}")
            object.__setattr__(self, "gripper_pose", pose)

    def crop(self, window: Window) -> "Frame":
        """The frame cut to ``window`` (every image and the intrinsics; the optical frame and poses are the same).

        Args:
            window: the crop, inside the image.

        Returns:
            A frame of the window's size whose intrinsics project every point where the whole frame's did,
            less the window's corner.

        Raises:
            InputError: a window that is empty or not inside the image.
        """
        window = Window(*window)
        x0, y0, w, h = window
        if w < 1 or h < 1 or x0 < 0 or y0 < 0 or x0 + w > self.intrinsics.width or y0 + h > self.intrinsics.height:
            raise InputError(f"crop: window {tuple(window)} is not inside the {self.intrinsics.width}x"
                             f"{self.intrinsics.height} image")
        return replace(self, rgb=window.cut(self.rgb), intrinsics=crop_intrinsics(self.intrinsics, window),
                       depth_m=None if self.depth_m is None else window.cut(self.depth_m),
                       segmentation=None if self.segmentation is None else window.cut(self.segmentation))
