"""ROS 2 adapters: rclpy nodes and message conversion. The only subpackage that imports rclpy."""
