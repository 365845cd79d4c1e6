"""The LLM judge: a scorer that asks a chat model to grade each answer, paying through the run's ledger.

Its calls go through collect's :class:`~tryage.collect.runner.Runner` (the one retry policy, a timeout
per attempt, the entry's rate limit) and the run's :class:`~tryage.collect.budget.Budget`. Its replies
are kept in a :class:`~tryage.collect.calllog.CallLog` of :class:`JudgeReply` records
(``<call log>.judge.jsonl``), keyed by the hash of the judge's model and the question, so a reply is
paid for once. The line format is the one earlier versions wrote by hand: their logs are read as
they are.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tryage.collect.backends import ExpertSpec, build_backend
from tryage.collect.budget import Budget
from tryage.collect.calllog import CallLog, CallRecord, logged
from tryage.collect.estimate import CostEstimator, PlannedCall
from tryage.collect.runner import Runner, RunStats
from tryage.errors import JudgeCallError, JudgeParseError, ScorerError

DEFAULT_RUBRIC = ("You grade an answer to a question. Compare it with the reference answer when one is given. "
                  "Reply with one short sentence of reasoning, then a last line 'SCORE: <number between 0 and 1>', "
                  "where 1 means fully correct and helpful and 0 means wrong or useless.")
_SCORE = re.compile(r"score\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_judge_score(reply: str) -> float:
    """The score in a judge's reply: ``SCORE: x`` (the last one), or a reply that is only a number."""
    found = _SCORE.findall(reply)
    text = found[-1] if found else reply.strip()
    try:
        value = float(text)
    except ValueError:
        raise JudgeParseError(reply) from None
    if not 0.0 <= value <= 1.0:
        raise JudgeParseError(reply)
    return value


@dataclass(frozen=True)
class JudgeReply:
    """One reply of the judge, as its log keeps it (one JSON line).

    Attributes:
        key: The record's key: a hash of the judge's model and the question (rubric, prompt,
            reference, answer).
        prompt_id: The prompt whose answer was graded.
        reply: The judge's reply.
        input_tokens: From the judge's ``usage``, else ``None``.
        output_tokens: From the judge's ``usage``, else ``None``.
        cost: USD the call cost.
    """

    key: str
    prompt_id: str | None
    reply: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float = 0.0

    @property
    def ok(self) -> bool:
        return True   # only replies are logged; a failed judge call is asked again by the next run

    @classmethod
    def from_line(cls, data: Any) -> JudgeReply:
        """The reply a log line holds; ``ValueError`` when it holds none (a damaged line)."""
        if not isinstance(data, dict) or not isinstance(data.get("key"), str) or not isinstance(data.get("reply"), str):
            raise ValueError("a judge reply needs a string 'key' and 'reply'")
        return cls(data["key"], data.get("prompt_id"), data["reply"], data.get("input_tokens"),
                   data.get("output_tokens"), data.get("cost") or 0.0)


def judge_log_path(log: str | os.PathLike[str]) -> Path:
    """``q.calls.jsonl`` → ``q.calls.judge.jsonl``: the judge's replies, reused by later runs."""
    path = Path(log)
    return path.with_name(path.stem + ".judge.jsonl")


class Judge:
    """An LLM judge: ``Judge(model, rubric=...)`` is a scorer function (async); see the module doc.

    ``collect`` and ``score`` count what the judge spends in ``budget``.

    Args:
        model: The judge: an expert entry with its prices (an :class:`ExpertSpec` or a dict such as
            ``{"name": "judge", "model": "openai:gpt-4o-mini", "input_cost": 0.15, "output_cost": 0.6}``),
            a ``"<provider>:<model id>"`` string, or any LangChain chat model, runnable or callable taking a
            string (those three: prices unknown, so a run with a budget refuses them; give an entry instead,
            e.g. ``ExpertSpec("judge", runnable=model, input_cost=..., output_cost=...)``).
        rubric: Instructions; the reply must end with ``SCORE: <0..1>``.
        log: The JSONL log of the judge's replies: a reply found there is reused, not paid for again
            (``collect`` and ``score`` keep it beside the call log as ``<log>.judge.jsonl``). It is open
            for writing, with its lock, from :meth:`run_with` to :meth:`aclose`.
    """

    def __init__(self, model: Any, *, rubric: str = DEFAULT_RUBRIC, log: str | os.PathLike[str] | None = None) -> None:
        if isinstance(model, ExpertSpec):
            self.spec = model
        elif isinstance(model, dict):
            self.spec = ExpertSpec.from_dict({"name": "judge", **model})
        elif isinstance(model, str):           # "<provider>:<model id>", as init_chat_model and --judge-model read it
            self.spec = ExpertSpec("judge", model=model)
        else:
            self.spec = ExpertSpec("judge", runnable=model)
        if self.spec.kind == "hf":
            raise ScorerError(f"the judge {self.spec.name!r} is an 'hf' entry, which only measures a loss; a judge is a "
                              "chat model ('model' entry), a LangChain runnable or a callable that returns text")
        self.rubric = rubric
        self.log = log
        self._replies: dict[str, str] | None = None
        self._pending: dict[str, Any] = {}    # key → future of a judge call in flight
        self._runner: Runner | None = None
        self._backend: Any = None
        self._limiter: Any = None
        self._estimator: CostEstimator | None = None
        self._writer: CallLog | None = None
        self.stats: RunStats | None = None

    @property
    def priced(self) -> bool:
        """Whether both prices of the judge are known (a run with a budget needs them)."""
        return self.spec.input_cost is not None and self.spec.output_cost is not None

    @property
    def spent(self) -> float:
        """USD the judge's calls cost since the last :meth:`run_with` (timeouts at their estimate)."""
        return 0.0 if self.stats is None else float(self.stats.spent)

    def run_with(self, *, budget: Budget | float | None = None, timeout: float | None = 60.0, retries: int = 3,
                 retry_base: float = 0.5) -> Judge:
        """Make the next calls under these settings and open the judge's log for writing.

        ``budget``: the run's :class:`Budget` (shared with the experts' calls), or USD the judge may
        spend from now on. Builds the judge's client now: a missing key fails before any paid call.
        """
        if self._backend is None:
            self._backend = build_backend(self.spec)
        if self.log is not None and self._writer is None:
            self._writer = CallLog(self.log, record=JudgeReply, damaged="skip").__enter__()
        self._runner = Runner({self.spec.name: self.spec}, {self.spec.name: self._backend}, None, timeout=timeout,
                              retries=retries, budget=budget, retry_base=retry_base, estimator=self._costs())
        self._limiter = self._runner.limiter(self.spec)
        self.stats = RunStats()
        return self

    async def aclose(self) -> None:
        """Close the judge's HTTP client and its log (a later call opens them again)."""
        backend, self._backend, self._runner = self._backend, None, None
        writer, self._writer = self._writer, None
        try:
            if backend is not None:
                await backend.aclose()
        finally:
            if writer is not None:
                writer.__exit__(None, None, None)

    def _who(self) -> str:
        if self.spec.model is not None:       # what the built chat model calls itself (its model_name)
            return self.spec.model.split(":", 1)[1]
        model = self.spec.runnable
        return getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__qualname__

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self._who()}\0{text}".encode("utf-8")).hexdigest()[:32]

    def _records(self) -> list[JudgeReply]:
        """The replies in the log (a damaged line is a reply not cached, never an error: asking again is safe)."""
        return [] if self.log is None else CallLog(self.log, record=JudgeReply, damaged="skip").records()

    def _cached(self) -> dict[str, str]:
        if self._replies is None:
            self._replies = {record.key: record.reply for record in self._records()}
        return self._replies

    def _costs(self) -> CostEstimator:
        """The judge's cost estimator, knowing the output lengths of its logged replies."""
        if self._estimator is None:
            self._estimator = CostEstimator({self.spec.name: [r.output_tokens for r in self._records()]})
        return self._estimator

    def plan(self, text: str) -> PlannedCall:
        """The estimated tokens and cost of asking the judge ``text``."""
        return self._costs().plan(_Ask("", text), self.spec)

    def estimate(self, rows: Sequence[Any], specs: Sequence[ExpertSpec], done: Mapping[Any, CallRecord],
                 costs: CostEstimator) -> tuple[int, float]:
        """Judge calls a run would make and their estimated USD (a dry run).

        ``done``: the call log's records by key; an answer not given yet is counted at its expert's
        expected output length (``costs``, 3 bytes a token). Equal questions cost one call.
        """
        asked: set[str] = set()
        placeholders: list[str] = []
        for row in rows:
            for spec in specs:
                record = logged(done, row, spec)
                if record is not None and record.ok and record.answer is not None:
                    if not self.cached(record.answer, row):
                        asked.add(self.question(record.answer, row))
                else:
                    placeholders.append(self.question("x" * 3 * costs.expected_output_tokens(spec), row))
        texts = [*asked, *placeholders]
        return len(texts), sum(self.plan(text).cost for text in texts)

    def question(self, answer: str, row: Any) -> str:
        """What the judge is asked about ``answer`` to ``row``."""
        text = f"{self.rubric}\n\nQuestion:\n{row.prompt}\n\n"
        if row.reference is not None:
            text += f"Reference answer:\n{row.reference}\n\n"
        return text + f"Answer to grade:\n{answer}\n"

    def cached(self, answer: str, row: Any) -> bool:
        """Whether the judge's reply about ``answer`` to ``row`` is in its log already (no call)."""
        return self._key(self.question(answer, row)) in self._cached()

    async def _ask(self, key: str, text: str, row: Any) -> None:
        """Ask the judge once, keep its reply and log it; :class:`BudgetReachedError` when it does not fit."""
        runner, stats = self._runner, self.stats   # set by run_with, which __call__ makes sure of
        record = await runner.call(_Ask(key, text), self.spec, stats, self._limiter)  # type: ignore[union-attr, arg-type]
        if record is None:   # the judge refused the key (401/403) on an earlier call
            raise JudgeCallError(stats.skipped_experts[self.spec.name], 1)  # type: ignore[union-attr]
        if not record.ok:
            raise JudgeCallError(record.error, record.attempts)
        reply = str(record.answer)
        self._cached()[key] = reply
        if self._writer is not None:
            self._writer.append(JudgeReply(key, row.id, reply, record.input_tokens, record.output_tokens, record.cost))

    async def __call__(self, answer: str, row: Any) -> float:
        """The judge's score of ``answer`` to ``row``; higher: the judge rates it better.

        Equal questions with equal answers (experts that agree) cost one judge call, even when they are
        scored at the same time: later ones wait for the first one's reply.
        """
        if self._runner is None:
            self.run_with()
        text = self.question(answer, row)
        key, replies = self._key(text), self._cached()
        if key not in replies:
            pending = self._pending.get(key)
            if pending is not None:
                await asyncio.shield(pending)
            else:
                self._pending[key] = asyncio.get_running_loop().create_future()
                try:
                    await self._ask(key, text, row)
                finally:
                    self._pending.pop(key).set_result(None)   # waiters read the reply; after a failure they ask
            if key not in replies:
                return await self(answer, row)
        return parse_judge_score(replies[key])


@dataclass(frozen=True)
class _Ask:
    """One question to the judge, shaped as the prompt row a :class:`Runner` calls an expert on."""

    id: str
    prompt: str
    reference: None = None


__all__ = ["DEFAULT_RUBRIC", "Judge", "JudgeReply", "judge_log_path", "parse_judge_score"]
