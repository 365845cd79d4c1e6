"""Training loops of the perceptive predictor: head-only on fixed embeddings, encoder + head, and the
warm-started head update behind :meth:`~tryage.predictors.PerceptivePredictor.partial_fit`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tryage.errors import TrainingDivergedError, check_scalar

if TYPE_CHECKING:  # pragma: no cover
    import torch

LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]

#: An update diverged when its loss on the feedback ends this many times higher than it began (and higher by
#: at least :data:`DIVERGENCE_FLOOR`): a sound update lowers that loss, a learning rate far too large sends it
#: up by orders of magnitude (3.8 to 2e14 at ``learning_rate=1e6``).
DIVERGENCE_FACTOR = 100.0
DIVERGENCE_FLOOR = 1.0
#: The seeds every generator here accepts (``np.random.seed`` takes at most 2**32 - 1).
SEED_MAX = 2**32 - 1
#: The largest learning rate or regularisation weight taken: beyond it torch cannot hold it as a float32.
HYPERPARAMETER_MAX = 1e30


def check_hyperparameter(value: object, name: str, **bounds: Any) -> float:
    """``value`` through :func:`~tryage.errors.check_scalar`, and at most :data:`HYPERPARAMETER_MAX`."""
    value = check_scalar(value, name, **bounds)
    return value if value <= HYPERPARAMETER_MAX else check_scalar(value, name, high=HYPERPARAMETER_MAX, **bounds)


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def non_finite(module: torch.nn.Module) -> list[str]:
    """The names of ``module``'s weights that hold NaN or an infinity."""
    import torch

    return [name for name, value in module.state_dict().items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())]


def check_finite(module: torch.nn.Module, hint: str) -> None:
    """A :class:`~tryage.errors.TrainingDivergedError` naming the weights of ``module`` that are not finite."""
    if bad := non_finite(module):
        raise TrainingDivergedError(f"training diverged: weights {', '.join(bad[:4])} hold NaN or infinite values; "
                                    + hint)


#: Below this many Q-table rows a head-mode router trains with :data:`SMALL_TABLE` in place of the
#: settings left at their defaults: measured by benchmarks/small_tables.py (40-200 rows of LLMRouter).
#: A linear head (``hidden_dim`` 0): on 15 LLMRouter subsamples each of 48 / 100 / 200 rows it scores as
#: a 64-unit hidden layer does (0.557 / 0.639 / 0.612 against 0.555 / 0.639 / 0.612, same folds), and
#: higher on both first-hour walks (0.438 vs 0.396 on 48 rows, 0.594 vs 0.573 on 96; small_table_heads.py).
SMALL_TABLE_ROWS = 300
SMALL_TABLE = {"hidden_dim": 0, "dropout": 0.3, "weight_decay": 0.1, "validation_fraction": 0.0, "epochs": 60}


def table_settings(predictor: Any, rows: int) -> dict[str, Any]:
    """The head's width, dropout, weight decay, validation share and epochs for a fit on ``rows`` rows.

    The predictor's own; on a small table (head mode, ``small_table=True``) each one left at its
    default becomes the :data:`SMALL_TABLE` value: a linear, more regularised head trained for fixed
    epochs on every row, as a validation split of a few rows stops training at random.
    """
    import inspect

    own = {name: getattr(predictor, name) for name in SMALL_TABLE}
    if not (predictor.small_table and predictor.mode == "head" and rows < SMALL_TABLE_ROWS):
        return own
    defaults = inspect.signature(type(predictor)).parameters
    return {name: SMALL_TABLE[name] if value == defaults[name].default else value for name, value in own.items()}


def make_head(input_dim: int, hidden_dim: int, output_dim: int, dropout: float) -> torch.nn.Module:
    from torch import nn

    if hidden_dim <= 0:
        return nn.Sequential(nn.Linear(input_dim, output_dim))
    return nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden_dim, output_dim))


def loss_function(objective: str) -> LossFn:
    """The training loss of an objective (``"bce"`` on logits or ``"mse"``), masked: the mean over the
    observed entries of the target only (NaN marks an expert not observed on a prompt: partial tables)."""
    import torch

    each_fn = (torch.nn.functional.binary_cross_entropy_with_logits if objective == "bce"
               else torch.nn.functional.mse_loss)

    def masked(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        observed = ~torch.isnan(target)
        if bool(observed.all()):
            return each_fn(output, target)
        if not bool(observed.any()):
            return output.sum() * 0.0  # a batch with nothing observed teaches nothing
        each = each_fn(output, torch.where(observed, target, torch.zeros_like(target)), reduction="none")
        return each[observed].mean()

    return masked


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


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimisation step on a batch; returns the batch loss."""
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def train_head(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, train_idx: np.ndarray,
               val_idx: np.ndarray, *, loss_fn: LossFn, epochs: int, patience: int, batch_size: int,
               learning_rate: float, weight_decay: float, seed: int,
               progress: bool) -> list[dict[str, float]]:
    """Train ``head`` on fixed embeddings ``x``; keeps the best validation weights; returns the history."""
    import torch
    from tqdm.auto import trange

    opt = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    tr = torch.as_tensor(train_idx)
    history: list[dict[str, float]] = []
    stopper = _EarlyStopping([head], patience)
    bar = trange(epochs, desc="training router head", unit="epoch", disable=not progress)
    for epoch in bar:
        head.train()
        perm = tr[torch.randperm(len(tr), generator=generator)]
        total = 0.0
        for start in range(0, len(perm), batch_size):
            idx = perm[start:start + batch_size]
            total += _step(opt, loss_fn(head(x[idx]), y[idx])) * len(idx)
        record = {"epoch": epoch + 1, "train_loss": total / max(len(perm), 1)}
        history.append(record)
        if len(val_idx):
            head.eval()
            with torch.inference_mode():
                vi = torch.as_tensor(val_idx)
                record["val_loss"] = float(loss_fn(head(x[vi]), y[vi]))
            bar.set_postfix(val=f"{record['val_loss']:.4f}")
            if stopper.update(record["val_loss"]):
                break
    stopper.restore()
    return history


def train_finetune(encoder: Any, head: torch.nn.Module, prompts: list[str], y: torch.Tensor,
                   train_idx: np.ndarray, val_idx: np.ndarray, *, predict_raw: Callable[[list[str]], np.ndarray],
                   loss_fn: LossFn, epochs: int, patience: int, batch_size: int, learning_rate: float,
                   encoder_learning_rate: float, weight_decay: float, seed: int,
                   progress: bool) -> list[dict[str, float]]:
    """Train ``encoder`` (a :class:`tryage.encoders.TextEncoder`) and ``head`` together."""
    import torch
    from tqdm.auto import tqdm

    model = encoder.model
    opt = torch.optim.AdamW([
        {"params": model.parameters(), "lr": encoder_learning_rate},
        {"params": head.parameters(), "lr": learning_rate},
    ], weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    stopper = _EarlyStopping([model, head], patience)
    for epoch in range(epochs):
        model.train()
        head.train()
        perm = rng.permutation(train_idx)
        total = 0.0
        batches = range(0, len(perm), batch_size)
        for start in tqdm(batches, desc=f"fine-tuning epoch {epoch + 1}/{epochs}", unit="batch",
                          disable=not progress):
            idx = perm[start:start + batch_size]
            pred = head(encoder.forward([prompts[i] for i in idx]))
            total += _step(opt, loss_fn(pred, y[idx])) * len(idx)
        record = {"epoch": epoch + 1, "train_loss": total / max(len(perm), 1)}
        history.append(record)
        if len(val_idx):
            pred = predict_raw([prompts[i] for i in val_idx])
            record["val_loss"] = float(loss_fn(torch.from_numpy(pred), y[val_idx]))
            if stopper.update(record["val_loss"]):
                break
    stopper.restore()
    return history


def update_head(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, replay_x: torch.Tensor,
                replay_y: torch.Tensor, *, loss_fn: LossFn, epochs: int, batch_size: int, learning_rate: float,
                seed: int, replay_weight: float = 1.0, l2: float | None = None) -> tuple[float, float]:
    """Warm-start ``head`` on fixed embeddings ``x`` toward ``y`` (NaN: unobserved), in place.

    Each step adds a batch of ``replay_x`` toward ``replay_y`` (NaN: not replayed), weighted by
    ``replay_weight``, spread so one epoch covers both; ``l2`` (if given) pulls the weights toward their
    values before the update. No early stopping (feedback has no validation set to trust). Returns the
    loss on ``(x, y)`` before and after.

    Raises:
        TrainingDivergedError: a batch loss or a weight became non-finite, or the loss on ``(x, y)`` ended
            :data:`DIVERGENCE_FACTOR` times higher; ``head`` is given back its weights from before the call.
    """
    import torch

    head.eval()
    with torch.no_grad():
        loss_before = float(loss_fn(head(x), y))
    saved = {k: v.detach().clone() for k, v in head.state_dict().items()}
    settings = f"learning_rate={learning_rate:g}" + ("" if l2 is None else f", l2={l2:g}")
    try:
        _update_epochs(head, x, y, replay_x, replay_y, loss_fn=loss_fn, epochs=epochs, batch_size=batch_size,
                       learning_rate=learning_rate, seed=seed, replay_weight=replay_weight, l2=l2)
        head.eval()
        with torch.no_grad():
            loss_after = float(loss_fn(head(x), y))
        hint = f"the router keeps its weights from before the update; lower learning_rate ({settings})"
        check_finite(head, hint)
        if not math.isfinite(loss_after) or (loss_after > DIVERGENCE_FACTOR * loss_before
                                             and loss_after > loss_before + DIVERGENCE_FLOOR):
            raise TrainingDivergedError(f"the update diverged: its loss on the feedback went from {loss_before:.4g} "
                                        f"to {loss_after:.4g}; {hint}")
    except TrainingDivergedError:
        head.load_state_dict(saved)
        head.eval()
        raise
    return loss_before, loss_after


def _update_epochs(head: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, replay_x: torch.Tensor,
                   replay_y: torch.Tensor, *, loss_fn: LossFn, epochs: int, batch_size: int, learning_rate: float,
                   seed: int, replay_weight: float, l2: float | None) -> None:
    """The steps of :func:`update_head`; a non-finite batch loss stops them with a
    :class:`~tryage.errors.TrainingDivergedError`."""
    import torch

    anchor = [p.detach().clone() for p in head.parameters()] if l2 is not None else []
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=0.0)
    n, n_replay = len(x), len(replay_x)
    steps = max(1, math.ceil(n / batch_size))
    replay_batch = max(1, math.ceil(n_replay / steps)) if n_replay else 0
    for epoch in range(epochs):
        head.train()
        perm = torch.randperm(n, generator=generator)
        replay_perm = torch.randperm(n_replay, generator=generator) if n_replay else None
        for step in range(steps):
            idx = perm[step * batch_size:(step + 1) * batch_size]
            if len(idx) == 0:
                continue
            loss = loss_fn(head(x[idx]), y[idx])
            if replay_perm is not None and replay_weight > 0:
                r = replay_perm[step * replay_batch:(step + 1) * replay_batch]
                if len(r):
                    loss = loss + replay_weight * loss_fn(head(replay_x[r]), replay_y[r])
            if l2 is not None:
                loss = loss + l2 * sum(((p - p0) ** 2).sum() for p, p0 in zip(head.parameters(), anchor))
            value = _step(opt, loss)
            if not math.isfinite(value):
                raise TrainingDivergedError(
                    f"the update diverged: the loss became {value} in epoch {epoch + 1}; the router keeps its "
                    f"weights from before the update; lower learning_rate (learning_rate={learning_rate:g}"
                    + ("" if l2 is None else f", l2={l2:g}") + ")")
