"""The HTTP face of ``tryage serve``: OpenAI's chat-completions protocol plus routing and feedback.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``, ``POST /v1/route``,
``POST /v1/feedback``, ``GET /v1/router``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.
Every error is ``{"error": {"message", "type", "param", "code"}}`` with its HTTP status; no stack
trace ever reaches a client (it goes to the server log).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tryage.errors import QTableError, ServeRequestError, UpstreamError
from tryage.serve.options import RouteOptions
from tryage.serve.service import Relay, Routed, Service

log = logging.getLogger("tryage.serve")
access = logging.getLogger("tryage.serve.access")
_OPEN = frozenset({"/healthz", "/readyz", "/metrics"})
_MAX_PROMPTS = 1024


def error_body(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error_response(exc: ServeRequestError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse(error_body(exc.status, str(exc), exc.kind, exc.param, exc.code), exc.status, headers=headers)


def _upstream_response(exc: UpstreamError) -> JSONResponse:
    if isinstance(exc.body, dict) and isinstance(exc.body.get("error"), dict):
        return JSONResponse(exc.body, exc.status or 502)  # the expert's own words about the request
    timed_out = exc.status is None and "within" in str(exc)
    status = 504 if timed_out else 502
    return JSONResponse(error_body(status, f"no expert could answer: {exc}", "server_error", None,
                                   "upstream_timeout" if timed_out else "upstream_error"), status)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: 413 past ``limit`` bytes (read no further), 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServeRequestError(413, f"request body of {declared} bytes is over this server's limit of {limit}",
                                code="request_too_large")
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ServeRequestError(413, f"request body is over this server's limit of {limit} bytes",
                                        code="request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:  # half a body, then the client left: nobody is there to read an answer
        raise ServeRequestError(400, "the client closed the connection before sending the whole body",
                                code="client_disconnected") from None
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise ServeRequestError(400, "the request body is not valid JSON", code="invalid_json") from None


def _check_chat(body: Any) -> None:
    if not isinstance(body, dict):
        raise ServeRequestError(400, "the request body must be a JSON object", code="invalid_body")
    if not isinstance(body.get("model"), str):
        raise ServeRequestError(400, "'model' is required: 'tryage' to route, or an expert's name", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ServeRequestError(400, "'messages' must be a non-empty list of messages", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ServeRequestError(400, f"messages[{i}] must be an object with a 'role'", param=f"messages[{i}]")
    if not isinstance(body.get("stream", False), bool):
        raise ServeRequestError(400, "'stream' must be true or false", param="stream")


def create_app(service: Service, *, api_keys: frozenset[str] = frozenset()) -> FastAPI:
    """The FastAPI app over ``service``; ``api_keys`` empty: no key needed."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="tryage serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    _handlers(app, service)
    app.add_middleware(_Guard, service=service, api_keys=api_keys)
    _routes(app, service)
    return app


def _handlers(app: FastAPI, service: Service) -> None:
    @app.exception_handler(ServeRequestError)
    async def _request_error(request: Request, exc: ServeRequestError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(UpstreamError)
    async def _upstream_error(request: Request, exc: UpstreamError) -> JSONResponse:
        return _upstream_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"no endpoint {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(error_body(exc.status_code, message, kind), exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body(500, "internal error; the server log has the details", "server_error"), 500)


class _Guard:
    """API keys, the request counter and the access log, as plain ASGI (no per-request task or buffer).

    The access line is written when the response has ended (a stream: when its last event is sent).
    """

    def __init__(self, app: Any, service: Service, api_keys: frozenset[str]) -> None:
        self.app, self.service = app, service
        self.keys = [k.encode() for k in api_keys]

    def _authorized(self, scope: Mapping[str, Any]) -> bool:
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        token = given[7:].strip() if given[:7].lower() == b"bearer " else b""
        return any(hmac.compare_digest(token, k) for k in self.keys)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        info: dict[str, Any] = {}
        scope.setdefault("state", {})["info"] = info  # request.state.info in the endpoints
        status = [500]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        path = scope["path"]
        if self.keys and path not in _OPEN and not self._authorized(scope):
            self.service.metrics.rejections.labels("unauthorized").inc()
            response = JSONResponse(error_body(
                401, "Incorrect API key provided: give 'Authorization: Bearer <key>' with a key of this server",
                code="invalid_api_key"), 401)
            await response(scope, receive, send_status)
        else:
            try:
                await self.app(scope, receive, send_status)
            finally:
                if path.startswith("/v1/"):
                    self.service.metrics.requests.labels(path, info.get("expert") or "", str(status[0])).inc()
        _access(scope, status[0], started, info)


def _access(scope: Mapping[str, Any], status: int, started: float, info: Mapping[str, Any]) -> None:
    if not access.handlers:
        return
    client = scope.get("client")
    line = {"time": round(time.time(), 3), "method": scope["method"], "path": scope["path"], "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 2), "client": client[0] if client else None, **info}
    access.info(json.dumps(line, ensure_ascii=False))


def _routes(app: FastAPI, service: Service) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if service.closing:
            return JSONResponse({"status": "shutting down"}, 503)
        return JSONResponse({"status": "ready", "experts": list(service.upstreams)})

    @app.get("/metrics")
    async def metrics() -> Response:
        data, content_type = service.metrics.render()
        return Response(data, media_type=content_type)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = ["tryage", *service.upstreams]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "tryage"}
                                           for n in names]}

    @app.get("/v1/router")
    async def router_state() -> dict[str, Any]:
        learner = service.learner
        return {"experts": list(service.router.experts), "served": list(service.upstreams),
                "version": learner.version, "feedback_rows": learner.logged, "pending": learner.pending,
                "read_only": learner.read_only}

    _chat_route(app, service)
    _route_and_feedback(app, service)


def _options(service: Service, body: Mapping[str, Any], request: Request) -> RouteOptions:
    return RouteOptions.parse(body.get("tryage"), request.headers, experts=tuple(service.upstreams),
                              check_weights=service.router.constraints.check_weights)


def _chat_route(app: FastAPI, service: Service) -> None:
    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        service.enter()
        streaming = False
        try:
            body = await read_json(request, service.config.max_body_bytes)
            _check_chat(body)
            thread = request.headers.get("x-tryage-thread") or (body.get("user") if isinstance(body.get("user"), str) else None)
            routed = await service.route_chat(body, _options(service, body, request), thread)
            request.state.info.update({"decision_id": routed.decision_id, "stream": bool(body.get("stream"))})
            if service.config.log_prompts:
                request.state.info["prompt"] = routed.prompt
            if body.get("stream"):
                relay = await service.stream(body, routed)
                streaming = True
                return _Relayed(relay, service, _headers(request, routed))
            answer = await service.complete(body, routed)
            return JSONResponse(answer, headers=_headers(request, routed))
        finally:
            if not streaming:
                service.leave()


class _Relayed(StreamingResponse):
    """An expert's stream as server-sent events; however it ends (finished, broken, the client gone, never
    started), the expert's slot and connection are freed and the request leaves the in-flight count."""

    def __init__(self, relay: Relay, service: Service, headers: dict[str, str]) -> None:
        super().__init__(relay.chunks(), media_type="text/event-stream", headers=headers)
        self.relay, self.service = relay, service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.relay.close()
            self.service.leave()


def _headers(request: Request, routed: Routed) -> dict[str, str]:
    request.state.info.update({"expert": routed.expert, "fallback_from": routed.tried or None})
    headers = {"x-tryage-expert": routed.expert, "x-tryage-decision-id": routed.decision_id,
               "Cache-Control": "no-cache"}
    if routed.tried:
        headers["x-tryage-fallback-from"] = ",".join(routed.tried)
    return headers


def _route_and_feedback(app: FastAPI, service: Service) -> None:
    @app.post("/v1/route")
    async def route(request: Request) -> dict[str, Any]:
        body = await read_json(request, service.config.max_body_bytes)
        if not isinstance(body, dict):
            raise ServeRequestError(400, "the request body must be a JSON object", code="invalid_body")
        texts = _route_texts(body, service)
        decisions = await service.decide(texts, _options(service, body, request))
        out = []
        for decision in decisions:
            decision_id = service.decisions.new_id()
            service.decisions.put(decision_id, decision.prompt, decision.expert)
            out.append({"decision_id": decision_id, **decision.to_dict()})
        return {"object": "list", "data": out}

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        if service.learner.read_only:
            raise ServeRequestError(403, "this server takes no feedback (--read-only)", kind="permission_error",
                                    code="read_only")
        body = await read_json(request, service.config.max_body_bytes)
        items = body if isinstance(body, list) else [body]
        if not items or len(items) > _MAX_PROMPTS:
            raise ServeRequestError(400, f"send 1 to {_MAX_PROMPTS} feedback rows", code="invalid_body")
        rows = [_feedback_row(item, i if isinstance(body, list) else None, service) for i, item in enumerate(items)]
        await service.feedback(rows)
        return {"object": "feedback", "logged": len(rows), "pending": service.learner.pending,
                "router_version": service.learner.version}


def _route_texts(body: Mapping[str, Any], service: Service) -> list[str]:
    given = [k for k in ("prompt", "prompts", "messages") if k in body]
    if len(given) != 1:
        raise ServeRequestError(400, "give exactly one of 'prompt', 'prompts' or 'messages'", param="prompt")
    if "prompt" in body:
        texts = [body["prompt"]]
    elif "prompts" in body:
        texts = body["prompts"]
        if not isinstance(texts, list) or not 1 <= len(texts) <= _MAX_PROMPTS:
            raise ServeRequestError(400, f"'prompts' must be a list of 1 to {_MAX_PROMPTS} strings", param="prompts")
    else:
        from tryage.conversation import EarlierTurns
        from tryage.serve.routing import conversation_text

        _check_chat({"model": "tryage", "messages": body["messages"]})
        texts = [conversation_text(body["messages"], EarlierTurns(service.router.parse))[0]]
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ServeRequestError(400, f"prompt {i} must be a string, got {type(text).__name__}", param="prompts")
    return texts


def _feedback_row(item: Any, index: int | None, service: Service) -> dict[str, Any]:
    from tryage.feedback import Feedback

    where = "" if index is None else f"row {index}: "
    if not isinstance(item, dict):
        raise ServeRequestError(400, f"{where}a feedback row is an object", code="invalid_feedback")
    row = dict(item)
    if "decision_id" in row and "prompt" not in row:
        known = service.decisions.get(str(row["decision_id"]))
        if known is None:
            raise ServeRequestError(404, f"{where}unknown or expired decision_id {row['decision_id']!r:.80}; send "
                                         "{prompt, expert, score} instead", param="decision_id", code="decision_not_found")
        row.update(prompt=known.prompt, expert=row.get("expert", known.expert))
    try:
        parsed = Feedback.from_dict(row)
    except QTableError as exc:
        raise ServeRequestError(400, where + str(exc), code="invalid_feedback") from None
    if parsed.expert not in service.router.experts:
        raise ServeRequestError(400, f"{where}unknown expert {parsed.expert!r:.80}; the router's experts are "
                                     f"{', '.join(service.router.experts)}", param="expert", code="invalid_feedback")
    out = {"prompt": parsed.prompt, "expert": parsed.expert, "loss": parsed.loss}
    if "decision_id" in row:
        out["decision_id"] = str(row["decision_id"])
    return out


__all__ = ["create_app", "error_body", "read_json"]
