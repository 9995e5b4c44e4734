"""ROS parameters that mirror a typed config dataclass 1:1 (dotted names: ``reward.shaping``).

Nodes are created with ``automatically_declare_parameters_from_overrides=True`` so that a key in
the parameter file that the config does not know is *seen* (and reported) instead of silently
ignored; known keys are re-declared with a descriptor and the config's type.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Iterable, TypeVar

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from spatialvlm_ros.config import from_flat, to_flat
from spatialvlm_ros.errors import ConfigError

T = TypeVar("T")

# rclpy declares these itself; they are not ours to validate.
_ROS_OWNED = {"use_sim_time", "start_type_description_service"}


def _descriptions(cls: type, prefix: str = "") -> dict[str, str]:
    """Map each dotted parameter name to a description of its type, from the dataclass annotations."""
    out: dict[str, str] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_descriptions(tp, prefix=f"{prefix}{f.name}."))
        else:
            choices = typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else ()
            out[prefix + f.name] = f"one of {list(choices)}" if choices else getattr(tp, "__name__", str(tp))
    return out


def declare_config_parameters(node: Node, cls: type) -> list[str]:
    """Declare one ROS parameter per config field; return parameter names the config does not know.

    Values given in a parameter file override the dataclass defaults. An unknown name is undeclared
    again (so a later ``set_parameters`` on it fails as usual) and returned for the caller to report.
    """
    defaults = to_flat(cls())
    descriptions = _descriptions(cls)
    declared = node.list_parameters([], 0).names  # depth 0: recursive
    unknown = sorted(n for n in declared if n not in defaults and n not in _ROS_OWNED)
    for name in unknown:
        node.undeclare_parameter(name)
    for name, default in defaults.items():
        value = default
        if node.has_parameter(name):  # declared from the parameter file: adopt its value, our type
            value = node.get_parameter(name).value
            node.undeclare_parameter(name)
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
        node.declare_parameter(name, value, ParameterDescriptor(description=descriptions[name]))
    return unknown


def read_config(node: Node, cls: type[T]) -> T:
    """Build the typed config from the node's current parameters (raises ConfigError)."""
    names = to_flat(cls()).keys()
    return from_flat(cls, {n: _plain(node.get_parameter(n).value) for n in names})


def updated_config(current: T, params: Iterable[Parameter], fixed_prefixes: tuple[str, ...] = ()) -> T:
    """The config after applying ``params``; raises ConfigError naming the bad key.

    Parameters under ``fixed_prefixes`` are read at start only (topics, QoS): changing them raises.
    """
    flat = to_flat(current)
    for p in params:
        if p.name in _ROS_OWNED:
            continue
        if p.name not in flat:
            raise ConfigError(f"unknown parameter {p.name!r}")
        if p.name.startswith(fixed_prefixes):
            raise ConfigError(f"{p.name} is read at start only; restart the node to change it")
        flat[p.name] = _plain(p.value)
    return from_flat(type(current), flat)


def set_result(ok: bool, reason: str = "") -> SetParametersResult:
    """Shorthand for a parameter-callback answer."""
    return SetParametersResult(successful=ok, reason=reason)


def _plain(value: Any) -> Any:
    """Turn array parameters (rclpy returns array.array) into the lists the config expects."""
    if value is not None and not isinstance(value, (str, bytes, bool, int, float)):
        return list(value)
    return value
