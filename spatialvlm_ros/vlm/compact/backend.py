"""The compact VLM as the VLM backend ``"compact"``: images and questions in, parsed answers out.

It answers the data engine's questions in the data engine's words, so
:func:`~spatialvlm_ros.vlm.parsing.parse_answer` reads its quantitative answers like the engine's own.
Without a weights folder named, the packaged one (:data:`PACKAGED_WEIGHTS`) is used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from spatialvlm_ros.errors import InputError
from spatialvlm_ros.config import CompactVLMConfig
from spatialvlm_ros.geometry.zoom import MAX_ZOOM, Window, pair_window
from spatialvlm_ros.vlm.base import VLMAnswer, VLMError, ask_in_batches
from spatialvlm_ros.vlm.compact.network import (CompactSpatialModel, Generation, count_parameters, fit_image,
                                                load_weights, same_aspect)
from spatialvlm_ros.vlm.compact.tokenizer import WordTokenizer, fill_numbers, fill_references, prompt_ids
from spatialvlm_ros.vlm.parsing import parse_answer

logger = logging.getLogger(__name__)

#: The weights shipped with the package (present only when a trained model was good enough to ship).
PACKAGED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True, eq=False)
class _Batch:
    """Model inputs of one batch: the distinct resized images, which one each prompt asks about, prompt ids."""

    images: torch.Tensor
    image_index: torch.Tensor
    prompts: list[list[int]]


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a uint8 RGB, RGBA (alpha dropped) or greyscale ((H, W) or (H, W, 1)) image.

    Raises:
        InputError: anything else (another dtype, channel count or rank).

    Example:
        >>> as_rgb(np.zeros((2, 3, 4), np.uint8)).shape, as_rgb(np.zeros((2, 3), np.uint8)).shape
        ((2, 3, 3), (2, 3, 3))
    """
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        if image.ndim == 3 and image.shape[2] in (3, 4):
            return image[..., :3]
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
            return np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    raise InputError(f"image must be uint8 RGB (H, W, 3), RGBA (H, W, 4) or greyscale (H, W), got "
                     f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}")


class CompactVLM:
    """The compact model as a :class:`~spatialvlm_ros.vlm.base.SpatialVLM` (backend ``"compact"``).

    Args:
        model: a trained :class:`CompactSpatialModel`.
        tokenizer: its tokenizer.
        options: decoding settings.

    Example:
        >>> CompactVLM.from_config(CompactVLMConfig(weights="/no/such/folder"))
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: compact VLM weights folder '/no/such/folder' does not exist ...
    """

    name = "compact"

    def __init__(self, model: CompactSpatialModel, tokenizer: WordTokenizer,
                 options: CompactVLMConfig | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.options = options or CompactVLMConfig()
        self._generator = torch.Generator().manual_seed(self.options.seed)
        # Frame sizes and questions already checked for a warning: the estimator asks the same on every frame.
        self._checked_sizes: set[tuple[int, int]] = set()
        self._checked_questions: set[str] = set()
        self._warned_words: set[str] = set()
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        self.second_look: CompactVLM | None = None    # set by from_config when options.zoom_weights names one
        self._checked_sizes_second: set[tuple[int, int]] = set()

    @classmethod
    def from_config(cls, options: CompactVLMConfig) -> "CompactVLM":
        """Load ``options.weights`` (the packaged weights when empty), and the second look's when named.

        ``options.zoom_weights`` is read here: a model built directly has no second look unless one is set.

        Raises:
            ConfigError: the folder is missing or unusable (the message names it).
        """
        model, tokenizer = load_weights(Path(options.weights) if options.weights else PACKAGED_WEIGHTS)
        vlm = cls(model, tokenizer, options)
        logger.info("compact VLM: %d parameters, %d tokens, from %s", count_parameters(model), len(tokenizer),
                    options.weights or PACKAGED_WEIGHTS)
        if options.zoom_weights:
            vlm.second_look = cls(*load_weights(Path(options.zoom_weights)),
                                  dataclasses.replace(options, weights=options.zoom_weights, zoom_weights=""))
            logger.info("compact VLM: second look from %s", options.zoom_weights)
        return vlm

    def preprocess(self, images: Sequence[np.ndarray], questions: Sequence[str]) -> _Batch:
        """Fit the images to the model's input size (:func:`fit_image`) and tokenize ``[BOS] question [SEP]``.

        A frame wider than the model's aspect loses its sides; the first frame of each such size logs a warning
        saying how much. The same array object passed for several questions (the estimator asks every pair and
        sample about one frame) is fitted and encoded once.

        RGBA frames (many renderers give them) lose their alpha; greyscale ones, (H, W) or (H, W, 1), are read as
        RGB. A word the model never learned is read as ``<unk>``; the first question using it logs a warning.

        Raises:
            InputError: an image that is not uint8 RGB, RGBA or greyscale, or a question longer than the model
                reads.
        """
        cfg = self.model.config
        arrays: list[np.ndarray] = []
        slots: dict[int, int] = {}
        index = []
        for image in images:
            if id(image) in slots:
                index.append(slots[id(image)])
                continue
            slots[id(image)] = len(arrays)
            index.append(len(arrays))
            rgb = as_rgb(image)
            self._warn_if_cropped(rgb.shape[:2])
            arrays.append(fit_image(rgb, cfg.image_width, cfg.image_height))
        self._warn_of_unknown_words(questions)
        prompts = [prompt_ids(self.tokenizer, q) for q in questions]
        longest = max(map(len, prompts), default=0)
        if longest >= cfg.max_len:
            raise InputError(f"compact VLM: a question of {longest} tokens; this model reads at most "
                             f"{cfg.max_len - 1}")
        return _Batch(images=torch.from_numpy(np.stack(arrays)), image_index=torch.as_tensor(index), prompts=prompts)

    def _warn_of_unknown_words(self, questions: Sequence[str]) -> None:
        new = set(questions) - self._checked_questions
        if not new:
            return
        self._checked_questions |= new
        unknown = {w.strip() for q in new for w in self.tokenizer.unknown_words(q)} - self._warned_words
        if unknown:
            self._warned_words |= unknown
            logger.warning("compact VLM: never learned the word(s) %s (each is read as <unk>, so an object named by "
                           "it may not be found); its colour and object words are the data engine's",
                           ", ".join(repr(w) for w in sorted(unknown)))

    def _warn_if_cropped(self, size: tuple[int, int]) -> None:
        if size in self._checked_sizes:
            return
        self._checked_sizes.add(size)
        cfg = self.model.config
        h, w = size
        kept = h * cfg.image_width / cfg.image_height
        if same_aspect(size, cfg.image_width, cfg.image_height) or kept >= w:   # fit_image keeps every column
            return
        g = math.gcd(cfg.image_width, cfg.image_height)
        logger.warning("compact VLM: %dx%d frames are wider than the model's %d:%d; it reads the middle %d columns "
                       "(%.0f%% of each side unseen): keep the named objects in the middle, or use a %d:%d camera",
                       w, h, cfg.image_width // g, cfg.image_height // g, round(kept), 50 * (1 - kept / w),
                       cfg.image_width // g, cfg.image_height // g)

    def _forward(self, batch: _Batch) -> list[Generation]:
        """Decode the answers' token ids, number values and reference spans (greedy or sampled)."""
        try:
            return self.model.generate(batch.images, batch.prompts, self.options.max_new_tokens,
                                       self.options.temperature, self._generator, batch.image_index)
        except RuntimeError as err:  # out of memory, a shape mismatch in a damaged checkpoint
            raise VLMError(f"compact VLM: generation failed: {err}") from err

    def postprocess(self, answers: Sequence[Generation], questions: Sequence[str],
                    latency_ms: float) -> list[VLMAnswer]:
        """Detokenize the answers, write their numbers and references in and parse the distance each states."""
        unit = self.options.default_unit or None
        texts = [fill_references(fill_numbers(self.tokenizer.decode(g.ids), g.values), WordTokenizer.pieces(q),
                                 g.spans) for g, q in zip(answers, questions)]
        return [VLMAnswer(text=t, parsed=parse_answer(t, unit), latency_ms=latency_ms) for t in texts]

    def ask(self, image: np.ndarray, question: str, depth: np.ndarray | None = None) -> VLMAnswer:
        """Answer ``question`` about ``image`` ((H, W, 3) uint8 RGB); ``depth`` is not used (RGB-only model).

        Raises:
            VLMError: generation failed.
            InputError: a bad image.
        """
        return self.ask_batch([image], [question])[0]

    def ask_batch(self, images: Sequence[np.ndarray], questions: Sequence[str],
                  depths: Sequence[np.ndarray | None] | None = None) -> list[VLMAnswer]:
        """Answer ``questions[i]`` about ``images[i]``, ``options.batch_size`` at a time; depths are not used.

        Each answer's ``latency_ms`` is the wall time of its batch.

        Raises:
            VLMError: generation failed.
            InputError: a bad image, or not as many images as questions.
        """
        return ask_in_batches(images, questions, self.options.batch_size, self._answer_batch)

    def _answer_batch(self, images: Sequence[np.ndarray], questions: Sequence[str], start: float) -> list[VLMAnswer]:
        generated = self._forward(self.preprocess(images, questions))
        again = self._look_again(images, questions, generated) if self.second_look is not None else {}
        latency_ms = 1e3 * (time.perf_counter() - start)
        answers = self.postprocess(generated, questions, latency_ms)
        if again:
            second = self.second_look
            assert second is not None
            for i, answer in zip(again, second.postprocess(list(again.values()), [questions[i] for i in again],
                                                           latency_ms)):
                answers[i] = answer
        return answers

    def _look_again(self, images: Sequence[np.ndarray], questions: Sequence[str],
                    generated: Sequence[Generation]) -> dict[int, Generation]:
        """Question index -> the second look's answer, for each question the first answer read two objects in.

        The second look reads the window (:func:`~spatialvlm_ros.geometry.zoom.pair_window`, of the model's
        aspect) around the two pixel centres the first look's slots read. A question whose slots read one
        object, or no finite centres, keeps the first answer. Questions about one frame whose windows
        coincide share one crop (encoded once).
        """
        assert self.second_look is not None
        cfg = self.model.config
        crops: dict[tuple[int, Window], np.ndarray] = {}
        asked: dict[int, np.ndarray] = {}
        for i, g in enumerate(generated):
            if len(g.spans) != 2 or g.spans[0] == g.spans[1] or len(g.centres) != 2 or not np.all(
                    np.isfinite(g.centres)):
                continue
            rgb = as_rgb(images[i])
            height, width = rgb.shape[:2]
            self._warn_if_small((height, width))
            points = input_to_pixels(g.centres, (height, width), cfg.image_width, cfg.image_height)
            window = pair_window(*points, width, height, aspect=cfg.image_width / cfg.image_height)
            key = (id(images[i]), window)
            if key not in crops:
                crops[key] = window.cut(rgb)
            asked[i] = crops[key]
        if not asked:
            return {}
        second = self.second_look
        return dict(zip(asked, second._forward(second.preprocess(list(asked.values()),
                                                                 [questions[i] for i in asked]))))

    def _warn_if_small(self, size: tuple[int, int]) -> None:
        cfg = self.model.config
        if size in self._checked_sizes_second or size[1] >= MAX_ZOOM * cfg.image_width:
            return
        self._checked_sizes_second.add(size)
        logger.warning("compact VLM: second look on %dx%d frames: a window %.1fx narrower has fewer pixels than the "
                       "model reads (%dx%d), so it is upscaled and adds little; frames of %dx%d or more give it its "
                       "full zoom", size[1], size[0], MAX_ZOOM, cfg.image_width, cfg.image_height,
                       round(MAX_ZOOM * cfg.image_width), round(MAX_ZOOM * cfg.image_height))


def input_to_pixels(centres: Sequence[tuple[float, float]], size: tuple[int, int], width: int,
                    height: int) -> list[tuple[float, float]]:
    """Points (u, v) in fractions of the model's input -> pixels of the (H, W) frame it was fitted from.

    Undoes :func:`fit_image`: a frame wider than the model's aspect lost equal strips at its sides, a
    narrower one was padded; its height always maps whole.

    Example:
        >>> input_to_pixels([(0.5, 0.5), (0.0, 1.0)], (240, 427), 128, 96)   # 16:9: the middle 320 columns
        [(213.5, 120.0), (53.5, 240.0)]
        >>> input_to_pixels([(0.5, 0.5)], (320, 240), 128, 96)              # portrait: padded at both sides
        [(120.0, 160.0)]
    """
    h, w = size
    fitted = h * width / height
    left = (w - fitted) / 2
    return [(left + u * fitted, v * h) for u, v in centres]
