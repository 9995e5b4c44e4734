"""Transformers experts: open-vocabulary boxes, box-prompted masks, region captions, CLIP, metric depth.

Each expert is one small class holding a model and its processor, built with ``from_pretrained`` from a
local folder or a hub id (offline when ``local_files_only`` is passed or ``HF_HUB_OFFLINE=1`` is set, on
the device the caller names) and run as ``preprocess -> _forward -> postprocess``: only ``_forward``
touches the model, under :func:`torch.inference_mode`; the other two stages are numpy / processor code
and return frozen records (those of :mod:`~spatialvlm_ros.perception.experts`, and :class:`SceneLabel`).

``torch`` and ``transformers`` are imported inside the methods that need them, so importing this module
stays cheap; :mod:`~spatialvlm_ros.perception.registry` imports it only inside the factories that load a
model. ``trust_remote_code`` is off unless the caller turns it on.

The classes implement the protocols of :mod:`~spatialvlm_ros.perception.experts`: :class:`OpenVocabDetector`
a ``Detector``, :class:`BoxSegmenter` a ``Segmenter``, :class:`RegionCaptioner` a ``Captioner``,
:class:`ClipSceneFilter` an ``ImageFilter``, :class:`ClipTextEmbedder` a ``TextEmbedder`` and
:class:`MonocularDepth` a ``DepthSource``.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence, TypeVar

import numpy as np

from spatialvlm_ros.config import DEFAULT_FOVY_DEG
from spatialvlm_ros.config.vlm import Dtype
from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.geometry.camera import CameraIntrinsics
from spatialvlm_ros.perception.experts import (
    BoxDetections, BoxMasks, DepthPrediction, FilterVerdict, RegionCaptions,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: CLIP labels of the paper's semantic filter (SpatialVLM A.2): an image is kept when its most likely
#: label is one of KEEP_LABELS.
KEEP_LABELS: tuple[str, ...] = ("an iphone photo of an indoor scene", "an iphone photo of an outdoor scene")
DROP_LABELS: tuple[str, ...] = (
    "a close-up photo of a single object", "a product photo on a white background", "an artwork",
    "a painting", "a screenshot of a graphical user interface", "a photo of text", "a sketch",
)


@dataclass(frozen=True, eq=False)
class SceneLabel:
    """CLIP zero-shot verdict on a whole image.

    Attributes:
        keep: the most likely label is a keep label.
        label: the most likely label.
        labels: every label scored, keep labels first.
        probs: (K,) float32 softmax over ``labels`` (sums to 1).
    """

    keep: bool
    label: str
    labels: tuple[str, ...]
    probs: np.ndarray


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------

def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
        groups: np.ndarray | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    Written in numpy because ``torchvision.ops.nms`` is not available here (the PyPI torchvision wheel
    breaks beside this torch build); after the score threshold there are at most a few hundred boxes,
    so the greedy loop, vectorised over the remaining boxes, costs microseconds. Equal scores keep
    their input order. A box is dropped when its IoU with a kept box is strictly above the threshold.

    Args:
        boxes: (N, 4) ``x0, y0, x1, y1``.
        scores: (N,) higher is better.
        iou_threshold: in [0, 1].
        groups: (N,) ints; boxes of different groups never suppress each other.

    Raises:
        InputError: shapes disagree or the threshold is outside [0, 1].

    Example:
        >>> boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], float)
        >>> nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5).tolist()
        [0, 2]
        >>> nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5, groups=np.array([0, 1, 0])).tolist()
        [0, 1, 2]
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise InputError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    if not 0 <= iou_threshold <= 1:
        raise InputError(f"nms: iou_threshold must be in [0, 1], got {iou_threshold}")
    if groups is not None and len(boxes):
        # torchvision's batched_nms trick: shift each group into its own disjoint region, one pass.
        span = boxes.max() - boxes.min() + 1.0
        boxes = boxes + (np.asarray(groups, np.float64).reshape(-1) * span)[:, None]
    x0, y0, x1, y1 = boxes.T
    areas = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.clip(np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {getattr(image, 'shape', None)} "
                         f"{getattr(image, 'dtype', type(image).__name__)}")
    return image


def _check_box_prompts(image: np.ndarray, boxes: Any, dtype: type, who: str) -> tuple[np.ndarray, np.ndarray]:
    """The image, checked, and ``boxes`` as an (N, 4) ``x0, y0, x1, y1`` array of ``dtype``.

    Raises:
        InputError: a bad image, or boxes not (N, 4) (the message names ``who``).
    """
    image = _check_image(image)
    boxes = np.asarray(boxes, dtype)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"{who}: boxes must be (N, 4), got {boxes.shape}")
    return image, boxes


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value now (read at call time, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _is_local_path(name_or_path: str) -> bool:
    """A folder the caller meant (absolute, ``~``, ``./``, ``../`` or existing), rather than a hub id."""
    return (Path(name_or_path).expanduser().is_dir() or name_or_path.startswith(("/", "~", "./", "../"))
            or name_or_path.count("/") > 1)


def _torch_dtype(dtype: str) -> "torch.dtype":
    import torch
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ConfigError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    return getattr(torch, dtype)


def _torch_device(device: str) -> "torch.device":
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device {device!r} is not a torch device: {err}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available to torch")
    return dev


E = TypeVar("E", bound="TransformersExpert")


class TransformersExpert:
    """A model + processor pair from ``from_pretrained``, run as preprocess -> _forward -> postprocess.

    Subclasses name the transformers Auto classes that load them and add the three stages. The
    constructor takes already-built objects (tests, shared models); :meth:`from_pretrained` is the way
    to build one from a checkpoint.

    Args:
        model: a transformers ``PreTrainedModel``, put in eval mode here.
        processor: its processor (or image processor).
        name_or_path: where it came from (messages).
    """

    model_class: ClassVar[str] = "AutoModel"
    processor_class: ClassVar[str] = "AutoProcessor"
    role: ClassVar[str] = "model"

    def __init__(self, model: Any, processor: Any, name_or_path: str = "") -> None:
        self.model = model.eval()
        self.processor = processor
        self.name_or_path = name_or_path

    @classmethod
    def from_pretrained(cls: type[E], name_or_path: str, device: str = "cpu", dtype: Dtype = "float32",
                        local_files_only: bool = False, trust_remote_code: bool = False, **options: Any) -> E:
        """Load the checkpoint at ``name_or_path`` (local folder or hub id) onto ``device``.

        Args:
            name_or_path: a folder written by ``save_pretrained`` or a hub id ("google/owlv2-...").
            device: torch device string.
            dtype: weight dtype.
            local_files_only: use the folder / the local cache only; also implied by ``HF_HUB_OFFLINE=1``.
            trust_remote_code: run code shipped with the checkpoint (off unless you mean it).
            **options: the subclass's own settings (thresholds, labels, ...).

        Raises:
            ConfigError: the folder does not exist, the checkpoint cannot be loaded (offline and not
                cached, wrong architecture, ...), or a bad device / dtype; the message names the path.
        """
        import transformers

        offline = local_files_only or hub_offline()
        if _is_local_path(name_or_path) and not Path(name_or_path).expanduser().is_dir():
            raise ConfigError(f"{cls.role}: model folder {name_or_path!r} does not exist")
        source = str(Path(name_or_path).expanduser()) if _is_local_path(name_or_path) else name_or_path
        torch_dtype, torch_device = _torch_dtype(dtype), _torch_device(device)
        common = {"local_files_only": offline, "trust_remote_code": trust_remote_code}
        try:
            processor = getattr(transformers, cls.processor_class).from_pretrained(source, **common)
            model = getattr(transformers, cls.model_class).from_pretrained(source, dtype=torch_dtype, **common)
        except (OSError, ValueError, KeyError, ImportError, AttributeError) as err:
            where = " (offline: HF_HUB_OFFLINE=1 or local_files_only, and it is not in the local cache)" \
                if offline and not _is_local_path(name_or_path) else ""
            raise ConfigError(f"{cls.role}: cannot load {name_or_path!r}{where}: {err}") from err
        logger.info("loaded %s %s on %s (%s)", cls.role, name_or_path, torch_device, dtype)
        return cls(model.to(torch_device), processor, name_or_path, **options)

    def _to_model(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Tensors of ``batch`` on the model's device; floating ones also in its dtype."""
        import torch
        device, dtype = self.model.device, self.model.dtype
        return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
                if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _forward(self, inputs: Mapping[str, Any]) -> Any:
        """Run the model on prepared inputs without autograd."""
        import torch
        with torch.inference_mode():
            return self.model(**inputs)


# ---------------------------------------------------------------------------------------------
# 1. Open-vocabulary detection
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _DetectorInputs:
    tensors: dict[str, Any]
    height: int
    width: int
    queries: tuple[str, ...]


class OpenVocabDetector(TransformersExpert):
    """Text queries -> scored boxes with OWLv2 / OWL-ViT (``AutoModelForZeroShotObjectDetection``).

    Args:
        model: the detector.
        processor: its processor (image processor + tokenizer).
        name_or_path: where it came from.
        threshold: a box must score strictly above this (0..1; 1 turns the detector off).
        nms_iou: IoU above which a lower-scored box is suppressed.
        max_detections: most boxes returned.
    """

    model_class = "AutoModelForZeroShotObjectDetection"
    role = "detector"

    def __init__(self, model: Any, processor: Any, name_or_path: str = "", *, threshold: float = 0.1,
                 nms_iou: float = 0.5, max_detections: int = 100) -> None:
        super().__init__(model, processor, name_or_path)
        if not 0 <= threshold <= 1 or not 0 < nms_iou <= 1 or max_detections < 1:
            raise ConfigError("detector: need 0 <= threshold <= 1, 0 < nms_iou <= 1, max_detections >= 1")
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.max_detections = max_detections

    def detect(self, image: np.ndarray, queries: Sequence[str], groups: Sequence[int] | None = None) -> BoxDetections:
        """Boxes of ``queries`` in ``image``: at least 1 px wide and high, above the threshold, after NMS, best first.

        Args:
            image: (H, W, 3) uint8 RGB.
            queries: one or more text queries ("yellow gripper").
            groups: per query, an NMS group: boxes matched to queries of different groups never
                suppress each other. Default: one group (class-agnostic NMS, as for region proposals).

        Raises:
            InputError: bad image, no queries, or ``groups`` of the wrong length.
        """
        inputs = self.preprocess(image, queries)
        if groups is not None and len(groups) != len(inputs.queries):
            raise InputError(f"detector: {len(groups)} groups for {len(inputs.queries)} queries")
        return self.postprocess(self._forward(inputs.tensors), inputs, groups)

    def preprocess(self, image: np.ndarray, queries: Sequence[str]) -> _DetectorInputs:
        """Pixel values and tokenised queries."""
        image = _check_image(image)
        queries = tuple(" ".join(q.split()) for q in queries)
        if not queries or not all(queries):
            raise InputError(f"detector: need one or more non-empty queries, got {list(queries)}")
        batch = self.processor(text=[list(queries)], images=image, return_tensors="pt", padding=True,
                               truncation=True)
        return _DetectorInputs(tensors=self._to_model(batch), height=image.shape[0], width=image.shape[1],
                               queries=queries)

    def postprocess(self, outputs: Any, inputs: _DetectorInputs, groups: Sequence[int] | None = None) -> BoxDetections:
        """Scores, box corners in pixels, threshold (strictly above), NMS, top ``max_detections``."""
        logits = outputs.logits[0].float().cpu().numpy()            # (patches, queries)
        centre_boxes = outputs.pred_boxes[0].float().cpu().numpy()  # (patches, 4) cx, cy, w, h in [0, 1]
        labels = logits.argmax(axis=1)
        scores = 1.0 / (1.0 + np.exp(-logits.max(axis=1)))
        cx, cy, w, h = centre_boxes.T
        # OWLv2 pads the image to a square (bottom / right) before resizing, so its boxes are relative
        # to the longer side; OWL-ViT stretches the image, so its boxes are relative to each side.
        if self.model.config.model_type == "owlv2":
            sx = sy = float(max(inputs.height, inputs.width))
        else:
            sx, sy = float(inputs.width), float(inputs.height)
        boxes = np.stack([(cx - w / 2) * sx, (cy - h / 2) * sy, (cx + w / 2) * sx, (cy + h / 2) * sy], axis=1)
        boxes = np.clip(boxes, 0, [inputs.width, inputs.height, inputs.width, inputs.height])
        # Boxes under a pixel wide or high (often ones clipped at the border) cover no pixel to segment.
        sized = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        passed = np.flatnonzero((scores > self.threshold) & sized)
        box_groups = None if groups is None else np.asarray(groups)[labels[passed]]
        kept = passed[nms(boxes[passed], scores[passed], self.nms_iou, box_groups)][:self.max_detections]
        return BoxDetections(boxes=boxes[kept].astype(np.float32), scores=scores[kept].astype(np.float32),
                             labels=labels[kept].astype(np.int64), queries=inputs.queries)


# ---------------------------------------------------------------------------------------------
# 2. Segmentation from boxes
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _SegmenterInputs:
    tensors: dict[str, Any]
    image: np.ndarray


class BoxSegmenter(TransformersExpert):
    """Box prompts -> one mask each with SAM (``SamModel`` + ``SamProcessor``).

    The image embedding (SAM's costly vision encoder) of the last image is kept and reused while the
    same array object is segmented again (the estimator grounds two or more phrases per frame); arrays
    are treated as immutable, as :class:`~spatialvlm_ros.frame.Frame` treats them.

    Args:
        model: SAM.
        processor: its processor.
        name_or_path: where it came from.
    """

    model_class = "SamModel"
    role = "segmenter"

    def __init__(self, model: Any, processor: Any, name_or_path: str = "") -> None:
        super().__init__(model, processor, name_or_path)
        self._embedding: tuple[weakref.ref, Any] | None = None

    def segment(self, image: np.ndarray, boxes: np.ndarray) -> BoxMasks:
        """One (H, W) bool mask per ``x0, y0, x1, y1`` pixel box; no boxes, no masks (model not run).

        Raises:
            InputError: bad image or boxes not (N, 4).
        """
        image, boxes = _check_box_prompts(image, boxes, np.float32, "segmenter")
        if not len(boxes):
            return BoxMasks(masks=np.zeros((0, *image.shape[:2]), bool), scores=np.zeros(0, np.float32))
        inputs = self.preprocess(image, boxes)
        return self.postprocess(self._forward(inputs), inputs)

    def preprocess(self, image: np.ndarray, boxes: np.ndarray) -> _SegmenterInputs:
        """Resized, padded pixels and the boxes in the model's input coordinates."""
        batch = self.processor(images=image, input_boxes=[boxes.tolist()], return_tensors="pt")
        return _SegmenterInputs(tensors=self._to_model(batch), image=image)

    def _forward(self, inputs: _SegmenterInputs) -> Any:  # type: ignore[override]
        """Image embedding (reused for the same image), then the mask decoder per box."""
        import torch
        tensors = inputs.tensors
        with torch.inference_mode():
            if self._embedding is None or self._embedding[0]() is not inputs.image:
                self._embedding = (weakref.ref(inputs.image), self.model.get_image_embeddings(tensors["pixel_values"]))
            return self.model(image_embeddings=self._embedding[1], input_boxes=tensors["input_boxes"],
                              multimask_output=False)

    def postprocess(self, outputs: Any, inputs: _SegmenterInputs) -> BoxMasks:
        """Upscale the low-resolution logits to the image, binarise, squeeze the one mask per box."""
        tensors = inputs.tensors
        masks = self.processor.post_process_masks(outputs.pred_masks.float().cpu(), tensors["original_sizes"].cpu(),
                                                  tensors["reshaped_input_sizes"].cpu())[0]
        return BoxMasks(masks=masks[:, 0].numpy().astype(bool),
                        scores=outputs.iou_scores[0, :, 0].float().cpu().numpy().astype(np.float32))


# ---------------------------------------------------------------------------------------------
# 3. Region captions
# ---------------------------------------------------------------------------------------------

#: Openings captioners put before the thing itself; the data engine wants the noun phrase alone.
CAPTION_PREFIXES: tuple[str, ...] = ("a picture of", "a photo of", "an image of", "a close up of", "there is")
_ARTICLES = ("a", "an", "the")


def clean_caption(text: str, max_words: int = 6) -> str:
    """Lower-case noun phrase of at most ``max_words`` words, without a leading article or photo phrase.

    Example:
        >>> clean_caption("A photo of a red soda can on a wooden table")
        'red soda can on a wooden'
        >>> clean_caption("")
        ''
    """
    words = text.lower().replace(",", " ").replace(".", " ").split()
    for prefix in CAPTION_PREFIXES:
        if words[:len(prefix.split())] == prefix.split():
            words = words[len(prefix.split()):]
            break
    if words and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words[:max_words])


class RegionCaptioner(TransformersExpert):
    """Box crops -> short captions with an image-to-text model (BLIP; ``AutoModelForImageTextToText``).

    Greedy decoding, so a region always gets the same caption.

    Args:
        model: the captioner.
        processor: its processor.
        name_or_path: where it came from.
        max_new_tokens: generation budget per caption.
        max_words: words kept of each caption (the paper's 1-6).
        margin: each crop grows by this fraction of the box size per side (context helps captioners).
    """

    model_class = "AutoModelForImageTextToText"
    role = "captioner"

    def __init__(self, model: Any, processor: Any, name_or_path: str = "", *, max_new_tokens: int = 12,
                 max_words: int = 6, margin: float = 0.1) -> None:
        super().__init__(model, processor, name_or_path)
        if max_new_tokens < 1 or not 1 <= max_words or margin < 0:
            raise ConfigError("captioner: need max_new_tokens >= 1, max_words >= 1, margin >= 0")
        self.max_new_tokens = max_new_tokens
        self.max_words = max_words
        self.margin = margin

    def caption(self, image: np.ndarray, boxes: np.ndarray) -> RegionCaptions:
        """One caption per ``x0, y0, x1, y1`` pixel box of ``image``.

        Raises:
            InputError: bad image or boxes not (N, 4).
        """
        image, boxes = _check_box_prompts(image, boxes, np.float64, "captioner")
        if not len(boxes):
            return RegionCaptions(captions=(), raw=())
        return self.postprocess(self._forward(self.preprocess(image, boxes)))

    def preprocess(self, image: np.ndarray, boxes: np.ndarray) -> dict[str, Any]:
        """Crops of the boxes (with margin, at least 2 x 2 px), batched by the processor."""
        h, w = image.shape[:2]
        pad = self.margin * (boxes[:, 2:] - boxes[:, :2])
        lo = np.clip(np.floor(boxes[:, :2] - pad), 0, [w - 2, h - 2]).astype(int)
        hi = np.maximum(np.clip(np.ceil(boxes[:, 2:] + pad), 0, [w, h]).astype(int), lo + 2)
        crops = [image[y0:y1, x0:x1] for (x0, y0), (x1, y1) in zip(lo, hi)]
        return self._to_model(self.processor(images=crops, return_tensors="pt"))

    def _forward(self, inputs: Mapping[str, Any]) -> Any:
        """Greedy generation."""
        import torch
        with torch.inference_mode():
            return self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)

    def postprocess(self, token_ids: Any) -> RegionCaptions:
        """Decode and clean."""
        raw = tuple(self.processor.batch_decode(token_ids, skip_special_tokens=True))
        return RegionCaptions(captions=tuple(clean_caption(t, self.max_words) for t in raw), raw=raw)


# ---------------------------------------------------------------------------------------------
# 4. CLIP: semantic filter and caption embeddings
# ---------------------------------------------------------------------------------------------

class ClipSceneFilter(TransformersExpert):
    """Whole-image zero-shot labels with CLIP (``AutoModel``); keep when a keep label wins.

    Args:
        model: CLIP.
        processor: its processor.
        name_or_path: where it came from.
        keep_labels: labels of usable scene photos.
        drop_labels: labels of images to drop.
    """

    model_class = "AutoModel"
    role = "clip"

    def __init__(self, model: Any, processor: Any, name_or_path: str = "", *,
                 keep_labels: Sequence[str] = KEEP_LABELS, drop_labels: Sequence[str] = DROP_LABELS) -> None:
        super().__init__(model, processor, name_or_path)
        if not keep_labels or not drop_labels:
            raise ConfigError("clip filter: need at least one keep label and one drop label")
        self.keep_labels = tuple(keep_labels)
        self.labels = self.keep_labels + tuple(drop_labels)

    def classify(self, image: np.ndarray) -> SceneLabel:
        """Label ``image`` and decide keep / drop.

        Raises:
            InputError: bad image.
        """
        return self.postprocess(self._forward(self.preprocess(image)))

    def keep(self, frame: Frame) -> FilterVerdict:
        """The verdict of :meth:`classify` on the frame's image, as an image filter gives it."""
        verdict = self.classify(frame.rgb)
        return FilterVerdict(keep=verdict.keep, label=verdict.label)

    def preprocess(self, image: np.ndarray) -> dict[str, Any]:
        """Pixels and tokenised labels."""
        batch = self.processor(text=list(self.labels), images=_check_image(image), return_tensors="pt",
                               padding=True, truncation=True)
        return self._to_model(batch)

    def postprocess(self, outputs: Any) -> SceneLabel:
        """Softmax over the labels; the arg-max decides."""
        logits = outputs.logits_per_image[0].float().cpu().numpy().astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = self.labels[int(probs.argmax())]
        return SceneLabel(keep=best in self.keep_labels, label=best, labels=self.labels, probs=probs.astype(np.float32))


class ClipTextEmbedder(TransformersExpert):
    """Caption embeddings from CLIP's text tower (``AutoModel``), for ambiguity removal.

    Args:
        model: CLIP.
        processor: its processor (the tokenizer is used).
        name_or_path: where it came from.
    """

    model_class = "AutoModel"
    role = "clip"

    def embed(self, texts: list[str]) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings of ``texts`` (D: the CLIP projection size)."""
        if not texts:
            return np.zeros((0, self.model.config.projection_dim), np.float32)
        return self.postprocess(self._forward(self.preprocess(texts)))

    def preprocess(self, texts: list[str]) -> dict[str, Any]:
        """Token ids, padded and truncated to the text tower's length."""
        return self._to_model(self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True))

    def _forward(self, inputs: Mapping[str, Any]) -> Any:
        """Projected text features."""
        import torch
        with torch.inference_mode():
            return self.model.get_text_features(**inputs).pooler_output

    def postprocess(self, features: Any) -> np.ndarray:
        """L2-normalise."""
        emb = features.float().cpu().numpy()
        return (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# 5. Metric monocular depth
# ---------------------------------------------------------------------------------------------

class MonocularDepth(TransformersExpert):
    """RGB -> metric depth with ``AutoModelForDepthEstimation`` (Depth Anything V2 Metric).

    The checkpoint must predict metres: a Depth Anything checkpoint configured as ``relative`` predicts
    disparity and is refused. Checkpoints whose processor pads the image (ZoeDepth) are not supported:
    the prediction is resized to the image as a whole.

    Args:
        model: the depth model.
        processor: its image processor.
        name_or_path: where it came from.
        fallback_fovy_deg: vertical field of view assumed when no intrinsics are given.
        use_frame_intrinsics: :meth:`depth` uses the frame's intrinsics; else it assumes ``fallback_fovy_deg``
            (web photos whose source only guessed a camera).

    Raises:
        ConfigError: the model predicts relative depth.
    """

    model_class = "AutoModelForDepthEstimation"
    processor_class = "AutoImageProcessor"
    role = "depth"

    def __init__(self, model: Any, processor: Any, name_or_path: str = "", *,
                 fallback_fovy_deg: float = DEFAULT_FOVY_DEG, use_frame_intrinsics: bool = True) -> None:
        super().__init__(model, processor, name_or_path)
        if getattr(model.config, "depth_estimation_type", "metric") == "relative":
            raise ConfigError(f"depth: {name_or_path or 'the model'} predicts relative depth (disparity), not "
                              "metres; use a metric checkpoint (e.g. Depth-Anything-V2-Metric-*)")
        if not 0 < fallback_fovy_deg < 170:
            raise ConfigError("depth: fallback_fovy_deg must be in (0, 170)")
        self.fallback_fovy_deg = fallback_fovy_deg
        self.use_frame_intrinsics = use_frame_intrinsics

    def estimate(self, image: np.ndarray, intrinsics: CameraIntrinsics | None = None) -> DepthPrediction:
        """Depth of ``image`` in metres, with ``intrinsics`` or, when None, the fallback field of view.

        Raises:
            InputError: bad image, or intrinsics of another image size.
        """
        image = _check_image(image)
        h, w = image.shape[:2]
        if intrinsics is not None and (intrinsics.height, intrinsics.width) != (h, w):
            raise InputError(f"depth: intrinsics are {intrinsics.width}x{intrinsics.height}, image is {w}x{h}")
        depth_m = self.postprocess(self._forward(self.preprocess(image)), (h, w))
        if intrinsics is None:
            return DepthPrediction(depth_m=depth_m, fov_assumed=True,
                                   intrinsics=CameraIntrinsics.from_fov(w, h, self.fallback_fovy_deg))
        return DepthPrediction(depth_m=depth_m, intrinsics=intrinsics, fov_assumed=False)

    def depth(self, frame: Frame) -> DepthPrediction:
        """:meth:`estimate` on the frame's image, at its intrinsics unless ``use_frame_intrinsics`` is off.

        Raises:
            InputError: bad image, or intrinsics of another image size.
        """
        return self.estimate(frame.rgb, frame.intrinsics if self.use_frame_intrinsics else None)

    def preprocess(self, image: np.ndarray) -> dict[str, Any]:
        """Resized, normalised pixels."""
        return self._to_model(self.processor(images=image, return_tensors="pt"))

    def postprocess(self, outputs: Any, size: tuple[int, int]) -> np.ndarray:
        """Bilinear resize of the prediction to ``size`` (H, W); bilinear keeps positive depth positive."""
        import cv2
        predicted = outputs.predicted_depth[0].float().cpu().numpy()
        return cv2.resize(predicted, (size[1], size[0]), interpolation=cv2.INTER_LINEAR).astype(np.float32)
