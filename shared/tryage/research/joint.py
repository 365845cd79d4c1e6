"""Joint training of the router and its experts (the paper's closing proposal).

One round:

1. measure every expert's loss on the training prompts (a :class:`~tryage.qtable.QTable`);
2. train the router on that table;
3. route the training prompts with the router;
4. fine-tune each expert on the prompts routed to it.

After the rounds, the experts are measured once more and the router retrained, so the returned
router matches the final experts. Experts specialise on the prompts the router sends them, and the
router learns the specialised experts: the loss of the routed choice should fall round after round
(:attr:`JointResult.history` records it).

Experts are any objects with ``losses(prompts) -> ndarray (n,)`` and ``fit(prompts) -> None``
(:class:`TrainableExpert`); the router is any object with ``fit(qtable)`` and
``predict_losses(prompts)`` (for example :class:`~tryage.predictors.PerceptivePredictor`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from tryage.errors import ConfigurationError
from tryage.qtable import QTable

if TYPE_CHECKING:  # pragma: no cover
    from tryage.predictors import PerceptivePredictor


@runtime_checkable
class TrainableExpert(Protocol):
    """An expert that can be measured and fine-tuned on prompts."""

    def losses(self, prompts: Sequence[str]) -> np.ndarray: ...

    def fit(self, prompts: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class JointRound:
    """What one round measured, before its fine-tuning step.

    Attributes:
        round: 0-based round number (the last entry is the final measurement).
        routed_loss: Mean true loss of the expert the router chose, on the training prompts.
        oracle_loss: Mean of the lowest true loss per prompt.
        usage: Prompts routed to each expert.
    """

    round: int
    routed_loss: float
    oracle_loss: float
    usage: Mapping[str, int]


@dataclass(frozen=True)
class JointResult:
    """The outcome of :func:`joint_train`.

    Attributes:
        predictor: The loss predictor, trained on the final experts.
        qtable: The final Q-table of the training prompts.
        history: One :class:`JointRound` per round plus the final measurement.
    """

    predictor: PerceptivePredictor
    qtable: QTable
    history: tuple[JointRound, ...]


def measure_experts(experts: Mapping[str, TrainableExpert], prompts: Sequence[str]) -> QTable:
    """The Q-table of ``prompts`` × ``experts`` from each expert's ``losses``."""
    names = tuple(experts)
    columns = []
    for name in names:
        values = np.asarray(experts[name].losses(list(prompts)), dtype=np.float64)
        if values.shape != (len(prompts),) or not np.all(np.isfinite(values)):
            raise ConfigurationError(f"expert {name!r} must return {len(prompts)} finite losses, got shape {values.shape}")
        columns.append(values)
    return QTable(tuple(prompts), names, np.stack(columns, axis=1))


def joint_train(predictor: PerceptivePredictor, experts: Mapping[str, TrainableExpert], prompts: Sequence[str], *,
                rounds: int = 2, min_prompts: int = 1) -> JointResult:
    """Alternate router training and expert fine-tuning for ``rounds`` rounds (see the module doc).

    Args:
        predictor: A :class:`~tryage.predictors.PerceptivePredictor` (any loss predictor with
            ``fit(qtable)`` and ``predict_losses(prompts)`` works); it is trained in place.
        experts: Name → trainable expert.
        prompts: Training prompts (unique).
        rounds: Rounds of route-then-fine-tune.
        min_prompts: An expert is fine-tuned only when at least this many prompts were routed to it.
    """
    if isinstance(prompts, str) or len(prompts) < 2:
        raise ConfigurationError("joint_train needs a list of at least 2 prompts")
    if not experts:
        raise ConfigurationError("joint_train needs at least one expert")
    bad = [n for n, e in experts.items() if not isinstance(e, TrainableExpert)]
    if bad:
        raise ConfigurationError(f"experts must have losses(prompts) and fit(prompts); these do not: {bad}")
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigurationError(f"rounds must be a positive integer, got {rounds!r}")
    names = tuple(experts)
    history: list[JointRound] = []
    for r in range(rounds + 1):
        table = measure_experts(experts, prompts)
        predictor.fit(table)
        predicted = np.asarray(predictor.predict_losses(list(prompts)))
        columns = [list(predictor.experts).index(n) for n in names]
        choice = np.argmin(predicted[:, columns], axis=1)
        history.append(JointRound(r, float(table.losses[np.arange(len(table)), choice].mean()),
                                  float(table.losses.min(axis=1).mean()),
                                  {n: int(np.sum(choice == i)) for i, n in enumerate(names)}))
        if r == rounds:
            return JointResult(predictor, table, tuple(history))
        for i, name in enumerate(names):
            routed = [p for p, c in zip(prompts, choice) if c == i]
            if len(routed) >= min_prompts:
                experts[name].fit(routed)
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["JointResult", "JointRound", "TrainableExpert", "joint_train", "measure_experts"]
