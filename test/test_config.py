"""Typed config: the shipped YAML, validation messages, and the ROS-parameter mapping."""

from __future__ import annotations

import pytest

from spatialvlm_ros.config import (
    RewardConfig, SimCameraConfig, SpatialRewardConfig, config_path, from_flat, from_mapping, load_config,
    node_params, to_flat,
)
from spatialvlm_ros.errors import ConfigError


def test_shipped_yaml_is_the_source_of_the_defaults() -> None:
    # config/spatial_reward.yaml must list every key with the dataclass default: one source of truth.
    data = load_config(SpatialRewardConfig, "spatial_reward_node", config_path("spatial_reward.yaml"))
    assert data == SpatialRewardConfig()
    from spatialvlm_ros.config import load_yaml
    listed = to_flat(from_mapping(SpatialRewardConfig, node_params(load_yaml(config_path("spatial_reward.yaml")),
                                                                   "spatial_reward_node")))
    assert listed.keys() == to_flat(SpatialRewardConfig()).keys()


def test_demo_yaml_loads_for_both_nodes() -> None:
    sim = load_config(SimCameraConfig, "sim_camera_node", config_path("sim_demo.yaml"))
    assert sim.sim.depth_noise.enabled and sim.sim.target == "can"
    reward = load_config(SpatialRewardConfig, "spatial_reward_node", config_path("sim_demo.yaml"))
    assert reward.qos.reliability == "reliable"


def test_flat_round_trip() -> None:
    cfg = SpatialRewardConfig(pairs=("a gripper -> red can", "a gripper -> blue box"))
    assert from_flat(SpatialRewardConfig, to_flat(cfg)) == cfg


def test_dotted_and_nested_keys_both_work_as_in_ros() -> None:
    data = {"spatial_reward_node": {"ros__parameters": {"reward.scale_m": 0.5, "reward": {"filter": "none"}}}}
    cfg = from_mapping(SpatialRewardConfig, node_params(data, "spatial_reward_node"))
    assert (cfg.reward.scale_m, cfg.reward.filter) == (0.5, "none")


@pytest.mark.parametrize("data,match", [
    ({"reward": {"shapng": "exp"}}, "unknown key 'reward.shapng'"),
    ({"reward": {"shaping": "cubic"}}, r"reward.shaping: 'cubic' is not one of"),
    ({"reward": {"scale_m": "far"}}, "reward.scale_m: expected a number"),
    ({"reward": {"scale_m": -1.0}}, "reward.scale_m: must be > 0"),
    ({"estimator": {"min_pixels": 2.5}}, "estimator.min_pixels: expected an integer"),
    ({"publish_markers": "yes"}, "publish_markers: expected true/false"),
    ({"pairs": "yellow gripper -> red can"}, "pairs: expected a list"),
    ({"pairs": ["red can"]}, "GRIPPER -> OBJECT"),
    ({"pairs": ["g -> red can", "h -> red can"]}, "share a target name"),
    ({"reward": 3}, "reward: expected a mapping"),
])
def test_bad_values_name_the_key(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        from_mapping(SpatialRewardConfig, data)


def test_ints_are_accepted_for_floats() -> None:
    assert from_mapping(RewardConfig, {"scale_m": 1}).scale_m == 1.0


def test_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(SpatialRewardConfig, "spatial_reward_node", tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spatial_reward_node: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SpatialRewardConfig, "spatial_reward_node", bad)
    with pytest.raises(ConfigError, match="unknown key 'reward.nope'"):
        load_config(SpatialRewardConfig, "spatial_reward_node", overrides={"reward.nope": 1})
