"""The routing step shared by the LangChain components: per-call options from the runnable config,
one router pass per batch, and a traced run per routed input whose outputs are the decision.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from tryage.errors import ConfigurationError, ExpertMappingError, ExpertNotFoundError, require

require("langchain_core", "langchain", "langchain-core")

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager  # noqa: E402
from langchain_core.runnables import RunnableConfig  # noqa: E402
from langchain_core.runnables.config import run_in_executor  # noqa: E402
from langchain_core.runnables.utils import ConfigurableFieldSpec  # noqa: E402

from tryage.constraints import Filter  # noqa: E402
from tryage.flags import FlagParser  # noqa: E402
from tryage.objective import RoutingDecision  # noqa: E402

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


def check_router(router: Any) -> None:
    if not callable(getattr(router, "route_batch", None)):
        raise ConfigurationError(
            "router must be a tryage.TryageRouter or an object with route_batch(prompts, weights=...) "
            f"returning RoutingDecisions; got {type(router).__name__}")


def check_experts(router: Any, names: Sequence[str]) -> None:
    """The mapping's names must be exactly the router's experts (when the router lists them)."""
    if not names:
        raise ConfigurationError("experts must map at least one expert name to a runnable; got an empty mapping")
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ConfigurationError(f"expert names must be strings; got {', '.join(map(repr, bad))}")
    known = getattr(router, "experts", None)
    if known is not None and set(known) != set(names):
        raise ExpertMappingError(tuple(known), tuple(names))


def flag_parser(router: Any) -> FlagParser:
    parser = getattr(router, "flag_parser", None)
    return parser if isinstance(parser, FlagParser) else FlagParser()


def check_window(window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigurationError(f"window must be a positive integer (messages read for routing); got {window!r}")


def _check_weights(weights: Any, where: str) -> dict[str, float]:
    if not isinstance(weights, Mapping):
        raise ConfigurationError(f"{where} must be a dict of constraint name -> number; got {type(weights).__name__}")
    out: dict[str, float] = {}
    for name, value in weights.items():
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ConfigurationError(
                f"{where} must map constraint names to finite numbers; got {name!r}: {value!r}")
        out[name] = float(value)
    return out


@dataclass(frozen=True)
class CallOptions:
    """What one call asks of the router, beyond the prompt.

    Attributes:
        weights: Constraint weights (component defaults, then ``tryage_weights`` from the config).
        expert: An expert forced by ``tryage_expert``, or ``None``.
    """

    weights: Mapping[str, float] | None = None
    expert: str | None = None

    def key(self) -> str:
        return json.dumps([sorted((self.weights or {}).items()), self.expert])


def call_options(config: RunnableConfig, defaults: Mapping[str, float] | None,
                 names: Sequence[str]) -> CallOptions:
    """Read ``tryage_weights`` and ``tryage_expert`` from ``config["configurable"]``."""
    configurable = config.get("configurable") or {}
    weights = dict(_check_weights(defaults, "weights")) if defaults else {}
    if configurable.get(WEIGHTS_KEY) is not None:
        weights.update(_check_weights(configurable[WEIGHTS_KEY], f'config["configurable"]["{WEIGHTS_KEY}"]'))
    expert = configurable.get(EXPERT_KEY)
    if expert is not None and expert not in names:
        raise ExpertNotFoundError(str(expert), names)
    return CallOptions(weights or None, expert)


def _route_group(router: Any, texts: list[str], options: CallOptions) -> list[RoutingDecision]:
    kwargs: dict[str, Any] = {"weights": dict(options.weights) if options.weights else None}
    if options.expert is not None:
        kwargs["filters"] = [Filter(experts=(options.expert,), source=f"{EXPERT_KEY}={options.expert}")]
    decisions = list(router.route_batch(texts, **kwargs))
    if len(decisions) != len(texts):
        raise ConfigurationError(
            f"router.route_batch returned {len(decisions)} decisions for {len(texts)} prompts")
    return decisions


def _check_decision(decision: Any, names: Sequence[str]) -> RoutingDecision:
    if not isinstance(decision, RoutingDecision):
        raise ConfigurationError(f"router.route_batch must return RoutingDecisions; got {type(decision).__name__}")
    if decision.expert not in names:
        raise ExpertNotFoundError(decision.expert, names)
    return decision


@dataclass
class RouteRequest:
    """One input to route, and where its traced run goes.

    Attributes:
        text: The text to route on.
        options: Weights and forced expert for this input.
        manager: The callback manager the routing run starts from.
        run_name: Name of the routing run.
        run_id: Id for the routing run, or ``None`` for a fresh one.
        tags: Tags of the routing run (not inherited by anything else).
    """

    text: str
    options: CallOptions
    manager: CallbackManager | AsyncCallbackManager
    run_name: str = ROUTE_RUN_NAME
    run_id: UUID | None = None
    tags: tuple[str, ...] = ()


def _prechecked(router: Any, requests: Sequence[RouteRequest],
                results: list[RoutingDecision | Exception]) -> dict[str, list[int]]:
    """Groups of requests to route together; a request whose flags are invalid or whose prompt is
    empty once flags are removed fails alone (the router would reject its whole batch)."""
    parser = getattr(router, "flag_parser", None)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        if isinstance(parser, FlagParser):
            try:
                if not parser.parse(r.text).prompt.strip():
                    raise ConfigurationError(f"cannot route an empty prompt once its flags are removed: {r.text!r}")
            except Exception as exc:  # noqa: BLE001 - reported for this request only
                results[i] = exc
                continue
        groups.setdefault(r.options.key(), []).append(i)
    return groups


def _run_inputs(r: RouteRequest) -> dict[str, Any]:
    inputs: dict[str, Any] = {"prompt": r.text, "weights": dict(r.options.weights or {})}
    if r.options.expert is not None:
        inputs["expert"] = r.options.expert
    return inputs


def _store(results: list[RoutingDecision | Exception], indices: list[int], decisions: Any,
           names: Sequence[str]) -> None:
    for i, d in zip(indices, decisions):
        try:
            results[i] = d if isinstance(d, Exception) else _check_decision(d, names)
        except Exception as exc:  # noqa: BLE001
            results[i] = exc


def route_traced(router: Any, requests: Sequence[RouteRequest],
                 names: Sequence[str]) -> list[RoutingDecision | Exception]:
    """Route every request, one router pass per distinct set of options (normally one).

    Each request gets its own run (name ``run_name``); its outputs are ``decision.to_dict()``. A
    failure is returned in place of the decision, and recorded on that request's run.
    """
    runs = []
    for r in requests:
        if r.tags:
            r.manager.add_tags(list(r.tags), inherit=False)
        runs.append(r.manager.on_chain_start(None, _run_inputs(r), name=r.run_name, run_id=r.run_id))
    results: list[RoutingDecision | Exception] = [None] * len(requests)  # type: ignore[list-item]
    for indices in _prechecked(router, requests, results).values():
        try:
            decisions: Any = _route_group(router, [requests[i].text for i in indices], requests[indices[0]].options)
        except Exception as exc:  # noqa: BLE001 - returned to the caller, who decides to raise
            decisions = [exc] * len(indices)
        _store(results, indices, decisions, names)
    for run, result in zip(runs, results):
        if isinstance(result, Exception):
            run.on_chain_error(result)
        else:
            run.on_chain_end(result.to_dict())
    return results


async def aroute_traced(router: Any, requests: Sequence[RouteRequest],
                        names: Sequence[str]) -> list[RoutingDecision | Exception]:
    """:func:`route_traced` for async callers; the router runs in an executor thread."""
    runs = []
    for r in requests:
        if r.tags:
            r.manager.add_tags(list(r.tags), inherit=False)
        runs.append(await r.manager.on_chain_start(None, _run_inputs(r), name=r.run_name, run_id=r.run_id))
    results: list[RoutingDecision | Exception] = [None] * len(requests)  # type: ignore[list-item]
    for indices in _prechecked(router, requests, results).values():
        texts = [requests[i].text for i in indices]
        try:
            decisions: Any = await run_in_executor(None, _route_group, router, texts, requests[indices[0]].options)
        except Exception as exc:  # noqa: BLE001
            decisions = [exc] * len(indices)
        _store(results, indices, decisions, names)
    for run, result in zip(runs, results):
        if isinstance(result, Exception):
            await run.on_chain_error(result)
        else:
            await run.on_chain_end(result.to_dict())
    return results


def candidates(decision: RoutingDecision, *, fallback: bool, max_fallbacks: int | None,
               names: Iterable[str]) -> tuple[str, ...]:
    """The experts to try in order: the choice, then (with fallback) the rest of the ranking."""
    if not fallback:
        return (decision.expert,)
    known = set(names)
    rest = [e for e in decision.ranking if e != decision.expert and e in known]
    if max_fallbacks is not None:
        rest = rest[:max_fallbacks]
    return (decision.expert, *rest)


__all__ = ["CONFIG_SPECS", "EXPERT_KEY", "ROUTE_RUN_NAME", "WEIGHTS_KEY", "CallOptions", "RouteRequest",
           "aroute_traced", "call_options", "candidates", "check_experts", "check_router", "check_window",
           "expert_tag", "flag_parser", "route_traced"]
