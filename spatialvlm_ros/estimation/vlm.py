"""The estimator backend ``"vlm"``: any spatial VLM, asked "how far is A from B?", as a distance estimator."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Sequence

import numpy as np

from spatialvlm_ros.config import EstimatorConfig, VLMConfig
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, NoEstimateReason, Pair
from spatialvlm_ros.vlm.base import SpatialVLM, VLMAnswer, VLMError, VLMTimeoutError
from spatialvlm_ros.vlm.prompts import distance_question
from spatialvlm_ros.vlm.registry import build_vlm

logger = logging.getLogger(__name__)

#: Joins the answers of several samples in :attr:`DistanceEstimate.answer_text`.
ANSWER_SEPARATOR = "\n---\n"


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
    def from_estimator_config(cls, config: EstimatorConfig) -> "VLMDistanceEstimator":
        """The estimator ``estimator.backend: vlm`` builds: ``config.vlm`` settings, ``config.seed``."""
        return cls(config.vlm, seed=config.seed)

    def estimate(self, frame: Frame, pairs: Sequence[Pair], kind: DistanceKind) -> list[DistanceEstimate]:
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

    def _combine(self, frame: Frame, pair: Pair, kind: DistanceKind, answers: Sequence[VLMAnswer],
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
