"""What the server does for a request, apart from HTTP: route, call the experts in turn, learn.

:class:`Service` owns the router in force (swapped when the learner puts a new one in force), the
micro-batcher, the endpoints and their concurrency, stickiness and the decision store. The web layer
(:mod:`tryage.serve.app`) turns requests into calls here and :class:`~tryage.errors.ServeRequestError`
into OpenAI-shaped errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tryage.constraints import Filter
from tryage.conversation import EarlierTurns, ThreadStore, blend_decisions, stick
from tryage.errors import ServeRequestError, TryageError, UpstreamError
from tryage.objective import RoutingDecision
from tryage.serve.config import ServeConfig
from tryage.serve.learner import Learner, learn_forever
from tryage.serve.metrics import Metrics
from tryage.serve.options import RouteOptions
from tryage.serve.routing import DecisionStore, MicroBatcher, conversation_text, message_text, strip_messages
from tryage.serve.upstream import Caller, Upstream, may_fall_back

log = logging.getLogger("tryage.serve")


@dataclass
class Routed:
    """One chat request on its way: the decision, the experts to try in order, what was tried."""

    decision_id: str
    prompt: str
    queue: list[str]
    messages: list[dict[str, Any]] | None
    thread: str | None = None
    tried: list[str] = field(default_factory=list)
    expert: str = ""


class Service:
    """Routing, calling and learning for one server (see the module doc)."""

    def __init__(self, config: ServeConfig, router: Any, upstreams: Mapping[str, Upstream], learner: Learner) -> None:
        self.config = config
        self.router = router
        self.upstreams = dict(upstreams)
        self.learner = learner
        self.metrics = Metrics()
        self.decisions = DecisionStore()
        self.threads = ThreadStore()
        self.batcher = MicroBatcher(lambda: self.router, window=config.batch_window_ms / 1000.0,
                                    max_batch=config.max_batch, on_batch=self.metrics.batch_size.observe)
        self.in_flight = 0
        self.busy = {name: 0 for name in self.upstreams}
        self.closing = False
        self.client: Any = None
        self.caller: Caller | None = None
        self._wake: asyncio.Event | None = None
        self._learning: asyncio.Task | None = None
        self._learn_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tryage-learn")
        self._served = Filter(experts=tuple(self.upstreams)) if set(self.upstreams) != set(router.experts) else None

    # -- life -------------------------------------------------------------------------------------
    async def start(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self.config.max_concurrency + 16,
                              max_keepalive_connections=min(self.config.max_concurrency, 256))
        self.client = httpx.AsyncClient(limits=limits, follow_redirects=False)
        self.caller = Caller(self.client, timeout=self.config.timeout, retries=self.config.retries,
                             backoff=self.config.backoff)
        self.batcher.start()
        self._wake = asyncio.Event()
        if self.learner.due():  # rows logged before a restart: learn them now
            self._wake.set()
        if not self.learner.read_only:
            self._learning = asyncio.get_running_loop().create_task(
                learn_forever(self.learner, self._wake, self.config.update_interval, self._update))

    async def stop(self) -> None:
        self.closing = True
        if self._learning is not None:
            self._learning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._learning
        self._learn_pool.shutdown(wait=True)  # an update in progress finishes (it is saved whole or not at all)
        await self.batcher.stop()
        if self.client is not None:
            await self.client.aclose()
        self.learner.close()

    def enter(self) -> None:
        """Count a request in; 429 when ``max_concurrency`` are in flight (no queue)."""
        if self.in_flight >= self.config.max_concurrency:
            self.metrics.rejections.labels("overloaded").inc()
            raise ServeRequestError(429, f"the server has {self.in_flight} requests in flight (its limit); retry "
                                         "shortly", kind="rate_limit_error", code="server_overloaded", retry_after=1)
        self.in_flight += 1
        self.metrics.in_flight.inc()

    def leave(self) -> None:
        self.in_flight -= 1
        self.metrics.in_flight.dec()

    # -- routing ----------------------------------------------------------------------------------
    def _filters(self, options: RouteOptions) -> tuple[Filter, ...]:
        return (*options.filters, *((self._served,) if self._served is not None else ()))

    async def decide(self, texts: list[str], options: RouteOptions) -> list[RoutingDecision]:
        """Decisions for ``texts`` (400 naming the first prompt that cannot be routed)."""
        started = time.perf_counter()
        weights = {**self.config.weights, **options.weights}
        results = await self.batcher.route(texts, weights, self._filters(options), options.min_quality)
        self.metrics.routing.observe(time.perf_counter() - started)
        if isinstance(results, BaseException):
            raise _bad_routing(results, "tryage")
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                raise _bad_routing(result, "messages" if len(results) == 1 else f"prompts[{i}]")
        return results

    async def route_chat(self, body: Mapping[str, Any], options: RouteOptions, thread: str | None) -> Routed:
        """Route a chat request (``model: "tryage"``) or take the expert it names."""
        messages = body["messages"]
        turns = EarlierTurns(self.router.parse)  # each turn parsed once, for the context and the expert's input
        text, context = conversation_text(messages, turns)
        model = body.get("model")
        if model != "tryage":
            if model not in self.upstreams:
                raise ServeRequestError(404, f"model {model!r:.80} does not exist; this server offers 'tryage' and "
                                             f"{', '.join(map(repr, self.upstreams))}", param="model",
                                        code="model_not_found")
            clean = _clean(turns, text)
            routed = Routed(DecisionStore.new_id(), clean, [model], _stripped(messages, None, turns), thread)
            return routed
        use_context = bool(context) and self.config.context_weight > 0
        decisions = await self.decide([text, context] if use_context else [text], options)
        decision = decisions[0]
        if use_context:
            decision = blend_decisions(decision, decisions[1], self.config.context_weight)
        if thread is not None:
            decision, _ = stick(decision, self.threads.get(thread), margin=self.config.stickiness_margin)
        rest = [e for e in decision.ranking if e != decision.expert and e in self.upstreams]
        if not (options.fallback if options.fallback is not None else self.config.fallback):
            rest = []
        elif self.config.max_fallbacks is not None:
            rest = rest[: self.config.max_fallbacks]
        return Routed(DecisionStore.new_id(), decision.prompt, [decision.expert, *rest],
                      _stripped(messages, decision.prompt, turns), thread)

    # -- calling ----------------------------------------------------------------------------------
    async def complete(self, body: Mapping[str, Any], routed: Routed) -> dict[str, Any]:
        """The first expert of the queue that answers: its JSON answer, ``model`` = its name."""
        request = _forward(body, routed)

        async def call(upstream: Upstream) -> dict[str, Any]:
            assert self.caller is not None
            answer = await self.caller.complete(upstream, request)
            self.metrics.usage(upstream.name, *upstream.cost(answer.get("usage")))
            answer["model"] = upstream.name
            return answer

        return await self._in_turn(routed, call)

    async def stream(self, body: Mapping[str, Any], routed: Routed) -> Relay:
        """Open the first expert of the queue that streams; the rest of the stream is relayed as it comes."""
        request = _forward(body, routed)

        async def call(upstream: Upstream) -> Any:
            assert self.caller is not None
            return await self.caller.stream(upstream, request)

        first, events, response = await self._in_turn(routed, call, hold=True)
        return Relay(self, self.upstreams[routed.expert], first, events, response)

    async def _in_turn(self, routed: Routed, call: Any, *, hold: bool = False) -> Any:
        """``call(upstream)`` on each expert of the queue until one answers (``hold``: keep its slot)."""
        error: UpstreamError | None = None
        for position, name in enumerate(routed.queue):
            limit = self.upstreams[name].concurrency or self.config.expert_concurrency
            if self.busy[name] >= limit:
                self.metrics.rejections.labels("expert_busy").inc()
                routed.tried.append(name)
                continue
            self.busy[name] += 1
            started = time.perf_counter()
            keep = False
            try:
                result = await call(self.upstreams[name])
                keep = hold
            except UpstreamError as exc:
                self.metrics.upstream.labels(name).observe(time.perf_counter() - started)
                if not may_fall_back(exc):
                    raise
                log.warning("expert %s failed (%s)%s", name, exc,
                            "; trying the next" if position + 1 < len(routed.queue) else "")
                self.metrics.fallbacks.labels(name).inc()
                routed.tried.append(name)
                error = exc
                continue
            finally:
                if not keep:
                    self.busy[name] -= 1
            self.metrics.upstream.labels(name).observe(time.perf_counter() - started)
            routed.expert = name
            self.decisions.put(routed.decision_id, routed.prompt, name)
            if routed.thread is not None:
                self.threads.set(routed.thread, name)
            return result
        if error is not None:
            raise error
        raise ServeRequestError(429, f"every expert that could answer is at its concurrency limit "
                                     f"({', '.join(routed.queue)}); retry shortly", kind="rate_limit_error",
                                code="experts_busy", retry_after=1)

    # -- learning ---------------------------------------------------------------------------------
    async def feedback(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Log ``rows`` durably (fsync) and wake the learner when enough are pending."""
        await asyncio.get_running_loop().run_in_executor(None, self.learner.record, list(rows))
        self.metrics.feedback.inc(len(rows))
        if self.learner.due() and self._wake is not None:
            self._wake.set()

    async def _update(self) -> Mapping[str, Any] | None:
        """Train a copy of the router on the pending feedback (its encoder passes share the batcher's thread)."""
        router = self.router
        result = await asyncio.get_running_loop().run_in_executor(
            self._learn_pool, self.learner.update, router,
            lambda prompts: self.batcher.call(lambda: router.predictor.encode(prompts)))
        if result is None:
            return None
        self.router, report = result
        self.metrics.updates.inc()
        return report


class Relay:
    """An expert's open stream: :meth:`chunks` relays its events as they come; :meth:`close` (idempotent,
    also when the chunks were never read) frees the expert's slot and connection."""

    def __init__(self, service: Service, upstream: Upstream, first: list[dict[str, Any]], events: Any,
                 response: Any) -> None:
        self.service, self.upstream, self.first, self.events, self.response = service, upstream, first, events, response
        self._closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        name = self.upstream.name
        try:
            for event in self.first:
                yield self._event(event)
            try:
                async for event in self.events:
                    yield self._event(event)
            except Exception as exc:  # noqa: BLE001 - after the first chunk no other expert can take over
                log.warning("expert %s broke off a stream: %s", name, type(exc).__name__)
                error = {"message": f"expert {name!r} broke off its stream ({type(exc).__name__})",
                         "type": "server_error", "param": None, "code": "upstream_stream_broken"}
                yield f"data: {json.dumps({'error': error})}\n\n".encode()
                return
            yield b"data: [DONE]\n\n"
        finally:
            await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.service.busy[self.upstream.name] -= 1
        await self.response.aclose()

    def _event(self, event: dict[str, Any]) -> bytes:
        event["model"] = self.upstream.name
        if event.get("usage"):
            self.service.metrics.usage(self.upstream.name, *self.upstream.cost(event["usage"]))
        return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


def _bad_routing(error: BaseException, param: str) -> ServeRequestError:
    if isinstance(error, TryageError):
        return ServeRequestError(400, str(error).splitlines()[0], param=param, code=type(error).__name__)
    log.error("routing failed: %r", error)
    return ServeRequestError(500, "routing failed; see the server log", kind="server_error")


def _clean(turns: EarlierTurns, text: str) -> str:
    try:
        return turns.without_flags(text) or text
    except (TryageError, ValueError):
        return text


def _stripped(messages: list[dict[str, Any]], routed: str | None,
              turns: EarlierTurns) -> list[dict[str, Any]] | None:
    """The messages without flags, or ``None`` when they hold none (the body is then sent as is)."""
    stripped = strip_messages(messages, routed, turns)
    if routed is not None:  # the routed turn keeps its own spacing unless it held flags
        last = max(i for i, m in enumerate(messages) if m.get("role") == "user")
        if message_text(messages[last].get("content")).strip() == routed:
            stripped[last] = dict(messages[last])
    return None if stripped == list(messages) else stripped


def _forward(body: Mapping[str, Any], routed: Routed) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k != "tryage"}
    if routed.messages is not None:
        out["messages"] = routed.messages
    return out


__all__ = ["Relay", "Routed", "Service"]
