"""tryage.collect against a real local OpenAI-compatible server, through LangChain's ChatOpenAI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("langchain_openai", reason="these tests drive the real ChatOpenAI (extra 'collect')")

from collect_helpers import entry, sums, write_experts, write_jsonl  # noqa: E402
from openai_server import OpenAIServer  # noqa: E402

from tryage.collect import CallLog, DryRun, collect, score
from tryage.errors import BudgetReachedError, LogLockedError, QTableError
from tryage.experts import ExpertLibrary
from tryage.qtable import QTable

FAST = {"retry_base": 0.01, "progress": False}


def test_collect_writes_scores_costs_and_a_library_train_can_read(server: OpenAIServer, tmp_path: Path) -> None:
    out = tmp_path / "q.jsonl"
    result = collect(sums(6), [entry(server, "good"), entry(server, "sloppy"), entry(server, "flaky")],
                     scorer="numeric", out=out, concurrency=2, **FAST)
    assert result.made == 18 and result.cached == 0 and result.errors == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(6)]
    # sloppy adds one when the first number is odd; good and flaky are always right
    assert [r["scores"] for r in rows] == [{"good": 1.0, "sloppy": float(i % 2 == 0), "flaky": 1.0} for i in range(6)]
    # usage from the server: 5 prompt words, 4 answer words; prices 1 and 2 USD per 1M tokens
    assert rows[0]["cost"] == {n: pytest.approx((5 * 1.0 + 4 * 2.0) / 1e6) for n in ("good", "sloppy", "flaky")}
    assert rows[0]["output_tokens"] == {"good": 4, "sloppy": 4, "flaky": 4}
    assert all(v > 0 for v in rows[0]["latency_s"].values())
    assert rows[0]["reference"] == "3" and rows[0]["task"] == "sum"
    assert result.spent == pytest.approx(18 * 13 / 1e6)
    # flaky got a 429 first for every prompt and was retried once; the others were called once
    assert server.count("flaky") == 12 and server.count("good") == 6 and server.count("sloppy") == 6
    flaky = [r for r in CallLog(tmp_path / "q.calls.jsonl").records() if r.expert == "flaky"]
    assert [r.attempts for r in flaky] == [2] * 6
    table = QTable.from_file(out)
    assert table.kind == "score" and table.experts == ("good", "sloppy", "flaky")
    assert table.column("cost")[0]["good"] == pytest.approx(13e-6)
    library = ExpertLibrary.from_json(tmp_path / "q.experts.json")
    assert library["good"].measured_cost == pytest.approx(13e-6)
    assert library["good"].measured_latency_s > 0 and library["good"].input_cost == 1.0


def test_collect_again_makes_no_call(server: OpenAIServer, tmp_path: Path) -> None:
    experts = [entry(server, "good"), entry(server, "sloppy")]
    collect(sums(4), experts, scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    written = (tmp_path / "q.jsonl").read_text()
    second = collect(sums(4), experts, scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    assert sum(server.requests.values()) == 8
    assert second.made == 0 and second.cached == 8
    assert (tmp_path / "q.jsonl").read_text() == written


def test_changed_generation_settings_are_new_calls_but_a_new_base_url_is_not(server: OpenAIServer, tmp_path: Path) -> None:
    collect(sums(2), [entry(server, "good")], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    moved = entry(server, "good")
    moved["model_kwargs"]["base_url"] = server.base_url.replace("127.0.0.1", "localhost")
    assert collect(sums(2), [moved], scorer="numeric", out=tmp_path / "q.jsonl", **FAST).made == 0
    hotter = entry(server, "good")
    hotter["model_kwargs"]["temperature"] = 0.7
    assert collect(sums(2), [hotter], scorer="numeric", out=tmp_path / "q.jsonl", **FAST).made == 2


def test_permanent_error_is_not_retried_and_stops_that_expert(server: OpenAIServer, tmp_path: Path) -> None:
    with pytest.raises(QTableError, match=r"no prompt has an answer from every expert .*AuthenticationError \(401\)"):
        collect(sums(5), [entry(server, "good"), entry(server, "locked")], scorer="numeric",
                out=tmp_path / "q.jsonl", concurrency=1, retries=3, **FAST)
    assert server.count("locked") == 1  # no retry, and the other 4 calls were skipped
    [record] = [r for r in CallLog(tmp_path / "q.calls.jsonl").records() if r.expert == "locked"]
    assert record.attempts == 1 and "AuthenticationError (401)" in record.error
    assert server.count("good") == 5


def test_timeout_is_retried_then_logged_as_an_error(server: OpenAIServer, tmp_path: Path) -> None:
    with pytest.raises(QTableError, match="no prompt has an answer from every expert"):
        collect(sums(2), [entry(server, "good"), entry(server, "slow", concurrency=2)], scorer="numeric",
                out=tmp_path / "q.jsonl", timeout=0.3, retries=1, **FAST)
    slow = [r for r in CallLog(tmp_path / "q.calls.jsonl").records() if r.expert == "slow"]
    assert [(r.attempts, r.error.split(":")[0]) for r in slow] == [(2, "TimeoutError")] * 2
    assert server.count("slow") <= 4  # two attempts per prompt (a loaded machine may time out before the server reads one)
    assert not (tmp_path / "q.jsonl").exists()


def test_budget_stops_before_spend_would_pass_it(server: OpenAIServer, tmp_path: Path) -> None:
    # each call is estimated at 10 output tokens x 0.1 USD = 1 USD and really costs 4 x 0.1 = 0.4 USD
    expensive = entry(server, "good", input_cost=0.0, output_cost=100_000.0, expected_output_tokens=10)
    with pytest.raises(BudgetReachedError, match=r"budget reached: spent \$1.600000 of \$2.500000; 4 call\(s\) not made") as caught:
        collect(sums(8), [expensive], scorer="numeric", out=tmp_path / "q.jsonl", budget=2.5, concurrency=1, **FAST)
    assert caught.value.spent <= caught.value.budget
    assert server.count("good") == 4 and len(CallLog(tmp_path / "q.calls.jsonl").records()) == 4
    assert not (tmp_path / "q.jsonl").exists()
    # a higher budget resumes: only the 4 missing calls are made
    result = collect(sums(8), [expensive], scorer="numeric", out=tmp_path / "q.jsonl", budget=10.0, concurrency=1, **FAST)
    assert result.made == 4 and result.cached == 4 and server.count("good") == 8 and len(result.qtable) == 8


def test_budget_holds_with_concurrent_calls(server: OpenAIServer, tmp_path: Path) -> None:
    expensive = entry(server, "good", input_cost=0.0, output_cost=100_000.0, expected_output_tokens=10)
    with pytest.raises(BudgetReachedError) as caught:
        collect(sums(12), [expensive], scorer="numeric", out=tmp_path / "q.jsonl", budget=3.0, concurrency=4, **FAST)
    assert caught.value.spent <= 3.0
    assert server.count("good") == len(CallLog(tmp_path / "q.calls.jsonl").records()) >= 3


def test_dry_run_lists_calls_and_cost_and_calls_nothing(server: OpenAIServer, tmp_path: Path) -> None:
    experts = [entry(server, "good", expected_output_tokens=10), entry(server, "sloppy")]
    plan = collect(sums(3), experts, scorer="numeric", out=tmp_path / "q.jsonl", dry_run=True)
    assert isinstance(plan, DryRun) and server.requests == {}
    assert [(c.prompt_id, c.expert) for c in plan.calls] == [(f"p{i}", n) for i in range(3) for n in ("good", "sloppy")]
    first = plan.calls[0]  # "What is 0 plus 3?" is 17 bytes -> 6 tokens estimated; 10 output tokens
    assert (first.input_tokens, first.output_tokens) == (6, 10)
    assert first.cost == pytest.approx((6 * 1.0 + 10 * 2.0) / 1e6)
    assert plan.calls[1].output_tokens == 512  # nothing known about sloppy's answers yet
    assert plan.estimated_cost == pytest.approx(sum(c.cost for c in plan.calls))
    assert not (tmp_path / "q.calls.jsonl").exists()


def test_dry_run_skips_logged_calls_and_uses_their_mean_output(server: OpenAIServer, tmp_path: Path) -> None:
    collect(sums(2), [entry(server, "good")], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    plan = collect(sums(4), [entry(server, "good")], scorer="numeric", out=tmp_path / "q.jsonl", dry_run=True)
    assert plan.cached == 2 and [c.prompt_id for c in plan.calls] == ["p2", "p3"]
    assert plan.calls[0].output_tokens == 4  # the mean of the logged answers


def test_second_writer_is_refused(server: OpenAIServer, tmp_path: Path) -> None:
    with CallLog(tmp_path / "q.calls.jsonl"):
        with pytest.raises(LogLockedError, match=r"call log .*q.calls.jsonl is locked by another running collection"):
            collect(sums(2), [entry(server, "good")], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    assert server.requests == {}


def test_torn_last_line_is_cut_and_that_call_made_again(server: OpenAIServer, tmp_path: Path) -> None:
    collect(sums(3), [entry(server, "good")], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    log = tmp_path / "q.calls.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]) + lines[2][:25])  # the writer died in the middle of line 3
    result = collect(sums(3), [entry(server, "good")], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    assert result.made == 1 and result.cached == 2
    assert [r.prompt_id for r in CallLog(log).records()] == ["p0", "p1", "p2"] or \
        sorted(r.prompt_id for r in CallLog(log).records()) == ["p0", "p1", "p2"]
    assert all(line.endswith("\n") for line in log.read_text().splitlines(keepends=True))


def test_score_rescores_logged_answers_without_calls(server: OpenAIServer, tmp_path: Path) -> None:
    collect(sums(4), [entry(server, "good"), entry(server, "sloppy")], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    before = dict(server.requests)
    rows = [{**r, "reference": f"answer is {int(r['reference']) + 1}"} for r in sums(4)]
    result = score(tmp_path / "q.calls.jsonl", rows, scorer="contains", out=tmp_path / "q2.jsonl")
    assert dict(server.requests) == before
    # now the reference is one too many: only sloppy's odd answers contain it
    assert [json.loads(line)["scores"] for line in (tmp_path / "q2.jsonl").read_text().splitlines()] == \
        [{"good": 0.0, "sloppy": float(i % 2 == 1)} for i in range(4)]
    assert result.qtable.experts == ("good", "sloppy")
    assert ExpertLibrary.from_json(tmp_path / "q2.experts.json")["sloppy"].measured_cost == pytest.approx(13e-6)


def test_judge_scores_with_a_chat_model(server: OpenAIServer, tmp_path: Path) -> None:
    from tryage.collect import build_chat_models

    judge = build_chat_models([entry(server, "judge")])["judge"]
    result = collect(sums(4), [entry(server, "good"), entry(server, "sloppy")], scorer="judge", judge=judge,
                     out=tmp_path / "q.jsonl", **FAST)
    assert result.qtable.scores.tolist() == [[1.0, float(i % 2 == 0)] for i in range(4)]


def test_python_callable_expert_and_scorer(tmp_path: Path) -> None:
    def shout(prompt: str) -> str:
        return prompt.upper()

    async def whisper(prompt: str) -> dict:
        return {"text": prompt.lower(), "input_tokens": 3, "output_tokens": 2}

    def upper_share(answer: str, row) -> float:
        """Share of upper-case letters: higher is louder."""
        letters = [c for c in answer if c.isalpha()]
        return sum(c.isupper() for c in letters) / len(letters)

    result = collect(["Hello There", "abc"], {"shout": shout, "whisper": whisper}, scorer=upper_share,
                     log=tmp_path / "calls.jsonl", progress=False)
    assert result.qtable.scores.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    whispered = [r for r in result.records if r.expert == "whisper"]
    assert [(r.input_tokens, r.output_tokens, r.answer) for r in whispered] == [(3, 2, "hello there"), (3, 2, "abc")]


def test_chat_models_for_routing_come_from_the_same_entries(server: OpenAIServer, tmp_path: Path) -> None:
    from langchain_openai import ChatOpenAI

    from tryage.collect import build_chat_models

    path = write_experts(tmp_path / "experts.json", [entry(server, "good"), entry(server, "sloppy"),
                                                     {"name": "lm", "hf": str(tmp_path)}])
    models = build_chat_models(path)
    assert list(models) == ["good", "sloppy"] and all(isinstance(m, ChatOpenAI) for m in models.values())
    assert models["good"].invoke("What is 2 plus 2?").content == "The answer is 4."
    assert math.isclose(models["good"].temperature, 0.0)


def test_prompts_from_csv_with_choices(server: OpenAIServer, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("id,prompt,reference,choices,source\nq1,What is 1 plus 1?,B,1|2|3,mine\n", encoding="utf-8")
    result = collect(path, [entry(server, "good")], scorer="choice", out=tmp_path / "q.jsonl", **FAST)
    row = json.loads((tmp_path / "q.jsonl").read_text())
    assert row["choices"] == ["1", "2", "3"] and row["source"] == "mine" and row["reference"] == "B"
    assert result.qtable.scores.tolist() == [[0.0]]  # "The answer is 2." names no letter B


def test_experts_file_round_trip_through_write_jsonl(server: OpenAIServer, tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", sums(2))
    experts = write_experts(tmp_path / "e.json", [entry(server, "good")])
    result = collect(prompts, experts, scorer="exact", out=tmp_path / "q.jsonl", **FAST)
    assert result.qtable.scores.tolist() == [[0.0], [0.0]]  # "The answer is 3." is not exactly "3"


def test_repeated_prompt_text_is_refused_before_any_call(server: OpenAIServer, tmp_path: Path) -> None:
    from tryage.errors import PromptFileError

    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "What is 1 plus 3?"}, {"id": "b", "prompt": "What is 1 plus 3?"}])
    with pytest.raises(PromptFileError, match=r"p.jsonl, line 2: prompt of id 'b' repeats id 'a' \(line 1\)"):
        collect(path, [entry(server, "good")], scorer="regex", pattern="4", out=tmp_path / "q.jsonl", **FAST)
    assert server.requests == {}


def test_rate_limited_expert_still_makes_every_call_once(server: OpenAIServer, tmp_path: Path) -> None:
    result = collect(sums(6), [entry(server, "good", requests_per_second=50.0)], scorer="numeric",
                     out=tmp_path / "q.jsonl", concurrency=3, **FAST)
    assert result.made == 6 and server.count("good") == 6


def test_bad_entries_are_refused(server: OpenAIServer, tmp_path: Path) -> None:
    from tryage.errors import ExpertSpecError

    with pytest.raises(ExpertSpecError, match=r"expert 'x': unknown field\(s\) \['temprature'\]"):
        collect(sums(1), [{"name": "x", "model": "openai:good", "temprature": 0}], scorer="numeric", log=tmp_path / "c")
    with pytest.raises(ExpertSpecError, match="expert 'x': give exactly one of 'model'"):
        collect(sums(1), [{"name": "x"}], scorer="numeric", log=tmp_path / "c")
    with pytest.raises(ExpertSpecError, match=r"expert 'x': requests_per_second must be a finite number >= 0, got -1"):
        collect(sums(1), [entry(server, "good", name="x", requests_per_second=-1)], scorer="numeric", log=tmp_path / "c")
    # a NaN price would make every budget check pass (nothing compares greater than NaN)
    for price in (math.nan, math.inf):
        with pytest.raises(ExpertSpecError, match=rf"expert 'x': output_cost must be a finite number >= 0, got {price}"):
            collect(sums(1), [entry(server, "good", name="x", output_cost=price)], scorer="numeric",
                    log=tmp_path / "c", budget=1.0)
    experts = tmp_path / "nan.json"                       # JSON files may spell it NaN too
    experts.write_text('[{"name": "x", "model": "openai:good", "input_cost": NaN}]')
    with pytest.raises(ExpertSpecError, match=r"input_cost must be a finite number >= 0, got nan"):
        collect(sums(1), experts, scorer="numeric", log=tmp_path / "c", budget=1.0)
    assert server.requests == {}


def test_judge_replies_are_kept_and_not_paid_for_again(server: OpenAIServer, tmp_path: Path) -> None:
    from tryage.collect import build_chat_models

    judge = build_chat_models([entry(server, "judge")])["judge"]
    experts = [entry(server, "good"), entry(server, "sloppy")]
    collect(sums(3), experts, scorer="judge", judge=judge, out=tmp_path / "q.jsonl", **FAST)
    # 6 answers, 4 different ones: good and sloppy agree on prompts 0 and 2, and agreeing experts share
    # one judge call even when they are scored at the same time
    assert server.count("judge") == 4
    again = score(tmp_path / "q.calls.jsonl", sums(3), scorer="judge", judge=judge, out=tmp_path / "q2.jsonl")
    assert server.count("judge") == 4  # every reply came from q.calls.judge.jsonl
    # without --experts the columns are the logged experts in name order
    assert dict(zip(again.qtable.experts, again.qtable.scores.T.tolist())) == {"good": [1.0, 1.0, 1.0],
                                                                              "sloppy": [1.0, 0.0, 1.0]}
    assert len((tmp_path / "q.calls.judge.jsonl").read_text().splitlines()) == 4



def test_a_damaged_judge_log_costs_only_the_damaged_replies(server: OpenAIServer, tmp_path: Path) -> None:
    # A killed run leaves a torn last line; other damage (a hand edit, a foreign file) is skipped too.
    from tryage.collect import build_chat_models

    judge = build_chat_models([entry(server, "judge")])["judge"]
    experts = [entry(server, "good"), entry(server, "sloppy")]
    collect(sums(3), experts, scorer="judge", judge=judge, out=tmp_path / "q.jsonl", **FAST)
    log = tmp_path / "q.calls.judge.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    assert server.count("judge") == len(lines) == 4
    damaged = ['[1, 2]\n', '{"key": 7, "reply": "SCORE: 1"}\n', "not json\n"]
    log.write_text("".join(damaged + lines[2:] + [lines[0][:25]]))   # reply 0 torn, reply 1 gone
    again = score(tmp_path / "q.calls.jsonl", sums(3), scorer="judge", judge=judge, out=tmp_path / "q2.jsonl")
    assert server.count("judge") == 6                  # only the two lost replies were asked again
    # without --experts the columns are the logged experts in name order
    assert dict(zip(again.qtable.experts, again.qtable.scores.T.tolist())) == {"good": [1.0, 1.0, 1.0],
                                                                              "sloppy": [1.0, 0.0, 1.0]}
    records = [json.loads(line) for line in log.read_text().splitlines()[3:]]   # the torn line is gone
    assert len(records) == 4 and {r["key"] for r in records} == {json.loads(line)["key"] for line in lines}

@pytest.mark.parametrize("header", ["0.8", "HTTP-date"])
def test_a_429_with_retry_after_is_waited_out_not_retried_at_once(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path, header: str) -> None:
    # Backoff alone would retry after ~10 ms; the server asked for 0.8 s (as seconds, or as an HTTP date).
    import email.utils
    import time

    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    value = header if header != "HTTP-date" else email.utils.formatdate(time.time() + 1.9, usegmt=True)
    with OpenAIServer(retry_after=value) as server:
        result = collect(sums(2), [entry(server, "flaky")], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
        assert result.errors == 0 and server.count("flaky") == 4
        gaps = [times[1] - times[0] for times in server.times.values()]
    assert len(gaps) == 2 and min(gaps) >= 0.75


def test_retry_after_is_read_from_the_headers_a_provider_error_carries() -> None:
    import httpx

    from tryage.collect.runner import retry_after

    def error(**headers: str) -> Exception:
        exc = RuntimeError("429")
        exc.response = httpx.Response(429, headers=headers)  # type: ignore[attr-defined]
        return exc

    assert retry_after(error(**{"retry-after-ms": "1500"})) == 1.5
    assert retry_after(error(**{"retry-after": "3"})) == 3.0
    assert retry_after(error(**{"retry-after": "soon"})) is None      # unreadable: plain backoff
    assert retry_after(error()) is None and retry_after(RuntimeError("no response")) is None


def judge_entry(server: OpenAIServer, model: str = "judge", **extra: object) -> dict:
    """The judge as an entry with its prices: 0.01 USD a token (the server counts words) in and out."""
    return {**entry(server, model, input_cost=10_000.0, output_cost=10_000.0, expected_output_tokens=8), **extra}


def test_budget_counts_the_judge_and_a_rerun_resumes_from_both_logs(server: OpenAIServer, tmp_path: Path) -> None:
    free = [entry(server, "good", input_cost=0.0, output_cost=0.0),
            entry(server, "sloppy", input_cost=0.0, output_cost=0.0)]
    # a judge call is estimated at ~1.4 USD (its question is ~400 bytes) and really costs ~0.7 USD: at a
    # budget of 2 one call fits, the second would pass it
    with pytest.raises(BudgetReachedError, match=r"budget reached: spent \$0\.\d+ of \$2\.000000") as caught:
        collect(sums(3), free, scorer="judge", judge=judge_entry(server), out=tmp_path / "q.jsonl", budget=2.0, **FAST)
    judge_log = tmp_path / "q.calls.judge.jsonl"
    first = [json.loads(line) for line in judge_log.read_text().splitlines()]
    assert server.count("judge") == len(first) == 1
    assert caught.value.spent == pytest.approx(first[0]["cost"]) and 0 < first[0]["cost"] <= 2.0
    assert len(CallLog(tmp_path / "q.calls.jsonl").records()) == 6       # the answers were paid for and kept

    result = collect(sums(3), free, scorer="judge", judge=judge_entry(server), out=tmp_path / "q.jsonl",
                     budget=10.0, **FAST)
    assert server.count("good") == server.count("sloppy") == 3           # no expert asked again
    assert server.count("judge") == 4                                    # only the three missing replies
    replies = [json.loads(line) for line in judge_log.read_text().splitlines()]
    assert result.made == 0 and result.judge_spent == pytest.approx(sum(r["cost"] for r in replies[1:]))
    assert result.spent == result.judge_spent and result.qtable.scores.tolist() == [[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]


def test_a_budget_with_a_judge_of_unknown_price_is_refused_before_any_call(server: OpenAIServer, tmp_path: Path) -> None:
    from tryage.collect import build_chat_models
    from tryage.errors import ConfigurationError

    judge = build_chat_models([entry(server, "judge")])["judge"]     # a chat model: its prices are unknown
    with pytest.raises(ConfigurationError, match=r"a budget counts the judge's calls too, but the judge's prices are unknown"):
        collect(sums(2), [entry(server, "good")], scorer="judge", judge=judge, out=tmp_path / "q.jsonl", budget=5.0, **FAST)
    with pytest.raises(ConfigurationError, match=r"the judge's prices are unknown"):
        score(tmp_path / "q.calls.jsonl", sums(2), scorer="judge", judge=judge, budget=5.0)
    assert server.requests == {}


def test_a_rate_limited_judge_is_retried(server: OpenAIServer, tmp_path: Path) -> None:
    result = collect(sums(3), [entry(server, "good"), entry(server, "sloppy")], scorer="judge",
                     judge=judge_entry(server, "flaky-judge"), out=tmp_path / "q.jsonl", **FAST)
    assert result.qtable.scores.tolist() == [[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    assert server.count("flaky-judge") == 8      # 4 different questions, each refused once with a 429


def test_dry_run_estimates_the_judge_and_needs_no_key(server: OpenAIServer, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    experts = [entry(server, "good", expected_output_tokens=10), entry(server, "sloppy", expected_output_tokens=10)]
    collect(sums(2), experts, scorer="judge", judge=judge_entry(server), out=tmp_path / "q.jsonl", **FAST)
    asked = server.count("judge")
    monkeypatch.delenv("OPENAI_API_KEY")
    plan = collect(sums(4), experts, scorer="judge", judge=judge_entry(server), out=tmp_path / "q.jsonl", dry_run=True)
    # prompts 0 and 1 are answered and judged: only prompts 2 and 3 (two experts each) would be judged
    assert plan.judge_calls == 4 and len(plan.calls) == 4 and server.count("judge") == asked
    assert plan.judge_cost > 0 and plan.estimated_cost == pytest.approx(sum(c.cost for c in plan.calls) + plan.judge_cost)


def test_a_budget_with_an_api_expert_of_unknown_price_is_refused_before_any_call(server: OpenAIServer,
                                                                                  tmp_path: Path) -> None:
    from tryage.errors import ConfigurationError

    unpriced = {k: v for k, v in entry(server, "sloppy").items() if k != "output_cost"}
    with pytest.raises(ConfigurationError, match=r"a budget counts every call, but expert\(s\) 'sloppy' have no price"):
        collect(sums(2), [entry(server, "good"), unpriced], scorer="numeric", out=tmp_path / "q.jsonl", budget=5.0, **FAST)
    assert server.requests == {}
    # without a budget it runs (its calls are logged at cost 0); a local callable counts as free
    assert collect(sums(2), [unpriced], scorer="numeric", out=tmp_path / "q.jsonl", **FAST).made == 2
    assert collect(sums(2), {"echo": lambda p: p}, scorer=lambda a, r: 1.0, log=tmp_path / "c.jsonl", budget=0.0,
                   **FAST).made == 2


def test_the_judge_shows_its_progress_and_spend(server: OpenAIServer, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    collect(sums(3), [entry(server, "good")], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    capsys.readouterr()
    score(tmp_path / "q.calls.jsonl", sums(3), scorer="judge", judge=judge_entry(server), progress=True)
    err = capsys.readouterr().err
    assert "judge: 100%" in err and "3/3" in err and "spent=$" in err


def test_a_dry_run_reads_the_judge_log_once_not_per_answer(server: OpenAIServer, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from tryage.collect.scorers import Judge

    experts = [entry(server, "good"), entry(server, "sloppy")]
    collect(sums(4), experts, scorer="judge", judge=judge_entry(server), out=tmp_path / "q.jsonl", **FAST)
    reads = []
    real = Judge._records
    monkeypatch.setattr(Judge, "_records", lambda self: reads.append(1) or real(self))
    plan = collect(sums(40), experts, scorer="judge", judge=judge_entry(server), out=tmp_path / "q.jsonl", dry_run=True)
    assert plan.judge_calls == 72 and len(reads) <= 2     # the replies once, the output lengths once
