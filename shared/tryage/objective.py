"""The routing objective and the decision it produces.

For each prompt, Tryage chooses

    argmin_i  predicted_loss_i + Σ_j λ_j · C_j(expert_i)

over the experts that pass every hard filter, ties going to the first expert in library order.
:func:`decide` does this for a whole batch at once; :class:`RoutingDecision` records everything
behind one choice so that traces, logs and selectors explain it without recomputing anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from tryage.constraints import ConstraintSet, Filter
from tryage.errors import ConfigurationError, NoEligibleExpertError
from tryage.experts import ExpertLibrary


@dataclass(frozen=True)
class ExpertScore:
    """How one expert scored for one prompt.

    Attributes:
        expert: The expert's name.
        predicted_loss: The router's predicted loss (lower is better).
        penalties: Weighted penalty per constraint, ``λ_j · C_j``.
        total: ``predicted_loss + Σ penalties``; the quantity minimised.
        eligible: ``False`` when a hard filter excluded the expert.
        excluded_because: Why it was excluded, or ``None``.
    """

    expert: str
    predicted_loss: float
    penalties: Mapping[str, float]
    total: float
    eligible: bool = True
    excluded_because: str | None = None

    def explain(self) -> str:
        """``'name': predicted loss L; <constraint> penalty +P; ...; total T``."""
        parts = [f"{self.expert!r}: predicted loss {self.predicted_loss:.4g}"]
        parts += [f"{name} penalty {value:+.4g}" for name, value in self.penalties.items()]
        parts.append(f"total {self.total:.4g}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"expert": self.expert, "predicted_loss": self.predicted_loss,
                "penalties": dict(self.penalties), "total": self.total,
                "eligible": self.eligible, "excluded_because": self.excluded_because}


@dataclass(frozen=True)
class RoutingDecision:
    """The outcome of routing one prompt.

    Attributes:
        expert: Name of the chosen expert.
        prompt: The prompt the expert should receive (flags removed).
        original_prompt: The prompt as given.
        flags: The flags found in the prompt, as written.
        weights: The constraint weights in force (arguments, then flags on top).
        scores: One :class:`ExpertScore` per expert, in library order.
        explored: ``True`` when exploration chose an expert other than the best-scoring one.
        exploration: The exploration policy in force (e.g. ``"epsilon=0.1"``), ``None`` when off.
    """

    expert: str
    prompt: str
    original_prompt: str
    flags: tuple[str, ...]
    weights: Mapping[str, float]
    scores: tuple[ExpertScore, ...]
    explored: bool = False
    exploration: str | None = None

    @property
    def chosen(self) -> ExpertScore:
        """The chosen expert's :class:`ExpertScore`."""
        return next(s for s in self.scores if s.expert == self.expert)

    @property
    def ranking(self) -> tuple[str, ...]:
        """Eligible experts from best (lowest total) to worst; ties keep library order."""
        eligible = [s for s in self.scores if s.eligible]
        return tuple(s.expert for s in sorted(eligible, key=lambda s: s.total))

    @property
    def predicted_losses(self) -> dict[str, float]:
        return {s.expert: s.predicted_loss for s in self.scores}

    def explain(self) -> str:
        """One line: the choice, its predicted loss and the penalties behind it."""
        text = "chose " + self.chosen.explain()
        text += "; flags: " + ", ".join(self.flags) if self.flags else ""
        return text + (f"; explored ({self.exploration})" if self.explored else "")

    def to_dict(self) -> dict[str, Any]:
        return {"expert": self.expert, "prompt": self.prompt, "original_prompt": self.original_prompt,
                "flags": list(self.flags), "weights": dict(self.weights),
                "scores": [s.to_dict() for s in self.scores],
                "explored": self.explored, "exploration": self.exploration}


@dataclass(frozen=True)
class BatchDecision:
    """Vectorised result of :func:`decide` over ``n`` prompts and ``k`` experts.

    Attributes:
        choice: Index of the chosen expert per prompt, shape ``(n,)``.
        totals: Objective per prompt and expert (``inf`` where excluded), shape ``(n, k)``.
        penalties: Weighted penalty per constraint, each of shape ``(k,)``.
        eligible: Mask of experts passing the filters, shape ``(n, k)``.
    """

    choice: np.ndarray
    totals: np.ndarray
    penalties: Mapping[str, np.ndarray] = field(default_factory=dict)
    eligible: np.ndarray | None = None


def weighted_penalties(library: ExpertLibrary, constraints: ConstraintSet,
                       weights: Mapping[str, float]) -> dict[str, np.ndarray]:
    """``λ_j · C_j`` per constraint with a non-zero weight, each of shape ``(k,)``."""
    clean = constraints.check_weights(weights)
    active = [n for n, w in clean.items() if w != 0.0]
    raw = constraints.penalties(library, active)
    return {n: clean[n] * raw[n] for n in active}


def eligibility(library: ExpertLibrary, filters: Sequence[Filter]) -> tuple[np.ndarray, list[str | None]]:
    """Mask of experts passing every filter, and per expert the first reason it failed."""
    reasons: list[str | None] = []
    for expert in library:
        why = None
        for f in filters:
            why = f.reason_excluded(expert)
            if why is not None:
                break
        reasons.append(why)
    return np.array([r is None for r in reasons]), reasons


@dataclass(frozen=True)
class Policy:
    """Weights and filters resolved against one library: what :func:`decide` adds and masks.

    Attributes:
        weights: The constraint weights λ.
        penalties: ``λ_j · C_j`` per constraint with a non-zero weight, each of shape ``(k,)``.
        eligible: Mask of experts passing every filter, shape ``(k,)``.
        reasons: Per expert, why a filter excluded it (``None`` when eligible).
    """

    weights: Mapping[str, float]
    penalties: Mapping[str, np.ndarray]
    eligible: np.ndarray
    reasons: tuple[str | None, ...]


def resolve_policy(library: ExpertLibrary, constraints: ConstraintSet, weights: Mapping[str, float] | None = None,
                   filters: Sequence[Filter] = ()) -> Policy:
    """Check ``weights`` and ``filters`` against ``library`` once, for any number of prompts."""
    weights = dict(weights or {})
    penalties = weighted_penalties(library, constraints, weights)
    mask, reasons = eligibility(library, filters)
    if not mask.any():
        why = "; ".join(f"{e.name}: {r}" for e, r in zip(library, reasons))
        raise NoEligibleExpertError(f"the filters exclude every expert ({why})")
    return Policy(MappingProxyType(weights), MappingProxyType(penalties), mask, tuple(reasons))


def decide(predicted: np.ndarray, library: ExpertLibrary, constraints: ConstraintSet,
           weights: Mapping[str, float] | None = None, filters: Sequence[Filter] = (), *,
           policy: Policy | None = None) -> BatchDecision:
    """Choose an expert for every row of ``predicted`` (shape ``(n, k)``) under one set of weights."""
    predicted = np.asarray(predicted, dtype=np.float64)
    if predicted.ndim != 2 or predicted.shape[1] != len(library):
        raise ConfigurationError(
            f"predicted losses must have shape (n, {len(library)}) for this library, got {predicted.shape}")
    policy = policy or resolve_policy(library, constraints, weights, filters)
    totals = predicted.copy()
    for p in policy.penalties.values():
        totals += p[None, :]
    totals = np.where(policy.eligible[None, :], totals, np.inf)
    return BatchDecision(np.argmin(totals, axis=1), totals, policy.penalties,
                         np.broadcast_to(policy.eligible, totals.shape))


def build_decision(row: np.ndarray, library: ExpertLibrary, constraints: ConstraintSet, *,
                   original_prompt: str, prompt: str, flags: Sequence[str] = (),
                   weights: Mapping[str, float] | None = None, filters: Sequence[Filter] = (),
                   policy: Policy | None = None) -> RoutingDecision:
    """The full :class:`RoutingDecision` for one prompt's predicted losses ``row`` (shape ``(k,)``).

    Pass a ``policy`` from :func:`resolve_policy` to reuse one set of weights and filters across prompts.
    """
    policy = policy or resolve_policy(library, constraints, weights, filters)
    row = np.asarray(row, dtype=np.float64)
    choice = int(decide(row[None, :], library, constraints, policy=policy).choice[0])
    scores = []
    for i, expert in enumerate(library):
        pen = MappingProxyType({n: float(p[i]) for n, p in policy.penalties.items()})
        loss = float(row[i])
        scores.append(ExpertScore(expert.name, loss, pen, loss + sum(pen.values()),
                                  policy.reasons[i] is None, policy.reasons[i]))
    return RoutingDecision(library[choice].name, prompt, original_prompt, tuple(flags),
                           policy.weights, tuple(scores))


__all__ = ["BatchDecision", "ExpertScore", "Policy", "RoutingDecision", "build_decision", "decide",
           "resolve_policy"]
