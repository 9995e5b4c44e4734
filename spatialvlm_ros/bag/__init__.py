"""Rosbag2 replay and evaluation: the spatial reward scored on recorded camera frames.

Offline, the estimator and reward run in-process on every frame as fast as they can; live, the bag
is replayed over DDS into a real ``spatial_reward_node``. Both give the same per-frame records,
metrics, plots and annotated bag (see :func:`~spatialvlm_ros.bag.evaluate.evaluate_bag`). Only the
live mode imports rclpy; reading bags needs no ROS install (``rosbags``).
"""

from spatialvlm_ros.bag.errors import BagError
from spatialvlm_ros.bag.evaluate import Evaluation, evaluate_bag, select_pair
from spatialvlm_ros.bag.records import FrameRecord, RunResult

__all__ = ["BagError", "Evaluation", "FrameRecord", "RunResult", "evaluate_bag", "select_pair"]
