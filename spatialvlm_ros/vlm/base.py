"""The spatial-VLM interface, its settings, and the adapter that makes any VLM a distance estimator.

A :class:`SpatialVLM` answers a free-text question about an RGB image (optionally with depth, for
models such as SpatialBot) and returns the text with the distance parsed from it. Backends are
registered by name in :data:`VLM_BACKENDS` and chosen by ``estimator.vlm.backend``;
:class:`VLMDistanceEstimator` implements the project's
:class:`~spatialvlm_ros.estimation.base.DistanceEstimator` on top of any of them and is registered
as the estimator backend ``"vlm"``.

Errors: a backend *raises* :class:`VLMTimeoutError` / :class:`VLMError` when no answer arrived
(transport, HTTP status, malformed response); an answer that arrived but states no usable distance
is *returned*, with ``parsed.valid`` False. The estimator turns both into invalid estimates
(TIMEOUT, BACKEND_ERROR, UNPARSEABLE) and never raises per frame.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Protocol, Sequence

import numpy as np

from spatialvlm_ros.errors import ConfigError, InputError, SpatialVLMError
from spatialvlm_ros.estimation.base import (
    DistanceEstimate, DistanceKind, NoEstimateReason, Pair, register_estimator,
)
from spatialvlm_ros.registry import Registry
from spatialvlm_ros.vlm.parsing import ParsedDistance
from spatialvlm_ros.vlm.prompts import distance_question

if TYPE_CHECKING:
    from spatialvlm_ros.config import EstimatorConfig
    from spatialvlm_ros.frame import Frame

logger = logging.getLogger(__name__)

#: Joins the answers of several samples in :attr:`DistanceEstimate.answer_text`.
ANSWER_SEPARATOR = "\n---\n"


class VLMError(SpatialVLMError, RuntimeError):
    """A VLM backend gave no answer: unreachable, an HTTP error, a malformed response."""


class VLMTimeoutError(VLMError):
    """A VLM backend did not answer within its timeout."""


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"estimator.vlm.{key}: {msg}")


@dataclass(frozen=True)
class VLMConfig:
    """Which spatial VLM answers, where it runs, and how it is sampled (``estimator.vlm.*``).

    Attributes:
        backend: registered backend name: ``"compact"`` (the in-house model shipped in the package; it knows
            the simulator's world only), ``"openai"`` (any OpenAI-compatible chat-completions server, e.g.
            vLLM, Ollama, llama.cpp server) or ``"transformers"`` (an image-text-to-text checkpoint in-process).
        model: model name the server knows.
        url: base URL of the API (``.../v1``); ``/chat/completions`` is appended.
        api_key_env: name of the environment variable holding the API key ("" = no authentication).
            The key itself never appears in a config, a log or an error message.
        samples: answers per pair and frame; the estimate is their mean, the uncertainty their spread
            (1 for the greedy compact model; 3-5 with ``temperature`` > 0 for a sampled large model).
        phrasing: ``fixed`` asks the first question template every time; ``sampled`` draws one per sample,
            seeded by the estimator seed and the frame stamp.
        temperature: sampling temperature (> 0 for samples to differ).
        max_tokens: answer length limit; reasoning models ("<think>") need several hundred.
        timeout_s: per-request socket timeout, seconds.
        retries: further attempts after a 429 / 5xx / connection error (not after a timeout).
        retry_backoff_s: first retry delay, doubled each attempt (a Retry-After header wins), seconds.
        max_concurrency: requests in flight at once for a batch (pairs x samples).
        default_unit: unit of a bare number in an answer ("" = such answers are unparseable).
        system_prompt: optional system message ("" = none).
        device: torch device of the "transformers" backend ("cpu", "cuda", "cuda:1").
        dtype: its weight dtype (bfloat16 on a GPU).
        local_files_only: never contact the model hub (HF_HUB_OFFLINE=1 does the same).
        trust_remote_code: run code shipped with the checkpoint (off unless you mean it).
        adapter: LoRA adapter folder from "spatialvlm finetune" ("" = none).
        weights: weights folder of the "compact" backend (from "spatialvlm train"; "" = the packaged ones).
    """

    backend: str = "compact"
    model: str = "remyxai/SpaceQwen2.5-VL-3B-Instruct"
    url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = ""
    samples: int = 1
    phrasing: Literal["fixed", "sampled"] = "fixed"
    temperature: float = 0.0
    max_tokens: int = 512
    timeout_s: float = 30.0
    retries: int = 2
    retry_backoff_s: float = 0.5
    max_concurrency: int = 4
    default_unit: Literal["", "mm", "cm", "m", "km", "in", "ft", "yd"] = ""
    system_prompt: str = ""
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    local_files_only: bool = False
    trust_remote_code: bool = False
    adapter: str = ""
    weights: str = ""

    def __post_init__(self) -> None:
        _require(bool(self.model), "model", "must name the model")
        _require(self.url.startswith(("http://", "https://")), "url", f"must be an http(s) URL, got {self.url!r}")
        _require(self.samples >= 1, "samples", "must be >= 1")
        _require(self.temperature >= 0, "temperature", "must be >= 0")
        _require(self.max_tokens >= 1, "max_tokens", "must be >= 1")
        _require(self.timeout_s > 0, "timeout_s", "must be > 0")
        _require(self.retries >= 0, "retries", "must be >= 0")
        _require(self.retry_backoff_s >= 0, "retry_backoff_s", "must be >= 0")
        _require(self.max_concurrency >= 1, "max_concurrency", "must be >= 1")


@dataclass(frozen=True)
class VLMAnswer:
    """One answer of a spatial VLM.

    Attributes:
        text: what the model wrote, verbatim.
        parsed: the distance read from it (see :func:`~spatialvlm_ros.vlm.parsing.parse_answer`).
        latency_ms: wall time from request to answer, retries included, milliseconds.
    """

    text: str
    parsed: ParsedDistance
    latency_ms: float


class SpatialVLM(Protocol):
    """What every VLM backend implements."""

    name: str

    def ask(self, image: np.ndarray, question: str, depth: np.ndarray | None = None) -> VLMAnswer:
        """Answer ``question`` about ``image`` ((H, W, 3) uint8 RGB; ``depth`` (H, W) metres, if the model takes it).

        Raises:
            VLMTimeoutError: no answer within the timeout.
            VLMError: no answer for another reason.
        """
        ...

    def ask_batch(self, images: Sequence[np.ndarray], questions: Sequence[str],
                  depths: Sequence[np.ndarray | None] | None = None) -> list[VLMAnswer]:
        """Answer ``questions[i]`` about ``images[i]``, in order; raises like :meth:`ask` if any fails."""
        ...


VLMFactory = Callable[[VLMConfig], SpatialVLM]
VLM_BACKENDS: Registry[VLMFactory] = Registry("estimator.vlm.backend")
register_vlm = VLM_BACKENDS.register


def ask_in_batches(images: Sequence[np.ndarray], questions: Sequence[str], batch_size: int,
                   answer_batch: Callable[[Sequence[np.ndarray], Sequence[str], float], list[VLMAnswer]],
                   ) -> list[VLMAnswer]:
    """Answer ``questions[i]`` about ``images[i]`` in order, ``batch_size`` at a time (in-process backends).

    ``answer_batch(images, questions, start)`` answers one batch; ``start`` is its ``time.perf_counter()``
    start, so each answer's ``latency_ms`` can be the wall time of its batch.

    Raises:
        InputError: not as many images as questions.
    """
    if len(images) != len(questions):
        raise InputError(f"{len(images)} images but {len(questions)} questions")
    answers: list[VLMAnswer] = []
    for i in range(0, len(questions), batch_size):
        answers += answer_batch(images[i:i + batch_size], questions[i:i + batch_size], time.perf_counter())
    return answers


def build_vlm(config: VLMConfig) -> SpatialVLM:
    """Build the backend named by ``config.backend``."""
    # Importing the backends registers them; kept here so a plain import of base stays light.
    from spatialvlm_ros.vlm import server, transformers_backend  # noqa: F401
    if config.backend == "compact":
        from spatialvlm_ros.vlm.compact import backend  # noqa: F401  (imports torch: only when asked for)
    return VLM_BACKENDS.create(config.backend, config)


class VLMDistanceEstimator:
    """A :class:`~spatialvlm_ros.estimation.base.DistanceEstimator` that asks a spatial VLM.

    Per pair it asks ``config.samples`` times (all pairs and samples in one :meth:`SpatialVLM.ask_batch`)
    and reports, over the answers that parse:

    * ``distance_m``: their mean;
    * ``uncertainty_m``: their standard deviation (``ddof=1``; the paper's Fig. 5 error bars); with a
      single parsed answer, the half-range it stated ("20-30 cm": 5 cm), else NaN (unknown);
    * ``answer_text``: every answer, joined by :data:`ANSWER_SEPARATOR`; ``detail``: the parsed values.

    No parsed answer gives UNPARSEABLE; a backend timeout TIMEOUT, any other backend failure
    BACKEND_ERROR, for every pair of the frame. ``latency_ms`` is the wall time of the whole call.

    Args:
        config: the VLM settings.
        vlm: the model to ask; default ``build_vlm(config)``.
        seed: seeds the question phrasing (with the frame stamp) when ``config.phrasing`` is ``sampled``.

    Example:
        >>> from spatialvlm_ros.frame import Frame
        >>> from spatialvlm_ros.geometry.camera import CameraIntrinsics
        >>> from spatialvlm_ros.vlm.parsing import parse_answer
        >>> class Scripted:  # a stand-in model: three samples, three answers
        ...     name = "scripted"
        ...     def ask_batch(self, images, questions, depths=None):
        ...         return [VLMAnswer(t, parse_answer(t), 1.0) for t in ("20 cm", "about 22 cm", "24cm")]
        >>> frame = Frame(rgb=np.zeros((4, 4, 3), np.uint8),
        ...               intrinsics=CameraIntrinsics(fx=4.0, fy=4.0, cx=1.5, cy=1.5, width=4, height=4))
        >>> est = VLMDistanceEstimator(VLMConfig(samples=3), vlm=Scripted())
        >>> [e] = est.estimate(frame, [Pair("yellow gripper", "red can")], DistanceKind.GAP)
        >>> e.valid, round(e.distance_m, 3), round(e.uncertainty_m, 3)
        (True, 0.22, 0.02)
    """

    name = "vlm"

    def __init__(self, config: VLMConfig, vlm: SpatialVLM | None = None, seed: int = 0) -> None:
        self.config = config
        self.vlm = build_vlm(config) if vlm is None else vlm
        self.seed = seed

    @classmethod
    def from_estimator_config(cls, config: "EstimatorConfig") -> "VLMDistanceEstimator":
        """The estimator ``estimator.backend: vlm`` builds: ``config.vlm`` settings, ``config.seed``."""
        return cls(config.vlm, seed=config.seed)

    def estimate(self, frame: "Frame", pairs: Sequence[Pair], kind: DistanceKind) -> list[DistanceEstimate]:
        """One estimate per pair; backend failures and unparseable answers come back as invalid estimates."""
        start = time.perf_counter()
        kind = DistanceKind(kind)
        k = self.config.samples
        rng = np.random.default_rng([self.seed, frame.stamp_ns]) if self.config.phrasing == "sampled" else None
        questions = [distance_question(pair, kind, rng) for pair in pairs for _ in range(k)]
        try:
            answers = self.vlm.ask_batch([frame.rgb] * len(questions), questions, [frame.depth_m] * len(questions))
        except VLMError as err:
            reason = NoEstimateReason.TIMEOUT if isinstance(err, VLMTimeoutError) else NoEstimateReason.BACKEND_ERROR
            logger.warning("%s at stamp %d: %s", reason.value, frame.stamp_ns, err)
            latency_ms = 1e3 * (time.perf_counter() - start)
            return [DistanceEstimate.invalid(pair, kind, reason, str(err), stamp_ns=frame.stamp_ns,
                                             frame_id=frame.frame_id, latency_ms=latency_ms) for pair in pairs]
        latency_ms = 1e3 * (time.perf_counter() - start)
        return [self._combine(frame, pair, kind, answers[i * k:(i + 1) * k], latency_ms)
                for i, pair in enumerate(pairs)]

    def _combine(self, frame: "Frame", pair: Pair, kind: DistanceKind, answers: Sequence[VLMAnswer],
                 latency_ms: float) -> DistanceEstimate:
        text = ANSWER_SEPARATOR.join(a.text for a in answers)
        parsed = [a.parsed for a in answers if a.parsed.valid]
        if not parsed:
            reasons = "; ".join(sorted({str(a.parsed.reason) for a in answers}))
            invalid = DistanceEstimate.invalid(pair, kind, NoEstimateReason.UNPARSEABLE,
                                               f"0/{len(answers)} answers parsed: {reasons}", stamp_ns=frame.stamp_ns,
                                               frame_id=frame.frame_id, latency_ms=latency_ms)
            return dataclasses.replace(invalid, answer_text=text)
        values = np.array([p.value_m for p in parsed])
        if len(values) >= 2:
            uncertainty = float(values.std(ddof=1))
        else:
            uncertainty = parsed[0].spread_m if parsed[0].spread_m > 0 else math.nan
        detail = f"{len(parsed)}/{len(answers)} answers parsed: " + ", ".join(f"{v:.3g} m" for v in values)
        return DistanceEstimate(pair=pair, kind=kind, distance_m=float(values.mean()), uncertainty_m=uncertainty,
                                valid=True, detail=detail, latency_ms=latency_ms, stamp_ns=frame.stamp_ns,
                                frame_id=frame.frame_id, answer_text=text)


register_estimator("vlm")(VLMDistanceEstimator.from_estimator_config)
