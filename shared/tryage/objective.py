"""The routing objective and the decision it produces.

For each prompt, Tryage chooses

    argmin_i  predicted_loss_i + Σ_j λ_j · C_j(expert_i)

over the experts that pass every hard filter, ties going to the first expert in library order.

A *quality floor* (``min_quality=0.8``, ``[Flag: min quality 0.8]``, ``[Flag: cheapest that answers]``)
narrows the choice first: among the eligible experts whose probability of a correct answer (the router's
calibrated P(correct), see :mod:`tryage.predictors.calibration`) is at least the floor, the objective
decides; when none reaches it, the expert with the lowest predicted loss is chosen and the decision says
so (:attr:`RoutingDecision.floor_met` is ``False``).
:func:`decide` does this for a whole batch at once; :class:`RoutingDecision` records everything
behind one choice so that traces, logs and selectors explain it without recomputing anything.

:class:`Exploration` is the opt-in departure from the argmin that makes production feedback cover more
than the current favourite: with ``kind="epsilon"`` a uniformly random eligible expert replaces the best
one with probability ``epsilon``; with ``kind="thompson"`` Gaussian noise of scale ``noise`` is added to
each eligible expert's objective before the argmin. Hard filters are always respected; the choice is
recorded in :attr:`RoutingDecision.explored`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from tryage.constraints import ConstraintSet, Filter
from tryage.errors import ConfigurationError, NoEligibleExpertError, NonFinitePredictionError, check_scalar
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
        quality: Probability of a correct answer under a quality floor (``None`` without one).
    """

    expert: str
    predicted_loss: float
    penalties: Mapping[str, float]
    total: float
    eligible: bool = True
    excluded_because: str | None = None
    quality: float | None = None

    def explain(self) -> str:
        """``'name': predicted loss L; <constraint> penalty +P; ...; total T``."""
        parts = [f"{self.expert!r}: predicted loss {self.predicted_loss:.4g}"]
        parts += [] if self.quality is None else [f"P(correct) {self.quality:.3g}"]
        parts += [f"{name} penalty {value:+.4g}" for name, value in self.penalties.items()]
        parts.append(f"total {self.total:.4g}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"expert": self.expert, "predicted_loss": self.predicted_loss,
                "penalties": dict(self.penalties), "total": self.total,
                "eligible": self.eligible, "excluded_because": self.excluded_because,
                **({} if self.quality is None else {"quality": self.quality})}


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
        min_quality: The quality floor in force, ``None`` when none.
        floor_met: Under a floor: ``True`` when an eligible expert reached it, ``False`` when none did and the
            best predicted expert was chosen instead; ``None`` without a floor.
        calibrated: Under a floor: whether the probabilities behind it are calibrated; ``None`` without one.
    """

    expert: str
    prompt: str
    original_prompt: str
    flags: tuple[str, ...]
    weights: Mapping[str, float]
    scores: tuple[ExpertScore, ...]
    explored: bool = False
    exploration: str | None = None
    min_quality: float | None = None
    floor_met: bool | None = None
    calibrated: bool | None = None

    @property
    def chosen(self) -> ExpertScore:
        """The chosen expert's :class:`ExpertScore`."""
        return next(s for s in self.scores if s.expert == self.expert)

    @property
    def ranking(self) -> tuple[str, ...]:
        """Eligible experts from best (lowest total) to worst, those reaching a quality floor first; ties keep
        library order."""
        eligible = [s for s in self.scores if s.eligible]
        floor = self.min_quality

        def key(s: ExpertScore) -> tuple[bool, float]:
            return (floor is not None and s.quality is not None and s.quality < floor, s.total)

        return tuple(s.expert for s in sorted(eligible, key=key))

    @property
    def predicted_losses(self) -> dict[str, float]:
        return {s.expert: s.predicted_loss for s in self.scores}

    def explain(self) -> str:
        """One line: the choice, its predicted loss and the penalties behind it."""
        text = "chose " + self.chosen.explain()
        text += "; flags: " + ", ".join(self.flags) if self.flags else ""
        if self.floor_met is not None:
            text += (f"; quality floor {self.min_quality:g} met" if self.floor_met else
                     f"; no expert reaches the quality floor {self.min_quality:g}: chose the best predicted")
        return text + (f"; explored ({self.exploration})" if self.explored else "")

    def to_dict(self) -> dict[str, Any]:
        return {"expert": self.expert, "prompt": self.prompt, "original_prompt": self.original_prompt,
                "flags": list(self.flags), "weights": dict(self.weights),
                "scores": [s.to_dict() for s in self.scores],
                "explored": self.explored, "exploration": self.exploration,
                **({} if self.min_quality is None else {"min_quality": self.min_quality, "floor_met": self.floor_met,
                                                        "calibrated": self.calibrated})}


@dataclass(frozen=True)
class BatchDecision:
    """Vectorised result of :func:`decide` over ``n`` prompts and ``k`` experts.

    Attributes:
        choice: Index of the chosen expert per prompt, shape ``(n,)``.
        totals: Objective per prompt and expert (``inf`` where excluded), shape ``(n, k)``.
        penalties: Weighted penalty per constraint, each of shape ``(k,)``.
        eligible: Mask of experts passing the filters, shape ``(n, k)``.
        floor_met: Under a quality floor, whether some eligible expert reached it, shape ``(n,)``; else ``None``.
    """

    choice: np.ndarray
    totals: np.ndarray
    penalties: Mapping[str, np.ndarray] = field(default_factory=dict)
    eligible: np.ndarray | None = None
    floor_met: np.ndarray | None = None


def weighted_penalties(library: ExpertLibrary, constraints: ConstraintSet,
                       weights: Mapping[str, float]) -> dict[str, np.ndarray]:
    """``λ_j · C_j`` per constraint with a non-zero weight, each of shape ``(k,)``."""
    clean = constraints.check_weights(weights)
    active = [n for n, w in clean.items() if w != 0.0]
    raw = constraints.penalties(library, active)
    return {n: clean[n] * raw[n] for n in active}


def check_filters(filters: object) -> tuple[Filter, ...]:
    """``filters`` as a tuple (``None`` is none), or :class:`ConfigurationError` when it is not a sequence of :class:`Filter`."""
    if filters is None:
        return ()
    if isinstance(filters, (Filter, str, bytes)) or not isinstance(filters, Sequence):
        raise ConfigurationError(
            f"filters must be a list of Filter objects, got {type(filters).__name__}: {filters!r:.80}")
    for f in filters:
        if not isinstance(f, Filter):
            raise ConfigurationError(
                f"filters must be Filter objects, e.g. Filter(max_parameters='8B'); got {type(f).__name__}: {f!r:.80}")
    return tuple(filters)


def eligibility(library: ExpertLibrary, filters: Sequence[Filter]) -> tuple[np.ndarray, list[str | None]]:
    """Mask of experts passing every filter, and per expert the first reason it failed."""
    check_filters(filters)
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
    if weights is not None and not isinstance(weights, Mapping):
        raise ConfigurationError(
            f"weights must be a mapping of constraint name to number, e.g. {{'size': 0.5}}; "
            f"got {type(weights).__name__}: {weights!r:.80}")
    check_filters(filters)
    weights = dict(weights or {})
    penalties = weighted_penalties(library, constraints, weights)
    mask, reasons = eligibility(library, filters)
    if not mask.any():
        why = "; ".join(f"{e.name}: {r}" for e, r in zip(library, reasons))
        raise NoEligibleExpertError(f"the filters exclude every expert ({why})")
    return Policy(MappingProxyType(weights), MappingProxyType(penalties), mask, tuple(reasons))


def check_min_quality(value: object, name: str = "min_quality") -> float | None:
    """A quality floor: ``None`` (none) or a number in [0, 1]; anything else is a one-line error."""
    return None if value is None else check_scalar(value, name, low=0.0, high=1.0)


def decide(predicted: np.ndarray, library: ExpertLibrary, constraints: ConstraintSet,
           weights: Mapping[str, float] | None = None, filters: Sequence[Filter] = (), *,
           policy: Policy | None = None, prompts: Sequence[str] | None = None,
           quality: np.ndarray | None = None, min_quality: float | None = None) -> BatchDecision:
    """Choose an expert for every row of ``predicted`` (shape ``(n, k)``) under one set of weights.

    Filters are absolute: an excluded expert is never chosen, even when the weighted totals of the
    eligible experts overflow to ``inf``. ``prompts`` (one per row) only name the rows in errors.
    With ``min_quality``, ``quality`` (P(correct), shape ``(n, k)``) narrows each row to the eligible
    experts reaching the floor; a row where none does gets its lowest predicted loss (see the module doc).

    Raises:
        NonFinitePredictionError: ``predicted`` holds NaN or an infinity.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    if predicted.ndim != 2 or predicted.shape[1] != len(library):
        raise ConfigurationError(
            f"predicted losses must have shape (n, {len(library)}) for this library, got {predicted.shape}")
    finite = np.isfinite(predicted)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        bad_experts = [library[int(j)].name for j in np.flatnonzero(~finite.all(axis=0))]
        names = [prompts[int(i)] for i in bad_rows] if prompts is not None else [f"row {int(i)}" for i in bad_rows]
        raise NonFinitePredictionError(bad_experts, names)
    policy = policy or resolve_policy(library, constraints, weights, filters)
    totals = predicted.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        for p in policy.penalties.values():
            totals += p[None, :]
    eligible = np.broadcast_to(policy.eligible, totals.shape)
    totals = np.where(eligible, totals, np.inf)
    floor_met = None
    if min_quality is not None:
        return _decide_with_floor(predicted, totals, eligible, policy, quality, check_min_quality(min_quality))
    # Huge weights can overflow an eligible total to inf (or inf - inf to NaN). Rank NaN last among
    # the eligible, and never let an excluded expert win a tie at inf.
    ranked = np.where(np.isnan(totals), np.inf, totals)
    choice = np.argmin(ranked, axis=1)
    lost = ~eligible[np.arange(len(choice)), choice]
    if lost.any():
        choice[lost] = np.argmax(eligible[lost], axis=1)  # the first eligible expert
    return BatchDecision(choice, totals, policy.penalties, eligible, floor_met)


def _decide_with_floor(predicted: np.ndarray, totals: np.ndarray, eligible: np.ndarray, policy: Policy,
                       quality: np.ndarray | None, floor: float) -> BatchDecision:
    if quality is None or np.shape(quality) != predicted.shape:
        raise ConfigurationError(f"a quality floor needs P(correct) of shape {predicted.shape}, "
                                 f"got {None if quality is None else np.shape(quality)}")
    reaches = eligible & (np.asarray(quality, dtype=np.float64) >= floor)
    floor_met = reaches.any(axis=1)
    ranked = np.where(np.isnan(totals), np.inf, totals)
    # Within the floor the objective decides (the first reaching expert when every total overflows);
    # below it, the lowest predicted loss among the eligible.
    within = np.where(reaches, ranked, np.inf)
    choice = np.where(floor_met, np.argmin(within, axis=1), np.argmin(np.where(eligible, predicted, np.inf), axis=1))
    lost = floor_met & ~reaches[np.arange(len(choice)), choice]
    if lost.any():
        choice[lost] = np.argmax(reaches[lost], axis=1)
    return BatchDecision(choice, totals, policy.penalties, eligible, floor_met)


def build_decision(row: np.ndarray, library: ExpertLibrary, constraints: ConstraintSet, *,
                   original_prompt: str, prompt: str, flags: Sequence[str] = (),
                   weights: Mapping[str, float] | None = None, filters: Sequence[Filter] = (),
                   policy: Policy | None = None, quality: np.ndarray | None = None,
                   min_quality: float | None = None, calibrated: bool | None = None) -> RoutingDecision:
    """The full :class:`RoutingDecision` for one prompt's predicted losses ``row`` (shape ``(k,)``).

    Pass a ``policy`` from :func:`resolve_policy` to reuse one set of weights and filters across prompts;
    ``quality`` (P(correct), shape ``(k,)``) with ``min_quality`` sets a quality floor (``calibrated`` is recorded).
    """
    policy = policy or resolve_policy(library, constraints, weights, filters)
    row = np.asarray(row, dtype=np.float64)
    q = None if min_quality is None or quality is None else np.asarray(quality, dtype=np.float64).reshape(1, -1)
    batch = decide(row[None, :], library, constraints, policy=policy, prompts=[original_prompt],
                   quality=q, min_quality=min_quality)
    choice = int(batch.choice[0])
    scores = []
    for i, expert in enumerate(library):
        pen = MappingProxyType({n: float(p[i]) for n, p in policy.penalties.items()})
        loss = float(row[i])
        scores.append(ExpertScore(expert.name, loss, pen, loss + sum(pen.values()),
                                  policy.reasons[i] is None, policy.reasons[i],
                                  None if q is None else float(q[0, i])))
    floor = {} if batch.floor_met is None else {"min_quality": float(min_quality), "calibrated": calibrated,
                                                "floor_met": bool(batch.floor_met[0])}
    return RoutingDecision(library[choice].name, prompt, original_prompt, tuple(flags),
                           policy.weights, tuple(scores), **floor)


EXPLORATION_KINDS = ("epsilon", "thompson")


@dataclass(frozen=True)
class Exploration:
    """An opt-in exploration policy for :class:`tryage.TryageRouter` (see the module doc).

    Attributes:
        kind: ``"epsilon"`` or ``"thompson"``.
        epsilon: Probability of a uniformly random eligible expert (``"epsilon"``).
        noise: Standard deviation of the Gaussian noise on each objective (``"thompson"``), in loss units.
        seed: Seed of the random stream a router draws from (one stream per router, started when
            the router is built): the same seed and sequence of calls gives the same choices.
    """

    kind: str = "epsilon"
    epsilon: float = 0.1
    noise: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in EXPLORATION_KINDS:
            raise ConfigurationError(f"exploration kind must be one of {EXPLORATION_KINDS}, got {self.kind!r}")
        for name, value in (("epsilon", check_scalar(self.epsilon, "epsilon", low=0.0, high=1.0)),
                            ("noise", check_scalar(self.noise, "noise", low=0.0)),
                            ("seed", check_scalar(self.seed, "seed", kind=int))):
            object.__setattr__(self, name, value)  # frozen: store the checked value (a whole float seed as int)

    def generator(self) -> np.random.Generator:
        """A fresh random stream for this policy's seed."""
        return np.random.default_rng(self.seed)

    def describe(self) -> str:
        """The policy as recorded in decisions, e.g. ``"epsilon=0.1"`` or ``"thompson noise=0.05"``."""
        return f"epsilon={self.epsilon:g}" if self.kind == "epsilon" else f"thompson noise={self.noise:g}"

    def apply(self, decision: RoutingDecision, rng: np.random.Generator) -> RoutingDecision:
        """``decision`` with the exploring choice (only eligible experts are ever drawn);
        ``explored`` says whether it differs from the greedy one."""
        eligible = [s for s in decision.scores if s.eligible]
        if self.kind == "epsilon":
            if rng.random() < self.epsilon:
                expert = eligible[int(rng.integers(len(eligible)))].expert
            else:
                expert = decision.expert
        else:
            totals = np.array([s.total for s in eligible]) + rng.normal(0.0, self.noise, len(eligible))
            expert = eligible[int(np.argmin(totals))].expert
        return replace(decision, expert=expert, explored=expert != decision.expert, exploration=self.describe())


__all__ = ["EXPLORATION_KINDS", "BatchDecision", "Exploration", "ExpertScore", "Policy", "RoutingDecision",
           "build_decision", "check_filters", "check_min_quality", "decide", "resolve_policy"]
