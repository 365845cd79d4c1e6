"""``tryage collect --ray``: the calls of a collection made by Ray actor pools, logged by the driver.

What runs where
---------------
* **Driver** (the process running :func:`tryage.collect.collect` with ``backend="ray"``): holds the
  call log's lock, works out the calls not yet in the log (exactly those the local backend would
  make), runs them through :func:`tryage.scale.distributed.run_pools` and appends every record that
  streams back to the *same* call log. Only the driver writes, so the lock, the resume and
  ``tryage score`` work as after a local run.
* **Workers**: one actor pool per expert (``workers`` actors each). An actor builds the expert's
  chat model once from its entry (``init_chat_model`` with ``model_kwargs``; the API key comes
  from *the worker's* environment: set it on every node) and makes its calls with the local
  runner's own code (:meth:`tryage.collect.runner.Runner.call`: retries with backoff, the
  per-attempt timeout, the 401/403 stop), at most ``concurrency`` at once (an entry's own
  ``concurrency`` wins). An entry's ``requests_per_second`` is split evenly between the pool's
  actors. An API actor reserves a quarter of a CPU: it mostly waits on the network.

Budget
------
The run's :class:`~tryage.collect.budget.Budget` is kept on the driver, with the local run's rule:
a call starts only when spent + reserved + its estimate <= ``budget``. The driver cannot reserve the
calls the workers start, so it commits each record's cost as it streams back and then asks the
ledger to admit (:meth:`~tryage.collect.budget.Budget.admit`) the largest estimated cost of any call
of the run (once before anything starts, too): the run stops as soon as that would pass ``budget``. Calls already in flight on the workers at that moment
cannot be called back: they are cancelled, their records are not logged (a rerun makes them again)
and the provider may still bill them. That is at most ``workers × concurrency`` calls per expert,
plus the finished batches Ray Data holds for the driver (each of ``concurrency`` calls) — so keep
a margin of that many calls' cost under a hard limit, or run without ``--ray`` where the budget is
reserved before every attempt. Attempts a worker retried after a timeout are not charged their
estimate on the driver, which sees only each call's final record.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from tryage.collect.backends import ExpertSpec, build_backend
from tryage.collect.entries import FIELDS
from tryage.collect.budget import Budget
from tryage.collect.calllog import CallLog, CallRecord
from tryage.collect.estimate import CostEstimator
from tryage.collect.prompts import PromptRow
from tryage.collect.runner import Runner, RunStats, check_limit
from tryage.errors import BudgetReachedError, ConfigurationError, TryageError, check_scalar
from tryage.scale.distributed import AsyncWorker

#: CPUs an API actor reserves: it mostly waits on the network, so four share a core.
API_ACTOR_CPUS = 0.25


def check_ray_experts(specs: Sequence[ExpertSpec]) -> None:
    """Refuse experts a Ray worker cannot rebuild from their entry (``hf`` folders, Python objects)."""
    local = [f"{s.name} ({'hf' if s.kind == 'hf' else 'Python object'})" for s in specs if s.kind != "chat"]
    if local:
        raise ConfigurationError(f"backend 'ray' calls experts with a 'model' entry only; {', '.join(local)} "
                                 "run locally: collect them without --ray")


def spec_entry(spec: ExpertSpec) -> dict[str, Any]:
    """The plain experts-file entry of a ``model`` expert: what is shipped to its actors."""
    return {name: getattr(spec, name) for name in FIELDS}


class CollectWorker(AsyncWorker):
    """One actor of an expert's pool: builds the chat model once, returns one call record per item."""

    def __init__(self, *, entry: Mapping[str, Any], concurrency: int, timeout: float | None, retries: int,
                 retry_base: float, share: int, observed: Sequence[int]) -> None:
        spec = ExpertSpec.from_dict(entry)
        super().__init__(max_in_flight=spec.concurrency or concurrency)
        self.spec = spec
        self.failure: TryageError | None = None
        try:
            self.backend = build_backend(spec)
        except TryageError as exc:  # no key on this node, a missing client: raised with the first batch,
            self.failure, self.backend = exc, None  # as a task error the driver re-raises as itself
        self.runner = Runner({spec.name: spec}, {spec.name: self.backend}, None,  # type: ignore[arg-type]
                             concurrency=concurrency, timeout=timeout, retries=retries, retry_base=retry_base,
                             estimator=CostEstimator({spec.name: observed}))
        self.stats = RunStats()
        self.rate = self.runner.limiter(spec, share=share)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if self.failure is not None:
            raise self.failure
        return super().__call__(items)

    async def call(self, item: Mapping[str, Any]) -> dict[str, Any]:
        row = PromptRow(str(item["id"]), item["prompt"], item.get("reference"))
        record = await self.runner.call(row, self.spec, self.stats, self.rate)
        if record is None:  # this actor saw a 401/403 for the expert: the rest would fail the same way
            return {"id": row.id, "expert": self.spec.name, "skipped": self.stats.skipped_experts[self.spec.name]}
        return {"id": row.id, **dataclasses.asdict(record)}


class _LogRecorder:
    """The :class:`tryage.scale.distributed.Recorder` of a collection: appends records to the open call log
    and commits their cost to the run's budget, which stops the stream (:class:`BudgetReachedError`) when
    the largest call of the run would no longer fit."""

    def __init__(self, log: CallLog, stats: RunStats, budget: Budget, largest: float,
                 specs: Mapping[str, ExpertSpec]) -> None:
        self.log, self.stats, self.budget, self.largest, self.specs = log, stats, budget, largest, specs

    def done(self) -> set[tuple[str, str]]:
        return set()  # the driver sends only the calls the log lacks (keyed with the settings hash)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> int:
        written = 0
        for row in rows:
            if "skipped" in row:
                self.stats.skipped_experts.setdefault(str(row["expert"]), str(row["skipped"]))
                continue
            record = CallRecord.from_dict(row)
            self.log.append(record)
            self.stats.records.append(record)
            self.stats.made += 1
            self.stats.errors += 0 if record.ok else 1
            self.stats.spent += self.budget.commit(0.0, record.cost)
            check_limit(self.specs[record.expert], record.output_tokens, self.stats)   # warned by the driver
            written += 1
        self.budget.admit(self.largest)
        return written


def run_on_ray(todo: Sequence[tuple[PromptRow, ExpertSpec]], log: CallLog, *, concurrency: int,
               timeout: float | None, retries: int, retry_base: float, budget: Budget | float | None,
               observed: Mapping[str, Sequence[int]], workers: int = 1, address: str | None = None,
               num_cpus: int | None = None, progress: bool | None = None) -> RunStats:
    """Make the calls of ``todo`` on Ray pools and append their records to ``log`` (open for writing).

    Blocks; see the module doc for what runs where and how the budget stops a run.
    """
    from tryage.scale.distributed import PoolSpec, run_pools

    check_scalar(workers, "workers", kind=int, low=1)
    specs = {spec.name: spec for _, spec in todo}
    check_ray_experts(list(specs.values()))
    stats = RunStats()
    ledger = budget if isinstance(budget, Budget) else Budget(budget)
    costs = CostEstimator(observed)
    largest = max((costs.plan(row, spec).cost for row, spec in todo), default=0.0)
    recorder = _LogRecorder(log, stats, ledger, largest, specs)
    try:
        if todo:
            ledger.admit(largest)   # not even one call fits: make none, as the local run does
    except BudgetReachedError:
        stats.budget_reached, stats.not_made = True, len(todo)
        return stats
    items: dict[str, list[dict[str, Any]]] = {}
    for row, spec in todo:
        items.setdefault(spec.name, []).append({"id": row.id, "prompt": row.prompt, "reference": row.reference})
    pools = []
    for name, mine in items.items():
        spec = specs[name]
        width = spec.concurrency or concurrency
        kwargs = {"entry": spec_entry(spec), "concurrency": concurrency, "timeout": timeout, "retries": retries,
                  "retry_base": retry_base, "share": workers, "observed": list(observed.get(name, ()))}
        size = min(workers, -(-len(mine) // width))  # no idle actor: each gets a batch at least
        pools.append(PoolSpec(name, mine, CollectWorker, kwargs, size=size, batch_size=width,
                              num_cpus=API_ACTOR_CPUS))
    try:
        run_pools(pools, recorder, address=address, num_cpus=num_cpus,
                  progress=sys.stderr.isatty() if progress is None else progress)
    except BudgetReachedError:   # raised by the ledger through the recorder: the run stops here
        stats.budget_reached = True
    stats.not_made = len(todo) - stats.made
    return stats


__all__ = ["API_ACTOR_CPUS", "CollectWorker", "check_ray_experts", "run_on_ray", "spec_entry"]
