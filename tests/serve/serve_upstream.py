"""A local OpenAI-compatible upstream for the serve tests, cookbook and benchmark (127.0.0.1, any port).

Every model answers; what it does is set per request by a system message
``upstream-test: {"<model>": "<behaviour>", ...}`` (routing never reads system messages, so the
directive changes no decision). Behaviours: ``"500"``, ``"429"`` (with ``Retry-After: 0``), ``"401"``
(a bad key), ``"400"`` (the request's fault), ``"stall"`` (waits ``stall_seconds`` before anything),
``"echo"`` (answers with the JSON body it received), ``"slow-stream"`` (streams one word every 0.3 s).
Without one, a model answers:

* with tools and a last user turn: a call of the first tool with ``{"x": 2}``; after a tool result:
  ``tool said: <result>``;
* with ``response_format`` ``json_schema``: an object of the schema's properties (strings ``"ok"``,
  numbers ``4``, booleans ``true``); ``json_object``: ``{"answer": "ok"}``;
* else ``<model> says: <last user text>``.

``stream: true`` sends the answer word by word as server-sent events (``stream_options.include_usage``
adds the usage chunk) and ``data: [DONE]``. Every answer waits ``delay`` seconds first. Requests need
``Authorization: Bearer <api_key>``. :attr:`Upstream.bodies` holds the bodies received.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DIRECTIVE = "upstream-test:"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def behaviour(body: dict[str, Any]) -> str | None:
    for message in body.get("messages", []):
        text = _text(message.get("content")) if message.get("role") == "system" else ""
        if text.startswith(DIRECTIVE):
            return json.loads(text[len(DIRECTIVE):]).get(body.get("model"))
    return None


def reply(body: dict[str, Any], what: str | None = None) -> dict[str, Any]:
    """The assistant message ``body`` gets (content and, for tools, tool calls)."""
    model, messages = body.get("model", ""), body.get("messages", [])
    last = messages[-1] if messages else {}
    if what == "echo":
        return {"role": "assistant", "content": json.dumps(body, sort_keys=True)}
    if body.get("tools") and last.get("role") == "user":
        name = body["tools"][0]["function"]["name"]
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps({"x": 2})}}]}
    if last.get("role") == "tool":
        return {"role": "assistant", "content": f"tool said: {_text(last.get('content'))}"}
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        props = fmt["json_schema"]["schema"].get("properties", {})
        value = {k: {"string": "ok", "integer": 4, "number": 4, "boolean": True}.get(v.get("type"), "ok")
                 for k, v in props.items()}
        return {"role": "assistant", "content": json.dumps(value)}
    if fmt.get("type") == "json_object":
        return {"role": "assistant", "content": json.dumps({"answer": "ok"})}
    user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    return {"role": "assistant", "content": f"{model} says: {user}"}


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


class Upstream:
    """Start with ``with Upstream() as up:``; ``up.base_url`` ends in ``/v1``."""

    def __init__(self, *, api_key: str = "upstream-key", delay: float = 0.0, stall_seconds: float = 5.0) -> None:
        self.api_key, self.delay, self.stall_seconds = api_key, delay, stall_seconds
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        up = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(raw)), **(headers or {})}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with up._lock:
                    up.bodies.append(body)
                if self.headers.get("Authorization") != f"Bearer {up.api_key}":
                    self._json(401, {"error": {"message": "Incorrect API key provided: bad***", "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})
                    return
                up._answer(self, body, behaviour(body))

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler

    def _answer(self, handler: Any, body: dict[str, Any], what: str | None) -> None:
        errors = {"500": (500, "server_error", None), "429": (429, "rate_limit", {"Retry-After": "0"}),
                  "401": (401, "invalid_api_key", None), "400": (400, "invalid_value", None)}
        if what in errors:
            status, code, headers = errors[what]
            handler._json(status, {"error": {"message": f"upstream says {status}", "type": "invalid_request_error",
                                             "param": None, "code": code}}, headers)
            return
        if what == "stall" or self.delay:
            time.sleep(self.stall_seconds if what == "stall" else self.delay)
        message = reply(body, what)
        words = len(json.dumps(body.get("messages", [])).split())
        usage = {"prompt_tokens": words, "completion_tokens": len(str(message.get("content")).split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        if not body.get("stream"):
            handler._json(200, {"id": "chatcmpl-up", "object": "chat.completion", "created": 0, "model": body.get("model"),
                                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                                "usage": usage})
            return
        self._stream(handler, body, message, finish, usage, pause=0.3 if what == "slow-stream" else 0.0)

    @staticmethod
    def _stream(handler: Any, body: dict[str, Any], message: dict[str, Any], finish: str, usage: dict[str, int],
                pause: float = 0.0) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 0, "model": body.get("model")}

        def send(choices: list[Any], **extra: Any) -> None:
            handler.wfile.write(f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n".encode())
            handler.wfile.flush()

        send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            send([{"index": 0, "delta": {"tool_calls": [{"index": 0, **call}]}, "finish_reason": None}])
        else:
            for i, word in enumerate(str(message["content"]).split(" ")):
                time.sleep(pause)
                send([{"index": 0, "delta": {"content": (" " if i else "") + word}, "finish_reason": None}])
        send([{"index": 0, "delta": {}, "finish_reason": finish}])
        if (body.get("stream_options") or {}).get("include_usage"):
            send([], usage=usage)
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


if __name__ == "__main__":  # for the cookbook and benchmark: prints its base URL, runs until killed
    import sys

    with Upstream(delay=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as running:
        print(running.base_url, flush=True)
        threading.Event().wait()
