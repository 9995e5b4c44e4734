"""Distance estimates -> dense reward: shaping, temporal filtering, invalid policy, pair combination.

Pure Python / numpy; no rclpy. :func:`shape_distance` is the stateless, vectorised core;
:func:`build_reward` gives the stateful per-frame reward a node or gym wrapper updates.
"""

from spatialvlm_ros.reward.filters import DistanceFilter, EmaFilter, MedianFilter, PassThrough, build_filter
from spatialvlm_ros.reward.shaping import SHAPINGS, Shaping, get_shaping, shape_distance
from spatialvlm_ros.reward.tracker import (
    CombinedReward, MultiPairReward, RewardStep, RewardTracker, build_reward, combine_rewards,
)

__all__ = ["CombinedReward", "DistanceFilter", "EmaFilter", "MedianFilter", "MultiPairReward", "PassThrough",
           "RewardStep", "RewardTracker", "Shaping", "build_filter", "build_reward", "combine_rewards",
           "get_shaping", "shape_distance", "SHAPINGS"]
