"""New and retired output columns of a trained head: the arithmetic behind
:meth:`~tryage.predictors.PerceptivePredictor.add_output` and ``remove_output``.

A new expert's column is fitted from a few dozen calibration prompts on which the expert was run. With
so few rows a free column would overfit, so it is fitted toward a prior built from the existing
experts: the new column's output is

    o_new(x) = Σ_j c_j · o_j(x) + c_0 + δ · h(x)

where ``o_j`` are the existing columns' raw outputs, ``h`` the head's hidden representation, ``c``
is pulled toward the plain average (``1/k`` each) and ``δ`` toward zero, with ridge penalties whose
strengths are chosen by cross-validation on the calibration rows. Because the last layer is linear
this is again one column of that layer (``w = Wᵀc + δ``, ``b = b·c + c_0``), so a predictor with an
added expert saves, loads and routes like any other; the folder format does not change.

Dropping a column is immediate, no retraining. The functions here take the head's last layer and
tensors; the predictor's methods own its state.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tryage.errors import ConfigurationError, ExpertNotFoundError
from tryage.experts import Expert
from tryage.feedback import Feedback
from tryage.qtable import QTable

if TYPE_CHECKING:  # pragma: no cover
    import torch

MIN_CALIBRATION_ROWS = 5
PRIOR_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)  # pull of c toward the average of the existing experts
RESIDUAL_ALPHAS = (1e-2, 1e-1, 1.0, 10.0)  # pull of δ toward zero


@dataclass(frozen=True)
class ExpertFit:
    """How :meth:`~tryage.predictors.PerceptivePredictor.add_output` fitted a new column.

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


def calibration(name: str, rows: Iterable[Feedback | Mapping[str, Any]] | QTable) -> tuple[list[str], np.ndarray]:
    """The prompts and losses of expert ``name`` in calibration ``rows`` (rows, dicts or a Q-table column)."""
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
            raise ConfigurationError(f"calibration row for expert {item.expert!r} given to add_output({name!r})")
        prompts.append(item.prompt)
        losses.append(item.loss)
    return prompts, np.asarray(losses, dtype=np.float64)


def new_expert(name: str, metadata: Expert | Mapping[str, Any] | None) -> Expert:
    """The :class:`Expert` record of a new output ``name`` (``metadata``: an Expert or a dict of its fields)."""
    if isinstance(metadata, Expert):
        return metadata if metadata.name == name else Expert.from_dict({**metadata.to_dict(), "name": name})
    return Expert.from_dict({k: v for k, v in (metadata or {}).items() if k != "name"}, name=name)


def fit_output(last: torch.nn.Linear, hidden: torch.Tensor, losses: np.ndarray, *, names: Sequence[str],
               bce: bool, seed: int, folds: int) -> tuple[torch.nn.Linear, float, float, ExpertFit]:
    """``last`` (the head's linear output layer) grown by one column fitted to calibration ``losses`` on
    the head's ``hidden`` representation of their prompts (see the module doc).

    Returns the grown layer, the new column's target mean and standard deviation (0 and 1 for
    ``bce``) and the :class:`ExpertFit`; ``names`` are the existing columns' experts.
    """
    import torch

    with torch.no_grad():
        existing = last(hidden).clone()
    mean, std = (0.0, 1.0) if bce else (float(losses.mean()), float(max(losses.std(), 1e-6)))
    target = torch.from_numpy(((losses - mean) / std).astype(np.float32))
    order = np.random.default_rng(seed).permutation(len(losses))
    parts = [p for p in np.array_split(order, min(folds, len(losses))) if len(p)]
    best: tuple[float, float, float] | None = None
    for a_prior, a_res in itertools.product(PRIOR_ALPHAS, RESIDUAL_ALPHAS):
        cv = 0.0
        for i, test in enumerate(parts):
            train = np.concatenate(parts[:i] + parts[i + 1:])
            params = _fit_column(existing[train], hidden[train], target[train], a_prior, a_res, bce)
            cv += float(_column_loss(params, existing[test], hidden[test], target[test], bce)) * len(test)
        cv /= len(losses)
        if best is None or cv < best[0] - 1e-9:
            best = (cv, a_prior, a_res)
    assert best is not None  # PRIOR_ALPHAS and RESIDUAL_ALPHAS are not empty
    c, c0, delta = _fit_column(existing, hidden, target, best[1], best[2], bce)
    with torch.no_grad():
        grown = torch.nn.Linear(last.in_features, last.out_features + 1).to(last.weight.device)
        grown.weight.copy_(torch.cat([last.weight, (c @ last.weight + delta)[None, :]]))
        grown.bias.copy_(torch.cat([last.bias, ((c * last.bias).sum() + c0).reshape(1)]))
    fit = ExpertFit(len(losses), best[1], best[2], best[0], {e: float(v) for e, v in zip(names, c.tolist())})
    return grown, mean, std, fit


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


def keep_outputs(last: torch.nn.Linear, keep: Sequence[int]) -> torch.nn.Linear:
    """A copy of the linear output layer ``last`` with only the output columns ``keep``."""
    import torch

    with torch.no_grad():
        shrunk = torch.nn.Linear(last.in_features, len(keep)).to(last.weight.device)
        shrunk.weight.copy_(last.weight[list(keep)])
        shrunk.bias.copy_(last.bias[list(keep)])
    return shrunk


__all__ = ["MIN_CALIBRATION_ROWS", "ExpertFit", "calibration", "fit_output", "keep_outputs", "new_expert"]
