"""An OpenAI-compatible chat server on 127.0.0.1 that misbehaves on purpose: the hostile collect tests and
the collect soak (``benchmarks/soak.py --collect``) drive ``tryage collect`` against it.

``POST /v1/chat/completions`` answers ``ok: <prompt>`` with ``usage`` counting words, except for these models:

* ``usage=<JSON>`` — reports ``<JSON>`` (``-5``, ``1.5``, ``"many"``) as both token counts.
* ``wait=<seconds>`` — every request gets HTTP 429 with ``Retry-After: <seconds>``.
* ``faulty...`` (any name starting so) — each request draws, from a hash of (prompt, attempt number, ``seed``), one of: HTTP 429
  (``Retry-After: 0``), HTTP 500, a truncated body (``Content-Length`` promises more than is sent, then the
  connection closes), a stall (``stall_s`` seconds of silence, then the connection closes), or the answer;
  the rates are ``faults`` (a mapping fault → probability).

A complete ``200`` answer is *billed*: ``GET /stats`` returns ``{"billed": {"<model>|<prompt>": n},
"requests": n, "cost": USD}``, the cost at ``price`` USD a token. Run as a script it prints its base URL and
serves until killed: ``python faulty_server.py [--seed N] [--stall-s S] [--faults JSON] [--price USD]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = {"429": 0.08, "500": 0.06, "truncated": 0.04, "stall": 0.02}


class _Server(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


class FaultyServer:
    """``with FaultyServer() as server:``; ``server.base_url`` ends in ``/v1``; :attr:`billed` counts answers."""

    def __init__(self, *, seed: int = 0, stall_s: float = 3.0, faults: dict[str, float] | None = None,
                 price: float = 1e-6) -> None:
        self.seed, self.stall_s, self.price = seed, stall_s, price
        self.faults = dict(FAULTS if faults is None else faults)
        self.billed: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.requests = 0
        self.cost = 0.0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"billed": dict(self.billed), "requests": self.requests, "cost": self.cost}

    def fault(self, key: str, attempt: int) -> str | None:
        """The fault of attempt ``attempt`` of ``key`` (``None``: answer it)."""
        draw = int.from_bytes(hashlib.sha256(f"{self.seed}|{key}|{attempt}".encode()).digest()[:8], "big") / 2**64
        for name, rate in self.faults.items():
            if draw < rate:
                return name
            draw -= rate
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None,
                      cut: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if cut else data)
                if cut:
                    self.wfile.flush()
                    self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._send(200, server.stats())

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                model = body.get("model", "")
                prompt = next((m.get("content", "") for m in reversed(body.get("messages", []))
                               if m.get("role") == "user"), "")
                key = f"{model}|{prompt}"
                with server._lock:
                    server.requests += 1
                    server.attempts[key] += 1
                    attempt = server.attempts[key]
                if model.startswith("wait="):
                    self._send(429, {"error": {"message": "Rate limit reached", "type": "requests"}},
                               {"Retry-After": model.split("=", 1)[1]})
                    return
                fault = server.fault(key, attempt) if model.startswith("faulty") else None
                if fault in ("429", "500"):
                    self._send(int(fault), {"error": {"message": f"injected {fault}", "type": "server_error"}},
                               {"Retry-After": "0"} if fault == "429" else None)
                    return
                if fault == "stall":
                    time.sleep(server.stall_s)
                    self.close_connection = True
                    return
                text = f"ok: {prompt}"
                tin, tout = len(prompt.split()), len(text.split())
                usage: dict[str, Any] = {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}
                if model.startswith("usage="):
                    value = json.loads(model.split("=", 1)[1])
                    usage = {"prompt_tokens": value, "completion_tokens": value, "total_tokens": value}
                answer = {"id": f"chatcmpl-{attempt}", "object": "chat.completion", "created": 0, "model": model,
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": text}}], "usage": usage}
                if fault == "truncated":
                    self._send(200, answer, cut=True)
                    return
                self._send(200, answer)
                with server._lock:
                    server.billed[key] += 1
                    server.cost += (tin + tout) * server.price

        return Handler

    def __enter__(self) -> FaultyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stall-s", type=float, default=3.0)
    parser.add_argument("--faults", default=None, help="JSON mapping fault -> probability")
    parser.add_argument("--price", type=float, default=1e-6)
    options = parser.parse_args()
    with FaultyServer(seed=options.seed, stall_s=options.stall_s, price=options.price,
                      faults=None if options.faults is None else json.loads(options.faults)) as running:
        print(running.base_url, flush=True)
        threading.Event().wait()
