"""Typed settings of the data engine, loaded from ``config/synthesis.yaml`` with the package's config mechanism.

The YAML's top level is :class:`SynthesisConfig` itself (no ROS node owns these settings). Expert
names are registry keys (see :mod:`spatialvlm_ros.perception.registry`); an unknown name is reported
with the known ones when the pipeline is built.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

from spatialvlm_ros.config import DepthNoiseConfig, ModelsConfig, config_path, from_mapping, load_yaml
from spatialvlm_ros.errors import ConfigError

DEFAULT_CONFIG = "synthesis.yaml"


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclasses.dataclass(frozen=True)
class ExpertsConfig:
    """Which registered expert does each job (registry names)."""

    filter: str = "none"               # image filter: keep / drop whole images
    objects: str = "sim_oracle"        # masks + names + captions (+ the support-surface mask)
    depth: str = "sensor"              # metric depth registered to the image
    embedder: str = "char_ngram"       # caption embeddings for ambiguity removal


@dataclasses.dataclass(frozen=True)
class LiftingConfig:
    """Masks + depth -> per-object clouds -> canonical frame -> 3D boxes."""

    min_pixels: int = 40               # objects with fewer valid depth pixels are dropped
    depth_min_m: float = 0.05
    depth_max_m: float = 20.0
    cluster_eps_fraction: float = 0.08  # neighbours link within this x the object's robust diagonal ...
    cluster_eps_pixels: float = 2.5    # ... or this many pixel footprints; the largest linked part is kept
    support_margin_m: float = 0.006    # pixels this close to the support plane (or below) are the support
    support_snap_m: float = 0.015      # lowest point this close to the plane: the object rests on it
    grow_px: int = 2                   # masks grow up to this many pixels into depth-continuous pixels (0: off)
    grow_max_step_px: float = 3.0      # continuity: a neighbour's depth within this many pixel footprints
    plane_threshold_m: float = 0.05    # RANSAC inlier distance (the paper's 0.05 m)
    plane_iterations: int = 100
    plane_min_pixels: int = 200        # fewer support pixels: the scene is not canonicalised
    plane_max_points: int = 4000       # support pixels subsampled to this before RANSAC

    #: Settings of the old lifting that no longer exist -> what replaced them.
    MOVED: ClassVar[dict[str, str]] = {
        "max_points": "was removed: every masked pixel is lifted now; delete the key",
        "cluster_min_samples": "was removed: clusters link neighbouring pixels now; delete the key",
    }

    def __post_init__(self) -> None:
        _require(self.min_pixels >= 3, "lifting.min_pixels", "must be >= 3")
        _require(0 <= self.depth_min_m < self.depth_max_m, "lifting.depth_min_m", "need depth_min_m < depth_max_m")
        _require(0 < self.cluster_eps_fraction < 1, "lifting.cluster_eps_fraction", "must be in (0, 1)")
        _require(self.cluster_eps_pixels > 0, "lifting.cluster_eps_pixels", "must be > 0")
        _require(self.support_margin_m >= 0, "lifting.support_margin_m", "must be >= 0")
        _require(self.support_snap_m >= 0, "lifting.support_snap_m", "must be >= 0")
        _require(self.grow_px >= 0, "lifting.grow_px", "must be >= 0")
        _require(self.grow_max_step_px > 0, "lifting.grow_max_step_px", "must be > 0")
        _require(self.plane_threshold_m > 0, "lifting.plane_threshold_m", "must be > 0")
        _require(self.plane_iterations >= 1, "lifting.plane_iterations", "must be >= 1")
        _require(self.plane_min_pixels >= 3, "lifting.plane_min_pixels", "must be >= 3")
        _require(self.plane_max_points >= self.plane_min_pixels, "lifting.plane_max_points",
                 "must be >= plane_min_pixels")


@dataclasses.dataclass(frozen=True)
class AmbiguityConfig:
    """Caption near-duplicates and background regions."""

    similarity_threshold: float = 0.75  # cosine of caption embeddings at or above which two captions collide
    background: tuple[str, ...] = ("sky", "sun", "moon", "cloud", "clouds", "ceiling", "wall", "floor", "ground")

    def __post_init__(self) -> None:
        _require(0 < self.similarity_threshold <= 1, "ambiguity.similarity_threshold", "must be in (0, 1]")


@dataclasses.dataclass(frozen=True)
class QuestionsConfig:
    """How many question-answer pairs per image and how they are drawn."""

    per_image: int = 24
    qualitative_fraction: float = 0.5  # the paper's 50 / 50 split
    concise_decay: float = 0.6         # answer template i is drawn with weight decay**i (data lists concise first)
    min_margin_m: float = 0.02         # position relations closer than this are ties: no qualitative question
    min_size_ratio: float = 1.1        # size relations with a smaller ratio are ties
    imperial_probability: float = 0.2  # the paper's 20% imperial units
    coarse_probability: float = 0.75   # whole-unit / one-significant-figure rounding, else finer
    max_coarse_error: float = 0.2      # a coarse rounding further than this (relative) is said finely (1: never)
    max_tries: int = 20                # draws per question before giving up (ties, non-canonical scenes, judge)
    exact_per_image: int = 4           # extra gripper gap / distance questions with a simulator's exact truth

    def __post_init__(self) -> None:
        _require(self.per_image >= 0, "questions.per_image", "must be >= 0")
        _require(self.exact_per_image >= 0, "questions.exact_per_image", "must be >= 0")
        for key in ("qualitative_fraction", "imperial_probability", "coarse_probability"):
            _require(0 <= getattr(self, key) <= 1, f"questions.{key}", "must be in [0, 1]")
        _require(0 < self.concise_decay <= 1, "questions.concise_decay", "must be in (0, 1]")
        _require(self.min_margin_m >= 0, "questions.min_margin_m", "must be >= 0")
        _require(self.min_size_ratio >= 1, "questions.min_size_ratio", "must be >= 1")
        _require(self.max_coarse_error > 0, "questions.max_coarse_error", "must be > 0")
        _require(self.max_tries >= 1, "questions.max_tries", "must be >= 1")


#: Default ``judge.size_priors``: head noun of a caption -> plausible range of the object's largest side, metres.
DEFAULT_SIZE_PRIORS = (
    "can: 0.05-0.30", "box: 0.02-1.20", "block: 0.01-0.30", "ball: 0.02-0.40", "sphere: 0.02-0.40",
    "bowl: 0.06-0.45", "dish: 0.06-0.45", "plate: 0.10-0.40", "cup: 0.04-0.25", "mug: 0.06-0.20",
    "bottle: 0.08-0.50", "book: 0.08-0.50", "laptop: 0.25-0.50", "phone: 0.05-0.25", "apple: 0.04-0.15",
    "banana: 0.10-0.30", "gripper: 0.04-0.40", "chair: 0.40-1.40", "table: 0.40-3.50", "car: 2.50-6.50",
)


def parse_size_priors(entries: tuple[str, ...], key: str = "judge.size_priors") -> dict[str, tuple[float, float]]:
    """``("can: 0.05-0.30", ...)`` -> ``{"can": (0.05, 0.3), ...}``.

    Raises:
        ConfigError: an entry that is not ``"<noun>: <min>-<max>"`` with 0 < min < max (metres).

    Example:
        >>> parse_size_priors(("soda can: 0.05-0.3",))
        {'soda can': (0.05, 0.3)}
    """
    out = {}
    for i, entry in enumerate(entries):
        noun, _, span = entry.partition(":")
        low, _, high = span.strip().partition("-")
        try:
            bounds = (float(low), float(high))
        except ValueError:
            bounds = (math.nan, math.nan)
        _require(bool(noun.strip()) and 0 < bounds[0] < bounds[1], f"{key}[{i}]",
                 f"expected '<noun>: <min>-<max>' in metres with 0 < min < max, got {entry!r}")
        out[noun.strip().lower()] = bounds
    return out


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """The geometric judge: what should not become a training answer (:mod:`~spatialvlm_ros.synthesis.judge`)."""

    enabled: bool = True
    action: Literal["drop", "flag"] = "drop"   # drop it (and draw another question), or keep it with its flags
    # Objects
    border_px: int = 1                 # a mask nearer than this to the image border is cut by it: truncated
    min_depth_coverage: float = 0.5    # fraction of a mask with a depth reading
    max_fragment_ratio: float = 0.3    # second-largest cloud cluster over the largest: fragmented above it
    size_priors: tuple[str, ...] = DEFAULT_SIZE_PRIORS   # "<noun>: <min>-<max>" largest side, metres
    # Uncertainty model (1 sigma)
    mask_error_px: float = 1.0         # a mask's boundary, pixels
    depth_sigma_at_1m_m: float = 0.002  # depth noise at 1 m, growing with z^2
    depth_scale_sigma: float = 0.01    # relative error of the depth scale (0.05-0.1 for monocular depth)
    hidden_depth_fraction: float = 0.25  # the unseen back may hide this fraction of an object's depth
    # Questions
    sigmas: float = 2.0                # a relation must hold by this many sigmas ...
    quantity_tolerance: float = 0.25   # ... and a quantity's rounding + sigmas stay within this relative error

    def __post_init__(self) -> None:
        _require(self.border_px >= 0, "judge.border_px", "must be >= 0")
        for key in ("min_depth_coverage", "hidden_depth_fraction"):
            _require(0 <= getattr(self, key) <= 1, f"judge.{key}", "must be in [0, 1]")
        for key in ("max_fragment_ratio", "mask_error_px", "depth_sigma_at_1m_m", "depth_scale_sigma", "sigmas"):
            _require(getattr(self, key) >= 0, f"judge.{key}", "must be >= 0")
        _require(self.quantity_tolerance > 0, "judge.quantity_tolerance", "must be > 0")
        parse_size_priors(self.size_priors)

    @property
    def priors(self) -> dict[str, tuple[float, float]]:
        """``size_priors`` parsed: head noun -> (min, max) largest side, metres."""
        return parse_size_priors(self.size_priors)


@dataclasses.dataclass(frozen=True)
class SimSourceConfig:
    """The ``sim:N`` input: N randomised tabletop scenes, one image each."""

    width: int = 320
    height: int = 240
    fovy_deg: float = 58.0
    min_distractors: int = 2
    max_distractors: int = 5
    off_path_share: float = 0.5        # scenes whose gripper is off its approach line (not aimed at the target)
    # Scenes cut to a window around the gripper and the target (geometry.zoom): what the compact VLM's second
    # look reads. 0 keeps every earlier dataset as it was.
    zoom_share: float = 0.0
    # Scenes seen from the wrist camera fixed to the gripper (sim.scene.WRIST_CAMERA_POS) instead of the scene's
    # own camera: what a reward read from a hand camera asks about. 0 keeps every earlier dataset as it was.
    wrist_share: float = 0.0
    depth_noise: DepthNoiseConfig = DepthNoiseConfig()
    # What objects and the gripper are drawn from (uniformly); empty: spatialvlm_ros.sim.KINDS and COLOURS, the
    # shipped model's data. The simulator knows more (sim.ALL_KINDS, sim.PALETTE): mugs, bottles, cones, wedges;
    # grey, silver, brown, beige, pink. SimSource checks the words (importing sim here would load MuJoCo).
    kinds: tuple[str, ...] = ()
    colours: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))      # YAML gives lists
        object.__setattr__(self, "colours", tuple(self.colours))
        _require(len(set(self.kinds)) == len(self.kinds), "sim.kinds", "must not repeat a kind")
        # Two colours at least: every scene has several objects, and no two may share a phrase.
        _require(len(set(self.colours)) == len(self.colours) and len(self.colours) != 1, "sim.colours",
                 "need two or more distinct colours (or none: the default ones)")
        _require(self.width >= 16 and self.height >= 16, "sim.width", "image must be at least 16x16")
        _require(0 <= self.min_distractors <= self.max_distractors, "sim.min_distractors",
                 "need 0 <= min_distractors <= max_distractors")
        _require(0.0 <= self.off_path_share <= 1.0, "sim.off_path_share", "must be in [0, 1]")
        _require(0.0 <= self.zoom_share <= 1.0, "sim.zoom_share", "must be in [0, 1]")
        _require(0.0 <= self.wrist_share <= 1.0, "sim.wrist_share", "must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """What the dataset folder holds besides the chat rows."""

    save_depth: bool = False           # depth/<id>.npy, float32 metres
    save_point_clouds: bool = False    # clouds/<id>.npz: each object's cleaned cloud, scene frame, metres
    parquet: bool = True               # data.parquet beside data.jsonl (needs pyarrow)


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
    """Everything ``spatialvlm synthesize`` needs."""

    seed: int = 0
    experts: ExpertsConfig = ExpertsConfig()
    lifting: LiftingConfig = LiftingConfig()
    ambiguity: AmbiguityConfig = AmbiguityConfig()
    questions: QuestionsConfig = QuestionsConfig()
    judge: JudgeConfig = JudgeConfig()
    sim: SimSourceConfig = SimSourceConfig()
    output: OutputConfig = OutputConfig()
    models: ModelsConfig = ModelsConfig()   # checkpoints of the transformers experts


def load_synthesis_config(path: str | Path | None = None,
                          overrides: Mapping[str, Any] | None = None) -> SynthesisConfig:
    """Load the synthesis settings from ``path`` (default: the shipped ``config/synthesis.yaml``).

    Args:
        path: YAML file whose top level holds :class:`SynthesisConfig` keys.
        overrides: top-level keys replacing the file's (e.g. ``{"seed": 3}``).

    Raises:
        ConfigError: unreadable file, unknown key, bad value.

    Example:
        >>> load_synthesis_config(overrides={"seed": 3}).seed
        3
    """
    data = dict(load_yaml(path if path is not None else config_path(DEFAULT_CONFIG)))
    data.update(overrides or {})
    return from_mapping(SynthesisConfig, data)
