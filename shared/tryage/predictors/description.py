"""A loss predictor that adds experts known only by a text description."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tryage.errors import ConfigurationError
from tryage.predictors._base import LossPredictor, unit_rows


class DescriptionSimilarityPredictor:
    """``base``'s losses, plus ``1 - cos(prompt, description)`` for each extra expert.

    Both texts are embedded by ``base``'s own encoder (``encode``, else ``embed``). The extra
    columns are on the scale of ``base``'s losses only when those lie in [0, 1].

    Args:
        base: A loss predictor with an ``encode`` or ``embed`` method (a
            :class:`~tryage.predictors.PerceptivePredictor` has both).
        names: The extra experts' names, appended after ``base.experts``.
        descriptions: One description per extra expert.
    """

    def __init__(self, base: LossPredictor, names: Sequence[str], descriptions: Sequence[str]) -> None:
        self._encode = getattr(base, "encode", None) or getattr(base, "embed", None)
        if not callable(self._encode):
            raise ConfigurationError(
                "description similarity needs a predictor with an encode() or embed() method "
                f"(the PerceptivePredictor has both); {type(base).__name__} has neither")
        if len(names) != len(descriptions):
            raise ConfigurationError(f"got {len(names)} names but {len(descriptions)} descriptions")
        self.base = base
        self.names = tuple(names)
        self.descriptions = tuple(descriptions)
        self._description_vectors: np.ndarray | None = None

    @property
    def experts(self) -> tuple[str, ...]:
        return (*self.base.experts, *self.names)

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray:
        prompts = list(prompts)
        if self._description_vectors is None:
            self._description_vectors = unit_rows(self._encode(list(self.descriptions)))
        vectors = np.asarray(self._encode(prompts), dtype=np.float64)
        if getattr(self.base, "encode", None) is self._encode and hasattr(self.base, "predict_from_embeddings"):
            known = self.base.predict_from_embeddings(vectors)  # one encoder pass serves both
        else:
            known = self.base.predict_losses(prompts)
        return np.hstack([np.asarray(known, dtype=np.float64), 1.0 - unit_rows(vectors) @ self._description_vectors.T])


__all__ = ["DescriptionSimilarityPredictor"]
