"""sim_camera_node: a simulated RGB-D camera watching a gripper approach an object.

Publishes, with one header per frame (stamp = render time, frame_id = camera optical frame):
    ``topics.image`` (sensor_msgs/Image rgb8), ``topics.depth`` (16UC1 mm or 32FC1 m, registered),
    ``topics.camera_info`` (sensor_msgs/CameraInfo),
    ``ground_truth`` (diagnostic_msgs/DiagnosticArray: per object ``gap_m`` and ``centre_m``),
    ``ground_truth/distance`` (std_msgs/Float32: gripper-to-target surface gap, metres),
    ``gripper/pose`` (geometry_msgs/PoseStamped: the gripper's grasp frame in the camera optical frame,
    the ``sim`` gripper model's convention; what a robot knows from its joint angles).
With ``loop: false`` the node exits after the last trajectory frame, so a demo can wait for it.
"""

from __future__ import annotations

from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float32, Header

from spatialvlm_ros.config import SimCameraConfig
from spatialvlm_ros.errors import ConfigError, SpatialVLMError
from spatialvlm_ros.messages.conversions import camera_info_fields, depth_to_image_fields, rgb_to_image_fields
from spatialvlm_ros.messages.gripper_pose import matrix_to_pose_fields
from spatialvlm_ros.ros import params
from spatialvlm_ros.sim import TabletopSim

NODE_NAME = "sim_camera_node"
GRIPPER_POSE_TOPIC = "gripper/pose"


class SimCameraNode(Node):
    """Renders the MuJoCo tabletop along its scripted approach and publishes it as a camera would."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        unknown = params.declare_config_parameters(self, SimCameraConfig)
        for name in unknown:
            self.get_logger().error(f"unknown parameter {name!r} ignored (see config/sim_demo.yaml)")
        self.config = params.read_config(self, SimCameraConfig)
        self.sim = TabletopSim(self.config.sim)
        self.target = f"{self.config.sim.target_colour} {self.config.sim.target}"
        self.done = False
        self._index = 0
        topics = self.config.topics
        self._image_pub = self.create_publisher(Image, topics.image, 10)
        self._depth_pub = self.create_publisher(Image, topics.depth, 10) if topics.depth else None
        self._info_pub = self.create_publisher(CameraInfo, topics.camera_info, 10)
        self._truth_pub = self.create_publisher(DiagnosticArray, "ground_truth", 10)
        self._truth_distance_pub = self.create_publisher(Float32, "ground_truth/distance", 10)
        self._gripper_pose_pub = self.create_publisher(PoseStamped, GRIPPER_POSE_TOPIC, 10)
        self._info = CameraInfo(**camera_info_fields(self.sim.intrinsics))
        self._timer = None
        self._start_timer = self.create_timer(self.config.start_delay_s, self._start)
        self.get_logger().info(f"{self.sim.n_frames} frames at {self.config.rate_hz} Hz, "
                               f"objects {sorted(self.sim.labels)}")

    def _start(self) -> None:
        """Begin once the delay passed and enough subscribers matched (DDS drops frames sent before)."""
        # Each topic matches its subscribers on its own: an evaluation that pairs every frame with its truth
        # waits for the ground_truth match too.
        for publisher, wanted, topic in ((self._image_pub, self.config.min_subscribers, "image"),
                                         (self._truth_pub, self.config.min_truth_subscribers, "ground_truth")):
            if publisher.get_subscription_count() < wanted:
                self.get_logger().info(f"waiting for {wanted} {topic} subscriber(s)", throttle_duration_sec=5.0)
                return
        self._start_timer.cancel()
        self._timer = self.create_timer(1.0 / self.config.rate_hz, self._tick)

    def _tick(self) -> None:
        if self._index >= self.sim.n_frames:
            if not self.config.loop:
                self._timer.cancel()
                self.done = True
                return
            self._index = 0
        sim_frame = self.sim.render(self._index)
        self._index += 1
        frame = sim_frame.frame
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=frame.frame_id)
        self._info.header = header
        self._image_pub.publish(Image(header=header, **rgb_to_image_fields(frame.rgb)))
        if self._depth_pub is not None and frame.depth_m is not None:
            depth_fields = depth_to_image_fields(frame.depth_m, self.config.depth_encoding)
            self._depth_pub.publish(Image(header=header, **depth_fields))
        self._info_pub.publish(self._info)
        truth = sim_frame.truth
        self._truth_pub.publish(DiagnosticArray(header=header, status=[
            DiagnosticStatus(name=name, message=f"frame {sim_frame.index}", values=[
                KeyValue(key="gap_m", value=repr(truth.gap_m[name])),
                KeyValue(key="centre_m", value=repr(truth.centre_m[name])),
                KeyValue(key="frame_index", value=str(sim_frame.index))])
            for name in truth.gap_m]))
        self._truth_distance_pub.publish(Float32(data=float(truth.gap_m[self.target])))
        (px, py, pz), (qx, qy, qz, qw) = matrix_to_pose_fields(truth.gripper_pose_cam)
        self._gripper_pose_pub.publish(PoseStamped(header=header, pose=Pose(
            position=Point(x=px, y=py, z=pz), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))))


def main(args: list[str] | None = None) -> None:
    """Console entry point: ``sim_camera_node --ros-args --params-file config/sim_demo.yaml``."""
    rclpy.init(args=args)
    node = None
    try:
        node = SimCameraNode()
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
        node.get_logger().info("trajectory finished")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, SpatialVLMError) as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {err}")
        raise SystemExit(2) from err
    except RuntimeError:   # the context shut down inside spin_once (SIGINT); see spatial_reward_node.main
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.sim.close()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
