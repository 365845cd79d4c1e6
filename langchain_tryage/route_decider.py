"""``TryageRouteDecider``: a runnable that only routes, for LangGraph conditional edges.

Example::

    from langgraph.graph import StateGraph, MessagesState, START
    from langchain_tryage import TryageRouteDecider

    graph = StateGraph(MessagesState)
    graph.add_node("code", code_node)
    graph.add_node("general", general_node)
    graph.add_conditional_edges(START, TryageRouteDecider(router), ["code", "general"])

By default it reads ``state["messages"]`` and returns the chosen expert's name, which LangGraph
uses as the next node (give ``path_map`` to map expert names to node names). ``output="send"``
returns ``Send(<expert>, <state with flags removed from every user turn>)``, so the next node sees
the state as the expert of a :class:`~langchain_tryage.TryageRouterChain` does, without flags.
``output="decision"`` returns the :class:`~tryage.RoutingDecision`, ``output="dict"`` its
``to_dict()``. Either way its traced run's outputs are ``decision.to_dict()``. Per-call
``tryage_weights`` / ``tryage_expert`` are read from ``config["configurable"]`` as for
:class:`~langchain_tryage.TryageRouterChain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain_tryage._inputs import read_input, strip_input
from langchain_tryage._routing import (
    CONFIG_SPECS,
    Engine,
    Job,
    adrive,
    call_options,
    check_router,
    check_weights,
    check_window,
    drive,
    map_experts,
    route,
    turns_of,
)

from langchain_core.runnables import RunnableConfig, RunnableSerializable  # noqa: I001
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    get_config_list,
)
from langchain_core.runnables.utils import ConfigurableFieldSpec
from pydantic import ConfigDict, PrivateAttr

from tryage.errors import ConfigurationError, require
from tryage.objective import RoutingDecision
from tryage.router import BatchRouter, ExpertMap, Router

_OUTPUTS = ("expert", "send", "decision", "dict")


class TryageRouteDecider(RunnableSerializable[Any, Any]):
    """Choose an expert for the input and return the choice; no expert is called.

    Args:
        router: A :class:`tryage.TryageRouter`, or any :class:`tryage.router.Router` (a
            :class:`tryage.router.BatchRouter` with ``experts=``).
        experts: Names the decision may take (graph nodes); defaults to ``router.experts``. A
            subset routes only among those; ``expert_map`` maps your names to router experts.
        expert_map: ``{your name: router expert}`` for names that are not router experts.
        input_key: For dict inputs (graph states), the key holding the prompt or messages.
        window: Messages the router reads (see :class:`~langchain_tryage.TryageRouterChain`).
        weights: Default constraint weights.
        output: ``"expert"`` (the name), ``"send"`` (a LangGraph ``Send`` with the flag-free
            state), ``"decision"`` (the ``RoutingDecision``) or ``"dict"``.
    """

    router: BatchRouter
    experts: tuple[str, ...]
    expert_map: dict[str, str] | None = None
    input_key: str = "messages"
    window: int = 1
    weights: dict[str, float] | None = None
    output: Literal["expert", "send", "decision", "dict"] = "expert"
    _names: ExpertMap = PrivateAttr()

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, router: Any = None, *, experts: Sequence[str] | None = None, **kwargs: Any) -> None:
        check_router(router)
        if experts is None:
            if not isinstance(router, Router):
                raise ConfigurationError(
                    "this router does not list its experts; pass experts=[...] with the names it may choose")
            experts = router.experts
        names = map_experts(router, tuple(experts), kwargs.get("expert_map"))
        check_window(kwargs.get("window", 1))
        if kwargs.get("weights") is not None:
            kwargs["weights"] = check_weights(router, kwargs["weights"], "weights")
        if kwargs.get("output", "expert") not in _OUTPUTS:
            raise ConfigurationError(f"output must be one of {_OUTPUTS}; got {kwargs['output']!r}")
        if kwargs.get("output") == "send":
            require("langgraph", "dev")
        super().__init__(router=router, experts=tuple(experts), **kwargs)
        self._names = names

    @property
    def OutputType(self) -> Any:  # noqa: N802 - LangChain's name
        return {"expert": str, "send": Any, "decision": RoutingDecision, "dict": dict}[self.output]

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return list(CONFIG_SPECS)

    def _engine(self, inputs: list[Any], configs: list[RunnableConfig], *, is_async: bool,
                return_exceptions: bool) -> Engine:
        results: list[Any] = [None] * len(inputs)
        jobs = []
        for i, (inp, cfg) in enumerate(zip(inputs, configs)):
            try:
                routable = read_input(inp, input_key=self.input_key, window=self.window)
                manager = (get_async_callback_manager_for_config if is_async else get_callback_manager_for_config)(cfg)
                jobs.append(Job(i, routable.text, call_options(cfg, self.weights, self._names), manager, routable,
                                run_name=cfg.get("run_name") or self.get_name(), run_id=cfg.pop("run_id", None)))
            except Exception as exc:  # noqa: BLE001 - returned or raised per input
                results[i] = exc
        for job, outcome in zip(jobs, (yield from route(self.router, jobs, self._names))):
            try:
                results[job.index] = outcome if isinstance(outcome, Exception) else self._output(outcome)
            except Exception as exc:  # noqa: BLE001
                results[job.index] = exc
        if not return_exceptions:
            for r in results:
                if isinstance(r, Exception):
                    raise r
        return results

    def _output(self, job: Job) -> Any:
        decision = job.decision
        assert decision is not None  # noqa: S101 - set by route()
        if self.output == "expert":
            return job.expert
        if self.output == "send":
            from langgraph.types import Send

            return Send(job.expert, strip_input(job.payload, decision, turns_of(self.router)))
        return decision if self.output == "decision" else decision.to_dict()

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # noqa: A002
        return self.batch([input], config)[0]

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # noqa: A002
        return (await self.abatch([input], config))[0]

    def batch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Route every input with one router pass; each input gets its own traced run."""
        configs = get_config_list(config, len(inputs))
        return drive(self._engine(inputs, configs, is_async=False, return_exceptions=return_exceptions))

    async def abatch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        configs = get_config_list(config, len(inputs))
        return await adrive(self._engine(inputs, configs, is_async=True, return_exceptions=return_exceptions))


__all__ = ["TryageRouteDecider"]
