"""Per-prompt cost: how many tokens each expert will answer with, predicted from the prompt.

Prices are per token, so what a prompt costs on an expert depends on how long that expert's answer
is: a verbose model can cost more than a pricier terse one. Q-tables written by ``tryage collect``
carry the measured output length of every answer — JSONL rows with ``"output_tokens": {expert: n}``
(or flat ``output_tokens:<expert>`` extras, one per expert). :class:`OutputLengthPredictor` learns,
per expert, a ridge regression of ``log(1 + output tokens)`` on the prompt's encoder embedding, and
:meth:`OutputLengthPredictor.predict_costs` turns that into USD per prompt and expert::

    cost = (input_tokens · input_cost + predicted_output_tokens · output_cost) / 1e6

with ``input_tokens`` estimated as ``len(prompt) / 4`` (the common characters-per-token rule; the
input part is the same for every expert up to its price). Given to
:class:`tryage.TryageRouter` as ``output_lengths=``, it replaces the constant per-expert ``cost``
penalty by this prompt's predicted cost (min-max scaled over the experts of the row), so the
``cost`` weight and ``[Flag: cheapest]`` pick the expert that is cheapest *for this prompt*.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tryage._io import dumps_strict
from tryage.errors import ConfigurationError, NotFittedError, QTableError, RouterFormatError, TryageFileNotFoundError
from tryage.experts import ExpertLibrary
from tryage.predictors._persistence import saved_folder, write_folder
from tryage.qtable import QTable

CHARS_PER_TOKEN = 4.0
FORMAT_VERSION = 1
_KIND = "tryage.OutputLengthPredictor"


def output_tokens(qtable: QTable) -> np.ndarray:
    """The measured output tokens of a Q-table, shape ``(n, k)``, ``nan`` where a row lacks a count.

    Reads per-row ``output_tokens`` mappings (JSONL) or flat ``output_tokens:<expert>`` fields.
    """
    out = np.full(qtable.losses.shape, np.nan)
    for i, extra in enumerate(qtable.extras):
        mapping = extra.get("output_tokens")
        for j, expert in enumerate(qtable.experts):
            value = mapping.get(expert) if isinstance(mapping, Mapping) else extra.get(f"output_tokens:{expert}")
            if value is None or value == "":
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise QTableError(f"row {i}: output_tokens of {expert!r} is {value!r}; expected a number >= 0") from None
            if not np.isfinite(number) or number < 0:
                raise QTableError(f"row {i}: output_tokens of {expert!r} is {value!r}; expected a number >= 0")
            out[i, j] = number
    return out


class OutputLengthPredictor:
    """Predicts each expert's output length (tokens) for a prompt; see the module doc.

    Args:
        embed: Function from prompts to embeddings (e.g. ``PerceptivePredictor.encode``), used by
            :meth:`predict_tokens` and by :meth:`fit` when no ``embeddings`` are given.
        alpha: Ridge regularisation strength.
        min_rows: Fewest measured rows an expert needs to get its own regression; below it the
            expert's mean measured length (or, with none, the mean over all experts) is predicted.

    Attributes (after :meth:`fit`):
        experts_: Expert names, the output columns.
        coef_: Ridge coefficients, shape ``(k, d)``; intercept_: shape ``(k,)``, on ``log1p`` tokens.
    """

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray] | None = None, *, alpha: float = 10.0,
                 min_rows: int = 10) -> None:
        self.embed = embed
        self.alpha = alpha
        self.min_rows = min_rows

    @property
    def experts(self) -> tuple[str, ...]:
        self._check_fitted()
        return self.experts_

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this OutputLengthPredictor is not fitted yet; call fit(qtable)")

    def fit(self, qtable: QTable, *, embeddings: np.ndarray | None = None) -> OutputLengthPredictor:
        """Learn from a Q-table whose rows carry ``output_tokens`` (see :func:`output_tokens`)."""
        from sklearn.linear_model import Ridge

        if not isinstance(self.alpha, (int, float)) or self.alpha < 0:
            raise ConfigurationError(f"alpha must be a number >= 0, got {self.alpha!r}")
        if not isinstance(self.min_rows, int) or self.min_rows < 2:
            raise ConfigurationError(f"min_rows must be an integer >= 2, got {self.min_rows!r}")
        tokens = output_tokens(qtable)
        if np.isnan(tokens).all():
            raise QTableError("this Q-table has no output_tokens: JSONL rows need \"output_tokens\": {expert: n} "
                              "or output_tokens:<expert> fields, as `tryage collect` writes")
        if embeddings is None:
            if self.embed is None:
                raise ConfigurationError("fit needs embeddings= or an embed function")
            embeddings = self.embed(list(qtable.prompts))
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(qtable):
            raise ConfigurationError(f"embeddings must have shape ({len(qtable)}, d), got {x.shape}")
        target = np.log1p(tokens)
        fallback = float(np.nanmean(target))
        self.coef_ = np.zeros((len(qtable.experts), x.shape[1]))
        self.intercept_ = np.zeros(len(qtable.experts))
        self.rows_ = np.zeros(len(qtable.experts), dtype=int)
        for j in range(len(qtable.experts)):
            known = ~np.isnan(target[:, j])
            self.rows_[j] = int(known.sum())
            if known.sum() >= self.min_rows:
                model = Ridge(alpha=float(self.alpha)).fit(x[known], target[known, j])
                self.coef_[j], self.intercept_[j] = model.coef_, model.intercept_
            else:
                self.intercept_[j] = float(target[known, j].mean()) if known.any() else fallback
        self.experts_ = qtable.experts
        return self

    def predict_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Predicted output tokens, shape ``(n, k)``, from precomputed embeddings."""
        self._check_fitted()
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.coef_.shape[1]:
            raise ConfigurationError(f"embeddings must have shape (n, {self.coef_.shape[1]}), got {x.shape}")
        return np.expm1(np.maximum(x @ self.coef_.T + self.intercept_, 0.0))

    def predict_tokens(self, prompts: Sequence[str]) -> np.ndarray:
        """Predicted output tokens of every expert on every prompt, shape ``(n, k)``."""
        if self.embed is None:
            raise ConfigurationError("predict_tokens needs an embed function; pass embed= or use predict_from_embeddings")
        return self.predict_from_embeddings(self.embed(list(prompts)))

    def predict_costs(self, prompts: Sequence[str], library: ExpertLibrary) -> np.ndarray:
        """Predicted USD of every expert on every prompt, shape ``(n, k)``, columns in ``library`` order."""
        self._check_fitted()
        missing = [n for n in library.names if n not in self.experts_]
        if missing:
            raise ConfigurationError(f"no output-length model for expert(s) {missing}; it knows {list(self.experts_)}")
        tokens = self.predict_tokens(prompts)[:, [self.experts_.index(n) for n in library.names]]
        unknown = [e.name for e in library if e.input_cost is None and e.output_cost is None]
        if unknown:
            raise ConfigurationError(f"per-prompt cost needs input_cost/output_cost for expert(s) {unknown}")
        price_in = np.array([e.input_cost if e.input_cost is not None else e.output_cost for e in library])
        price_out = np.array([e.output_cost if e.output_cost is not None else e.input_cost for e in library])
        n_in = np.array([len(p) / CHARS_PER_TOKEN for p in prompts])[:, None]
        return (n_in * price_in[None, :] + tokens * price_out[None, :]) / 1e6

    # -- persistence -------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (coefficients) to ``folder``, atomically as the
        perceptive predictor saves (:func:`tryage.predictors._persistence.write_folder`): created, or
        replaced whole if it holds a saved output-length predictor; a folder with other files, or a file,
        is refused (:class:`~tryage.errors.TargetExistsError`) unless ``overwrite=True``."""
        from safetensors.numpy import save_file

        self._check_fitted()
        config = {"format_version": FORMAT_VERSION, "kind": _KIND,
                  "experts": list(self.experts_), "alpha": float(self.alpha), "rows": self.rows_.tolist()}

        def write(staging: Path) -> None:
            save_file({"coef": self.coef_.astype(np.float32), "intercept": self.intercept_.astype(np.float32)},
                      str(staging / "model.safetensors"))
            text = dumps_strict(config, what=f"output-length config {folder}") + "\n"
            (staging / "config.json").write_text(text, encoding="utf-8")

        return write_folder(folder, write, kind=_KIND, what="an output-length predictor", overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], *,
                        embed: Callable[[Sequence[str]], np.ndarray] | None = None) -> OutputLengthPredictor:
        from safetensors.numpy import load_file

        source = saved_folder(folder)
        if not (source / "config.json").exists() or not (source / "model.safetensors").exists():
            raise TryageFileNotFoundError(f"{source} is not a saved OutputLengthPredictor "
                                          "(needs config.json and model.safetensors)")
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        if config.get("format_version") != FORMAT_VERSION:
            raise RouterFormatError(f"{source}: format_version {config.get('format_version')!r} is not supported")
        weights = load_file(str(source / "model.safetensors"))
        out = cls(embed, alpha=float(config["alpha"]))
        out.coef_ = weights["coef"].astype(np.float64)
        out.intercept_ = weights["intercept"].astype(np.float64)
        out.experts_ = tuple(config["experts"])
        out.rows_ = np.asarray(config.get("rows", [0] * len(out.experts_)))
        if out.coef_.shape[0] != len(out.experts_):
            raise RouterFormatError(f"{source}: {out.coef_.shape[0]} coefficient rows for {len(out.experts_)} experts")
        return out


__all__ = ["CHARS_PER_TOKEN", "OutputLengthPredictor", "output_tokens"]
