"""The router users call: flags + loss predictor + constraints → :class:`RoutingDecision`.

:class:`TryageRouter` is framework-free and works with any *loss predictor*: an object with an
``experts`` tuple (its output columns) and ``predict_losses(prompts) -> ndarray (n, k)``. The
perceptive router (:class:`tryage.predictor.PerceptiveRouter`) is one; an oracle that looks up true
losses (:class:`tryage.evaluation.OraclePredictor`) is another.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from tryage.constraints import Constraint, ConstraintSet, Filter
from tryage.errors import ConfigurationError, RouterMismatchError
from tryage.experts import ExpertLibrary
from tryage.flags import FlagParser, ParsedFlags
from tryage.objective import Policy, RoutingDecision, build_decision, resolve_policy


@runtime_checkable
class LossPredictor(Protocol):
    """Anything that predicts one loss per expert for each prompt."""

    @property
    def experts(self) -> tuple[str, ...]: ...

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray: ...


class TryageRouter:
    """Route prompts to experts under constraints and per-prompt flags.

    Args:
        predictor: A loss predictor (see :class:`LossPredictor`).
        library: Metadata of the predictor's experts. Defaults to bare experts (names only), which
            is enough when no metadata-based constraint is used.
        constraints: Constraints known to the router; defaults to ``size``, ``recency``, ``cost``.
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
        self.filters = tuple(filters)
        self.flag_parser = flag_parser or FlagParser(tuple(self.constraints))

    @property
    def experts(self) -> tuple[str, ...]:
        return self.library.names

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, library: ExpertLibrary | None = None,
                        device: str | None = None, **kwargs) -> TryageRouter:
        """Load a saved perceptive router folder; its ``experts.json`` is the library unless given."""
        from tryage.predictor import PerceptiveRouter

        predictor = PerceptiveRouter.from_pretrained(path, device=device)
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

    def route_batch(self, prompts: Sequence[str], *, weights: Mapping[str, float] | None = None,
                    filters: Sequence[Filter] = ()) -> list[RoutingDecision]:
        """Route many prompts with one pass of the predictor."""
        if isinstance(prompts, str):
            raise ConfigurationError("route_batch takes a list of prompts; use route() for a single string")
        parsed = [self.flag_parser.parse(p) for p in prompts]
        for p in parsed:
            if not p.prompt.strip():
                raise ConfigurationError("cannot route an empty prompt (after removing flags)")
        base = {**self.weights, **self.constraints.check_weights(weights or {})}
        predicted = self.predict_losses([p.prompt for p in parsed])
        policies: dict[tuple, Policy] = {}  # prompts without flags share one policy
        out = []
        for original, p, row in zip(prompts, parsed, predicted):
            weights_p = {**base, **p.weights}
            filters_p = (*self.filters, *filters, *p.filters)
            key = (tuple(sorted(weights_p.items())), filters_p)
            if key not in policies:
                policies[key] = resolve_policy(self.library, self.constraints, weights_p, filters_p)
            out.append(build_decision(row, self.library, self.constraints, original_prompt=original,
                                      prompt=p.prompt, flags=p.flags, policy=policies[key]))
        return out

    def route_dataset(self, ds, **kwargs):  # noqa: ANN001, ANN201 - ray.data.Dataset, imported lazily
        """Route every row of a Ray Dataset on a Ray actor pool; see :func:`tryage.distributed.route_dataset`."""
        from tryage.distributed import route_dataset

        return route_dataset(self, ds, **kwargs)

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
