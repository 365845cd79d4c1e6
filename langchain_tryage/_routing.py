"""The routing and fallback engine shared by the LangChain components.

The engine is written once, as generators that *yield steps* (route these texts, call this expert
with these inputs, open this stream) and receive each step's result. :func:`drive` runs the steps
with LangChain's sync APIs, :func:`adrive` with the async ones (the router runs in an executor
thread, groups of expert calls run concurrently). So there is one engine and two short drivers,
not a sync and an async copy of the logic.

Routing semantics (flags, weights, empty prompts, filters) are the core's: the engine hands the
text to ``router.route_batch(..., return_exceptions=True)`` and reports each prompt's own error.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable, Generator, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tryage.errors import ConfigurationError, ExpertNotFoundError, require

require("langchain_core", "langchain", "langchain-core")

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager  # noqa: E402
from langchain_core.runnables import RunnableConfig  # noqa: E402
from langchain_core.runnables.config import run_in_executor  # noqa: E402
from langchain_core.runnables.utils import ConfigurableFieldSpec  # noqa: E402

from tryage.constraints import Filter  # noqa: E402
from tryage.conversation import EarlierTurns, blend_decisions  # noqa: E402
from tryage.flags import FlagParser  # noqa: E402
from tryage.objective import RoutingDecision  # noqa: E402
from tryage.router import BatchRouter, ExpertMap, Router  # noqa: E402
from tryage.router import check_router as check_router_of  # noqa: E402

WEIGHTS_KEY = "tryage_weights"
"""``config["configurable"]`` key: constraint weights for this call, e.g. ``{"size": 0.5}``."""

EXPERT_KEY = "tryage_expert"
"""``config["configurable"]`` key: force this expert (the router still scores every expert)."""

ROUTE_RUN_NAME = "TryageRoute"
TAG_ROUTE = "tryage:route"
TAG_FALLBACK = "tryage:fallback"


def expert_tag(name: str) -> str:
    return f"tryage:expert={name}"


CONFIG_SPECS = (
    ConfigurableFieldSpec(
        id=WEIGHTS_KEY, annotation=dict[str, float], name="Tryage constraint weights",
        description="Constraint weights for this call (e.g. {'size': 0.5}); flags in the prompt override them.",
        default=None),
    ConfigurableFieldSpec(
        id=EXPERT_KEY, annotation=str, name="Tryage expert",
        description="Name of an expert to use for this call instead of the router's choice.", default=None),
)


# -- construction checks ---------------------------------------------------------------------------
def check_router(router: object) -> BatchRouter:
    """A LangChain component's router: a :class:`~tryage.router.Router`, or at least a
    :class:`~tryage.router.BatchRouter` (then names are checked per call)."""
    return check_router_of(router, need=BatchRouter)


def map_experts(router: BatchRouter, names: Sequence[Any], mapping: Mapping[str, str] | None) -> ExpertMap:
    """The core's map of ``names`` to the router's experts (checked now when the router lists them)."""
    return ExpertMap.build(names, mapping, known=router.experts if isinstance(router, Router) else None)


def check_window(window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigurationError(f"window must be a positive integer (messages read for routing); got {window!r}")


def check_weights(router: BatchRouter, weights: Any, where: str) -> dict[str, Any]:
    """A dict of weights; the values are the core's to check (``router.constraints.check_weights``)."""
    if not isinstance(weights, Mapping):
        raise ConfigurationError(f"{where} must be a dict of constraint name -> number; got {type(weights).__name__}")
    return router.constraints.check_weights(weights) if isinstance(router, Router) else dict(weights)


def turns_of(router: BatchRouter) -> EarlierTurns:
    """A conversation's turns read with the router's flag parser (``router.parse``; the built-in
    flags for a bare router), each turn parsed once: one per call or batch."""
    return EarlierTurns(router.parse if isinstance(router, Router) else FlagParser().parse)


# -- per-call options ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallOptions:
    """What one call asks of the router, beyond the prompt.

    Attributes:
        weights: Constraint weights (component defaults, then ``tryage_weights`` from the config).
        expert: An expert (user name) forced by ``tryage_expert``, or ``None``.
    """

    weights: Mapping[str, Any] | None = None
    expert: str | None = None

    def key(self) -> str:
        return repr((sorted((self.weights or {}).items()), self.expert))


def call_options(config: RunnableConfig, defaults: Mapping[str, float] | None, experts: ExpertMap,
                 *, weights: Any = None, expert: Any = None) -> CallOptions:
    """Read ``tryage_weights`` / ``tryage_expert`` from ``config["configurable"]`` (or the arguments)."""
    configurable = config.get("configurable") or {}
    merged = dict(defaults or {})
    if weights is None:
        weights = configurable.get(WEIGHTS_KEY)
    if weights is not None:
        if not isinstance(weights, Mapping):
            raise ConfigurationError(
                f'tryage_weights must be a dict of constraint name -> number; got {type(weights).__name__}')
        merged.update(weights)
    if expert is None:
        expert = configurable.get(EXPERT_KEY)
    if expert is not None and expert not in experts.to_router:
        raise ExpertNotFoundError(str(expert), tuple(experts.to_router))
    return CallOptions(merged or None, expert)


# -- steps and drivers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One effect the engine asks for.

    Attributes:
        run: Runs it with sync APIs. Its result, or the items of a list result, may be awaitable
            (an async callback manager's methods); the async driver awaits them.
        arun: Runs it with async APIs; ``None``: the async driver calls ``run``.
        blocking: The async driver runs ``run`` in an executor thread (the router's forward pass).
    """

    run: Callable[[], Any]
    arun: Callable[[], Awaitable[Any]] | None = None
    blocking: bool = False


Engine = Generator["Step | list[Step]", Any, Any]


def _run(step: Step | list[Step]) -> Any:
    """A list of steps gives one result per step, an error in place of a step that raised."""
    if not isinstance(step, list):
        return step.run()
    out = []
    for s in step:
        try:
            out.append(s.run())
        except Exception as exc:  # noqa: BLE001 - returned in its place
            out.append(exc)
    return out


async def _arun(step: Step | list[Step]) -> Any:
    if isinstance(step, list):
        return list(await asyncio.gather(*map(_arun, step), return_exceptions=True))
    if step.arun is not None:
        return await step.arun()
    if step.blocking:
        return await run_in_executor(None, step.run)
    out = step.run()
    if isinstance(out, list):
        return [await v if inspect.isawaitable(v) else v for v in out]
    return await out if inspect.isawaitable(out) else out


def drive(engine: Engine) -> Any:
    """Run ``engine`` with sync APIs; a failing step's error is thrown back into the engine."""
    value: Any = None
    resume = engine.send
    while True:
        try:
            step = resume(value)
        except StopIteration as stop:
            return stop.value
        try:
            value, resume = _run(step), engine.send
        except Exception as exc:  # noqa: BLE001 - the engine decides
            value, resume = exc, engine.throw


async def adrive(engine: Engine) -> Any:
    """Run ``engine`` with async APIs."""
    value: Any = None
    resume = engine.send
    while True:
        try:
            step = resume(value)
        except StopIteration as stop:
            return stop.value
        try:
            value, resume = await _arun(step), engine.send
        except Exception as exc:  # noqa: BLE001
            value, resume = exc, engine.throw


# -- routing ---------------------------------------------------------------------------------------
@dataclass
class Job:
    """One input on its way through routing and the experts.

    Attributes:
        index: Position in the caller's batch.
        text: The text the router reads.
        options: Weights and forced expert.
        manager: The callback manager the ``TryageRoute`` run starts from.
        payload: What the component needs later (the parsed input).
        decision: The routing decision, once routed.
        decision_id: A fresh id for this decision (``response_metadata["tryage_decision_id"]``).
        queue: Experts (user names) to try in order.
        tried: Experts that failed so far.
        first_error: The first expert's error (raised when every expert fails).
        context: The earlier turns of a conversation, routed too and blended in (``""``: none).
        context_weight: The context's share of each predicted loss (see
            :func:`tryage.conversation.blend_decisions`).
        thread: The conversation thread, when the component keeps threads on their expert.
        sticky: What stickiness did (``"new"``, ``"kept"``, ``"switched"``), once routed.
    """

    index: int
    text: str
    options: CallOptions
    manager: CallbackManager | AsyncCallbackManager
    payload: Any = None
    run_name: str = ROUTE_RUN_NAME
    run_id: uuid.UUID | None = None
    decision: RoutingDecision | None = None
    decision_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    queue: tuple[str, ...] = ()
    tried: list[str] = field(default_factory=list)
    first_error: BaseException | None = None
    context: str = ""
    context_weight: float = 0.0
    thread: Hashable | None = None
    sticky: str | None = None

    @property
    def expert(self) -> str:
        return self.queue[len(self.tried)]

    @property
    def uses_context(self) -> bool:
        return bool(self.context) and self.context_weight > 0.0


def _run_inputs(job: Job) -> dict[str, Any]:
    inputs: dict[str, Any] = {"prompt": job.text, "weights": dict(job.options.weights or {})}
    if job.options.expert is not None:
        inputs["expert"] = job.options.expert
    if job.uses_context:
        inputs["context"] = job.context
        inputs["context_weight"] = job.context_weight
    if job.thread is not None:
        inputs["thread"] = str(job.thread)
    return inputs


def _route_group(router: BatchRouter, group: list[Job], options: CallOptions, experts: ExpertMap) -> list[Any]:
    """One ``route_batch`` over the group's texts and their contexts; each context's decision is
    blended into its turn's (a context that fails to route leaves the turn's decision as it is)."""
    filters = [f for f in (experts.offered,) if f is not None]
    if options.expert is not None:
        target = experts.to_router[options.expert]
        filters.append(Filter(experts=(target,), source=f"{EXPERT_KEY}={options.expert}"))
    texts = [j.text for j in group]
    with_context = [k for k, j in enumerate(group) if j.uses_context]
    texts += [group[k].context for k in with_context]
    decisions = list(router.route_batch(texts, weights=options.weights, filters=filters, return_exceptions=True))
    if len(decisions) != len(texts):
        raise ConfigurationError(f"router.route_batch returned {len(decisions)} decisions for {len(texts)} prompts")
    for k, context in zip(with_context, decisions[len(group):]):
        turn = decisions[k]
        if isinstance(turn, RoutingDecision) and isinstance(context, RoutingDecision):
            decisions[k] = blend_decisions(turn, context, group[k].context_weight)
    return decisions[:len(group)]


def _queue(decision: Any, experts: ExpertMap, *, fallback: bool, max_fallbacks: int | None) -> tuple[str, ...]:
    if not isinstance(decision, RoutingDecision):
        raise ConfigurationError(f"router.route_batch must return RoutingDecisions; got {type(decision).__name__}")
    if decision.expert not in experts.to_user:
        raise ExpertNotFoundError(decision.expert, tuple(experts.to_user))
    rest = [experts.to_user[e] for e in decision.ranking if e != decision.expert and e in experts.to_user]
    if not fallback:
        rest = []
    elif max_fallbacks is not None:
        rest = rest[:max_fallbacks]
    return (experts.to_user[decision.expert], *rest)


def route(router: BatchRouter, jobs: Sequence[Job], experts: ExpertMap, *, fallback: bool = False,
          max_fallbacks: int | None = None, known: Mapping[tuple[Any, ...], Any] | None = None,
          adjust: Callable[[Job, RoutingDecision], RoutingDecision] | None = None) -> Engine:
    """Route every job, one router pass per distinct set of options (normally one).

    Each job gets a ``TryageRoute`` run whose outputs are ``decision.to_dict()``. Returns one entry
    per job: the job, routed (``decision`` and ``queue`` set), or the exception that stopped it.
    ``known`` holds decisions computed earlier (by ``ChatTryage.batch``), keyed by :func:`route_key`.
    ``adjust(job, decision)`` may replace a decision before the job's queue is built (stickiness).
    """
    runs = yield Step(lambda: [j.manager.on_chain_start(None, _run_inputs(j), name=j.run_name, run_id=j.run_id)
                               for j in jobs])
    results: list[Any] = [None] * len(jobs)
    groups: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        if known is not None and route_key(job) in known:
            results[i] = known[route_key(job)]
        else:
            groups.setdefault(job.options.key(), []).append(i)
    for indices in groups.values():
        group, options = [jobs[i] for i in indices], jobs[indices[0]].options
        try:
            decisions = yield Step(lambda: _route_group(router, group, options, experts), blocking=True)
        except Exception as exc:  # noqa: BLE001 - reported on each job of the group
            decisions = [exc] * len(indices)
        for i, d in zip(indices, decisions):
            results[i] = d
    for i, (job, d) in enumerate(zip(jobs, results)):
        if not isinstance(d, Exception):
            try:
                if adjust is not None:
                    d = adjust(job, d)
                job.queue = _queue(d, experts, fallback=fallback, max_fallbacks=max_fallbacks)
                job.decision, results[i] = d, job
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
    yield [Step(lambda r=r, d=d: r.on_chain_error(d) if isinstance(d, Exception) else r.on_chain_end(
                _decision_outputs(d)))
           for r, d in zip(runs, results)]
    return results


def _decision_outputs(job: Job) -> dict[str, Any]:
    outputs = {**job.decision.to_dict(), "decision_id": job.decision_id}  # type: ignore[union-attr]
    if job.sticky is not None:
        outputs["sticky"] = job.sticky
    return outputs


def route_key(job: Job) -> tuple[Any, ...]:
    return job.text, job.context if job.uses_context else "", job.context_weight, job.options.key()


def route_now(router: BatchRouter, jobs: Sequence[Job], experts: ExpertMap) -> dict[tuple[Any, ...], Any]:
    """Decisions for ``jobs`` by :func:`route_key`, routed now (one pass per option set)."""
    return {route_key(j): j.decision for j, r in zip(jobs, drive(route(router, jobs, experts))) if r is j}


# -- experts and fallback --------------------------------------------------------------------------
def _retry(job: Job, exc: BaseException, retry_on: tuple[type[BaseException], ...]) -> BaseException | None:
    """Record a failure: ``None`` when the next expert should be tried, else the error to raise
    (the first expert's, unless the last one is not a fallback exception)."""
    job.first_error = job.first_error or exc
    if not isinstance(exc, retry_on):
        return exc
    if len(job.tried) + 1 < len(job.queue):
        job.tried.append(job.expert)
        return None
    return job.first_error


GroupCall = Callable[[str, list[Job]], tuple[Callable[[], list[Any]], Callable[[], Awaitable[list[Any]]]]]


def run_experts(jobs: list[Job], call: GroupCall, retry_on: tuple[type[BaseException], ...]) -> Engine:
    """Call each job's expert, one ``batch`` per expert, falling back along the ranking.

    ``call(name, jobs)`` gives the sync and async calls of expert ``name`` on ``jobs``. An expert's
    ``batch`` may raise instead of returning the error (``FakeListChatModel`` does): then every
    input of its group gets that error, and may fall back. Returns ``[(job, output or error)]``.
    """
    done: list[tuple[Job, Any]] = []
    pending = jobs
    while pending:
        groups: dict[str, list[Job]] = {}
        for job in pending:
            groups.setdefault(job.expert, []).append(job)
        outs = yield [Step(*call(name, group)) for name, group in groups.items()]
        pending = []
        for group, results in zip(groups.values(), outs):
            for job, out in zip(group, [results] * len(group) if isinstance(results, BaseException) else results):
                if not isinstance(out, BaseException):
                    done.append((job, out))
                elif (error := _retry(job, out, retry_on)) is None:
                    pending.append(job)
                else:
                    done.append((job, error))
    return done


END = object()
"""The first "chunk" of a stream that yielded nothing."""


def _open(stream: Callable[[], Iterable[Any]]) -> Any:
    chunks = iter(stream())
    return next(chunks, END), chunks


async def _aopen(stream: Callable[[], Any]) -> Any:
    chunks = stream().__aiter__()
    try:
        return await chunks.__anext__(), chunks
    except StopAsyncIteration:
        return END, chunks


StreamCall = Callable[[Job], tuple[Callable[[], Iterator[Any]], Callable[[], Any]]]


def open_stream(job: Job, call: StreamCall, retry_on: tuple[type[BaseException], ...]) -> Engine:
    """Open the job's expert stream, falling back until one yields its first chunk.

    Returns ``(first chunk or END, the rest)``; after the first chunk a failure propagates.
    """
    while True:
        run, arun = call(job)
        try:
            return (yield Step(lambda: _open(run), lambda: _aopen(arun)))
        except Exception as exc:  # noqa: BLE001 - fall back, or raise what _retry says
            error = _retry(job, exc, retry_on)
            if error is not None:
                raise error from None


__all__ = ["CONFIG_SPECS", "END", "EXPERT_KEY", "ROUTE_RUN_NAME", "WEIGHTS_KEY", "CallOptions", "ExpertMap",
           "Job", "Step", "adrive", "call_options", "check_router", "check_weights", "check_window", "drive",
           "expert_tag", "map_experts", "open_stream", "turns_of", "route", "route_key", "route_now", "run_experts"]
