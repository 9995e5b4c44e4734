"""Where the gripper comes from (``estimator.gripper.*``): the camera's pixels, or the robot's pose."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from spatialvlm_ros.config.schema import require

GRIPPER_MODELS = ("franka_hand", "robotiq_2f85", "sim", "custom")


@dataclasses.dataclass(frozen=True)
class GripperConfig:
    """The gripper from vision (grounded like any object) or from the robot's pose and a shape model.

    Attributes:
        source: vision grounds the pair's gripper phrase in the image; pose places the gripper model
            at the pose the robot reports (a frame without a pose is flagged no_gripper_pose)
        model: shape model for source pose: franka_hand (Panda / FR3 hand), robotiq_2f85, sim (this
            package's simulated gripper) or custom (custom_parts); origin = grasp point between the
            fingertip pads, z along the approach, y along the finger opening
        custom_parts: model custom: parts separated by ';', each 'box HX HY HZ X Y Z' (half extents,
            centre), 'capsule R X1 Y1 Z1 X2 Y2 Z2' or 'cylinder R HALF_LENGTH X Y Z' (axis z), in the
            gripper frame, metres; prefix 'finger' for a part copied to both jaws (mirrored in y and
            moved with the opening; give it at y = 0, its inner face at its -y side)
        custom_max_opening_m: model custom: the widest opening between the finger pads, metres
        opening_m: opening between the finger pads, metres; negative = the frame's (JointState) when
            it has one, else the model's widest
        offset_xyz: the reported pose's frame -> the grasp point, metres, in the reported frame (e.g.
            0 0 0.1034 for a Franka hand's flange frame panda_hand)
        offset_rpy: rotation of the same offset, roll pitch yaw, radians (e.g. 0 0 -0.785398 from
            panda_link8)
        pose_sigma_m: one sigma of the reported pose (hand-eye calibration, joint encoders), metres;
            added in quadrature to the object's side of the uncertainty
        pose_topic: geometry_msgs/PoseStamped of the gripper (spatial_reward_node, source pose)
        pose_tolerance_s: a pose is paired to an image when their stamps differ by at most this;
            otherwise the frame is flagged no_gripper_pose (stale)
        tf_frame: with tf2_ros importable and this set, the node looks the gripper frame up in the
            camera optical frame at the image stamp instead of reading pose_topic
        joint_state_topic: sensor_msgs/JointState giving the opening ('' = none: opening_m or the
            model's widest)
        opening_joints: names of the finger joints whose positions add up to the opening, metres
            (prismatic fingers: panda_finger_joint1, panda_finger_joint2)
        camera_from_pose_frame_xyz: static extrinsic, the pose's frame in the camera optical frame,
            metres (identity when the pose is already in the camera optical frame)
        camera_from_pose_frame_rpy: its rotation, roll pitch yaw, radians
    """

    source: Literal["vision", "pose"] = "vision"
    model: Literal["franka_hand", "robotiq_2f85", "sim", "custom"] = "franka_hand"
    custom_parts: str = ""
    custom_max_opening_m: float = 0.08
    opening_m: float = -1.0
    offset_xyz: tuple[float, ...] = (0.0, 0.0, 0.0)
    offset_rpy: tuple[float, ...] = (0.0, 0.0, 0.0)
    pose_sigma_m: float = 0.002
    pose_topic: str = "gripper/pose"
    pose_tolerance_s: float = 0.05
    tf_frame: str = ""
    joint_state_topic: str = ""
    opening_joints: tuple[str, ...] = ("panda_finger_joint1", "panda_finger_joint2")
    camera_from_pose_frame_xyz: tuple[float, ...] = (0.0, 0.0, 0.0)
    camera_from_pose_frame_rpy: tuple[float, ...] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        for name in ("offset_xyz", "offset_rpy", "camera_from_pose_frame_xyz", "camera_from_pose_frame_rpy"):
            value = getattr(self, name)
            require(len(value) == 3 and all(math.isfinite(v) for v in value), f"estimator.gripper.{name}",
                    "must be three finite numbers")
        require(self.custom_max_opening_m >= 0, "estimator.gripper.custom_max_opening_m", "must be >= 0")
        require(self.pose_sigma_m >= 0, "estimator.gripper.pose_sigma_m", "must be >= 0")
        require(self.pose_tolerance_s >= 0, "estimator.gripper.pose_tolerance_s", "must be >= 0")
        require(self.model != "custom" or bool(self.custom_parts.strip()), "estimator.gripper.custom_parts",
                "model custom needs at least one part")
        require(self.source != "pose" or bool(self.pose_topic.strip()) or bool(self.tf_frame.strip()),
                "estimator.gripper.pose_topic", "source pose needs a pose topic (or tf_frame)")
