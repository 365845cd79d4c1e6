"""Baseline loss predictors: the oracle, the best single expert and k nearest neighbours."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from tryage.errors import ConfigurationError, NotFittedError, QTableError
from tryage.predictors._base import neighbour_mean
from tryage.qtable import QTable

#: The one default k of the kNN baseline (``KNNPredictor``, ``evaluate_router``, ``tryage evaluate --knn-k``).
KNN_K = 20


def default_knn_k(rows: int) -> int:
    """The kNN baseline's k for a table of ``rows`` training rows: :data:`KNN_K`, at most ``rows - 1``."""
    return max(1, min(KNN_K, rows - 1))


class OraclePredictor:
    """A loss predictor that knows the true losses of a Q-table: the upper bound.

    Use it with :class:`tryage.TryageRouter` to route with perfect knowledge; prompts outside the
    table are an error.
    """

    def __init__(self, qtable: QTable) -> None:
        self.qtable = qtable
        self._rows = {p: i for i, p in enumerate(qtable.prompts)}

    @property
    def experts(self) -> tuple[str, ...]:
        return self.qtable.experts

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray:
        try:
            return self.qtable.losses[[self._rows[p] for p in prompts]]
        except KeyError as exc:
            raise QTableError(f"the oracle only knows prompts of its Q-table; not found: {exc.args[0][:80]!r}") from None


class BestSinglePredictor:
    """Predicts every expert's mean training loss for every prompt: always picks the best single expert."""

    @property
    def experts(self) -> tuple[str, ...]:
        if not hasattr(self, "experts_"):
            raise NotFittedError("this BestSinglePredictor is not fitted yet; call fit(qtable)")
        return self.experts_

    def fit(self, qtable: QTable) -> BestSinglePredictor:
        self.mean_losses_ = np.nanmean(qtable.losses, axis=0)  # partial tables: observed entries
        self.experts_ = qtable.experts
        return self

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray:
        self.experts  # noqa: B018 - raises when not fitted
        return np.tile(self.mean_losses_, (len(prompts), 1))


class KNNPredictor:
    """Predicts each expert's loss as the mean over the ``k`` most similar training prompts (cosine).

    Args:
        embed: Function from prompts to embeddings (e.g. ``PerceptivePredictor.encode``).
        k: Neighbours averaged.
    """

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray], *, k: int = KNN_K) -> None:
        self.embed = embed
        self.k = k

    @property
    def experts(self) -> tuple[str, ...]:
        if not hasattr(self, "experts_"):
            raise NotFittedError("this KNNPredictor is not fitted yet; call fit(qtable)")
        return self.experts_

    def fit(self, qtable: QTable, *, embeddings: np.ndarray | None = None) -> KNNPredictor:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigurationError(f"k must be a positive integer, got {self.k!r}")
        self.train_ = np.asarray(self.embed(qtable.prompts) if embeddings is None else embeddings)
        self.losses_ = qtable.losses
        self.experts_ = qtable.experts
        return self

    def predict_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        self.experts  # noqa: B018 - raises when not fitted
        return neighbour_mean(self.train_, self.losses_, self.k, queries=embeddings)

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray:
        return self.predict_from_embeddings(self.embed(prompts))


def knn_leave_one_out(embeddings: np.ndarray, losses: np.ndarray, *, k: int = KNN_K) -> np.ndarray:
    """kNN predictions for every row from its ``k`` nearest *other* rows of the same table.

    A baseline that needs no training table: each prompt is predicted from its neighbours only.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k >= len(losses):
        raise ConfigurationError(f"k must be an integer in [1, {len(losses) - 1}], got {k!r}")
    return neighbour_mean(embeddings, losses, k)


__all__ = ["BestSinglePredictor", "KNNPredictor", "OraclePredictor", "default_knn_k", "knn_leave_one_out"]
