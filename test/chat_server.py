"""A local OpenAI-compatible chat-completions endpoint for tests (the real path: vLLM, Ollama, llama.cpp).

:class:`ChatCompletionsServer` serves real HTTP on 127.0.0.1 (an ephemeral port, or one given) in a background
thread and hands each POST's JSON body to :meth:`~ChatCompletionsServer.reply`, which a test's subclass writes.

It can also misbehave the way real servers and networks do, for the fault-injection tests: a reply may be
:class:`Trickle` (the answer one byte at a time), :class:`Hang` (accept, then say nothing) or :class:`Drop`
(close the connection without an answer), and :meth:`~ChatCompletionsServer.stop_listening` /
:meth:`~ChatCompletionsServer.start_listening` close and reopen the port (connection refused meanwhile).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union


def completion(text: str, model: str = "") -> dict[str, Any]:
    """A chat-completions response body whose one choice says ``text``."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}


@dataclass(frozen=True)
class Trickle:
    """Answer 200 with ``payload``, one byte every ``interval_s`` (Content-Length announced up front)."""

    payload: bytes
    interval_s: float = 1.0


@dataclass(frozen=True)
class Hang:
    """Read the request, then send nothing for ``seconds`` (or until the server closes)."""

    seconds: float


@dataclass(frozen=True)
class Drop:
    """Close the connection without any response."""


Reply = Union[tuple[int, Union[dict[str, Any], bytes]], Trickle, Hang, Drop]


class ChatCompletionsServer:
    """Real HTTP on 127.0.0.1; each POST is answered by :meth:`reply`. Close with :meth:`close`.

    Args:
        port: the port to listen on (0 = an ephemeral one).
    """

    def __init__(self, port: int = 0) -> None:
        self.closing = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None
        self._port = port
        self._lock = threading.Lock()
        self.start_listening()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"unreadable": raw[:100].decode("latin-1")}
                answer = server.reply(self.path, self.headers, body)
                try:
                    self._send(answer)
                except OSError:
                    pass  # the client gave up (a timeout or deadline test)

            def _send(self, answer: Reply) -> None:
                if isinstance(answer, Drop):
                    self.close_connection = True
                    return
                if isinstance(answer, Hang):
                    server.closing.wait(answer.seconds)
                    self.close_connection = True
                    return
                if isinstance(answer, Trickle):
                    status, data, interval = 200, answer.payload, answer.interval_s
                else:
                    status, payload = answer
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    interval = 0.0
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not interval:
                    self.wfile.write(data)
                    return
                for i in range(len(data)):
                    if server.closing.wait(interval):
                        return
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start_listening(self) -> None:
        """Open the port again (the same one after :meth:`stop_listening`)."""
        with self._lock:
            if self.httpd is not None:
                return
            deadline = time.monotonic() + 5.0
            while True:
                try:
                    httpd = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler())
                    break
                except OSError:   # the old socket may linger for a moment
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            httpd.daemon_threads = True
            self._port = httpd.server_address[1]
            self.httpd = httpd
            threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def stop_listening(self) -> None:
        """Close the port: new connections are refused until :meth:`start_listening`."""
        with self._lock:
            httpd, self.httpd = self.httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def reply(self, path: str, headers: Message, body: dict[str, Any]) -> Reply:
        """The HTTP status and the JSON body (or raw bytes) that answer one request (``headers``: any case).

        Or a misbehaviour: :class:`Trickle`, :class:`Hang`, :class:`Drop`.
        """
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The API base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self._port}/v1"

    def close(self) -> None:
        """Stop serving, end any trickle or hang, and free the port."""
        self.closing.set()
        self.stop_listening()
