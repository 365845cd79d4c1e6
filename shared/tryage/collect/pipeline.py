"""``collect``: prompts × experts → call log → scores → Q-table and expert library; ``score``: the
same from the call log alone, without calling any model.

The Q-table written (JSONL) has one row per prompt that every expert answered::

    {"id": ..., "prompt": ..., "scores": {expert: score}, "cost": {expert: USD},
     "latency_s": {expert: seconds}, "output_tokens": {expert: n}, "reference": ..., "task": ..., ...}

``tryage train --qtable`` reads it as it is (scores; the other fields are kept as extras). The
expert library written beside it (``<out>.experts.json`` by default) holds each expert's prices and
its measured mean cost and latency per call (``measured_cost``, ``measured_latency_s``), which the
``cost`` and ``latency`` constraints read.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tryage._io import atomic_write_text
from tryage.collect.backends import ExpertSpec, build_backend, load_experts
from tryage.collect.calllog import CallKey, CallLog, CallRecord
from tryage.collect.prompts import PromptRow, load_prompts, prompts_from_records
from tryage._io import progress_bar
from tryage.collect.runner import PlannedCall, Runner, RunStats
from tryage.collect.scorers import DEFAULT_RUBRIC, Judge, Scorer, get_scorer
from tryage.errors import BudgetReachedError, ConfigurationError, QTableError, ScorerError
from tryage.experts import ExpertLibrary
from tryage.qtable import QTable

T = TypeVar("T")


@dataclass(frozen=True)
class DryRun:
    """What a run would do, without calling anything.

    Attributes:
        calls: Each call to make, with its estimated tokens and cost.
        cached: Calls already in the log (not made again).
        estimated_cost: Sum of the calls' estimated USD, the judge's included.
        judge_calls: Judge calls to make (``--scorer judge``): one per answer whose reply is not in the
            judge's log (answers not given yet count at the expert's expected output length).
        judge_cost: Their estimated USD.
    """

    calls: tuple[PlannedCall, ...]
    cached: int
    estimated_cost: float
    judge_calls: int = 0
    judge_cost: float = 0.0


@dataclass(frozen=True)
class CollectResult:
    """What a collection produced.

    Attributes:
        qtable: The Q-table (scores) of the prompts every expert answered.
        library: The experts with prices and measured mean cost and latency.
        records: The call record used for each (prompt, expert) in the table.
        made: Calls made by this run.
        cached: Calls found in the log instead.
        errors: Calls of this run that ended in an error.
        spent: USD spent by this run, the judge's calls included.
        incomplete: Ids of prompts left out because some expert has no answer (an error).
        out: The Q-table file, or ``None``.
        log: The call log.
        library_path: The expert library file, or ``None``.
        skipped_experts: Experts stopped after an authentication error, with the error.
    """

    qtable: QTable
    library: ExpertLibrary
    records: tuple[CallRecord, ...]
    made: int = 0
    cached: int = 0
    errors: int = 0
    spent: float = 0.0
    incomplete: tuple[str, ...] = ()
    out: Path | None = None
    log: Path | None = None
    library_path: Path | None = None
    skipped_experts: Mapping[str, str] = field(default_factory=dict)
    judge_spent: float = 0.0


def default_log_path(out: str | os.PathLike[str]) -> Path:
    """``q.jsonl`` → ``q.calls.jsonl``."""
    path = Path(out)
    return path.with_name(path.stem + ".calls.jsonl")


def judge_log_path(log: Path) -> Path:
    """``q.calls.jsonl`` → ``q.calls.judge.jsonl``: the judge's replies, reused by later runs."""
    return log.with_name(log.stem + ".judge.jsonl")


def default_library_path(out: str | os.PathLike[str]) -> Path:
    """``q.jsonl`` → ``q.experts.json``."""
    path = Path(out)
    return path.with_name(path.stem + ".experts.json")


def _rows(prompts: Any) -> list[PromptRow]:
    if isinstance(prompts, (str, os.PathLike)):
        return load_prompts(prompts)
    return prompts_from_records(prompts)


_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end on one event loop kept for the process, in a daemon thread.

    One loop, not ``asyncio.run`` per call: LangChain's OpenAI client caches its HTTP client per
    ``base_url``, bound to the loop that first used it, so a second ``asyncio.run`` would find it on
    a closed loop. The thread also makes :func:`collect` work inside a running loop (a notebook).
    """
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP.is_closed():
            _LOOP = asyncio.new_event_loop()
            threading.Thread(target=_LOOP.run_forever, name="tryage-collect", daemon=True).start()
        loop = _LOOP
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:  # Ctrl-C in the caller: stop the run too (logged calls stay logged)
        future.cancel()
        raise


def _check_scorer_fits(scorer: Scorer, specs: Sequence[ExpertSpec]) -> None:
    if scorer.reads == "loss":
        wrong = [s.name for s in specs if s.kind != "hf"]
        if wrong:
            raise ScorerError(f"scorer {scorer.name!r} reads the LM loss of 'hf' experts; {wrong} generate text: "
                              "score them with exact, numeric, choice, contains, regex or judge")
    else:
        wrong = [s.name for s in specs if s.kind == "hf"]
        if wrong:
            raise ScorerError(f"scorer {scorer.name!r} reads answers, but {wrong} are 'hf' experts, which only give "
                              "a loss: use --scorer lm-loss for them (collect them in a separate run)")


def collect(prompts: Any, experts: Any, *, scorer: str | Scorer | Any, out: str | os.PathLike[str] | None = None,
            log: str | os.PathLike[str] | None = None, library_out: str | os.PathLike[str] | None = None,
            budget: float | None = None, dry_run: bool = False, concurrency: int = 4, timeout: float | None = 60.0,
            retries: int = 3, progress: bool | None = None, pattern: str | None = None, judge: Any = None,
            rubric: str = DEFAULT_RUBRIC, retry_base: float = 0.5, backend: str = "local", address: str | None = None,
            workers: int = 1, num_cpus: int | None = None) -> CollectResult | DryRun:
    """Call every expert on every prompt, score the answers and write a Q-table.

    Args:
        prompts: A ``.jsonl``/``.csv`` file (see :mod:`tryage.collect.prompts`) or rows (dicts or strings).
        experts: An experts JSON file, a list of entries, or a mapping name → entry or Python object
            (see :mod:`tryage.collect.backends`).
        scorer: A scorer name (``exact``, ``numeric``, ``choice``, ``contains``, ``regex``,
            ``lm-loss``, ``judge``), a :class:`Scorer` or a callable ``f(answer, row) -> float``.
        out: The Q-table JSONL to write (``None``: return it only; then ``log`` is required).
        log: The call log (default: ``<out>.calls.jsonl``); calls in it are not made again.
        library_out: The expert library JSON (default: ``<out>.experts.json``).
        budget: USD this run may spend, the judge's calls included; it stops before a call would pass
            it (:class:`BudgetReachedError`, the calls made and the judge's replies stay in their logs).
            Every chat-model expert, and the judge, must then have its prices (0 for a free local model).
        dry_run: Return a :class:`DryRun` listing the calls and their estimated cost; call nothing.
        concurrency: Calls in flight per expert.
        timeout: Seconds per attempt.
        retries: Further attempts after a transient error (429, 5xx, timeout, connection).
        progress: Show a progress bar (``None``: when stderr is a terminal).
        pattern: The pattern of the ``regex`` scorer.
        judge: The ``judge`` scorer's model: an expert entry with its prices (``{"name": "judge",
            "model": "openai:gpt-4o-mini", "input_price": 0.15, "output_price": 0.6}`` or an
            :class:`ExpertSpec`), or a chat model / runnable (prices unknown). Its calls get this run's
            timeout, retries and budget.
        rubric: The judge's instructions.
        retry_base: Seconds before the first retry (doubled each time).
        backend: ``"local"`` (this process, async) or ``"ray"``: one Ray actor pool per expert makes
            the calls and this process logs them (see :mod:`tryage.collect.on_ray`, also for how
            the budget works with calls in flight on workers). ``"ray"`` takes ``model`` entries only.
        address: Ray cluster to join (``backend="ray"``); without it a local Ray instance starts.
        workers: Actors per expert (``backend="ray"``); each keeps ``concurrency`` calls in flight.
        num_cpus: CPUs of the local Ray instance started without ``address`` (default: all).
    """
    return _run_sync(acollect(prompts, experts, scorer=scorer, out=out, log=log, library_out=library_out,
                              budget=budget, dry_run=dry_run, concurrency=concurrency, timeout=timeout,
                              retries=retries, progress=progress, pattern=pattern, judge=judge, rubric=rubric,
                              retry_base=retry_base, backend=backend, address=address, workers=workers,
                              num_cpus=num_cpus))


async def acollect(prompts: Any, experts: Any, *, scorer: str | Scorer | Any, out: str | os.PathLike[str] | None = None,
                   log: str | os.PathLike[str] | None = None, library_out: str | os.PathLike[str] | None = None,
                   budget: float | None = None, dry_run: bool = False, concurrency: int = 4,
                   timeout: float | None = 60.0, retries: int = 3, progress: bool | None = None,
                   pattern: str | None = None, judge: Any = None, rubric: str = DEFAULT_RUBRIC,
                   retry_base: float = 0.5, backend: str = "local", address: str | None = None, workers: int = 1,
                   num_cpus: int | None = None) -> CollectResult | DryRun:
    """The async form of :func:`collect` (same arguments)."""
    _check_numbers(budget=budget, concurrency=concurrency, timeout=timeout, retries=retries)
    if backend not in ("local", "ray"):
        raise ConfigurationError(f"backend must be 'local' or 'ray', got {backend!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigurationError(f"workers must be a whole number >= 1, got {workers!r}")
    if backend == "local" and (address is not None or workers != 1 or num_cpus is not None):
        raise ConfigurationError("address, workers and num_cpus apply with backend='ray' only")
    rows = _rows(prompts)
    specs = load_experts(experts)
    if backend == "ray":
        from tryage.collect.on_ray import check_ray_experts

        check_ray_experts(specs)
    if out is None and log is None:
        raise ConfigurationError("give out= (the Q-table to write) or log= (the call log to keep answers in)")
    for what, path in (("out", out), ("log", log)):
        if path is not None and Path(path).is_dir():  # found before any paid call, not after
            raise ConfigurationError(f"{what}={str(path)!r} is a folder; {what} is a JSONL file to write")
    log_path = Path(log) if log is not None else default_log_path(out)  # type: ignore[arg-type]
    chosen = get_scorer(scorer, pattern=pattern, judge=judge, rubric=rubric, judge_log=judge_log_path(log_path))
    _check_scorer_fits(chosen, specs)
    chosen.check(rows)
    the_judge = _judge_of(chosen)
    _check_priced(specs, the_judge, budget)
    by_name = {s.name: s for s in specs}

    def pending(done: Mapping[CallKey, CallRecord]) -> list[tuple[PromptRow, ExpertSpec]]:
        return [(row, spec) for row in rows for spec in specs
                if not (r := done.get((row.id, spec.name, spec.settings_hash()))) or not r.ok]

    def observed(done: Mapping[CallKey, CallRecord]) -> dict[str, list[int]]:
        seen: dict[str, list[int]] = {}
        for record in done.values():
            if record.ok and record.output_tokens is not None:
                seen.setdefault(record.expert, []).append(record.output_tokens)
        return seen

    if dry_run:
        done = CallLog(log_path).latest()
        todo = pending(done)
        runner = Runner(by_name, {}, CallLog(log_path), observed_output_tokens=observed(done))
        calls = tuple(runner.plan(row, spec) for row, spec in todo)
        judge_calls, judge_cost = _judge_plan(the_judge, rows, specs, done, runner)
        return DryRun(calls, len(rows) * len(specs) - len(todo), sum(c.cost for c in calls) + judge_cost,
                      judge_calls, judge_cost)

    if the_judge is not None:
        the_judge.run_with()   # builds the judge's client now: a missing key fails before any paid call
    try:
        with CallLog(log_path) as call_log:
            done = call_log.latest()
            todo = pending(done)
            settings = {"concurrency": concurrency, "timeout": timeout, "retries": retries, "retry_base": retry_base,
                        "budget": budget, "progress": progress}
            if not todo:
                stats = RunStats()
            elif backend == "ray":
                from tryage.collect.on_ray import run_on_ray

                stats = await asyncio.to_thread(run_on_ray, todo, call_log, observed=observed(done), workers=workers,
                                                address=address, num_cpus=num_cpus, **settings)
            else:
                stats = await _run_locally(todo, by_name, call_log, observed(done), settings)
        if stats.budget_reached:
            raise BudgetReachedError(float(budget), stats.spent, stats.not_made)  # type: ignore[arg-type]
        latest = {**done, **{r.key: r for r in stats.records}}
        picked = {(row.id, spec.name): latest.get((row.id, spec.name, spec.settings_hash())) for row in rows for spec in specs}
        if the_judge is not None:
            the_judge.run_with(budget=None if budget is None else max(0.0, budget - stats.spent), timeout=timeout,
                               retries=retries, retry_base=retry_base)
        table, library, used, incomplete, records = await _assemble(rows, specs, picked, chosen, concurrency, progress,
                                                                    budget=budget, spent_before=stats.spent)
        judge_spent = 0.0 if the_judge is None else the_judge.spent
        result = CollectResult(table, library, used, made=stats.made, cached=len(rows) * len(specs) - len(todo),
                               errors=stats.errors, spent=stats.spent + judge_spent, incomplete=incomplete, log=log_path,
                               skipped_experts=dict(stats.skipped_experts), judge_spent=judge_spent)
    finally:
        if the_judge is not None:
            await the_judge.aclose()
    return _write(result, records, out, library_out)


def score(log: str | os.PathLike[str], prompts: Any, *, scorer: str | Scorer | Any,
          out: str | os.PathLike[str] | None = None, experts: Any = None,
          library_out: str | os.PathLike[str] | None = None, pattern: str | None = None, judge: Any = None,
          rubric: str = DEFAULT_RUBRIC, concurrency: int = 4, budget: float | None = None,
          timeout: float | None = 60.0, retries: int = 3, retry_base: float = 0.5,
          progress: bool | None = None) -> CollectResult:
    """Re-score the answers in a call log and write a Q-table, calling no expert model.

    Args:
        log: The call log of an earlier :func:`collect`.
        prompts: The prompts (file or rows); their references are what is scored against.
        scorer: As in :func:`collect`.
        out: The Q-table JSONL to write (``None``: return it only).
        experts: The experts file/entries: keeps their columns, in their order, at their current
            settings. Without it, every expert in the log, in name order, with its latest answer per prompt.
        library_out: The expert library JSON (default: ``<out>.experts.json``).
        pattern: The ``regex`` scorer's pattern.
        judge: The ``judge`` scorer's model (as in :func:`collect`).
        rubric: The judge's instructions.
        concurrency: Judge calls in flight.
        budget: USD the judge's calls may cost (:class:`BudgetReachedError` before one would pass it;
            the replies so far stay in the judge's log). Needs the judge's prices.
        timeout: Seconds per judge call attempt.
        retries: Further attempts after a transient error.
        retry_base: Seconds before the first retry (doubled each time).
        progress: Show the judge's progress bar (``None``: when stderr is a terminal).
    """
    _check_numbers(budget=budget, concurrency=concurrency, timeout=timeout, retries=retries)
    return _run_sync(_ascore(log, prompts, scorer=scorer, out=out, experts=experts, library_out=library_out,
                             pattern=pattern, judge=judge, rubric=rubric, concurrency=concurrency, budget=budget,
                             timeout=timeout, retries=retries, retry_base=retry_base, progress=progress))


async def _ascore(log: Any, prompts: Any, *, scorer: Any, out: Any, experts: Any, library_out: Any,
                  pattern: str | None, judge: Any, rubric: str, concurrency: int, budget: float | None,
                  timeout: float | None, retries: int, retry_base: float, progress: bool | None) -> CollectResult:
    rows = _rows(prompts)
    chosen = get_scorer(scorer, pattern=pattern, judge=judge, rubric=rubric, judge_log=judge_log_path(Path(log)))
    chosen.check(rows)
    the_judge = _judge_of(chosen)
    _check_priced((), the_judge, budget)
    call_log = CallLog(log)
    if call_log.path.is_dir():
        raise ConfigurationError(f"log={str(log)!r} is a folder; a call log is the JSONL file tryage collect wrote")
    if not call_log.path.is_file():
        from tryage.errors import TryageFileNotFoundError

        raise TryageFileNotFoundError(f"call log not found: {call_log.path}")
    records = call_log.records()
    if experts is not None:
        specs = load_experts(experts)
        latest = call_log.latest()
        picked = {(row.id, s.name): latest.get((row.id, s.name, s.settings_hash())) for row in rows for s in specs}
    else:
        names = sorted({r.expert for r in records})   # in name order: the log's order is whichever call ended first
        if not names:
            raise QTableError(f"the call log {call_log.path} holds no calls")
        specs = [ExpertSpec(n, runnable=_Logged()) for n in names]
        last: dict[tuple[str, str], CallRecord] = {}
        for record in records:
            key = (record.prompt_id, record.expert)
            if record.ok or key not in last or not last[key].ok:
                last[key] = record
        picked = {(row.id, n): last.get((row.id, n)) for row in rows for n in names}
    if the_judge is not None:
        the_judge.run_with(budget=budget, timeout=timeout, retries=retries, retry_base=retry_base)
    try:
        table, library, used, incomplete, records = await _assemble(rows, specs, picked, chosen, concurrency, progress,
                                                                    budget=budget)
    finally:
        if the_judge is not None:
            await the_judge.aclose()
    spent = 0.0 if the_judge is None else the_judge.spent
    return _write(CollectResult(table, library, used, cached=len(used), incomplete=incomplete, log=call_log.path,
                                spent=spent, judge_spent=spent), records, out, library_out)


class _Logged:
    """Stands for an expert known only from the call log (``tryage score`` without ``--experts``)."""

    def __call__(self, prompt: str) -> str:  # pragma: no cover - never called
        raise RuntimeError("an expert read from a call log cannot be called")


def _check_numbers(*, budget: float | None, concurrency: int, timeout: float | None, retries: int) -> None:
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget < 0):
        raise ConfigurationError(f"budget must be a finite number of USD >= 0 (or None: no limit), got {budget!r}")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise ConfigurationError(f"timeout must be a finite number of seconds > 0 (or None: no limit), got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError(f"retries must be a whole number >= 0, got {retries!r}")


async def _run_locally(todo: Sequence[tuple[PromptRow, ExpertSpec]], by_name: Mapping[str, ExpertSpec],
                       call_log: CallLog, observed: Mapping[str, Sequence[int]], settings: Mapping[str, Any]) -> RunStats:
    """Make the calls of ``todo`` in this process, logging each; the backends' clients are closed after."""
    backends = {name: build_backend(by_name[name]) for name in dict.fromkeys(s.name for _, s in todo)}
    runner = Runner(by_name, backends, call_log, observed_output_tokens=observed, **settings)
    try:
        return await runner.run(todo)
    finally:
        for opened in backends.values():
            await opened.aclose()


def _judge_of(scorer: Scorer) -> Judge | None:
    return scorer.fn if isinstance(scorer.fn, Judge) else None


def _check_priced(specs: Sequence[ExpertSpec], judge: Judge | None, budget: float | None) -> None:
    """A budget must count every paid call: refuse chat models (API experts, the judge) of unknown price.

    Local experts (``hf``) and plain callables count as free."""
    if budget is None:
        return
    unpriced = [s.name for s in specs if (s.kind == "chat" or hasattr(s.runnable, "ainvoke"))
                and (s.input_price is None or s.output_price is None)]
    if unpriced:
        raise ConfigurationError(f"a budget counts every call, but expert(s) {', '.join(map(repr, unpriced))} have no "
                                 "price: give their input_price and output_price (USD per 1M tokens, 0 for a free "
                                 "local model)")
    if judge is not None and not judge.priced:
        raise ConfigurationError("a budget counts the judge's calls too, but the judge's prices are unknown: give them "
                                 "(--judge-input-price/--judge-output-price, USD per 1M tokens, 0 for a free local judge; "
                                 "in Python judge={'name': 'judge', 'model': ..., 'input_price': ..., 'output_price': ...})")


def _judge_plan(judge: Judge | None, rows: Sequence[PromptRow], specs: Sequence[ExpertSpec],
                done: Mapping[CallKey, CallRecord], runner: Runner) -> tuple[int, float]:
    """Judge calls a run would make and their estimated USD (answers not given yet: at the expected length)."""
    if judge is None:
        return 0, 0.0
    asked: set[str] = set()          # equal questions cost one call
    placeholders: list[str] = []     # answers not given yet: their expected length (3 bytes a token)
    for row in rows:
        for spec in specs:
            record = done.get((row.id, spec.name, spec.settings_hash()))
            if record is not None and record.ok and record.answer is not None:
                if not judge.cached(record.answer, row):
                    asked.add(judge.question(record.answer, row))
            else:
                placeholders.append(judge.question("x" * 3 * runner.expected_output_tokens(spec), row))
    texts = [*asked, *placeholders]
    return len(texts), sum(judge.plan(text).cost for text in texts)


async def _assemble(rows: Sequence[PromptRow], specs: Sequence[ExpertSpec],
                    picked: Mapping[tuple[str, str], CallRecord | None], scorer: Scorer, concurrency: int,
                    progress: bool | None = False, budget: float | None = None, spent_before: float = 0.0,
                    ) -> tuple[QTable, ExpertLibrary, tuple[CallRecord, ...], tuple[str, ...], list[dict[str, Any]]]:
    """Score the complete rows (the judge within what ``budget`` has left after ``spent_before``) → Q-table."""
    complete = [row for row in rows if all((r := picked[(row.id, s.name)]) is not None and r.ok for s in specs)]
    incomplete = tuple(row.id for row in rows if row not in complete)
    if not complete:
        errors = [r.error for r in picked.values() if r is not None and r.error]
        hint = f"; e.g. {errors[0]}" if errors else ""
        raise QTableError(f"no prompt has an answer from every expert ({len(errors)} call(s) failed{hint}); "
                          "see the call log")
    gate = asyncio.Semaphore(concurrency)
    judge = _judge_of(scorer)   # the one scorer that takes time (and money): it shows a bar
    bar = progress_bar(len(complete) * len(specs), "judge", enabled=progress if judge is not None else False, unit="call")

    async def one(row: PromptRow, spec: ExpertSpec) -> float:
        async with gate:
            try:
                return await scorer.score(picked[(row.id, spec.name)], row)
            finally:
                bar.update(1)
                if judge is not None:
                    bar.set_postfix_str(f"spent=${judge.spent:.4f}", refresh=False)

    try:
        values = await asyncio.gather(*(one(row, spec) for row in complete for spec in specs), return_exceptions=True)
    finally:
        bar.close()
    failed = [v for v in values if isinstance(v, BaseException)]
    if failed:   # every other score was still given (and a judge's reply logged): a rerun pays for none again
        held = [f for f in failed if isinstance(f, BudgetReachedError)]
        if held:   # only the judge spends here: told with the whole run's spend
            raise BudgetReachedError(float(budget), spent_before + judge.spent, len(held))  # type: ignore[arg-type, union-attr]
        raise failed[0]
    it = iter(values)
    records = []
    used: list[CallRecord] = []
    for row in complete:
        calls = [picked[(row.id, s.name)] for s in specs]
        used.extend(c for c in calls if c is not None)
        record: dict[str, Any] = {"id": row.id, "prompt": row.prompt,
                                  "scores": {s.name: next(it) for s in specs},
                                  "cost": {s.name: c.cost for s, c in zip(specs, calls)},  # type: ignore[union-attr]
                                  "latency_s": {s.name: round(c.latency_s, 6) for s, c in zip(specs, calls)},  # type: ignore[union-attr]
                                  "output_tokens": {s.name: c.output_tokens for s, c in zip(specs, calls)}}  # type: ignore[union-attr]
        for key, value in (("reference", row.reference), ("choices", list(row.choices) or None), ("task", row.task)):
            if value is not None:
                record[key] = value
        records.append({**row.extras, **record})
    table = QTable.from_records(records, experts=[s.name for s in specs])
    library = ExpertLibrary(spec.to_expert(**_measured(spec.name, used)) if not isinstance(spec.runnable, _Logged)
                            else _bare_expert(spec.name, used) for spec in specs)
    return table, library, tuple(used), incomplete, records


def _measured(name: str, used: Iterable[CallRecord]) -> dict[str, float | None]:
    mine = [r for r in used if r.expert == name]
    return {"measured_cost": statistics.fmean(r.cost for r in mine) if mine else None,
            "measured_latency_s": statistics.fmean(r.latency_s for r in mine) if mine else None}


def _bare_expert(name: str, used: Iterable[CallRecord]) -> Any:
    from tryage.experts import Expert

    return Expert(name=name, **_measured(name, used))


def _write(result: CollectResult, records: Sequence[Mapping[str, Any]], out: Any, library_out: Any) -> CollectResult:
    if out is None:
        return result
    out_path = Path(out)
    atomic_write_text(out_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    library_path = Path(library_out) if library_out is not None else default_library_path(out_path)
    result.library.to_json(library_path)
    return CollectResult(**{**result.__dict__, "out": out_path, "library_path": library_path})


__all__ = ["CollectResult", "DryRun", "acollect", "collect", "default_library_path", "default_log_path", "score"]
