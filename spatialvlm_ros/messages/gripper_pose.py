"""The gripper's pose from the robot, without ROS: PoseStamped / JointState -> numpy, stamp pairing, Frame.

Every door that has the robot's pose (the node's pose topic or tf, a bag's pose topic, a gym env, the
simulator) attaches it to the :class:`~spatialvlm_ros.frame.Frame` with :func:`attach_gripper`: the pose
nearest the image stamp within ``estimator.gripper.pose_tolerance_s``, mapped into the camera optical
frame by the static extrinsic ``camera_from_pose_frame_*``. No pose near enough leaves the frame without
one, and the estimator flags it ``no_gripper_pose``; a pose is never guessed or extrapolated.

Messages are read by attribute (duck typing), so rclpy and rosbags messages both work.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import replace
from typing import Any, Generic, Sequence, TypeVar

import numpy as np

from spatialvlm_ros.config.gripper import GripperConfig
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.gripper import matrix_quaternion, quaternion_matrix, transform

T = TypeVar("T")


def stamp_ns(header: Any) -> int:
    """A std_msgs/Header's stamp as integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def pose_to_matrix(pose: Any) -> np.ndarray:
    """(4, 4) transform of a geometry_msgs/Pose (position, orientation quaternion).

    Raises:
        ValueError: a position that is not finite or a zero quaternion.
    """
    p, q = pose.position, pose.orientation
    out = np.eye(4)
    out[:3, :3] = quaternion_matrix(q.x, q.y, q.z, q.w)
    out[:3, 3] = (p.x, p.y, p.z)
    if not np.all(np.isfinite(out)):
        raise ValueError("pose position is not finite")
    return out


def matrix_to_pose_fields(matrix: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """(position xyz, orientation xyzw) of a (4, 4) transform, for a geometry_msgs/Pose."""
    m = np.asarray(matrix, dtype=np.float64)
    return (float(m[0, 3]), float(m[1, 3]), float(m[2, 3])), matrix_quaternion(m[:3, :3])


def opening_from_joint_state(msg: Any, joints: Sequence[str]) -> float | None:
    """The sum of the named joints' positions (prismatic fingers: the opening, metres), or None if one is missing."""
    names = list(msg.name)
    positions = list(msg.position)
    try:
        total = sum(float(positions[names.index(j)]) for j in joints)
    except (ValueError, IndexError):
        return None
    return total if np.isfinite(total) else None


class StampBuffer(Generic[T]):
    """The latest ``capacity`` values by stamp; :meth:`nearest` pairs one to a stamp (thread-safe).

    Example:
        >>> buf = StampBuffer(capacity=3)
        >>> for t in (10, 20, 30, 40):
        ...     buf.add(t, f"v{t}")
        >>> buf.nearest(26, tolerance_ns=5), buf.nearest(12, tolerance_ns=5), len(buf)
        ('v30', None, 3)
    """

    def __init__(self, capacity: int = 200) -> None:
        self.capacity = capacity
        self._stamps: list[int] = []
        self._values: list[T] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp: int, value: T) -> None:
        """Insert (in stamp order; a repeated stamp replaces); the oldest beyond ``capacity`` are dropped."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp)
            if i < len(self._stamps) and self._stamps[i] == stamp:
                self._values[i] = value
            else:
                self._stamps.insert(i, stamp)
                self._values.insert(i, value)
            if len(self._stamps) > self.capacity:
                del self._stamps[0], self._values[0]

    def nearest(self, stamp: int, tolerance_ns: int) -> T | None:
        """The value whose stamp is nearest ``stamp``, if within ``tolerance_ns``; else None."""
        with self._lock:
            if not self._stamps:
                return None
            i = bisect.bisect_left(self._stamps, stamp)
            best = min((j for j in (i - 1, i) if 0 <= j < len(self._stamps)),
                       key=lambda j: abs(self._stamps[j] - stamp))
            return self._values[best] if abs(self._stamps[best] - stamp) <= tolerance_ns else None


class GripperPoses:
    """The robot's gripper poses (and finger openings) by stamp, for one door.

    Args:
        config: ``estimator.gripper``: the extrinsic, the tolerance, the opening joints.
        capacity: poses kept (a live node: a few seconds' worth; a bag: all of them).
    """

    def __init__(self, config: GripperConfig, capacity: int = 200) -> None:
        self.config = config
        self.poses: StampBuffer[np.ndarray] = StampBuffer(capacity)
        self.openings: StampBuffer[float] = StampBuffer(capacity)
        self._camera_from_pose = transform(config.camera_from_pose_frame_xyz, config.camera_from_pose_frame_rpy)

    def add_pose(self, stamp: int, pose: np.ndarray) -> None:
        """A pose of the gripper's reported frame in the pose frame (4x4) at ``stamp`` ns."""
        self.poses.add(stamp, self._camera_from_pose @ np.asarray(pose, dtype=np.float64))

    def add_pose_msg(self, msg: Any) -> bool:
        """A geometry_msgs/PoseStamped; False (and nothing kept) for a pose that is not finite."""
        try:
            self.add_pose(stamp_ns(msg.header), pose_to_matrix(msg.pose))
        except ValueError:
            return False
        return True

    def add_joint_state_msg(self, msg: Any) -> None:
        """A sensor_msgs/JointState: the opening, when it names ``opening_joints``."""
        opening = opening_from_joint_state(msg, self.config.opening_joints)
        if opening is not None:
            self.openings.add(stamp_ns(msg.header), opening)

    def attach(self, frame: Frame) -> Frame:
        """``frame`` with the pose (and opening) nearest its stamp, or unchanged when none is near enough."""
        return attach_gripper(frame, self.poses, self.openings, self.config)


def attach_gripper(frame: Frame, poses: StampBuffer[np.ndarray], openings: StampBuffer[float] | None,
                   config: GripperConfig) -> Frame:
    """``frame`` with ``gripper_pose`` / ``gripper_opening_m`` from the buffers at its stamp (camera frame poses).

    A frame that already has a pose keeps it. None near enough: the frame is returned without one.
    """
    if frame.gripper_pose is not None:
        return frame
    tolerance = int(round(config.pose_tolerance_s * 1e9))
    pose = poses.nearest(frame.stamp_ns, tolerance)
    if pose is None:
        return frame
    opening = openings.nearest(frame.stamp_ns, tolerance) if openings is not None else None
    return replace(frame, gripper_pose=pose, gripper_opening_m=opening)
