"""Settings of the MuJoCo tabletop: scene, camera, depth noise, and ``sim_camera_node``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from spatialvlm_ros.config.node import TopicsConfig
from spatialvlm_ros.config.schema import require


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
        require(self.sigma_at_1m_m >= 0, "depth_noise.sigma_at_1m_m", "must be >= 0")
        require(0 <= self.edge_dropout <= 1, "depth_noise.edge_dropout", "must be in [0, 1]")
        require(0 <= self.min_range_m < self.max_range_m, "depth_noise.min_range_m", "must be < max_range_m")


@dataclasses.dataclass(frozen=True)
class ViewpointConfig:
    """Random camera viewpoints around the target and approaches from any side (off: the canonical view).

    Attributes:
        random: draw, from the scene seed, a camera anywhere around the target and an approach from any
            side of it, the camera's side included (the gripper then hides the near side of the target);
            off keeps the camera in front of the table and the approach from the left
        min_elevation_deg: lowest camera elevation above the table top, seen from the target, degrees
        max_elevation_deg: highest camera elevation, degrees
        min_distance_m: nearest camera distance from the target centre, metres
        max_distance_m: farthest camera distance from the target centre, metres
    """

    random: bool = False
    min_elevation_deg: float = 25.0
    max_elevation_deg: float = 65.0
    min_distance_m: float = 0.55
    max_distance_m: float = 0.95

    def __post_init__(self) -> None:
        require(0 < self.min_elevation_deg <= self.max_elevation_deg < 90, "sim.viewpoint.min_elevation_deg",
                "need 0 < min_elevation_deg <= max_elevation_deg < 90")
        require(0.2 <= self.min_distance_m <= self.max_distance_m, "sim.viewpoint.min_distance_m",
                "need 0.2 <= min_distance_m <= max_distance_m")


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """A MuJoCo tabletop scene, its camera and the scripted approach."""

    seed: int = 0
    width: int = 640
    height: int = 480
    fovy_deg: float = 58.0             # RealSense D435 colour, vertical
    gripper_colour: str = "yellow"
    gripper_model: Literal["sim", "franka_hand", "robotiq_2f85"] = "sim"   # drawn from geometry/gripper.py
    gripper_open_fraction: float = 1.0   # opening between the pads, as a fraction of the model's widest
    target: str = "can"                # can | box | ball | bowl
    target_colour: str = "red"
    distractors: tuple[str, ...] = ("blue box", "green ball")   # "<colour> <kind>"
    randomise: bool = False            # seeded layout / camera / lighting jitter
    n_frames: int = 120                # frames of the approach trajectory
    start_gap_m: float = 0.30          # gripper-to-target surface gap at the first frame
    end_gap_m: float = 0.01            # ... and at the last
    depth_noise: DepthNoiseConfig = DepthNoiseConfig()
    viewpoint: ViewpointConfig = ViewpointConfig()   # random cameras around the target (off: canonical view)
    # Camera and light adjustments; the defaults leave the scene as it was.
    camera_offset_m: tuple[float, ...] = (0.0, 0.0, 0.0)   # added to the camera's eye, world metres
    light_rgb: tuple[float, ...] = (1.0, 1.0, 1.0)       # key light colour (times its intensity)
    extra_lights: int = 0              # more lights above the table, seeded positions

    def __post_init__(self) -> None:
        require(self.width >= 16 and self.height >= 16, "sim.width", "image must be at least 16x16")
        require(0 < self.fovy_deg < 170, "sim.fovy_deg", "must be in (0, 170)")
        require(self.n_frames >= 2, "sim.n_frames", "must be >= 2")
        require(self.start_gap_m >= 0 and self.end_gap_m >= 0, "sim.start_gap_m", "gaps must be >= 0")
        require(self.extra_lights >= 0, "sim.extra_lights", "must be >= 0")
        require(self.gripper_model in ("sim", "franka_hand", "robotiq_2f85"), "sim.gripper_model",
                "must be sim, franka_hand or robotiq_2f85")
        require(0.0 <= self.gripper_open_fraction <= 1.0, "sim.gripper_open_fraction", "must be in [0, 1]")
        require(len(self.camera_offset_m) == 3, "sim.camera_offset_m", "must be 3 numbers (x y z metres)")
        require(len(self.light_rgb) == 3 and min(self.light_rgb) >= 0, "sim.light_rgb", "must be 3 numbers >= 0")


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
    min_truth_subscribers: int = 0     # ... and this many to ground_truth (an evaluation pairing every frame's truth)

    def __post_init__(self) -> None:
        require(self.rate_hz > 0, "rate_hz", "must be > 0")
        require(self.min_subscribers >= 0, "min_subscribers", "must be >= 0")
        require(self.min_truth_subscribers >= 0, "min_truth_subscribers", "must be >= 0")
        require(self.start_delay_s >= 0, "start_delay_s", "must be >= 0")
