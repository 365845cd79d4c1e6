"""Learning from production feedback: partial observations, warm-started updates, exploration.

In production a router sees only the outcome of the expert it chose. Each observation is a
:class:`Feedback` row (prompt, expert, loss); :func:`feedback_table` turns rows into a partial
:class:`tryage.qtable.QTable` (NaN where an expert was not observed) and :func:`update_predictor`
warm-starts a head-mode :class:`tryage.predictor.PerceptivePredictor` on it with the masked loss.

Forgetting is held off in one of two ways (``regularization=``):

* ``"l2"`` (default): only observed entries are trained, with an L2 pull of the head's weights toward
  their values before the update.
* ``"replay"``: every entry the feedback does not observe — the other experts on the
  feedback prompts, and every expert on optional reference prompts — is trained toward the router's
  own prediction from before the update (soft targets, knowledge distillation). The observed
  entries move toward the feedback; the rest stay where they were.
* ``"none"``: observed entries only, no regularisation (a baseline for the benchmark).

Defaults (``"l2"``, 3 epochs) come from benchmarks/production.py (bandit replay on LLMRouter, 3
held-out folds): with 3 epochs per mini-batch of 160 one-expert rows every variant ends within 0.005 of
a router trained on the full table; with 20 epochs replay and no regularisation fall 0.03-0.05 behind
while L2 stays within 0.007 (benchmarks/results/production*.json).

Exploration, which makes feedback cover more than the current favourite, is part of routing:
:class:`tryage.objective.Exploration`.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tryage.errors import ConfigurationError, ExpertNotFoundError, QTableError, TryageFileNotFoundError
from tryage.qtable import QTable

if TYPE_CHECKING:  # pragma: no cover
    from tryage.predictors import PerceptivePredictor

REGULARIZATIONS = ("replay", "l2", "none")


# -- feedback rows ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Feedback:
    """One observed outcome.

    Attributes:
        prompt: The prompt as the expert received it.
        expert: The expert that answered.
        loss: Its loss (lower is better); a score ``s`` is stored as ``1 − s`` as in Q-tables.
    """

    prompt: str
    expert: str
    loss: float

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Feedback:
        """From ``{"prompt", "expert", "score" | "loss"}`` (other keys such as ``decision_id`` ignored)."""
        if not isinstance(record, Mapping):
            raise QTableError(f"a feedback row must be an object with prompt, expert and score or loss; "
                              f"got {type(record).__name__}")
        prompt, expert = record.get("prompt"), record.get("expert")
        if not isinstance(prompt, str) or not prompt.strip():
            raise QTableError("feedback row has an empty or missing 'prompt'")
        if not isinstance(expert, str) or not expert.strip():
            raise QTableError(f"feedback row has an empty or missing 'expert' (got {expert!r})")
        has_loss, has_score = record.get("loss") not in (None, ""), record.get("score") not in (None, "")
        if has_loss == has_score:
            raise QTableError("a feedback row needs exactly one of 'score' or 'loss'")
        raw = record["loss"] if has_loss else record["score"]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise QTableError(f"feedback {'loss' if has_loss else 'score'} is not a number: {raw!r}") from None
        if not math.isfinite(value):
            raise QTableError(f"feedback {'loss' if has_loss else 'score'} must be finite, got {raw!r}")
        return cls(prompt, expert, value if has_loss else 1.0 - value)


def read_feedback(path: str | os.PathLike[str]) -> list[Feedback]:
    """Read feedback rows from JSONL (one object a line) or CSV (columns prompt, expert, score|loss)."""
    source = Path(path)
    if not source.exists():
        raise TryageFileNotFoundError(f"feedback file not found: {source}")
    suffix = source.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".json", ".csv"):
        raise QTableError(f"unsupported feedback format {suffix!r}; use .jsonl or .csv", path=str(source))
    rows: list[Feedback] = []
    with source.open(encoding="utf-8", newline="") as handle:
        numbered: Iterable[tuple[int, Any]]
        if suffix == ".csv":
            numbered = enumerate(csv.DictReader(handle), start=2)
        else:
            numbered = ((n, line) for n, line in enumerate(handle, start=1) if line.strip())
        for number, item in numbered:
            try:
                record = item if suffix == ".csv" else json.loads(item)
                rows.append(Feedback.from_dict(record))
            except json.JSONDecodeError as exc:
                raise QTableError(f"not valid JSON ({exc.msg})", path=str(source), line=number) from None
            except QTableError as exc:
                raise QTableError(str(exc), path=str(source), line=number) from None
    if not rows:
        raise QTableError("the feedback file has no rows", path=str(source))
    return rows


def feedback_table(rows: Iterable[Feedback | Mapping[str, Any]] | QTable, experts: Sequence[str]) -> QTable:
    """A partial Q-table over ``experts`` from feedback rows: one row per prompt, NaN where unobserved.

    Repeated (prompt, expert) observations are averaged. A :class:`QTable` is accepted as is (its
    columns reordered to ``experts``; columns it lacks are unobserved).
    """
    experts = tuple(experts)
    if isinstance(rows, QTable):
        unknown = [e for e in rows.experts if e not in experts]
        if unknown:
            raise ExpertNotFoundError(unknown[0], experts)
        losses = np.full((len(rows), len(experts)), np.nan)
        for j, e in enumerate(rows.experts):
            losses[:, experts.index(e)] = rows.losses[:, j]
        return QTable(rows.prompts, experts, losses, rows.extras, rows.kind)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for row in rows:
        item = row if isinstance(row, Feedback) else Feedback.from_dict(row)
        if item.expert not in experts:
            raise ExpertNotFoundError(item.expert, experts)
        j = experts.index(item.expert)
        if item.prompt not in sums:
            sums[item.prompt] = np.zeros(len(experts))
            counts[item.prompt] = np.zeros(len(experts))
        sums[item.prompt][j] += item.loss
        counts[item.prompt][j] += 1
    if not sums:
        raise QTableError("no feedback rows given")
    prompts = tuple(sums)
    losses = np.array([np.where(counts[p] > 0, sums[p] / np.maximum(counts[p], 1), np.nan) for p in prompts])
    return QTable(prompts, experts, losses)


# -- updates ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UpdateReport:
    """What one :func:`update_predictor` call did.

    Attributes:
        prompts: Feedback prompts trained on.
        observed: Observed entries per expert in the feedback.
        reference_prompts: Reference prompts replayed (``"replay"`` only).
        regularization: ``"replay"``, ``"l2"`` or ``"none"``.
        epochs: Passes over the feedback.
        loss_before: Masked loss on the observed feedback entries before the update.
        loss_after: The same after the update.
    """

    prompts: int
    observed: Mapping[str, int]
    reference_prompts: int
    regularization: str
    epochs: int
    loss_before: float
    loss_after: float

    def to_dict(self) -> dict[str, Any]:
        return {"prompts": self.prompts, "observed": dict(self.observed), "reference_prompts": self.reference_prompts,
                "regularization": self.regularization, "epochs": self.epochs,
                "loss_before": self.loss_before, "loss_after": self.loss_after}


def update_predictor(predictor: PerceptivePredictor, rows: Iterable[Feedback | Mapping[str, Any]] | QTable, *,
                     regularization: str = "l2", replay_weight: float = 1.0, l2: float = 1e-2,
                     reference_prompts: Sequence[str] | None = None, epochs: int = 3,
                     learning_rate: float | None = None, batch_size: int = 64, seed: int | None = None,
                     embeddings: np.ndarray | None = None,
                     reference_embeddings: np.ndarray | None = None) -> UpdateReport:
    """Warm-start ``predictor`` (head mode) on feedback, in place; see the module doc.

    Args:
        predictor: A trained head-mode :class:`tryage.predictor.PerceptivePredictor`.
        rows: :class:`Feedback` rows, dicts of the same fields, or a (partial) :class:`QTable`.
        regularization: ``"replay"``, ``"l2"`` or ``"none"``.
        replay_weight: Weight of the replayed (soft-target) entries against the observed ones.
        l2: Strength of the pull toward the old weights (``"l2"``).
        reference_prompts: More prompts whose current predictions are replayed (e.g. recent traffic).
        epochs: Passes over the feedback (no early stopping: there is no validation set to trust).
        learning_rate: Defaults to the predictor's.
        batch_size: Feedback rows per step.
        seed: Shuffling seed; the predictor's by default.
        embeddings: Precomputed :meth:`~tryage.predictor.PerceptivePredictor.encode` output of the
            feedback table's prompts (in :func:`feedback_table` order).
        reference_embeddings: Precomputed encodings of the reference prompts.
    """
    import torch

    predictor._check_fitted()
    if predictor.mode != "head":
        raise ConfigurationError("update supports head-mode routers; this one was trained with "
                                 f"mode={predictor.mode!r}")
    if regularization not in REGULARIZATIONS:
        raise ConfigurationError(f"regularization must be one of {REGULARIZATIONS}, got {regularization!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    if replay_weight < 0 or l2 < 0:
        raise ConfigurationError(f"replay_weight and l2 must be >= 0, got {replay_weight!r} and {l2!r}")
    table = feedback_table(rows, predictor.experts_)
    losses = table.losses.astype(np.float32)
    if predictor.objective_ == "bce" and (np.nanmin(losses) < 0 or np.nanmax(losses) > 1):
        raise ConfigurationError("this router reads losses as failure probabilities (objective 'bce'); feedback "
                                 f"losses must lie in [0, 1], got [{np.nanmin(losses):.4g}, {np.nanmax(losses):.4g}]")
    x = _embeddings(predictor, table.prompts, embeddings)
    y = torch.from_numpy((losses - predictor.target_mean_) / predictor.target_std_)  # NaN where unobserved
    observed = ~torch.isnan(y)
    head = predictor.head_
    head.eval()
    with torch.no_grad():
        old_out = head(x).clone()
    old_params = [p.detach().clone() for p in head.parameters()]
    soft = _soft_targets(predictor, old_out)
    replay_x, replay_y = x[:0], soft[:0]
    if regularization == "replay":
        replay_x, replay_y = x, soft
        if reference_prompts is not None or reference_embeddings is not None:
            ref = _embeddings(predictor, reference_prompts or [], reference_embeddings)
            with torch.no_grad():
                ref_soft = _soft_targets(predictor, head(ref).clone())
            replay_x, replay_y = torch.cat([x, ref]), torch.cat([soft, ref_soft])
    # On the feedback prompts the replay mask is "not observed"; on reference prompts it is everything.
    replay_mask = torch.cat([~observed, torch.ones((len(replay_x) - len(x), y.shape[1]), dtype=torch.bool)]) \
        if regularization == "replay" else torch.zeros((0, y.shape[1]), dtype=torch.bool)

    def data_loss(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not bool(mask.any()):
            return out.sum() * 0.0
        target = torch.where(mask, target, torch.zeros_like(target))
        fn = (torch.nn.functional.binary_cross_entropy_with_logits if predictor.objective_ == "bce"
              else torch.nn.functional.mse_loss)
        return fn(out, target, reduction="none")[mask].mean()

    loss_before = float(data_loss(old_out, y, observed))
    generator = torch.Generator().manual_seed(predictor.seed if seed is None else seed)
    opt = torch.optim.AdamW(head.parameters(), lr=learning_rate or predictor.learning_rate, weight_decay=0.0)
    n, n_replay = len(x), len(replay_x)
    steps = max(1, math.ceil(n / batch_size))
    replay_batch = max(1, math.ceil(n_replay / steps)) if n_replay else 0
    for _ in range(epochs):
        head.train()
        perm = torch.randperm(n, generator=generator)
        replay_perm = torch.randperm(n_replay, generator=generator) if n_replay else None
        for step in range(steps):
            idx = perm[step * batch_size:(step + 1) * batch_size]
            if len(idx) == 0:
                continue
            loss = data_loss(head(x[idx]), y[idx], observed[idx])
            if replay_perm is not None and replay_weight > 0:
                r = replay_perm[step * replay_batch:(step + 1) * replay_batch]
                if len(r):
                    loss = loss + replay_weight * data_loss(head(replay_x[r]), replay_y[r], replay_mask[r])
            if regularization == "l2":
                loss = loss + l2 * sum(((p - p0) ** 2).sum() for p, p0 in zip(head.parameters(), old_params))
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.eval()
    with torch.no_grad():
        loss_after = float(data_loss(head(x), y, observed))
    counts = observed.sum(0).numpy()
    return UpdateReport(len(table), {e: int(c) for e, c in zip(predictor.experts_, counts) if c},
                        n_replay - n if regularization == "replay" else 0, regularization, epochs,
                        loss_before, loss_after)


def _embeddings(predictor: PerceptivePredictor, prompts: Sequence[str], given: np.ndarray | None):  # noqa: ANN202
    import torch

    if given is None:
        return torch.from_numpy(np.asarray(predictor.encode(list(prompts)), dtype=np.float32))
    given = np.asarray(given, dtype=np.float32)
    if given.ndim != 2 or given.shape[1] != predictor.text_encoder_.dim or (prompts and len(given) != len(prompts)):
        raise ConfigurationError(f"embeddings must have shape ({len(prompts) or 'n'}, {predictor.text_encoder_.dim}), "
                                 f"got {given.shape}")
    return torch.from_numpy(given)


def _soft_targets(predictor: PerceptivePredictor, raw: Any) -> Any:
    """The head's raw outputs as training targets: probabilities for 'bce', the outputs for 'mse'."""
    import torch

    return torch.sigmoid(raw) if predictor.objective_ == "bce" else raw


def __getattr__(name: str) -> Any:
    """``Exploration`` and ``EXPLORATION_KINDS`` moved to :mod:`tryage.objective` (deprecated here)."""
    if name in ("Exploration", "EXPLORATION_KINDS"):
        import warnings

        from tryage.objective import EXPLORATION_KINDS, Exploration

        warnings.warn(f"tryage.feedback.{name} moved to tryage.objective.{name}; the old path will be removed in "
                      "the next release", DeprecationWarning, stacklevel=2)
        return Exploration if name == "Exploration" else EXPLORATION_KINDS
    raise AttributeError(f"module 'tryage.feedback' has no attribute {name!r}")



__all__ = ["REGULARIZATIONS", "Feedback", "UpdateReport", "feedback_table", "read_feedback", "update_predictor"]
