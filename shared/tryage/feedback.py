"""Production feedback: partial observations as rows, files and partial Q-tables.

In production a router sees only the outcome of the expert it chose. Each observation is a
:class:`Feedback` row (prompt, expert, loss); :func:`read_feedback` reads them from JSONL or CSV and
:func:`feedback_table` turns rows into a partial :class:`tryage.qtable.QTable` (NaN where an expert was
not observed). The predictor learns from them itself:
:meth:`tryage.predictors.PerceptivePredictor.partial_fit` (or :meth:`tryage.TryageRouter.update`)
warm-starts it with the masked loss and records an :class:`UpdateReport`.

Forgetting is held off in one of two ways (``regularization=``, :data:`REGULARIZATIONS`):

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

import contextlib
import csv
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tryage.errors import ExpertNotFoundError, QTableError, TryageFileNotFoundError
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
    with _text_errors(source, "feedback file"), source.open(encoding="utf-8", newline="") as handle:
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


def read_prompt_lines(path: str | os.PathLike[str]) -> list[str]:
    """Prompts from a UTF-8 text file, one a line (blank lines skipped): the reference prompts of an update."""
    source = Path(path)
    if not source.is_file():
        raise TryageFileNotFoundError(f"reference prompts file not found: {source}" + (
            " (it is a folder)" if source.is_dir() else ""))
    with _text_errors(source, "reference prompts file"):
        text = source.read_text(encoding="utf-8")
    if "\0" in text:
        raise QTableError("holds NUL bytes: a reference prompts file is UTF-8 text, one prompt a line",
                          path=str(source))
    return [line for line in text.splitlines() if line.strip()]


@contextlib.contextmanager
def _text_errors(source: Path, what: str) -> Iterator[None]:
    """A file that is not UTF-8 text (a binary file), or one that cannot be read, as one line naming it."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise QTableError(f"is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset {exc.start}); "
                          f"a {what} is UTF-8 text: re-save it as UTF-8", path=str(source)) from None
    except csv.Error as exc:
        raise QTableError(f"is not a readable CSV file ({exc})", path=str(source)) from None
    except OSError as exc:
        if isinstance(exc, TryageFileNotFoundError):
            raise
        raise QTableError(f"cannot be read ({exc.strerror or exc})", path=str(source)) from None


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


# -- update reports ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class UpdateReport:
    """What one :meth:`~tryage.predictors.PerceptivePredictor.partial_fit` call did (its ``last_update_``).

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


def update_predictor(predictor: PerceptivePredictor, rows: Iterable[Feedback | Mapping[str, Any]] | QTable,
                     **options: Any) -> UpdateReport:
    """Deprecated (removed in the next release): ``predictor.partial_fit(rows, **options).last_update_``."""
    import warnings

    warnings.warn("tryage.feedback.update_predictor is deprecated and will be removed in the next release; use "
                  "PerceptivePredictor.partial_fit(rows, ...) (its report is .last_update_) or TryageRouter.update",
                  DeprecationWarning, stacklevel=2)
    return predictor.partial_fit(rows, **options).last_update_


def __getattr__(name: str) -> Any:
    """``Exploration`` and ``EXPLORATION_KINDS`` moved to :mod:`tryage.objective` (deprecated here)."""
    if name in ("Exploration", "EXPLORATION_KINDS"):
        import warnings

        from tryage.objective import EXPLORATION_KINDS, Exploration

        warnings.warn(f"tryage.feedback.{name} moved to tryage.objective.{name}; the old path will be removed in "
                      "the next release", DeprecationWarning, stacklevel=2)
        return Exploration if name == "Exploration" else EXPLORATION_KINDS
    raise AttributeError(f"module 'tryage.feedback' has no attribute {name!r}")


__all__ = ["REGULARIZATIONS", "Feedback", "UpdateReport", "feedback_table", "read_feedback", "read_prompt_lines",
           "update_predictor"]
