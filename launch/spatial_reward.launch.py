"""Launch spatial_reward_node on a robot (needs a full ROS 2 install with launch / launch_ros).

Arguments:
    config: parameter file (default: this package's config/spatial_reward.yaml)
    namespace: namespace for the node and its relative topics
    use_sim_time: follow /clock (bag replay, simulation)
    autostart: configure and activate the lifecycle node at start (default true); false leaves it
        unconfigured for a lifecycle manager (``ros2 lifecycle set /spatial_reward_node configure``)
    image / depth / camera_info: topics to remap the node's inputs to (e.g. a RealSense's)

Example (RealSense ROS 2 wrapper, default names, one command line):
    ros2 launch spatialvlm_ros spatial_reward.launch.py image:=/camera/camera/color/image_raw
    depth:=/camera/camera/aligned_depth_to_color/image_raw camera_info:=/camera/camera/color/camera_info
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue

# The node's own defaults (config/spatial_reward.yaml); the remaps below only rename its inputs.
NODE_TOPICS = {"image": "camera/color/image_raw",
               "depth": "camera/aligned_depth_to_color/image_raw",
               "camera_info": "camera/color/camera_info"}


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the one node."""
    share = get_package_share_directory("spatialvlm_ros")
    args = [
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "spatial_reward.yaml")),
        DeclareLaunchArgument("namespace", default_value=""),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        DeclareLaunchArgument("autostart", default_value="true"),
    ] + [DeclareLaunchArgument(name, default_value=topic) for name, topic in NODE_TOPICS.items()]
    # A LifecycleNode action: launch can then drive and watch its transitions (lifecycle event handlers);
    # with autostart the node takes itself to active.
    node = LifecycleNode(
        package="spatialvlm_ros",
        executable="spatial_reward_node",
        name="spatial_reward_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("config"),
                    {"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                     "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool)}],
        remappings=[(topic, LaunchConfiguration(name)) for name, topic in NODE_TOPICS.items()],
        output="screen",
    )
    return LaunchDescription(args + [node])
