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
import os
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tryage._io import atomic_write_text, check_distinct_files
from tryage.collect.assemble import Logged, assemble, judge_of
from tryage.collect.backends import ExpertSpec, build_backend, load_experts
from tryage.collect.budget import Budget
from tryage.collect.calllog import CallKey, CallLog, CallRecord, logged, text_hash
from tryage.collect.entries import discover_metadata
from tryage.collect.estimate import CostEstimator, PlannedCall
from tryage.collect.judge import DEFAULT_RUBRIC, Judge, judge_log_path
from tryage.collect.prompts import PromptRow, load_prompts, prompts_from_records
from tryage.collect.retry import RetryPolicy
from tryage.collect.runner import Runner, RunStats
from tryage.collect.scorers import Scorer, for_rows, get_scorer
from tryage.errors import ConfigurationError, QTableError, ScorerError, TryageFileNotFoundError, check_scalar
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


def default_library_path(out: str | os.PathLike[str]) -> Path:
    """``q.jsonl`` → ``q.experts.json``."""
    path = Path(out)
    return path.with_name(path.stem + ".experts.json")


def _rows(prompts: Any) -> list[PromptRow]:
    if isinstance(prompts, (str, os.PathLike)):
        return load_prompts(prompts)
    if isinstance(prompts, (bytes, Mapping)) or not isinstance(prompts, Iterable):
        raise ConfigurationError(f"prompts must be a .jsonl/.csv file or a list of rows (dicts or strings), got {type(prompts).__name__}")
    return prompts_from_records(prompts)


def _check_files(*, out: Any, log: Any, log_written: bool, library_out: Any, judge: Judge | None, prompts: Any,
                 experts: Any) -> None:
    """No file argument names a file another one writes (same path, symlink or hard link): before any write."""
    library = None if out is None else library_out if library_out is not None else default_library_path(out)
    written = {"out": out, "library_out": library, "the judge's log": None if judge is None else judge_log_path(Path(log))}
    read = {name: path for name, path in (("prompts", prompts), ("experts", experts)) if isinstance(path, (str, os.PathLike))}
    (written if log_written else read)["log"] = log
    check_distinct_files(written, read)


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
                              "score them with exact, numeric, choice, contains, yes-no, regex or judge")
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
            workers: int = 1, num_cpus: int | None = None, scorer_map: Mapping[str, str] | None = None,
            ) -> CollectResult | DryRun:
    """Call every expert on every prompt, score the answers and write a Q-table.

    Args:
        prompts: A ``.jsonl``/``.csv`` file (see :mod:`tryage.collect.prompts`) or rows (dicts or strings).
        experts: An experts JSON file, a list of entries, or a mapping name → entry or Python object
            (see :mod:`tryage.collect.backends`).
        scorer: A scorer name (``exact``, ``numeric``, ``choice``, ``contains``, ``yes-no``, ``regex``,
            ``lm-loss``, ``judge``, ...), a :class:`Scorer` or a callable ``f(answer, row) -> float``: the
            scorer of the prompts that name none (a row's ``"scorer"`` field, or its task in ``scorer_map``).
        scorer_map: ``{task: scorer name}``: the scorer of each task's prompts (see
            :func:`~tryage.collect.scorers.for_rows`).
        out: The Q-table JSONL to write (``None``: return it only; then ``log`` is required).
        log: The call log (default: ``<out>.calls.jsonl``); calls in it are not made again.
        library_out: The expert library JSON (default: ``<out>.experts.json``).
        budget: USD this run may spend, the judge's calls included (one
            :class:`~tryage.collect.budget.Budget` ledger, whose doc states the rule): it stops before a
            call would pass it (:class:`BudgetReachedError`; the calls made and the judge's replies stay
            in their logs).
            Every chat-model expert, and the judge, must then have its prices (0 for a free local model).
        dry_run: Return a :class:`DryRun` listing the calls and their estimated cost; call nothing.
        concurrency: Calls in flight per expert.
        timeout: Seconds per attempt.
        retries: Further attempts after a transient error (429, 5xx, timeout, connection).
        progress: Show a progress bar (``None``: when stderr is a terminal).
        pattern: The pattern of the ``regex`` scorer.
        judge: The ``judge`` scorer's model: an expert entry with its prices (``{"name": "judge",
            "model": "openai:gpt-4o-mini", "input_cost": 0.15, "output_cost": 0.6}`` or an
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
                              num_cpus=num_cpus, scorer_map=scorer_map))


async def acollect(prompts: Any, experts: Any, *, scorer: str | Scorer | Any, out: str | os.PathLike[str] | None = None,
                   log: str | os.PathLike[str] | None = None, library_out: str | os.PathLike[str] | None = None,
                   budget: float | None = None, dry_run: bool = False, concurrency: int = 4,
                   timeout: float | None = 60.0, retries: int = 3, progress: bool | None = None,
                   pattern: str | None = None, judge: Any = None, rubric: str = DEFAULT_RUBRIC,
                   retry_base: float = 0.5, backend: str = "local", address: str | None = None, workers: int = 1,
                   num_cpus: int | None = None, scorer_map: Mapping[str, str] | None = None) -> CollectResult | DryRun:
    """The async form of :func:`collect` (same arguments): plan → call → score → write."""
    concurrency, timeout, retries = _check_numbers(budget=budget, concurrency=concurrency, timeout=timeout,
                                                   retries=retries, retry_base=retry_base)
    run = _plan(prompts, experts, scorer=scorer, out=out, log=log, library_out=library_out, budget=budget,
                pattern=pattern, judge=judge, rubric=rubric, backend=backend, address=address, workers=workers,
                num_cpus=num_cpus, scorer_map=scorer_map)
    if dry_run:
        return run.dry_run()
    settings = {"concurrency": concurrency, "timeout": timeout, "retries": retries, "retry_base": retry_base,
                "progress": progress}
    try:
        if run.judge is not None:   # builds the judge's client now: a missing key fails before any paid call
            run.judge.run_with(budget=run.budget, timeout=timeout, retries=retries, retry_base=retry_base)
        done, stats, todo = await _call(run, settings, backend=backend, address=address, workers=workers,
                                        num_cpus=num_cpus)
        table, library, used, incomplete, records = await assemble(
            run.rows, run.specs, run.picked({**done, **{r.key: r for r in stats.records}}), run.scorer,
            concurrency=concurrency, progress=progress, budget=run.budget)
    finally:
        if run.judge is not None:
            await run.judge.aclose()
    judge_spent = 0.0 if run.judge is None else run.judge.spent
    result = CollectResult(table, library, used, made=stats.made, cached=run.size - todo, errors=stats.errors,
                           spent=run.budget.spent, incomplete=incomplete, log=run.log_path,
                           skipped_experts=dict(stats.skipped_experts), judge_spent=judge_spent)
    return _write(result, records, out, library_out)


@dataclass
class _Plan:
    """What a collection works on, checked and loaded before any call: the plan step."""

    rows: list[PromptRow]
    specs: list[ExpertSpec]
    log_path: Path
    scorer: Scorer
    judge: Judge | None
    budget: Budget

    @property
    def size(self) -> int:
        """Calls the whole table needs: prompts × experts."""
        return len(self.rows) * len(self.specs)

    def pending(self, done: Mapping[CallKey, CallRecord]) -> list[tuple[PromptRow, ExpertSpec]]:
        """The calls whose answer is not in the log (``done``: its latest record of each key)."""
        return [(row, spec) for row in self.rows for spec in self.specs
                if not (r := logged(done, row, spec)) or not r.ok]

    def picked(self, latest: Mapping[CallKey, CallRecord]) -> dict[tuple[str, str], CallRecord | None]:
        """The record of each (prompt id, expert) at the experts' current settings and the prompt's current text."""
        return {(row.id, spec.name): logged(latest, row, spec) for row in self.rows for spec in self.specs}

    def dry_run(self) -> DryRun:
        """The calls a run would make and what they would cost (the judge's too); calls nothing."""
        done = CallLog(self.log_path).latest()
        todo = self.pending(done)
        costs = CostEstimator(_observed(done))
        calls = tuple(costs.plan(row, spec) for row, spec in todo)
        judge_calls, judge_cost = (0, 0.0) if self.judge is None else self.judge.estimate(self.rows, self.specs,
                                                                                          done, costs)
        return DryRun(calls, self.size - len(todo), sum(c.cost for c in calls) + judge_cost, judge_calls, judge_cost)


def _plan(prompts: Any, experts: Any, *, scorer: Any, out: Any, log: Any, library_out: Any, budget: float | None,
          pattern: str | None, judge: Any, rubric: str, backend: str, address: str | None, workers: int,
          num_cpus: int | None, scorer_map: Mapping[str, str] | None) -> _Plan:
    """Check the arguments and load the prompts, experts and scorer: every refusal comes before any call."""
    if backend not in ("local", "ray"):
        raise ConfigurationError(f"backend must be 'local' or 'ray', got {backend!r}")
    check_scalar(workers, "workers", kind=int, low=1)
    if backend == "local" and (address is not None or workers != 1 or num_cpus is not None):
        raise ConfigurationError("address, workers and num_cpus apply with backend='ray' only")
    rows = _rows(prompts)
    if isinstance(experts, (bytes, ExpertSpec)) or not isinstance(experts, (str, os.PathLike, Iterable)):
        raise ConfigurationError("experts must be an experts JSON file, a list of entries or a mapping name -> entry or "
                                 f"Python object, got {type(experts).__name__}")
    specs = discover_metadata(load_experts(experts))
    if backend == "ray":
        from tryage.collect.on_ray import check_ray_experts

        check_ray_experts(specs)
    if out is None and log is None:
        raise ConfigurationError("give out= (the Q-table to write) or log= (the call log to keep answers in)")
    for what, path in (("out", out), ("log", log)):
        if path is not None and Path(path).is_dir():  # found before any paid call, not after
            raise ConfigurationError(f"{what}={str(path)!r} is a folder; {what} is a JSONL file to write")
    log_path = Path(log) if log is not None else default_log_path(out)
    options = {"pattern": pattern, "judge": judge, "rubric": rubric, "judge_log": judge_log_path(log_path)}
    chosen = for_rows(get_scorer(scorer, **options), rows, scorer_map, **options)
    _check_scorer_fits(chosen, specs)
    chosen.check(rows)
    the_judge = judge_of(chosen)
    _check_priced(specs, the_judge, budget)
    _check_files(out=out, log=log_path, log_written=True, library_out=library_out, judge=the_judge, prompts=prompts, experts=experts)
    return _Plan(rows, specs, log_path, chosen, the_judge, Budget(budget))


async def _call(run: _Plan, settings: Mapping[str, Any], *, backend: str, address: str | None, workers: int,
                num_cpus: int | None) -> tuple[dict[CallKey, CallRecord], RunStats, int]:
    """The call step: make the calls the log lacks, logging each, under the run's budget.

    Returns the log's records before the run, what the run did and how many calls it had to make;
    :class:`BudgetReachedError` (after the log is closed) when a call did not fit.
    """
    with CallLog(run.log_path) as call_log:
        done = call_log.latest()    # read under the lock: no other run adds to it meanwhile
        todo = run.pending(done)
        observed = _observed(done)
        if not todo:
            stats = RunStats()
        elif backend == "ray":
            from tryage.collect.on_ray import run_on_ray

            stats = await asyncio.to_thread(run_on_ray, todo, call_log, observed=observed, workers=workers,
                                            address=address, num_cpus=num_cpus, budget=run.budget, **settings)
        else:
            stats = await _run_locally(todo, {s.name: s for s in run.specs}, call_log, CostEstimator(observed),
                                       run.budget, settings)
    run.budget.check(remaining_calls=stats.not_made)
    return done, stats, len(todo)


def score(log: str | os.PathLike[str], prompts: Any, *, scorer: str | Scorer | Any,
          out: str | os.PathLike[str] | None = None, experts: Any = None,
          library_out: str | os.PathLike[str] | None = None, pattern: str | None = None, judge: Any = None,
          rubric: str = DEFAULT_RUBRIC, concurrency: int = 4, budget: float | None = None,
          timeout: float | None = 60.0, retries: int = 3, retry_base: float = 0.5,
          progress: bool | None = None, scorer_map: Mapping[str, str] | None = None) -> CollectResult:
    """Re-score the answers in a call log and write a Q-table, calling no expert model.

    Args:
        log: The call log of an earlier :func:`collect`.
        prompts: The prompts (file or rows); their references are what is scored against.
        scorer: As in :func:`collect`.
        scorer_map: As in :func:`collect`.
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
    concurrency, timeout, retries = _check_numbers(budget=budget, concurrency=concurrency, timeout=timeout,
                                                   retries=retries, retry_base=retry_base)
    return _run_sync(_ascore(log, prompts, scorer=scorer, out=out, experts=experts, library_out=library_out,
                             pattern=pattern, judge=judge, rubric=rubric, concurrency=concurrency, budget=budget,
                             timeout=timeout, retries=retries, retry_base=retry_base, progress=progress,
                             scorer_map=scorer_map))


async def _ascore(log: Any, prompts: Any, *, scorer: Any, out: Any, experts: Any, library_out: Any,
                  pattern: str | None, judge: Any, rubric: str, concurrency: int, budget: float | None,
                  timeout: float | None, retries: int, retry_base: float, progress: bool | None,
                  scorer_map: Mapping[str, str] | None) -> CollectResult:
    rows = _rows(prompts)
    options = {"pattern": pattern, "judge": judge, "rubric": rubric, "judge_log": judge_log_path(Path(log))}
    chosen = for_rows(get_scorer(scorer, **options), rows, scorer_map, **options)
    chosen.check(rows)
    the_judge = judge_of(chosen)
    _check_priced((), the_judge, budget)
    call_log = CallLog(log)
    if call_log.path.is_dir():
        raise ConfigurationError(f"log={str(log)!r} is a folder; a call log is the JSONL file tryage collect wrote")
    if not call_log.path.is_file():
        raise TryageFileNotFoundError(f"call log not found: {call_log.path}")
    _check_files(out=out, log=call_log.path, log_written=False, library_out=library_out, judge=the_judge, prompts=prompts, experts=experts)
    specs, picked = _logged_answers(call_log, rows, experts)
    ledger = Budget(budget)
    try:
        if the_judge is not None:
            the_judge.run_with(budget=ledger, timeout=timeout, retries=retries, retry_base=retry_base)
        table, library, used, incomplete, records = await assemble(rows, specs, picked, chosen, concurrency=concurrency,
                                                                   progress=progress, budget=ledger)
    finally:
        if the_judge is not None:
            await the_judge.aclose()
    return _write(CollectResult(table, library, used, cached=len(used), incomplete=incomplete, log=call_log.path,
                                spent=ledger.spent, judge_spent=ledger.spent), records, out, library_out)


def _logged_answers(call_log: CallLog, rows: Sequence[PromptRow], experts: Any,
                    ) -> tuple[list[ExpertSpec], dict[tuple[str, str], CallRecord | None]]:
    """The experts to score and the record picked for each (prompt id, expert) from the call log."""
    if experts is not None:
        specs = load_experts(experts)
        latest = call_log.latest()
        return specs, {(row.id, s.name): logged(latest, row, s) for row in rows for s in specs}
    texts = {row.id: (text_hash(row.prompt), text_hash(f"{row.prompt} {row.reference}")) for row in rows}
    records = call_log.records()
    names = sorted({r.expert for r in records})   # in name order: the log's order is whichever call ended first
    if not names:
        raise QTableError(f"the call log {call_log.path} holds no calls")
    last: dict[tuple[str, str], CallRecord] = {}
    for record in records:
        if record.prompt_id in texts and not record.read(*texts[record.prompt_id]):
            continue   # an answer to an earlier text of the prompt
        key = (record.prompt_id, record.expert)
        if record.ok or key not in last or not last[key].ok:
            last[key] = record
    return ([ExpertSpec(n, runnable=Logged()) for n in names],
            {(row.id, n): last.get((row.id, n)) for row in rows for n in names})


def _check_numbers(*, budget: float | None, concurrency: int, timeout: float | None, retries: int,
                   retry_base: float) -> tuple[int, float | None, int]:
    """The run's numbers checked (``budget`` is checked again by its :class:`Budget`, ``retries`` and
    ``retry_base`` by the :class:`RetryPolicy` they make): concurrency, timeout, retries as their kinds."""
    if budget is not None:
        check_scalar(budget, "budget", low=0.0)
    policy = RetryPolicy(retries, retry_base)
    return (int(check_scalar(concurrency, "concurrency", kind=int, low=1)),
            None if timeout is None else float(check_scalar(timeout, "timeout", low=0.0, low_open=True)),
            policy.retries)


def _observed(done: Mapping[CallKey, CallRecord]) -> dict[str, list[int]]:
    """Output tokens of the logged answers, by expert: what the cost estimates learn from."""
    seen: dict[str, list[int]] = {}
    for record in done.values():
        if record.ok and record.output_tokens is not None:
            seen.setdefault(record.expert, []).append(record.output_tokens)
    return seen


async def _run_locally(todo: Sequence[tuple[PromptRow, ExpertSpec]], by_name: Mapping[str, ExpertSpec],
                       call_log: CallLog, costs: CostEstimator, budget: Budget,
                       settings: Mapping[str, Any]) -> RunStats:
    """Make the calls of ``todo`` in this process, logging each; the backends' clients are closed after."""
    backends = {name: build_backend(by_name[name]) for name in dict.fromkeys(s.name for _, s in todo)}
    runner = Runner(by_name, backends, call_log, estimator=costs, budget=budget, **settings)
    try:
        return await runner.run(todo)
    finally:
        for opened in backends.values():
            await opened.aclose()


def _check_priced(specs: Sequence[ExpertSpec], judge: Judge | None, budget: float | None) -> None:
    """A budget must count every paid call: refuse chat models (API experts, the judge) of unknown price.

    Local experts (``hf``) and plain callables count as free."""
    if budget is None:
        return
    unpriced = [s.name for s in specs if (s.kind == "chat" or hasattr(s.runnable, "ainvoke"))
                and (s.input_cost is None or s.output_cost is None)]
    if unpriced:
        raise ConfigurationError(f"a budget counts every call, but expert(s) {', '.join(map(repr, unpriced))} have no "
                                 "price: give their input_cost and output_cost (USD per 1M tokens, 0 for a free "
                                 "local model)")
    if judge is not None and not judge.priced:
        raise ConfigurationError("a budget counts the judge's calls too, but the judge's prices are unknown: give them "
                                 "(--judge-input-price/--judge-output-price, USD per 1M tokens, 0 for a free local judge; "
                                 "in Python judge={'name': 'judge', 'model': ..., 'input_cost': ..., 'output_cost': ...})")


def _write(result: CollectResult, records: Sequence[Mapping[str, Any]], out: Any, library_out: Any) -> CollectResult:
    if out is None:
        return result
    out_path = Path(out)
    atomic_write_text(out_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    library_path = Path(library_out) if library_out is not None else default_library_path(out_path)
    result.library.to_json(library_path)
    return CollectResult(**{**result.__dict__, "out": out_path, "library_path": library_path})


__all__ = ["CollectResult", "DryRun", "acollect", "collect", "default_library_path", "default_log_path", "score"]
