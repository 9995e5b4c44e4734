"""Typed configuration: frozen dataclasses, loaded from YAML (``yaml.safe_load``) and validated.

A leaf of the package: it imports only :mod:`spatialvlm_ros.errors` and :mod:`spatialvlm_ros.types`. It
describes the settings of every part and never imports what it configures, so any floor can read it.

* :mod:`~spatialvlm_ros.config.schema`: dataclass <-> mapping <-> dotted ROS names, YAML loading;
* :mod:`~spatialvlm_ros.config.node`: ``spatial_reward_node`` (estimator, reward, topics, QoS, pairing);
* :mod:`~spatialvlm_ros.config.vlm`: the spatial VLM, one section per backend;
* :mod:`~spatialvlm_ros.config.models`: the learned experts, one section per expert;
* :mod:`~spatialvlm_ros.config.reasoning`: chain-of-thought reasoning (planner, language model);
* :mod:`~spatialvlm_ros.config.sim`: the MuJoCo tabletop and ``sim_camera_node``.
"""

from spatialvlm_ros.config.gripper import GRIPPER_MODELS, GripperConfig
from spatialvlm_ros.config.models import (
    DEFAULT_FOVY_DEG, CaptionerConfig, ClipConfig, DepthModelConfig, DetectorConfig, ModelsConfig, SegmenterConfig,
)
from spatialvlm_ros.config.reasoning import LLMPlannerConfig, ReasoningConfig
from spatialvlm_ros.config.node import (
    CompletionConfig, EstimatorConfig, QosConfig, RewardConfig, SensorModelConfig, SpatialRewardConfig, SyncConfig,
    TopicsConfig,
)
from spatialvlm_ros.config.schema import (
    config_path, from_flat, from_mapping, load_config, load_yaml, node_params, require, to_flat, unflatten,
)
from spatialvlm_ros.config.sim import DepthNoiseConfig, SimCameraConfig, SimConfig, ViewpointConfig
from spatialvlm_ros.config.vlm import CompactVLMConfig, OpenAIVLMConfig, TransformersVLMConfig, VLMConfig

__all__ = [
    "DEFAULT_FOVY_DEG", "CaptionerConfig", "ClipConfig", "CompactVLMConfig", "CompletionConfig", "DepthModelConfig",
    "DepthNoiseConfig", "DetectorConfig", "EstimatorConfig", "GRIPPER_MODELS", "GripperConfig",
    "LLMPlannerConfig", "ModelsConfig", "OpenAIVLMConfig",
    "QosConfig", "ReasoningConfig", "RewardConfig", "SegmenterConfig", "SensorModelConfig", "SimCameraConfig",
    "SimConfig", "SpatialRewardConfig", "SyncConfig", "TopicsConfig", "TransformersVLMConfig", "VLMConfig",
    "ViewpointConfig", "config_path", "from_flat", "from_mapping", "load_config", "load_yaml", "node_params",
    "require", "to_flat", "unflatten"
]
