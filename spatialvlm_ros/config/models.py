"""Settings of the learned experts (``models.*``): shared loading options, then one section per expert.

Each section *is* what its expert takes: a checkpoint (hub id or local folder) and that expert's own
knobs. Settings of the old flat layout (``models.detection_threshold``) fail with an error naming their
new key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from spatialvlm_ros.config.schema import require
from spatialvlm_ros.config.vlm import Dtype

#: Vertical field of view assumed when an image comes without intrinsics: a phone's main camera
#: (26 mm equivalent) in 4:3 landscape sees about 67 x 53 degrees.
DEFAULT_FOVY_DEG = 53.0


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """Open-vocabulary detector, OWLv2 / OWL-ViT (``models.detector.*``).

    Attributes:
        checkpoint: hub id or local folder.
        threshold: a box must score strictly above this (0..1).
        nms_iou: boxes overlapping a better one by more than this IoU are dropped.
        max_objects: most regions per image the data engine's objects expert keeps.
        object_queries: text queries proposing objects (generic by default).
        support_queries: queries whose masks form the floor / tabletop support mask.
    """

    checkpoint: str = "google/owlv2-base-patch16-ensemble"
    threshold: float = 0.1
    nms_iou: float = 0.5
    max_objects: int = 16
    object_queries: tuple[str, ...] = ("object", "thing on the table", "container", "tool", "toy")
    support_queries: tuple[str, ...] = ("table top", "floor")

    def __post_init__(self) -> None:
        require(0 <= self.threshold <= 1, "models.detector.threshold", "must be in [0, 1]")
        require(0 < self.nms_iou <= 1, "models.detector.nms_iou", "must be in (0, 1]")
        require(self.max_objects >= 1, "models.detector.max_objects", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class SegmenterConfig:
    """Box-promptable segmenter, SAM (``models.segmenter.*``).

    Attributes:
        checkpoint: hub id or local folder of the segmenter.
    """

    checkpoint: str = "facebook/sam-vit-base"


@dataclasses.dataclass(frozen=True)
class CaptionerConfig:
    """Region captioner, BLIP (``models.captioner.*``); 1-6 words of each caption are kept.

    Attributes:
        checkpoint: hub id or local folder.
        max_new_tokens: generation budget of one caption.
    """

    checkpoint: str = "Salesforce/blip-image-captioning-base"
    max_new_tokens: int = 12

    def __post_init__(self) -> None:
        require(self.max_new_tokens >= 1, "models.captioner.max_new_tokens", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """CLIP, for the image filter and the caption embeddings (``models.clip.*``).

    Attributes:
        checkpoint: hub id or local folder of the CLIP model.
    """

    checkpoint: str = "openai/clip-vit-base-patch32"


@dataclasses.dataclass(frozen=True)
class DepthModelConfig:
    """Metric monocular depth, Depth Anything V2 Metric / ZoeDepth (``models.depth.*``).

    Attributes:
        checkpoint: hub id or local folder.
        intrinsics: "frame" uses the frame's intrinsics; "default_fov" ignores them and assumes
            ``fallback_fovy_deg`` (web photos whose source only guessed a camera).
        fallback_fovy_deg: vertical field of view assumed for "default_fov" and for images without intrinsics.
    """

    checkpoint: str = "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"
    intrinsics: Literal["frame", "default_fov"] = "frame"
    fallback_fovy_deg: float = DEFAULT_FOVY_DEG

    def __post_init__(self) -> None:
        require(0 < self.fallback_fovy_deg < 170, "models.depth.fallback_fovy_deg", "must be in (0, 170)")


@dataclasses.dataclass(frozen=True)
class ModelsConfig:
    """Which transformers checkpoints the learned experts load, and how (``models.*``).

    Attributes:
        device: torch device string ("cpu", "cuda", "cuda:1"), for every expert.
        dtype: weights and floating inputs.
        local_files_only: never contact the hub (``HF_HUB_OFFLINE=1`` does the same).
        detector, segmenter, captioner, clip, depth: each expert's own settings.
    """

    device: str = "cpu"
    dtype: Dtype = "float32"
    local_files_only: bool = False
    detector: DetectorConfig = DetectorConfig()
    segmenter: SegmenterConfig = SegmenterConfig()
    captioner: CaptionerConfig = CaptionerConfig()
    clip: ClipConfig = ClipConfig()
    depth: DepthModelConfig = DepthModelConfig()

    #: Keys of the old flat layout -> where they live now.
    MOVED: ClassVar[dict[str, str]] = {
        "detection_threshold": "models.detector.threshold",
        "nms_iou": "models.detector.nms_iou",
        "max_objects": "models.detector.max_objects",
        "object_queries": "models.detector.object_queries",
        "support_queries": "models.detector.support_queries",
        "caption_max_new_tokens": "models.captioner.max_new_tokens",
        "depth_intrinsics": "models.depth.intrinsics",
        "fallback_fovy_deg": "models.depth.fallback_fovy_deg",
    }

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments of every expert's ``from_pretrained`` (device, dtype, offline)."""
        return {"device": self.device, "dtype": self.dtype, "local_files_only": self.local_files_only}
