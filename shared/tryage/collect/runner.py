"""The async engine of ``tryage collect``: every (prompt, expert) call, safely.

* **Bounded concurrency per expert**: ``concurrency`` workers per expert (an entry's own
  ``concurrency`` wins), so one slow model never starves the others.
* **Retries** by the one :class:`~tryage.collect.retry.RetryPolicy` (backoff with jitter on transient
  errors, ``Retry-After`` obeyed, none on permanent errors). After a 401/403 the expert's remaining
  calls are skipped: every one of them would fail the same way.
* **Rate limits** per expert with LangChain's ``InMemoryRateLimiter`` (one token per attempt).
* **Per-call timeout** (``asyncio.wait_for``).
* **Budget**: before each attempt the call's estimated cost
  (:class:`~tryage.collect.estimate.CostEstimator`) is reserved in the run's
  :class:`~tryage.collect.budget.Budget`, which holds the rule: a call that does not fit is not made,
  and no further call starts. A call that timed out is charged its estimate (the provider may have
  billed it). A provider's ``usage`` is checked before it is billed: a count that is not a whole
  number >= 0 (negative, fractional, NaN, text) makes the call a :class:`~tryage.errors.ProviderUsageError`
  naming the expert, charged at its estimate (the provider may have billed it) and logged as an error;
  a count the provider did not give is estimated (input: the prompt's bytes / 3; output: the answer's
  bytes / 3) and the record keeps ``None`` for it.
* A server whose 429 asks for a longer wait than the retry policy's (``Retry-After: 3600``) stops
  that expert's calls at once, the server's time in the error (as after a 401/403): a rerun resumes.
  So does a server that refuses the connection (or a host that does not resolve) through every retry of
  a call: the expert's other calls are not made, so a server that is down fails in seconds, not after
  one retry cycle per prompt; a timeout is not taken for a down server.
* **Limits**: every answer's output tokens are checked against the expert's ``max_tokens``; an
  expert whose server ignores it is warned about once (:class:`~tryage.errors.LimitIgnoredWarning`),
  its next calls are estimated at its longest answer, and the budget holds the excess of each call
  past its estimate (:class:`~tryage.collect.budget.Budget`'s ``overrun``).
* Each finished call is appended to the :class:`~tryage.collect.calllog.CallLog` at once.
* A progress bar (tqdm) shows calls done, errors, spend and ETA; it is off when stderr is not a
  terminal.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tryage._io import progress_bar
from tryage.collect.backends import Backend, ExpertSpec
from tryage.collect.budget import Budget
from tryage.collect.calllog import CallLog, CallRecord, input_hash
from tryage.collect.estimate import (DEFAULT_OUTPUT_TOKENS, CostEstimator, PlannedCall, estimate_tokens, price,
                                     usable_tokens)
from tryage.collect.retry import AUTH_STATUS, RetryPolicy, is_timeout, is_transient, retry_after, status_of
from tryage.errors import BudgetReachedError, ExpertUnreachableError, LimitIgnoredWarning, ProviderUsageError


@dataclass
class RunStats:
    """What a run did.

    Attributes:
        made: Calls finished and logged now (answers and final errors).
        errors: Of those, how many ended in an error.
        spent: USD this runner's calls added to the run's budget ledger (timeouts at their estimate).
        budget_reached: A call was held back because it would pass the budget.
        not_made: Calls not made (budget, or an expert skipped after a 401/403 or a refused connection).
        skipped_experts: Experts whose calls stopped after an authentication error, a long Retry-After, or a
            server that refused the connection (or whose host does not resolve) through every retry, with the error.
        limits_ignored: Experts that answered past their ``max_tokens``, with their longest answer (tokens).
        records: The records logged now.
    """

    made: int = 0
    errors: int = 0
    spent: float = 0.0
    budget_reached: bool = False
    not_made: int = 0
    skipped_experts: dict[str, str] = field(default_factory=dict)
    limits_ignored: dict[str, int] = field(default_factory=dict)
    records: list[CallRecord] = field(default_factory=list)


class _Skipped(Exception):
    """The expert was skipped after a 401/403 (raised before an attempt; never retried)."""


@dataclass
class _Attempts:
    """What the last attempt of one call did (for the record of a call that failed for good)."""

    number: int = 0
    latency: float = 0.0
    estimate: float = 0.0
    billed: float = 0.0   #: what a failed attempt was charged (its estimate when the provider may have billed it)


class Runner:
    """Runs calls for a set of experts; see the module doc.

    Args:
        specs: Expert entries by name.
        backends: The backend of each expert that has calls to make.
        log: An open :class:`CallLog` (``None`` when only :meth:`call` is used: its caller logs).
        concurrency: Calls in flight per expert (an entry's ``concurrency`` wins).
        timeout: Seconds per attempt (``None``: no limit).
        retries: Further attempts after a transient error.
        budget: The run's :class:`Budget` (shared with its other payers), USD not to pass, or ``None``.
        progress: Show a bar (``None``: only when stderr is a terminal).
        retry_base: Seconds before the first retry; doubled each time, with jitter, at most ``retry_max``.
        retry_max: Longest wait between attempts.
        estimator: What calls are estimated to cost (default: one that knows no earlier answers).
    """

    def __init__(self, specs: Mapping[str, ExpertSpec], backends: Mapping[str, Backend], log: CallLog | None, *,
                 concurrency: int = 4, timeout: float | None = 60.0, retries: int = 3,
                 budget: Budget | float | None = None, progress: bool | None = None, retry_base: float = 0.5,
                 retry_max: float = 30.0, estimator: CostEstimator | None = None) -> None:
        self.specs = specs
        self.backends = backends
        self.log = log
        self.concurrency = concurrency
        self.timeout = timeout
        self.retry = RetryPolicy(retries, retry_base, retry_max)
        self.budget = budget if isinstance(budget, Budget) else Budget(budget)
        self.progress = progress
        self.estimator = estimator if estimator is not None else CostEstimator()

    # -- running -----------------------------------------------------------------------------
    async def run(self, todo: Sequence[tuple[Any, ExpertSpec]]) -> RunStats:
        """Make the calls in ``todo`` (prompt row, expert) and log each as it finishes."""
        stats = RunStats()
        queues: dict[str, list[tuple[Any, ExpertSpec]]] = {}
        for row, spec in todo:
            queues.setdefault(spec.name, []).append((row, spec))
        limiters = {name: self.limiter(self.specs[name]) for name in queues}
        bar = progress_bar(len(todo), "collect", enabled=self.progress, unit="call")

        async def worker(name: str, queue: list[tuple[Any, ExpertSpec]]) -> None:
            while queue and not self.budget.closed and name not in stats.skipped_experts:
                row, spec = queue.pop(0)
                try:
                    record = await self._call(row, spec, limiters[name], stats)
                except BudgetReachedError:
                    stats.budget_reached, record = True, None
                if record is None:  # held back by the budget (or the expert was skipped meanwhile)
                    queue.insert(0, (row, spec))
                    return
                self.log.append(record)  # type: ignore[union-attr]
                stats.records.append(record)
                stats.made += 1
                stats.errors += 0 if record.ok else 1
                bar.update(1)
                bar.set_postfix_str(f"errors={stats.errors} spent=${stats.spent:.4f}", refresh=False)

        workers = [worker(name, queue) for name, queue in queues.items()
                   for _ in range(max(1, self.specs[name].concurrency or self.concurrency))]
        try:
            await asyncio.gather(*workers)
        finally:
            bar.close()
        stats.not_made = len(todo) - stats.made
        return stats

    async def call(self, row: Any, spec: ExpertSpec, stats: RunStats, limiter: Any = None) -> CallRecord | None:
        """One call with this runner's retries, backoff, timeout and budget, *not* logged.

        ``None`` when ``spec`` was skipped after a 401/403 (in ``stats``). A Ray worker of
        ``tryage collect --ray`` and the judge call this; :meth:`run` logs its own calls.

        Raises:
            BudgetReachedError: The call does not fit in the budget (it was not made).
        """
        return await self._call(row, spec, limiter, stats)

    def limiter(self, spec: ExpertSpec, *, share: int = 1) -> Any:
        """The rate limiter of ``spec`` (``None`` without ``requests_per_second``); ``share``
        processes splitting the limit each get ``requests_per_second / share``."""
        if spec.requests_per_second is None:
            return None
        from langchain_core.rate_limiters import InMemoryRateLimiter

        rate = float(spec.requests_per_second) / share
        return InMemoryRateLimiter(requests_per_second=rate, check_every_n_seconds=min(0.1, 0.5 / max(rate, 1e-9)),
                                   max_bucket_size=max(1.0, rate))

    async def _call(self, row: Any, spec: ExpertSpec, limiter: Any, stats: RunStats) -> CallRecord | None:
        last = _Attempts()
        try:
            async for attempt in self.retry.attempts():
                with attempt:
                    record = await self._attempt(row, spec, limiter, stats, last)
        except BudgetReachedError:
            raise
        except _Skipped:
            return None
        except Exception as exc:  # noqa: BLE001 - every failure is classified and logged
            error = self.retry.explain(exc)
            down = isinstance(exc, ExpertUnreachableError) and not exc.timed_out  # refused, or no such host
            if status_of(exc) in AUTH_STATUS or self.retry.refuses_wait(exc) or down:  # every other call would fail so
                stats.skipped_experts.setdefault(spec.name, error)
            return CallRecord(row.id, spec.name, spec.settings_hash(), latency_s=last.latency, cost=last.billed,
                              error=error, attempts=last.number, input_sha=input_hash(row, spec))
        return record

    async def _attempt(self, row: Any, spec: ExpertSpec, limiter: Any, stats: RunStats,
                       last: _Attempts) -> CallRecord:
        """One attempt: reserve its estimate, call, and commit what it cost (or release it)."""
        if spec.name in stats.skipped_experts:
            raise _Skipped(spec.name)
        last.estimate = self.estimator.plan(row, spec).cost
        reserved = self.budget.reserve(last.estimate)
        last.number += 1
        start = time.perf_counter()
        try:
            if limiter is not None:
                await limiter.aacquire()
            start = time.perf_counter()
            answer = await asyncio.wait_for(self.backends[spec.name](row), self.timeout)
        except BaseException as exc:
            last.latency, last.billed = time.perf_counter() - start, 0.0
            if is_timeout(exc):
                last.billed = self.budget.commit(reserved, last.estimate)  # it may have been billed
                stats.spent += last.billed
            else:
                self.budget.release(reserved)
            raise
        latency = time.perf_counter() - start
        try:
            tin, tout = checked_usage(spec, answer)
        except ProviderUsageError:   # counts no one can bill from: the call is charged its estimate
            last.latency, last.billed = latency, self.budget.commit(reserved, last.estimate)
            stats.spent += last.billed
            raise
        cost = price(spec, tin if tin is not None else self.estimator.input_tokens(row, spec),
                     tout if tout is not None else (estimate_tokens(answer.text) if answer.text else 0))
        stats.spent += self.budget.commit(reserved, cost)
        self.estimator.observe(spec.name, tout)
        check_limit(spec, tout, stats)
        return CallRecord(row.id, spec.name, spec.settings_hash(), answer=answer.text, loss=answer.loss,
                          input_tokens=tin, output_tokens=tout, latency_s=latency, cost=cost, attempts=last.number,
                          input_sha=input_hash(row, spec))


def checked_usage(spec: ExpertSpec, answer: Any) -> tuple[int | None, int | None]:
    """The answer's (input, output) token counts, checked before they are billed: ``None`` where the
    provider gave none; :class:`ProviderUsageError` naming the expert where a count is not a whole number >= 0."""
    counts = []
    for side, value in (("input_tokens", answer.input_tokens), ("output_tokens", answer.output_tokens)):
        count = usable_tokens(value)
        if value is not None and count is None:
            raise ProviderUsageError(f"expert {spec.name!r} reported {side}={value!r:.40}; token counts must be whole "
                                     "numbers >= 0, so its usage cannot be billed (the call is charged its estimate)")
        counts.append(count)
    return counts[0], counts[1]


def check_limit(spec: ExpertSpec, output_tokens: int | None, stats: RunStats) -> None:
    """Warn, once per expert, when an answer has more output tokens than the expert's ``max_tokens``."""
    limit = spec.max_tokens
    if limit is None or output_tokens is None or output_tokens <= limit:
        return
    first = spec.name not in stats.limits_ignored
    stats.limits_ignored[spec.name] = max(output_tokens, stats.limits_ignored.get(spec.name, 0))
    if first:
        where = f" at {spec.base_url}" if spec.base_url else ""
        warnings.warn(LimitIgnoredWarning(
            f"expert {spec.name!r}{where} answered with {output_tokens} output tokens though its max_tokens is "
            f"{limit}: its server ignores the limit (set one in the server itself, e.g. llama.cpp's --n-predict); "
            "its calls are now estimated at its longest answer"), stacklevel=2)


__all__ = ["DEFAULT_OUTPUT_TOKENS", "PlannedCall", "RunStats", "Runner", "check_limit", "checked_usage", "estimate_tokens",
           "is_transient", "price", "retry_after", "status_of"]
