"""ROS parameter descriptors of the config dataclasses, on a real (in-process) rclpy node."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator

import pytest
from rclpy.parameter import Parameter

from spatialvlm_ros.config import SimCameraConfig, SpatialRewardConfig, from_flat, to_flat
from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.ros import params

CONFIGS = (SpatialRewardConfig, SimCameraConfig)
TYPE_NAMES = {"str", "int", "float", "bool"}


@pytest.fixture
def node(ros_env: dict[str, str]) -> Iterator[Any]:
    """A bare rclpy node that takes parameter overrides, as the nodes are created."""
    import rclpy
    from rclpy.node import Node
    context = rclpy.Context()
    rclpy.init(context=context)
    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        made.append(Node("params_test", context=context, automatically_declare_parameters_from_overrides=True,
                         parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]))
        return made[-1]
    yield make
    for n in made:
        n.destroy_node()
    rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_parameter_is_described(cls: type) -> None:
    descriptors = params.descriptors(cls)
    assert set(descriptors) == set(to_flat(cls()))
    vague = {name: d.description for name, d in descriptors.items()
             if d.description in TYPE_NAMES or len(d.description) < 10}
    assert not vague, f"add these to ros/params.py DESCRIPTIONS (or an Attributes: docstring): {vague}"


def test_tables_name_only_real_parameters() -> None:
    names = {name for cls in CONFIGS for name in to_flat(cls())}
    assert set(params.BOUNDS) <= names and set(params.DESCRIPTIONS) <= names


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_ranges_never_refuse_what_the_config_accepts(cls: type) -> None:
    """Just outside each ROS range, the config refuses too (so a range is never stricter than the config)."""
    defaults = to_flat(cls())
    checked = 0
    for name, descriptor in params.descriptors(cls).items():
        outside: list[float] = []
        for rng, step in ((descriptor.floating_point_range, 1e-6), (descriptor.integer_range, 1)):
            if rng:
                outside.append(rng[0].from_value - step)
                if math.isfinite(rng[0].to_value) and rng[0].to_value < 2**63 - 1:
                    outside.append(rng[0].to_value + step)
        for value in outside:
            with pytest.raises(ConfigError):
                from_flat(cls, {**defaults, name: value})
            checked += 1
    assert checked >= 10


def test_descriptors_on_a_node_and_integers_for_floats(node: Any) -> None:
    n = node(**{"reward.scale_m": 1, "reward.gamma": 1})   # integers for floats in a parameter file
    assert params.declare_config_parameters(n, SpatialRewardConfig) == []
    assert n.get_parameter("reward.scale_m").value == 1.0
    assert n.get_parameter("reward.scale_m").type_ == Parameter.Type.DOUBLE
    gamma, samples, shaping = n.describe_parameters(["reward.gamma", "estimator.vlm.samples", "reward.shaping"])
    assert "discount" in gamma.description and gamma.additional_constraints == "in (0, 1]"
    assert (gamma.floating_point_range[0].from_value, gamma.floating_point_range[0].to_value) == (0.0, 1.0)
    assert samples.integer_range[0].from_value == 1 and "answers per pair" in samples.description
    assert shaping.additional_constraints == "one of ['exp', 'negative', 'progress']"

    ok_int, out_of_range, wrong_type = n.set_parameters([
        Parameter("reward.scale_m", value=2), Parameter("reward.gamma", value=1.5),
        Parameter("reward.scale_m", value="far")])
    assert ok_int.successful and n.get_parameter("reward.scale_m").value == 2.0
    assert not out_of_range.successful and "out of range" in out_of_range.reason
    assert not wrong_type.successful


def test_a_bad_value_at_start_is_named_by_the_config(node: Any) -> None:
    with pytest.raises(ConfigError, match="reward.gamma: must be in"):
        params.declare_config_parameters(node(**{"reward.gamma": 1.5}), SpatialRewardConfig)
    with pytest.raises(ConfigError, match="qos.depth: expected an integer"):
        params.declare_config_parameters(node(**{"qos.depth": "deep"}), SpatialRewardConfig)


def test_sim_camera_parameters_are_bounded_too(node: Any) -> None:
    n = node(**{"rate_hz": 10})
    params.declare_config_parameters(n, SimCameraConfig)
    rate, width = n.describe_parameters(["rate_hz", "sim.width"])
    assert rate.additional_constraints == "> 0" and rate.floating_point_range[0].from_value == 0.0
    assert width.integer_range[0].from_value == 16
    assert params.read_config(n, SimCameraConfig) == dataclasses.replace(SimCameraConfig(), rate_hz=10.0)
