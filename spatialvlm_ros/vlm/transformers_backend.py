"""A spatial VLM run in this process with transformers: any image-text-to-text checkpoint.

Registered as the VLM backend ``"transformers"``: ``AutoModelForImageTextToText`` + ``AutoProcessor``
from a local folder or a hub id (Qwen2-VL, Qwen2.5-VL and SpaceQwen2.5-VL, LLaVA, ...), optionally with
a LoRA adapter written by :mod:`~spatialvlm_ros.training.lora`. Loading is the project's
(:meth:`~spatialvlm_ros.perception.hf.TransformersExpert.from_pretrained`): offline with
``local_files_only`` or ``HF_HUB_OFFLINE=1``, on the configured device and dtype, ``trust_remote_code``
only when asked for, and a :class:`~spatialvlm_ros.errors.ConfigError` naming the path when it fails.

preprocess (the processor's chat template, user turn = image then question, as in the data engine's
rows; pixels; left padding) -> _forward (``generate`` under :func:`torch.inference_mode`) ->
postprocess (decode the new tokens, :func:`~spatialvlm_ros.vlm.parsing.parse_answer`). The depth image
is not used: these models take colour only.

Sampling: ``temperature`` 0 decodes greedily; above 0 it samples from the whole distribution
(``top_k`` / ``top_p`` of the checkpoint's ``generation_config`` are switched off: Qwen2-VL checkpoints
ship ``top_k=1``, which would make every one of the estimator's samples the same answer).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.config import TransformersVLMConfig
from spatialvlm_ros.perception.hf import TransformersExpert
from spatialvlm_ros.vlm.base import VLMAnswer, VLMError, ask_in_batches
from spatialvlm_ros.vlm.parsing import parse_answer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class _Prompts:
    """Model inputs of one batch and the padded prompt length (generated tokens follow it)."""

    tensors: dict[str, Any]
    prompt_tokens: int


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image must be (H, W, 3) uint8 RGB, got {getattr(image, 'shape', None)} "
                         f"{getattr(image, 'dtype', type(image).__name__)}")
    return image


class TransformersVLM(TransformersExpert):
    """A spatial VLM from ``AutoModelForImageTextToText`` + ``AutoProcessor``, asked through its chat template.

    Build it with :meth:`from_config` (what ``estimator.vlm.backend: transformers`` does) or
    :meth:`from_pretrained`; the constructor takes already-loaded objects.

    Args:
        model: an image-text-to-text ``PreTrainedModel``.
        processor: its processor; it must have a chat template.
        name_or_path: where it came from (messages).
        options: its ``estimator.vlm.transformers`` settings (``options.model`` defaults to ``name_or_path``).

    Raises:
        ConfigError: the processor has no chat template.

    Example:
        >>> TransformersVLM.from_config(TransformersVLMConfig(model="/no/such/folder"))
        Traceback (most recent call last):
        ...
        spatialvlm_ros.errors.ConfigError: estimator.vlm.transformers.model: model folder '/no/such/folder' does ...
    """

    model_class = "AutoModelForImageTextToText"
    processor_class = "AutoProcessor"
    role = "estimator.vlm.transformers.model"
    name = "transformers"

    def __init__(self, model: Any, processor: Any, name_or_path: str = "", *,
                 options: TransformersVLMConfig | None = None) -> None:
        super().__init__(model, processor, name_or_path)
        self.options = options or TransformersVLMConfig(model=name_or_path or "<in memory>")
        if not getattr(processor, "chat_template", None):
            raise ConfigError(f"{self.role}: the processor of {name_or_path or 'the model'} has no chat template")
        tokenizer = processor.tokenizer
        if tokenizer.pad_token is None:
            # Batched prompts need padding; Llama-family tokenizers ship without a pad token.
            tokenizer.pad_token = tokenizer.eos_token

    def __repr__(self) -> str:
        return f"TransformersVLM(model={self.name_or_path!r}, device={self.model.device}, dtype={self.model.dtype})"

    @classmethod
    def from_config(cls, options: TransformersVLMConfig) -> "TransformersVLM":
        """Load ``options.model`` (and ``options.adapter``) onto ``options.device``.

        Raises:
            ConfigError: the checkpoint or the adapter cannot be loaded (the message names the path),
                a bad device or dtype, or an adapter without ``peft`` installed.
        """
        vlm = cls.from_pretrained(options.model, device=options.device, dtype=options.dtype,
                                  local_files_only=options.local_files_only,
                                  trust_remote_code=options.trust_remote_code, options=options)
        if options.adapter:
            vlm.load_adapter(options.adapter)
        return vlm

    def load_adapter(self, adapter: str) -> None:
        """Apply the LoRA adapter in the folder ``adapter`` (``adapter_config.json`` + safetensors weights).

        Raises:
            ConfigError: no such folder, ``peft`` not installed, or an adapter that does not fit the model.
        """
        key = "estimator.vlm.transformers.adapter"
        path = Path(adapter).expanduser()
        if not (path / "adapter_config.json").is_file():
            raise ConfigError(f"{key}: {adapter!r} is not an adapter folder (no adapter_config.json)")
        try:
            self.model.load_adapter(str(path))
        except ImportError as err:
            raise ConfigError(f"{key}: loading {adapter!r} needs peft (pip install peft)") from err
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise ConfigError(f"{key}: cannot apply {adapter!r} to {self.name_or_path!r}: {err}") from err
        logger.info("applied LoRA adapter %s", adapter)

    # ------------------------------------------------------------------ preprocess

    def messages(self, question: str) -> list[dict[str, Any]]:
        """The chat of one question: optional system message, then the user turn (image first, as in training)."""
        chat: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "image"},
                                                                   {"type": "text", "text": question}]}]
        if self.options.system_prompt:
            chat.insert(0, {"role": "system", "content": [{"type": "text", "text": self.options.system_prompt}]})
        return chat

    def preprocess(self, images: Sequence[np.ndarray], questions: Sequence[str]) -> _Prompts:
        """Render each chat with the processor's template; pixels and left-padded token ids on the model's device."""
        from PIL import Image

        texts = [self.processor.apply_chat_template(self.messages(q), add_generation_prompt=True, tokenize=False)
                 for q in questions]
        # PIL images: a bare (H, W, 3) array of a small image can be mistaken for channels-first.
        pil = [[Image.fromarray(_check_image(image))] for image in images]
        # Left padding: generated tokens then follow every prompt at the same position.
        batch = self.processor(text=texts, images=pil, padding=True, padding_side="left", return_tensors="pt")
        return _Prompts(tensors=self._to_model(batch), prompt_tokens=int(batch["input_ids"].shape[1]))

    # ------------------------------------------------------------------ forward

    def _forward(self, prompts: _Prompts) -> Any:
        """Generate the answers' token ids (prompt included)."""
        import torch

        opts = self.options
        sampling: dict[str, Any] = {"do_sample": False}
        if opts.temperature > 0:
            sampling = {"do_sample": True, "temperature": opts.temperature, "top_k": 0, "top_p": 1.0}
        try:
            with torch.inference_mode():
                return self.model.generate(**prompts.tensors, max_new_tokens=opts.max_new_tokens,
                                           max_time=opts.max_time_s,
                                           pad_token_id=self.processor.tokenizer.pad_token_id, **sampling)
        except RuntimeError as err:  # out of memory, a device-side failure
            raise VLMError(f"{self.name_or_path}: generation failed: {err}") from err

    # ------------------------------------------------------------------ postprocess

    def postprocess(self, token_ids: Any, prompts: _Prompts, latency_ms: float) -> list[VLMAnswer]:
        """Decode the tokens after the prompt and parse the distance each answer states."""
        texts = self.processor.batch_decode(token_ids[:, prompts.prompt_tokens:], skip_special_tokens=True)
        unit = self.options.default_unit or None
        return [VLMAnswer(text=t.strip(), parsed=parse_answer(t.strip(), unit), latency_ms=latency_ms) for t in texts]

    # ------------------------------------------------------------------ public

    def ask(self, image: np.ndarray, question: str, depth: np.ndarray | None = None) -> VLMAnswer:
        """Answer ``question`` about ``image`` ((H, W, 3) uint8 RGB); ``depth`` is not used.

        Raises:
            VLMError: generation failed (e.g. out of memory).
            InputError: ``image`` is not (H, W, 3) uint8.
        """
        return self.ask_batch([image], [question])[0]

    def ask_batch(self, images: Sequence[np.ndarray], questions: Sequence[str],
                  depths: Sequence[np.ndarray | None] | None = None) -> list[VLMAnswer]:
        """Answer ``questions[i]`` about ``images[i]``, in order, ``options.batch_size`` at a time.

        Each answer's ``latency_ms`` is the wall time of the batch it was generated in.

        Raises:
            VLMError: generation failed.
            InputError: a bad image, or as many images as questions not given.
        """
        return ask_in_batches(images, questions, self.options.batch_size, self._answer_batch)

    def _answer_batch(self, images: Sequence[np.ndarray], questions: Sequence[str], start: float) -> list[VLMAnswer]:
        prompts = self.preprocess(images, questions)
        answers = self.postprocess(self._forward(prompts), prompts, 1e3 * (time.perf_counter() - start))
        logger.debug("%s answered %d questions in %.0f ms", self.name_or_path, len(answers), answers[-1].latency_ms)
        return answers
