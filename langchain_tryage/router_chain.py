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

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_tryage._inputs import RoutableInput, read_input, strip_input
from langchain_tryage._routing import (
    CONFIG_SPECS,
    TAG_FALLBACK,
    TAG_ROUTE,
    CallOptions,
    RouteRequest,
    aroute_traced,
    call_options,
    candidates,
    check_experts,
    check_router,
    check_window,
    expert_tag,
    flag_parser,
    route_traced,
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
from pydantic import BaseModel, ConfigDict

from tryage.errors import ConfigurationError
from tryage.objective import RoutingDecision


@dataclass
class _Job:
    """One routed input on its way through the experts."""

    index: int
    decision: RoutingDecision
    expert_input: Any
    queue: tuple[str, ...]
    tried: list[str] = field(default_factory=list)
    first_error: BaseException | None = None

    @property
    def expert(self) -> str:
        return self.queue[len(self.tried)]


class TryageRouterChain(RunnableSerializable[Any, Any]):
    """Route each input to the best expert runnable under your constraints, then run that expert.

    Args:
        router: A :class:`tryage.TryageRouter`, or any object with
            ``route_batch(prompts, weights=...) -> list[RoutingDecision]``.
        experts: Expert name → runnable (chat models, LLMs, chains, or callables). When the router
            lists its ``experts``, the names must be exactly those.
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

    router: Any
    experts: dict[str, Runnable[Any, Any]]
    input_key: str = "input"
    window: int = 1
    weights: dict[str, float] | None = None
    fallback: bool = False
    max_fallbacks: int | None = None
    fallback_exceptions: tuple[type[BaseException], ...] = (Exception,)
    return_decision: bool = False

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, router: Any = None, experts: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        check_router(router)
        if not isinstance(experts, Mapping):
            raise ConfigurationError(
                f"experts must be a dict of expert name -> runnable; got {type(experts).__name__}")
        check_experts(router, tuple(experts))
        check_window(kwargs.get("window", 1))
        max_fallbacks = kwargs.get("max_fallbacks")
        if max_fallbacks is not None and (not isinstance(max_fallbacks, int) or max_fallbacks < 0):
            raise ConfigurationError(f"max_fallbacks must be None or an integer >= 0; got {max_fallbacks!r}")
        super().__init__(router=router, experts={n: coerce_to_runnable(r) for n, r in experts.items()},
                         **kwargs)

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
    def _read(self, input: Any, config: RunnableConfig) -> tuple[RoutableInput, CallOptions]:  # noqa: A002
        routable = read_input(input, input_key=self.input_key, window=self.window)
        return routable, call_options(config, self.weights, tuple(self.experts))

    def route(self, input: Any, config: RunnableConfig | None = None) -> RoutingDecision:  # noqa: A002
        """The decision for ``input``, without running any expert (traced as one ``TryageRoute`` run)."""
        config = ensure_config(config)
        routable, options = self._read(input, config)
        request = RouteRequest(routable.text, options, get_callback_manager_for_config(config),
                               config.get("run_name") or "TryageRoute", config.pop("run_id", None))
        result = route_traced(self.router, [request], tuple(self.experts))[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def aroute(self, input: Any, config: RunnableConfig | None = None) -> RoutingDecision:  # noqa: A002
        """Async :meth:`route`."""
        config = ensure_config(config)
        routable, options = self._read(input, config)
        request = RouteRequest(routable.text, options, get_async_callback_manager_for_config(config),
                               config.get("run_name") or "TryageRoute", config.pop("run_id", None))
        result = (await aroute_traced(self.router, [request], tuple(self.experts)))[0]
        if isinstance(result, Exception):
            raise result
        return result

    def as_decider(self, **kwargs: Any) -> Runnable[Any, Any]:
        """A :class:`~langchain_tryage.TryageRouteDecider` with this chain's router and settings."""
        from langchain_tryage.route_decider import TryageRouteDecider

        settings = {"input_key": self.input_key, "window": self.window, "weights": self.weights, **kwargs}
        return TryageRouteDecider(self.router, experts=tuple(self.experts), **settings)

    def _jobs_for(self, inputs: Sequence[Any], configs: Sequence[RunnableConfig],
                  run_managers: Sequence[Any], results: list[Any],
                  *, is_async: bool) -> tuple[list[RouteRequest], list[tuple[int, RoutableInput]]]:
        requests: list[RouteRequest] = []
        read: list[tuple[int, RoutableInput]] = []
        for i, (inp, cfg, rm) in enumerate(zip(inputs, configs, run_managers)):
            try:
                routable, options = self._read(inp, cfg)
            except Exception as exc:  # noqa: BLE001 - reported on this input's run
                results[i] = exc
                continue
            # configure() (not a bare child manager) so context handlers (collect_runs, LangSmith) see it
            route_config = patch_config(cfg, callbacks=rm.get_child(tag=TAG_ROUTE))
            manager = (get_async_callback_manager_for_config(route_config) if is_async
                       else get_callback_manager_for_config(route_config))
            requests.append(RouteRequest(routable.text, options, manager))
            read.append((i, routable))
        return requests, read

    def _make_jobs(self, read: list[tuple[int, RoutableInput]], decisions: list[Any],
                   results: list[Any]) -> list[_Job]:
        parser = flag_parser(self.router)
        jobs = []
        for (i, routable), decision in zip(read, decisions):
            if isinstance(decision, Exception):
                results[i] = decision
                continue
            try:
                expert_input = strip_input(routable, parser)
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
                continue
            queue = candidates(decision, fallback=self.fallback, max_fallbacks=self.max_fallbacks,
                               names=self.experts)
            jobs.append(_Job(i, decision, expert_input, queue))
        return jobs

    # -- experts ---------------------------------------------------------------------------------
    def _expert_runnable(self, name: str) -> Runnable[Any, Any]:
        """The runnable called for ``name`` (subclasses adapt it per call, e.g. to bind tools)."""
        return self.experts[name]

    def _expert_config(self, config: RunnableConfig, run_manager: Any, job: _Job) -> RunnableConfig:
        name = job.expert
        callbacks = run_manager.get_child(tag=expert_tag(name))
        metadata = {**(config.get("metadata") or {}), "tryage_expert": name}
        if job.tried:
            callbacks.add_tags([TAG_FALLBACK], inherit=False)
            metadata["tryage_fallback_from"] = list(job.tried)
        child = patch_config(config, callbacks=callbacks)
        child["metadata"] = metadata
        return child

    def _finish(self, output: Any, job: _Job) -> Any:
        """The chain's output for one job (subclasses annotate it)."""
        if self.return_decision:
            return {"output": output, "decision": job.decision, "expert": job.expert}
        return output

    def _finish_chunk(self, chunk: Any, job: _Job, first: bool) -> Any:
        if self.return_decision:
            if first:
                return AddableDict(output=chunk, decision=job.decision, expert=job.expert)
            return AddableDict(output=chunk)
        return chunk

    def _failed(self, job: _Job, exc: BaseException) -> bool:
        """Record a failure; ``True`` when another expert should be tried."""
        job.first_error = job.first_error or exc
        if isinstance(exc, self.fallback_exceptions) and len(job.tried) + 1 < len(job.queue):
            job.tried.append(job.expert)
            return True
        return False

    def _give_up(self, job: _Job, exc: BaseException) -> BaseException:
        """The error to raise: the first expert's, unless the last one is not a fallback exception."""
        return job.first_error if isinstance(exc, self.fallback_exceptions) and job.first_error else exc

    # -- invoke ----------------------------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # noqa: A002
        return self.batch([input], config, **kwargs)[0]

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # noqa: A002
        return (await self.abatch([input], config, **kwargs))[0]

    def batch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Route every input in one router pass, then call each chosen expert once with its group."""
        if not inputs:
            return []
        return self._batch_with_config(self._batch, inputs, config, return_exceptions=return_exceptions,
                                       **kwargs)

    async def abatch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Async :meth:`batch`; the experts' groups run concurrently."""
        if not inputs:
            return []
        return await self._abatch_with_config(self._abatch, inputs, config,
                                              return_exceptions=return_exceptions, **kwargs)

    def _batch(self, inputs: list[Any], run_manager: list[CallbackManagerForChainRun],
               config: list[RunnableConfig], **kwargs: Any) -> list[Any]:
        results: list[Any] = [None] * len(inputs)
        requests, read = self._jobs_for(inputs, config, run_manager, results, is_async=False)
        decisions = route_traced(self.router, requests, tuple(self.experts)) if requests else []
        pending = self._make_jobs(read, decisions, results)
        while pending:
            groups: dict[str, list[_Job]] = {}
            for job in pending:
                groups.setdefault(job.expert, []).append(job)
            pending = []
            for name, jobs in groups.items():
                outs = self._expert_runnable(name).batch(
                    [j.expert_input for j in jobs],
                    [self._expert_config(config[j.index], run_manager[j.index], j) for j in jobs],
                    return_exceptions=True, **kwargs)
                pending.extend(self._collect(jobs, outs, results))
        return results

    async def _abatch(self, inputs: list[Any], run_manager: list[AsyncCallbackManagerForChainRun],
                      config: list[RunnableConfig], **kwargs: Any) -> list[Any]:
        results: list[Any] = [None] * len(inputs)
        requests, read = self._jobs_for(inputs, config, run_manager, results, is_async=True)
        decisions = await aroute_traced(self.router, requests, tuple(self.experts)) if requests else []
        pending = self._make_jobs(read, decisions, results)
        while pending:
            groups: dict[str, list[_Job]] = {}
            for job in pending:
                groups.setdefault(job.expert, []).append(job)

            async def run_group(name: str, jobs: list[_Job]) -> list[_Job]:
                outs = await self._expert_runnable(name).abatch(
                    [j.expert_input for j in jobs],
                    [self._expert_config(config[j.index], run_manager[j.index], j) for j in jobs],
                    return_exceptions=True, **kwargs)
                return self._collect(jobs, outs, results)

            retried = await asyncio.gather(*(run_group(n, js) for n, js in groups.items()))
            pending = [job for group in retried for job in group]
        return results

    def _collect(self, jobs: list[_Job], outs: list[Any], results: list[Any]) -> list[_Job]:
        retry = []
        for job, out in zip(jobs, outs):
            if not isinstance(out, BaseException):
                results[job.index] = self._finish(out, job)
            elif self._failed(job, out):
                retry.append(job)
            else:
                results[job.index] = self._give_up(job, out)
        return retry

    # -- streaming -------------------------------------------------------------------------------
    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:  # noqa: A002
        """Route, then stream the chosen expert's output (fallback only before its first chunk)."""
        yield from self.transform(iter([input]), config, **kwargs)

    async def astream(self, input: Any, config: RunnableConfig | None = None,  # noqa: A002
                      **kwargs: Any) -> AsyncIterator[Any]:
        async def once() -> AsyncIterator[Any]:
            yield input

        async for chunk in self.atransform(once(), config, **kwargs):
            yield chunk

    def transform(self, input: Iterator[Any], config: RunnableConfig | None = None,  # noqa: A002
                  **kwargs: Any) -> Iterator[Any]:
        yield from self._transform_stream_with_config(input, self._transform, config, **kwargs)

    async def atransform(self, input: AsyncIterator[Any], config: RunnableConfig | None = None,  # noqa: A002
                         **kwargs: Any) -> AsyncIterator[Any]:
        async for chunk in self._atransform_stream_with_config(input, self._atransform, config, **kwargs):
            yield chunk

    def _transform(self, chunks: Iterator[Any], run_manager: CallbackManagerForChainRun,
                   config: RunnableConfig, **kwargs: Any) -> Iterator[Any]:
        results: list[Any] = [None]
        requests, read = self._jobs_for([_gather(chunks)], [config], [run_manager], results, is_async=False)
        decisions = route_traced(self.router, requests, tuple(self.experts)) if requests else []
        jobs = self._make_jobs(read, decisions, results)
        if not jobs:
            raise results[0]
        job = jobs[0]
        while True:
            stream = self._expert_runnable(job.expert).stream(
                job.expert_input, self._expert_config(config, run_manager, job), **kwargs)
            try:
                first = next(stream)
            except StopIteration:
                return
            except Exception as exc:
                if self._failed(job, exc):
                    continue
                raise self._give_up(job, exc) from None
            yield self._finish_chunk(first, job, True)
            for chunk in stream:
                yield self._finish_chunk(chunk, job, False)
            return

    async def _atransform(self, chunks: AsyncIterator[Any], run_manager: AsyncCallbackManagerForChainRun,
                          config: RunnableConfig, **kwargs: Any) -> AsyncIterator[Any]:
        results: list[Any] = [None]
        requests, read = self._jobs_for([await _agather(chunks)], [config], [run_manager], results,
                                        is_async=True)
        decisions = await aroute_traced(self.router, requests, tuple(self.experts)) if requests else []
        jobs = self._make_jobs(read, decisions, results)
        if not jobs:
            raise results[0]
        job = jobs[0]
        while True:
            stream = self._expert_runnable(job.expert).astream(
                job.expert_input, self._expert_config(config, run_manager, job), **kwargs)
            try:
                first = await anext(stream)  # noqa: F821 - builtin since Python 3.10
            except StopAsyncIteration:
                return
            except Exception as exc:
                if self._failed(job, exc):
                    continue
                raise self._give_up(job, exc) from None
            yield self._finish_chunk(first, job, True)
            async for chunk in stream:
                yield self._finish_chunk(chunk, job, False)
            return


def _gather(chunks: Iterator[Any]) -> Any:
    """The whole input of a transform (usually a single item)."""
    final: Any = None
    for chunk in chunks:
        if final is None:
            final = chunk
        else:
            try:
                final = final + chunk
            except TypeError:
                final = chunk
    return final


async def _agather(chunks: AsyncIterator[Any]) -> Any:
    final: Any = None
    async for chunk in chunks:
        if final is None:
            final = chunk
        else:
            try:
                final = final + chunk
            except TypeError:
                final = chunk
    return final


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
