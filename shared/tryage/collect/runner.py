"""The async engine of ``tryage collect``: every (prompt, expert) call, safely.

* **Bounded concurrency per expert**: ``concurrency`` workers per expert (an entry's own
  ``concurrency`` wins), so one slow model never starves the others.
* **Retries** with exponential backoff and jitter on transient errors — HTTP 429, 408, 409, 5xx,
  timeouts, dropped connections — and **none** on permanent ones (400, 401, 403, 404, 422, any
  error without a status). A response's ``Retry-After`` (or OpenAI's ``retry-after-ms``) longer than
  the backoff is waited out instead, up to ``max(retry_max, 60 s)``. After a 401/403 the expert's remaining calls are skipped: every one of
  them would fail the same way.
* **Rate limits** per expert with LangChain's ``InMemoryRateLimiter`` (one token per attempt).
* **Per-call timeout** (``asyncio.wait_for``).
* **Budget**: before each attempt, the cost of the call is estimated (input tokens ≈ UTF-8 bytes / 3,
  output tokens = the entry's ``expected_output_tokens``, else ``max_tokens``, else the mean of its
  calls so far, else 512) and reserved; a call whose estimate would take spent + reserved past the
  budget is not made, and no further call starts. A call that timed out is charged its estimate
  (the provider may have billed it).
* Each finished call is appended to the :class:`~tryage.collect.calllog.CallLog` at once.
* A progress bar (tqdm) shows calls done, errors, spend and ETA; it is off when stderr is not a
  terminal.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tryage._io import progress_bar
from tryage.collect.backends import Backend, ExpertSpec
from tryage.collect.calllog import CallLog, CallRecord

DEFAULT_OUTPUT_TOKENS = 512
TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
AUTH_STATUS = frozenset({401, 403})
#: The longest ``Retry-After`` obeyed (seconds) when it exceeds ``retry_max``; a longer one is cut to this.
RETRY_AFTER_MAX = 60.0


def estimate_tokens(text: str) -> int:
    """A deliberately high token estimate: one token per 3 UTF-8 bytes (real tokenizers give ~4)."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 3))


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (``status_code`` or ``response.status_code``), if any."""
    for candidate in (exc, getattr(exc, "response", None)):
        code = getattr(candidate, "status_code", None) or getattr(candidate, "status", None)
        if isinstance(code, int):
            return code
    return None


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait before retrying, from the error's HTTP response: OpenAI's
    ``retry-after-ms``, else ``Retry-After`` (seconds or an HTTP date); ``None`` when it did not say."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None or not hasattr(headers, "get"):
        return None
    try:
        if headers.get("retry-after-ms") is not None:
            return float(headers.get("retry-after-ms")) / 1000.0
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return (when - datetime.now(timezone.utc)).total_seconds()
    except (TypeError, ValueError, OverflowError):   # a header no one can read is no instruction
        return None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may succeed: 408/409/425/429, 5xx, timeouts, connection errors."""
    status = status_of(exc)
    if status is not None:
        return status in TRANSIENT_STATUS or status >= 500
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    # openai / anthropic / httpx name them so, without a status code
    return bool(names & {"APITimeoutError", "APIConnectionError", "TimeoutException", "ConnectError",
                         "RemoteProtocolError", "ReadError", "WriteError", "PoolTimeout"})


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    status = status_of(exc)
    head = type(exc).__name__ + (f" ({status})" if status else "")
    return f"{head}: {text[:300]}" if text else head


@dataclass(frozen=True)
class PlannedCall:
    """A call a run would make (``--dry-run``).

    Attributes:
        prompt_id: The prompt's id.
        expert: The expert's name.
        input_tokens: Estimated input tokens.
        output_tokens: Estimated output tokens.
        cost: Estimated USD.
    """

    prompt_id: str
    expert: str
    input_tokens: int
    output_tokens: int
    cost: float


@dataclass
class RunStats:
    """What a run did.

    Attributes:
        made: Calls finished and logged now (answers and final errors).
        errors: Of those, how many ended in an error.
        spent: USD spent by this run (timeouts counted at their estimate).
        budget_reached: A call was held back because it would pass the budget.
        not_made: Calls not made (budget, or an expert skipped after a 401/403).
        skipped_experts: Experts whose calls stopped after an authentication error, with the error.
        records: The records logged now.
    """

    made: int = 0
    errors: int = 0
    spent: float = 0.0
    budget_reached: bool = False
    not_made: int = 0
    skipped_experts: dict[str, str] = field(default_factory=dict)
    records: list[CallRecord] = field(default_factory=list)


def price(spec: ExpertSpec, input_tokens: int, output_tokens: int) -> float:
    """USD of a call: tokens × the entry's prices per 1M tokens (unknown prices count as 0)."""
    return (input_tokens * (spec.input_price or 0.0) + output_tokens * (spec.output_price or 0.0)) / 1e6


class Runner:
    """Runs calls for a set of experts; see the module doc.

    Args:
        specs: Expert entries by name.
        backends: The backend of each expert that has calls to make.
        log: An open :class:`CallLog` (``None`` when only :meth:`call` is used: its caller logs).
        concurrency: Calls in flight per expert (an entry's ``concurrency`` wins).
        timeout: Seconds per attempt (``None``: no limit).
        retries: Further attempts after a transient error.
        budget: USD not to pass, or ``None``.
        progress: Show a bar (``None``: only when stderr is a terminal).
        retry_base: Seconds before the first retry; doubled each time, with jitter, at most ``retry_max``.
        retry_max: Longest wait between attempts.
    """

    def __init__(self, specs: Mapping[str, ExpertSpec], backends: Mapping[str, Backend], log: CallLog | None, *,
                 concurrency: int = 4, timeout: float | None = 60.0, retries: int = 3, budget: float | None = None,
                 progress: bool | None = None, retry_base: float = 0.5, retry_max: float = 30.0,
                 observed_output_tokens: Mapping[str, Sequence[int]] | None = None) -> None:
        self.specs = specs
        self.backends = backends
        self.log = log
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.budget = budget
        self.progress = progress
        self.retry_base = retry_base
        self.retry_max = retry_max
        self._observed = {k: [sum(v), len(v)] for k, v in (observed_output_tokens or {}).items()}
        self._reserved = 0.0
        self._stop = False

    # -- estimates ---------------------------------------------------------------------------
    def expected_output_tokens(self, spec: ExpertSpec) -> int:
        if spec.kind == "hf":
            return 0
        if spec.expected_output_tokens is not None:
            return spec.expected_output_tokens
        for key in ("max_tokens", "max_completion_tokens", "max_new_tokens", "num_predict"):
            value = spec.model_kwargs.get(key)
            if isinstance(value, int) and value > 0:
                return value
        total, count = self._observed.get(spec.name, (0, 0))
        return math.ceil(total / count) if count else DEFAULT_OUTPUT_TOKENS

    def _observe(self, name: str, output_tokens: int | None) -> None:
        """Count one answer's output tokens into ``name``'s estimate of its next calls."""
        if output_tokens is not None:
            seen = self._observed.setdefault(name, [0, 0])
            seen[0] += output_tokens
            seen[1] += 1

    def plan(self, row: Any, spec: ExpertSpec) -> PlannedCall:
        """The estimated tokens and cost of calling ``spec`` on ``row``."""
        text = row.prompt if spec.kind != "hf" or row.reference is None else f"{row.prompt} {row.reference}"
        tin, tout = estimate_tokens(text), self.expected_output_tokens(spec)
        return PlannedCall(row.id, spec.name, tin, tout, price(spec, tin, tout))

    # -- running -----------------------------------------------------------------------------
    async def run(self, todo: Sequence[tuple[Any, ExpertSpec]]) -> RunStats:
        """Make the calls in ``todo`` (prompt row, expert) and log each as it finishes."""
        stats = RunStats()
        queues: dict[str, list[tuple[Any, ExpertSpec]]] = {}
        for row, spec in todo:
            queues.setdefault(spec.name, []).append((row, spec))
        limiters = {name: self._limiter(self.specs[name]) for name in queues}
        bar = progress_bar(len(todo), "collect", enabled=self.progress, unit="call")
        started = 0

        async def worker(name: str, queue: list[tuple[Any, ExpertSpec]]) -> None:
            nonlocal started
            while queue and not self._stop and name not in stats.skipped_experts:
                row, spec = queue.pop(0)
                started += 1
                record = await self._call(row, spec, limiters[name], stats)
                if record is None:  # held back by the budget (or the expert was skipped meanwhile)
                    queue.insert(0, (row, spec))
                    started -= 1
                    return
                self.log.append(record)  # type: ignore[union-attr]
                stats.records.append(record)
                stats.made += 1
                stats.errors += 0 if record.ok else 1
                bar.update(1)
                bar.set_postfix_str(f"errors={stats.errors} spent=${stats.spent:.4f}", refresh=False)

        workers = []
        for name, queue in queues.items():
            width = self.specs[name].concurrency or self.concurrency
            workers += [worker(name, queue) for _ in range(max(1, width))]
        try:
            await asyncio.gather(*workers)
        finally:
            bar.close()
        stats.not_made = len(todo) - stats.made
        return stats

    async def call(self, row: Any, spec: ExpertSpec, stats: RunStats, limiter: Any = None) -> CallRecord | None:
        """One call with this runner's retries, backoff, timeout and budget, *not* logged.

        ``None`` when it was held back (the budget, or ``spec`` skipped after a 401/403 in ``stats``).
        A Ray worker of ``tryage collect --ray`` calls this and returns the record to the driver,
        which logs it; :meth:`run` logs its own calls.
        """
        return await self._call(row, spec, limiter, stats)

    def limiter(self, spec: ExpertSpec, *, share: int = 1) -> Any:
        """The rate limiter of ``spec`` (``None`` without ``requests_per_second``); ``share``
        processes splitting the limit each get ``requests_per_second / share``."""
        return self._limiter(spec, share=share)

    def _limiter(self, spec: ExpertSpec, share: int = 1) -> Any:
        if spec.requests_per_second is None:
            return None
        from langchain_core.rate_limiters import InMemoryRateLimiter

        rate = float(spec.requests_per_second) / share
        return InMemoryRateLimiter(requests_per_second=rate, check_every_n_seconds=min(0.1, 0.5 / max(rate, 1e-9)),
                                   max_bucket_size=max(1.0, rate))

    def _reserve(self, cost: float, stats: RunStats) -> bool:
        if self.budget is not None and stats.spent + self._reserved + cost > self.budget + 1e-12:
            stats.budget_reached = True
            self._stop = True
            return False
        self._reserved += cost
        return True

    async def _call(self, row: Any, spec: ExpertSpec, limiter: Any, stats: RunStats) -> CallRecord | None:
        backend = self.backends[spec.name]
        attempt = 0
        while True:
            if self._stop or spec.name in stats.skipped_experts:
                return None
            estimate = self.plan(row, spec).cost
            if not self._reserve(estimate, stats):
                return None
            attempt += 1
            if limiter is not None:
                await limiter.aacquire()
            start = time.perf_counter()
            try:
                answer = await asyncio.wait_for(backend(row), self.timeout)
            except Exception as exc:  # noqa: BLE001 - every failure is classified and logged
                latency = time.perf_counter() - start
                self._reserved -= estimate
                timed_out = isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "Timeout" in type(exc).__name__
                if timed_out:
                    stats.spent += estimate  # it may have been billed
                if is_transient(exc) and attempt <= self.retries:
                    delay = min(self.retry_max, self.retry_base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                    asked = retry_after(exc)
                    if asked is not None and asked > delay:   # the server knows its limits better
                        delay = min(asked, max(self.retry_max, RETRY_AFTER_MAX))
                    await asyncio.sleep(delay)
                    continue
                if status_of(exc) in AUTH_STATUS:
                    stats.skipped_experts.setdefault(spec.name, _describe(exc))
                return CallRecord(row.id, spec.name, spec.settings_hash(), latency_s=latency,
                                  cost=estimate if timed_out else 0.0, error=_describe(exc), attempts=attempt)
            latency = time.perf_counter() - start
            self._reserved -= estimate
            tin = answer.input_tokens if answer.input_tokens is not None else self.plan(row, spec).input_tokens
            tout = answer.output_tokens if answer.output_tokens is not None else (
                estimate_tokens(answer.text) if answer.text else 0)
            cost = price(spec, tin, tout)
            stats.spent += cost
            self._observe(spec.name, answer.output_tokens)
            return CallRecord(row.id, spec.name, spec.settings_hash(), answer=answer.text, loss=answer.loss,
                              input_tokens=answer.input_tokens, output_tokens=answer.output_tokens,
                              latency_s=latency, cost=cost, attempts=attempt)


__all__ = ["DEFAULT_OUTPUT_TOKENS", "PlannedCall", "RunStats", "Runner", "estimate_tokens", "is_transient", "price",
           "status_of"]
