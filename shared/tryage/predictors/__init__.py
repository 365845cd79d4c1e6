"""Every loss predictor behind one protocol, :class:`LossPredictor` (``experts`` + ``predict_losses``).

* :class:`PerceptivePredictor` — the paper's learned Q-function (encoder + regression head);
* :class:`OraclePredictor`, :class:`BestSinglePredictor`, :class:`KNNPredictor` — baselines;
* :class:`DescriptionSimilarityPredictor` — adds experts known only by a text description.

Nothing here loads torch until a perceptive predictor is trained or loaded.
"""

from __future__ import annotations

import warnings
from typing import Any

from tryage.predictors._base import LossPredictor, neighbour_mean, unit_rows
from tryage.predictors._persistence import FORMAT_VERSION, PerceptiveConfig
from tryage.predictors.baselines import BestSinglePredictor, KNNPredictor, OraclePredictor, knn_leave_one_out
from tryage.predictors.description import DescriptionSimilarityPredictor
from tryage.predictors.perceptive import PerceptivePredictor


def deprecated_alias(name: str) -> Any:
    """``PerceptiveRouter``, the old name of :class:`PerceptivePredictor`, with a DeprecationWarning."""
    if name == "PerceptiveRouter":
        warnings.warn("PerceptiveRouter is now PerceptivePredictor (tryage.predictors); the old name goes "
                      "in the next release", DeprecationWarning, stacklevel=3)
        return PerceptivePredictor
    raise AttributeError(name)


def __getattr__(name: str) -> Any:
    try:
        return deprecated_alias(name)
    except AttributeError:
        raise AttributeError(f"module 'tryage.predictors' has no attribute {name!r}") from None


__all__ = ["FORMAT_VERSION", "BestSinglePredictor", "DescriptionSimilarityPredictor", "KNNPredictor",
           "LossPredictor", "OraclePredictor", "PerceptiveConfig", "PerceptivePredictor", "knn_leave_one_out",
           "neighbour_mean", "unit_rows"]
