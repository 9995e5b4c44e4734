"""A spatial VLM served behind an OpenAI-compatible chat-completions API (vLLM, Ollama, llama.cpp server).

Example server: ``vllm serve remyxai/SpaceQwen2.5-VL-3B-Instruct --port 8000``, then
``estimator.backend: vlm`` with ``estimator.vlm.url: http://127.0.0.1:8000/v1``.

preprocess (RGB -> PNG data URL, request body) -> forward (one HTTP POST, with retries) ->
postprocess (the message text, parsed). Only the standard library talks HTTP (``urllib.request``).
The depth image is not sent: chat-completions APIs take colour images only.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import cv2
import numpy as np

from spatialvlm_ros.errors import ConfigError, InputError
from spatialvlm_ros.config import OpenAIVLMConfig
from spatialvlm_ros.vlm.base import VLMAnswer, VLMError, VLMTimeoutError
from spatialvlm_ros.vlm.parsing import parse_answer

logger = logging.getLogger(__name__)

#: HTTP statuses worth retrying: rate limited, or the server (or a proxy before it) is in trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_DELAY_S = 30.0   # upper bound on any one wait, whatever Retry-After says
_ERROR_BODY_CHARS = 300


def png_data_url(rgb: np.ndarray) -> str:
    """Encode an (H, W, 3) uint8 RGB image as a ``data:image/png;base64,...`` URL.

    Raises:
        InputError: not an (H, W, 3) uint8 image.

    Example:
        >>> url = png_data_url(np.zeros((2, 3, 3), np.uint8))
        >>> url.startswith("data:image/png;base64,iVBORw0KGgo")   # the PNG signature
        True
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"image must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    # Level 1: images are re-encoded per request, so speed matters more than a few percent of size.
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise InputError(f"cannot encode a {rgb.shape} image as PNG")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")


class _Deadline:
    """A wall-clock deadline that cuts every socket of a request when it passes (a read cannot outlast it).

    Socket timeouts bound each read; a server that trickles one byte per read would still hold a request for
    as long as it likes. At the deadline a timer shuts the request's sockets down, which ends any read
    blocked on them at once.
    """

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            self._cut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            self._cut(sock)

    @staticmethod
    def _cut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed

    def cancel(self) -> None:
        self._timer.cancel()


class _DeadlineConnection:
    """Mixin for an HTTP(S) connection whose socket the deadline watches once connected."""

    sock: Any

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._deadline.watch(self.sock)


class _DeadlineHTTPConnection(_DeadlineConnection, http.client.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_DeadlineHTTPConnection, deadline=self._deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_DeadlineHTTPSConnection, deadline=self._deadline), req,
                            context=self._context, check_hostname=self._check_hostname)


class OpenAIChatVLM:
    """A spatial VLM behind ``POST {url}/chat/completions`` (the OpenAI chat format, images as data URLs).

    Every question has a deadline (``config.timeout_s``) on its total time: connecting, sending, reading
    the whole answer, retries and their waits. 429, 5xx and connection failures are retried up to
    ``config.retries`` times with exponential backoff (a Retry-After header wins, capped at 30 s), but only
    while a retry would start within ``config.retry_budget_s`` of the first attempt and before the
    deadline; a timeout is not retried (the next frame is the better retry). Failures raise
    :class:`VLMError` (:class:`VLMTimeoutError` for a timeout), chained ``from`` the urllib error; so does
    a malformed response of any kind (not UTF-8, not JSON, nested too deeply, over
    ``config.max_response_bytes``, without ``choices[0].message.content``). An answer that states no
    distance is returned with ``parsed.valid`` False.

    Args:
        config: model, URL, sampling, timeout and retry settings.

    Raises:
        ConfigError: ``config.api_key_env`` names an environment variable that is not set.

    Example:
        >>> vlm = OpenAIChatVLM(OpenAIVLMConfig(url="http://127.0.0.1:8000/v1", model="spaceqwen"))
        >>> vlm.endpoint
        'http://127.0.0.1:8000/v1/chat/completions'
        >>> vlm.request_body(np.zeros((2, 2, 3), np.uint8), "How far?")["messages"][0]["content"][0]
        {'type': 'text', 'text': 'How far?'}
    """

    name = "openai"

    def __init__(self, config: OpenAIVLMConfig) -> None:
        self.config = config
        self.endpoint = config.url.rstrip("/") + "/chat/completions"
        self._api_key: str | None = None
        if config.api_key_env:
            self._api_key = os.environ.get(config.api_key_env)
            if not self._api_key:
                raise ConfigError(f"estimator.vlm.openai.api_key_env: environment variable {config.api_key_env!r} "
                                  "is not set")

    def __repr__(self) -> str:
        # Spelled out so the key can never reach a log through repr().
        return f"OpenAIChatVLM(model={self.config.model!r}, endpoint={self.endpoint!r})"

    # ------------------------------------------------------------------ preprocess

    def request_body(self, image: np.ndarray, question: str) -> dict[str, Any]:
        """The JSON body of one chat-completions request: the question, then the image."""
        content = [{"type": "text", "text": question},
                   {"type": "image_url", "image_url": {"url": png_data_url(image)}}]
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if self.config.system_prompt:
            messages.insert(0, {"role": "system", "content": self.config.system_prompt})
        return {"model": self.config.model, "messages": messages, "temperature": self.config.temperature,
                "max_tokens": self.config.max_tokens}

    # ------------------------------------------------------------------ forward

    def _post(self, body: dict[str, Any]) -> bytes:
        """POST ``body``; the response bytes of the first 2xx, retrying what is worth retrying, by the deadline."""
        deadline = _Deadline(self.config.timeout_s)
        try:
            return self._post_by(body, deadline)
        finally:
            deadline.cancel()

    def _timeout(self) -> VLMTimeoutError:
        return VLMTimeoutError(f"{self.endpoint}: no answer within {self.config.timeout_s} s")

    def _read(self, response: Any, deadline: _Deadline) -> bytes:
        """The whole body, at most ``max_response_bytes``; a body cut by the deadline is a timeout."""
        limit = self.config.max_response_bytes
        chunks, size = [], 0
        while True:
            chunk = response.read(min(65536, limit + 1 - size))
            size += len(chunk)
            # Over the limit is a backend error even if the deadline passed while reading it: the body is known bad.
            if size > limit:
                raise VLMError(f"{self.endpoint}: response larger than {limit} bytes "
                               "(estimator.vlm.openai.max_response_bytes)")
            if deadline.expired:
                raise self._timeout()
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def _post_by(self, body: dict[str, Any], deadline: _Deadline) -> bytes:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        opener = urllib.request.build_opener(_DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
        first = time.monotonic()
        attempt = 0
        while True:
            request = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
            retry_after: str | None = None
            try:
                if deadline.remaining() <= 0:
                    raise self._timeout()
                with opener.open(request, timeout=deadline.remaining()) as response:
                    return self._read(response, deadline)
            except VLMError:
                raise
            except urllib.error.HTTPError as err:
                if deadline.expired:
                    raise self._timeout() from err
                text = err.read(_ERROR_BODY_CHARS).decode("utf-8", "replace").strip()
                failure = VLMError(f"{self.endpoint}: HTTP {err.code} {err.reason}: {text}")
                if err.code in (401, 403):
                    failure = VLMError(f"{self.endpoint}: HTTP {err.code} (not authorised); check the key in "
                                       f"${self.config.api_key_env or '<estimator.vlm.openai.api_key_env unset>'}: "
                                       f"{text}")
                if err.code not in RETRY_STATUSES:
                    raise failure from err
                retry_after = err.headers.get("Retry-After")
                cause: Exception = err
            except TimeoutError as err:
                raise self._timeout() from err
            except urllib.error.URLError as err:
                if isinstance(err.reason, TimeoutError) or deadline.expired:
                    raise self._timeout() from err
                failure, cause = VLMError(f"cannot reach {self.endpoint}: {err.reason}"), err
            except (OSError, http.client.HTTPException) as err:
                if deadline.expired:
                    raise self._timeout() from err
                failure, cause = VLMError(f"{self.endpoint}: connection failed: {err!r}"), err
            if attempt == self.config.retries:
                raise failure from cause
            delay = self._delay(attempt, retry_after)
            if time.monotonic() + delay - first > self.config.retry_budget_s or delay >= deadline.remaining():
                raise failure from cause   # no time left for a retry: the next frame is the better one
            attempt += 1
            logger.warning("%s; retry %d/%d in %.2f s", failure, attempt, self.config.retries, delay)
            time.sleep(delay)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), _MAX_DELAY_S)
            except ValueError:
                pass  # an HTTP date: rare from model servers; fall back to the exponential delay
        return min(self.config.retry_backoff_s * 2 ** attempt, _MAX_DELAY_S)

    # ------------------------------------------------------------------ postprocess

    def _text(self, payload: bytes) -> str:
        """The assistant message of a chat-completions response."""
        try:
            response = json.loads(payload)
            content = response["choices"][0]["message"]["content"]
        except json.JSONDecodeError as err:
            raise VLMError(f"{self.endpoint}: response is not JSON: {payload[:_ERROR_BODY_CHARS]!r}") from err
        except UnicodeDecodeError as err:
            raise VLMError(f"{self.endpoint}: response is not UTF-8 text ({err.reason} at byte {err.start}): "
                           f"{payload[:_ERROR_BODY_CHARS]!r}") from err
        except RecursionError as err:
            raise VLMError(f"{self.endpoint}: response JSON is nested too deeply to read "
                           f"({len(payload)} bytes)") from err
        except (KeyError, IndexError, TypeError) as err:
            raise VLMError(f"{self.endpoint}: no choices[0].message.content in the response: "
                           f"{payload[:_ERROR_BODY_CHARS]!r}") from err
        if isinstance(content, list):  # some servers answer with content parts, like the request's
            content = "".join(part["text"] for part in content
                              if isinstance(part, dict) and isinstance(part.get("text"), str))
        # None: e.g. the whole budget went to reasoning; an empty answer, parsed as such.
        return content if isinstance(content, str) else ""

    # ------------------------------------------------------------------ public

    def ask(self, image: np.ndarray, question: str, depth: np.ndarray | None = None) -> VLMAnswer:
        """Ask one question about ``image`` ((H, W, 3) uint8 RGB); ``depth`` is not sent.

        Raises:
            VLMTimeoutError: no answer within ``config.timeout_s``.
            VLMError: unreachable after the retries, a non-retryable HTTP status, a malformed response.
            InputError: ``image`` is not (H, W, 3) uint8.
        """
        start = time.perf_counter()
        text = self._text(self._post(self.request_body(image, question)))
        latency_ms = 1e3 * (time.perf_counter() - start)
        logger.debug("%s answered %r in %.0f ms", self.config.model, text, latency_ms)
        return VLMAnswer(text=text, parsed=parse_answer(text, self.config.default_unit or None), latency_ms=latency_ms)

    def ask_batch(self, images: Sequence[np.ndarray], questions: Sequence[str],
                  depths: Sequence[np.ndarray | None] | None = None) -> list[VLMAnswer]:
        """Ask ``questions[i]`` about ``images[i]``, up to ``config.max_concurrency`` requests at once.

        Returns the answers in order; if any request fails, the ones not started are cancelled and
        the first failure (in order) is raised.
        """
        if len(images) != len(questions):
            raise InputError(f"{len(images)} images but {len(questions)} questions")
        if not questions:
            return []
        with ThreadPoolExecutor(max_workers=min(len(questions), self.config.max_concurrency),
                                thread_name_prefix="vlm") as pool:
            futures = [pool.submit(self.ask, image, question) for image, question in zip(images, questions)]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
