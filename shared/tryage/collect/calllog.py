"""The append-only call log: one JSON line per finished call, keyed by (prompt id, expert, settings).

A record also keeps ``input_sha``, the hash of the text the expert read (:func:`input_hash`): a prompt
whose text was edited but whose id was kept is called again, not scored on the old text's answer.
Records of older logs, without it, are still read and reused as they are.

Every call that ends (an answer, or an error after the last retry) is appended and flushed at
once, so a run killed at any moment (even ``kill -9``) loses at most the calls in flight, whose
lines were never written. A partially written last line is cut off when the log is opened. A lock
file (``<log>.lock``, via ``filelock``) refuses a second writer: two runs on one log would pay twice
for the same calls. Answers, not scores, are logged, so ``tryage score`` re-scores without calling
any model.

The same writer keeps the judge's replies (``record=JudgeReply`` in :mod:`tryage.collect.judge`):
every append-only log of a collection goes through this one locked writer and torn-tail repair.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tryage._io import AppendLog, iter_jsonl
from tryage.errors import CallLogError, LogLockedError

CallKey = tuple[str, str, str]


@dataclass(frozen=True)
class CallRecord:
    """One finished call.

    Attributes:
        prompt_id: The prompt's id.
        expert: The expert's name.
        settings: Hash of the expert's generation settings (see ``ExpertSpec.settings_hash``).
        answer: The text returned (``None`` for a loss-only expert or an error).
        loss: LM loss of prompt + reference (``hf`` experts), else ``None``.
        input_tokens: From ``usage_metadata`` (or the tokenizer), else ``None``.
        output_tokens: From ``usage_metadata``, else ``None``.
        latency_s: Seconds of the successful attempt (of the last one for an error).
        cost: USD: tokens × the expert's prices per 1M tokens (0 when prices are unknown).
        error: ``"<Type>: <message>"`` when the call failed for good, else ``None``.
        attempts: Attempts made (1 + retries).
        input_sha: First 16 hex digits of the SHA-256 of the text the expert read (:func:`input_hash`),
            ``None`` in logs written before it was kept.
    """

    prompt_id: str
    expert: str
    settings: str
    answer: str | None = None
    loss: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_s: float = 0.0
    cost: float = 0.0
    error: str | None = None
    attempts: int = 1
    input_sha: str | None = None

    @property
    def key(self) -> CallKey:
        return (self.prompt_id, self.expert, self.settings)

    def read(self, *hashes: str) -> bool:
        """Whether this call read one of the texts of ``hashes`` (:func:`input_hash`); a record of an
        older log, which kept no hash, is taken to have."""
        return self.input_sha is None or self.input_sha in hashes

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallRecord:
        return cls(**{k: data.get(k) for k in _FIELDS if k in data})

    @classmethod
    def from_line(cls, data: Any) -> CallRecord:
        """The record a log line holds; ``ValueError`` (saying which field and why) when it holds none."""
        if not isinstance(data, dict) or not {"prompt_id", "expert", "settings"} <= data.keys():
            raise ValueError("a call record needs 'prompt_id', 'expert' and 'settings'")
        for name, (allowed, what) in _CHECKS.items():
            if name in data and not allowed(data[name]):
                raise ValueError(f"{name!r} must be {what}, got {data[name]!r:.60}; the line is not a call tryage logged")
        return cls.from_dict(data)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


_FIELDS = tuple(CallRecord.__dataclass_fields__)
#: What each field of a log line may hold (token counts are only estimates' inputs: any value reads, as None).
_CHECKS: dict[str, tuple[Any, str]] = {
    **{k: (lambda v: isinstance(v, str), "text") for k in ("prompt_id", "expert", "settings")},
    **{k: (lambda v: v is None or isinstance(v, str), "text or null") for k in ("answer", "error", "input_sha")},
    "loss": (lambda v: v is None or _number(v), "a finite number >= 0 or null"),  # a mean next-token loss
    **{k: (_number, "a finite number >= 0") for k in ("latency_s", "cost")},
    "attempts": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number >= 0"),
}


def input_hash(row: Any, spec: Any) -> str:
    """First 16 hex digits of the SHA-256 of what ``spec`` reads of ``row``: the prompt (an ``hf``
    expert: the prompt, a space and the reference, whose loss it measures)."""
    return text_hash(row.prompt if spec.kind != "hf" or row.reference is None else f"{row.prompt} {row.reference}")


def text_hash(text: str) -> str:
    """First 16 hex digits of the SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class CallLog:
    """The call log file; use as a context manager to hold the writer's lock.

    Args:
        path: The JSONL log (created with its folder when missing).
        record: The record class of its lines: a dataclass with ``from_line(data)`` (``ValueError`` for
            a line that is no record), a ``key`` and an ``ok`` (default :class:`CallRecord`).
        damaged: ``"raise"`` (:class:`CallLogError` naming the line) or ``"skip"`` a damaged line: a log
            of replies that are safe to ask again (the judge's) skips it, and that reply is asked again.
    """

    def __init__(self, path: str | os.PathLike[str], *, record: type[Any] = CallRecord,
                 damaged: str = "raise") -> None:
        if damaged not in ("raise", "skip"):
            raise CallLogError(f"damaged must be 'raise' or 'skip', got {damaged!r}")
        self.path = Path(path)
        self.record = record
        self.damaged = damaged
        self._writer: AppendLog | None = None

    # -- reading -----------------------------------------------------------------------------
    def records(self) -> list[Any]:
        """Every complete record, in file order (a partial last line is skipped)."""
        return list(self._iter())

    def _iter(self) -> Iterator[Any]:
        if not self.path.exists():
            return
        if self.path.is_dir():
            raise CallLogError(f"{self.path}: is a folder; a call log is a JSONL file written by tryage collect")
        try:
            yield from self._read()
        except UnicodeDecodeError as exc:
            raise CallLogError(f"{self.path}: is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r}); "
                               "a call log is a JSONL file written by tryage collect") from None

    def _read(self) -> Iterator[Any]:
        for number, data, problem in iter_jsonl(self.path, torn_tail=True):  # a torn last line: a killed writer
            if problem is None:
                try:
                    yield self.record.from_line(data)
                    continue
                except (TypeError, ValueError) as exc:
                    problem = str(exc)
            if self.damaged == "raise":
                raise CallLogError(f"{self.path}, line {number}: {problem}")

    def latest(self) -> dict[Any, Any]:
        """The last record of each key (a later success replaces an earlier error)."""
        out: dict[Any, Any] = {}
        for record in self._iter():
            if record.ok or record.key not in out or not out[record.key].ok:
                out[record.key] = record
        return out

    # -- writing -----------------------------------------------------------------------------
    def __enter__(self) -> CallLog:
        self._writer = AppendLog(self.path, what="call log", locked=LogLockedError).open()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def append(self, record: Any) -> None:
        """Write one record and flush it to the OS (it survives the process being killed)."""
        if self._writer is None:
            raise CallLogError(f"call log {self.path} is not open for writing; use 'with CallLog(path) as log:'")
        self._writer.append([asdict(record)], hint="it keeps every call logged before, and a rerun resumes from them")


def logged(done: Mapping[CallKey, Any], row: Any, spec: Any) -> Any:
    """The record in ``done`` (a log's :meth:`CallLog.latest`) of calling ``spec`` on ``row`` at the
    expert's current settings on the row's current text, or ``None``."""
    record = done.get((row.id, spec.name, spec.settings_hash()))
    return record if record is not None and record.read(input_hash(row, spec)) else None


__all__ = ["CallKey", "CallLog", "CallRecord", "input_hash", "logged", "text_hash"]
