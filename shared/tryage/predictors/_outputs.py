"""New and retired experts without a rebuild.

:func:`add_expert` gives a trained head-mode :class:`tryage.predictor.PerceptivePredictor` one more
output column, fitted from a few dozen calibration prompts on which the new expert was run. With so
few rows a free column would overfit, so it is fitted toward a prior built from the existing
experts: the new column's output is

    o_new(x) = Σ_j c_j · o_j(x) + c_0 + δ · h(x)

where ``o_j`` are the existing columns' raw outputs, ``h`` the head's hidden representation, ``c``
is pulled toward the plain average (``1/k`` each) and ``δ`` toward zero, with ridge penalties whose
strengths are chosen by cross-validation on the calibration rows. Because the last layer is linear
this is again one column of that layer (``w = Wᵀc + δ``, ``b = b·c + c_0``), so a router with an
added expert saves, loads and routes like any other; the folder format does not change.

:func:`remove_expert` drops the column: immediate, no retraining.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tryage.errors import ConfigurationError, ExpertLibraryError, ExpertNotFoundError
from tryage.experts import Expert, ExpertLibrary
from tryage.feedback import Feedback
from tryage.qtable import QTable

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from tryage.predictors import PerceptivePredictor

MIN_CALIBRATION_ROWS = 5
PRIOR_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)  # pull of c toward the average of the existing experts
RESIDUAL_ALPHAS = (1e-2, 1e-1, 1.0, 10.0)  # pull of δ toward zero


@dataclass(frozen=True)
class ExpertFit:
    """How :func:`add_expert` fitted a new column.

    Attributes:
        rows: Calibration rows used.
        prior_alpha: Chosen pull of the mixing weights toward the average of the existing experts.
        residual_alpha: Chosen pull of the residual weights toward zero.
        cv_loss: Cross-validated loss at the chosen strengths.
        mixing: Fitted weight of each existing expert in the prior.
    """

    rows: int
    prior_alpha: float
    residual_alpha: float
    cv_loss: float
    mixing: Mapping[str, float]


def _calibration(name: str, rows: Iterable[Feedback | Mapping[str, Any]] | QTable) -> tuple[list[str], np.ndarray]:
    if isinstance(rows, QTable):
        if name not in rows.experts:
            raise ExpertNotFoundError(name, rows.experts)
        column = rows.losses[:, rows.experts.index(name)]
        keep = ~np.isnan(column)
        return [p for p, k in zip(rows.prompts, keep) if k], column[keep]
    prompts: list[str] = []
    losses: list[float] = []
    for row in rows:
        if isinstance(row, Mapping) and "expert" not in row:
            row = {**row, "expert": name}
        item = row if isinstance(row, Feedback) else Feedback.from_dict(row)
        if item.expert != name:
            raise ConfigurationError(f"calibration row for expert {item.expert!r} given to add_expert({name!r})")
        prompts.append(item.prompt)
        losses.append(item.loss)
    return prompts, np.asarray(losses, dtype=np.float64)


def _hidden(predictor: PerceptivePredictor, x: torch.Tensor) -> torch.Tensor:
    import torch

    layers = list(predictor.head_)
    with torch.no_grad():
        for layer in layers[:-1]:
            if not isinstance(layer, torch.nn.Dropout):
                x = layer(x)
    return x.clone()


def add_expert(predictor: PerceptivePredictor, name: str, rows: Iterable[Feedback | Mapping[str, Any]] | QTable,
               metadata: Expert | Mapping[str, Any] | None = None, *, embeddings: np.ndarray | None = None,
               folds: int = 5) -> Expert:
    """Add expert ``name`` to ``predictor`` (in place), fitted on calibration ``rows``.

    Args:
        predictor: A trained head-mode perceptive router.
        name: The new expert's name (not already predicted).
        rows: Calibration outcomes of the new expert: dicts ``{"prompt", "score" | "loss"}``
            (an ``"expert"`` key, if present, must be ``name``), :class:`Feedback` rows, or a
            Q-table with a ``name`` column. At least five; a few dozen is the intended use.
        metadata: The expert's metadata (:class:`Expert` or a dict for :meth:`Expert.from_dict`).
        embeddings: Precomputed encodings of the calibration prompts, in row order.
        folds: Cross-validation folds for the regularisation strengths.

    Returns:
        The :class:`Expert` added to ``predictor.library_``. ``predictor.expert_fits_[name]`` holds the
        :class:`ExpertFit`.
    """
    import torch

    predictor._check_fitted()
    if predictor.mode != "head":
        raise ConfigurationError("add_expert supports head-mode routers; this one was trained with "
                                 f"mode={predictor.mode!r}")
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"expert name must be a non-empty string, got {name!r}")
    if name in predictor.experts_:
        raise ExpertLibraryError(f"expert {name!r} is already routed to; remove_expert({name!r}) first to refit it")
    if isinstance(metadata, Expert):
        expert = metadata if metadata.name == name else Expert.from_dict({**metadata.to_dict(), "name": name})
    else:
        expert = Expert.from_dict({k: v for k, v in (metadata or {}).items() if k != "name"}, name=name)
    prompts, losses = _calibration(name, rows)
    if len(prompts) < MIN_CALIBRATION_ROWS:
        raise ConfigurationError(f"add_expert needs at least {MIN_CALIBRATION_ROWS} calibration rows for {name!r}, "
                                 f"got {len(prompts)}")
    bce = predictor.objective_ == "bce"
    if bce and (losses.min() < 0 or losses.max() > 1):
        raise ConfigurationError(f"this router reads losses as failure probabilities; {name!r}'s calibration losses "
                                 f"must lie in [0, 1], got [{losses.min():.4g}, {losses.max():.4g}]")
    if embeddings is None:
        embeddings = predictor.encode(prompts)
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    if x.shape != (len(prompts), predictor.text_encoder_.dim):
        raise ConfigurationError(f"embeddings must have shape {(len(prompts), predictor.text_encoder_.dim)}, "
                                 f"got {tuple(x.shape)}")
    last = predictor.head_[-1]
    hidden = _hidden(predictor, x)
    with torch.no_grad():
        existing = last(hidden).clone()
    if bce:
        mean, std = 0.0, 1.0
    else:
        mean, std = float(losses.mean()), float(max(losses.std(), 1e-6))
    target = torch.from_numpy(((losses - mean) / std).astype(np.float32))

    order = np.random.default_rng(predictor.seed).permutation(len(prompts))
    parts = [p for p in np.array_split(order, min(folds, len(prompts))) if len(p)]
    best: tuple[float, float, float] | None = None
    for a_prior, a_res in itertools.product(PRIOR_ALPHAS, RESIDUAL_ALPHAS):
        cv = 0.0
        for i, test in enumerate(parts):
            train = np.concatenate(parts[:i] + parts[i + 1:])
            params = _fit_column(existing[train], hidden[train], target[train], a_prior, a_res, bce)
            cv += float(_column_loss(params, existing[test], hidden[test], target[test], bce)) * len(test)
        cv /= len(prompts)
        if best is None or cv < best[0] - 1e-9:
            best = (cv, a_prior, a_res)
    assert best is not None
    c, c0, delta = _fit_column(existing, hidden, target, best[1], best[2], bce)
    with torch.no_grad():
        weight = c @ last.weight + delta
        bias = (c * last.bias).sum() + c0
        grown = torch.nn.Linear(last.in_features, last.out_features + 1).to(last.weight.device)
        grown.weight.copy_(torch.cat([last.weight, weight[None, :]]))
        grown.bias.copy_(torch.cat([last.bias, bias.reshape(1)]))
    predictor.head_[-1] = grown
    predictor.experts_ = (*predictor.experts_, name)
    predictor.target_mean_ = np.append(predictor.target_mean_, np.float32(mean)).astype(np.float32)
    predictor.target_std_ = np.append(predictor.target_std_, np.float32(std)).astype(np.float32)
    predictor.library_ = ExpertLibrary([*predictor.library_, expert])
    fits = dict(getattr(predictor, "expert_fits_", {}))
    fits[name] = ExpertFit(len(prompts), best[1], best[2], best[0],
                           {e: float(v) for e, v in zip(predictor.experts_[:-1], c.tolist())})
    predictor.expert_fits_ = fits
    return expert


def _column_loss(params: tuple[torch.Tensor, torch.Tensor, torch.Tensor], existing: torch.Tensor,
                 hidden: torch.Tensor, target: torch.Tensor, bce: bool) -> torch.Tensor:
    import torch

    c, c0, delta = params
    out = existing @ c + c0 + hidden @ delta
    if bce:
        return torch.nn.functional.binary_cross_entropy_with_logits(out, target)
    return torch.nn.functional.mse_loss(out, target)


def _fit_column(existing: torch.Tensor, hidden: torch.Tensor, target: torch.Tensor, a_prior: float,
                a_res: float, bce: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Penalised fit of (c, c0, δ) by L-BFGS; deterministic (no randomness)."""
    import torch

    k = existing.shape[1]
    prior = torch.full((k,), 1.0 / k)
    c = prior.clone().requires_grad_(True)
    c0 = torch.zeros((), requires_grad=True)
    delta = torch.zeros(hidden.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([c, c0, delta], lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _column_loss((c, c0, delta), existing, hidden, target, bce) \
            + a_prior * ((c - prior) ** 2).sum() + a_res * (delta ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return c.detach(), c0.detach(), delta.detach()


def remove_expert(predictor: PerceptivePredictor, name: str) -> None:
    """Drop expert ``name`` from ``predictor`` (in place); at least one expert must remain."""
    import torch

    predictor._check_fitted()
    if name not in predictor.experts_:
        raise ExpertNotFoundError(name, predictor.experts_)
    if len(predictor.experts_) == 1:
        raise ConfigurationError(f"cannot remove {name!r}: it is the router's only expert")
    keep = [i for i, e in enumerate(predictor.experts_) if e != name]
    last = predictor.head_[-1]
    with torch.no_grad():
        shrunk = torch.nn.Linear(last.in_features, len(keep)).to(last.weight.device)
        shrunk.weight.copy_(last.weight[keep])
        shrunk.bias.copy_(last.bias[keep])
    predictor.head_[-1] = shrunk
    predictor.experts_ = tuple(predictor.experts_[i] for i in keep)
    predictor.target_mean_ = predictor.target_mean_[keep]
    predictor.target_std_ = predictor.target_std_[keep]
    predictor.library_ = predictor.library_.subset(predictor.experts_)
    if hasattr(predictor, "expert_fits_"):
        predictor.expert_fits_ = {k: v for k, v in predictor.expert_fits_.items() if k != name}


__all__ = ["ExpertFit", "MIN_CALIBRATION_ROWS", "add_expert", "remove_expert"]
