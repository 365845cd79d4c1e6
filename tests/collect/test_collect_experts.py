"""The experts file a newcomer writes for a local OpenAI-compatible server: limits that reach it, no dummy
key, the metadata a router needs, one name for prices, a system prompt, and errors that name the entry,
the expert and its URL. Every call goes to a real HTTP server on 127.0.0.1 through LangChain's ChatOpenAI."""

from __future__ import annotations

import json
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest

from collect_helpers import entry, sums, write_experts, write_jsonl
from openai_server import OpenAIServer
from test_cli_collect import assert_one_line_error, collect_args, run_cli
from tryage import TryageRouter
from tryage.collect import collect, load_experts
from tryage.collect.budget import Budget
from tryage.errors import (BudgetReachedError, ExpertSpecError, ExpertUnreachableError, LimitIgnoredWarning,
                           QTableError)

FAST = {"retries": 0, "progress": False}


def limited(server: OpenAIServer, model: str, limit: int, **extra: object) -> dict[str, object]:
    base = entry(server, model, **extra)
    return {**base, "model_kwargs": {**base["model_kwargs"], "max_tokens": limit}}


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- limits ---------------------------------------------------------------------------------------
def test_max_tokens_reaches_a_local_server_in_the_field_it_reads(server: OpenAIServer, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", LimitIgnoredWarning)   # the server keeps the limit: no warning
        result = collect(sums(3), [limited(server, "good", 2)], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    assert [(b.get("max_tokens"), b.get("max_completion_tokens")) for b in server.bodies] == [(2, 2)] * 3
    assert {r.output_tokens for r in result.records} == {2}          # "The answer" and no more


def test_a_server_that_ignores_max_tokens_is_warned_about_once_per_expert(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with OpenAIServer(honour_max_tokens=False) as server, pytest.warns(LimitIgnoredWarning) as caught:
        result = collect(sums(3), [limited(server, "good", 2), limited(server, "sloppy", 8)], scorer="numeric",
                         out=tmp_path / "q.jsonl", concurrency=1, **FAST)
    messages = [str(w.message) for w in caught if w.category is LimitIgnoredWarning]
    assert len(messages) == 1, messages                    # 'good' (4 words > 2), once; 'sloppy' kept within 8
    assert messages[0].startswith(f"expert 'good' at {server.base_url} answered with 4 output tokens though its "
                                  "max_tokens is 2: its server ignores the limit")
    assert result.qtable.scores.tolist() == [[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]


def test_with_a_budget_a_server_that_ignores_max_tokens_cannot_take_the_spend_past_it(tmp_path: Path,
                                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # 0.1 USD an output token; max_tokens 1 says 0.1 a call, the server answers 4 tokens (0.4 USD). Counting
    # each call at its max_tokens would start a third call at 0.8 spent and end at 1.2 of a 1.0 budget. After
    # the first answer the expert is estimated at its longest answer (0.4) and the budget holds the 0.3 that
    # answer passed its estimate by: 0.4 + 0.4 + 0.3 > 1, so the run stops, on the safe side.
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with OpenAIServer(honour_max_tokens=False) as server, warnings.catch_warnings():
        warnings.simplefilter("ignore", LimitIgnoredWarning)
        expert = limited(server, "good", 1, input_cost=0.0, output_cost=100_000.0)
        with pytest.raises(BudgetReachedError) as raised:
            collect(sums(5), [expert], scorer="numeric", out=tmp_path / "q.jsonl", budget=1.0, concurrency=1, **FAST)
    assert raised.value.spent == pytest.approx(0.4) and raised.value.remaining_calls == 4
    assert server.count("good") == 1


def test_the_budget_holds_the_worst_overrun_in_every_later_reservation() -> None:
    ledger = Budget(1.0)
    ledger.commit(ledger.reserve(0.1), 0.4)           # a call that cost 0.3 more than it reserved
    assert ledger.overrun == pytest.approx(0.3)
    held = ledger.reserve(0.1)
    assert held == pytest.approx(0.4) and ledger.reserved == pytest.approx(0.4)
    assert not ledger.fits(0.3)                        # 0.4 spent + 0.4 held + 0.3 + 0.3 overrun > 1
    ledger.commit(0.0, 0.05)                           # counted without a reservation (the Ray driver's)
    assert ledger.overrun == pytest.approx(0.3)


# -- keys -----------------------------------------------------------------------------------------
def test_a_keyless_local_server_needs_no_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAIServer(api_key=None) as server:
        for host in ("127.0.0.1", "localhost"):
            good = entry(server, "good")
            good["model_kwargs"]["base_url"] = server.base_url.replace("127.0.0.1", host)
            result = collect(sums(2), [good], scorer="numeric", log=tmp_path / f"{host}.calls.jsonl", **FAST)
            assert result.qtable.scores.tolist() == [[1.0], [1.0]]


def test_a_remote_server_still_needs_its_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    remote = {"name": "far", "model": "openai:good", "model_kwargs": {"base_url": "https://models.example.com/v1"}}
    with pytest.raises(PermissionError, match="expert 'far': no API key; set the environment variable OPENAI_API_KEY"):
        collect(sums(1), [remote], scorer="numeric", log=tmp_path / "c.jsonl", **FAST)


# -- one entry format -----------------------------------------------------------------------------
def test_old_price_names_are_read_with_a_deprecation_warning(server: OpenAIServer, tmp_path: Path) -> None:
    old = {k: v for k, v in entry(server, "good").items() if k not in ("input_cost", "output_cost")}
    with pytest.warns(DeprecationWarning) as caught:
        (spec,) = load_experts([{**old, "input_price": 1.0, "output_price": 2.0}])
    assert [str(w.message) for w in caught] == [
        "expert 'good': 'input_price' is deprecated; write 'input_cost' (USD per 1M tokens)",
        "expert 'good': 'output_price' is deprecated; write 'output_cost' (USD per 1M tokens)"]
    assert (spec.input_cost, spec.output_cost) == (1.0, 2.0)
    with pytest.raises(ExpertSpecError, match="expert 'good': give 'input_cost' only"):
        load_experts([{**old, "input_price": 1.0, "input_cost": 1.0}])


def test_an_entry_carries_the_metadata_a_collected_router_routes_on(server: OpenAIServer, tmp_path: Path) -> None:
    experts = [entry(server, "good", parameters="1.7B", created_at="2024-11-01", license="apache-2.0"),
               entry(server, "sloppy", parameters="135M", created_at="2024-10-01", tags=["small"])]
    result = collect(sums(2), experts, scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    library = json.loads((tmp_path / "q.experts.json").read_text())["experts"]
    assert [(e["name"], e["parameters"], e["created_at"], e["license"], e["input_cost"]) for e in library] == [
        ("good", 1_700_000_000, "2024-11-01T00:00:00Z", "apache-2.0", 1.0),
        ("sloppy", 135_000_000, "2024-10-01T00:00:00Z", None, 1.0)]

    class Even:   # the same predicted loss for both: the flag alone decides
        experts = ("good", "sloppy")

        def predict_losses(self, prompts: list[str]) -> np.ndarray:
            return np.full((len(prompts), 2), 0.5)

    router = TryageRouter(Even(), result.library)
    assert [d.expert for d in router.route_batch(["What is 2 plus 2? [Flag: smallest model]",
                                                  "What is 2 plus 2? [Flag: largest model]"])] == ["sloppy", "good"]


def test_a_system_prompt_is_sent_before_the_prompt_and_is_part_of_the_settings(server: OpenAIServer,
                                                                                 tmp_path: Path) -> None:
    plain, terse = entry(server, "good"), entry(server, "good", name="terse", system_prompt="Answer in one word.")
    collect(sums(1), [plain, terse], scorer="numeric", log=tmp_path / "c.jsonl", **FAST)
    sent = sorted((len(b["messages"]), b["messages"][0]) for b in server.bodies)
    assert sent == [(1, {"role": "user", "content": "What is 0 plus 3?"}),
                    (2, {"role": "system", "content": "Answer in one word."})]
    (before,), (after,) = load_experts([plain]), load_experts([{**terse, "name": "good"}])
    assert before.settings_hash() != after.settings_hash()   # a new system prompt: no cached answer reused


@pytest.mark.parametrize(("entries", "message"), [
    ([{"model": "openai:good"}], "an expert entry needs a 'name' (entry 1 of {file}); it has ['model']"),
    ([{"name": "a", "model": "openai:a"}, {"model": "openai:b", "input_cost": 1}],
     "an expert entry needs a 'name' (entry 2 of {file}); it has ['input_cost', 'model']"),
    ([{"name": "slow", "model": "openai:good", "requests_per_second": 0}],
     "expert 'slow': requests_per_second must be > 0 (leave it out for no rate limit), got 0"),
    ([{"name": "big", "model": "openai:good", "parameters": "huge"}], "expert 'big': cannot read parameter count 'huge'"),
])
def test_a_bad_entry_is_one_line_naming_it(server: OpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           entries: list[dict[str, object]], message: str) -> None:
    experts = write_experts(tmp_path / "e.json", entries)
    code, _, err = run_cli(capsys, *collect_args(tmp_path, experts, write_jsonl(tmp_path / "p.jsonl", sums(1))))
    assert_one_line_error(code, err, message.format(file=experts))
    assert server.requests == {}


# -- unreachable servers --------------------------------------------------------------------------
def test_an_unreachable_expert_is_named_with_its_url(server: OpenAIServer, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    down = {**entry(server, "good", name="small"), "model_kwargs": {"base_url": url}}
    with pytest.raises(QTableError, match=rf"ExpertUnreachableError: expert 'small' at {url} is unreachable: "
                                          r"connection refused"):
        collect(sums(2), [down], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    log = [json.loads(line) for line in (tmp_path / "q.calls.jsonl").read_text().splitlines()]
    assert {r["error"] for r in log} == {f"ExpertUnreachableError: expert 'small' at {url} is unreachable: "
                                         "connection refused (is its server running?)"}


def test_a_down_server_stops_its_experts_calls_while_the_others_go_on(server: OpenAIServer, tmp_path: Path) -> None:
    # before: every one of 40 prompts went through its own retry cycle against the refused port (~40 s for 48
    # prompts in the first-hour walk); now the first call's retries decide, and a rerun resumes the rest
    url = f"http://127.0.0.1:{closed_port()}/v1"
    down = {**entry(server, "good", name="small"), "model_kwargs": {"base_url": url}}
    with pytest.raises(QTableError, match="no prompt has an answer from every expert"):
        collect(sums(40), [entry(server, "good"), down], scorer="numeric", out=tmp_path / "q.jsonl",
                concurrency=1, **FAST)
    log = [json.loads(line) for line in (tmp_path / "q.calls.jsonl").read_text().splitlines()]
    assert sum(r["expert"] == "good" and r["error"] is None for r in log) == 40
    assert [r["expert"] for r in log if r["error"]] == ["small"]


def test_an_unknown_host_is_named_as_such(server: OpenAIServer, tmp_path: Path) -> None:
    down = {**entry(server, "good", name="far"), "model_kwargs": {"base_url": "http://no-such-host.invalid/v1"}}
    with pytest.raises(QTableError, match=r"expert 'far' at http://no-such-host.invalid/v1 is unreachable: its host "
                                          r"name does not resolve \(DNS\)"):
        collect(sums(1), [down], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)


def test_unreachable_is_a_connection_error_that_pickles() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(ExpertUnreachableError("small", "http://127.0.0.1:9/v1", "timeout", True)))
    assert isinstance(error, ConnectionError) and error.timed_out
    assert str(error) == "expert 'small' at http://127.0.0.1:9/v1 is unreachable: timeout"


def test_discover_fills_what_an_entry_leaves_out_from_the_hub(server: OpenAIServer, tmp_path: Path) -> None:
    from hub_fake_server import FakeHub
    from tryage.collect.entries import discover_metadata
    from tryage.hub.client import HubClient

    mine = entry(server, "good", repo_id="HuggingFaceTB/SmolLM2-135M", discover=True, license="my-licence")
    with FakeHub() as hub:
        (spec,) = discover_metadata(load_experts([mine]), client=HubClient(endpoint=hub.url, cache_dir=tmp_path,
                                                                            token=False))
    assert 100_000_000 < spec.to_expert().parameters < 200_000_000 and spec.created_at is not None
    assert spec.license == "my-licence" and not spec.discover          # the entry's own value wins
    result = collect(sums(1), [spec], scorer="numeric", out=tmp_path / "q.jsonl", **FAST)
    assert result.library["good"].parameters == spec.to_expert().parameters
    assert result.library["good"].repo_id == "HuggingFaceTB/SmolLM2-135M"


def test_scorer_map_and_row_scorers_from_the_command_line(server: OpenAIServer, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": "s", "prompt": "What is 2 plus 3?", "reference": "5", "task": "sum"},
            {"id": "w", "prompt": "Spell abc backwards.", "reference": "cba", "task": "spell"},
            {"id": "x", "prompt": "Spell xyz backwards.", "reference": "Backwards: zyx", "scorer": "exact"}]
    experts = write_experts(tmp_path / "e.json", [entry(server, "sloppy")])
    args = collect_args(tmp_path, experts, write_jsonl(tmp_path / "p.jsonl", rows), scorer="exact")
    code, _, _ = run_cli(capsys, *args, "--scorer-map", '{"sum": "numeric", "spell": "contains"}')
    assert code == 0
    table = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [(r["id"], r["scores"]["sloppy"]) for r in table] == [("s", 1.0), ("w", 1.0), ("x", 1.0)]
    code, _, err = run_cli(capsys, *args, "--scorer-map", '{"sum": "rouge"}')
    assert_one_line_error(code, err, "prompt 's' (task 'sum'): unknown scorer 'rouge'")


def test_one_experts_file_serves_collect_the_library_and_serve(server: OpenAIServer, tmp_path: Path) -> None:
    from tryage import ExpertLibrary
    from tryage.serve.upstream import Upstream

    path = write_experts(tmp_path / "experts.json", [
        entry(server, "good", parameters="1.7B", system_prompt="Be brief.", repo_id="HuggingFaceTB/SmolLM2-1.7B"),
        {**limited(server, "sloppy", 8), "parameters": "135M", "requests_per_second": 5}])
    assert [s.name for s in load_experts(path)] == ["good", "sloppy"]
    library = ExpertLibrary.from_json(path)
    assert [(e.name, e.parameters, e.input_cost, e.repo_id) for e in library] == [
        ("good", 1_700_000_000, 1.0, "HuggingFaceTB/SmolLM2-1.7B"), ("sloppy", 135_000_000, 1.0, "openai:sloppy")]
    assert [Upstream.from_spec(s).model for s in load_experts(path)] == ["good", "sloppy"]
