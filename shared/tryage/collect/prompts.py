"""Prompt files for :func:`tryage.collect.collect`: JSONL or CSV rows with a ``prompt``.

Each row has ``prompt`` (required) and optionally ``id``, ``reference`` (the gold answer),
``choices`` (a list, or in CSV a JSON list or ``|``-separated text), ``task`` and ``scorer`` (this
prompt's own scorer, see :func:`tryage.collect.scorers.for_rows`); any other field is kept and written
into the Q-table (``scorer`` too). A row without ``id`` gets the first 16 hex digits of the SHA-256
of its prompt, so the same prompt keeps its id across runs and its cached calls are found again.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tryage._io import iter_jsonl
from tryage.errors import PromptFileError, TryageFileNotFoundError
from tryage.measure import passage_id

_KNOWN = ("id", "prompt", "reference", "choices", "task")


@dataclass(frozen=True)
class PromptRow:
    """One prompt to send to every expert.

    Attributes:
        id: Stable key (calls are cached by it).
        prompt: The text sent to the experts.
        reference: The gold answer, or ``None``.
        choices: Answer options of a multiple-choice prompt (``()`` when not one).
        task: Task label, or ``None``.
        extras: The row's other fields, kept in the Q-table.
        line: Line of the file it came from (``None`` for rows built in Python).
    """

    id: str
    prompt: str
    reference: str | None = None
    choices: tuple[str, ...] = ()
    task: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None


def _row(record: Any, *, path: str | None, line: int | None) -> PromptRow:
    if not isinstance(record, Mapping):
        raise PromptFileError(f"expected an object with a 'prompt', got {type(record).__name__}", path=path, line=line)
    if "prompt" not in record:
        raise PromptFileError(f"a row needs a 'prompt' field; it has {sorted(record)}", path=path, line=line)
    prompt = record["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptFileError(f"'prompt' must be non-empty text, got {prompt!r}", path=path, line=line)
    for key, value in record.items():   # a lone surrogate ("\ud800" in JSON) can be sent to no expert, nor written
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        try:
            f"{key}{text}".encode("utf-8")
        except UnicodeEncodeError:
            raise PromptFileError(f"field {str(key).encode('utf-8', 'backslashreplace').decode()!r} holds a lone "
                                  "surrogate (text that is not valid Unicode); prompts files must be valid Unicode "
                                  "text", path=path, line=line) from None
    choices = record.get("choices") or ()
    if isinstance(choices, str):
        text = choices.strip()
        if text.startswith("["):
            try:
                choices = json.loads(text)
            except json.JSONDecodeError:
                raise PromptFileError(f"'choices' is not a JSON list: {choices!r}", path=path, line=line) from None
        else:
            choices = [c.strip() for c in text.split("|")]
    if not isinstance(choices, (list, tuple)):
        raise PromptFileError(f"'choices' must be a list, got {choices!r}", path=path, line=line)
    reference = record.get("reference")
    if reference is not None and not isinstance(reference, str):
        reference = json.dumps(reference) if isinstance(reference, (list, dict)) else str(reference)
    if reference == "":
        reference = None
    task = record.get("task")
    own = record.get("scorer")   # this prompt's own scorer (see tryage.collect.scorers.for_rows)
    if own is not None and (not isinstance(own, str) or not own.strip()):
        raise PromptFileError(f"'scorer' must be a scorer name, got {own!r:.60}", path=path, line=line)
    raw_id = record.get("id")
    return PromptRow(id=str(raw_id) if raw_id not in (None, "") else passage_id(prompt), prompt=prompt,
                     reference=reference, choices=tuple(str(c) for c in choices),
                     task=None if task in (None, "") else str(task),
                     extras={k: v for k, v in record.items() if k not in _KNOWN}, line=line)


def prompts_from_records(records: Iterable[Any], *, source: str | None = None) -> list[PromptRow]:
    """Prompt rows from dicts (or plain strings, which become ``{"prompt": text}``)."""
    rows = []
    for number, record in enumerate(records, start=1):
        if isinstance(record, PromptRow):
            rows.append(record)
            continue
        rows.append(_row({"prompt": record} if isinstance(record, str) else record, path=source,
                         line=number if source else None))
    return _check(rows, source)


def _check(rows: Sequence[PromptRow], source: str | None) -> list[PromptRow]:
    if not rows:
        raise PromptFileError("no prompts", path=source)
    seen: dict[str, PromptRow] = {}
    texts: dict[str, PromptRow] = {}
    for row in rows:
        if row.id in seen:
            first = seen[row.id]
            raise PromptFileError(f"duplicate id {row.id!r} (first on line {first.line}); ids must be unique",
                                  path=source, line=row.line)
        if row.prompt in texts:  # checked before any call: a Q-table holds each prompt once
            first = texts[row.prompt]
            raise PromptFileError(f"prompt of id {row.id!r} repeats id {first.id!r} (line {first.line}); "
                                  "a Q-table holds each prompt once", path=source, line=row.line)
        seen[row.id] = row
        texts[row.prompt] = row
    return list(rows)


def load_prompts(path: str | os.PathLike[str]) -> list[PromptRow]:
    """Read a ``.jsonl`` or ``.csv`` prompts file (see the module doc)."""
    source = Path(path)
    if source.is_dir():
        raise PromptFileError("is a folder; a prompts file is a UTF-8 .jsonl or .csv file", path=str(source))
    if not source.is_file():
        raise TryageFileNotFoundError(f"prompts file not found: {source}")
    try:
        return _read_prompts(source)
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r}); a prompts file is "
                              "a UTF-8 .jsonl or .csv file", path=str(source)) from None


def _read_prompts(source: Path) -> list[PromptRow]:
    suffix = source.suffix.lower()
    rows: list[PromptRow] = []
    if suffix in (".jsonl", ".ndjson"):
        for number, record, problem in iter_jsonl(source):
            if problem is not None:
                raise PromptFileError(problem, path=str(source), line=number)
            rows.append(_row(record, path=str(source), line=number))
    elif suffix == ".csv":
        with source.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if "prompt" not in header:
                raise PromptFileError(f"the CSV header needs a 'prompt' column; it has {header}", path=str(source), line=1)
            for number, record in enumerate(reader, start=2):
                rows.append(_row(record, path=str(source), line=number))
    else:
        raise PromptFileError(f"unsupported prompts format {suffix!r}; use .jsonl or .csv", path=str(source))
    return _check(rows, str(source))


__all__ = ["PromptRow", "load_prompts", "prompts_from_records"]
