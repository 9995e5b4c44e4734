"""The config machinery: dataclasses <-> nested mappings <-> dotted ROS parameter names, and YAML loading.

One mechanism serves every door:

* the YAML files in ``config/`` use the ROS 2 parameter-file layout
  (``node_name: {ros__parameters: {...}}``) and are the single source of defaults;
* :func:`from_mapping` turns nested dicts into the frozen config dataclasses, naming the bad key on error;
* :func:`to_flat` / :func:`from_flat` map them to and from dotted ROS parameter names
  (``reward.shaping``), so the nodes declare exactly the parameters the dataclasses define.

Choices are ``Literal`` or ``enum`` annotations and text pairs are :class:`~spatialvlm_ros.types.Pair`,
all checked and parsed here, once; ranges are checked in each dataclass's ``__post_init__``. A key that
moved to a new place (or was removed) is listed in the dataclass's ``MOVED`` class attribute (old name ->
new dotted name, or "was removed: why") so the error says where it went.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.types import Pair


def config_path(name: str) -> Path:
    """Path of a shipped file in ``config/``: the source tree (pip -e), else the ament share folder."""
    source = Path(__file__).resolve().parents[2] / "config" / name
    if source.exists():
        return source
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        share = Path(get_package_share_directory("spatialvlm_ros")) / "config" / name
    except (ImportError, PackageNotFoundError) as err:
        raise ConfigError(f"cannot find config/{name}: not in a source tree and no ament install") from err
    if not share.exists():
        raise ConfigError(f"cannot find config/{name} in {share.parent}")
    return share


def require(cond: bool, key: str, msg: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``cond`` holds (range checks in ``__post_init__``)."""
    if not cond:
        raise ConfigError(f"{key}: {msg}")


# ---------------------------------------------------------------------------------------------
# Generic dataclass <-> mapping conversion
# ---------------------------------------------------------------------------------------------

def _check_value(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Pair:
        if isinstance(value, Pair):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected 'GRIPPER -> OBJECT', got {value!r}")
        try:
            return Pair.parse(value)
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from err
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_mapping(tp, value, prefix=f"{key}.")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not one of {[m.value for m in tp]}") from None
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_check_value(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        if math.isnan(value):
            raise ConfigError(f"{key}: NaN is not a valid setting")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")  # programming error, not user error


T = typing.TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build config dataclass ``cls`` from nested dicts; missing keys keep their defaults.

    Example:
        >>> from spatialvlm_ros.config import RewardConfig, VLMConfig
        >>> from_mapping(RewardConfig, {"shaping": "negative", "scale_m": 0.5}).scale_m
        0.5
        >>> from_mapping(RewardConfig, {"shapng": "exp"})
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: unknown key 'shapng'; known: ...
        >>> from_mapping(VLMConfig, {"url": "http://h:1/v1"}, prefix="estimator.vlm.")
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: 'estimator.vlm.url' has moved: use estimator.vlm.openai.url
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    moved: Mapping[str, str] = getattr(cls, "MOVED", {})
    for key in unknown:
        if key in moved:
            where = moved[key]
            raise ConfigError(f"{prefix + key!r} {where}" if where.startswith("was removed")
                              else f"{prefix + key!r} has moved: use {where}")
    if unknown:
        raise ConfigError(f"unknown key {prefix + unknown[0]!r}; known: {', '.join(prefix + n for n in names)}")
    kwargs = {k: _check_value(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-name view of a config (``{"reward.shaping": "exp", ...}``) in plain YAML / ROS values."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(to_flat(value, prefix=f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    """A config value as a YAML / ROS parameter value: tuples become lists, enums and pairs strings."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Pair):
        return str(value)
    return value


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {p!r} is a value, not a section")
        node[leaf] = value
    return nested


def from_flat(cls: type[T], flat: Mapping[str, Any]) -> T:
    """Inverse of :func:`to_flat`."""
    return from_mapping(cls, unflatten(flat))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def _flatten_dict(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten_dict(value, prefix=f"{prefix}{key}."))
        else:
            out[prefix + str(key)] = value
    return out


def node_params(data: Mapping[str, Any], node_name: str) -> dict[str, Any]:
    """Nested ``ros__parameters`` of ``node_name`` in a ROS 2 parameter file.

    Sections ``/**`` (all nodes), ``node_name`` and ``/node_name`` are merged in that order, and
    nested or dotted keys (``reward: {shaping: exp}`` or ``reward.shaping: exp``) both work, as in ROS.
    """
    flat: dict[str, Any] = {}
    for key in ("/**", node_name, "/" + node_name):
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, Mapping) or not isinstance(section.get("ros__parameters"), Mapping):
            raise ConfigError(f"{key}: expected a 'ros__parameters' mapping")
        flat.update(_flatten_dict(section["ros__parameters"]))
    return unflatten(flat)


def load_config(cls: type[T], node_name: str, path: str | Path | None = None,
                overrides: Mapping[str, Any] | None = None) -> T:
    """Load ``cls`` from the ROS parameter file ``path`` (section ``node_name``), then dotted overrides.

    Example:
        >>> from spatialvlm_ros.config import SpatialRewardConfig
        >>> cfg = load_config(SpatialRewardConfig, "spatial_reward_node",
        ...                   overrides={"reward.shaping": "negative"})
        >>> cfg.reward.shaping, cfg.pairs
        ('negative', (Pair(gripper='yellow gripper', target='red can'),))
    """
    nested = node_params(load_yaml(path), node_name) if path is not None else {}
    flat = to_flat(from_mapping(cls, nested))
    for key, value in (overrides or {}).items():
        if key not in flat:
            raise ConfigError(f"unknown key {key!r}")
        flat[key] = value
    return from_flat(cls, flat)
