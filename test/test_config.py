"""Typed config: the shipped YAML, validation messages, and the ROS-parameter mapping."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spatialvlm_ros.config import (
    RewardConfig, SimCameraConfig, SpatialRewardConfig, VLMConfig, config_path, from_flat, from_mapping, load_config,
    node_params, to_flat,
)
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.types import DistanceKind, Pair


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
    cfg = from_mapping(SpatialRewardConfig, {"pairs": ["a gripper -> red can", "a gripper -> blue box"],
                                             "estimator": {"distance": "centre", "vlm": {"openai": {"retries": 5}}}})
    flat = to_flat(cfg)
    assert flat["pairs"] == ["a gripper -> red can", "a gripper -> blue box"]   # plain values for ROS
    assert flat["estimator.distance"] == "centre" and flat["estimator.vlm.openai.retries"] == 5
    assert from_flat(SpatialRewardConfig, flat) == cfg


def test_pairs_and_kinds_are_parsed_once_and_travel_typed() -> None:
    cfg = from_mapping(SpatialRewardConfig, {"pairs": ["yellow gripper -> red can"],
                                             "estimator": {"distance": "centre"}})
    assert cfg.pairs == (Pair("yellow gripper", "red can"),)
    assert cfg.estimator.distance is DistanceKind.CENTRE


@pytest.mark.parametrize("data,new_key", [
    ({"estimator": {"vlm": {"url": "http://h:1/v1"}}}, "estimator.vlm.openai.url"),
    ({"estimator": {"vlm": {"weights": "w"}}}, "estimator.vlm.compact.weights"),
    ({"estimator": {"vlm": {"device": "cuda"}}}, "estimator.vlm.transformers.device"),
    ({"estimator": {"models": {"detection_threshold": 0.2}}}, "models.detector.threshold"),
    ({"estimator": {"models": {"depth_intrinsics": "frame"}}}, "models.depth.intrinsics"),
])
def test_an_old_flat_key_names_its_new_key(data: dict, new_key: str) -> None:
    with pytest.raises(ConfigError, match=f"has moved: use {new_key}"):
        from_mapping(SpatialRewardConfig, data)


def test_each_vlm_backend_section_is_its_own() -> None:
    cfg = from_mapping(VLMConfig, {"backend": "openai", "openai": {"url": "https://x/v1", "temperature": 0.7},
                                   "transformers": {"device": "cuda:1"}})
    assert cfg.openai.url == "https://x/v1" and cfg.openai.temperature == 0.7
    assert cfg.compact.temperature == 0.0 and cfg.transformers.device == "cuda:1"
    with pytest.raises(ConfigError, match="estimator.vlm.openai.url: must be an http"):
        from_mapping(VLMConfig, {"openai": {"url": "ftp://x"}})


def test_the_config_is_a_leaf_that_loads_no_model_code() -> None:
    code = ("import sys, spatialvlm_ros.config as c; c.load_config(c.SpatialRewardConfig, 'spatial_reward_node', "
            "c.config_path('spatial_reward.yaml')); "
            "print(sorted(m for m in sys.modules if m.startswith('spatialvlm_ros.') or m in ('cv2', 'torch')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    parts = ("gripper", "models", "node", "reasoning", "schema", "sim", "vlm")
    assert eval(loaded) == ["spatialvlm_ros.config", *(f"spatialvlm_ros.config.{p}" for p in parts),
                            "spatialvlm_ros.errors", "spatialvlm_ros.types"]


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
    ({"pairs": ["red can"]}, r"pairs\[0\]: pair 'red can' must read 'GRIPPER -> OBJECT'"),
    ({"pairs": []}, "pairs: name at least one"),
    ({"estimator": {"distance": "diagonal"}}, r"estimator.distance: 'diagonal' is not one of \['gap', 'centre'\]"),
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
