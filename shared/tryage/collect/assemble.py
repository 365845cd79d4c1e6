"""The score step of a collection: the answers picked for each (prompt, expert) → scores → Q-table rows,
the Q-table and the expert library with each expert's measured mean cost and latency."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tryage._io import progress_bar
from tryage.collect.backends import ExpertSpec
from tryage.collect.budget import Budget
from tryage.collect.calllog import CallRecord
from tryage.collect.judge import Judge
from tryage.collect.prompts import PromptRow
from tryage.collect.scorers import Scorer
from tryage.errors import BudgetReachedError, QTableError
from tryage.experts import Expert, ExpertLibrary
from tryage.qtable import QTable

Picked = Mapping[tuple[str, str], "CallRecord | None"]


class Logged:
    """Stands for an expert known only from the call log (``tryage score`` without ``--experts``)."""

    def __call__(self, prompt: str) -> str:  # pragma: no cover - never called
        raise RuntimeError("an expert read from a call log cannot be called")


def judge_of(scorer: Scorer) -> Judge | None:
    """The scorer's :class:`Judge`, or ``None`` when it calls no model."""
    return scorer.fn if isinstance(scorer.fn, Judge) else None


async def assemble(rows: Sequence[PromptRow], specs: Sequence[ExpertSpec], picked: Picked, scorer: Scorer, *,
                   concurrency: int, progress: bool | None, budget: Budget,
                   ) -> tuple[QTable, ExpertLibrary, tuple[CallRecord, ...], tuple[str, ...], list[dict[str, Any]]]:
    """Score the rows every expert answered (a judge within ``budget``) → (Q-table, library, records used,
    ids of incomplete prompts, the Q-table's JSON rows)."""
    complete = [row for row in rows if all((r := picked[(row.id, s.name)]) is not None and r.ok for s in specs)]
    incomplete = tuple(row.id for row in rows if row not in complete)
    if not complete:
        errors = [r.error for r in picked.values() if r is not None and r.error]
        hint = f"; e.g. {errors[0]}" if errors else ""
        raise QTableError(f"no prompt has an answer from every expert ({len(errors)} call(s) failed{hint}); "
                          "see the call log")
    scores = iter(await _score(complete, specs, picked, scorer, concurrency, progress, budget))
    records: list[dict[str, Any]] = []
    used: list[CallRecord] = []
    for row in complete:
        calls: list[CallRecord] = [picked[(row.id, s.name)] for s in specs]  # type: ignore[misc]
        used.extend(calls)
        record: dict[str, Any] = {"id": row.id, "prompt": row.prompt,
                                  "scores": {s.name: next(scores) for s in specs},
                                  "cost": {s.name: c.cost for s, c in zip(specs, calls)},
                                  "latency_s": {s.name: round(c.latency_s, 6) for s, c in zip(specs, calls)},
                                  "output_tokens": {s.name: c.output_tokens for s, c in zip(specs, calls)}}
        for key, value in (("reference", row.reference), ("choices", list(row.choices) or None), ("task", row.task)):
            if value is not None:
                record[key] = value
        records.append({**row.extras, **record})
    table = QTable.from_records(records, experts=[s.name for s in specs])
    library = ExpertLibrary(spec.to_expert(**_measured(spec.name, used)) if not isinstance(spec.runnable, Logged)
                            else Expert(name=spec.name, **_measured(spec.name, used)) for spec in specs)
    return table, library, tuple(used), incomplete, records


async def _score(complete: Sequence[PromptRow], specs: Sequence[ExpertSpec], picked: Picked, scorer: Scorer,
                 concurrency: int, progress: bool | None, budget: Budget) -> list[float]:
    """Every score of ``complete`` × ``specs``, in that order, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)
    judge = judge_of(scorer)   # the one scorer that takes time (and money): it shows a bar
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
        held = sum(isinstance(f, BudgetReachedError) for f in failed)
        if held:   # told once, with the whole run's spend (the experts' calls and the judge's)
            budget.check(remaining_calls=held)
        raise failed[0]
    return values  # type: ignore[return-value]


def _measured(name: str, used: Iterable[CallRecord]) -> dict[str, float | None]:
    mine = [r for r in used if r.expert == name]
    return {"measured_cost": statistics.fmean(r.cost for r in mine) if mine else None,
            "measured_latency_s": statistics.fmean(r.latency_s for r in mine) if mine else None}


__all__ = ["Logged", "assemble", "judge_of"]
