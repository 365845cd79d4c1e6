"""A small OpenAI-compatible chat server on 127.0.0.1 for the collect tests and benchmark.

``POST /v1/chat/completions`` answers deterministically from the model name and the last user
message. Models:

* ``good`` — answers "What is A plus B?" with ``The answer is <A+B>.``, "Spell W backwards." with
  ``Backwards: W`` (wrong), anything else with ``ok: <prompt>``.
* ``sloppy`` — like ``good`` but one too many when A is odd, and it spells backwards right.
* ``flaky`` — like ``good``, but the first request for each prompt gets HTTP 429 (with a
  ``Retry-After`` header when the server was given ``retry_after``).
* ``slow`` — like ``good`` after sleeping ``slow_seconds`` (to trip a client timeout).
* ``locked`` — always HTTP 401.
* ``judge`` — replies ``Looks right. SCORE: 1`` when the answer to grade holds the reference,
  ``SCORE: 0`` when not, and ``I cannot say.`` when the prompt contains "unparseable".
* ``flaky-judge`` — like ``judge``, but the first request for each prompt gets HTTP 429.

Requests need ``Authorization: Bearer <api_key>`` (HTTP 401 otherwise; ``api_key=None``: a keyless
server, which ignores the header). ``usage`` counts whitespace-separated words. An answer is cut to
``max_tokens`` words when the request has that field (as llama.cpp reads it); ``max_completion_tokens``
is ignored, as llama.cpp ignores it (``honour_max_tokens=False``: both are ignored). :attr:`OpenAIServer.bodies`
holds every request body received. :attr:`OpenAIServer.requests` counts requests per (model, prompt), and
:attr:`OpenAIServer.times` holds when each arrived (``time.monotonic()``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SUM = re.compile(r"What is (\d+) plus (\d+)\?")
_SPELL = re.compile(r"Spell (\w+) backwards\.")


def answer_for(model: str, prompt: str) -> str:
    """The deterministic answer of ``model`` to ``prompt``."""
    if model in ("judge", "flaky-judge"):
        if "unparseable" in prompt:
            return "I cannot say."
        reference = re.search(r"Reference answer:\n(.*)\n", prompt)
        graded = re.search(r"Answer to grade:\n(.*)", prompt, re.S)
        right = reference and graded and reference.group(1).strip() in graded.group(1)
        return f"Looks {'right' if right else 'wrong'}. SCORE: {1 if right else 0}"
    spell = _SPELL.search(prompt)
    if spell:  # good spells it forwards (wrong); every other model backwards
        word = spell.group(1)
        return f"Backwards: {word if model == 'good' else word[::-1]}"
    match = _SUM.search(prompt)
    if not match:
        return f"ok: {prompt}"
    a, b = int(match.group(1)), int(match.group(2))
    total = a + b + (1 if model == "sloppy" and a % 2 else 0)
    return f"The answer is {total}."


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # many clients connect at once; the default backlog of 5 drops some
    daemon_threads = True


class OpenAIServer:
    """Start with ``with OpenAIServer() as server:``; ``server.base_url`` ends in ``/v1``.

    Args:
        api_key: The key requests must carry.
        slow_seconds: How long model ``slow`` sleeps.
        delay: Seconds every answer waits (to make a run last long enough to kill it).
        retry_after: The ``Retry-After`` header (a string, as sent) of ``flaky``'s 429, or ``None`` for none.
    """

    def __init__(self, *, api_key: str | None = "test-key", slow_seconds: float = 2.0, delay: float = 0.0,
                 retry_after: str | None = None, honour_max_tokens: bool = True) -> None:
        self.api_key = api_key
        self.honour_max_tokens = honour_max_tokens
        self.bodies: list[dict[str, Any]] = []
        self.slow_seconds = slow_seconds
        self.delay = delay
        self.retry_after = retry_after
        self.requests: Counter[tuple[str, str]] = Counter()
        self.times: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):  # a client that timed out and left
                    pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                try:
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    self.close_connection = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                model = body.get("model", "")
                prompt = next((m.get("content", "") for m in reversed(body.get("messages", []))
                               if m.get("role") == "user"), "")
                if isinstance(prompt, list):
                    prompt = " ".join(p.get("text", "") for p in prompt if isinstance(p, dict))
                with server._lock:
                    server.bodies.append(body)
                    server.requests[(model, prompt)] += 1
                    server.times.setdefault((model, prompt), []).append(time.monotonic())
                    count = server.requests[(model, prompt)]
                keyed = server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}"
                if not keyed or model == "locked":
                    self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})
                    return
                if model in ("flaky", "flaky-judge") and count == 1:
                    self._send(429, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}},
                               {"Retry-After": server.retry_after} if server.retry_after is not None else None)
                    return
                if model == "slow":
                    time.sleep(server.slow_seconds)
                if server.delay:
                    time.sleep(server.delay)
                text = answer_for(model, prompt)
                if server.honour_max_tokens and isinstance(body.get("max_tokens"), int):
                    text = " ".join(text.split()[:body["max_tokens"]])
                usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                self._send(200, {"id": f"chatcmpl-{count}", "object": "chat.completion", "created": 0, "model": model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": usage})

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def count(self, model: str, prompt: str | None = None) -> int:
        """Requests for ``model`` (and ``prompt``)."""
        with self._lock:
            return sum(n for (m, p), n in self.requests.items() if m == model and (prompt is None or p == prompt))

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


if __name__ == "__main__":  # a server for the cookbook or by hand: prints its base URL, runs until killed
    import sys

    with OpenAIServer(delay=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as running:
        print(running.base_url, flush=True)
        threading.Event().wait()
