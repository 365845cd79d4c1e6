"""Measure experts: run a language model over passages and record its loss on each one.

Two tasks, as in the paper:

* ``"causal"`` — causal-LM loss: the mean negative log-likelihood of each token given the tokens
  before it (padding excluded).
* ``"masked"`` — masked-LM loss: 15% of the (non-special) tokens are replaced by the mask token and
  the loss is the mean NLL of the original tokens at those positions. Which tokens are masked
  depends only on ``seed`` and the passage id, so every expert sees the same masks and a resumed run
  masks exactly as the first run did.

Rows are appended to a JSONL file as they are measured (one line per passage id, expert and task,
flushed after every batch). :func:`measure_losses` reads the file first and skips the (id, expert,
task) triples already there, so an interrupted run resumes without losing or duplicating a row; a
partially written last line (the process died mid-write) is cut off before appending. Appends
hold a lock file (``<rows>.lock``, via ``filelock``) and re-check the file under it, so two runs
writing one file at once never write the same row twice. :func:`assemble_qtable`
turns the long rows into a :class:`~tryage.qtable.QTable` (one row per passage, one loss per expert).

torch and transformers are imported only when a model is measured.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tryage._io import iter_jsonl, progress_bar, truncate_torn_tail
from tryage.errors import (ConfigurationError, ExpertModelNotFoundError, MeasureError, TryageFileNotFoundError,
                           check_scalar)
from tryage.qtable import QTable

TASKS = ("causal", "masked")
DTYPES = ("auto", "bfloat16", "float32")


@dataclass(frozen=True)
class Passage:
    """One text to measure.

    Attributes:
        id: Stable key of the passage (rows and Q-tables are keyed by it).
        text: The passage.
        domain: Its domain, when known (kept in the Q-table for per-domain reports).
        split: ``"train"``, ``"validation"`` or ``"test"``, when known.
    """

    id: str
    text: str
    domain: str | None = None
    split: str | None = None


def passage_id(text: str) -> str:
    """The id of a passage that has none: the first 16 hex digits of the SHA-256 of its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_passages(path: str | os.PathLike[str], *, splits: Sequence[str] | None = None,
                  per_domain: int | Mapping[str, int] | None = None, seed: int = 0) -> list[Passage]:
    """Read passages from JSONL rows ``{"text", "domain"?, "split"?, "id"?}``.

    Args:
        path: The JSONL file.
        splits: Keep only these splits.
        per_domain: Keep at most this many passages per (split, domain), drawn at random with
            ``seed``; a mapping gives a number per split (splits absent from it are kept whole).
        seed: Seed of that draw.

    Passages without an ``id`` get :func:`passage_id` of their text; a passage repeated with the same
    id and text is kept once, and one id used for two different texts is an error. The order is the
    file order.
    """
    source = Path(path)
    if not source.exists():
        raise TryageFileNotFoundError(f"passages file not found: {source}")
    passages: list[Passage] = []
    seen: dict[str, tuple[int, str]] = {}
    for number, row, problem in iter_jsonl(source):
        if problem is not None:
            raise MeasureError(f"{source}, line {number}: {problem}")
        text = row.get("text") if isinstance(row, dict) else None
        if isinstance(row, dict) and row.get("id") is not None and not isinstance(row["id"], (str, int)):
            raise MeasureError(f"{source}, line {number}: 'id' must be a string or a number, got {row['id']!r:.60}")
        if not isinstance(text, str) or not text.strip():
            raise MeasureError(f"{source}, line {number}: a passage needs a non-empty 'text' string")
        if splits is not None and row.get("split") not in splits:
            continue
        key = str(row.get("id") or passage_id(text))
        if key in seen:
            first_line, first_text = seen[key]
            if first_text == text:
                continue  # the same passage twice: measure it once
            raise MeasureError(f"{source}, line {number}: id {key!r} was already used on line {first_line} "
                               "for a different text; ids must be unique")
        seen[key] = (number, text)
        passages.append(Passage(key, text, row.get("domain"), row.get("split")))
    if per_domain is not None:
        passages = _sample(passages, per_domain, seed)
    if not passages:
        raise MeasureError(f"no passages in {source}" + (f" for splits {list(splits)}" if splits else ""))
    return passages


def _sample(passages: list[Passage], per_domain: int | Mapping[str, int], seed: int) -> list[Passage]:
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, p in enumerate(passages):
        groups.setdefault((p.split, p.domain), []).append(i)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for (split, _), members in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        limit = per_domain.get(split) if isinstance(per_domain, Mapping) else per_domain
        if limit is None or limit >= len(members):
            keep.extend(members)
        else:
            keep.extend(int(i) for i in rng.choice(members, size=limit, replace=False))
    return [passages[i] for i in sorted(keep)]


# -- rows file ----------------------------------------------------------------------------------
class LossRecorder:
    """The append-only JSONL file of measured rows.

    Each line is ``{"id", "expert", "task", "loss", "tokens", "domain", "split"}``. Opening the
    recorder cuts off a partially written last line, so appending after a crash never glues two
    rows together.

    Args:
        path: The rows file (created with its folder when missing).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def done(self, task: str | None = None) -> set[tuple[str, str]]:
        """The (passage id, expert) pairs already in the file; with ``task``, only rows of that task.

        Rows written before rows carried a task count for every task.
        """
        return {(r["id"], r["expert"]) for r in self.rows() if task is None or r.get("task", task) == task}

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row of the file (a partial last line is ignored)."""
        if not self.path.exists():
            return []
        if self.path.is_dir():
            raise MeasureError(f"{self.path}: is a folder; the rows file must be a JSONL file")
        rows = []
        try:
            for number, row, problem in iter_jsonl(self.path, torn_tail=True):  # torn tail: interrupted write
                if problem is not None:
                    raise MeasureError(f"{self.path}, line {number}: {problem}")
                if not isinstance(row, dict) or not {"id", "expert", "loss"} <= row.keys():
                    raise MeasureError(f"{self.path}, line {number}: a row needs 'id', 'expert' and 'loss'")
                rows.append(row)
        except UnicodeDecodeError:
            raise MeasureError(f"{self.path}: is not UTF-8 text; the rows file must be a UTF-8 JSONL file") from None
        return rows

    def lock(self) -> Any:
        """An inter-process lock on the rows file (``<rows>.lock`` beside it); use it as a context manager."""
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path) + ".lock")

    def append(self, rows: Iterable[Mapping[str, Any]], *, skip_done: bool = False) -> int:
        """Append rows and flush them to disk; returns how many were written.

        Holds :meth:`lock` while writing. With ``skip_done``, rows whose (id, expert, task) is already
        in the file (written meanwhile by another run) or repeated within ``rows`` are left out.
        """
        rows = [dict(r) for r in rows]
        with self.lock():
            truncate_torn_tail(self.path)
            if skip_done:
                present = {(r["id"], r["expert"], r.get("task")) for r in self.rows()}
                fresh = []
                for r in rows:
                    key = (r["id"], r["expert"], r.get("task"))
                    if key not in present:
                        present.add(key)
                        fresh.append(r)
                rows = fresh
            lines = [json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows]
            if not lines:
                return 0
            with self.path.open("a", encoding="utf-8") as handle:
                handle.writelines(lines)
                handle.flush()
                os.fsync(handle.fileno())
        return len(lines)


# -- models -------------------------------------------------------------------------------------
def bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); else float32 is faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_dtype(dtype: str) -> Any:
    """The torch dtype for ``"auto"`` (bfloat16 when :func:`bf16_supported`), ``"bfloat16"`` or ``"float32"``."""
    import torch
    if dtype not in DTYPES:
        raise ConfigurationError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        dtype = "bfloat16" if bf16_supported() else "float32"
    return getattr(torch, dtype)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise MeasureError(f"unknown task {task!r}; allowed: {', '.join(repr(t) for t in TASKS)}")


def load_expert(model: str | os.PathLike[str], *, task: str = "causal", gguf_file: str | None = None,
                dtype: str = "auto") -> tuple[Any, Any]:
    """Load a local model folder (or a GGUF file in it) and its tokenizer for ``task``.

    Nothing is downloaded: a path that does not exist raises :class:`ExpertModelNotFoundError`.
    """
    _check_task(task)
    folder = Path(model)
    if not folder.is_dir():
        raise ExpertModelNotFoundError(folder, "not a folder")
    if gguf_file is not None and not (folder / gguf_file).is_file():
        raise ExpertModelNotFoundError(folder / gguf_file, "GGUF file missing")
    if gguf_file is None and not (folder / "config.json").is_file():
        raise ExpertModelNotFoundError(folder, "no config.json")
    import transformers
    torch_dtype = resolve_dtype(dtype)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    auto = transformers.AutoModelForCausalLM if task == "causal" else transformers.AutoModelForMaskedLM
    try:
        net, info = auto.from_pretrained(str(folder), dtype=torch_dtype, output_loading_info=True, **kwargs)
    except ValueError as exc:  # transformers: "Unrecognized configuration class ... for this kind of AutoModel"
        if "configuration class" not in str(exc):
            raise
        raise MeasureError(f"{folder} is not a {task} language model: its architecture has no {task}-LM head") from None
    head = sorted(k for k in info["missing_keys"] if not k.startswith(f"{net.base_model_prefix}."))
    if head:  # an encoder saved without its head would score random losses
        raise MeasureError(f"{folder} is not a {task} language model: its weights lack the LM head ({head[0]})")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), **kwargs)
    net.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if task == "masked" and tokenizer.mask_token_id is None:
        raise MeasureError(f"task 'masked' needs a tokenizer with a mask token; {folder} has none")
    return net, tokenizer


def causal_losses(logits: Any, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
    """Mean next-token NLL per row and the number of predicted tokens (padding excluded)."""
    import torch
    shift_logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    valid = attention_mask[:, 1:].bool()
    nll = torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), targets, reduction="none")
    counts = valid.sum(1)
    return (nll * valid).sum(1) / counts.clamp(min=1), counts


def mask_positions(passage: str, candidates: Sequence[int], *, seed: int, fraction: float = 0.15) -> list[int]:
    """The positions to mask for one passage: ``fraction`` of ``candidates`` (at least one), seeded by passage id."""
    if not candidates:
        return []
    digest = int(hashlib.sha256(passage.encode("utf-8")).hexdigest()[:8], 16)
    rng = np.random.default_rng([seed, digest])
    count = max(1, int(round(len(candidates) * fraction)))
    return sorted(int(i) for i in rng.choice(list(candidates), size=count, replace=False))


def _batches(items: Sequence[Passage], size: int) -> Iterator[Sequence[Passage]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def measure_losses(model: str | os.PathLike[str], passages: Sequence[Passage], out: str | os.PathLike[str], *,
                   name: str | None = None, task: str = "causal", gguf_file: str | None = None,
                   batch_size: int = 16, max_length: int = 128, dtype: str = "auto", seed: int = 0,
                   mask_fraction: float = 0.15, progress: bool = True, loaded: tuple[Any, Any] | None = None) -> int:
    """Measure one expert on ``passages`` and append its rows to ``out``; returns the rows written now.

    Args:
        model: Local model folder (with ``gguf_file``, the folder holding that file).
        passages: What to measure (see :func:`load_passages`).
        out: The rows file; pairs already in it are skipped (resume).
        name: The expert's name in the rows (default: the folder name).
        task: ``"causal"`` or ``"masked"`` (see the module doc).
        gguf_file: Name of a GGUF file inside ``model``.
        batch_size: Passages per forward pass.
        max_length: Passages are truncated to this many tokens.
        dtype: ``"auto"`` (bfloat16 where the CPU supports it, else float32), ``"bfloat16"``, ``"float32"``.
        seed: Seed of the masks (task ``"masked"``).
        mask_fraction: Share of tokens masked (task ``"masked"``).
        progress: Show a progress bar.
        loaded: An already loaded ``(model, tokenizer)`` pair to use instead of loading ``model``.

    On a Ray cluster, :func:`tryage.scale.distributed.measure_pools` writes the same rows to the same
    file and resumes the same way (``tryage measure --ray``).
    """
    _check_task(task)
    if not passages:
        raise MeasureError("the corpus is empty: give at least one passage to measure")
    check_scalar(batch_size, "batch_size", kind=int, low=1)
    check_scalar(max_length, "max_length", kind=int, low=2)
    check_scalar(mask_fraction, "mask_fraction", low=0, high=1, low_open=True, high_open=True)
    expert = name or Path(model).name
    recorder = LossRecorder(out)
    done = recorder.done(task)
    todo = []
    for p in passages:  # a passage listed twice (same text, no id) is measured once
        if (p.id, expert) not in done:
            done.add((p.id, expert))
            todo.append(p)
    if not todo:
        return 0
    net, tokenizer = loaded if loaded is not None else load_expert(model, task=task, gguf_file=gguf_file, dtype=dtype)
    written = 0
    bar = progress_bar(len(todo), f"{expert} ({task})", enabled=progress, unit="passage")
    for batch in _batches(todo, batch_size):
        written += recorder.append(measure_batch(net, tokenizer, batch, expert=expert, task=task,
                                                 max_length=max_length, seed=seed, mask_fraction=mask_fraction),
                                   skip_done=True)
        bar.update(len(batch))
    bar.close()
    return written


def measure_batch(net: Any, tokenizer: Any, batch: Sequence[Passage], *, expert: str, task: str = "causal",
                  max_length: int = 128, seed: int = 0, mask_fraction: float = 0.15) -> list[dict[str, Any]]:
    """The rows of one batch of passages under a loaded ``(net, tokenizer)``: one forward pass.

    Both backends call this, so a row measured on a Ray worker is the row the local run writes.
    """
    import torch

    tokenizer.padding_side = "right"
    with torch.inference_mode():
        enc = tokenizer([p.text for p in batch], return_tensors="pt", truncation=True,
                        max_length=max_length, padding=True)
        device = getattr(net, "device", "cpu")  # a Ray actor with a GPU moved the model there
        ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        if task == "causal":
            logits = net(input_ids=ids, attention_mask=attn).logits
            losses, counts = causal_losses(logits, ids, attn)
        else:
            losses, counts = masked_losses(net, tokenizer, batch, ids, attn, seed, mask_fraction)
    rows = [{"id": p.id, "expert": expert, "task": task, "loss": float(loss), "tokens": int(n),
             "domain": p.domain, "split": p.split} for p, loss, n in zip(batch, losses, counts)]
    bad = [r["id"] for r in rows if not np.isfinite(r["loss"])]
    if bad:
        raise MeasureError(f"expert {expert!r} gave a NaN or infinite loss on passage(s) {bad[:5]}; "
                           "measure it in float32 (dtype='float32') or check its weights")
    return rows


def masked_losses(net: Any, tokenizer: Any, batch: Sequence[Passage], ids: Any, attn: Any, seed: int,
                  fraction: float) -> tuple[Any, Any]:
    """Mean NLL of the masked tokens per row (``fraction`` of each passage, :func:`mask_positions`) and their count."""
    import torch
    special = set(tokenizer.all_special_ids)
    masked = ids.clone()
    chosen = torch.zeros_like(ids, dtype=torch.bool)
    for row, passage in enumerate(batch):
        candidates = [j for j in range(ids.shape[1]) if attn[row, j] and int(ids[row, j]) not in special]
        for j in mask_positions(passage.id, candidates, seed=seed, fraction=fraction):
            chosen[row, j] = True
    masked[chosen] = tokenizer.mask_token_id
    logits = net(input_ids=masked, attention_mask=attn).logits.float()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    counts = chosen.sum(1)
    return (nll * chosen).sum(1) / counts.clamp(min=1), counts


# -- Q-table ------------------------------------------------------------------------------------
def wide_rows(rows: Iterable[Mapping[str, Any]], *, experts: Sequence[str] | None = None,
              task: str | None = None) -> list[dict[str, Any]]:
    """Long rows → one ``{"id", "losses": {expert: loss}, "domain", "split"}`` per passage measured by every expert.

    Passages that some expert has not measured yet are left out. With ``task``, only rows of that task
    count; without it, an expert with rows of two tasks is a :class:`MeasureError`.
    """
    rows = list(rows)
    if task is None:  # experts may differ in task (the paper's mix), but one expert has one loss per passage
        tasks: dict[str, set[str]] = {}
        for r in rows:
            if r.get("task") is not None:
                tasks.setdefault(r["expert"], set()).add(str(r["task"]))
        mixed = {e: sorted(t) for e, t in tasks.items() if len(t) > 1}
        if mixed:
            expert, both = next(iter(mixed.items()))
            raise MeasureError(f"expert {expert!r} has rows of several tasks {both}; pass task= to choose one "
                               "(its causal and masked losses are different quantities)")
    table: dict[str, dict[str, Any]] = {}
    seen_experts: list[str] = []
    for r in rows:
        if task is not None and r.get("task", task) != task:
            continue
        entry = table.setdefault(r["id"], {"id": r["id"], "losses": {}, "domain": r.get("domain"), "split": r.get("split")})
        entry["losses"][r["expert"]] = float(r["loss"])
        if r["expert"] not in seen_experts:
            seen_experts.append(r["expert"])
    names = list(experts) if experts is not None else seen_experts
    out = []
    for entry in table.values():
        if all(n in entry["losses"] for n in names):
            entry["losses"] = {n: entry["losses"][n] for n in names}
            out.append(entry)
    return out


def assemble_qtable(rows: str | os.PathLike[str] | Iterable[Mapping[str, Any]], passages: Sequence[Passage], *,
                    experts: Sequence[str] | None = None, splits: Sequence[str] | None = None,
                    task: str | None = None) -> QTable:
    """The Q-table of measured rows: prompt = passage text, one loss per expert, extras ``id``, ``domain``, ``split``.

    Args:
        rows: A rows file (see :class:`LossRecorder`) or rows already read.
        passages: The passages the rows refer to (their text becomes the prompt).
        experts: Column order (default: the order experts first appear); passages missing one are left out.
        splits: Keep only passages of these splits.
        task: Keep only rows of this task.
    """
    if task is not None:
        _check_task(task)
    records = LossRecorder(rows).rows() if isinstance(rows, (str, os.PathLike)) else list(rows)
    if not records:
        raise MeasureError(f"no measured rows in {rows if isinstance(rows, (str, os.PathLike)) else 'the input'}")
    by_id = {p.id: p for p in passages}
    out = []
    for entry in wide_rows(records, experts=experts, task=task):
        passage = by_id.get(entry["id"])
        if passage is None or (splits is not None and entry["split"] not in splits):
            continue
        out.append({"id": entry["id"], "prompt": passage.text, "losses": entry["losses"],
                    "domain": entry["domain"], "split": entry["split"]})
    if not out:
        raise MeasureError("no passage was measured by every expert (or none matches the given passages/splits)")
    return QTable.from_records(out, experts=experts)


__all__ = ["ExpertModelNotFoundError", "LossRecorder", "MeasureError", "Passage", "assemble_qtable", "bf16_supported",
           "causal_losses", "load_expert", "load_passages", "mask_positions", "masked_losses", "measure_batch",
           "measure_losses", "passage_id", "resolve_dtype", "wide_rows"]
