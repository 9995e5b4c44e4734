"""Rosbag2 evaluation: the spatial reward scored on recorded camera frames.

Offline, the estimator and reward run in-process on every frame as fast as they can; live, the bag
is replayed over DDS into a real ``spatial_reward_node``. Both give the same per-frame records,
metrics, plots and annotated bag (see :func:`~spatialvlm_ros.bag.evaluate.evaluate_bag`). Nothing
here imports rclpy: bags are read with ``rosbags`` (:mod:`spatialvlm_ros.messages.rosbag`), and the
live replay is handed in as a :class:`~spatialvlm_ros.bag.evaluate.LiveReplay` by the ROS side.
Failures are :class:`~spatialvlm_ros.errors.BagError`.
"""

from spatialvlm_ros.bag.evaluate import Evaluation, LiveReplay, evaluate_bag, select_pair
from spatialvlm_ros.bag.records import FrameRecord, RunResult

__all__ = ["Evaluation", "FrameRecord", "LiveReplay", "RunResult", "evaluate_bag", "select_pair"]
