"""spatialvlm_ros: SpatialVLM-style metric spatial reasoning for ROS 2 robots.

The core (geometry, messages, perception, estimation, reward, sim) imports no rclpy; only
:mod:`spatialvlm_ros.ros` does.
"""

__version__ = "0.1.0"
