"""Gymnasium door: spatial reward wrappers (single and vector) and the tabletop reach env.

Importing this package registers ``SpatialVLM/TabletopReach-v0`` (50-step episodes), so
``gym.make("SpatialVLM/TabletopReach-v0")`` works after ``import spatialvlm_ros.gym``; without the import,
``gym.make("spatialvlm_ros.gym:SpatialVLM/TabletopReach-v0")`` imports it on the way.
"""

import gymnasium

from spatialvlm_ros.gym.reach import TabletopReachEnv
from spatialvlm_ros.gym.spatial import INFO_KEYS, RgbdRenderable, SpatialObservation
from spatialvlm_ros.gym.vector import SpatialRewardVectorWrapper
from spatialvlm_ros.gym.wrapper import SpatialRewardWrapper

REACH_ID = "SpatialVLM/TabletopReach-v0"
gymnasium.register(id=REACH_ID, entry_point="spatialvlm_ros.gym.reach:TabletopReachEnv", max_episode_steps=50)

__all__ = ["INFO_KEYS", "REACH_ID", "RgbdRenderable", "SpatialObservation", "SpatialRewardVectorWrapper",
           "SpatialRewardWrapper", "TabletopReachEnv"]
