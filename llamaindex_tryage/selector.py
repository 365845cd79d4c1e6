"""A LlamaIndex selector that routes with a trained Tryage router.

:class:`TryageSelector` plugs into ``RouterQueryEngine(selector=..., query_engine_tools=[...])``
and ``RouterRetriever(selector=..., retriever_tools=[...])``. Each choice (a ``ToolMetadata``) is an
expert of the router, matched by the tool's ``name`` or through ``expert_map``; the selector asks the
router for a decision restricted to the offered experts and returns the best one (or the
``max_outputs`` best). No LLM call, no description matching: the router's predicted loss plus the
constraint penalties decide, and the result's ``reason`` says so.

Constraint weights, from weakest to strongest:

1. the router's own ``weights``;
2. the selector's ``weights=...``;
3. ``with selector.using(weights=...)`` around a query, or ``selector.select(..., weights=...)``;
4. flags in the query text, e.g. ``"Summarise the contract [Flag: smallest model]"``.

Flags are removed from the query the chosen engine receives: with ``rewrite_query=True`` (the
default) the selector sets the ``QueryBundle``'s ``query_str`` to the cleaned text, and
``RouterQueryEngine``/``RouterRetriever`` hand that same bundle to the engines they select. (A
``QueryBundle`` you pass in yourself is modified in place.)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from tryage.constraints import ConstraintSet, Filter
from tryage.errors import ConfigurationError, ExpertNotFoundError, _options, require
from tryage.experts import Expert, ExpertLibrary
from tryage.objective import ExpertScore, RoutingDecision
from tryage.predictors import DescriptionSimilarityPredictor
from tryage.router import ExpertMap, Router, TryageRouter, check_router

require("llama_index.core", "llamaindex", "llama-index-core")

from llama_index.core.base.base_selector import (  # noqa: E402
    BaseSelector,
    MetadataType,
    SelectorResult,
    SingleSelection,
)
from llama_index.core.bridge.pydantic import ConfigDict, Field  # noqa: E402
from llama_index.core.prompts.mixin import PromptDictType  # noqa: E402
from llama_index.core.schema import QueryBundle, QueryType  # noqa: E402
from llama_index.core.tools.types import ToolMetadata  # noqa: E402

FALLBACKS = ("description_similarity",)

# Per-selector overrides set by ``TryageSelector.using``: {id(selector): (weights, filters)}.
_OVERRIDES: ContextVar[Mapping[int, tuple[Mapping[str, float], tuple[Filter, ...]]]] = ContextVar(
    "tryage_llamaindex_overrides", default=MappingProxyType({}))
_PLAN_CACHE_SIZE = 64


def _check_selection(choices: object, query: object) -> None:
    """What LlamaIndex's ``select`` would refuse with its own ``TypeError``/``ValueError``, as Tryage's one line."""
    if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence):
        raise ConfigurationError(f"choices must be a list of ToolMetadata or strings, got {type(choices).__name__}: "
                                 f"{choices!r:.60}")
    if (bad := next((i for i, c in enumerate(choices) if not isinstance(c, (ToolMetadata, str))), None)) is not None:
        raise ConfigurationError(f"choice {bad} is {type(choices[bad]).__name__}: {choices[bad]!r:.60}; each choice "
                                 "is a ToolMetadata or a string")
    if not isinstance(query, (str, QueryBundle)):
        raise ConfigurationError(f"query must be a string or a QueryBundle, got {type(query).__name__}: {query!r:.60}")


class UnknownChoiceError(ExpertNotFoundError):
    """A choice offered to the selector names no expert of the router.

    Attributes:
        choice: The choice's ``name`` (``None`` when it has none).
        index: Its position among the offered choices.
        name: The expert name it was looked up as.
        available: The router's experts.
    """

    def __init__(self, choice: str | None, index: int, expert: str | None, available: Sequence[str]) -> None:
        super().__init__(expert or "", available)
        self.choice = choice
        self.index = index
        what = (f"choice {index} has no name" if choice is None else
                f"choice {index} ({choice!r}) maps to {expert!r}, which is not an expert of the router"
                if expert != choice else f"choice {index} ({choice!r}) is not an expert of the router")
        self.args = (
            f"{what}; the router knows: {_options(self.available)}. Name the tool after an expert, "
            "map it with TryageSelector(..., expert_map={tool name: expert name}), or score unknown "
            "choices by description with fallback='description_similarity'",
        )


class TryageSelectorResult(SelectorResult):
    """A ``SelectorResult`` that keeps the whole routing decision behind it.

    Attributes:
        selections: The chosen choices, best first (``index`` into the offered choices, ``reason``).
        decision: The router's :class:`~tryage.RoutingDecision` over the offered experts.
        experts: The expert behind each selection, in the same order.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    decision: RoutingDecision
    experts: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    """How one list of choices is routed: the expert per choice (in the core's map, in choice order)
    and the router that scores them."""

    experts: ExpertMap
    router: Router


class TryageSelector(BaseSelector):
    """Select query engines or retrievers with a Tryage router.

    Args:
        router: A :class:`~tryage.TryageRouter` whose experts are the choices you will offer, or any
            object of the :class:`tryage.router.Router` protocol (``fallback`` needs a ``TryageRouter``).
        expert_map: ``{tool name: expert name}`` for tools not named after their expert. Tools
            not in the map are looked up by their own ``name``.
        weights: Constraint weights λ for every query (e.g. ``{"size": 0.3}``); see the module
            docstring for what overrides them.
        filters: Hard filters for every query (:class:`~tryage.Filter`).
        max_outputs: How many choices to select, best first. ``1`` is single selection; more
            makes ``RouterQueryEngine`` query each selected engine and summarise the answers.
        fallback: What to do with a choice that names no expert. ``None`` (the default) raises
            :class:`UnknownChoiceError`. ``"description_similarity"`` gives such a choice the
            predicted loss ``1 - cos(query, description)``, both embedded with the router's
            encoder (``predictor.encode``, else ``predictor.embed``); this is on the scale of the
            router's losses only when those lie in [0, 1] (e.g. ``1 - accuracy``). Unknown choices
            have no metadata, so a non-zero metadata constraint (``size``...) raises
            :class:`~tryage.MissingMetadataError` for them.
        rewrite_query: Replace the ``QueryBundle``'s ``query_str`` by the query without its flags,
            so the selected engines never see them.

    Example::

        selector = TryageSelector.from_defaults(router, expert_map={"contracts": "legal"})
        engine = RouterQueryEngine(selector=selector, query_engine_tools=tools, llm=llm)
        response = engine.query("Is this clause enforceable? [Flag: smallest model]")
        response.metadata["selector_result"].decision.explain()
    """

    def __init__(self, router: Router, *, expert_map: Mapping[str, str] | None = None,
                 weights: Mapping[str, float] | None = None, filters: Sequence[Filter] = (),
                 max_outputs: int = 1, fallback: str | None = None, rewrite_query: bool = True) -> None:
        router = check_router(router)
        mapping = ExpertMap.check_map(expert_map, router.experts)
        if isinstance(max_outputs, bool) or not isinstance(max_outputs, int) or max_outputs < 1:
            raise ConfigurationError(f"max_outputs must be an integer >= 1, got {max_outputs!r}")
        if fallback is not None and fallback not in FALLBACKS:
            raise ConfigurationError(f"fallback must be None or one of {list(FALLBACKS)}, got {fallback!r}")
        if fallback is not None and not isinstance(router, TryageRouter):
            raise ConfigurationError(f"fallback={fallback!r} scores choices with a tryage.TryageRouter's encoder; "
                                     f"got a {type(router).__name__}")
        for f in filters:
            if not isinstance(f, Filter):
                raise ConfigurationError(f"filters must be tryage.Filter objects, got {type(f).__name__}")
        self.router = router
        self.expert_map: Mapping[str, str] = MappingProxyType(mapping)
        self.weights: Mapping[str, float] = MappingProxyType(router.constraints.check_weights(weights or {}))
        self.filters: tuple[Filter, ...] = tuple(filters)
        self.max_outputs = max_outputs
        self.fallback = fallback
        self.rewrite_query = bool(rewrite_query)
        self._plans: dict[tuple[tuple[str | None, str], ...], _Plan] = {}

    @classmethod
    def from_defaults(cls, router: Router | str | os.PathLike[str] | None = None, *,
                      expert_map: Mapping[str, str] | None = None, weights: Mapping[str, float] | None = None,
                      filters: Sequence[Filter] = (), max_outputs: int = 1, fallback: str | None = None,
                      rewrite_query: bool = True) -> TryageSelector:
        """A selector over ``router``: a :class:`~tryage.TryageRouter`, the folder of a saved router
        (:meth:`TryageRouter.from_pretrained`), or ``None`` for the router shipped with Tryage
        (:meth:`TryageRouter.default`). The other arguments are the constructor's."""
        if router is None:
            router = TryageRouter.default()
        elif isinstance(router, (str, os.PathLike)):
            router = TryageRouter.from_pretrained(router)
        return cls(router, expert_map=expert_map, weights=weights, filters=filters, max_outputs=max_outputs,
                   fallback=fallback, rewrite_query=rewrite_query)

    # -- prompt hooks: a Tryage selector has no prompt ----------------------------------------
    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        """Nothing to update: routing uses no prompt template."""

    # -- per-query weights -----------------------------------------------------------------------
    @contextmanager
    def using(self, *, weights: Mapping[str, float] | None = None,
              filters: Sequence[Filter] = ()) -> Iterator[TryageSelector]:
        """Extra weights and filters for the queries run inside the ``with`` block.

        They override the selector's weights (flags in a query still override them). Blocks nest;
        each asyncio task sees the values of the context that created it::

            with selector.using(weights={"size": 1.0}):
                engine.query("...")
        """
        clean = self.router.constraints.check_weights(weights or {})
        for f in filters:
            if not isinstance(f, Filter):
                raise ConfigurationError(f"filters must be tryage.Filter objects, got {type(f).__name__}")
        current = _OVERRIDES.get()
        outer_weights, outer_filters = current.get(id(self), ({}, ()))
        token = _OVERRIDES.set(MappingProxyType(
            {**current, id(self): ({**outer_weights, **clean}, (*outer_filters, *filters))}))
        try:
            yield self
        finally:
            _OVERRIDES.reset(token)

    def select(self, choices: Sequence[MetadataType], query: QueryType, *,
               weights: Mapping[str, float] | None = None, filters: Sequence[Filter] = ()) -> SelectorResult:
        """Select among ``choices`` for ``query``; ``weights``/``filters`` apply to this call only."""
        _check_selection(choices, query)
        with self.using(weights=weights, filters=filters):
            return super().select(choices, query)

    async def aselect(self, choices: Sequence[MetadataType], query: QueryType, *,
                      weights: Mapping[str, float] | None = None,
                      filters: Sequence[Filter] = ()) -> SelectorResult:
        """Async :meth:`select`."""
        _check_selection(choices, query)
        with self.using(weights=weights, filters=filters):
            return await super().aselect(choices, query)

    # -- selection ---------------------------------------------------------------------------
    def _select(self, choices: Sequence[ToolMetadata], query: QueryBundle) -> SelectorResult:
        return self._choose(choices, query)

    async def _aselect(self, choices: Sequence[ToolMetadata], query: QueryBundle) -> SelectorResult:
        # The router runs a neural network: keep it off the event loop.
        return await asyncio.to_thread(self._choose, choices, query)

    def _choose(self, choices: Sequence[ToolMetadata], query: QueryBundle) -> TryageSelectorResult:
        if not isinstance(query.query_str, str) or not query.query_str.strip():
            raise ConfigurationError(
                f"TryageSelector routes on the query text, got query_str={query.query_str!r}"
                + (" (image-only queries are not supported)" if query.image_path else ""))
        plan = self._plan(choices)
        call_weights, call_filters = _OVERRIDES.get().get(id(self), ({}, ()))
        (routed,) = plan.router.route_batch([query.query_str], weights={**self.weights, **call_weights},
                                            filters=(*self.filters, *call_filters, plan.experts.offered))
        decision = cast(RoutingDecision, routed)  # without return_exceptions, route_batch raises a prompt's error
        index_of = {expert: i for i, expert in enumerate(plan.experts.to_router.values())}
        ranking = decision.ranking[: self.max_outputs]
        scores = {s.expert: s for s in decision.scores}
        selections = [
            SingleSelection(index=index_of[expert],
                            reason=self._reason(decision, scores[expert], rank, choices[index_of[expert]].name))
            for rank, expert in enumerate(ranking)
        ]
        if self.rewrite_query and decision.flags:
            query.query_str = decision.prompt
        return TryageSelectorResult(selections=selections, decision=decision, experts=list(ranking))

    @staticmethod
    def _reason(decision: RoutingDecision, score: ExpertScore, rank: int, tool: str | None) -> str:
        if rank == 0:
            text = decision.explain()
        else:
            text = f"ranked {rank + 1}: {score.explain()}"
        return text if tool is None or tool == score.expert else f"{text}; tool {tool!r}"

    def _plan(self, choices: Sequence[ToolMetadata]) -> _Plan:
        key = tuple((c.name, c.description) for c in choices)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._build_plan(choices)
            if len(self._plans) >= _PLAN_CACHE_SIZE:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        return plan

    def _build_plan(self, choices: Sequence[ToolMetadata]) -> _Plan:
        if not choices:
            raise ConfigurationError("TryageSelector got no choices to select from")
        known = self.router.experts

        def unknown(index: int, name: str | None, expert: str | None) -> Exception:
            return UnknownChoiceError(name, index, expert, known)

        experts, missing = ExpertMap.for_choices([c.name for c in choices], self.expert_map, known=known,
                                                 unknown=None if self.fallback is not None else unknown)
        if not missing:
            return _Plan(experts, self.router)
        # Score the unknown choices by description; their experts carry no metadata. The router
        # gets its own ConstraintSet copy so penalties cached for this library die with it.
        base = self.router
        if not isinstance(base, TryageRouter):  # the constructor refuses a fallback without one
            raise ConfigurationError(f"fallback={self.fallback!r} needs a tryage.TryageRouter")
        names = tuple(experts.to_router.values())
        extra = [Expert(name=names[i], description=choices[i].description) for i in missing]
        predictor = DescriptionSimilarityPredictor(base.predictor, [e.name for e in extra],
                                                   [e.description for e in extra])
        router = TryageRouter(
            predictor, ExpertLibrary([*base.library, *extra]),
            constraints=ConstraintSet({name: base.constraints[name] for name in base.constraints}),
            weights=base.weights, filters=base.filters, flag_parser=base.flag_parser)
        return _Plan(experts, router)

    def __repr__(self) -> str:
        return (f"TryageSelector(experts={list(self.router.experts)}, expert_map={dict(self.expert_map)}, "
                f"weights={dict(self.weights)}, max_outputs={self.max_outputs}, fallback={self.fallback!r})")


__all__ = ["FALLBACKS", "TryageSelector", "TryageSelectorResult", "UnknownChoiceError"]
