"""Calibrated probabilities of a correct answer, so that a quality floor of 0.8 means 80%.

A predictor trained on scores in [0, 1] (0/1 correctness, or graded scores) predicts a loss that reads as
the probability the expert fails; ``1 − loss`` is its predicted score. Heads trained with early stopping
and target smoothing are not calibrated: among prompts predicted at 0.9, far fewer or more than 90% may be
answered well. :class:`ScoreCalibration` fixes that per expert, fitted on held-out rows at training time:
Platt scaling (the default: scikit-learn's :class:`~sklearn.linear_model.LogisticRegression` on the logit of
the predicted score; two numbers per expert, steady on a few hundred rows) or
:class:`~sklearn.isotonic.IsotonicRegression` (any monotone map; it needs more rows: on 384 held-out rows
per expert of the LLMRouter table it overfits, see benchmarks/README.md). The map is stored as plain
numbers in the router's ``config.json`` (no pickle, no scikit-learn at load time) and applied by linear
interpolation (NumPy only).

:func:`expected_calibration_error` and :func:`reliability` measure how far predicted probabilities are
from observed frequencies (equal-width bins, as in Guo et al. 2017).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from tryage.errors import ConfigurationError, RouterFormatError

#: Fewest held-out observed rows of an expert for its map to be fitted (fewer: that expert stays uncalibrated).
MIN_CALIBRATION_ROWS = 30
#: Bins of :func:`expected_calibration_error` and :func:`reliability`.
ECE_BINS = 10
#: Calibration methods.
METHODS = ("platt", "isotonic")
#: Points a Platt map is stored at (linear interpolation between them).
GRID = 101


@dataclass(frozen=True)
class ScoreCalibration:
    """Per-expert monotone maps from predicted score (``1 − predicted loss``) to P(correct).

    Attributes:
        maps: Expert name → ``(x, y)``: points of the map (increasing ``x``, non-decreasing ``y`` in [0, 1]):
            the isotonic fit's thresholds, or the Platt curve on a grid of :data:`GRID` points. An expert without
            a map keeps its uncalibrated score.
        rows: Expert name → held-out rows its map was fitted on.
        method: ``"platt"`` or ``"isotonic"``.
    """

    maps: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=dict)
    rows: Mapping[str, int] = field(default_factory=dict)
    method: str = "platt"

    @classmethod
    def fit(cls, experts: Sequence[str], predicted_losses: np.ndarray, observed_losses: np.ndarray, *,
            method: str = "platt", min_rows: int = MIN_CALIBRATION_ROWS) -> ScoreCalibration:
        """Fit one map per expert on held-out rows (NaN observed losses are skipped); ``method`` as in the class."""
        if method not in METHODS:
            raise ConfigurationError(f"calibration method must be one of {METHODS}, got {method!r}")
        predicted = np.asarray(predicted_losses, dtype=np.float64)
        observed = np.asarray(observed_losses, dtype=np.float64)
        if predicted.shape != observed.shape or predicted.ndim != 2 or predicted.shape[1] != len(experts):
            raise ConfigurationError(f"calibration needs predicted and observed losses of shape (n, {len(experts)}), "
                                     f"got {predicted.shape} and {observed.shape}")
        maps, rows = {}, {}
        for j, name in enumerate(experts):
            seen = ~np.isnan(observed[:, j])
            if seen.sum() < min_rows:
                continue
            x, y = (_platt if method == "platt" else _isotonic)(1.0 - predicted[seen, j], 1.0 - observed[seen, j])
            maps[name] = (tuple(float(v) for v in x), tuple(float(v) for v in y))
            rows[name] = int(seen.sum())
        return cls(MappingProxyType(maps), MappingProxyType(rows), method)

    def probabilities(self, experts: Sequence[str], predicted_losses: np.ndarray) -> np.ndarray:
        """Calibrated P(correct) per prompt and expert, shape ``(n, k)``; ``1 − loss`` (clipped) without a map."""
        scores = np.clip(1.0 - np.asarray(predicted_losses, dtype=np.float64), 0.0, 1.0)
        out = scores.copy()
        for j, name in enumerate(experts):
            if name in self.maps:
                x, y = self.maps[name]
                out[:, j] = np.interp(scores[:, j], x, y)
        return out

    def without(self, name: str) -> ScoreCalibration:
        """A copy without ``name``'s map (its column was removed)."""
        return ScoreCalibration(MappingProxyType({k: v for k, v in self.maps.items() if k != name}),
                                MappingProxyType({k: v for k, v in self.rows.items() if k != name}), self.method)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method,
                "experts": {k: {"x": list(x), "y": list(y), "rows": self.rows.get(k, 0)} for k, (x, y) in self.maps.items()}}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "config.json") -> ScoreCalibration:
        """Read :meth:`to_dict` output; anything malformed is a :class:`RouterFormatError` naming ``source``."""
        try:
            if data.get("method") not in METHODS:
                raise ValueError(f"method {data.get('method')!r} (one of {METHODS} is read)")
            maps, rows = {}, {}
            for name, entry in data["experts"].items():
                x = tuple(float(v) for v in entry["x"])
                y = tuple(float(v) for v in entry["y"])
                if not x or len(x) != len(y) or np.any(np.diff(x) < 0) or not all(0.0 <= v <= 1.0 for v in y):
                    raise ValueError(f"expert {name!r}: x must increase and match y in length, y must lie in [0, 1]")
                maps[str(name)], rows[str(name)] = (x, y), int(entry.get("rows", 0))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise RouterFormatError(f"{source}: calibration is malformed ({exc}); train the router again") from None
        return cls(MappingProxyType(maps), MappingProxyType(rows), data["method"])


def _isotonic(scores: np.ndarray, outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, outcomes)
    return iso.X_thresholds_, iso.y_thresholds_


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def _platt(scores: np.ndarray, outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Platt scaling: P(correct) = σ(a·logit(score) + b), fitted by logistic regression; graded outcomes
    in [0, 1] enter as a weighted positive and negative row each. Returned sampled on :data:`GRID` points."""
    from sklearn.linear_model import LogisticRegression

    n = len(scores)
    x = np.concatenate([_logit(scores), _logit(scores)])[:, None]
    y = np.concatenate([np.ones(n), np.zeros(n)])
    weight = np.concatenate([outcomes, 1.0 - outcomes])
    if weight[:n].sum() == 0 or weight[n:].sum() == 0:  # one outcome only: the map is that constant
        return np.array([0.0, 1.0]), np.full(2, float(outcomes.mean()))
    model = LogisticRegression(C=1e4).fit(x, y, sample_weight=weight)
    grid = np.linspace(0.0, 1.0, GRID)
    return grid, np.maximum.accumulate(model.predict_proba(_logit(grid)[:, None])[:, 1])


def held_out_calibration(predictor: Any, qtable: Any, held_out: np.ndarray, embeddings: Any = None,
                         ) -> ScoreCalibration | None:
    """A trained perceptive predictor's calibration on its validation rows ``held_out`` (indices into
    ``qtable``); ``embeddings`` are the table's encodings in head mode. ``None`` unless the losses are
    probabilities of failure (objective ``"bce"``); experts with fewer than :data:`MIN_CALIBRATION_ROWS`
    held-out rows keep their uncalibrated score."""
    if predictor.objective_ != "bce":
        return None
    if not len(held_out):
        return ScoreCalibration()
    raw = (predictor._head_outputs(np.asarray(embeddings)[held_out]) if embeddings is not None
           else predictor._predict_raw([qtable.prompts[int(i)] for i in held_out]))
    return ScoreCalibration.fit(predictor.experts_, predictor._to_units(raw), qtable.losses[held_out])


def quality_of(predictor: Any, predicted_losses: np.ndarray) -> tuple[np.ndarray, bool]:
    """P(correct) per prompt and expert for ``predictor``'s ``predicted_losses``, and whether it is calibrated.

    A predictor with a :class:`ScoreCalibration` (``calibration_``) gives calibrated probabilities; one
    without (an old router folder, a baseline) gives ``1 − loss`` when its losses lie in [0, 1].

    Raises:
        ConfigurationError: the losses are not in [0, 1], so they are no probabilities (a table of LM losses).
    """
    predicted = np.asarray(predicted_losses, dtype=np.float64)
    experts = tuple(predictor.experts)
    calibration = getattr(predictor, "calibration_", None)
    if calibration is not None:
        return calibration.probabilities(experts, predicted), bool(calibration.maps)
    if predicted.size and (np.nanmin(predicted) < -1e-6 or np.nanmax(predicted) > 1 + 1e-6):
        raise ConfigurationError(
            "min_quality needs predicted probabilities of a correct answer: a router trained on scores in [0, 1]; "
            f"this router predicts losses in [{np.nanmin(predicted):.4g}, {np.nanmax(predicted):.4g}]")
    return np.clip(1.0 - predicted, 0.0, 1.0), False


def _bins(probabilities: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((probabilities * bins).astype(int), bins - 1)


def reliability(probabilities: np.ndarray, outcomes: np.ndarray, *, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-width bin of predicted probability: its count, mean prediction and observed mean outcome.

    NaN outcomes (unobserved entries) are skipped. Empty bins are left out.
    """
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    keep = ~np.isnan(y) & ~np.isnan(p)
    p, y = np.clip(p[keep], 0.0, 1.0), y[keep]
    index = _bins(p, bins)
    out = []
    for b in range(bins):
        member = index == b
        if member.any():
            out.append({"low": b / bins, "high": (b + 1) / bins, "count": int(member.sum()),
                        "predicted": float(p[member].mean()), "observed": float(y[member].mean())})
    return out


def expected_calibration_error(probabilities: np.ndarray, outcomes: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """Σ_b (n_b / n) · |mean outcome_b − mean prediction_b| over equal-width bins; NaN with no observed entry."""
    table = reliability(probabilities, outcomes, bins=bins)
    total = sum(r["count"] for r in table)
    if not total:
        return float("nan")
    return float(sum(r["count"] * abs(r["observed"] - r["predicted"]) for r in table) / total)


__all__ = ["ECE_BINS", "MIN_CALIBRATION_ROWS", "ScoreCalibration", "expected_calibration_error", "held_out_calibration", "quality_of",
           "reliability"]
