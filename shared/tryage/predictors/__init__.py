"""Every loss predictor behind one protocol, :class:`LossPredictor` (``experts`` + ``predict_losses``).

* :class:`PerceptivePredictor` — the paper's learned Q-function (encoder + regression head);
* :class:`OraclePredictor`, :class:`BestSinglePredictor`, :class:`KNNPredictor` — baselines;
* :class:`DescriptionSimilarityPredictor` — adds experts known only by a text description.

Nothing here loads torch until a perceptive predictor is trained or loaded.
"""

from __future__ import annotations

from tryage.predictors._base import LossPredictor, neighbour_mean, unit_rows
from tryage.predictors._persistence import FORMAT_VERSION, PerceptiveConfig
from tryage.predictors.baselines import KNN_K, BestSinglePredictor, KNNPredictor, OraclePredictor, knn_leave_one_out
from tryage.predictors.description import DescriptionSimilarityPredictor
from tryage.predictors.perceptive import PerceptivePredictor

__all__ = ["FORMAT_VERSION", "KNN_K", "BestSinglePredictor", "DescriptionSimilarityPredictor", "KNNPredictor",
           "LossPredictor", "OraclePredictor", "PerceptiveConfig", "PerceptivePredictor", "knn_leave_one_out",
           "neighbour_mean", "unit_rows"]
