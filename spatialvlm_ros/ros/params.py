"""ROS parameters that mirror a typed config dataclass 1:1 (dotted names: ``reward.shaping``).

Nodes read their overrides (command line, parameter files) themselves, so that a key in the parameter
file that the config does not know is *seen* (and reported) instead of silently ignored, and a value ROS
cannot type (an empty list) is named by the config instead of failing inside rclpy. Known keys are
declared with the config's type and a descriptor, so that ``ros2 param describe`` explains each one:
a description (from the config class's ``Attributes:`` docstring, else :data:`DESCRIPTIONS`), its choices
or bounds as text (``additional_constraints``) and, where the config bounds a number, a range
(:data:`BOUNDS`). Bounds are checked by the config as
well; a ROS range is inclusive, so for ``> 0`` it starts at 0 and the config refuses 0 itself.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import typing
from typing import Any, Iterable, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from spatialvlm_ros.config import from_flat, to_flat
from spatialvlm_ros.errors import ConfigError

T = TypeVar("T")

# rclpy declares these itself; they are not ours to validate.
_ROS_OWNED = {"use_sim_time", "start_type_description_service"}
_INT64_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Bound:
    """A number's valid interval as the config checks it.

    Attributes:
        low: smallest value of the ROS range (inclusive; an open bound is refused by the config).
        high: largest value (``inf`` for none).
        text: the config's own check, e.g. ``"> 0"`` or ``"in (0, 1]"``.
    """

    low: float
    high: float
    text: str


def _at_least(low: float) -> Bound:
    return Bound(low, math.inf, f">= {low}")


_POSITIVE = Bound(0, math.inf, "> 0")
_FRACTION = Bound(0, 1, "in (0, 1]")
_PROBABILITY = Bound(0, 1, "in [0, 1]")
_FOV = Bound(0, 170, "in (0, 170)")

#: Where the config bounds a number (``__post_init__`` checks), by dotted parameter name.
BOUNDS: dict[str, Bound] = {
    "qos.depth": _at_least(1),
    "sync.slop_s": _at_least(0),
    "sync.queue_size": _at_least(1),
    "estimator.min_pixels": _at_least(1),
    "estimator.depth_min_m": Bound(0, math.inf, ">= 0 and < estimator.depth_max_m"),
    "estimator.depth_max_m": Bound(0, math.inf, "> estimator.depth_min_m"),
    "estimator.outlier_k": _POSITIVE,
    "estimator.max_points": _at_least(10),
    "estimator.vlm.samples": _at_least(1),
    "estimator.vlm.compact.batch_size": _at_least(1),
    "estimator.vlm.compact.max_new_tokens": _at_least(1),
    "estimator.vlm.compact.temperature": _at_least(0),
    "estimator.vlm.openai.temperature": _at_least(0),
    "estimator.vlm.openai.max_tokens": _at_least(1),
    "estimator.vlm.openai.timeout_s": _POSITIVE,
    "estimator.vlm.openai.retries": _at_least(0),
    "estimator.vlm.openai.retry_backoff_s": _at_least(0),
    "estimator.vlm.openai.max_concurrency": _at_least(1),
    "estimator.vlm.openai.retry_budget_s": _at_least(0),
    "estimator.vlm.openai.max_response_bytes": _at_least(1),
    "estimator.vlm.breaker_failures": _at_least(0),
    "estimator.vlm.breaker_probe_s": _POSITIVE,
    "topics.max_image_pixels": _at_least(1),
    "diagnostics_window_s": _POSITIVE,
    "estimator.vlm.transformers.batch_size": _at_least(1),
    "estimator.vlm.transformers.max_new_tokens": _at_least(1),
    "estimator.vlm.transformers.temperature": _at_least(0),
    "estimator.vlm.transformers.max_time_s": _POSITIVE,
    "estimator.models.detector.threshold": _PROBABILITY,
    "estimator.models.detector.nms_iou": _FRACTION,
    "estimator.models.detector.max_objects": _at_least(1),
    "estimator.models.captioner.max_new_tokens": _at_least(1),
    "estimator.models.depth.fallback_fovy_deg": _FOV,
    "reward.scale_m": _POSITIVE,
    "reward.gamma": _FRACTION,
    "reward.success_threshold_m": _at_least(0),
    "reward.ema_alpha": _FRACTION,
    "reward.median_window": _at_least(1),
    "diagnostics_period_s": _POSITIVE,
    "sim.width": _at_least(16),
    "sim.height": _at_least(16),
    "sim.fovy_deg": _FOV,
    "sim.gripper_open_fraction": _PROBABILITY,
    "sim.n_frames": _at_least(2),
    "sim.start_gap_m": _at_least(0),
    "sim.end_gap_m": _at_least(0),
    "sim.depth_noise.sigma_at_1m_m": _at_least(0),
    "sim.depth_noise.edge_dropout": _PROBABILITY,
    "sim.depth_noise.min_range_m": Bound(0, math.inf, ">= 0 and < sim.depth_noise.max_range_m"),
    "sim.depth_noise.max_range_m": Bound(0, math.inf, "> sim.depth_noise.min_range_m"),
    "rate_hz": _POSITIVE,
    "start_delay_s": _at_least(0),
    "min_subscribers": _at_least(0),
    "min_truth_subscribers": _at_least(0),
}

#: Constraints between parameters that no range expresses.
_RELATIONS = {"reward.clip_min": "< reward.clip_max", "reward.clip_max": "> reward.clip_min"}

#: Descriptions of the parameters whose config class documents its fields in comments, not in an
#: ``Attributes:`` docstring section (from those comments).
DESCRIPTIONS: dict[str, str] = {
    "pairs": "pairs to measure, each 'GRIPPER -> OBJECT' (e.g. 'yellow gripper -> red can'); their rewards "
             "are combined by reward.combine",
    "topics.image": "colour image topic (sensor_msgs/Image rgb8, bgr8, rgba8, bgra8 or mono8); relative, so a "
                    "namespace or remap moves it",
    "topics.transport": "raw: Image on topics.image; compressed: CompressedImage on <topics.image>/compressed",
    "topics.depth": "depth image topic registered to colour (16UC1 millimetres or 32FC1 metres); '' = monocular, "
                    "no depth",
    "topics.camera_info": "CameraInfo topic of the colour camera",
    "topics.max_image_pixels": "a colour or depth image of more pixels (width x height) is refused as bad_input, "
                               "before decoding (PNG and JPEG headers are read first); settable at run time",
    "qos.reliability": "image QoS reliability; sensor-data default best_effort (latest frame wins)",
    "qos.depth": "image QoS history depth (keep last)",
    "sync.slop_s": "colour and depth pair when their header stamps differ by at most this, seconds",
    "sync.queue_size": "messages kept per stream while waiting for a stamp partner",
    "estimator.backend": "registered distance estimator: 'geometric' (depth + masks) or 'vlm' (a spatial VLM, "
                         "see estimator.vlm.*)",
    "estimator.distance": "gap: between the closest surface points (use for rewards); centre: between the "
                          "objects' centres",
    "estimator.grounding": "text phrase -> pixel mask: colour_prompt (colour words), sim_segmentation (simulator "
                           "labels), open_vocab (detector + segmenter of estimator.models)",
    "estimator.min_pixels": "fewer mask pixels than this = not visible",
    "estimator.depth_min_m": "sensor valid range, nearest reading kept, metres; readings outside are dropped",
    "estimator.depth_max_m": "sensor valid range, farthest reading kept, metres",
    "estimator.outlier_k": "drop points farther than k robust sigmas from the median",
    "estimator.max_points": "points per object, subsampled before the KD-tree (speed)",
    "estimator.seed": "seed of that subsampling",
    "estimator.monocular_depth": "frames without depth: estimate it with estimator.models.depth instead of "
                                 "reporting no depth",
    "reward.shaping": "exp: r = exp(-d / scale_m); negative: r = -d / scale_m; progress: "
                      "r = gamma * phi(d_t) - phi(d_{t-1}), phi = -d / scale_m",
    "reward.scale_m": "distance scale of the shaping, metres",
    "reward.gamma": "discount of the progress shaping",
    "reward.success_threshold_m": "success when the filtered distance is under this, metres",
    "reward.success_bonus": "added to the reward on success",
    "reward.filter": "temporal filter of the distance: none, exponential moving average, or running median",
    "reward.ema_alpha": "ema filter: weight of the newest estimate",
    "reward.median_window": "median filter: estimates in the window",
    "reward.clip_min": "lowest reward published",
    "reward.clip_max": "highest reward published",
    "reward.invalid_policy": "what a frame without a valid estimate gives: the last reward again, NaN, or no "
                             "reward at all",
    "reward.combine": "how the pairs' rewards combine into the reward topic",
    "diagnostics_period_s": "period of /diagnostics, seconds",
    "diagnostics_window_s": "the sliding window of /diagnostics: rates, error counts and the valid ratio cover "
                            "its last this many seconds",
    "publish_markers": "publish the measured segments on markers (visualization_msgs/MarkerArray)",
    "autostart": "lifecycle: configure and activate on its own at start (true), or start unconfigured and wait "
                 "for <node>/change_state (false, for a lifecycle manager); read at start only",
    "sim.seed": "seed of the scene and its randomisation",
    "sim.camera_offset_m": "shift of the camera's eye, world x y z metres (the VLM's held-out shift split; "
                         "0 0 0: none)",
    "sim.light_rgb": "key light colour, linear RGB multiplying its intensity (1 1 1: white)",
    "sim.extra_lights": "extra lights above the table at seeded positions (the held-out shift split; 0: none)",
    "sim.width": "image width, pixels",
    "sim.height": "image height, pixels",
    "sim.fovy_deg": "vertical field of view, degrees (RealSense D435 colour: 58)",
    "sim.gripper_colour": "colour word of the gripper",
    "sim.gripper_model": "gripper shape drawn: sim, franka_hand or robotiq_2f85 (spatialvlm_ros/geometry/gripper.py)",
    "sim.gripper_open_fraction": "opening between the finger pads, as a fraction of the model's widest",
    "sim.target": "kind of the target object: can, box, ball or bowl",
    "sim.target_colour": "colour word of the target object",
    "sim.distractors": "other objects on the table, each '<colour> <kind>'",
    "sim.randomise": "seeded layout / camera / lighting jitter",
    "sim.n_frames": "frames of the approach trajectory",
    "sim.start_gap_m": "gripper-to-target surface gap at the first frame, metres",
    "sim.end_gap_m": "gripper-to-target surface gap at the last frame, metres",
    "sim.depth_noise.enabled": "add structured-light / stereo depth noise (RealSense-like)",
    "sim.depth_noise.sigma_at_1m_m": "axial depth sigma at 1 m, metres; sigma(z) = sigma_at_1m_m * z^2",
    "sim.depth_noise.edge_dropout": "probability that a depth-discontinuity pixel reads 0",
    "sim.depth_noise.edge_threshold_m": "neighbour depth jump that marks an edge, metres",
    "sim.depth_noise.min_range_m": "readings nearer than this are 0 (no return), metres",
    "sim.depth_noise.max_range_m": "readings farther than this are 0 (no return), metres",
    "rate_hz": "publish rate, Hz; CPU rendering bounds what is reachable",
    "depth_encoding": "16UC1 (millimetres, as a RealSense publishes) or 32FC1 (metres)",
    "loop": "restart the trajectory when it ends (else stop publishing)",
    "start_delay_s": "seconds to let subscribers match before the first frame",
    "min_subscribers": "after the delay, wait until this many subscribe to the image topic",
    "min_truth_subscribers": "... and until this many subscribe to ground_truth (DDS drops what is sent before)",
}


def _attribute_docs(cls: type) -> dict[str, str]:
    """``name: text`` of a Google-style ``Attributes:`` docstring section, continuation lines joined.

    Example:
        >>> from spatialvlm_ros.config import VLMConfig
        >>> _attribute_docs(VLMConfig)["samples"][:29]
        'answers per pair and frame; t'
    """
    docs: dict[str, str] = {}
    lines = (inspect.getdoc(cls) or "").splitlines()
    if "Attributes:" not in lines:
        return docs
    name = None
    for line in lines[lines.index("Attributes:") + 1:]:
        entry = re.match(r"    (\w+): (.*)", line)
        if entry:
            name = entry[1]
            docs[name] = entry[2].replace("``", "")
        elif name is not None and line.startswith("        "):
            docs[name] += " " + line.strip().replace("``", "")
        else:
            break
    return docs


def _fields(cls: type, prefix: str = "") -> dict[str, tuple[Any, str | None]]:
    """Dotted parameter name -> (its annotation, its docstring description if any)."""
    out: dict[str, tuple[Any, str | None]] = {}
    hints = typing.get_type_hints(cls)
    docs = _attribute_docs(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_fields(tp, prefix=f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = (tp, docs.get(f.name))
    return out


def descriptors(cls: type) -> dict[str, ParameterDescriptor]:
    """The descriptor of each parameter of config class ``cls``: description, constraints, range."""
    defaults = to_flat(cls())
    out = {}
    for name, (tp, doc) in _fields(cls).items():
        choices = typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else ()
        bound = BOUNDS.get(name)
        constraints = [f"one of {list(choices)}"] if choices else []
        constraints += [bound.text] if bound else []
        constraints += [_RELATIONS[name]] if name in _RELATIONS else []
        descriptor = ParameterDescriptor(
            description=doc or DESCRIPTIONS.get(name) or getattr(tp, "__name__", str(tp)),
            additional_constraints="; ".join(constraints))
        default = defaults[name]
        if bound is not None and isinstance(default, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(bound.low), to_value=float(bound.high), step=0.0)]
        elif bound is not None and isinstance(default, int) and not isinstance(default, bool):
            descriptor.integer_range = [IntegerRange(
                from_value=int(bound.low), to_value=int(min(bound.high, _INT64_MAX)), step=0)]
        out[name] = descriptor
    return out


def declare_config_parameters(node: Node, cls: type) -> list[str]:
    """Declare one ROS parameter per config field; return parameter names the config does not know.

    Values given on the command line or in a parameter file (the node's overrides) replace the dataclass
    defaults; they are checked by the config first (raises ConfigError naming the key). An empty list
    (``pairs: []``), which ROS cannot type, is read as an empty list, so the config names the key instead
    of rclpy failing with a traceback. Create nodes with ``automatically_declare_parameters_from_overrides``
    False; a parameter that was declared from overrides anyway is re-declared with our type. An unknown name
    is not declared (so a later ``set_parameters`` on it fails as usual) and is returned for the caller to
    report. A float parameter also takes an integer (``reward.scale_m:=1``), at start and at runtime, as a
    float.
    """
    defaults = to_flat(cls())
    given = {name: p.value for name, p in getattr(node, "_parameter_overrides", {}).items()}
    for name in node.list_parameters([], 0).names:   # depth 0: recursive; declared from overrides
        given.setdefault(name, node.get_parameter(name).value)
    unknown = sorted(n for n in given if n not in defaults and n not in _ROS_OWNED)
    for name in unknown:
        if node.has_parameter(name):
            node.undeclare_parameter(name)
    values = {}
    for name, default in defaults.items():
        value = default
        if name in given:   # adopt the given value, our type
            value = _as_float(default, plain(given[name]))
            if value is None and isinstance(default, list):
                value = []
        if node.has_parameter(name):
            node.undeclare_parameter(name)
        values[name] = value
    from_flat(cls, values)   # a bad value is named by the config, before a ROS range refuses it
    for name, descriptor in descriptors(cls).items():
        # ignore_override: the value above is the override, with an integer for a float made a float.
        node.declare_parameter(name, values[name], descriptor, ignore_override=True)
    floats = {name for name, default in defaults.items() if isinstance(default, float)}
    node.add_pre_set_parameters_callback(lambda changed: [
        Parameter(p.name, Parameter.Type.DOUBLE, float(p.value))
        if p.name in floats and p.type_ == Parameter.Type.INTEGER else p for p in changed])
    return unknown


def _as_float(default: Any, value: Any) -> Any:
    """``value`` as a float where the config wants one and an integer came."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def read_config(node: Node, cls: type[T]) -> T:
    """Build the typed config from the node's current parameters (raises ConfigError)."""
    names = to_flat(cls()).keys()
    return from_flat(cls, {n: plain(node.get_parameter(n).value) for n in names})


def updated_config(current: T, params: Iterable[Parameter], fixed_prefixes: tuple[str, ...] = (),
                   settable: tuple[str, ...] = ()) -> T:
    """The config after applying ``params``; raises ConfigError naming the bad key.

    Parameters under ``fixed_prefixes`` are read at start only (topics, QoS): changing them raises, unless
    they are named in ``settable``.
    """
    flat = to_flat(current)
    for p in params:
        if p.name in _ROS_OWNED:
            continue
        if p.name not in flat:
            raise ConfigError(f"unknown parameter {p.name!r}")
        if p.name.startswith(fixed_prefixes) and p.name not in settable:
            raise ConfigError(f"{p.name} is read at start only; restart the node to change it")
        value = plain(p.value)
        flat[p.name] = [] if value is None and isinstance(flat[p.name], list) else value
    return from_flat(type(current), flat)


def set_result(ok: bool, reason: str = "") -> SetParametersResult:
    """Shorthand for a parameter-callback answer."""
    return SetParametersResult(successful=ok, reason=reason)


def plain(value: Any) -> Any:
    """Turn array parameters (rclpy returns array.array) into the lists the config expects."""
    if value is not None and not isinstance(value, (str, bytes, bool, int, float)):
        return list(value)
    return value
