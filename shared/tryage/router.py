"""The router users call: flags + loss predictor + constraints → :class:`RoutingDecision`.

:class:`TryageRouter` is framework-free and works with any *loss predictor*: an object with an
``experts`` tuple (its output columns) and ``predict_losses(prompts) -> ndarray (n, k)``. The
perceptive predictor (:class:`tryage.predictors.PerceptivePredictor`) is one; the baselines of
:mod:`tryage.predictors` (oracle, best single, kNN) are others.

The adapters (``langchain_tryage``, ``llamaindex_tryage``) are written against the :class:`Router`
protocol, not this class: what they call of a router, named once. :class:`ExpertMap` is the one map
from the user's names (of runnables, chat models, query engines) to a router's experts they share.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from tryage.constraints import Constraint, ConstraintSet, Filter
from tryage.errors import (
    ConfigurationError,
    ExpertMappingError,
    ExpertNotFoundError,
    FlagError,
    MissingMetadataError,
    RouterMismatchError,
    TryageError,
)
from tryage.experts import Expert, ExpertLibrary
from tryage.flags import FlagParser, ParsedFlags
from tryage.objective import (Exploration, Policy, RoutingDecision, build_decision, check_filters, check_min_quality,
                              resolve_policy)
from tryage.predictors import LossPredictor
from tryage.predictors.calibration import quality_of

if TYPE_CHECKING:  # pragma: no cover
    from tryage.feedback import Feedback, UpdateReport
    from tryage.qtable import QTable


class TryageRouter:
    """Route prompts to experts under constraints and per-prompt flags.

    Args:
        predictor: A loss predictor (see :class:`LossPredictor`).
        library: Metadata of the predictor's experts. Defaults to bare experts (names only), which
            is enough when no metadata-based constraint is used.
        constraints: Constraints known to the router; defaults to ``size``, ``recency``, ``cost``, ``latency``.
            Pass extra :class:`Constraint` objects to add user-defined ones.
        weights: Default constraint weights λ (per-call weights and flags override them).
        filters: Default hard filters.
        flag_parser: Parser for ``[Flag: ...]``; one with the router's constraint names by default.
        output_lengths: An :class:`tryage.predictors.output_length.OutputLengthPredictor`: when given, the
            ``cost`` penalty of a prompt is its predicted cost on each expert (min-max scaled over
            the experts) instead of the constant price per token.
        exploration: Opt-in :class:`tryage.objective.Exploration` (off by default): sometimes route to
            an eligible expert other than the best-scoring one so feedback covers more than the
            favourite; decisions record it. The router draws from one stream seeded by it.
        min_quality: Default quality floor in [0, 1] (``None``: none): among the experts whose predicted
            probability of a correct answer reaches it, the constraints decide (see :mod:`tryage.objective`).
            The probabilities are the predictor's calibrated ones (:mod:`tryage.predictors.calibration`);
            a call's ``min_quality`` and a ``[Flag: min quality 0.9]`` override it.
    """

    def __init__(self, predictor: LossPredictor, library: ExpertLibrary | None = None, *,
                 constraints: ConstraintSet | Sequence[Constraint] | None = None,
                 weights: Mapping[str, float] | None = None, filters: Sequence[Filter] = (),
                 flag_parser: FlagParser | None = None, output_lengths: object | None = None,
                 exploration: Exploration | None = None, min_quality: float | None = None) -> None:
        if not isinstance(predictor, LossPredictor):
            raise ConfigurationError(
                f"predictor must have an 'experts' tuple and a 'predict_losses' method; got {type(predictor).__name__}")
        self.predictor = predictor
        names = tuple(predictor.experts)
        if library is None:
            library = ExpertLibrary.from_names(names)
        elif set(library.names) != set(names):
            raise RouterMismatchError(names, library.names)
        self.library = library.reorder(names) if library.names != names else library
        if isinstance(constraints, ConstraintSet):
            self.constraints = constraints
        else:
            extra = list(constraints or [])
            base = ConstraintSet()
            for c in extra:
                base = base.with_constraint(c)
            self.constraints = base
        self.weights = self.constraints.check_weights(weights or {})
        self.filters = check_filters(filters)
        self.flag_parser = flag_parser or FlagParser(tuple(self.constraints))
        if output_lengths is not None and not hasattr(output_lengths, "predict_costs"):
            raise ConfigurationError("output_lengths must have a predict_costs(prompts, library) method, "
                                     f"got {type(output_lengths).__name__}")
        self.output_lengths = output_lengths
        if exploration is not None and not isinstance(exploration, Exploration):
            raise ConfigurationError("exploration must be None or a tryage.objective.Exploration, "
                                     f"got {type(exploration).__name__}")
        self.exploration = exploration
        self.min_quality = check_min_quality(min_quality)
        self._exploration_rng = exploration.generator() if exploration is not None else None

    @property
    def experts(self) -> tuple[str, ...]:
        return self.library.names

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, library: ExpertLibrary | None = None,
                        device: str | None = None, runtime: str = "torch", **kwargs) -> TryageRouter:
        """Load a saved perceptive predictor folder; its ``experts.json`` is the library unless given.

        The folder's ``config.json`` names the encoder, which may be a local folder outside ``path`` or a
        Hub id; check it before loading a folder you did not make (see the README, "A router folder from
        someone else"). Weights are read as safetensors only, never unpickled. ``runtime="onnx"`` runs the
        encoder in ONNX Runtime (same embeddings, 0.6–0.8× the batch-1 latency on a CPU; ``tryage[onnx]``).
        """
        from tryage.predictors import PerceptivePredictor

        predictor = PerceptivePredictor.from_pretrained(path, device=device, runtime=runtime)
        if library is None:
            library = predictor.library_
        return cls(predictor, library, **kwargs)

    @classmethod
    def default(cls, name: str | None = None, **kwargs) -> TryageRouter:
        """A router shipped inside the package: ``"paper-domains"`` (the default) or ``"open-llms"``.

        See :mod:`tryage.defaults`; an unknown ``name`` is a :class:`ConfigurationError` listing them.
        """
        from tryage.defaults import default_router_path

        return cls.from_pretrained(default_router_path(name), **kwargs)

    # -- routing -------------------------------------------------------------------------------
    def parse(self, prompt: str) -> ParsedFlags:
        """Flags of ``prompt`` and its cleaned text (no prediction)."""
        return self.flag_parser.parse(prompt)

    def route(self, prompt: str, *, weights: Mapping[str, float] | None = None,
              filters: Sequence[Filter] = (), min_quality: float | None = None) -> RoutingDecision:
        """Choose the expert for one prompt. Flags in the prompt override ``weights`` and ``min_quality``."""
        return self.route_batch([prompt], weights=weights, filters=filters, min_quality=min_quality)[0]

    def route_batch(self, prompts: Iterable[str], *, weights: Mapping[str, float] | None = None,
                    filters: Sequence[Filter] = (), min_quality: float | None = None,
                    return_exceptions: bool = False) -> list[RoutingDecision | TryageError]:
        """Route many prompts with one pass of the predictor.

        ``prompts`` is any iterable of strings (read once). With ``return_exceptions=True`` a prompt
        that fails on its own (a bad flag: :class:`~tryage.FlagError`; nothing left after its flags
        or not a string: :class:`~tryage.errors.ConfigurationError`) gives that exception at its
        position instead of raising, and the predictor runs once over the other prompts. ``min_quality``
        (this call's quality floor) overrides the router's; a prompt's ``[Flag: min quality ...]`` overrides both.
        """
        if isinstance(prompts, str):
            raise ConfigurationError("route_batch takes a list of prompts; use route() for a single string")
        filters = check_filters(filters)  # before they are hashed into a policy key
        call_floor = check_min_quality(min_quality)
        call_floor = self.min_quality if call_floor is None else call_floor
        prompts = list(prompts)
        base = {**self.weights, **self.constraints.check_weights(weights or {})}
        out: list[RoutingDecision | TryageError] = []
        parsed: dict[int, ParsedFlags] = {}
        for i, prompt in enumerate(prompts):
            try:
                p = self.flag_parser.parse(prompt)
                if not p.prompt.strip():
                    raise ConfigurationError(f"cannot route an empty prompt (after removing flags), got {prompt!r:.80}")
            except (ConfigurationError, FlagError) as exc:
                if not return_exceptions:
                    raise
                out.append(exc)
                continue
            parsed[i] = p
            out.append(None)  # type: ignore[arg-type]
        predicted = self.predict_losses([p.prompt for p in parsed.values()]) if parsed else []
        policies: dict[tuple, Policy] = {}  # prompts without flags share one policy
        parsed_prompts = [p.prompt for p in parsed.values()]
        costs = self._prompt_costs(parsed_prompts, [{**base, **p.weights} for p in parsed.values()])
        floors = [call_floor if p.min_quality is None else p.min_quality for p in parsed.values()]
        quality, calibrated = (quality_of(self.predictor, predicted) if any(f is not None for f in floors)
                               else (None, None))
        for j, ((i, p), row) in enumerate(zip(parsed.items(), predicted)):
            weights_p = {**base, **p.weights}
            filters_p = (*self.filters, *filters, *p.filters)
            key = (tuple(sorted(weights_p.items())), filters_p)
            try:
                if key not in policies:
                    policies[key] = policy_for(self.library, self.constraints, self.flag_parser, weights_p, filters_p)
                policy = policies[key]
                if costs is not None and weights_p.get("cost", 0.0) != 0.0:
                    policy = replace(policy, penalties=MappingProxyType(
                        {**policy.penalties, "cost": weights_p["cost"] * costs[j]}))
                decision = build_decision(row, self.library, self.constraints, original_prompt=prompts[i],
                                          prompt=p.prompt, flags=p.flags, policy=policy,
                                          quality=None if quality is None else quality[j],
                                          min_quality=floors[j], calibrated=calibrated)
                if self.exploration is not None:
                    decision = self.exploration.apply(decision, self._exploration_rng)
                out[i] = decision
            except TryageError as exc:
                if not return_exceptions:
                    raise
                out[i] = exc
        return out

    def _prompt_costs(self, prompts: list[str], weights: list[dict[str, float]]) -> np.ndarray | None:
        """Per-prompt cost penalties in [0, 1] (row-wise min-max of predicted USD), or ``None`` when unused."""
        if self.output_lengths is None or not any(w.get("cost", 0.0) != 0.0 for w in weights):
            return None
        usd = np.asarray(self.output_lengths.predict_costs(prompts, self.library), dtype=np.float64)
        low, span = usd.min(axis=1, keepdims=True), np.ptp(usd, axis=1, keepdims=True)
        return np.where(span > 0, (usd - low) / np.where(span > 0, span, 1.0), 0.0)

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray:
        """The predictor's losses, shape ``(n, k)``, columns in library order."""
        predicted = np.asarray(self.predictor.predict_losses(list(prompts)), dtype=np.float64)
        if predicted.shape != (len(prompts), len(self.library)):
            raise ConfigurationError(
                f"predictor returned shape {predicted.shape}, expected {(len(prompts), len(self.library))}")
        return predicted

    # -- production: feedback and a changing expert set (the predictor's partial_fit, add_output, remove_output) --
    def update(self, rows: Iterable[Feedback | Mapping[str, Any]] | QTable, **options: Any) -> UpdateReport:
        """Warm-start the predictor on feedback rows (prompt, expert, score|loss), in place; returns its report.

        See :meth:`tryage.predictors.PerceptivePredictor.partial_fit` for ``options`` (regularisation, epochs, ...).
        """
        return self._perceptive("update").partial_fit(rows, **options).last_update_

    def add_expert(self, name: str, rows: Iterable[Feedback | Mapping[str, Any]] | QTable,
                   metadata: Expert | Mapping[str, Any] | None = None, **options: Any) -> Expert:
        """Add an expert fitted from a few dozen calibration rows; see
        :meth:`tryage.predictors.PerceptivePredictor.add_output`. Returns its :class:`Expert` record."""
        predictor = self._perceptive("add_expert").add_output(name, rows, metadata, **options)
        expert = predictor.library_[name]
        self.library = ExpertLibrary([*self.library, expert])
        return expert

    def remove_expert(self, name: str) -> None:
        """Stop routing to ``name`` at once (its output column is dropped)."""
        self._perceptive("remove_expert").remove_output(name)
        self.library = self.library.subset(self.predictor.experts)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Any:
        """Save the perceptive predictor with this router's expert library."""
        predictor = self._perceptive("save_pretrained")
        predictor.library_ = self.library
        return predictor.save_pretrained(folder)

    def _perceptive(self, what: str) -> Any:
        if not hasattr(self.predictor, "head_"):
            raise ConfigurationError(f"{what} needs a trained PerceptivePredictor; this router uses "
                                     f"{type(self.predictor).__name__}")
        return self.predictor

    def __repr__(self) -> str:
        return f"TryageRouter(experts={list(self.experts)}, weights={self.weights})"


# -- the adapters' contract ----------------------------------------------------------------------
def policy_for(library: ExpertLibrary, constraints: ConstraintSet, flag_parser: FlagParser,
               weights: Mapping[str, float], filters: Sequence[Filter] = ()) -> Policy:
    """:func:`~tryage.objective.resolve_policy`; a constraint no expert has values for names the flags that work."""
    try:
        return resolve_policy(library, constraints, weights, filters)
    except MissingMetadataError as exc:
        if exc.supported is not None or set(exc.experts) != set(library.names):
            raise
        raise MissingMetadataError(exc.constraint, exc.experts, exc.field,
                                   supported=flag_parser.valid_flags(usable_constraints(library, constraints))) from None


def usable_constraints(library: ExpertLibrary, constraints: ConstraintSet) -> list[str]:
    """The constraints whose values every expert of ``library`` has (or that give unknown ones a value)."""
    usable = []
    for name, constraint in constraints.items():
        try:
            constraint.penalties(library)
        except MissingMetadataError:
            continue
        usable.append(name)
    return usable


def check_prompts(prompts: Sequence[str], library: ExpertLibrary, *, constraints: ConstraintSet | None = None,
                  weights: Mapping[str, float] | None = None) -> None:
    """Raise what :meth:`TryageRouter.route_batch` would for ``prompts`` (flags, weights, metadata), loading no model.

    The CLI calls it with a router folder's ``experts.json`` before the encoder loads.
    """
    constraints = ConstraintSet() if constraints is None else constraints
    parser = FlagParser(tuple(constraints))
    base = constraints.check_weights(weights or {})
    seen = set()
    for prompt in prompts:
        parsed = parser.parse(prompt)
        if not parsed.prompt.strip():
            raise ConfigurationError(f"cannot route an empty prompt (after removing flags), got {prompt!r:.80}")
        key = (tuple(sorted({**base, **parsed.weights}.items())), parsed.filters)
        if key not in seen:
            seen.add(key)
            policy_for(library, constraints, parser, dict(key[0]), parsed.filters)


@runtime_checkable
class BatchRouter(Protocol):
    """The least a LangChain component needs of a router: ``route_batch`` alone.

    Such a router lists no experts, so expert names are checked per call (against each decision),
    weights are the router's to check, and flags of earlier turns are read with the built-in flags.
    """

    def route_batch(self, prompts: Iterable[str], *, weights: Mapping[str, float] | None = None,
                    filters: Sequence[Filter] = (),
                    return_exceptions: bool = False) -> list[RoutingDecision | TryageError]:
        """One decision per prompt; with ``return_exceptions=True`` a prompt's own error in its place."""
        ...


@runtime_checkable
class Router(BatchRouter, Protocol):
    """What the adapters use of a router: :class:`TryageRouter` is one, and so is any object with these.

    Attributes:
        experts: The names the router may choose (checked against the user's names up front).
        constraints: Its constraints; ``constraints.check_weights`` checks the user's weights.
    """

    @property
    def experts(self) -> tuple[str, ...]: ...

    @property
    def constraints(self) -> ConstraintSet: ...

    def parse(self, prompt: str) -> ParsedFlags:
        """The prompt's flags and its text without them (the core's one flag remover)."""
        ...


def check_router(router: object, *, need: type = Router) -> Router | BatchRouter:
    """``router`` if it satisfies ``need`` (:class:`Router`, or :class:`BatchRouter` for LangChain's
    components), else a :class:`ConfigurationError` naming what it is and what would do."""
    if isinstance(router, need):
        return router  # type: ignore[return-value]
    what = ("an object with route_batch(prompts, *, weights, filters, return_exceptions) returning "
            "RoutingDecisions" if need is BatchRouter else
            "an object of the tryage.Router protocol (experts, constraints, parse, route_batch)")
    raise ConfigurationError(f"router must be a tryage.TryageRouter, got {type(router).__name__}; {what} will do")


@dataclass(frozen=True)
class ExpertMap:
    """The user's names for a router's experts, both ways: the one map both adapters route through.

    The user names what they offer (LangChain runnables, LlamaIndex tools); ``expert_map`` maps a
    name that is not a router expert to one. Build it with :meth:`build`.

    Attributes:
        to_router: User name -> router expert.
        to_user: Router expert -> user name.
        offered: A filter limiting the router to the offered experts, or ``None`` when all are (or
            the router does not list its experts).
    """

    to_router: Mapping[str, str]
    to_user: Mapping[str, str]
    offered: Filter | None

    @staticmethod
    def check_map(expert_map: Mapping[str, str] | None, known: Sequence[str] | None) -> dict[str, str]:
        """``expert_map`` as a dict: names are strings and, when the router lists its experts
        (``known``), each maps to one of them. The same one-line errors for every adapter."""
        mapping = _user_names(expert_map)
        for name, target in mapping.items() if known is not None else ():
            if target not in known:
                error = ExpertNotFoundError(target, known)
                error.args = (f"expert_map[{name!r}] = {target!r}: {error.args[0]}",)
                raise error
        return mapping

    @classmethod
    def build(cls, names: Sequence[Any], expert_map: Mapping[str, str] | None = None, *,
              known: Sequence[str] | None = None) -> ExpertMap:
        """The map of ``names`` (what the user offers) to the router's experts ``known`` (``None``:
        the router does not list them; names are then checked per call).

        Raises:
            ConfigurationError: no names, a name that is not a string, an ``expert_map`` entry for
                a name not offered, or two names standing for one router expert.
            ExpertNotFoundError: ``expert_map`` maps to an expert the router does not have.
            ExpertMappingError: a name is neither a router expert nor mapped to one.
        """
        if not names:
            raise ConfigurationError("experts must map at least one expert name to a runnable; got an empty mapping")
        if bad := [n for n in names if not isinstance(n, str)]:
            raise ConfigurationError(f"expert names must be strings; got {', '.join(map(repr, bad))}")
        if extra := [n for n in _user_names(expert_map) if n not in names]:
            raise ConfigurationError(
                f"expert_map names {', '.join(map(repr, extra))}, which is not among the experts given "
                f"({', '.join(map(repr, names))})")
        known = None if known is None else tuple(known)
        mapping = cls.check_map(expert_map, known)
        to_router = {n: mapping.get(n, n) for n in names}
        if known is not None and (unknown := [n for n in names if to_router[n] not in known]):
            error = ExpertMappingError(known, names)
            error.args = (f"experts {', '.join(map(repr, unknown))} are not the router's experts; name them "
                          f"after router experts or map them with expert_map={{name: router expert}}; the "
                          f"router's experts are: {', '.join(map(repr, known))}",)
            raise error
        to_user: dict[str, str] = {}
        for user, target in to_router.items():
            if target in to_user:
                raise ConfigurationError(
                    f"experts {to_user[target]!r} and {user!r} both stand for router expert {target!r}; "
                    "each router expert may stand behind one runnable")
            to_user[target] = user
        offered = None
        if known is not None and set(to_user) != set(known):
            offered = Filter(experts=tuple(to_user), source="offered experts")
        return cls(to_router, to_user, offered)

    @classmethod
    def for_choices(cls, names: Sequence[str | None], expert_map: Mapping[str, str], *, known: Sequence[str],
                    unknown: Callable[[int, str | None, str | None], Exception] | None = None,
                    ) -> tuple[ExpertMap, tuple[int, ...]]:
        """The map of positional choices (a LlamaIndex selector's tools, offered per query, some
        perhaps nameless) to the router's experts, and the positions of the choices that name none.

        Each choice stands for ``expert_map.get(name, name)``. One that is not in ``known`` raises
        ``unknown(position, name, expert looked up)`` when given; else it stands for an expert of
        its own, named after it (``"<choice i>"`` when nameless). The map's user names are those
        experts (a choice is found by its position in ``to_router``). Two choices for one expert
        raise a :class:`ConfigurationError` naming both.
        """
        experts: list[str] = []
        missing: list[int] = []
        for i, name in enumerate(names):
            expert = expert_map.get(name, name) if name is not None else None
            if expert is not None and expert in known:
                experts.append(expert)
                continue
            if unknown is not None:
                raise unknown(i, name, expert)
            experts.append(name if name is not None else f"<choice {i}>")
            missing.append(i)
        seen: dict[str, int] = {}
        for i, expert in enumerate(experts):
            if expert in seen:
                raise ConfigurationError(
                    f"choices {seen[expert]} ({names[seen[expert]]!r}) and {i} ({names[i]!r}) "
                    f"both map to expert {expert!r}; the router cannot tell them apart")
            seen[expert] = i
        pairs = {e: e for e in experts}
        return cls(pairs, dict(pairs), Filter(experts=tuple(experts), source="offered choices")), tuple(missing)


def _user_names(expert_map: Mapping[str, str] | None) -> dict[str, str]:
    """``expert_map`` as a dict whose keys are names (strings)."""
    if expert_map is not None and not isinstance(expert_map, Mapping):
        raise ConfigurationError(
            f"expert_map must be a dict of your name -> router expert; got {type(expert_map).__name__}")
    mapping = dict(expert_map or {})
    if bad := [n for n in mapping if not isinstance(n, str)]:
        raise ConfigurationError(f"expert_map keys must be names (str); got {', '.join(map(repr, bad))}")
    return mapping


__all__ = ["BatchRouter", "ExpertMap", "LossPredictor", "Router", "TryageRouter", "check_router"]
