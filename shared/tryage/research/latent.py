"""The router's latent space: how well prompt embeddings separate by a label such as the domain.

:func:`silhouette` is the number (mean silhouette coefficient with cosine distance, in [-1, 1];
higher means prompts of one label sit closer to each other than to other labels; scikit-learn's).
:func:`umap_2d` projects embeddings to 2-D with umap-learn and :func:`plot_latent` draws one or more
projections side by side, coloured by label (both need the ``plot`` extra).
:func:`latent_report` does the paper's comparison: the trained predictor's own embeddings
(:meth:`PerceptivePredictor.embed`, the head's hidden layer; for a linear head, which has none, its
predicted losses minus each prompt's mean: the differences it routes on) beside the untrained encoder's
(:meth:`PerceptivePredictor.encode`, mean-pooled MiniLM).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tryage.errors import ConfigurationError, require

if TYPE_CHECKING:  # pragma: no cover
    from tryage.predictors import PerceptivePredictor


def _check(embeddings: np.ndarray, labels: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray([str(v) for v in labels])
    if x.ndim != 2 or len(x) != len(y):
        raise ConfigurationError(f"need embeddings of shape (n, d) and n labels; got {x.shape} and {len(y)} labels")
    if len(set(y)) < 2 or len(set(y)) >= len(y):
        raise ConfigurationError(f"need between 2 and n-1 distinct labels, got {len(set(y))} for {len(y)} points")
    return x, y


def silhouette(embeddings: np.ndarray, labels: Sequence[Any]) -> float:
    """Mean silhouette coefficient of ``embeddings`` grouped by ``labels``, cosine distance."""
    from sklearn.metrics import silhouette_score

    x, y = _check(embeddings, labels)
    return float(silhouette_score(x, y, metric="cosine"))


def umap_2d(embeddings: np.ndarray, *, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """A 2-D UMAP projection (cosine metric) of ``embeddings``; needs ``tryage[plot]``."""
    umap = require("umap", "plot", "umap-learn")
    x = np.asarray(embeddings, dtype=np.float32)
    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(x) - 1), metric="cosine", random_state=seed)
    return np.asarray(reducer.fit_transform(x))


def plot_latent(panels: Mapping[str, tuple[np.ndarray, Sequence[Any]]], path: str | os.PathLike[str], *,
                title: str = "Prompt embeddings by domain") -> Path:
    """Draw 2-D points (panel title → (points, labels)) side by side as a PNG, coloured by label."""
    from tryage._io import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), dpi=110, squeeze=False)
    for ax, (name, (points, labels)) in zip(axes[0], panels.items()):
        labels = [str(v) for v in labels]
        for i, label in enumerate(sorted(set(labels))):
            mask = np.array([v == label for v in labels])
            ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.7, label=label, color=plt.cm.tab10(i % 10))
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, markerscale=2, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def latent_report(predictor: PerceptivePredictor, prompts: Sequence[str], labels: Sequence[Any], *,
                  png: str | os.PathLike[str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Silhouette by label of the trained router's embeddings and of its untrained encoder.

    ``predictor`` is a fitted :class:`~tryage.predictors.PerceptivePredictor` (its ``embed``,
    ``encode`` and ``predict_losses`` are used). With ``png``, both UMAP projections are drawn side by side.
    """
    untrained = np.asarray(predictor.encode(list(prompts)))
    trained = np.asarray(predictor.embed(list(prompts)))
    if trained.shape == untrained.shape and np.allclose(trained, untrained):
        # a linear head has no hidden layer: its routing space is its output. Adding a constant to one
        # prompt's predicted losses never changes its choice, so each prompt's mean is removed and the
        # space is the predicted loss differences between experts the router decides on.
        predicted = np.asarray(predictor.predict_losses(list(prompts)))
        trained = predicted - predicted.mean(axis=1, keepdims=True)
    report: dict[str, Any] = {"n": len(prompts), "labels": sorted({str(v) for v in labels}), "metric": "cosine",
                              "silhouette_trained_router": silhouette(trained, labels),
                              "silhouette_untrained_encoder": silhouette(untrained, labels)}
    if png is not None:
        panels = {f"untrained encoder (silhouette {report['silhouette_untrained_encoder']:.3f})":
                  (umap_2d(untrained, seed=seed), labels),
                  f"trained router (silhouette {report['silhouette_trained_router']:.3f})":
                  (umap_2d(trained, seed=seed), labels)}
        report["png"] = str(plot_latent(panels, png))
    return report


__all__ = ["latent_report", "plot_latent", "silhouette", "umap_2d"]
