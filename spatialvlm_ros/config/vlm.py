"""Settings of the spatial VLM (``estimator.vlm.*``): how it is asked, and one section per backend.

Each backend section *is* that backend's options: the backend takes its section and nothing else, so
a setting of one backend cannot leak into another. Settings of the old flat layout
(``estimator.vlm.url``) fail with an error naming their new key.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import ClassVar, Literal

from spatialvlm_ros.config.schema import require

#: Unit of a bare number in an answer ("" = such answers are unparseable).
DefaultUnit = Literal["", "mm", "cm", "m", "km", "in", "ft", "yd"]
Dtype = Literal["float32", "float16", "bfloat16"]
DEFAULT_SERVED_MODEL = "remyxai/SpaceQwen2.5-VL-3B-Instruct"


def _check_unit(unit: str, key: str) -> None:
    # Literal fields are checked when loaded from YAML; a section built in code is checked here too.
    require(unit in typing.get_args(DefaultUnit), key, f"must be one of {list(typing.get_args(DefaultUnit))}")


@dataclasses.dataclass(frozen=True)
class CompactVLMConfig:
    """The in-house compact model shipped in the package (``estimator.vlm.compact.*``).

    Attributes:
        weights: weights folder from ``spatialvlm train`` ("" = the packaged ones).
        batch_size: questions answered together by one forward pass.
        max_new_tokens: answer length limit, tokens.
        temperature: 0 = greedy, else the sampling temperature.
        seed: seeds sampling (temperature > 0).
        threads: torch CPU threads (0 = leave torch's setting alone).
        default_unit: unit of a bare number in an answer ("" = such answers are unparseable).
        zoom_weights: the second look's weights folder ("" = none): a question naming two objects is asked
            again, with these weights, on a window of the frame around the two centres the first answer read
            (:mod:`spatialvlm_ros.geometry.zoom`), and that answer counts. Train them on windows
            (``spatialvlm synthesize --zoom-share 1``); frames need more pixels than the model reads for
            the window to add any (320x240 for up to 2.5x).
    """

    weights: str = ""
    batch_size: int = 4
    max_new_tokens: int = 512
    temperature: float = 0.0
    seed: int = 0
    threads: int = 0
    default_unit: DefaultUnit = ""
    zoom_weights: str = ""

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "estimator.vlm.compact.batch_size", "must be >= 1")
        require(self.threads >= 0, "estimator.vlm.compact.threads", "must be >= 0")
        _check_unit(self.default_unit, "estimator.vlm.compact.default_unit")
        require(self.max_new_tokens >= 1, "estimator.vlm.compact.max_new_tokens", "must be >= 1")
        require(self.temperature >= 0, "estimator.vlm.compact.temperature", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class OpenAIVLMConfig:
    """Any OpenAI-compatible chat-completions server: vLLM, Ollama, llama.cpp (``estimator.vlm.openai.*``).

    Attributes:
        model: model name the server knows.
        url: base URL of the API (``.../v1``); ``/chat/completions`` is appended.
        api_key_env: name of the environment variable holding the API key ("" = no authentication).
            The key itself never appears in a config, a log or an error message.
        temperature: sampling temperature (> 0 for samples to differ).
        max_tokens: answer length limit; reasoning models ("<think>") need several hundred.
        timeout_s: deadline of one question, seconds: connecting, sending and reading the whole answer,
            retries and their back-off included (a server that trickles bytes cannot stretch it).
        retries: further attempts after a 429 / 5xx / connection error (not after a timeout).
        retry_backoff_s: first retry delay, doubled each attempt (a Retry-After header wins), seconds.
        retry_budget_s: a retry is made only if it starts within this many seconds of the first attempt
            (and before the deadline); on a robot the next frame is the better retry.
        max_response_bytes: a response body larger than this is a backend error.
        max_concurrency: requests in flight at once for a batch (pairs x samples).
        default_unit: unit of a bare number in an answer ("" = such answers are unparseable).
        system_prompt: optional system message ("" = none).
    """

    model: str = DEFAULT_SERVED_MODEL
    url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = ""
    temperature: float = 0.0
    max_tokens: int = 512
    timeout_s: float = 30.0
    retries: int = 2
    retry_backoff_s: float = 0.5
    max_concurrency: int = 4
    default_unit: DefaultUnit = ""
    system_prompt: str = ""
    retry_budget_s: float = 1.0
    max_response_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        key = "estimator.vlm.openai."
        require(bool(self.model), key + "model", "must name the model")
        require(self.url.startswith(("http://", "https://")), key + "url",
                f"must be an http(s) URL, got {self.url!r}")
        require(self.temperature >= 0, key + "temperature", "must be >= 0")
        require(self.max_tokens >= 1, key + "max_tokens", "must be >= 1")
        require(self.timeout_s > 0, key + "timeout_s", "must be > 0")
        require(self.retries >= 0, key + "retries", "must be >= 0")
        require(self.retry_backoff_s >= 0, key + "retry_backoff_s", "must be >= 0")
        require(self.max_concurrency >= 1, key + "max_concurrency", "must be >= 1")
        require(self.retry_budget_s >= 0, key + "retry_budget_s", "must be >= 0")
        require(self.max_response_bytes >= 1, key + "max_response_bytes", "must be >= 1")
        _check_unit(self.default_unit, key + "default_unit")


@dataclasses.dataclass(frozen=True)
class TransformersVLMConfig:
    """An image-text-to-text checkpoint run in-process by transformers (``estimator.vlm.transformers.*``).

    Attributes:
        model: checkpoint folder (``save_pretrained``) or hub id.
        device: torch device string ("cpu", "cuda", "cuda:1").
        dtype: weight dtype; bfloat16 on a GPU.
        local_files_only: never contact the hub (``HF_HUB_OFFLINE=1`` does the same).
        trust_remote_code: run code shipped with the checkpoint (off unless you mean it).
        adapter: LoRA adapter folder from ``spatialvlm finetune`` ("" = none).
        batch_size: questions generated together.
        max_new_tokens: answer length limit, tokens.
        temperature: 0 = greedy, else the sampling temperature.
        max_time_s: generation stops after this many seconds; the text so far is the answer.
        default_unit: unit of a bare number in an answer ("" = such answers are unparseable).
        system_prompt: optional system message ("" = the chat template's default).
    """

    model: str = DEFAULT_SERVED_MODEL
    device: str = "cpu"
    dtype: Dtype = "float32"
    local_files_only: bool = False
    trust_remote_code: bool = False
    adapter: str = ""
    batch_size: int = 4
    max_new_tokens: int = 512
    temperature: float = 0.0
    max_time_s: float = 30.0
    default_unit: DefaultUnit = ""
    system_prompt: str = ""

    def __post_init__(self) -> None:
        key = "estimator.vlm.transformers."
        require(bool(self.model), key + "model", "must name the model")
        require(self.batch_size >= 1, key + "batch_size", "must be >= 1")
        require(self.max_new_tokens >= 1, key + "max_new_tokens", "must be >= 1")
        require(self.temperature >= 0, key + "temperature", "must be >= 0")
        require(self.max_time_s > 0, key + "max_time_s", "must be > 0")
        _check_unit(self.default_unit, key + "default_unit")
        require(self.dtype in typing.get_args(Dtype), key + "dtype", f"must be one of {list(typing.get_args(Dtype))}")


@dataclasses.dataclass(frozen=True)
class VLMConfig:
    """Which spatial VLM answers and how it is asked (``estimator.vlm.*``); one section per backend.

    Attributes:
        backend: ``"compact"`` (the in-house model shipped in the package; it knows the simulator's world
            only), ``"openai"`` (an OpenAI-compatible server) or ``"transformers"`` (a checkpoint in-process).
        samples: answers per pair and frame; the estimate is their mean, the uncertainty their spread
            (1 for the greedy compact model; 3-5 with temperature > 0 for a sampled large model).
        phrasing: ``fixed`` asks the first question template every time; ``sampled`` draws one per sample,
            seeded by the estimator seed and the frame stamp.
        mirror: also ask every sample on the left-right mirrored image and average over both images' answers.
            A distance is the same in a mirror image, and a model's errors on an image and on its mirror
            partly cancel (the compact model on the reach env's frames: see the README); costs twice the
            questions. The uncertainty then includes the spread between the two images' answers. Leave it
            off for phrases that say "left" or "right" (in the mirror "the left can" is the other can).
        breaker_failures: after this many frames in a row whose questions failed (no answer: unreachable,
            HTTP error, malformed response), or after one timeout, stop asking and flag every frame
            ``backend_unavailable`` at once while probing the backend in the background (0 = never).
        breaker_probe_s: while stopped, one probe question at most this often, seconds; the first answer
            resumes normal asking.
        compact, openai, transformers: each backend's own options.
    """

    backend: str = "compact"
    samples: int = 1
    phrasing: Literal["fixed", "sampled"] = "fixed"
    mirror: bool = False
    compact: CompactVLMConfig = CompactVLMConfig()
    openai: OpenAIVLMConfig = OpenAIVLMConfig()
    transformers: TransformersVLMConfig = TransformersVLMConfig()
    breaker_failures: int = 3
    breaker_probe_s: float = 1.0

    #: Keys of the old flat layout -> where they live now.
    MOVED: ClassVar[dict[str, str]] = {
        "model": "estimator.vlm.openai.model or estimator.vlm.transformers.model",
        "url": "estimator.vlm.openai.url",
        "api_key_env": "estimator.vlm.openai.api_key_env",
        "temperature": "estimator.vlm.<backend>.temperature (compact, openai or transformers)",
        "max_tokens": "estimator.vlm.openai.max_tokens or estimator.vlm.<compact|transformers>.max_new_tokens",
        "timeout_s": "estimator.vlm.openai.timeout_s or estimator.vlm.transformers.max_time_s",
        "retries": "estimator.vlm.openai.retries",
        "retry_backoff_s": "estimator.vlm.openai.retry_backoff_s",
        "max_concurrency": "estimator.vlm.openai.max_concurrency or estimator.vlm.<compact|transformers>.batch_size",
        "default_unit": "estimator.vlm.<backend>.default_unit (compact, openai or transformers)",
        "system_prompt": "estimator.vlm.openai.system_prompt or estimator.vlm.transformers.system_prompt",
        "device": "estimator.vlm.transformers.device",
        "dtype": "estimator.vlm.transformers.dtype",
        "local_files_only": "estimator.vlm.transformers.local_files_only",
        "trust_remote_code": "estimator.vlm.transformers.trust_remote_code",
        "adapter": "estimator.vlm.transformers.adapter",
        "weights": "estimator.vlm.compact.weights",
    }

    def __post_init__(self) -> None:
        require(self.samples >= 1, "estimator.vlm.samples", "must be >= 1")
        require(self.breaker_failures >= 0, "estimator.vlm.breaker_failures", "must be >= 0")
        require(self.breaker_probe_s > 0, "estimator.vlm.breaker_probe_s", "must be > 0")
