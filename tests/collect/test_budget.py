"""The budget ledger every paid call of a collection goes through, and the cost estimates it reserves."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from tryage.collect import collect
from tryage.collect.backends import ExpertSpec, build_backend
from tryage.collect.budget import Budget
from tryage.collect.estimate import CostEstimator, usable_tokens
from tryage.collect.prompts import PromptRow
from tryage.collect.runner import Runner, RunStats
from tryage.errors import BudgetReachedError, ConfigurationError


def test_budget_refuses_the_call_that_would_pass_it_and_counts_nothing_for_it() -> None:
    budget = Budget(1.0)
    budget.commit(budget.reserve(0.6), 0.6)
    with pytest.raises(BudgetReachedError, match=r"spent \$0\.600000 of \$1\.000000; 1 call\(s\) not made") as caught:
        budget.reserve(0.5)
    assert (caught.value.budget, caught.value.spent, caught.value.remaining_calls) == (1.0, 0.6, 1)
    assert (budget.spent, budget.reserved, budget.closed) == (0.6, 0.0, True)


def test_budget_lets_a_call_that_lands_exactly_on_the_limit_start() -> None:
    budget = Budget(1.0)
    budget.commit(budget.reserve(0.7), 0.7)
    budget.commit(budget.reserve(0.3), 0.3)
    assert budget.spent == pytest.approx(1.0) and not budget.closed


def test_budget_counts_calls_in_flight_so_concurrent_calls_cannot_pass_it_together() -> None:
    budget = Budget(1.0)
    first = budget.reserve(0.6)            # in flight, not yet paid
    with pytest.raises(BudgetReachedError):
        budget.reserve(0.6)                # would fit alone, not beside the first
    assert budget.reserved == pytest.approx(0.6) and budget.spent == 0.0
    assert budget.commit(first, 0.2) == 0.2  # the real cost, not the estimate, is what is spent
    assert (budget.spent, budget.reserved) == (pytest.approx(0.2), 0.0)


def test_budget_stops_at_the_first_refusal_even_for_a_smaller_later_call() -> None:
    budget = Budget(1.0)
    budget.commit(budget.reserve(0.5), 0.5)
    with pytest.raises(BudgetReachedError):
        budget.reserve(0.9)
    with pytest.raises(BudgetReachedError):
        budget.reserve(0.01)               # it would fit, but the run stops where the first call did not
    with pytest.raises(BudgetReachedError, match=r"4 call\(s\) not made"):
        budget.check(remaining_calls=4)


def test_budget_release_gives_the_reservation_back() -> None:
    budget = Budget(1.0)
    budget.release(budget.reserve(0.9))    # the attempt failed before the provider billed it
    assert (budget.spent, budget.reserved) == (0.0, 0.0)
    budget.commit(budget.reserve(1.0), 1.0)
    assert budget.spent == 1.0 and not budget.closed
    budget.check(remaining_calls=0)        # nothing was refused: no error


@pytest.mark.parametrize("cost", [-5.0, math.nan, math.inf, -math.inf])
def test_budget_never_lets_a_broken_cost_lower_or_poison_the_spend(cost: float) -> None:
    budget = Budget(10.0)
    budget.commit(budget.reserve(1.0), 1.0)
    assert budget.commit(budget.reserve(0.25), cost) == 0.25   # counted at its estimate
    assert budget.spent == pytest.approx(1.25) and budget.reserved == 0.0
    assert budget.commit(0.0, cost) == 0.0 and budget.spent == pytest.approx(1.25)  # nothing reserved: 0


def test_budget_without_a_limit_refuses_nothing_and_still_counts() -> None:
    budget = Budget(None)
    for _ in range(3):
        budget.commit(budget.reserve(1e9), 2.0)
    assert budget.spent == 6.0 and not budget.closed
    budget.check(remaining_calls=10)


@pytest.mark.parametrize("limit", [math.nan, -1.0, math.inf, True, "5"])
def test_budget_limit_must_be_a_finite_number_of_usd(limit: object) -> None:
    with pytest.raises(ConfigurationError, match=r"budget must be a finite number >= 0, got"):
        Budget(limit)  # type: ignore[arg-type]


def test_admit_checks_the_rule_for_a_call_started_elsewhere_without_holding_money() -> None:
    budget = Budget(1.0)                   # the Ray driver: workers start the calls
    budget.commit(0.0, 0.7)
    budget.admit(0.3)
    assert budget.reserved == 0.0
    with pytest.raises(BudgetReachedError):
        budget.admit(0.31)
    assert budget.closed


@pytest.mark.parametrize(("usage", "usable"), [(12, 12), (0, 0), (12.0, 12), (-3, None), (1.5, None),
                                               (math.nan, None), (True, None), ("12", None), (None, None)])
def test_provider_usage_is_used_only_as_a_whole_number_of_tokens(usage: object, usable: int | None) -> None:
    assert usable_tokens(usage) == usable


def test_negative_provider_usage_is_a_provider_error_charged_its_estimate_never_below_zero() -> None:
    def liar(prompt: str) -> dict:
        return {"text": "abcdef", "input_tokens": -1_000_000, "output_tokens": -7}

    spec = ExpertSpec("liar", runnable=liar, input_cost=1e6, output_cost=1e6,   # 1 USD a token
                      expected_output_tokens=3)
    ledger = Budget(10.0)

    async def once() -> object:
        backend = build_backend(spec)
        runner = Runner({"liar": spec}, {"liar": backend}, None, retries=0, budget=ledger)
        try:
            return await runner.call(PromptRow("p0", "hello"), spec, RunStats())
        finally:
            await backend.aclose()

    record = asyncio.run(once())
    # "hello" is 5 bytes: 2 input tokens estimated, 3 output tokens expected: 5 USD, what the provider may have billed
    assert record.error.startswith("ProviderUsageError") and "'liar'" in record.error and "-1000000" in record.error
    assert (record.answer, record.input_tokens, record.output_tokens, record.cost) == (None, None, None, 5.0)
    assert ledger.spent == 5.0 and ledger.reserved == 0.0


def test_a_timed_out_attempt_is_charged_its_estimate_to_the_shared_ledger() -> None:
    async def hang(prompt: str) -> str:
        await asyncio.sleep(30)
        return "late"

    spec = ExpertSpec("slow", runnable=hang, input_cost=1e6, output_cost=0.0, expected_output_tokens=5)
    ledger = Budget(100.0)
    row = PromptRow("p0", "hello")                          # 2 input tokens estimated: 2 USD

    async def once() -> object:
        backend = build_backend(spec)
        runner = Runner({"slow": spec}, {"slow": backend}, None, timeout=0.05, retries=1, retry_base=0.01,
                        budget=ledger)
        try:
            return await runner.call(row, spec, RunStats())
        finally:
            await backend.aclose()

    record = asyncio.run(once())
    assert record.error.startswith("TimeoutError") and record.attempts == 2 and record.cost == 2.0
    assert ledger.spent == 4.0 and ledger.reserved == 0.0    # both attempts may have been billed


def test_cost_estimator_learns_the_mean_output_length_and_ignores_broken_counts() -> None:
    spec = ExpertSpec("e", runnable=lambda p: p, input_cost=1.0, output_cost=1.0)
    costs = CostEstimator({"e": [10, 20, -1000]})
    assert costs.expected_output_tokens(spec) == 15
    costs.observe("e", 60)
    costs.observe("e", "many")
    assert costs.plan(PromptRow("p", "abc"), spec).output_tokens == 30
    assert CostEstimator().expected_output_tokens(spec) == 512


def test_a_dry_run_counts_the_system_prompt_sent_before_every_prompt(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The system prompt is paid as input on every call, so the estimate the budget reserves includes it."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "p", "prompt": "What is 2 plus 2?", "reference": "4"}\n')
    entry = {"model": "openai:m", "model_kwargs": {"base_url": "http://127.0.0.1:9/v1", "max_tokens": 8},
             "input_cost": 1e6, "output_cost": 0}
    experts = [{"name": "plain", **entry}, {"name": "briefed", **entry, "system_prompt": "Be brief. " * 100}]
    plan = collect(prompts, experts, scorer="exact", out=tmp_path / "q.jsonl", dry_run=True)
    tokens = {c.expert: c.input_tokens for c in plan.calls}
    assert tokens["briefed"] >= tokens["plain"] + 200  # 1,000 characters of system prompt: ~250 tokens
    assert plan.estimated_cost >= 2 * tokens["plain"] + 200  # $1 a token here
