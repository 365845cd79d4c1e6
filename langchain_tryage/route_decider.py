"""``TryageRouteDecider``: a runnable that only routes, for LangGraph conditional edges.

Example::

    from langgraph.graph import StateGraph, MessagesState, START
    from langchain_tryage import TryageRouteDecider

    graph = StateGraph(MessagesState)
    graph.add_node("code", code_node)
    graph.add_node("general", general_node)
    graph.add_conditional_edges(START, TryageRouteDecider(router), ["code", "general"])

By default it reads ``state["messages"]`` and returns the chosen expert's name, which LangGraph
uses as the next node (give ``path_map`` to map expert names to node names). ``output="decision"``
returns the :class:`~tryage.RoutingDecision`, ``output="dict"`` its ``to_dict()``. Either way its
traced run's outputs are ``decision.to_dict()``. Per-call ``tryage_weights`` / ``tryage_expert``
are read from ``config["configurable"]`` as for :class:`~langchain_tryage.TryageRouterChain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain_tryage._inputs import read_input
from langchain_tryage._routing import (
    CONFIG_SPECS,
    RouteRequest,
    aroute_traced,
    call_options,
    check_experts,
    check_router,
    check_window,
    route_traced,
)

from langchain_core.runnables import RunnableConfig, RunnableSerializable  # noqa: I001
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    get_config_list,
)
from langchain_core.runnables.utils import ConfigurableFieldSpec
from pydantic import ConfigDict

from tryage.errors import ConfigurationError
from tryage.objective import RoutingDecision

_OUTPUTS = ("expert", "decision", "dict")


class TryageRouteDecider(RunnableSerializable[Any, Any]):
    """Choose an expert for the input and return the choice; no expert is called.

    Args:
        router: A :class:`tryage.TryageRouter`, or any object with
            ``route_batch(prompts, weights=...) -> list[RoutingDecision]``.
        experts: Names the decision may take; defaults to ``router.experts``. A decision naming
            another expert raises :class:`~tryage.errors.ExpertNotFoundError`.
        input_key: For dict inputs (graph states), the key holding the prompt or messages.
        window: Messages the router reads (see :class:`~langchain_tryage.TryageRouterChain`).
        weights: Default constraint weights.
        output: ``"expert"`` (the name), ``"decision"`` (the ``RoutingDecision``) or ``"dict"``.
    """

    router: Any
    experts: tuple[str, ...]
    input_key: str = "messages"
    window: int = 1
    weights: dict[str, float] | None = None
    output: Literal["expert", "decision", "dict"] = "expert"

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init__(self, router: Any = None, *, experts: Sequence[str] | None = None, **kwargs: Any) -> None:
        check_router(router)
        if experts is None:
            experts = getattr(router, "experts", None)
            if experts is None:
                raise ConfigurationError(
                    "this router does not list its experts; pass experts=[...] with the names it may choose")
        check_experts(router, tuple(experts))
        check_window(kwargs.get("window", 1))
        if kwargs.get("output", "expert") not in _OUTPUTS:
            raise ConfigurationError(f"output must be one of {_OUTPUTS}; got {kwargs['output']!r}")
        super().__init__(router=router, experts=tuple(experts), **kwargs)

    @property
    def OutputType(self) -> Any:  # noqa: N802 - LangChain's name
        return {"expert": str, "decision": RoutingDecision, "dict": dict}[self.output]

    @property
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return list(CONFIG_SPECS)

    def _read_all(self, inputs: list[Any], configs: list[RunnableConfig],
                  managers: list[Any]) -> tuple[list[Any], list[RouteRequest], list[int]]:
        results: list[Any] = [None] * len(inputs)
        requests, where = [], []
        for i, (inp, cfg, manager) in enumerate(zip(inputs, configs, managers)):
            try:
                routable = read_input(inp, input_key=self.input_key, window=self.window)
                options = call_options(cfg, self.weights, self.experts)
            except Exception as exc:  # noqa: BLE001 - returned or raised per input
                results[i] = exc
                continue
            requests.append(RouteRequest(routable.text, options, manager, cfg.get("run_name") or self.get_name(),
                                         cfg.pop("run_id", None)))
            where.append(i)
        return results, requests, where

    def _output(self, decision: RoutingDecision | Exception, return_exceptions: bool) -> Any:
        if isinstance(decision, Exception):
            if return_exceptions:
                return decision
            raise decision
        if self.output == "expert":
            return decision.expert
        return decision if self.output == "decision" else decision.to_dict()

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # noqa: A002
        return self.batch([input], config)[0]

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:  # noqa: A002
        return (await self.abatch([input], config))[0]

    def batch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Route every input with one router pass; each input gets its own traced run."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        managers = [get_callback_manager_for_config(c) for c in configs]
        results, requests, where = self._read_all(inputs, configs, managers)
        for i, d in zip(where, route_traced(self.router, requests, self.experts) if requests else []):
            results[i] = d
        return [self._output(d, return_exceptions) for d in results]

    async def abatch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        managers = [get_async_callback_manager_for_config(c) for c in configs]
        results, requests, where = self._read_all(inputs, configs, managers)
        for i, d in zip(where, await aroute_traced(self.router, requests, self.experts) if requests else []):
            results[i] = d
        return [self._output(d, return_exceptions) for d in results]


__all__ = ["TryageRouteDecider"]
