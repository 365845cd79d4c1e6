"""Deprecated: the perceptive predictor lives in :mod:`tryage.predictors` now.

``from tryage.predictor import PerceptiveRouter`` keeps working for one release (with a
DeprecationWarning); write ``from tryage.predictors import PerceptivePredictor``.
"""

from __future__ import annotations

from typing import Any

from tryage.predictors import FORMAT_VERSION, PerceptivePredictor, deprecated_alias


def __getattr__(name: str) -> Any:
    try:
        return deprecated_alias(name)
    except AttributeError:
        raise AttributeError(f"module 'tryage.predictor' has no attribute {name!r}") from None


__all__ = ["FORMAT_VERSION", "PerceptivePredictor"]
