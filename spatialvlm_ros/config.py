"""Typed configuration: frozen dataclasses, loaded from YAML (``yaml.safe_load``) and validated.

One mechanism serves every door:

* the YAML files in ``config/`` use the ROS 2 parameter-file layout
  (``node_name: {ros__parameters: {...}}``) and are the single source of defaults;
* :func:`from_mapping` turns nested dicts into these dataclasses, naming the bad key on error;
* :func:`to_flat` / :func:`from_flat` map them to and from dotted ROS parameter names
  (``reward.shaping``), so the nodes declare exactly the parameters the dataclasses define.

Choices are ``Literal`` annotations, checked generically; ranges are checked in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from spatialvlm_ros.errors import ConfigError
from spatialvlm_ros.perception.hf import ModelsConfig
from spatialvlm_ros.vlm.base import VLMConfig


def config_path(name: str) -> Path:
    """Path of a shipped file in ``config/``: the source tree (pip -e), else the ament share folder."""
    source = Path(__file__).resolve().parent.parent / "config" / name
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


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    """Which backend answers "how far is A from B", and how the geometric one works."""

    backend: str = "geometric"
    distance: Literal["gap", "centre"] = "gap"
    grounding: Literal["colour_prompt", "sim_segmentation", "open_vocab"] = "colour_prompt"
    min_pixels: int = 30               # fewer mask pixels than this = "not visible"
    depth_min_m: float = 0.1           # sensor valid range; readings outside are dropped
    depth_max_m: float = 5.0
    outlier_k: float = 3.0             # drop points farther than k robust sigmas from the median
    max_points: int = 3000             # per object, subsampled before the KD-tree (speed)
    seed: int = 0                      # for that subsampling
    vlm: VLMConfig = VLMConfig()       # backend "vlm": which spatial VLM, where, how many samples
    monocular_depth: bool = False      # frames without depth: estimate it with models.depth instead of NO_DEPTH
    models: ModelsConfig = ModelsConfig()   # transformers checkpoints (grounding open_vocab, monocular_depth)

    def __post_init__(self) -> None:
        _require(self.min_pixels >= 1, "estimator.min_pixels", "must be >= 1")
        _require(0 <= self.depth_min_m < self.depth_max_m, "estimator.depth_min_m",
                 "need 0 <= depth_min_m < depth_max_m")
        _require(self.outlier_k > 0, "estimator.outlier_k", "must be > 0")
        _require(self.max_points >= 10, "estimator.max_points", "must be >= 10")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """Distance -> reward: shaping, success bonus, temporal filter, clipping, invalid policy."""

    shaping: Literal["exp", "negative", "progress"] = "exp"
    scale_m: float = 0.1               # exp: r = exp(-d / scale_m); negative: r = -d / scale_m
    gamma: float = 0.99                # progress: r = gamma * phi(d_t) - phi(d_{t-1}), phi = -d / scale_m
    success_threshold_m: float = 0.02
    success_bonus: float = 0.0         # added when the filtered distance is under the threshold
    filter: Literal["none", "ema", "median"] = "ema"
    ema_alpha: float = 0.6             # weight of the newest estimate
    median_window: int = 5
    clip_min: float = -10.0
    clip_max: float = 10.0
    invalid_policy: Literal["hold_last", "nan", "skip"] = "hold_last"
    combine: Literal["mean", "sum", "min"] = "mean"

    def __post_init__(self) -> None:
        _require(self.scale_m > 0, "reward.scale_m", "must be > 0")
        _require(0 < self.gamma <= 1, "reward.gamma", "must be in (0, 1]")
        _require(self.success_threshold_m >= 0, "reward.success_threshold_m", "must be >= 0")
        _require(0 < self.ema_alpha <= 1, "reward.ema_alpha", "must be in (0, 1]")
        _require(self.median_window >= 1, "reward.median_window", "must be >= 1")
        _require(self.clip_min < self.clip_max, "reward.clip_min", "must be < clip_max")


@dataclasses.dataclass(frozen=True)
class TopicsConfig:
    """Camera topics, relative so a namespace or remap moves them (RealSense wrapper defaults)."""

    image: str = "camera/color/image_raw"
    transport: Literal["raw", "compressed"] = "raw"   # compressed subscribes to ``<image>/compressed``
    depth: str = "camera/aligned_depth_to_color/image_raw"   # "" = monocular, no depth
    camera_info: str = "camera/color/camera_info"


@dataclasses.dataclass(frozen=True)
class QosConfig:
    """Image QoS. Sensor-data defaults: best effort, keep last, shallow queue (latest frame wins)."""

    reliability: Literal["best_effort", "reliable"] = "best_effort"
    depth: int = 2

    def __post_init__(self) -> None:
        _require(self.depth >= 1, "qos.depth", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class SyncConfig:
    """Pairing of colour and depth by header stamp."""

    slop_s: float = 0.01
    queue_size: int = 10

    def __post_init__(self) -> None:
        _require(self.slop_s >= 0, "sync.slop_s", "must be >= 0")
        _require(self.queue_size >= 1, "sync.queue_size", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class SpatialRewardConfig:
    """Everything ``spatial_reward_node`` needs; mirrored 1:1 by its ROS parameters."""

    pairs: tuple[str, ...] = ("yellow gripper -> red can",)
    topics: TopicsConfig = TopicsConfig()
    qos: QosConfig = QosConfig()
    sync: SyncConfig = SyncConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    reward: RewardConfig = RewardConfig()
    diagnostics_period_s: float = 1.0
    publish_markers: bool = True

    def __post_init__(self) -> None:
        from spatialvlm_ros.estimation.base import Pair
        _require(len(self.pairs) >= 1, "pairs", "name at least one 'GRIPPER -> OBJECT' pair")
        try:
            slugs = [Pair.parse(p).slug for p in self.pairs]
        except ConfigError as err:
            raise ConfigError(f"pairs: {err}") from err
        _require(len(set(slugs)) == len(slugs), "pairs", f"two pairs share a target name: {slugs}")
        _require(self.diagnostics_period_s > 0, "diagnostics_period_s", "must be > 0")


@dataclasses.dataclass(frozen=True)
class DepthNoiseConfig:
    """Structured-light / stereo depth noise (RealSense-like): sigma grows with z^2, edges drop out."""

    enabled: bool = False
    sigma_at_1m_m: float = 0.002       # axial sigma at 1 m; sigma(z) = sigma_at_1m_m * z^2
    edge_dropout: float = 0.5          # probability a depth-discontinuity pixel reads 0
    edge_threshold_m: float = 0.03     # neighbour depth jump that marks an edge
    min_range_m: float = 0.1           # readings outside [min, max] are 0 (no return)
    max_range_m: float = 4.0

    def __post_init__(self) -> None:
        _require(self.sigma_at_1m_m >= 0, "depth_noise.sigma_at_1m_m", "must be >= 0")
        _require(0 <= self.edge_dropout <= 1, "depth_noise.edge_dropout", "must be in [0, 1]")
        _require(0 <= self.min_range_m < self.max_range_m, "depth_noise.min_range_m", "must be < max_range_m")


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """A MuJoCo tabletop scene, its camera and the scripted approach."""

    seed: int = 0
    width: int = 640
    height: int = 480
    fovy_deg: float = 58.0             # RealSense D435 colour, vertical
    gripper_colour: str = "yellow"
    target: str = "can"                # can | box | ball | bowl
    target_colour: str = "red"
    distractors: tuple[str, ...] = ("blue box", "green ball")   # "<colour> <kind>"
    randomise: bool = False            # seeded layout / camera / lighting jitter
    n_frames: int = 120                # frames of the approach trajectory
    start_gap_m: float = 0.30          # gripper-to-target surface gap at the first frame
    end_gap_m: float = 0.01            # ... and at the last
    depth_noise: DepthNoiseConfig = DepthNoiseConfig()

    def __post_init__(self) -> None:
        _require(self.width >= 16 and self.height >= 16, "sim.width", "image must be at least 16x16")
        _require(0 < self.fovy_deg < 170, "sim.fovy_deg", "must be in (0, 170)")
        _require(self.n_frames >= 2, "sim.n_frames", "must be >= 2")
        _require(self.start_gap_m >= 0 and self.end_gap_m >= 0, "sim.start_gap_m", "gaps must be >= 0")


@dataclasses.dataclass(frozen=True)
class SimCameraConfig:
    """Everything ``sim_camera_node`` needs; mirrored 1:1 by its ROS parameters."""

    sim: SimConfig = SimConfig()
    topics: TopicsConfig = TopicsConfig()
    rate_hz: float = 15.0              # publish rate; CPU rendering bounds what is reachable
    depth_encoding: Literal["16UC1", "32FC1"] = "16UC1"   # millimetres like a RealSense, or metres
    loop: bool = False                 # restart the trajectory when it ends (else stop publishing)
    start_delay_s: float = 1.0         # let subscribers match before the first frame
    min_subscribers: int = 1           # ... and wait until this many subscribe to the image topic

    def __post_init__(self) -> None:
        _require(self.rate_hz > 0, "rate_hz", "must be > 0")
        _require(self.min_subscribers >= 0, "min_subscribers", "must be >= 0")
        _require(self.start_delay_s >= 0, "start_delay_s", "must be >= 0")


# ---------------------------------------------------------------------------------------------
# Generic dataclass <-> mapping conversion
# ---------------------------------------------------------------------------------------------

def _check_value(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_mapping(tp, value, prefix=f"{key}.")
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
        >>> from_mapping(RewardConfig, {"shaping": "negative", "scale_m": 0.5}).scale_m
        0.5
        >>> from_mapping(RewardConfig, {"shapng": "exp"})
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: unknown key 'shapng'; known: ...
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown key {prefix + unknown[0]!r}; known: {', '.join(prefix + n for n in names)}")
    kwargs = {k: _check_value(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-name view of a config (``{"reward.shaping": "exp", ...}``); tuples become lists."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(to_flat(value, prefix=f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = list(value) if isinstance(value, tuple) else value
    return out


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
        >>> cfg = load_config(SpatialRewardConfig, "spatial_reward_node",
        ...                   overrides={"reward.shaping": "negative"})
        >>> cfg.reward.shaping, cfg.pairs
        ('negative', ('yellow gripper -> red can',))
    """
    nested = node_params(load_yaml(path), node_name) if path is not None else {}
    flat = to_flat(from_mapping(cls, nested))
    for key, value in (overrides or {}).items():
        if key not in flat:
            raise ConfigError(f"unknown key {key!r}")
        flat[key] = value
    return from_flat(cls, flat)
