"""Camera model, back-projection, point clouds, planes: pure numpy/scipy, no ROS."""
