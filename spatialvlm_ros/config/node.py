"""Settings of the reward pipeline: estimator, reward, topics, QoS and pairing; all of ``spatial_reward_node``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from spatialvlm_ros.config.gripper import GripperConfig
from spatialvlm_ros.config.models import ModelsConfig
from spatialvlm_ros.config.reasoning import ReasoningConfig
from spatialvlm_ros.config.schema import require
from spatialvlm_ros.config.vlm import VLMConfig
from spatialvlm_ros.types import DistanceKind, Pair


@dataclasses.dataclass(frozen=True)
class CompletionConfig:
    """Shape completion of the target before a gap is measured (geometric backend).

    Attributes:
        enabled: fit an upright cylinder, upright box or sphere standing on the table to the target's
            visible points (the noun picks it: can, cup, mug, bottle -> cylinder; box, cube, block -> box;
            ball, sphere -> sphere; else the best fit) and measure the gap to its surface when the fit
            explains the points; off measures between visible surfaces only
        max_rms_sigmas: a fit is used when the visible points' RMS distance from it is at most this many
            depth-noise sigmas (estimator.sensor.depth_sigma_at_1m_m at the target's range) plus 1.5 mm
    """

    enabled: bool = True
    max_rms_sigmas: float = 2.0

    def __post_init__(self) -> None:
        require(self.max_rms_sigmas > 0, "estimator.completion.max_rms_sigmas", "must be > 0")


@dataclasses.dataclass(frozen=True)
class SensorModelConfig:
    """What the geometric backend's uncertainty assumes of the camera.

    Attributes:
        depth_sigma_at_1m_m: axial depth noise (1 sigma) at 1 m, metres; it grows with the square of the
            range (RealSense D4xx: about 0.002)
        edge_px: uncertainty (1 sigma) of a mask's edge, pixels (JPEG chroma subsampling blurs colour
            edges by about one pixel)
    """

    depth_sigma_at_1m_m: float = 0.002
    edge_px: float = 1.0

    def __post_init__(self) -> None:
        require(self.depth_sigma_at_1m_m >= 0, "estimator.sensor.depth_sigma_at_1m_m", "must be >= 0")
        require(self.edge_px >= 0, "estimator.sensor.edge_px", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    """Which backend answers "how far is A from B", and how the geometric one works."""

    backend: str = "geometric"
    distance: DistanceKind = DistanceKind.GAP
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
    completion: CompletionConfig = CompletionConfig()   # gap to the target's completed shape, not its visible side
    sensor: SensorModelConfig = SensorModelConfig()     # depth noise and mask-edge blur the uncertainty assumes
    gripper: GripperConfig = GripperConfig()            # the gripper from vision or from the robot's pose

    def __post_init__(self) -> None:
        require(self.min_pixels >= 1, "estimator.min_pixels", "must be >= 1")
        require(0 <= self.depth_min_m < self.depth_max_m, "estimator.depth_min_m",
                "need 0 <= depth_min_m < depth_max_m")
        require(self.outlier_k > 0, "estimator.outlier_k", "must be > 0")
        require(self.max_points >= 10, "estimator.max_points", "must be >= 10")


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
        require(self.scale_m > 0, "reward.scale_m", "must be > 0")
        require(0 < self.gamma <= 1, "reward.gamma", "must be in (0, 1]")
        require(self.success_threshold_m >= 0, "reward.success_threshold_m", "must be >= 0")
        require(0 < self.ema_alpha <= 1, "reward.ema_alpha", "must be in (0, 1]")
        require(self.median_window >= 1, "reward.median_window", "must be >= 1")
        require(self.clip_min < self.clip_max, "reward.clip_min", "must be < clip_max")


@dataclasses.dataclass(frozen=True)
class TopicsConfig:
    """Camera topics, relative so a namespace or remap moves them (RealSense wrapper defaults)."""

    image: str = "camera/color/image_raw"
    transport: Literal["raw", "compressed"] = "raw"   # compressed subscribes to ``<image>/compressed``
    depth: str = "camera/aligned_depth_to_color/image_raw"   # "" = monocular, no depth
    camera_info: str = "camera/color/camera_info"
    max_image_pixels: int = 16_777_216   # width x height above this is refused before decoding (4096 x 4096)

    def __post_init__(self) -> None:
        require(bool(self.image.strip()), "topics.image", "must name the colour image topic")
        require(bool(self.camera_info.strip()), "topics.camera_info", "must name the CameraInfo topic")
        require(self.max_image_pixels >= 1, "topics.max_image_pixels", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class QosConfig:
    """Image QoS. Sensor-data defaults: best effort, keep last, shallow queue (latest frame wins)."""

    reliability: Literal["best_effort", "reliable"] = "best_effort"
    depth: int = 2

    def __post_init__(self) -> None:
        require(self.depth >= 1, "qos.depth", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class SyncConfig:
    """Pairing of colour and depth by header stamp."""

    slop_s: float = 0.01
    queue_size: int = 10

    def __post_init__(self) -> None:
        require(self.slop_s >= 0, "sync.slop_s", "must be >= 0")
        require(self.queue_size >= 1, "sync.queue_size", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class SpatialRewardConfig:
    """Everything ``spatial_reward_node`` needs; mirrored 1:1 by its ROS parameters."""

    pairs: tuple[Pair, ...] = (Pair("yellow gripper", "red can"),)
    topics: TopicsConfig = TopicsConfig()
    qos: QosConfig = QosConfig()
    sync: SyncConfig = SyncConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    reward: RewardConfig = RewardConfig()
    reasoning: ReasoningConfig = ReasoningConfig()
    diagnostics_period_s: float = 1.0
    publish_markers: bool = True
    diagnostics_window_s: float = 5.0  # rates, error counts and the valid ratio of /diagnostics cover this window
    autostart: bool = True             # lifecycle: configure and activate at start (false: wait for change_state)

    def __post_init__(self) -> None:
        require(len(self.pairs) >= 1, "pairs", "name at least one 'GRIPPER -> OBJECT' pair")
        slugs = [p.slug for p in self.pairs]
        require(len(set(slugs)) == len(slugs), "pairs", f"two pairs share a target name: {slugs}")
        require(self.diagnostics_period_s > 0, "diagnostics_period_s", "must be > 0")
        require(self.diagnostics_window_s > 0, "diagnostics_window_s", "must be > 0")
