"""The gripper's pose for ``spatial_reward_node`` (``estimator.gripper.source: pose``): tf2, or a pose topic.

Kept apart from the node so the node needs two lines: build one :class:`GripperSource` at start, and
``frame = source.attach(frame)`` where the frame is built. The pairing itself is ROS-free
(:mod:`spatialvlm_ros.messages.gripper_pose`).

* With ``estimator.gripper.tf_frame`` set and ``tf2_ros`` importable: the gripper frame is looked up in
  the image's optical frame at the image stamp (tf interpolates; a lookup that fails leaves the frame
  without a pose, flagged ``no_gripper_pose``).
* Otherwise: ``geometry_msgs/PoseStamped`` on ``estimator.gripper.pose_topic``, the latest poses kept by
  stamp, the one nearest the image stamp within ``pose_tolerance_s`` attached; the pose's frame is tied
  to the camera by ``camera_from_pose_frame_*``.
* ``joint_state_topic``: the finger opening, paired the same way.

Topics and the source are read at start (like ``topics.*``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from spatialvlm_ros.config import GripperConfig
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.gripper import quaternion_matrix
from spatialvlm_ros.messages.conversions import stamp_to_ns
from spatialvlm_ros.messages.gripper_pose import GripperPoses

#: Poses kept (a few seconds of a 500 Hz arm state).
POSE_CAPACITY = 2000


class GripperSource:
    """Attaches the robot's gripper pose to each frame; does nothing with ``source: vision``."""

    def __init__(self, node: Node, config: GripperConfig) -> None:
        self.config = config
        self.active = config.source == "pose"
        self.poses = GripperPoses(config, capacity=POSE_CAPACITY)
        self.kind = "none"
        self._arrived = threading.Condition()
        self._latest_ns = -1
        self._tf_buffer: Any = None
        self._keep: list[Any] = []
        if not self.active:
            return
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
        if config.tf_frame:
            try:
                import tf2_ros
                self._tf_buffer = tf2_ros.Buffer()
                self._keep.append(tf2_ros.TransformListener(self._tf_buffer, node))
                self.kind = f"tf {config.tf_frame}"
            except ImportError:
                node.get_logger().warning(f"tf2_ros is not importable: gripper pose from {config.pose_topic!r} "
                                          f"instead of tf frame {config.tf_frame!r}")
        if self._tf_buffer is None:
            self._keep.append(node.create_subscription(PoseStamped, config.pose_topic, self._on_pose, qos))
            self.kind = f"topic {config.pose_topic}"
        if config.joint_state_topic:
            self._keep.append(node.create_subscription(JointState, config.joint_state_topic,
                                                       self.poses.add_joint_state_msg, qos))

    def _on_pose(self, msg: PoseStamped) -> None:
        if self.poses.add_pose_msg(msg):
            with self._arrived:
                self._latest_ns = max(self._latest_ns, stamp_to_ns(msg.header.stamp))
                self._arrived.notify_all()

    def _from_topic(self, frame: Frame) -> Frame:
        """The pose at the frame's stamp; when none has come that far yet, wait for it up to the tolerance.

        The pose and the image travel on different topics, so the one at the image's stamp may still be on
        its way when the image is processed. Waiting is bounded by ``pose_tolerance_s`` (default 50 ms).
        """
        attached = self.poses.attach(frame)
        deadline = time.monotonic() + self.config.pose_tolerance_s
        with self._arrived:
            while attached.gripper_pose is None and self._latest_ns < frame.stamp_ns:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._arrived.wait(remaining):
                    break
                attached = self.poses.attach(frame)
        return attached

    def attach(self, frame: Frame) -> Frame:
        """``frame`` with the gripper pose at its stamp, when known (else unchanged: ``no_gripper_pose``)."""
        if not self.active:
            return frame
        if self._tf_buffer is None:
            return self._from_topic(frame)
        from rclpy.time import Time
        try:
            t = self._tf_buffer.lookup_transform(frame.frame_id, self.config.tf_frame,
                                                 Time(nanoseconds=frame.stamp_ns)).transform
        except Exception:   # noqa: BLE001 - tf2 raises several kinds (extrapolation, lookup, connectivity)
            return self._from_topic(frame)
        pose = np.eye(4)
        pose[:3, :3] = quaternion_matrix(t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w)
        pose[:3, 3] = (t.translation.x, t.translation.y, t.translation.z)
        opening = self.poses.openings.nearest(frame.stamp_ns, int(self.config.pose_tolerance_s * 1e9))
        from dataclasses import replace
        return replace(frame, gripper_pose=pose, gripper_opening_m=opening)
