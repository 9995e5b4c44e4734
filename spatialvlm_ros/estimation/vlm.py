"""The estimator backend ``"vlm"``: any spatial VLM, asked "how far is A from B?", as a distance estimator."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from typing import Sequence

import numpy as np

from spatialvlm_ros.config import EstimatorConfig, VLMConfig
from spatialvlm_ros.errors import InputError
from spatialvlm_ros.frame import Frame
from spatialvlm_ros.types import DistanceEstimate, DistanceKind, NoEstimateReason, Pair
from spatialvlm_ros.vlm.base import SpatialVLM, VLMAnswer, VLMError, VLMTimeoutError
from spatialvlm_ros.vlm.labels import hedges
from spatialvlm_ros.vlm.prompts import distance_question
from spatialvlm_ros.vlm.registry import build_vlm

logger = logging.getLogger(__name__)

#: Joins the answers of several samples in :attr:`DistanceEstimate.answer_text`.
ANSWER_SEPARATOR = "\n---\n"


class CircuitBreaker:
    """Stops asking a failing backend, and lets one probe through now and then until it answers again.

    Closed (the normal state) until ``failures`` frames in a row failed; then open: :meth:`allow` says no
    and the caller flags the frame at once instead of waiting on the backend. While open, :meth:`probe_due`
    says yes at most once every ``probe_s`` (and never while a probe is out); the probe's outcome is given
    to :meth:`record`, and the first success closes the breaker. ``failures == 0`` never opens it.

    Thread-safe: probes run in a background thread while frames keep coming.

    Example:
        >>> b = CircuitBreaker(failures=2, probe_s=0.0)
        >>> b.record(False, "refused"); b.allow()
        True
        >>> b.record(False, "refused"); b.allow(), b.probe_due()
        (False, True)
        >>> b.record(True); b.allow()
        True
    """

    def __init__(self, failures: int, probe_s: float) -> None:
        self.failures = failures
        self.probe_s = probe_s
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._open_since: float | None = None
        self._next_probe = 0.0
        self._probing = False
        self.last_error = ""

    def allow(self) -> bool:
        """Whether a frame may ask the backend (the breaker is closed)."""
        with self._lock:
            return self._open_since is None

    def probe_due(self) -> bool:
        """While open: whether to send a probe now (claims it: the caller must :meth:`record` its outcome)."""
        with self._lock:
            if self._open_since is None or self._probing or time.monotonic() < self._next_probe:
                return False
            self._probing = True
            return True

    def record(self, ok: bool, error: str = "", at_once: bool = False) -> None:
        """The outcome of a frame's questions or of a probe.

        ``at_once``: a failure that opens the breaker by itself (a timeout: every further frame would wait
        the whole deadline).
        """
        with self._lock:
            self._probing = False
            if ok:
                self._in_a_row, self._open_since = 0, None
                return
            self._in_a_row += 1
            self.last_error = error
            self._next_probe = time.monotonic() + self.probe_s
            if self.failures and (self._in_a_row >= self.failures or at_once) and self._open_since is None:
                self._open_since = time.monotonic()
                logger.warning("VLM backend failed %d times in a row (%s); not asked again until a probe "
                               "(every %.1f s) is answered", self._in_a_row, error, self.probe_s)

    def describe(self) -> str:
        """Why frames are not asked: for the flagged estimates' detail."""
        with self._lock:
            since = 0.0 if self._open_since is None else time.monotonic() - self._open_since
            return (f"VLM backend not asked: {self._in_a_row} failures in a row, for {since:.1f} s (probing every "
                    f"{self.probe_s:g} s); last error: {self.last_error}")


class VLMDistanceEstimator:
    """A :class:`~spatialvlm_ros.estimation.base.DistanceEstimator` that asks a spatial VLM.

    Per pair it asks ``config.samples`` times (all pairs and samples in one :meth:`SpatialVLM.ask_batch`),
    and as often again on the left-right mirrored image when ``config.mirror`` is set, and reports, over the
    answers that parse:

    * ``distance_m``: their mean;
    * ``uncertainty_m``: their standard deviation (``ddof=1``; the paper's Fig. 5 error bars); with a
      single parsed answer, the half-range it stated ("20-30 cm": 5 cm), else NaN (unknown);
    * ``answer_text``: every answer, joined by :data:`ANSWER_SEPARATOR`; ``detail``: the parsed values.

    An answer that says the model cannot tell ("I can't tell from this image": :func:`abstains`) is not
    averaged; when no answer has a number and at least one abstained, the estimate is ABSTAINED (the model
    declined: not an error), else no parsed answer gives UNPARSEABLE. A backend timeout gives TIMEOUT, any
    other backend failure BACKEND_ERROR, a question the model cannot read (e.g. longer than its context)
    BAD_INPUT, for every pair of the frame. ``latency_ms`` is the wall time of the whole call.

    After ``config.breaker_failures`` frames in a row without an answer, or at once after a timeout (every
    further frame would wait the whole deadline), the backend is not asked any more (a
    :class:`CircuitBreaker`): each frame is flagged BACKEND_UNAVAILABLE at once, so estimates keep coming
    at the camera rate, while a probe question goes out in the background at most every
    ``config.breaker_probe_s``; its first answer resumes normal asking.

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
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_probe_s)

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
        views = [(frame.rgb, frame.depth_m)]
        if self.config.mirror:   # a distance is the same in the mirror image: each question is asked there too
            views.append((np.ascontiguousarray(frame.rgb[:, ::-1]),
                          None if frame.depth_m is None else np.ascontiguousarray(frame.depth_m[:, ::-1])))
        questions, images, depths = [], [], []
        for pair in pairs:
            asked = [distance_question(pair, kind, rng) for _ in range(k)]
            for rgb, depth in views:
                questions += asked
                images += [rgb] * k
                depths += [depth] * k
        k *= len(views)   # answers per pair

        def flagged(reason: NoEstimateReason, detail: str) -> list[DistanceEstimate]:
            latency_ms = 1e3 * (time.perf_counter() - start)
            return [DistanceEstimate.invalid(pair, kind, reason, detail, stamp_ns=frame.stamp_ns,
                                             frame_id=frame.frame_id, latency_ms=latency_ms) for pair in pairs]

        if not questions:
            return []
        if not self.breaker.allow():
            if self.breaker.probe_due():
                threading.Thread(target=self._probe, args=(frame, questions[0]), name="vlm_probe",
                                 daemon=True).start()
            return flagged(NoEstimateReason.BACKEND_UNAVAILABLE, self.breaker.describe())
        try:
            answers = self.vlm.ask_batch(images, questions, depths)
        except VLMError as err:
            reason = NoEstimateReason.TIMEOUT if isinstance(err, VLMTimeoutError) else NoEstimateReason.BACKEND_ERROR
            logger.debug("%s at stamp %d: %s", reason.value, frame.stamp_ns, err)
            self.breaker.record(False, f"{reason.value}: {err}", at_once=reason is NoEstimateReason.TIMEOUT)
            return flagged(reason, str(err))
        except InputError as err:   # the question or the image, not the backend: the next frame may do
            return flagged(NoEstimateReason.BAD_INPUT, str(err))
        self.breaker.record(True)
        latency_ms = 1e3 * (time.perf_counter() - start)
        return [self._combine(frame, pair, kind, answers[i * k:(i + 1) * k], latency_ms)
                for i, pair in enumerate(pairs)]

    def _probe(self, frame: Frame, question: str) -> None:
        """One question while the breaker is open; any answer (even without a number) closes it."""
        try:
            self.vlm.ask(frame.rgb, question, frame.depth_m)
        except Exception as err:   # noqa: BLE001 - a probe reports every failure to the breaker, never raises
            self.breaker.record(False, f"probe: {type(err).__name__}: {err}")
        else:
            logger.info("VLM backend answers again: resuming")
            self.breaker.record(True)

    def _combine(self, frame: Frame, pair: Pair, kind: DistanceKind, answers: Sequence[VLMAnswer],
                 latency_ms: float) -> DistanceEstimate:
        text = ANSWER_SEPARATOR.join(a.text for a in answers)
        declined = [abstains(a) for a in answers]
        abstained = [a for a, d in zip(answers, declined) if d]
        parsed = [a.parsed for a, d in zip(answers, declined) if a.parsed.valid and not d]
        if not parsed and abstained:
            invalid = DistanceEstimate.invalid(pair, kind, NoEstimateReason.ABSTAINED,
                                               f"{len(abstained)}/{len(answers)} answers abstained: "
                                               f"{_shorten(abstained[0].text)!r}", stamp_ns=frame.stamp_ns,
                                               frame_id=frame.frame_id, latency_ms=latency_ms)
            return dataclasses.replace(invalid, answer_text=text)
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
        if abstained:
            detail += f"; {len(abstained)} abstained"
        return DistanceEstimate(pair=pair, kind=kind, distance_m=float(values.mean()), uncertainty_m=uncertainty,
                                valid=True, detail=detail, latency_ms=latency_ms, stamp_ns=frame.stamp_ns,
                                frame_id=frame.frame_id, answer_text=text)


def abstains(answer: VLMAnswer) -> bool:
    """Whether the model said it cannot tell (:func:`~spatialvlm_ros.vlm.labels.hedges`) and gave no measured number.

    A hedge with a number and its unit ("hard to say, maybe 30 cm") is an estimate; a hedge without one,
    or with only a word the parser reads as contact ("I cannot tell whether they are touching"), abstains.

    Example:
        >>> from spatialvlm_ros.vlm.parsing import parse_answer
        >>> [abstains(VLMAnswer(t, parse_answer(t), 1.0)) for t in (
        ...     "I can't tell from this image.", "I cannot tell whether they are touching.",
        ...     "Hard to say, maybe 30 cm.", "No number here.")]
        [True, True, False, False]
    """
    return hedges(answer.text) and (not answer.parsed.valid or answer.parsed.unit is None)


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
