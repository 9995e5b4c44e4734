"""A language model plans the atomic queries and writes the answer (SpatialVLM Section 5.3).

The model sits behind an OpenAI-compatible chat-completions API (vLLM, Ollama, llama.cpp's server).
With tool calling it receives the queries of :class:`~spatialvlm_ros.reasoning.tools.SpatialTools` as
functions and calls them; for a server without tool calling (or ``reasoning.llm.tool_calling: false``)
a plain-JSON protocol does the same: each turn the model replies with ``{"tool": ..., "args": {...}}``
or ``{"answer": ...}``. Queries are bounded (``max_steps``), requests and the whole question have
deadlines, and every query is a step of the trace.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from typing import Any, Mapping

from spatialvlm_ros.config.reasoning import LLMPlannerConfig
from spatialvlm_ros.errors import ConfigError, SpatialVLMError
from spatialvlm_ros.reasoning.planner import ReasoningAnswer, Step
from spatialvlm_ros.reasoning.tools import DIMENSIONS, RELATIONS, Measurement, SpatialTools

logger = logging.getLogger(__name__)

_OBJECT = {"type": "string", "description": "an object phrase, e.g. 'red can'"}
#: The queries, as chat-completions tool definitions.
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {"name": name, "description": doc, "parameters": {
        "type": "object", "properties": props, "required": list(props)}}}
    for name, doc, props in (
        ("objects", "List the objects in the image.", {}),
        ("distance", "Centre-to-centre distance between two objects, metres.", {"a": _OBJECT, "b": _OBJECT}),
        ("gap", "Surface-to-surface gap between two objects, metres (0 when touching).",
         {"a": _OBJECT, "b": _OBJECT}),
        ("relation", "Whether object a is <relation> object b, seen from the camera.",
         {"a": _OBJECT, "relation": {"type": "string", "enum": list(RELATIONS)}, "b": _OBJECT}),
        ("size", "The height or width of an object, metres.",
         {"a": _OBJECT, "dimension": {"type": "string", "enum": list(DIMENSIONS)}}),
    )
]

_SYSTEM = ("You answer spatial questions about one image by measuring. Break the question into simple "
           "queries, make them with the tools, then answer in one or two sentences with the numbers you used. "
           "Distances are in metres.")
_JSON_PROTOCOL = ("Tools: "
                  + "; ".join(f"{t['function']['name']}({', '.join(t['function']['parameters']['properties'])}): "
                              f"{t['function']['description']}" for t in TOOLS)
                  + ". Reply with exactly one JSON object per turn: {\"tool\": NAME, \"args\": {...}} to make a query, "
                    "or {\"answer\": TEXT} when you know the answer.")


class LLMError(SpatialVLMError, RuntimeError):
    """The planner's language model gave no usable reply (unreachable, HTTP error, malformed, deadline)."""


class _ToolsRefused(LLMError):
    """The server rejected the request's tools (no tool calling): switch to the JSON protocol."""


def _first_json_object(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
        start = text.find("{", start + 1)
    return None


class LLMPlanner:
    """Answers any spatial question by letting a language model call the tools.

    Args:
        config: the server, the model and the bounds.

    Raises:
        ConfigError: ``config.api_key_env`` names a variable that is not set.
    """

    name = "llm"

    def __init__(self, config: LLMPlannerConfig) -> None:
        self.config = config
        self.endpoint = config.url.rstrip("/") + "/chat/completions"
        self._api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if config.api_key_env and not self._api_key:
            raise ConfigError(f"reasoning.llm.api_key_env: environment variable {config.api_key_env!r} is not set")

    def __repr__(self) -> str:
        return f"LLMPlanner(model={self.config.model!r}, endpoint={self.endpoint!r})"

    # ------------------------------------------------------------------ transport

    def _complete(self, messages: list[dict[str, Any]], deadline: float, tools: bool) -> dict[str, Any]:
        """The assistant message of one chat-completions request."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LLMError(f"no answer within reasoning.llm.timeout_s = {self.config.timeout_s} s")
        body: dict[str, Any] = {"model": self.config.model, "messages": messages,
                                "temperature": self.config.temperature}
        if tools:
            body["tools"] = TOOLS
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=min(self.config.request_timeout_s, remaining)) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read(300).decode("utf-8", "replace")
            if tools and err.code in (400, 422) and "tool" in detail.lower():
                raise _ToolsRefused(detail) from err
            raise LLMError(f"{self.endpoint}: HTTP {err.code}: {detail}") from err
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise LLMError(f"{self.endpoint}: {getattr(err, 'reason', err)}") from err
        try:
            message = json.loads(payload)["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError) as err:
            raise LLMError(f"{self.endpoint}: malformed response {payload[:200]!r}") from err
        if not isinstance(message, dict):
            raise LLMError(f"{self.endpoint}: malformed message {message!r}")
        return message

    # ------------------------------------------------------------------ tools

    @staticmethod
    def _run_tool(tools: SpatialTools, name: str, args: Mapping[str, Any]) -> Step:
        order = {"objects": (), "distance": ("a", "b"), "gap": ("a", "b"), "relation": ("a", "relation", "b"),
                 "size": ("a", "dimension")}
        if name not in order:
            return Step(name, (), Measurement(name, None, note=f"no tool {name!r}; tools: {list(order)}"))
        try:
            values = tuple(str(args[k]) for k in order[name])
        except (KeyError, TypeError):
            return Step(name, (), Measurement(name, None, note=f"{name} takes {list(order[name])}, got {args!r}"))
        if name == "objects":
            listed = tools.objects()
            return Step(name, (), Measurement("objects()", None if not listed else True, note=", ".join(listed)))
        return Step(name, values, getattr(tools, name)(*values))

    @staticmethod
    def _result_text(step: Step) -> str:
        r = step.result
        if step.tool == "objects":
            return json.dumps({"objects": r.note.split(", ") if r.note else []})
        return json.dumps({"query": r.query, "value": r.value, "sigma_m": None if r.sigma_m != r.sigma_m else r.sigma_m,
                           "note": r.note})

    # ------------------------------------------------------------------ public

    def answer(self, question: str, tools: SpatialTools, options: Mapping[str, Any] | None = None) -> ReasoningAnswer:
        """Answer ``question``; a server failure or an exhausted budget comes back as an invalid answer."""
        deadline = time.monotonic() + self.config.timeout_s
        known = ", ".join(tools.objects()) or "unknown (ask the objects tool, or name them as the question does)"
        user = f"{question}\nObjects in the image: {known}."
        if options:
            user += f"\nOptions: {json.dumps(dict(options))}"
        steps: list[Step] = []
        use_tools = self.config.tool_calling
        messages: list[dict[str, Any]] = [{"role": "system", "content": _SYSTEM if use_tools else
                                           f"{_SYSTEM} {_JSON_PROTOCOL}"}, {"role": "user", "content": user}]
        try:
            while True:
                try:
                    message = self._complete(messages, deadline, use_tools)
                except _ToolsRefused:
                    logger.info("%s refused tool calling; using the JSON protocol", self.endpoint)
                    use_tools = False
                    messages[0] = {"role": "system", "content": f"{_SYSTEM} {_JSON_PROTOCOL}"}
                    continue
                calls, final = self._read(message, use_tools)
                if final is not None and not calls:
                    return ReasoningAnswer(question, "llm", final, final, steps=steps, planner=self.name)
                if len(steps) + len(calls) > self.config.max_steps:
                    return ReasoningAnswer(question, "llm", "I cannot tell: too many queries.", valid=False,
                                           reason="max_steps", steps=steps, planner=self.name)
                messages.append(message if use_tools else {"role": "assistant", "content": message.get("content")})
                for call_id, name, args in calls:
                    step = self._run_tool(tools, name, args)
                    steps.append(step)
                    reply = self._result_text(step)
                    messages.append({"role": "tool", "tool_call_id": call_id, "content": reply} if use_tools
                                    else {"role": "user", "content": f"Result: {reply}"})
        except LLMError as err:
            reason = "timeout" if "within" in str(err) or "timed out" in str(err) else "backend_error"
            return ReasoningAnswer(question, "llm", f"I cannot tell: {err}", valid=False, reason=reason, steps=steps,
                                   planner=self.name)

    @staticmethod
    def _read(message: dict[str, Any], use_tools: bool) -> tuple[list[tuple[str, str, dict[str, Any]]], str | None]:
        """The tool calls of an assistant message and its final text (None when it only calls tools)."""
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        if use_tools:
            calls = []
            for i, call in enumerate(message.get("tool_calls") or []):
                fn = call.get("function", {}) if isinstance(call, dict) else {}
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except (ValueError, RecursionError):
                    args = {}
                calls.append((str(call.get("id", f"call_{i}")), str(fn.get("name", "")),
                              args if isinstance(args, dict) else {}))
            return calls, (text.strip() or None) if not calls else None
        obj = _first_json_object(text)
        if obj is None:
            return [], re.sub(r"\s+", " ", text).strip() or "I cannot tell."
        if "answer" in obj:
            return [], str(obj["answer"])
        args = obj.get("args") if isinstance(obj.get("args"), dict) else {}
        return [("json", str(obj.get("tool", "")), args)], None
