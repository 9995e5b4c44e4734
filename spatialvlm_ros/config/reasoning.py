"""Settings of chain-of-thought reasoning (``reasoning.*``): which planner, and the language model's server."""

from __future__ import annotations

import dataclasses
from typing import Literal

from spatialvlm_ros.config.schema import require


@dataclasses.dataclass(frozen=True)
class LLMPlannerConfig:
    """A language model behind an OpenAI-compatible chat-completions API that plans the queries (``reasoning.llm.*``).

    Attributes:
        url: base URL of the API (``.../v1``); ``/chat/completions`` is appended.
        model: model name the server knows.
        api_key_env: name of the environment variable holding the API key ("" = no authentication).
        tool_calling: use the API's tool calling; off (or a server that refuses tools) = a plain-JSON protocol.
        max_steps: most queries (tool calls) per question.
        timeout_s: deadline for the whole question, seconds.
        request_timeout_s: deadline for one request, seconds.
        temperature: sampling temperature (0 = greedy).
    """

    url: str = "http://127.0.0.1:8000/v1"
    model: str = "Qwen/Qwen2.5-7B-Instruct"
    api_key_env: str = ""
    tool_calling: bool = True
    max_steps: int = 8
    timeout_s: float = 60.0
    request_timeout_s: float = 20.0
    temperature: float = 0.0

    def __post_init__(self) -> None:
        key = "reasoning.llm."
        require(self.url.startswith(("http://", "https://")), key + "url", f"must be an http(s) URL, got {self.url!r}")
        require(bool(self.model), key + "model", "must name the model")
        require(self.max_steps >= 1, key + "max_steps", "must be >= 1")
        require(self.timeout_s > 0, key + "timeout_s", "must be > 0")
        require(self.request_timeout_s > 0, key + "request_timeout_s", "must be > 0")
        require(self.temperature >= 0, key + "temperature", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class ReasoningConfig:
    """How composite spatial questions are answered (``reasoning.*``).

    Attributes:
        planner: ``deterministic`` (rules for the common composite questions, no language model) or ``llm``.
        opening_m: the gripper's finger opening, metres, for "does the gripper fit between A and B?".
        llm: the language model of the ``llm`` planner.
    """

    planner: Literal["deterministic", "llm"] = "deterministic"
    opening_m: float = 0.08
    llm: LLMPlannerConfig = LLMPlannerConfig()

    def __post_init__(self) -> None:
        require(self.opening_m > 0, "reasoning.opening_m", "must be > 0")
