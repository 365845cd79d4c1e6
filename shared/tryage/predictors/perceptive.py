"""The perceptive predictor: the paper's Q-function.

A small transformer encoder reads the prompt; a regression head with one output per expert predicts
the loss each expert would incur on it. Trained on a :class:`tryage.qtable.QTable`.

Two training modes:

* ``"head"`` (default, fast): the encoder is frozen; prompts are encoded once and a small MLP head is
  trained on the embeddings. Saved predictors hold only the head (kilobytes) when the encoder is the
  bundled MiniLM or a Hub id.
* ``"finetune"``: encoder and head are trained together; the encoder's weights are saved too.

Targets are standardised per expert and mapped back (predictions are in the Q-table's units); seeded.

Learning after :meth:`~PerceptivePredictor.fit` is the predictor's own (head mode), as in scikit-learn:
:meth:`~PerceptivePredictor.partial_fit` warm-starts it on production feedback (see :mod:`tryage.feedback`),
:meth:`~PerceptivePredictor.add_output` fits a new expert's column from a few dozen calibration rows and
:meth:`~PerceptivePredictor.remove_output` drops one. Training loops live in
:mod:`tryage.predictors._training`, the column arithmetic in :mod:`tryage.predictors._outputs`, the save
folder in :mod:`tryage.predictors._persistence`; this module holds the estimator, its state and inference.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tryage.encoders import EncoderSpec, TextEncoder, check_runtime
from tryage.errors import (ConfigurationError, ExpertLibraryError, ExpertNotFoundError, NotFittedError,
                           RouterFormatError, check_scalar)
from tryage.experts import Expert, ExpertLibrary
from tryage.feedback import REGULARIZATIONS, Feedback, UpdateReport, feedback_table
import tryage.predictors._outputs as _outputs
import tryage.predictors._training as _training
from tryage.predictors._base import neighbour_mean
from tryage.predictors._persistence import FORMAT_VERSION, PerceptiveConfig, read_folder, save_folder
from tryage.predictors.calibration import ScoreCalibration, held_out_calibration
from tryage.qtable import QTable

if TYPE_CHECKING:  # pragma: no cover
    import torch

_MODES = ("head", "finetune")


class PerceptivePredictor:
    """Predicts every expert's loss on a prompt.

    Args:
        encoder: ``None`` for the bundled all-MiniLM-L6-v2, a local Hugging Face encoder folder, or a
            Hub id (e.g. ``"prajjwal1/bert-tiny"``).
        mode: ``"head"`` (frozen encoder, fast) or ``"finetune"`` (encoder trained too).
        hidden_dim, dropout: Width of the head's hidden layer (0 for a linear head); its dropout.
        epochs, batch_size: Maximum training epochs; training batch size.
        learning_rate: Head learning rate (the encoder uses ``encoder_learning_rate``).
        encoder_learning_rate: Encoder learning rate in ``"finetune"`` mode.
        weight_decay: AdamW weight decay. validation_fraction: Share held out for early stopping (0: none).
        patience: Epochs without validation improvement before stopping. max_length: Tokens kept per prompt.
        layers: Encoder pooling: ``"last"`` (the sentence embedding) or ``"all"`` (every layer's
            mean-pool, concatenated; see :class:`tryage.encoders.EncoderSpec`).
        objective: ``"mse"`` (regression on per-expert standardised losses), ``"bce"`` (losses in
            [0, 1] read as the probability the expert fails — the natural reading of 0/1 scores), or
            ``"auto"``: ``"bce"`` when every loss of the table lies in [0, 1], else ``"mse"``.
        target_smoothing: Head mode: train on each prompt's loss averaged with its ``k`` nearest
            training prompts (cosine on the encoder embedding) — a lower-variance estimate of the
            expected loss when outcomes are noisy (0/1 scores). ``None`` picks
            ``min(20, n_train // 50)`` for the ``"bce"`` objective (off below 100 training rows,
            where neighbours would span whole classes) and 0 (off) otherwise.
        small_table: Head mode on fewer than ``SMALL_TABLE_ROWS`` (300) rows: a narrower, more regularised head,
            fixed epochs, no validation split, for the settings left at their defaults (``_training.table_settings``).
        seed: Seed for the split, initialisation and shuffling.
        device: torch device; ``"cpu"`` by default. progress: Show progress bars.
        runtime: Encoder inference in ``"torch"`` (default) or ``"onnx"`` (ONNX Runtime on the CPU, the same
            embeddings at 0.6–0.8× the batch-1 latency; ``pip install 'tryage[onnx]'``); training is PyTorch.

    Attributes (after :meth:`fit` or :meth:`from_pretrained`):
        experts_: Expert names, the output columns.
        library_: The expert library saved with the predictor.
        history_: Per-epoch training and validation loss.
        last_update_: The :class:`~tryage.feedback.UpdateReport` of the latest :meth:`partial_fit`.
        expert_fits_: The :class:`~tryage.predictors._outputs.ExpertFit` of each expert added by :meth:`add_output`.
        calibration_: :class:`~tryage.predictors.calibration.ScoreCalibration` fitted on the held-out rows (0/1 scores).
    """

    def __init__(self, encoder: str | os.PathLike[str] | None = None, *, mode: str = "head",
                 hidden_dim: int = 256, dropout: float = 0.1, epochs: int | None = None,
                 batch_size: int | None = None, learning_rate: float = 1e-3,
                 encoder_learning_rate: float = 3e-5, weight_decay: float = 1e-2,
                 validation_fraction: float = 0.1, patience: int | None = None, max_length: int = 256,
                 layers: str = "all", objective: str = "auto", target_smoothing: int | None = None,
                 small_table: bool = True, seed: int = 0,
                 device: str | None = None, runtime: str = "torch", progress: bool = True) -> None:
        self.encoder = encoder
        self.mode = mode
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.encoder_learning_rate = encoder_learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.max_length = max_length
        self.layers = layers
        self.objective = objective
        self.target_smoothing = target_smoothing
        self.small_table = small_table
        self.seed = seed
        self.device = device
        self.runtime = runtime
        self.progress = progress

    # -- state -------------------------------------------------------------------------------
    @property
    def experts(self) -> tuple[str, ...]:
        self._check_fitted()
        return self.experts_

    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise NotFittedError(f"this {type(self).__name__} is not trained yet; "
                                 "call fit(qtable) or from_pretrained(folder)")

    def _check_head_mode(self, what: str) -> None:
        self._check_fitted()
        if self.mode != "head":
            raise ConfigurationError(f"{what} supports head-mode routers; this one was trained with mode={self.mode!r}")

    def _validate_params(self) -> None:
        """Every setting checked once, finite and in range, before training (:func:`~tryage.errors.check_scalar`)."""
        if self.mode not in _MODES:
            raise ConfigurationError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if self.objective not in ("auto", "mse", "bce"):
            raise ConfigurationError(f"objective must be 'auto', 'mse' or 'bce', got {self.objective!r}")
        check_scalar(self.validation_fraction, "validation_fraction", low=0.0, high=0.5, high_open=True)
        whole = {"epochs": 1, "batch_size": 1, "patience": 1, "target_smoothing": 0, "hidden_dim": 0, "max_length": 8}
        for name, low in whole.items():  # stored as int (3.0 or numpy's 3 become 3): loops count with them
            if getattr(self, name) is not None or name in ("hidden_dim", "max_length"):
                setattr(self, name, check_scalar(getattr(self, name), name, kind=int, low=low))
        self.seed = check_scalar(self.seed, "seed", kind=int, low=0, high=_training.SEED_MAX)
        check_scalar(self.dropout, "dropout", low=0.0, high=1.0, high_open=True)
        for name in ("learning_rate", "encoder_learning_rate"):
            _training.check_hyperparameter(getattr(self, name), name, low=0.0, low_open=True)
        _training.check_hyperparameter(self.weight_decay, "weight_decay", low=0.0)
        check_runtime(self.runtime, self.device)

    def _ensure_encoder(self) -> None:
        spec = EncoderSpec.resolve(self.encoder, max_length=self.max_length, layers=self.layers)
        self.encoder_spec_ = spec
        if getattr(self, "text_encoder_", None) is None or self.text_encoder_.spec != spec:
            self.text_encoder_ = TextEncoder(spec, device=self.device, runtime=self.runtime)
        elif getattr(self.text_encoder_, "runtime", "torch") != self.runtime:
            self.text_encoder_.runtime = check_runtime(self.runtime, self.device)

    # -- training ----------------------------------------------------------------------------
    def fit(self, qtable: QTable, library: ExpertLibrary | None = None, *,
            embeddings: np.ndarray | None = None) -> PerceptivePredictor:
        """Train on ``qtable``; ``library`` (metadata of its experts) is saved with the predictor.

        ``embeddings`` (head mode only) are precomputed encoder embeddings of ``qtable.prompts``
        from :meth:`encode`, to reuse one encoding across cross-validation folds.
        """
        import torch

        self._validate_params()
        if not isinstance(qtable, QTable):
            raise ConfigurationError(f"fit expects a tryage.QTable, got {type(qtable).__name__}")
        if len(qtable) < 2:
            raise ConfigurationError(f"need at least 2 Q-table rows to train, got {len(qtable)}")
        if library is not None:
            library = library.reorder(qtable.experts) if set(library.names) == set(qtable.experts) \
                else library.subset(qtable.experts)
        _training.seed_everything(self.seed)
        self._ensure_encoder()
        self.experts_ = qtable.experts
        self.library_ = library or ExpertLibrary.from_names(qtable.experts)
        # Partial Q-tables: NaN marks an unobserved entry; statistics skip it and the loss masks it.
        targets = qtable.losses.astype(np.float32)
        unseen = [e for e, seen in zip(qtable.experts, qtable.observed.any(axis=0)) if not seen]
        if unseen:
            raise ConfigurationError(f"expert(s) {unseen} have no observed value in this Q-table; "
                                     "drop them (QTable.select_experts) or add them later with add_output")
        low, high = float(np.nanmin(targets)), float(np.nanmax(targets))
        in_unit_range = bool(low >= 0.0 and high <= 1.0)
        if self.objective == "bce" and not in_unit_range:
            raise ConfigurationError("objective='bce' needs every loss in [0, 1]; this table has losses in "
                                     f"[{low:.4g}, {high:.4g}]; use 'mse'")
        self.objective_ = ("bce" if in_unit_range else "mse") if self.objective == "auto" else self.objective
        if self.objective_ == "bce":
            self.target_mean_ = np.zeros(targets.shape[1], dtype=np.float32)
            self.target_std_ = np.ones(targets.shape[1], dtype=np.float32)
        else:
            self.target_mean_ = np.nanmean(targets, axis=0).astype(np.float32)
            self.target_std_ = np.maximum(np.nan_to_num(np.nanstd(targets, axis=0)), 1e-6).astype(np.float32)
        y = torch.from_numpy((targets - self.target_mean_) / self.target_std_)

        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(qtable))
        self.settings_ = settings = _training.table_settings(self, len(qtable))
        n_val = int(round(len(qtable) * settings["validation_fraction"]))
        val_idx, train_idx = order[:n_val], order[n_val:]

        self.head_ = _training.make_head(self.text_encoder_.dim, settings["hidden_dim"], len(self.experts_),
                                         settings["dropout"])
        self.head_.to(self.text_encoder_.device)
        common = {"loss_fn": _training.loss_function(self.objective_), "learning_rate": self.learning_rate,
                  "weight_decay": settings["weight_decay"], "seed": self.seed, "progress": self.progress}
        if self.mode == "head":
            x = self._embedding_tensor(qtable.prompts, embeddings)
            smoothing = self.target_smoothing if self.target_smoothing is not None else (
                min(20, len(train_idx) // 50) if self.objective_ == "bce" else 0)
            if smoothing > 1:
                train_x, train_y = x.numpy()[train_idx], y.numpy()[train_idx]
                y = y.clone()
                smoothed = neighbour_mean(train_x, train_y, smoothing, queries=train_x)
                smoothed[np.isnan(train_y)] = np.nan  # never invent a target the masked loss would train on
                y[train_idx] = torch.from_numpy(smoothed.astype(np.float32))
            self.smoothing_ = smoothing
            self.history_ = _training.train_head(
                self.head_, x, y, train_idx, val_idx, epochs=settings["epochs"] or 300, patience=self.patience or 20,
                batch_size=self.batch_size or 64, **common)
        else:
            if embeddings is not None:
                raise ConfigurationError("embeddings= is only for mode='head'; fine-tuning re-encodes every step")
            self.history_ = _training.train_finetune(
                self.text_encoder_, self.head_, list(qtable.prompts), y, train_idx, val_idx,
                predict_raw=self._predict_raw, epochs=self.epochs or 4, patience=self.patience or 2,
                batch_size=self.batch_size or 16, encoder_learning_rate=self.encoder_learning_rate, **common)
        self.head_.eval()
        self.text_encoder_.model.eval()
        _training.check_finite(self.head_, f"lower learning_rate (learning_rate={self.learning_rate:g})")
        self.calibration_ = held_out_calibration(self, qtable, val_idx, x if self.mode == "head" else None)
        return self

    # -- learning after fit (head mode) --------------------------------------------------------
    def partial_fit(self, feedback: Iterable[Feedback | Mapping[str, Any]] | QTable, *, regularization: str = "l2",
                    replay_weight: float = 1.0, l2: float = 1e-2, reference_prompts: Sequence[str] | None = None,
                    epochs: int = 3, learning_rate: float | None = None, batch_size: int = 64,
                    seed: int | None = None, embeddings: np.ndarray | None = None,
                    reference_embeddings: np.ndarray | None = None) -> PerceptivePredictor:
        """Warm-start the trained head on feedback, in place; what it did is in :attr:`last_update_`.

        Args:
            feedback: :class:`~tryage.feedback.Feedback` rows, dicts of the same fields, or a partial QTable.
            regularization: Against forgetting: ``"l2"``, ``"replay"`` or ``"none"`` (:mod:`tryage.feedback`).
            replay_weight: Weight of the replayed (soft-target) entries against the observed ones.
            l2: Strength of the pull toward the old weights (``"l2"``).
            reference_prompts: More prompts whose current predictions are replayed (``"replay"``).
            epochs: Passes over the feedback (no early stopping: no validation set to trust).
            learning_rate: Defaults to the predictor's.
            batch_size: Feedback rows per step.
            seed: Shuffling seed; the predictor's by default.
            embeddings: Precomputed :meth:`encode` output of the feedback prompts, in
                :func:`~tryage.feedback.feedback_table` order.
            reference_embeddings: Precomputed :meth:`encode` output of the reference prompts.
        """
        import torch

        self._check_head_mode("partial_fit")
        if regularization not in REGULARIZATIONS:
            raise ConfigurationError(f"regularization must be one of {REGULARIZATIONS}, got {regularization!r}")
        epochs = check_scalar(epochs, "epochs", kind=int, low=1)
        batch_size = check_scalar(batch_size, "batch_size", kind=int, low=1)
        replay_weight = _training.check_hyperparameter(replay_weight, "replay_weight", low=0.0)
        l2 = _training.check_hyperparameter(l2, "l2", low=0.0)
        learning_rate = self.learning_rate if learning_rate is None else _training.check_hyperparameter(
            learning_rate, "learning_rate", low=0.0, low_open=True)
        seed = self.seed if seed is None else check_scalar(seed, "seed", kind=int, low=0, high=_training.SEED_MAX)
        table = feedback_table(feedback, self.experts_)
        losses = table.losses.astype(np.float32)
        if self.objective_ == "bce" and (np.nanmin(losses) < 0 or np.nanmax(losses) > 1):
            raise ConfigurationError("this router reads losses as failure probabilities (objective 'bce'); feedback "
                                     f"losses must lie in [0, 1], got [{np.nanmin(losses):.4g}, {np.nanmax(losses):.4g}]")
        x = self._embedding_tensor(table.prompts, embeddings)
        y = torch.from_numpy((losses - self.target_mean_) / self.target_std_)  # NaN where unobserved
        replay_x, replay_y = x[:0], y[:0]
        if regularization == "replay":  # what the feedback does not observe keeps the head's current output
            replay_x, replay_y = x, torch.where(torch.isnan(y), self._soft_targets(x), torch.nan)
            if reference_prompts is not None or reference_embeddings is not None:
                reference = self._embedding_tensor(reference_prompts or [], reference_embeddings)
                replay_x, replay_y = torch.cat([x, reference]), torch.cat([replay_y, self._soft_targets(reference)])
        before, after = _training.update_head(
            self.head_, x, y, replay_x, replay_y, loss_fn=_training.loss_function(self.objective_), epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, seed=seed, replay_weight=replay_weight,
            l2=l2 if regularization == "l2" else None)
        observed = np.count_nonzero(~np.isnan(losses), axis=0)
        self.last_update_ = UpdateReport(len(table), {e: int(c) for e, c in zip(self.experts_, observed) if c},
                                         len(replay_x) - len(x) if regularization == "replay" else 0,
                                         regularization, epochs, before, after)
        return self

    def add_output(self, name: str, rows: Iterable[Feedback | Mapping[str, Any]] | QTable,
                   metadata: Expert | Mapping[str, Any] | None = None, *, embeddings: np.ndarray | None = None,
                   folds: int = 5) -> PerceptivePredictor:
        """Add expert ``name`` as one more output column fitted from calibration ``rows``, in place.

        ``rows``: the new expert's outcomes as dicts ``{"prompt", "score" | "loss"}`` (an ``"expert"`` key,
        if present, must be ``name``), :class:`~tryage.feedback.Feedback` rows, or a Q-table with a
        ``name`` column; at least five, a few dozen is the intended use. ``metadata``: an
        :class:`~tryage.experts.Expert` or a dict of its fields, added to :attr:`library_`.
        ``embeddings``: precomputed encodings of the calibration prompts in row order; ``folds``:
        cross-validation folds for the regularisation strengths (see :mod:`tryage.predictors._outputs`).
        How the column was fitted is in ``expert_fits_[name]``.
        """
        self._check_head_mode("add_output")
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"expert name must be a non-empty string, got {name!r}")
        if name in self.experts_:
            raise ExpertLibraryError(f"expert {name!r} is already routed to; remove it (remove_output({name!r}), "
                                     "TryageRouter.remove_expert) first to refit it")
        folds = check_scalar(folds, "folds", kind=int, low=2)
        expert = _outputs.new_expert(name, metadata)
        prompts, losses = _outputs.calibration(name, rows)
        if len(prompts) < _outputs.MIN_CALIBRATION_ROWS:
            raise ConfigurationError(f"add_output needs at least {_outputs.MIN_CALIBRATION_ROWS} calibration rows "
                                     f"for {name!r}, got {len(prompts)}")
        bce = self.objective_ == "bce"
        if bce and (losses.min() < 0 or losses.max() > 1):
            raise ConfigurationError(f"this router reads losses as failure probabilities; {name!r}'s calibration "
                                     f"losses must lie in [0, 1], got [{losses.min():.4g}, {losses.max():.4g}]")
        hidden = self._hidden(self._embedding_tensor(prompts, embeddings))
        self.head_[-1], mean, std, fit = _outputs.fit_output(self.head_[-1], hidden, losses, names=self.experts_,
                                                             bce=bce, seed=self.seed, folds=folds)
        self.experts_ = (*self.experts_, name)
        self.target_mean_ = np.append(self.target_mean_, np.float32(mean)).astype(np.float32)
        self.target_std_ = np.append(self.target_std_, np.float32(std)).astype(np.float32)
        self.library_ = ExpertLibrary([*self.library_, expert])
        self.expert_fits_ = {**getattr(self, "expert_fits_", {}), name: fit}
        return self

    def remove_output(self, name: str) -> PerceptivePredictor:
        """Drop expert ``name``'s output column, in place: immediate, the others unchanged; one must remain."""
        self._check_fitted()
        if name not in self.experts_:
            raise ExpertNotFoundError(name, self.experts_)
        if len(self.experts_) == 1:
            raise ConfigurationError(f"cannot remove {name!r}: it is the router's only expert")
        keep = [i for i, e in enumerate(self.experts_) if e != name]
        self.head_[-1] = _outputs.keep_outputs(self.head_[-1], keep)
        self.experts_ = tuple(self.experts_[i] for i in keep)
        self.target_mean_, self.target_std_ = self.target_mean_[keep], self.target_std_[keep]
        self.library_ = self.library_.subset(self.experts_)
        if hasattr(self, "expert_fits_"):
            self.expert_fits_ = {k: v for k, v in self.expert_fits_.items() if k != name}
        self.calibration_ = getattr(self, "calibration_", None) and self.calibration_.without(name)
        return self

    # -- inference ---------------------------------------------------------------------------
    def _to_units(self, raw: np.ndarray) -> np.ndarray:
        """Head outputs → losses in Q-table units."""
        if self.objective_ == "bce":
            return 1.0 / (1.0 + np.exp(-raw))
        return raw * self.target_std_ + self.target_mean_

    def _embedding_tensor(self, prompts: Sequence[str], given: np.ndarray | None) -> torch.Tensor:
        """``prompts`` encoded (or ``given``, their precomputed :meth:`encode` output, checked) as a float32 tensor;
        with no prompts, ``given`` is checked for its width only."""
        import torch

        if given is None:
            return torch.from_numpy(np.asarray(self.encode(list(prompts)), dtype=np.float32))
        array = np.asarray(given, dtype=np.float32)
        dim = self.text_encoder_.dim
        if array.ndim != 2 or array.shape[1] != dim or (len(prompts) and len(array) != len(prompts)):
            raise ConfigurationError(f"embeddings must have shape ({len(prompts) or 'n'}, {dim}), got {array.shape}")
        return torch.from_numpy(array)

    def encode(self, prompts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """The encoder's pooled embeddings of ``prompts``, shape ``(n, d)``."""
        if not hasattr(self, "text_encoder_"):
            self._validate_params()
            self._ensure_encoder()
        return self.text_encoder_.encode(_check_prompts(prompts), batch_size=batch_size,
                                         progress=self.progress and len(prompts) > 256)

    def _head_outputs(self, embeddings: np.ndarray) -> np.ndarray:
        import torch

        self._check_fitted()
        self.head_.eval()
        x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32)).to(self.text_encoder_.device)
        with torch.inference_mode():
            return self.head_(x).float().cpu().numpy()

    def _predict_raw(self, prompts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        self._check_fitted()
        return self._head_outputs(self.encode(prompts, batch_size=batch_size))

    def predict_losses(self, prompts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Predicted loss of every expert on every prompt, shape ``(n, k)``, in Q-table units."""
        return self._to_units(self._predict_raw(prompts, batch_size))

    def predict_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Like :meth:`predict_losses` for precomputed :meth:`encode` output (head mode)."""
        return self._to_units(self._head_outputs(embeddings))

    def _soft_targets(self, x: torch.Tensor) -> torch.Tensor:
        """The head's current outputs on embeddings ``x`` as training targets: probabilities for 'bce'."""
        import torch

        raw = torch.from_numpy(self._head_outputs(x.numpy()))
        return torch.sigmoid(raw) if self.objective_ == "bce" else raw

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The head's hidden representation of embeddings ``x`` (every layer but the last, no dropout)."""
        import torch

        self._check_fitted()
        with torch.no_grad():
            for layer in list(self.head_)[:-1]:
                if not isinstance(layer, torch.nn.Dropout):
                    x = layer(x)
        return x.clone()

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """The predictor's own representation of each prompt: the head's hidden layer, shape ``(n, h)``.

        This is the latent space the router routes in (for a linear head, the encoder embedding).
        """
        import torch

        self._check_fitted()
        return self._hidden(torch.from_numpy(self.encode(prompts))).numpy()

    # -- persistence -------------------------------------------------------------------------
    def config(self) -> PerceptiveConfig:
        """The trained predictor's :class:`~tryage.predictors.PerceptiveConfig` (what ``config.json`` holds)."""
        self._check_fitted()
        spec = self.encoder_spec_
        if self.mode == "finetune":
            spec = EncoderSpec("saved", "encoder", spec.max_length, spec.normalize, spec.layers)
        history = getattr(self, "history_", [])
        return PerceptiveConfig(
            experts=tuple(self.experts_), mode=self.mode, objective=self.objective_, encoder=spec,
            input_dim=int(self.head_[0].in_features), hidden_dim=int(getattr(self, "settings_", vars(self))["hidden_dim"]),
            dropout=float(getattr(self, "settings_", vars(self))["dropout"]),
            target_mean=tuple(float(v) for v in self.target_mean_),
            target_std=tuple(float(v) for v in self.target_std_),
            training={"seed": self.seed, "target_smoothing": getattr(self, "smoothing_", 0), "small_table": self.small_table,
                      "epochs_run": len(history),
                      "best_val_loss": min((h["val_loss"] for h in history if "val_loss" in h), default=None)},
            calibration=None if getattr(self, "calibration_", None) is None else self.calibration_.to_dict())

    def save_pretrained(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the predictor to ``folder``: created, or replaced whole if it holds a saved router; never
        half-written, even if the process is killed. A folder with other files, or a file, is refused
        (:class:`~tryage.errors.TargetExistsError`) unless ``overwrite=True``."""
        config = self.config()
        state = {k: v.detach().cpu().contiguous() for k, v in self.head_.state_dict().items()}
        return save_folder(folder, config, state, self.library_,
                           encoder=self.text_encoder_ if self.mode == "finetune" else None, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], *, device: str | None = None,
                        runtime: str = "torch", progress: bool = False) -> PerceptivePredictor:
        """Load a predictor saved with :meth:`save_pretrained`; ``runtime`` as in the constructor."""
        source = Path(folder)
        config, state, library = read_folder(source)
        spec = config.encoder
        predictor = cls(None if spec.source == "bundled" else spec.location, mode=config.mode,
                        hidden_dim=config.hidden_dim, dropout=config.dropout, max_length=spec.max_length,
                        layers=spec.layers, seed=int(config.training.get("seed", 0)), device=device,
                        runtime=runtime, progress=progress)
        predictor.encoder_spec_ = spec
        predictor.text_encoder_ = TextEncoder(spec, saved_folder=source / "encoder", device=device, runtime=runtime)
        if predictor.text_encoder_.dim != config.input_dim:
            raise RouterFormatError(f"{source}: the head expects {config.input_dim}-dim embeddings but the "
                                    f"encoder gives {predictor.text_encoder_.dim}")
        head = _training.make_head(config.input_dim, config.hidden_dim, len(config.experts), config.dropout)
        try:
            head.load_state_dict(state)
        except RuntimeError as exc:
            raise RouterFormatError(f"{source / 'model.safetensors'} does not match config.json: "
                                    f"{str(exc).splitlines()[0]}") from None
        head.to(predictor.text_encoder_.device).eval()
        predictor.head_ = head
        predictor.experts_ = config.experts
        predictor.library_ = library
        predictor.target_mean_, predictor.target_std_ = config.targets()
        predictor.objective_ = config.objective
        predictor.calibration_ = config.calibration and ScoreCalibration.from_dict(config.calibration, source=str(source))
        return predictor


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise ConfigurationError("expected a list of prompts, got a single string; wrap it in a list")
    out = list(prompts)
    for i, p in enumerate(out):
        if not isinstance(p, str):
            raise ConfigurationError(f"prompt {i} is {type(p).__name__}, expected str")
    return out


__all__ = ["FORMAT_VERSION", "PerceptivePredictor"]
