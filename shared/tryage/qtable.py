"""The Q-table: for each prompt, the loss each expert obtained on it.

Rows are read from JSONL (one object a line) or CSV:

* JSONL: ``{"prompt": str, "losses": {expert: float}}`` or ``{"prompt": str, "scores": {expert:
  float}}``. Every other key (``id``, ``task``, ``domain``, ...) is kept in :attr:`QTable.extras` for
  per-group reports.
* CSV: a ``prompt`` column, one column per expert named ``loss:<expert>`` or ``score:<expert>``, any
  other columns kept as extras.

**Scores** (higher is better) are turned into losses as ``loss = 1 − score``. For scores in [0, 1]
(accuracy, coverage) the loss is in [0, 1] too, on the same scale as the constraint penalties; the
ranking of experts is the same as with ``−score`` whatever the range. A table read from scores
remembers it (``kind == "score"``) so reports can speak in scores again.

**Partial rows** (production feedback, where only the chosen expert's outcome is known): an expert
missing from a row, or given as ``null``, is held as NaN and :attr:`QTable.observed` is ``False``
there. A row needs at least one value. The experts are the union over all rows, in first-seen order.

A row with no value at all, a non-finite value, an empty or duplicate prompt is an error naming the
file, the line and the problem; ``on_invalid="drop"`` skips such rows instead and lists them in
:attr:`QTable.dropped`.

Files must be UTF-8 (a byte-order mark is fine); any other encoding, a folder or an unreadable file
is one :class:`~tryage.errors.QTableError` naming the file.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tryage._io import atomic_write_text, iter_jsonl
from tryage.errors import (ConfigurationError, QTableError, TryageFileNotFoundError, UnobservedExpertWarning,
                           check_scalar)


@dataclass(frozen=True)
class DroppedRow:
    """A row skipped with ``on_invalid="drop"``.

    Attributes:
        line: 1-based line of the file (CSV: the header is line 1).
        reason: What was wrong.
    """

    line: int
    reason: str


@dataclass(frozen=True)
class QTable:
    """Prompts × experts losses.

    Attributes:
        prompts: The prompts, in file order.
        experts: Expert names, in column order.
        losses: Loss per prompt and expert, shape ``(n, k)``; lower is better; NaN where unobserved.
        extras: Per prompt, the row's other fields (e.g. ``{"task": "mmlu"}``).
        kind: ``"loss"`` or ``"score"`` — what the source held (scores were converted, see module doc).
        dropped: Rows skipped with ``on_invalid="drop"``.
    """

    prompts: tuple[str, ...]
    experts: tuple[str, ...]
    losses: np.ndarray
    extras: tuple[Mapping[str, Any], ...] = ()
    kind: str = "loss"
    dropped: tuple[DroppedRow, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        losses = np.asarray(self.losses, dtype=np.float64)
        object.__setattr__(self, "losses", losses)
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "experts", tuple(self.experts))
        if not self.extras:
            object.__setattr__(self, "extras", tuple({} for _ in self.prompts))
        if self.kind not in ("loss", "score"):
            raise ConfigurationError(f"kind must be 'loss' or 'score', got {self.kind!r}")
        if losses.shape != (len(self.prompts), len(self.experts)) or len(self.extras) != len(self.prompts):
            raise QTableError(
                f"losses have shape {losses.shape} but there are {len(self.prompts)} prompts, "
                f"{len(self.experts)} experts and {len(self.extras)} extras rows")
        if len(set(self.experts)) != len(self.experts):
            raise QTableError(f"duplicate expert names: {list(self.experts)}")
        if np.isinf(losses).any():
            raise QTableError("losses must be finite or NaN (unobserved)")
        empty = np.flatnonzero(np.isnan(losses).all(axis=1)) if losses.size else np.array([], dtype=int)
        if empty.size:
            raise QTableError(f"row {int(empty[0])} (prompt {self.prompts[int(empty[0])][:60]!r}) has no observed "
                              "value; a row needs at least one expert's loss")

    def __len__(self) -> int:
        return len(self.prompts)

    # -- views -----------------------------------------------------------------------------------
    @property
    def observed(self) -> np.ndarray:
        """Mask of the entries that hold a value, shape ``(n, k)``; ``False`` where a row lacked the expert."""
        return ~np.isnan(self.losses)

    @property
    def n_missing(self) -> int:
        """How many entries are unobserved (0 for a full table)."""
        return int(np.isnan(self.losses).sum())

    @property
    def scores(self) -> np.ndarray:
        """``1 − losses``: the scores a ``kind == "score"`` table was read from."""
        return 1.0 - self.losses

    def to_user_units(self, losses: np.ndarray | float) -> np.ndarray | float:
        """Losses as the source's units: scores for a score table, losses otherwise."""
        return 1.0 - losses if self.kind == "score" else losses

    def column(self, key: str) -> list[Any]:
        """One extra field for every row (``None`` where a row lacks it)."""
        return [e.get(key) for e in self.extras]

    def subset(self, indices: Sequence[int] | np.ndarray) -> QTable:
        """The rows at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=int)
        return QTable(tuple(self.prompts[i] for i in idx), self.experts, self.losses[idx],
                      tuple(self.extras[i] for i in idx), self.kind)

    def select_experts(self, names: Sequence[str]) -> QTable:
        """The same rows with only the named expert columns, in that order."""
        missing = [n for n in names if n not in self.experts]
        if missing:
            raise QTableError(f"experts not in the table: {missing}; it has {list(self.experts)}")
        cols = [self.experts.index(n) for n in names]
        return QTable(self.prompts, tuple(names), self.losses[:, cols], self.extras, self.kind)

    def split(self, fraction: float, *, seed: int = 0, by: str | None = None) -> tuple[QTable, QTable]:
        """A random split into two tables, the second holding ``fraction`` of the rows.

        With ``by`` (an extra field such as ``"task"``) the split is stratified by that field.
        """
        check_scalar(fraction, "fraction", low=0, high=1, low_open=True, high_open=True)
        rng = np.random.default_rng(seed)
        groups: dict[Any, list[int]] = {}
        for i, g in enumerate(self.column(by) if by else [None] * len(self)):
            groups.setdefault(g, []).append(i)
        first: list[int] = []
        second: list[int] = []
        for members in groups.values():
            order = rng.permutation(members)
            cut = int(round(len(order) * fraction))
            second.extend(order[:cut])
            first.extend(order[cut:])
        return self.subset(sorted(first)), self.subset(sorted(second))

    def folds(self, k: int, *, seed: int = 0) -> list[tuple[QTable, QTable]]:
        """``k`` cross-validation folds as (train, test) pairs."""
        check_scalar(k, f"k (folds of {len(self)} rows)", kind=int, low=2, high=len(self))
        order = np.random.default_rng(seed).permutation(len(self))
        parts = np.array_split(order, k)
        return [(self.subset(np.sort(np.concatenate(parts[:i] + parts[i + 1:]))), self.subset(np.sort(p)))
                for i, p in enumerate(parts)]

    # -- I/O -------------------------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], *, experts: Sequence[str] | None = None,
                     on_invalid: str = "raise", source: str | None = None) -> QTable:
        """Build a table from dict rows (the JSONL shape). See the module doc for the rules."""
        return _Builder(experts, on_invalid, source).build(enumerate(records, start=1))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, experts: Sequence[str] | None = None,
                  on_invalid: str = "raise") -> QTable:
        """Read a ``.jsonl`` or ``.csv`` Q-table (see the module doc)."""
        source = Path(path)
        if not source.exists():
            raise TryageFileNotFoundError(f"Q-table file not found: {source}")
        suffix = source.suffix.lower()
        if source.is_dir():
            raise QTableError(f"is a folder, not a file; {_ALLOWED_FILES}", path=str(source))
        if suffix not in (".jsonl", ".ndjson", ".json", ".csv"):
            raise QTableError(f"unsupported Q-table format {suffix!r}; {_ALLOWED_FILES}", path=str(source))
        builder = _Builder(experts, on_invalid, str(source))
        try:
            return builder.build(_read_csv(source) if suffix == ".csv" else _read_jsonl(source))
        except UnicodeDecodeError as exc:
            raise QTableError(f"is not UTF-8 text ({_describe_encoding(source, exc)}); {_ALLOWED_FILES}",
                              path=str(source)) from None
        except csv.Error as exc:
            raise QTableError(f"is not a readable CSV file ({exc}); {_ALLOWED_FILES}", path=str(source)) from None
        except OSError as exc:
            raise QTableError(f"cannot be read ({exc.strerror or exc}); {_ALLOWED_FILES}", path=str(source)) from None

    def to_jsonl(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as JSONL (``losses`` rows, extras kept), atomically."""
        if np.isinf(self.losses).any():
            raise QTableError("cannot write a Q-table holding infinite losses; JSON has no such numbers",
                              path=str(path))
        lines = []
        for prompt, row, extra in zip(self.prompts, self.losses, self.extras):
            losses = {e: float(v) for e, v in zip(self.experts, row) if not math.isnan(v)}
            record = {**extra, "prompt": prompt, "losses": losses}
            try:
                lines.append(json.dumps(record, ensure_ascii=False, allow_nan=False))
            except (TypeError, ValueError) as exc:
                raise QTableError(f"row {prompt!r:.60} cannot be written as JSON: {exc}", path=str(path)) from None
        target = Path(path)
        atomic_write_text(target, "\n".join(lines) + "\n")
        return target


_ALLOWED_FILES = "a Q-table is a UTF-8 .jsonl or .csv file"


def _describe_encoding(path: Path, exc: UnicodeDecodeError) -> str:
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "it looks like UTF-16; re-save it as UTF-8"
    bad = exc.object[exc.start:exc.start + 1]
    return f"byte {bad!r} cannot be decoded; re-save it as UTF-8 (it may be Latin-1 or a binary file)"


def _read_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    for number, value, problem in iter_jsonl(path, encoding="utf-8-sig"):
        yield number, (value if problem is None else _Bad(problem))


def _read_csv(path: Path) -> Iterable[tuple[int, Any]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if "prompt" not in header:
            raise QTableError(f"CSV header needs a 'prompt' column; it has {header}", path=str(path), line=1)
        kinds = {h.split(":", 1)[0] for h in header if ":" in h}
        if not kinds <= {"loss", "score"} or len(kinds) != 1:
            raise QTableError("CSV expert columns must all be 'loss:<expert>' or all 'score:<expert>'; "
                              f"header is {header}", path=str(path), line=1)
        kind = kinds.pop()
        for number, row in enumerate(reader, start=2):
            if any("\x00" in (v if isinstance(v, str) else "") for v in row.values()):
                yield number, _Bad("holds NUL bytes (a binary file?)")
                continue
            if None in row:
                yield number, _Bad(f"row has {len(header) + len(row[None])} cells but the header has {len(header)}")
                continue
            if None in row.values():
                yield number, _Bad(f"row has fewer cells than the {len(header)} of the header")
                continue
            values: dict[str, Any] = {}
            extras: dict[str, Any] = {}
            for key, value in row.items():
                if ":" in key:
                    values[key.split(":", 1)[1]] = value
                elif key != "prompt":
                    extras[key] = value
            yield number, {**extras, "prompt": row.get("prompt"), ("losses" if kind == "loss" else "scores"): values}


@dataclass
class _Bad:
    reason: str


class _Builder:
    def __init__(self, experts: Sequence[str] | None, on_invalid: str, source: str | None) -> None:
        if on_invalid not in ("raise", "drop"):
            raise ConfigurationError(f"on_invalid must be 'raise' or 'drop', got {on_invalid!r}")
        self.experts = tuple(experts) if experts is not None else None
        self.on_invalid = on_invalid
        self.source = source
        self.kind: str | None = None
        self.inferred = False  # columns taken from the first valid row, not given by the caller
        self.named: dict[str, None] = {}  # every expert a row names, with a value or null (in order)

    def build(self, rows: Iterable[tuple[int, Any]]) -> QTable:
        prompts: list[str] = []
        losses: list[dict[str, float]] = []
        extras: list[dict[str, Any]] = []
        dropped: list[DroppedRow] = []
        seen: dict[str, int] = {}
        for line, record in rows:
            try:
                prompt, row, extra = self._row(record, seen)
            except _RowProblem as problem:
                if self.on_invalid == "raise":
                    raise QTableError(str(problem), path=self.source, line=line) from None
                dropped.append(DroppedRow(line, str(problem)))
                continue
            seen[prompt] = line
            prompts.append(prompt)
            losses.append(row)
            extras.append(extra)
        if not prompts:
            raise QTableError("the Q-table has no valid rows" + (f" ({len(dropped)} dropped)" if dropped else ""),
                              path=self.source)
        experts = self.experts if self.experts is not None else tuple(dict.fromkeys(e for r in losses for e in r))
        unseen = [e for e in self.named if e not in experts]
        if unseen:   # a column of nulls only: no row can teach a router about it
            warnings.warn(UnobservedExpertWarning(
                f"{self.source or 'the Q-table'}: expert(s) {unseen} have no value in any row (only null or empty); "
                "they are left out of the Q-table"), stacklevel=2)
        matrix = np.array([[r.get(e, np.nan) for e in experts] for r in losses], dtype=np.float64)
        return QTable(tuple(prompts), experts, matrix, tuple(extras), self.kind or "loss", tuple(dropped))

    def _row(self, record: Any, seen: Mapping[str, int]) -> tuple[str, dict[str, float], dict[str, Any]]:
        if isinstance(record, _Bad):
            raise _RowProblem(record.reason)
        if not isinstance(record, Mapping):
            raise _RowProblem(f"expected a JSON object, got {type(record).__name__}")
        prompt = record.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _RowProblem("empty or missing 'prompt'")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _RowProblem(f"'prompt' holds a lone surrogate {prompt[exc.start]!r} at character {exc.start}; "
                              "prompts must be valid Unicode text") from None
        if prompt in seen:
            raise _RowProblem(f"duplicate prompt (first seen on line {seen[prompt]})")
        has_losses, has_scores = "losses" in record, "scores" in record
        if has_losses == has_scores:
            raise _RowProblem("a row needs exactly one of 'losses' or 'scores'")
        kind = "loss" if has_losses else "score"
        if self.kind is None:
            self.kind = kind
        elif kind != self.kind:
            plural = {"loss": "losses", "score": "scores"}
            raise _RowProblem(f"row has {plural[kind]} but earlier rows have {plural[self.kind]}; "
                              "one table holds one kind")
        values = record["losses" if has_losses else "scores"]
        if not isinstance(values, Mapping) or not values:
            raise _RowProblem(f"'{kind}es' must be a non-empty object expert -> number" if kind == "loss"
                              else "'scores' must be a non-empty object expert -> number")
        row: dict[str, float] = {}
        for expert, raw in values.items():
            if self.experts is None:
                self.named[str(expert)] = None
            if raw is None or raw == "" or (self.experts is not None and expert not in self.experts):
                continue  # unobserved (null, an empty CSV cell) or not asked for
            try:
                number = float(raw)
            except (TypeError, ValueError, OverflowError):
                raise _RowProblem(f"{kind} of {expert!r} is not a finite number: {raw!r:.60}") from None
            if not math.isfinite(number):
                raise _RowProblem(f"{kind} of {expert!r} is {raw!r}; values must be finite")
            row[str(expert)] = number if kind == "loss" else 1.0 - number
        if not row:
            asked = "" if self.experts is None else f" among {list(self.experts)}"
            raise _RowProblem(f"no observed {kind}{asked}; a row needs at least one expert's value")
        extra = {k: v for k, v in record.items() if k not in ("prompt", "losses", "scores")}
        return prompt, row, extra


class _RowProblem(Exception):
    pass


__all__ = ["DroppedRow", "QTable"]
