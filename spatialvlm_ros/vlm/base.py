"""The spatial-VLM interface: :class:`SpatialVLM`, its :class:`VLMAnswer` and errors.

A :class:`SpatialVLM` answers a free-text question about an RGB image (optionally with depth, for
models such as SpatialBot) and returns the text with the distance parsed from it. Backends are
registered by name in :mod:`spatialvlm_ros.vlm.registry` and chosen by ``estimator.vlm.backend``;
:class:`~spatialvlm_ros.estimation.vlm.VLMDistanceEstimator` makes any of them a distance estimator.

Errors: a backend *raises* :class:`VLMTimeoutError` / :class:`VLMError` when no answer arrived
(transport, HTTP status, malformed response); an answer that arrived but states no usable distance
is *returned*, with ``parsed.valid`` False. The estimator turns both into invalid estimates
(TIMEOUT, BACKEND_ERROR, UNPARSEABLE) and never raises per frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from spatialvlm_ros.errors import InputError, SpatialVLMError
from spatialvlm_ros.vlm.parsing import ParsedDistance


class VLMError(SpatialVLMError, RuntimeError):
    """A VLM backend gave no answer: unreachable, an HTTP error, a malformed response."""


class VLMTimeoutError(VLMError):
    """A VLM backend did not answer within its timeout."""


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
