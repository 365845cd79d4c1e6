"""``TryageRouterChain``: route each input to one of several runnables, as one runnable.

Example::

    from langchain_tryage import TryageRouterChain

    chain = TryageRouterChain(router, {"code": code_model, "legal": legal_model, "general": chat_model})
    chain.invoke("Write a Python function that reverses a list [Flag: smallest model]")
    chain.invoke(messages, config={"configurable": {"tryage_weights": {"cost": 0.5}}})

Per-call options go in ``config["configurable"]``:

``tryage_weights``  constraint weights for this call (``{"size": 0.5}``); flags in the prompt
                    override them, and they override the chain's ``weights``.
``tryage_expert``   use this expert instead of the router's choice (the router still scores every
                    expert, so the trace shows what it would have chosen).

Traces: the chain's run holds one child run ``TryageRoute`` whose outputs are
``RoutingDecision.to_dict()`` (each expert's predicted loss, penalties and total), then the expert's
run, tagged ``tryage:expert=<name>`` and with metadata ``{"tryage_expert": <name>}``. When fallback
is on and an expert fails, the next expert's run also carries the tag ``tryage:fallback`` and
metadata ``tryage_fallback_from`` (the experts that failed before it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from langchain_tryage._inputs import read_input, strip_input
from langchain_tryage._routing import (
    CONFIG_SPECS,
    END,
    TAG_FALLBACK,
    TAG_ROUTE,
    Engine,
    Job,
    adrive,
    call_options,
    check_router,
    check_weights,
    check_window,
    drive,
    map_experts,
    expert_tag,
    open_stream,
    route,
    run_experts,
    turns_of,
)

from langchain_core.callbacks import (  # noqa: I001 - after the dependency check in _inputs
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.base import coerce_to_runnable
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    patch_config,
)
from langchain_core.runnables.utils import AddableDict, ConfigurableFieldSpec, get_unique_config_specs
from pydantic import BaseModel, ConfigDict, PrivateAttr

from tryage.errors import ConfigurationError
from tryage.objective import RoutingDecision
from tryage.router import BatchRouter, ExpertMap


class TryageRouterChain(RunnableSerializable[Any, Any]):
    """Route each input to the best expert runnable under your constraints, then run that expert.

    Args:
        router: A :class:`tryage.TryageRouter`, or any :class:`tryage.router.Router`; a
            :class:`tryage.router.BatchRouter` (``route_batch(prompts, *, weights, filters,
            return_exceptions) -> list[RoutingDecision | Exception]`` alone) will do, its experts
            then checked per call.
        experts: Expert name → runnable (chat models, LLMs, chains, or callables). Names are the
            router's experts, or your own names mapped by ``expert_map``. Give a subset of the
            router's experts to route only among those.
        expert_map: ``{your name: router expert}`` for experts not named after a router expert.
        input_key: For dict inputs, the key holding the prompt or messages. The expert receives the
            whole dict with that value's flags removed.
        window: Messages the router reads: ``1`` routes on the last user message; ``n`` on the last
            user message and the ``n - 1`` user/assistant messages before it.
        weights: Default constraint weights for this chain (per-call ``tryage_weights`` and flags
            override them).
        fallback: When the chosen expert raises, try the next expert of ``decision.ranking``.
        max_fallbacks: At most this many further experts (``None``: every eligible one).
        fallback_exceptions: Exceptions that trigger a fallback; others propagate at once.
        return_decision: Return ``{"output": ..., "decision": RoutingDecision, "expert": name}``
            instead of the expert's output alone (``expert`` is the one that produced the output).
    """

    router: BatchRouter
    experts: dict[str, Runnable[Any, Any]]
    expert_map: dict[str, str] | None = None
    input_key: str = "input"
    window: int = 1
    weights: dict[str, float] | None = None
    fallback: bool = False
    max_fallbacks: int | None = None
    fallback_exceptions: tuple[type[BaseException], ...] = (Exception,)
    return_decision: bool = False
    _names: ExpertMap = PrivateAttr()

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, router: Any = None, experts: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        check_router(router)
        if not isinstance(experts, Mapping):
            raise ConfigurationError(
                f"experts must be a dict of expert name -> runnable; got {type(experts).__name__}")
        names = map_experts(router, tuple(experts), kwargs.get("expert_map"))
        check_window(kwargs.get("window", 1))
        if kwargs.get("weights") is not None:
            kwargs["weights"] = check_weights(router, kwargs["weights"], "weights")
        max_fallbacks = kwargs.get("max_fallbacks")
        if max_fallbacks is not None and (not isinstance(max_fallbacks, int) or max_fallbacks < 0):
            raise ConfigurationError(f"max_fallbacks must be None or an integer >= 0; got {max_fallbacks!r}")
        super().__init__(router=router, experts={n: coerce_to_runnable(r) for n, r in experts.items()},
                         **kwargs)
        self._names = names

    # -- LangChain protocol ----------------------------------------------------------------------
    @property
    def InputType(self) -> Any:  # noqa: N802 - LangChain's name
        types = {e.InputType for e in self.experts.values()}
        return types.pop() if len(types) == 1 else Any

    @property
    def OutputType(self) -> Any:  # noqa: N802
        if self.return_decision:
            return dict
        types = {e.OutputType for e in self.experts.values()}
        return types.pop() if len(types) == 1 else Any

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """The experts' input schema when they share one (they receive the chain's input)."""
        return _shared_schema([e.get_input_schema(config) for e in self.experts.values()]) \
            or super().get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        """The experts' output schema when they share one (and no decision is returned)."""
        if not self.return_decision:
            shared = _shared_schema([e.get_output_schema(config) for e in self.experts.values()])
            if shared is not None:
                return shared
        return super().get_output_schema(config)

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return get_unique_config_specs(
            [*CONFIG_SPECS, *(s for e in self.experts.values() for s in e.config_specs)])

    # -- routing ---------------------------------------------------------------------------------
    def _job(self, index: int, input: Any, config: RunnableConfig, manager: Any, **extra: Any) -> Job:  # noqa: A002
        routable = read_input(input, input_key=self.input_key, window=self.window)
        options = call_options(config, self.weights, self._names)
        return Job(index, routable.text, options, manager, routable, **extra)

    def _route_one(self, input: Any, config: RunnableConfig | None, *, is_async: bool) -> Engine:  # noqa: A002
        config = ensure_config(config)
        manager = (get_async_callback_manager_for_config if is_async else get_callback_manager_for_config)(config)
        job = self._job(0, input, config, manager, run_name=config.get("run_name") or "TryageRoute",
                        run_id=config.pop("run_id", None))
        (result,) = yield from route(self.router, [job], self._names)
        if isinstance(result, Exception):
            raise result
        return result.decision

    def route(self, input: Any, config: RunnableConfig | None = None) -> RoutingDecision:  # noqa: A002
        """The decision for ``input``, without running any expert (traced as one ``TryageRoute`` run)."""
        return drive(self._route_one(input, config, is_async=False))

    async def aroute(self, input: Any, config: RunnableConfig | None = None) -> RoutingDecision:  # noqa: A002
        """Async :meth:`route`."""
        return await adrive(self._route_one(input, config, is_async=True))

    def as_decider(self, **kwargs: Any) -> Runnable[Any, Any]:
        """A :class:`~langchain_tryage.TryageRouteDecider` with this chain's router and settings."""
        from langchain_tryage.route_decider import TryageRouteDecider

        settings = {"input_key": self.input_key, "window": self.window, "weights": self.weights,
                    "expert_map": self.expert_map, **kwargs}
        return TryageRouteDecider(self.router, experts=tuple(self.experts), **settings)

    def _routed(self, inputs: list[Any], configs: list[RunnableConfig], run_managers: list[Any],
                results: list[Any], *, is_async: bool) -> Engine:
        """Route every input (one router pass); the jobs ready for their experts."""
        jobs = []
        for i, (inp, cfg, rm) in enumerate(zip(inputs, configs, run_managers)):
            try:
                # configure() (not a bare child manager) so context handlers (collect_runs, LangSmith) see it
                route_config = patch_config(cfg, callbacks=rm.get_child(tag=TAG_ROUTE))
                manager = (get_async_callback_manager_for_config if is_async
                           else get_callback_manager_for_config)(route_config)
                jobs.append(self._job(i, inp, cfg, manager))
            except Exception as exc:  # noqa: BLE001 - reported on this input's run
                results[i] = exc
        ready = []
        turns = turns_of(self.router)
        routed = yield from route(self.router, jobs, self._names, fallback=self.fallback,
                                  max_fallbacks=self.max_fallbacks)
        for job, outcome in zip(jobs, routed):
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                job.payload = strip_input(job.payload, job.decision, turns)
                ready.append(job)
            except Exception as exc:  # noqa: BLE001 - this input's error
                results[job.index] = exc
        return ready

    # -- experts ---------------------------------------------------------------------------------
    def _expert_runnable(self, name: str) -> Runnable[Any, Any]:
        """The runnable called for ``name`` (subclasses adapt it per call, e.g. to bind tools)."""
        return self.experts[name]

    def _expert_config(self, config: RunnableConfig, run_manager: Any, job: Job) -> RunnableConfig:
        name = job.expert
        callbacks = run_manager.get_child(tag=expert_tag(name))
        metadata = {**(config.get("metadata") or {}), "tryage_expert": name, "tryage_decision_id": job.decision_id}
        if job.tried:
            callbacks.add_tags([TAG_FALLBACK], inherit=False)
            metadata["tryage_fallback_from"] = list(job.tried)
        child = patch_config(config, callbacks=callbacks)
        child["metadata"] = metadata
        return child

    def _finish(self, output: Any, job: Job) -> Any:
        """The chain's output for one job (subclasses annotate it)."""
        if self.return_decision:
            return {"output": output, "decision": job.decision, "expert": job.expert}
        return output

    def _finish_chunk(self, chunk: Any, job: Job, first: bool) -> Any:
        if self.return_decision:
            if first:
                return AddableDict(output=chunk, decision=job.decision, expert=job.expert)
            return AddableDict(output=chunk)
        return chunk

    # -- invoke and batch: route once, then one call per chosen expert ------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # noqa: A002
        return self.batch([input], config, **kwargs)[0]

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # noqa: A002
        return (await self.abatch([input], config, **kwargs))[0]

    def batch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Route every input in one router pass, then call each chosen expert once with its group."""
        if not inputs:
            return []
        return self._batch_with_config(self._batch, inputs, config, return_exceptions=return_exceptions, **kwargs)

    async def abatch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Async :meth:`batch`; the experts' groups run concurrently."""
        if not inputs:
            return []
        return await self._abatch_with_config(self._abatch, inputs, config, return_exceptions=return_exceptions,
                                              **kwargs)

    def _batch(self, inputs: list[Any], run_manager: list[CallbackManagerForChainRun],
               config: list[RunnableConfig], **kwargs: Any) -> list[Any]:
        return drive(self._engine(inputs, run_manager, config, kwargs, is_async=False))

    async def _abatch(self, inputs: list[Any], run_manager: list[AsyncCallbackManagerForChainRun],
                      config: list[RunnableConfig], **kwargs: Any) -> list[Any]:
        return await adrive(self._engine(inputs, run_manager, config, kwargs, is_async=True))

    def _engine(self, inputs: list[Any], run_managers: list[Any], configs: list[RunnableConfig],
                kwargs: dict[str, Any], *, is_async: bool) -> Engine:
        results: list[Any] = [None] * len(inputs)
        jobs = yield from self._routed(inputs, configs, run_managers, results, is_async=is_async)

        def call(name: str, group: list[Job]) -> tuple[Any, Any]:
            runnable = self._expert_runnable(name)
            payloads = [j.payload for j in group]
            cfgs = [self._expert_config(configs[j.index], run_managers[j.index], j) for j in group]
            return (lambda: runnable.batch(payloads, cfgs, return_exceptions=True, **kwargs),
                    lambda: runnable.abatch(payloads, cfgs, return_exceptions=True, **kwargs))

        for job, out in (yield from run_experts(jobs, call, self.fallback_exceptions)):
            results[job.index] = out if isinstance(out, BaseException) else self._finish(out, job)
        return results

    # -- streaming -------------------------------------------------------------------------------
    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:  # noqa: A002
        """Route, then stream the chosen expert's output (fallback only before its first chunk).

        (``transform`` is ``Runnable``'s: it joins the input chunks and calls this.)"""
        yield from self._transform_stream_with_config(iter([input]), self._transform, config, **kwargs)

    async def astream(self, input: Any, config: RunnableConfig | None = None,  # noqa: A002
                      **kwargs: Any) -> AsyncIterator[Any]:
        async def once() -> AsyncIterator[Any]:
            yield input

        async for chunk in self._atransform_stream_with_config(once(), self._atransform, config, **kwargs):
            yield chunk

    def _stream_engine(self, input: Any, run_manager: Any, config: RunnableConfig,  # noqa: A002
                       kwargs: dict[str, Any], *, is_async: bool) -> Engine:
        results: list[Any] = [None]
        jobs = yield from self._routed([input], [config], [run_manager], results, is_async=is_async)
        if not jobs:
            raise results[0]

        def call(job: Job) -> tuple[Any, Any]:
            runnable, cfg = self._expert_runnable(job.expert), self._expert_config(config, run_manager, job)
            return (lambda: runnable.stream(job.payload, cfg, **kwargs),
                    lambda: runnable.astream(job.payload, cfg, **kwargs))

        first, rest = yield from open_stream(jobs[0], call, self.fallback_exceptions)
        return jobs[0], first, rest

    def _transform(self, chunks: Iterator[Any], run_manager: CallbackManagerForChainRun,
                   config: RunnableConfig, **kwargs: Any) -> Iterator[Any]:
        job, first, rest = drive(self._stream_engine(next(chunks), run_manager, config, kwargs, is_async=False))
        if first is not END:
            yield self._finish_chunk(first, job, True)
            for chunk in rest:
                yield self._finish_chunk(chunk, job, False)

    async def _atransform(self, chunks: AsyncIterator[Any], run_manager: AsyncCallbackManagerForChainRun,
                          config: RunnableConfig, **kwargs: Any) -> AsyncIterator[Any]:
        job, first, rest = await adrive(
            self._stream_engine(await anext(chunks), run_manager, config, kwargs, is_async=True))  # noqa: F821
        if first is not END:
            yield self._finish_chunk(first, job, True)
            async for chunk in rest:
                yield self._finish_chunk(chunk, job, False)


def _shared_schema(schemas: list[type[BaseModel]]) -> type[BaseModel] | None:
    first = schemas[0]
    try:
        reference = first.model_json_schema()
        if all(s is first or s.model_json_schema() == reference for s in schemas[1:]):
            return first
    except Exception:  # noqa: BLE001 - a schema that cannot be rendered is simply not shared
        return None
    return None


__all__ = ["TryageRouterChain"]
