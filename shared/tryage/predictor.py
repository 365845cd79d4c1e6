"""The perceptive router: the paper's Q-function.

A small transformer encoder reads the prompt; a regression head with one output per expert predicts
the loss each expert would incur on it. Trained on a :class:`tryage.qtable.QTable`.

Two training modes:

* ``"head"`` (default, fast): the encoder is frozen; prompts are encoded once and a small MLP head is
  trained on the embeddings. Saved routers hold only the head (kilobytes) when the encoder is the
  bundled MiniLM or a Hub id.
* ``"finetune"``: encoder and head are trained together; the encoder's weights are saved too.

Targets are standardised per expert for training and mapped back, so predictions are in the units
of the Q-table. Validation split, early stopping on validation loss, seeded, progress bars.

Partial Q-tables (NaN where an expert was not observed, see :attr:`tryage.qtable.QTable.observed`)
train with a masked loss: only observed entries count, per-expert target statistics and neighbour
smoothing use observed entries only.

A saved router is a folder: ``config.json`` (with ``format_version``), ``model.safetensors`` (the
head), ``experts.json`` (the expert library), and for fine-tuned encoders an ``encoder/`` folder.
No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tryage.encoders import EncoderSpec, TextEncoder
from tryage.errors import ConfigurationError, NotFittedError, RouterFormatError, TryageFileNotFoundError
from tryage.experts import ExpertLibrary
from tryage.qtable import QTable

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORMAT_VERSION = 1
_MODES = ("head", "finetune")


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _make_head(input_dim: int, hidden_dim: int, output_dim: int, dropout: float) -> torch.nn.Module:
    from torch import nn

    if hidden_dim <= 0:
        return nn.Sequential(nn.Linear(input_dim, output_dim))
    return nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden_dim, output_dim))


class _EarlyStopping:
    """Keeps the best weights seen on validation and says when ``patience`` epochs brought nothing."""

    def __init__(self, modules: Sequence[torch.nn.Module], patience: int) -> None:
        self.modules = modules
        self.patience = patience
        self.best_loss = float("inf")
        self.best_state: list[dict[str, Any]] | None = None
        self.stale = 0

    def update(self, val_loss: float) -> bool:
        """Record one epoch's validation loss; ``True`` when training should stop."""
        if val_loss < self.best_loss - 1e-6:
            self.best_loss = val_loss
            self.best_state = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in self.modules]
            self.stale = 0
        else:
            self.stale += 1
        return self.stale >= self.patience

    def restore(self) -> None:
        if self.best_state is not None:
            for module, state in zip(self.modules, self.best_state):
                module.load_state_dict(state)


class PerceptiveRouter:
    """Predicts every expert's loss on a prompt.

    Args:
        encoder: ``None`` for the bundled all-MiniLM-L6-v2, a local Hugging Face encoder folder, or a
            Hub id (e.g. ``"prajjwal1/bert-tiny"``).
        mode: ``"head"`` (frozen encoder, fast) or ``"finetune"`` (encoder trained too).
        hidden_dim: Width of the head's hidden layer (0 for a linear head).
        dropout: Dropout in the head.
        epochs: Maximum training epochs.
        batch_size: Training batch size.
        learning_rate: Head learning rate (the encoder uses ``encoder_learning_rate``).
        encoder_learning_rate: Encoder learning rate in ``"finetune"`` mode.
        weight_decay: AdamW weight decay.
        validation_fraction: Share of the Q-table held out for early stopping (0 disables it).
        patience: Epochs without validation improvement before stopping.
        max_length: Tokens kept per prompt.
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
        seed: Seed for the split, initialisation and shuffling.
        device: torch device; ``"cpu"`` by default.
        progress: Show progress bars.

    Attributes (after :meth:`fit` or :meth:`from_pretrained`):
        experts_: Expert names, the output columns.
        library_: The expert library saved with the router.
        history_: Per-epoch training and validation loss.
    """

    def __init__(self, encoder: str | os.PathLike[str] | None = None, *, mode: str = "head",
                 hidden_dim: int = 256, dropout: float = 0.1, epochs: int | None = None,
                 batch_size: int | None = None, learning_rate: float = 1e-3,
                 encoder_learning_rate: float = 3e-5, weight_decay: float = 1e-2,
                 validation_fraction: float = 0.1, patience: int | None = None, max_length: int = 256,
                 layers: str = "all", objective: str = "auto", target_smoothing: int | None = None,
                 seed: int = 0,
                 device: str | None = None, progress: bool = True) -> None:
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
        self.seed = seed
        self.device = device
        self.progress = progress

    # -- state -------------------------------------------------------------------------------
    @property
    def experts(self) -> tuple[str, ...]:
        self._check_fitted()
        return self.experts_

    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise NotFittedError("this PerceptiveRouter is not trained yet; call fit(qtable) or from_pretrained(folder)")

    def _validate_params(self) -> None:
        if self.mode not in _MODES:
            raise ConfigurationError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if not 0.0 <= self.validation_fraction < 0.5:
            raise ConfigurationError(f"validation_fraction must be in [0, 0.5), got {self.validation_fraction!r}")
        if self.target_smoothing is not None and (not isinstance(self.target_smoothing, int)
                                                  or self.target_smoothing < 0):
            raise ConfigurationError(f"target_smoothing must be None or an integer >= 0, got {self.target_smoothing!r}")
        for name in ("epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        if self.objective not in ("auto", "mse", "bce"):
            raise ConfigurationError(f"objective must be 'auto', 'mse' or 'bce', got {self.objective!r}")
        if not isinstance(self.max_length, int) or self.max_length < 8:
            raise ConfigurationError(f"max_length must be an integer >= 8, got {self.max_length!r}")

    # -- training ----------------------------------------------------------------------------
    def fit(self, qtable: QTable, library: ExpertLibrary | None = None, *,
            embeddings: np.ndarray | None = None) -> PerceptiveRouter:
        """Train on ``qtable``; ``library`` (metadata of its experts) is saved with the router.

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
        _seed_everything(self.seed)
        self.encoder_spec_ = EncoderSpec.resolve(self.encoder, max_length=self.max_length, layers=self.layers)
        if not hasattr(self, "text_encoder_") or self.text_encoder_.spec != self.encoder_spec_:
            self.text_encoder_ = TextEncoder(self.encoder_spec_, device=self.device)
        self.experts_ = qtable.experts
        self.library_ = library or ExpertLibrary.from_names(qtable.experts)
        # -- masked loss (partial Q-tables): NaN marks an unobserved entry; statistics skip them --------
        targets = qtable.losses.astype(np.float32)
        unseen = [e for e, seen in zip(qtable.experts, qtable.observed.any(axis=0)) if not seen]
        if unseen:
            raise ConfigurationError(f"expert(s) {unseen} have no observed value in this Q-table; "
                                     "drop them (QTable.select_experts) or add them later with add_expert")
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
        y = torch.from_numpy((targets - self.target_mean_) / self.target_std_)  # NaN stays NaN: masked in _loss

        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(qtable))
        n_val = int(round(len(qtable) * self.validation_fraction))
        val_idx, train_idx = order[:n_val], order[n_val:]

        self.head_ = _make_head(self.text_encoder_.dim, self.hidden_dim, len(self.experts_), self.dropout)
        self.head_.to(self.text_encoder_.device)
        if self.mode == "head":
            if embeddings is None:
                embeddings = self.encode(qtable.prompts)
            elif embeddings.shape != (len(qtable), self.text_encoder_.dim):
                raise ConfigurationError(f"embeddings must have shape {(len(qtable), self.text_encoder_.dim)}, "
                                         f"got {embeddings.shape}")
            x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
            smoothing = self.target_smoothing if self.target_smoothing is not None else (
                min(20, len(train_idx) // 50) if self.objective_ == "bce" else 0)
            if smoothing > 1:
                y = y.clone()
                y[train_idx] = torch.from_numpy(_neighbour_mean(x.numpy()[train_idx], y.numpy()[train_idx], smoothing))
            self.smoothing_ = smoothing
            self.history_ = self._train_head(x, y, train_idx, val_idx)
        else:
            if embeddings is not None:
                raise ConfigurationError("embeddings= is only for mode='head'; fine-tuning re-encodes every step")
            self.history_ = self._train_finetune(list(qtable.prompts), y, train_idx, val_idx)
        self.head_.eval()
        self.text_encoder_.model.eval()
        return self

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the observed entries of ``target`` (NaN = unobserved, masked out)."""
        import torch

        observed = ~torch.isnan(target)
        if not bool(observed.any()):
            return output.sum() * 0.0  # a batch with nothing observed teaches nothing
        target = torch.where(observed, target, torch.zeros_like(target))
        if self.objective_ == "bce":
            each = torch.nn.functional.binary_cross_entropy_with_logits(output, target, reduction="none")
        else:
            each = torch.nn.functional.mse_loss(output, target, reduction="none")
        return each[observed].mean()

    def _step(self, optimizer: torch.optim.Optimizer, output: torch.Tensor, target: torch.Tensor) -> float:
        """One optimisation step on a batch; returns the batch loss."""
        loss = self._loss(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def _to_units(self, raw: np.ndarray) -> np.ndarray:
        """Head outputs → losses in Q-table units."""
        if self.objective_ == "bce":
            return 1.0 / (1.0 + np.exp(-raw))
        return raw * self.target_std_ + self.target_mean_

    def _epochs_and_patience(self, default_epochs: int, default_patience: int) -> tuple[int, int]:
        return self.epochs or default_epochs, self.patience or default_patience

    def _train_head(self, x: torch.Tensor, y: torch.Tensor, train_idx: np.ndarray,
                    val_idx: np.ndarray) -> list[dict[str, float]]:
        import torch
        from tqdm.auto import trange

        epochs, patience = self._epochs_and_patience(300, 20)
        batch_size = self.batch_size or 64
        opt = torch.optim.AdamW(self.head_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        tr = torch.as_tensor(train_idx)
        history: list[dict[str, float]] = []
        stopper = _EarlyStopping([self.head_], patience)
        bar = trange(epochs, desc="training router head", unit="epoch", disable=not self.progress)
        for epoch in bar:
            self.head_.train()
            perm = tr[torch.randperm(len(tr), generator=generator)]
            total = 0.0
            for start in range(0, len(perm), batch_size):
                idx = perm[start:start + batch_size]
                total += self._step(opt, self.head_(x[idx]), y[idx]) * len(idx)
            record = {"epoch": epoch + 1, "train_loss": total / max(len(perm), 1)}
            history.append(record)
            if len(val_idx):
                self.head_.eval()
                with torch.inference_mode():
                    vi = torch.as_tensor(val_idx)
                    record["val_loss"] = float(self._loss(self.head_(x[vi]), y[vi]))
                bar.set_postfix(val=f"{record['val_loss']:.4f}")
                if stopper.update(record["val_loss"]):
                    break
        stopper.restore()
        return history

    def _train_finetune(self, prompts: list[str], y: torch.Tensor, train_idx: np.ndarray,
                        val_idx: np.ndarray) -> list[dict[str, float]]:
        import torch
        from tqdm.auto import tqdm

        epochs, patience = self._epochs_and_patience(4, 2)
        batch_size = self.batch_size or 16
        model = self.text_encoder_.model
        opt = torch.optim.AdamW([
            {"params": model.parameters(), "lr": self.encoder_learning_rate},
            {"params": self.head_.parameters(), "lr": self.learning_rate},
        ], weight_decay=self.weight_decay)
        rng = np.random.default_rng(self.seed)
        history: list[dict[str, float]] = []
        stopper = _EarlyStopping([model, self.head_], patience)
        for epoch in range(epochs):
            model.train()
            self.head_.train()
            perm = rng.permutation(train_idx)
            total = 0.0
            batches = range(0, len(perm), batch_size)
            for start in tqdm(batches, desc=f"fine-tuning epoch {epoch + 1}/{epochs}", unit="batch",
                              disable=not self.progress):
                idx = perm[start:start + batch_size]
                pred = self.head_(self.text_encoder_.forward([prompts[i] for i in idx]))
                total += self._step(opt, pred, y[idx]) * len(idx)
            record = {"epoch": epoch + 1, "train_loss": total / max(len(perm), 1)}
            history.append(record)
            if len(val_idx):
                pred = self._predict_raw([prompts[i] for i in val_idx])
                record["val_loss"] = float(self._loss(torch.from_numpy(pred), y[val_idx]))
                if stopper.update(record["val_loss"]):
                    break
        stopper.restore()
        return history

    # -- inference ---------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """The encoder's pooled embeddings of ``prompts``, shape ``(n, d)``."""
        if not hasattr(self, "text_encoder_"):
            self._validate_params()
            self.encoder_spec_ = EncoderSpec.resolve(self.encoder, max_length=self.max_length, layers=self.layers)
            self.text_encoder_ = TextEncoder(self.encoder_spec_, device=self.device)
        return self.text_encoder_.encode(_check_prompts(prompts), batch_size=batch_size,
                                         progress=self.progress and len(prompts) > 256)

    def _predict_raw(self, prompts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        import torch

        self._check_fitted()
        self.head_.eval()
        x = torch.from_numpy(self.encode(prompts, batch_size=batch_size)).to(self.text_encoder_.device)
        with torch.inference_mode():
            return self.head_(x).float().cpu().numpy()

    def predict_losses(self, prompts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """Predicted loss of every expert on every prompt, shape ``(n, k)``, in Q-table units."""
        return self._to_units(self._predict_raw(prompts, batch_size))

    def predict_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Like :meth:`predict_losses` for precomputed :meth:`encode` output (head mode)."""
        import torch

        self._check_fitted()
        self.head_.eval()
        with torch.inference_mode():
            out = self.head_(torch.from_numpy(np.asarray(embeddings, dtype=np.float32))).numpy()
        return self._to_units(out)

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """The router's own representation of each prompt: the head's hidden layer, shape ``(n, h)``.

        This is the latent space the router routes in (for a linear head, the encoder embedding).
        """
        import torch

        self._check_fitted()
        x = torch.from_numpy(self.encode(prompts))
        layers = list(self.head_)
        with torch.inference_mode():
            for layer in layers[:-1]:
                if not isinstance(layer, torch.nn.Dropout):
                    x = layer(x)
        return x.numpy()

    # -- persistence -------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write the router to ``folder`` (created; replaced whole if it exists, never half-written)."""
        from safetensors.torch import save_file

        self._check_fitted()
        target = Path(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            spec = self.encoder_spec_
            if self.mode == "finetune":
                self.text_encoder_.model.save_pretrained(staging / "encoder")
                self.text_encoder_.tokenizer.save_pretrained(staging / "encoder")
                spec = EncoderSpec("saved", "encoder", spec.max_length, spec.normalize, spec.layers)
            head = self.head_[0]
            config = {
                "format_version": FORMAT_VERSION,
                "kind": "tryage.PerceptiveRouter",
                "experts": list(self.experts_),
                "mode": self.mode,
                "objective": self.objective_,
                "encoder": spec.to_dict(),
                "head": {"input_dim": int(head.in_features), "hidden_dim": int(self.hidden_dim),
                         "output_dim": len(self.experts_), "dropout": float(self.dropout)},
                "targets": {"mean": [float(v) for v in self.target_mean_],
                            "std": [float(v) for v in self.target_std_]},
                "training": {"seed": self.seed, "target_smoothing": getattr(self, "smoothing_", 0),
                             "epochs_run": len(getattr(self, "history_", [])),
                             "best_val_loss": min((h.get("val_loss", float("inf"))
                                                   for h in getattr(self, "history_", [])), default=None)},
            }
            (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            state = {k: v.detach().cpu().contiguous() for k, v in self.head_.state_dict().items()}
            save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
            self.library_.to_json(staging / "experts.json")
            if target.exists():
                backup = target.with_name(f".{target.name}.old")
                shutil.rmtree(backup, ignore_errors=True)
                target.rename(backup)
                staging.rename(target)
                shutil.rmtree(backup, ignore_errors=True)
            else:
                staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], *, device: str | None = None,
                        progress: bool = False) -> PerceptiveRouter:
        """Load a router saved with :meth:`save_pretrained`."""
        from safetensors.torch import load_file

        source = Path(folder)
        if not source.is_dir():
            raise TryageFileNotFoundError(f"router folder not found: {source}")
        missing = [n for n in ("config.json", "model.safetensors", "experts.json") if not (source / n).exists()]
        if missing:
            raise RouterFormatError(f"{source} is not a saved Tryage router: missing {', '.join(missing)}")
        try:
            config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RouterFormatError(f"{source / 'config.json'} is not valid JSON: {exc.msg}") from None
        version = config.get("format_version")
        if version != FORMAT_VERSION:
            raise RouterFormatError(f"{source}: router format_version {version!r} is not supported; "
                                    f"this Tryage reads version {FORMAT_VERSION}")
        try:
            experts = tuple(config["experts"])
            head_cfg = config["head"]
            spec = EncoderSpec.from_dict(config["encoder"])
            mean = np.asarray(config["targets"]["mean"], dtype=np.float32)
            std = np.asarray(config["targets"]["std"], dtype=np.float32)
        except (KeyError, TypeError) as exc:
            raise RouterFormatError(f"{source / 'config.json'} lacks a required field: {exc}") from None
        library = ExpertLibrary.from_json(source / "experts.json")
        if set(library.names) != set(experts):
            raise RouterFormatError(f"{source}: experts.json names {list(library.names)} but the router predicts "
                                    f"{list(experts)}")
        router = cls(None if spec.source == "bundled" else spec.location, mode=config.get("mode", "head"),
                     hidden_dim=int(head_cfg["hidden_dim"]), dropout=float(head_cfg.get("dropout", 0.0)),
                     max_length=spec.max_length, layers=spec.layers,
                     seed=int(config.get("training", {}).get("seed", 0)),
                     device=device, progress=progress)
        router.encoder_spec_ = spec
        router.text_encoder_ = TextEncoder(spec, saved_folder=source / "encoder", device=device)
        if router.text_encoder_.dim != int(head_cfg["input_dim"]):
            raise RouterFormatError(f"{source}: the head expects {head_cfg['input_dim']}-dim embeddings but the "
                                    f"encoder gives {router.text_encoder_.dim}")
        head = _make_head(int(head_cfg["input_dim"]), int(head_cfg["hidden_dim"]), len(experts),
                          float(head_cfg.get("dropout", 0.0)))
        try:
            head.load_state_dict(load_file(str(source / "model.safetensors")))
        except RuntimeError as exc:
            raise RouterFormatError(f"{source / 'model.safetensors'} does not match config.json: "
                                    f"{str(exc).splitlines()[0]}") from None
        head.to(router.text_encoder_.device).eval()
        router.head_ = head
        router.experts_ = experts
        router.library_ = library.reorder(experts)
        router.target_mean_, router.target_std_ = mean, std
        router.objective_ = config.get("objective", "mse")
        if router.objective_ not in ("mse", "bce"):
            raise RouterFormatError(f"{source / 'config.json'}: unknown objective {router.objective_!r}")
        return router


def _neighbour_mean(embeddings: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Each row's target averaged over its ``k`` most similar rows (itself included), by cosine.

    Only observed (non-NaN) neighbour entries are averaged; an entry unobserved in its own row stays
    NaN, so smoothing never invents a target the masked loss would then train on.
    """
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    k = min(k, len(unit))
    observed = ~np.isnan(targets)
    filled = np.where(observed, targets, 0.0)
    out = np.empty_like(targets)
    for start in range(0, len(unit), 1024):  # blocks keep the similarity matrix small
        sims = unit[start:start + 1024] @ unit.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        count = observed[nearest].sum(axis=1)
        out[start:start + 1024] = filled[nearest].sum(axis=1) / np.maximum(count, 1)
    out[~observed] = np.nan
    return out


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise ConfigurationError("expected a list of prompts, got a single string; wrap it in a list")
    out = list(prompts)
    for i, p in enumerate(out):
        if not isinstance(p, str):
            raise ConfigurationError(f"prompt {i} is {type(p).__name__}, expected str")
    return out


__all__ = ["FORMAT_VERSION", "PerceptiveRouter"]
