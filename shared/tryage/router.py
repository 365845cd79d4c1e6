"""The router users call: flags + loss predictor + constraints → :class:`RoutingDecision`.

:class:`TryageRouter` is framework-free and works with any *loss predictor*: an object with an
``experts`` tuple (its output columns) and ``predict_losses(prompts) -> ndarray (n, k)``. The
perceptive predictor (:class:`tryage.predictors.PerceptivePredictor`) is one; the baselines of
:mod:`tryage.predictors` (oracle, best single, kNN) are others.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from tryage.constraints import Constraint, ConstraintSet, Filter
from tryage.errors import ConfigurationError, FlagError, RouterMismatchError, TryageError
from tryage.experts import ExpertLibrary
from tryage.flags import FlagParser, ParsedFlags
from tryage.objective import Policy, RoutingDecision, build_decision, check_filters, resolve_policy
from tryage.predictors import LossPredictor


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
    """

    def __init__(self, predictor: LossPredictor, library: ExpertLibrary | None = None, *,
                 constraints: ConstraintSet | Sequence[Constraint] | None = None,
                 weights: Mapping[str, float] | None = None, filters: Sequence[Filter] = (),
                 flag_parser: FlagParser | None = None) -> None:
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

    @property
    def experts(self) -> tuple[str, ...]:
        return self.library.names

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, library: ExpertLibrary | None = None,
                        device: str | None = None, **kwargs) -> TryageRouter:
        """Load a saved perceptive predictor folder; its ``experts.json`` is the library unless given.

        The folder's ``config.json`` names the encoder, which may be a local folder outside ``path`` or a
        Hub id; check it before loading a folder you did not make (see the README, "A router folder from
        someone else"). Weights are read as safetensors only, never unpickled.
        """
        from tryage.predictors import PerceptivePredictor

        predictor = PerceptivePredictor.from_pretrained(path, device=device)
        if library is None:
            library = predictor.library_
        return cls(predictor, library, **kwargs)

    @classmethod
    def default(cls, **kwargs) -> TryageRouter:
        """The router shipped inside the package (see :func:`tryage.default_router_path`)."""
        from tryage.defaults import default_router_path

        return cls.from_pretrained(default_router_path(), **kwargs)

    # -- routing -------------------------------------------------------------------------------
    def parse(self, prompt: str) -> ParsedFlags:
        """Flags of ``prompt`` and its cleaned text (no prediction)."""
        return self.flag_parser.parse(prompt)

    def route(self, prompt: str, *, weights: Mapping[str, float] | None = None,
              filters: Sequence[Filter] = ()) -> RoutingDecision:
        """Choose the expert for one prompt. Flags in the prompt override ``weights``."""
        return self.route_batch([prompt], weights=weights, filters=filters)[0]

    def route_batch(self, prompts: Iterable[str], *, weights: Mapping[str, float] | None = None,
                    filters: Sequence[Filter] = (),
                    return_exceptions: bool = False) -> list[RoutingDecision | TryageError]:
        """Route many prompts with one pass of the predictor.

        ``prompts`` is any iterable of strings (read once). With ``return_exceptions=True`` a prompt
        that fails on its own (a bad flag: :class:`~tryage.FlagError`; nothing left after its flags
        or not a string: :class:`~tryage.errors.ConfigurationError`) gives that exception at its
        position instead of raising, and the predictor runs once over the other prompts.
        """
        if isinstance(prompts, str):
            raise ConfigurationError("route_batch takes a list of prompts; use route() for a single string")
        filters = check_filters(filters)  # before they are hashed into a policy key
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
        for (i, p), row in zip(parsed.items(), predicted):
            weights_p = {**base, **p.weights}
            filters_p = (*self.filters, *filters, *p.filters)
            key = (tuple(sorted(weights_p.items())), filters_p)
            try:
                if key not in policies:
                    policies[key] = resolve_policy(self.library, self.constraints, weights_p, filters_p)
                out[i] = build_decision(row, self.library, self.constraints, original_prompt=prompts[i],
                                        prompt=p.prompt, flags=p.flags, policy=policies[key])
            except TryageError as exc:
                if not return_exceptions:
                    raise
                out[i] = exc
        return out

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray:
        """The predictor's losses, shape ``(n, k)``, columns in library order."""
        predicted = np.asarray(self.predictor.predict_losses(list(prompts)), dtype=np.float64)
        if predicted.shape != (len(prompts), len(self.library)):
            raise ConfigurationError(
                f"predictor returned shape {predicted.shape}, expected {(len(prompts), len(self.library))}")
        return predicted

    def __repr__(self) -> str:
        return f"TryageRouter(experts={list(self.experts)}, weights={self.weights})"



__all__ = ["LossPredictor", "TryageRouter"]
