"""A local OpenAI-compatible chat-completions endpoint for tests (the real path: vLLM, Ollama, llama.cpp).

:class:`ChatCompletionsServer` serves real HTTP on 127.0.0.1 (an ephemeral port) in a background thread and
hands each POST's JSON body to :meth:`~ChatCompletionsServer.reply`, which a test's subclass writes.
"""

from __future__ import annotations

import json
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(text: str, model: str = "") -> dict[str, Any]:
    """A chat-completions response body whose one choice says ``text``."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}


class ChatCompletionsServer:
    """Real HTTP on 127.0.0.1; each POST is answered by :meth:`reply`. Close with :meth:`close`."""

    def __init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload = server.reply(self.path, self.headers, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reply(self, path: str, headers: Message, body: dict[str, Any]) -> tuple[int, dict[str, Any] | bytes]:
        """The HTTP status and the JSON body (or raw bytes) that answer one request (``headers``: any case)."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The API base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        """Stop serving and free the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
