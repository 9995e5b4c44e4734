"""Spatial questions on demand: ``~/question`` in, ``~/answer`` out, on a thread of their own.

A question is a ``std_msgs/String``: the question itself, or JSON ``{"question": ..., "options": {...},
"id": ...}`` (``options`` go to the planner: ``objects``, ``gripper``, ``opening_m``; ``id`` comes back in
the answer). The answer is a ``std_msgs/String`` holding one JSON object (:func:`answer_payload`,
:func:`refusal`):

* ``id``, ``question``: as asked;
* ``valid``, ``reason`` (why not: ``inactive``, ``no_frame``, ``busy``, ``bad_question``, ``no_plan``,
  ``missing_measurement``, ``backend_unavailable``, ``timeout``, ``backend_error``, ``internal_error``);
* ``text``: the answer in words;
* ``value``: metres (``unit`` "m"), "yes" / "no", an object phrase or a list of them;
* ``uncertainty_m``: one standard deviation of a metric value, null where there is none;
* ``kind``, ``planner``: which question it was taken for, and who planned it;
* ``stamp`` (``sec``, ``nanosec``), ``frame_id``: the camera frame the answer is about;
* ``state``: the node's lifecycle state; ``latency_ms``: question received -> answer published;
* ``trace``: :meth:`~spatialvlm_ros.reasoning.planner.ReasoningAnswer.to_json` (every atomic query).

:class:`QuestionDesk` answers one question at a time on its own thread, so neither the executor nor the
reward worker ever waits for a planner; a full queue is answered at once with ``busy``.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from spatialvlm_ros.reasoning.planner import ReasoningAnswer

#: Questions waiting for the answering thread; one more is answered ``busy`` at once.
QUEUE_SIZE = 8


@dataclass(frozen=True)
class Question:
    """One question as received.

    Attributes:
        question: the question text ("" when the message held none).
        options: planner options (``objects``, ``gripper``, ``opening_m``).
        id: whatever the asker sent as ``id`` (returned in the answer), else None.
        received: monotonic time it arrived, seconds.
        error: why the message is not a question ("" when it is one).
    """

    question: str
    options: Mapping[str, Any] = field(default_factory=dict)
    id: Any = None
    received: float = field(default_factory=time.monotonic)
    error: str = ""


def parse_question(text: str, received: float | None = None) -> Question:
    """The question a ``~/question`` message holds: plain text, or JSON with ``question``, ``options``, ``id``.

    Example:
        >>> parse_question("How far is the yellow gripper from the red can?").question
        'How far is the yellow gripper from the red can?'
        >>> q = parse_question('{"question": "Which object is closest to the red can?", '
        ...                    '"options": {"objects": ["blue box", "green ball"]}, "id": 7}')
        >>> q.options["objects"], q.id
        (['blue box', 'green ball'], 7)
        >>> parse_question('{"options": {}}').error
        'JSON question without a "question" string'
    """
    received = time.monotonic() if received is None else received
    stripped = text.strip()
    if not stripped.startswith("{"):
        if not stripped:
            return Question("", received=received, error="empty question")
        return Question(stripped, received=received)
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError) as err:
        return Question("", received=received, error=f"not JSON: {err}")
    if not isinstance(data, dict) or not isinstance(data.get("question"), str) or not data["question"].strip():
        return Question("", id=data.get("id") if isinstance(data, dict) else None, received=received,
                        error='JSON question without a "question" string')
    options = data.get("options") or {}
    if not isinstance(options, dict):
        return Question(data["question"], id=data.get("id"), received=received, error='"options" must be an object')
    return Question(data["question"].strip(), options, data.get("id"), received)


def json_safe(value: Any) -> Any:
    """``value`` with NaN / infinity (nested too) as None and tuples as lists, for strict JSON.

    Example:
        >>> json_safe({"a": float("nan"), "b": (1.5, float("inf")), "c": [True, "x"]})
        {'a': None, 'b': [1.5, None], 'c': [True, 'x']}
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item"):     # numpy scalars
        return json_safe(value.item())
    return str(value)


def _stamp(stamp_ns: int) -> dict[str, int]:
    return {"sec": stamp_ns // 1_000_000_000, "nanosec": stamp_ns % 1_000_000_000}


def refusal(q: Question, reason: str, text: str, state: str, stamp_ns: int | None = None,
            frame_id: str = "") -> dict[str, Any]:
    """The answer to a question that could not be asked (inactive node, no frame yet, full queue, bad message)."""
    return {"id": q.id, "question": q.question, "valid": False, "reason": reason, "text": text, "value": None,
            "unit": None, "uncertainty_m": None, "kind": "", "planner": "",
            "stamp": _stamp(stamp_ns) if stamp_ns is not None else None, "frame_id": frame_id, "state": state,
            "latency_ms": 1e3 * (time.monotonic() - q.received), "trace": None}


def answer_payload(q: Question, answer: ReasoningAnswer, stamp_ns: int, frame_id: str, state: str) -> dict[str, Any]:
    """The ``~/answer`` JSON of a planner's answer about the frame stamped ``stamp_ns``.

    Example:
        >>> a = ReasoningAnswer("How far...?", "gap", "0.12 m.", 0.12, uncertainty_m=0.004)
        >>> p = answer_payload(Question("How far...?"), a, 2_500_000_000, "cam", "active")
        >>> p["value"], p["unit"], p["uncertainty_m"], p["stamp"]
        (0.12, 'm', 0.004, {'sec': 2, 'nanosec': 500000000})
        >>> answer_payload(Question("Is...?"), ReasoningAnswer("Is...?", "between", "Yes.", True), 0, "", "")["value"]
        'yes'
    """
    value = answer.value
    unit = None
    if isinstance(value, bool):
        value = "yes" if value else "no"
    elif isinstance(value, (int, float)):
        value, unit = float(value), "m"
    return {"id": q.id, "question": q.question, "valid": answer.valid, "reason": answer.reason, "text": answer.text,
            "value": value, "unit": unit,
            "uncertainty_m": answer.uncertainty_m if unit and math.isfinite(answer.uncertainty_m) else None,
            "kind": answer.kind, "planner": answer.planner, "stamp": _stamp(stamp_ns), "frame_id": frame_id,
            "state": state, "latency_ms": 1e3 * (time.monotonic() - q.received), "trace": answer.to_json()}


def dumps(payload: Mapping[str, Any]) -> str:
    """Strict JSON text of a payload (NaN as null)."""
    return json.dumps(json_safe(payload), allow_nan=False)


class QuestionDesk:
    """Answers questions one at a time on a daemon thread of its own.

    Args:
        answer: question -> answer payload; runs on the desk's thread (an exception becomes an
            ``internal_error`` answer).
        publish: sends a payload (called from the desk's thread, and from the caller's for refusals).
        on_error: told about an exception ``answer`` raised (for the log), with its traceback text.
        size: questions that may wait.
    """

    def __init__(self, answer: Callable[[Question], dict[str, Any]], publish: Callable[[dict[str, Any]], None],
                 on_error: Callable[[str], None] | None = None, size: int = QUEUE_SIZE) -> None:
        self._answer = answer
        self._publish = publish
        self._on_error = on_error
        self._queue: queue.Queue[Question | None] = queue.Queue(maxsize=size)
        self._thread = threading.Thread(target=self._run, name="question_desk", daemon=True)
        self._thread.start()

    def submit(self, q: Question, state: str) -> bool:
        """Queue ``q``; a full queue is answered ``busy`` at once (returns False)."""
        try:
            self._queue.put_nowait(q)
            return True
        except queue.Full:
            self._publish(refusal(q, "busy", f"{self._queue.maxsize} questions are waiting; ask again later", state))
            return False

    def _run(self) -> None:
        while True:
            q = self._queue.get()
            if q is None:
                return
            try:
                payload = self._answer(q)
            except Exception as err:   # noqa: BLE001 - a question never takes the desk down
                if self._on_error is not None:
                    self._on_error("".join(traceback.format_exception(err)).rstrip())
                payload = refusal(q, "internal_error", f"{type(err).__name__}: {err}", "")
            try:
                self._publish(payload)
            except Exception as err:   # noqa: BLE001 - e.g. the context is shutting down
                if self._on_error is not None:
                    self._on_error(f"could not publish an answer: {type(err).__name__}: {err}")

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop after the question being answered (waiting ones are dropped)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=timeout_s)
