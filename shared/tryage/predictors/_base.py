"""The loss-predictor protocol and the two vector helpers every predictor shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class LossPredictor(Protocol):
    """Anything that predicts one loss per expert for each prompt."""

    @property
    def experts(self) -> tuple[str, ...]: ...

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray: ...


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbour_mean(train: np.ndarray, targets: np.ndarray, k: int, queries: np.ndarray | None = None) -> np.ndarray:
    """Mean of ``targets`` over each query's ``k`` nearest ``train`` rows by cosine distance.

    ``queries=None`` queries the training rows themselves, each leaving itself out (leave-one-out);
    pass ``queries=train`` to count each row among its own neighbours. NaN targets (unobserved entries
    of a partial table) are left out of the mean; where no neighbour observed an expert, NaN.
    """
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(metric="cosine", algorithm="brute").fit(np.asarray(train))
    k = min(k, len(train) - (queries is None))
    nearest = index.kneighbors(None if queries is None else np.asarray(queries), n_neighbors=k,
                               return_distance=False)
    neighbours = np.asarray(targets)[nearest]
    seen = ~np.isnan(neighbours)
    if seen.all():
        return neighbours.mean(axis=1)
    count = seen.sum(axis=1)
    total = np.where(seen, neighbours, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
