"""Launch the simulated demo: sim_camera_node + spatial_reward_node (what ``spatialvlm demo`` runs).

``spatialvlm demo`` starts the same two executables with the same parameter file as separate
processes, and also records and scores the run; use this file where ``ros2 launch`` exists and you
want to watch in RViz (topics ``markers``, ``camera/color/image_raw``) instead.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node


def generate_launch_description() -> LaunchDescription:
    """Both nodes, one parameter file."""
    share = get_package_share_directory("spatialvlm_ros")
    config = LaunchConfiguration("config")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "sim_demo.yaml")),
        Node(package="spatialvlm_ros", executable="sim_camera_node", name="sim_camera_node",
             parameters=[config], output="screen"),
        LifecycleNode(package="spatialvlm_ros", executable="spatial_reward_node", name="spatial_reward_node",
                      namespace="", parameters=[config], output="screen"),   # autostart: it activates itself
    ])
