"""ROS messages without ROS: the ground floor the nodes, the bag evaluator and the data engine share.

* :mod:`.conversions`: sensor_msgs Image / CompressedImage / CameraInfo <-> numpy arrays and Frames;
* :mod:`.sync`: colour-depth pairing by header stamp;
* :mod:`.rosbag`: opening a rosbag2 with ``rosbags``, detecting its camera topics, streaming its frames.

Everything here is duck-typed on message fields, so it reads rclpy messages and rosbags-deserialised
messages alike. Nothing here imports rclpy or any other part of the package above this floor
(``ros``, ``bag``, ``synthesis``, ...): they import it, never the other way round.
"""
