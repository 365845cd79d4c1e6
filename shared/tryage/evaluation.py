"""Measuring a router against the oracle and simple baselines.

Everything here works on matrices of losses, so any loss predictor can be measured against the
baselines of :mod:`tryage.predictors` (oracle, best single expert, kNN on the same embeddings) and
random choice.

Metrics, for a choice of one expert per prompt:

* **value** — mean loss achieved (reported as mean *score* for score tables, ``score = 1 − loss``);
* **select_best_accuracy** — share of prompts where the chosen expert has the lowest true loss
  (ties count: any expert within ``1e-9`` of the best is a best expert);
* **regret** — mean true loss above the oracle's;
* **gap_closed** — ``(best_single − router) / (best_single − oracle)`` in loss: 0 is no better than
  always using the best single expert, 1 is the oracle.

* **expected calibration error** — for a router of scores in [0, 1]: how far its P(correct) is from the
  observed share correct (:func:`calibration_report`, :func:`plot_reliability`).

On a partial table (NaN where an expert was not observed) every metric uses observed entries only:
a prompt whose chosen expert has no value is left out of that choice's value and regret, the oracle
is the best observed expert, and reports say how many entries were missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tryage.constraints import ConstraintSet
from tryage.errors import ConfigurationError, check_scalar
from tryage.experts import ExpertLibrary
from tryage.objective import decide
from tryage.predictors.baselines import KNN_K, KNNPredictor, knn_leave_one_out
from tryage.predictors.calibration import expected_calibration_error, quality_of, reliability
from tryage.qtable import QTable

TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ChoiceMetrics:
    """Quality of one way of choosing experts on a test table.

    Attributes:
        value: Mean score (score tables) or mean loss (loss tables) achieved.
        select_best_accuracy: Share of prompts where a best expert was chosen (ties count).
        regret: Mean true loss above the oracle.
    """

    value: float
    select_best_accuracy: float
    regret: float


def choice_metrics(choice: np.ndarray, qtable: QTable) -> ChoiceMetrics:
    """Metrics of choosing expert ``choice[i]`` for prompt ``i`` of ``qtable``.

    Prompts whose chosen expert is unobserved (NaN) are left out; NaN when none is observed.
    """
    choice = np.asarray(choice, dtype=int)
    losses = qtable.losses
    got = losses[np.arange(len(losses)), choice]
    seen = ~np.isnan(got)
    if not seen.any():
        return ChoiceMetrics(float("nan"), float("nan"), float("nan"))
    got = got[seen]
    best = np.nanmin(losses[seen], axis=1)
    return ChoiceMetrics(float(qtable.to_user_units(got.mean())),
                         float(np.mean(got <= best + TIE_TOLERANCE)), float(np.mean(got - best)))


def _gap_closed(router_loss: float, single_loss: float, oracle_loss: float) -> float | None:
    gap = single_loss - oracle_loss
    return None if gap <= 0 else float((single_loss - router_loss) / gap)


@dataclass(frozen=True)
class EvaluationReport:
    """A router measured against baselines on one test table (see :meth:`to_dict` for the JSON)."""

    n: int
    units: str
    router: ChoiceMetrics
    oracle: float
    best_single_expert: str
    best_single: ChoiceMetrics
    random: float
    knn: ChoiceMetrics | None
    gap_closed: float | None
    per_group: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    choices: Mapping[str, int] = field(default_factory=dict)
    missing_entries: int = 0
    unscored_choices: int = 0
    calibration: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "units": self.units,
            "missing_entries": self.missing_entries, "unscored_choices": self.unscored_choices,
            "router": self.router.value,
            "select_best_accuracy": self.router.select_best_accuracy,
            "regret": self.router.regret,
            "gap_closed": self.gap_closed,
            "oracle": self.oracle,
            "best_single": {"expert": self.best_single_expert, "value": self.best_single.value,
                            "select_best_accuracy": self.best_single.select_best_accuracy},
            "random": self.random,
            "knn": None if self.knn is None else {"value": self.knn.value,
                                                   "select_best_accuracy": self.knn.select_best_accuracy},
            "choices": dict(self.choices),
            "per_group": {k: dict(v) for k, v in self.per_group.items()},
            "calibration": None if self.calibration is None else dict(self.calibration),
        }


def evaluate_predictions(predicted: np.ndarray, test: QTable, *, train: QTable | None = None,
                         knn_predicted: np.ndarray | None = None, group_by: str | None = None,
                         library: ExpertLibrary | None = None, constraints: ConstraintSet | None = None,
                         weights: Mapping[str, float] | None = None) -> EvaluationReport:
    """Measure predicted losses (shape ``(n, k)``, columns = ``test.experts``) on ``test``.

    The best single expert is the one with the lowest mean loss on ``train`` (on ``test`` itself when
    no training table is given, which flatters that baseline). Random is the exact expectation of a
    uniform choice. With ``weights``, the router's choice includes those constraint penalties.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    if predicted.shape != test.losses.shape:
        raise ConfigurationError(f"predicted losses have shape {predicted.shape}; the test table is {test.losses.shape}")
    if train is not None and train.experts != test.experts:
        raise ConfigurationError(f"train and test tables have different experts: {train.experts} vs {test.experts}")
    lib = library.reorder(test.experts) if library is not None else ExpertLibrary.from_names(test.experts)
    choice = decide(predicted, lib, constraints or ConstraintSet(), weights or {}).choice
    single_idx = int(np.argmin(np.nanmean((train or test).losses, axis=0)))
    single_choice = np.full(len(test), single_idx)
    report_router = choice_metrics(choice, test)
    report_single = choice_metrics(single_choice, test)
    oracle_loss = float(np.nanmin(test.losses, axis=1).mean())
    knn_choice = None if knn_predicted is None else np.argmin(knn_predicted, axis=1)
    per_group: dict[str, dict[str, Any]] = {}
    if group_by is not None:
        fields = sorted({k for e in test.extras for k in e})
        if group_by not in fields:
            raise ConfigurationError(f"group_by {group_by!r} is not a field of the test Q-table; its fields: "
                                     f"{fields or 'none (rows have only prompt and losses)'}")
        groups = np.array([str(g) for g in test.column(group_by)])
        for g in sorted(set(groups)):
            rows = np.flatnonzero(groups == g)
            sub = test.subset(rows)
            r = choice_metrics(choice[rows], sub)
            entry: dict[str, Any] = {
                "n": len(rows), "router": r.value, "select_best_accuracy": r.select_best_accuracy,
                "oracle": float(sub.to_user_units(np.nanmin(sub.losses, axis=1).mean())),
                "best_single": choice_metrics(single_choice[rows], sub).value,
                "random": float(sub.to_user_units(np.nanmean(sub.losses))),
            }
            if knn_choice is not None:
                entry["knn"] = choice_metrics(knn_choice[rows], sub).value
            per_group[g] = entry
    counts = np.bincount(choice, minlength=len(test.experts))
    return EvaluationReport(
        n=len(test), units=test.kind, router=report_router,
        oracle=float(test.to_user_units(oracle_loss)),
        best_single_expert=test.experts[single_idx], best_single=report_single,
        random=float(test.to_user_units(np.nanmean(test.losses))),
        knn=None if knn_choice is None else choice_metrics(knn_choice, test),
        gap_closed=_gap_closed(float(np.nanmean(test.losses[np.arange(len(test)), choice])),
                               float(np.nanmean(test.losses[:, single_idx])), oracle_loss),
        per_group=per_group,
        choices={e: int(c) for e, c in zip(test.experts, counts)},
        missing_entries=test.n_missing,
        unscored_choices=int(np.isnan(test.losses[np.arange(len(test)), choice]).sum()),
    )


def evaluate_router(router: Any, test: QTable, *, train: QTable | None = None, group_by: str | None = None,
                    knn_k: int = KNN_K, weights: Mapping[str, float] | None = None) -> EvaluationReport:
    """Measure a :class:`tryage.TryageRouter` (or a loss predictor) on ``test``.

    With a predictor that can ``encode``, the kNN baseline runs on the same encoder embeddings: fit
    on ``train`` when given, else leave-one-out on ``test`` itself. ``test`` may have more experts
    than the router; only the router's are measured.
    """
    predictor = getattr(router, "predictor", router)
    experts = tuple(predictor.experts)
    missing = [e for e in experts if e not in test.experts]
    if missing:
        raise ConfigurationError(f"the Q-table has no column for the router's expert(s) {missing}; "
                                 f"it has {list(test.experts)}")
    test = test.select_experts(experts) if test.experts != experts else test
    train = train.select_experts(experts) if train is not None and train.experts != experts else train
    encode = getattr(predictor, "encode", None)
    if encode is not None and hasattr(predictor, "predict_from_embeddings"):
        test_emb = encode(test.prompts)
        predicted = predictor.predict_from_embeddings(test_emb)
    else:
        test_emb = None
        predicted = predictor.predict_losses(list(test.prompts))
    knn_predicted = None
    if encode is not None:
        test_emb = encode(test.prompts) if test_emb is None else test_emb
        knn_predicted = (KNNPredictor(encode, k=knn_k).fit(train).predict_from_embeddings(test_emb)
                         if train is not None else knn_leave_one_out(test_emb, test.losses, k=knn_k))
    report = evaluate_predictions(predicted, test, train=train, knn_predicted=knn_predicted, group_by=group_by,
                                  library=getattr(router, "library", None),
                                  constraints=getattr(router, "constraints", None),
                                  weights={**getattr(router, "weights", {}), **(weights or {})})
    return replace(report, calibration=calibration_report(predictor, predicted, test))


def calibration_report(predictor: Any, predicted: np.ndarray, test: QTable) -> dict[str, Any] | None:
    """Expected calibration error of ``predictor``'s P(correct) on ``test`` (every observed prompt × expert),
    with and without its calibration, and the reliability table; ``None`` for losses that are no probabilities."""
    try:
        quality, calibrated = quality_of(predictor, predicted)
    except ConfigurationError:
        return None
    observed = 1.0 - test.losses
    raw = np.clip(1.0 - np.asarray(predicted, dtype=np.float64), 0.0, 1.0)
    why = None if calibrated else (
        "a router folder from before calibration" if getattr(predictor, "calibration_", None) is None
        else "no expert had enough held-out rows to fit it, as a table under 300 rows trains on every row")
    return {"calibrated": calibrated, "why_not": why, "ece": expected_calibration_error(quality, observed),
            "ece_uncalibrated": expected_calibration_error(raw, observed),
            "reliability": reliability(quality, observed)}


def plot_reliability(report: Mapping[str, Any], path: str | os.PathLike[str], *, title: str = "Reliability") -> Path:
    """A reliability diagram of a :func:`calibration_report` as a PNG: observed share correct against
    predicted P(correct) per bin, the diagonal being perfect calibration."""
    from tryage._io import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    bins = report["reliability"]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o",
            label=f"router (ECE {report['ece']:.3f})")
    ax.set_xlabel("predicted P(correct)")
    ax.set_ylabel("observed share correct")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


# -- splits and cross-validation -----------------------------------------------------------------

def strata(table: QTable, by: str | None, *, smallest: int) -> np.ndarray | None:
    """Each row's value of field ``by`` for stratifying (``None``: not stratified).

    Values with fewer than ``smallest`` rows share one stratum; when that one is still too small the
    split is not stratified, as scikit-learn needs ``smallest`` rows of every stratum.
    """
    if by is None:
        return None
    fields = sorted({k for e in table.extras for k in e})
    if by not in fields:
        raise ConfigurationError(f"cannot stratify by {by!r}: not a field of the table; its fields: "
                                 f"{', '.join(fields) or 'none (rows have only prompt and losses)'}")
    labels = np.array([str(v) for v in table.column(by)], dtype=object)
    values, counts = np.unique(labels, return_counts=True)
    rare = set(values[counts < smallest])
    labels = np.array(["\0rare" if v in rare else v for v in labels], dtype=object)
    if len(rare) and (labels == "\0rare").sum() < smallest or len(set(labels)) < 2:
        return None
    return labels


def split_indices(table: QTable, *, test: float, validation: float = 0.0, by: str | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Row indices of a train / (validation) / test split, stratified by field ``by`` (scikit-learn)."""
    from sklearn.model_selection import train_test_split

    test = check_scalar(test, "test fraction", low=0, high=1, low_open=True, high_open=True)
    validation = check_scalar(validation, "validation fraction", low=0, high=1, high_open=True)
    if test + validation >= 1:
        raise ConfigurationError(f"the test ({test}) and validation ({validation}) fractions leave no training rows")
    held = test + validation
    n_held = int(round(len(table) * held))
    if n_held < (2 if validation else 1) or len(table) - n_held < 1:
        raise ConfigurationError(f"a table of {len(table)} rows cannot be split into train, "
                                 f"{'validation, ' if validation else ''}test with those fractions")
    rows = np.arange(len(table))
    labels = strata(table, by, smallest=2)
    train, rest = train_test_split(rows, test_size=n_held, random_state=seed, stratify=_fits(labels, n_held))
    out = {"train": np.sort(train)}
    if validation:
        n_test = max(1, int(round(len(rest) * test / held)))
        sub = None if labels is None else labels[rest]
        val, tst = train_test_split(rest, test_size=n_test, random_state=seed, stratify=_fits(sub, min(n_test, len(rest) - n_test)))
        out["validation"] = np.sort(val)
        out["test"] = np.sort(tst)
    else:
        out["test"] = np.sort(rest)
    return out


def _fits(labels: np.ndarray | None, n_smaller: int) -> np.ndarray | None:
    """``labels`` when scikit-learn can stratify with them (each stratum twice, the smaller part >= strata)."""
    if labels is None:
        return None
    values, counts = np.unique(labels, return_counts=True)
    return labels if counts.min() >= 2 and n_smaller >= len(values) else None


def fold_indices(table: QTable, k: int, *, by: str | None = None, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train rows, test rows) cross-validation folds, stratified by field ``by`` when it can be."""
    from sklearn.model_selection import KFold, StratifiedKFold

    k = check_scalar(k, f"folds (of a table of {len(table)} rows)", kind=int, low=2, high=len(table))
    labels = strata(table, by, smallest=k)
    rows = np.arange(len(table))
    if labels is None:
        return list(KFold(k, shuffle=True, random_state=seed).split(rows))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(rows, labels))


def cross_validate(table: QTable, fit_predict: Any, embeddings: np.ndarray, *, folds: int = 5, by: str | None = None,
                   group_by: str | None = None, knn_k: int | None = None, seed: int = 0) -> dict[str, Any]:
    """``folds``-fold cross-validation of a router; the report has :meth:`EvaluationReport.to_dict`'s keys.

    ``fit_predict(train_rows, test_rows)`` trains a router on the rows ``train_rows`` of ``table`` and
    returns its predicted losses for ``test_rows``. Every baseline is measured on the same held-out
    rows: kNN on ``embeddings`` fit on the training folds, the best single expert chosen on the
    training folds (``best_single.expert``: the one chosen most often), random and the oracle.
    """
    from tryage.predictors.baselines import default_knn_k
    from tryage.predictors._base import neighbour_mean

    parts = fold_indices(table, folds, by=by, seed=seed)
    router = np.empty_like(table.losses)
    knn = np.empty_like(table.losses)
    single = np.empty(len(table), dtype=int)
    for train_rows, test_rows in parts:
        train = table.subset(train_rows)
        router[test_rows] = fit_predict(train_rows, test_rows)
        k = knn_k if knn_k is not None else default_knn_k(len(train))
        knn[test_rows] = neighbour_mean(embeddings[train_rows], train.losses, min(k, len(train)),
                                        queries=embeddings[test_rows])
        single[test_rows] = int(np.argmin(np.nanmean(train.losses, axis=0)))
    report = evaluate_predictions(router, table, knn_predicted=knn, group_by=group_by).to_dict()
    chosen = np.bincount(single, minlength=len(table.experts))
    metrics = choice_metrics(single, table)
    single_loss = float(np.nanmean(table.losses[np.arange(len(table)), single]))
    router_loss = float(np.nanmean(table.losses[np.arange(len(table)), np.argmin(router, axis=1)]))
    report["best_single"] = {"expert": table.experts[int(np.argmax(chosen))], "value": metrics.value,
                             "select_best_accuracy": metrics.select_best_accuracy, "chosen_on": "training folds"}
    report["gap_closed"] = _gap_closed(router_loss, single_loss, float(np.nanmin(table.losses, axis=1).mean()))
    report["knn"].update({"k": knn_k if knn_k is not None else "min(20, training rows - 1)", "fit_on": "training folds"})
    report["folds"] = folds
    report["stratified_by"] = by if strata(table, by, smallest=folds) is not None else None
    return report


# -- Pareto front ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParetoPoint:
    """One weight of a constraint sweep.

    Attributes:
        weight: The constraint weight λ.
        value: Mean score (or loss) achieved.
        select_best_accuracy: Share of prompts where a best expert was chosen.
        mean_constraint: Mean raw metadata value of the chosen experts (e.g. parameters).
        mean_penalty: Mean scaled penalty C_j of the chosen experts, in [0, 1].
        usage: Share of prompts routed to each expert.
    """

    weight: float
    value: float
    select_best_accuracy: float
    mean_constraint: float
    mean_penalty: float
    usage: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "value": self.value, "select_best_accuracy": self.select_best_accuracy,
                "mean_constraint": self.mean_constraint, "mean_penalty": self.mean_penalty,
                "usage": dict(self.usage)}


def pareto_sweep(predicted: np.ndarray, test: QTable, library: ExpertLibrary, *, constraint: str = "size",
                 weights: Sequence[float] | None = None,
                 constraints: ConstraintSet | None = None) -> list[ParetoPoint]:
    """Route ``test`` under a sweep of one constraint's weight and measure each point.

    ``predicted`` may be the true losses (``test.losses``) to trace the oracle's front.
    """
    constraints = constraints or ConstraintSet()
    lib = library.reorder(test.experts) if library.names != test.experts else library
    penalty = constraints[constraint].penalties(lib)
    raw = constraints[constraint].readable_values(lib)  # mean_constraint in the units people read
    if weights is None:
        # From no preference up to a weight at which the cheapest expert wins every prompt.
        spread = float(np.ptp(predicted)) or 1.0
        gaps = penalty[penalty > penalty.min() + 1e-12] - penalty.min()
        top = 1.5 * spread / (float(gaps.min()) if gaps.size else 1.0)
        weights = [0.0] + list(np.geomspace(top * 1e-4, top, 60))
    points = []
    for w in weights:
        choice = decide(predicted, lib, constraints, {constraint: float(w)}).choice
        m = choice_metrics(choice, test)
        usage = np.bincount(choice, minlength=len(lib)) / len(choice)
        points.append(ParetoPoint(float(w), m.value, m.select_best_accuracy, float(np.mean(raw[choice])),
                                  float(np.mean(penalty[choice])),
                                  {e: float(u) for e, u in zip(lib.names, usage) if u > 0}))
    return points


def smallest_matching(points: Sequence[ParetoPoint], target: float, *, higher_is_better: bool = True) -> ParetoPoint | None:
    """The point with the smallest ``mean_constraint`` whose value still reaches ``target``."""
    ok = [p for p in points if (p.value >= target if higher_is_better else p.value <= target)]
    return min(ok, key=lambda p: p.mean_constraint) if ok else None


def plot_pareto(fronts: Mapping[str, Sequence[ParetoPoint]], path: str | os.PathLike[str], *,
                xlabel: str = "mean parameters of chosen experts", ylabel: str = "mean score",
                title: str = "Tryage: quality against model size", xscale: str = "log",
                references: Mapping[str, tuple[float, float]] | None = None) -> Path:
    """Draw one or more fronts (label → points) as a PNG; ``references`` adds labelled single points."""
    from tryage._io import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, points in fronts.items():
        xs = [p.mean_constraint for p in points]
        ys = [p.value for p in points]
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    for label, (x, y) in (references or {}).items():
        ax.scatter([x], [y], marker="*", s=120, zorder=5, label=label)
    ax.set_xscale(xscale)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def write_json(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    from tryage._io import atomic_write_text

    target = Path(path)
    atomic_write_text(target, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return target


__all__ = ["ChoiceMetrics", "EvaluationReport", "ParetoPoint",
           "calibration_report", "choice_metrics", "evaluate_predictions", "evaluate_router", "pareto_sweep",
           "plot_pareto", "plot_reliability", "smallest_matching"]
