"""``tryage collect`` / ``tryage score`` on the command line: one-line errors, a killed run resumed,
and collect -> train -> route."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("langchain_openai", reason="these tests drive the real ChatOpenAI (extra 'collect')")

from collect_helpers import entry, sums, write_experts, write_jsonl  # noqa: E402
from openai_server import OpenAIServer  # noqa: E402

from tryage.cli import main
from tryage.collect import CallLog


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def collect_args(tmp_path: Path, experts: Path, prompts: Path, *extra: str, scorer: str = "numeric") -> list[str]:
    return ["collect", "--prompts", str(prompts), "--experts", str(experts), "--scorer", scorer,
            "--out", str(tmp_path / "q.jsonl"), *extra]


def assert_one_line_error(code: int, err: str, *parts: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tryage: error: "), err
    for part in parts:
        assert part in lines[0], lines[0]


def test_unknown_provider_is_one_line(server: OpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [{"name": "x", "model": "nosuchprovider:some-model"}])
    code, _, err = run_cli(capsys, *collect_args(tmp_path, experts, write_jsonl(tmp_path / "p.jsonl", sums(2))))
    assert_one_line_error(code, err, "expert 'x': unknown model provider 'nosuchprovider'", "'openai:gpt-4o-mini'")


def test_missing_key_is_one_line(server: OpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")   # a remote server needs a key (a local one does not: test_collect_limits)
    remote = {**entry(server, "good"), "model_kwargs": {"base_url": "https://models.example.com/v1"}}
    experts = write_experts(tmp_path / "e.json", [remote])
    code, _, err = run_cli(capsys, *collect_args(tmp_path, experts, write_jsonl(tmp_path / "p.jsonl", sums(2))))
    assert_one_line_error(code, err, "expert 'good': no API key; set the environment variable OPENAI_API_KEY")
    assert server.requests == {}


def test_key_written_in_the_experts_file_is_refused(server: OpenAIServer, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = entry(server, "good")
    bad["model_kwargs"]["api_key"] = "sk-oops"
    experts = write_experts(tmp_path / "e.json", [bad])
    code, _, err = run_cli(capsys, *collect_args(tmp_path, experts, write_jsonl(tmp_path / "p.jsonl", sums(2))))
    assert_one_line_error(code, err, "model_kwargs ['api_key'] hold a key; keys are read from the environment only")


def test_prompt_file_without_prompt_is_one_line(server: OpenAIServer, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [entry(server, "good")])
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What is 1 plus 3?"}, {"question": "hi", "id": "q2"}])
    code, _, err = run_cli(capsys, *collect_args(tmp_path, experts, prompts))
    assert_one_line_error(code, err, "p.jsonl, line 2: a row needs a 'prompt' field; it has ['id', 'question']")


def test_scorer_needing_a_reference_is_one_line_before_any_call(server: OpenAIServer, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [entry(server, "good")])
    prompts = write_jsonl(tmp_path / "p.jsonl", [*sums(2), {"id": "free", "prompt": "Say hi"}])
    code, _, err = run_cli(capsys, *collect_args(tmp_path, experts, prompts, scorer="exact"))
    assert_one_line_error(code, err, "scorer 'exact' needs a 'reference' for every prompt; 1 have none, e.g. id 'free' (line 3)")
    assert server.requests == {}


def test_unknown_scorer_lists_the_known_ones(server: OpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [entry(server, "good")])
    code, _, err = run_cli(capsys, *collect_args(tmp_path, experts, write_jsonl(tmp_path / "p.jsonl", sums(1)),
                                                 scorer="bleu"))
    assert_one_line_error(code, err, "unknown scorer 'bleu'; built-in scorers: exact, numeric, choice, contains, contains-substring, yes-no, "
                                     "lm-loss, regex, judge")


def test_unparseable_judge_reply_is_one_line(server: OpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [entry(server, "good")])
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "u", "prompt": "an unparseable question"}])
    code, _, err = run_cli(capsys, *collect_args(tmp_path, experts, prompts, "--judge-model", "openai:judge",
                                                 "--judge-kwargs", json.dumps({"base_url": server.base_url}),
                                                 scorer="judge"))
    assert_one_line_error(code, err, "cannot read a score in [0, 1] from the judge's reply 'I cannot say.'",
                          "SCORE: <number between 0 and 1>")
    assert len(CallLog(tmp_path / "q.calls.jsonl").records()) == 1  # the answer is kept: re-score it later


def test_budget_reached_is_one_line(server: OpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [entry(server, "good", output_cost=100_000.0, expected_output_tokens=10)])
    code, _, err = run_cli(capsys, *collect_args(tmp_path, experts, write_jsonl(tmp_path / "p.jsonl", sums(5)),
                                                 "--budget", "2.5", "--concurrency", "1"))
    assert_one_line_error(code, err, "budget reached: spent $", "of $2.500000", "rerun with a higher --budget")


def test_dry_run_prints_calls_and_estimate(server: OpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [entry(server, "good", expected_output_tokens=10)])
    code, out, _ = run_cli(capsys, *collect_args(tmp_path, experts, write_jsonl(tmp_path / "p.jsonl", sums(2)),
                                                 "--dry-run", "--budget", "1"))
    assert code == 0 and server.requests == {}
    assert "p0         good" in out and "p1         good" in out
    assert out.strip().endswith("2 call(s) to make, 0 in the log already; estimated cost $0.000052 (budget $1.000000)")


def test_collect_train_route_on_the_command_line(server: OpenAIServer, tmp_path: Path, tiny_encoder: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [entry(server, "good"), entry(server, "sloppy")])
    prompts = write_jsonl(tmp_path / "p.jsonl", sums(12))
    code, out, _ = run_cli(capsys, *collect_args(tmp_path, experts, prompts, "--json"))
    summary = json.loads(out)
    assert code == 0 and summary["rows"] == 12 and summary["calls_made"] == 24
    assert [e["mean_score"] for e in summary["experts"]] == [1.0, 0.5]
    code, out, _ = run_cli(capsys, "score", "--log", tmp_path / "q.calls.jsonl", "--prompts", prompts,
                           "--scorer", "regex", "--pattern", r"answer is \d+\.$", "--out", tmp_path / "r.jsonl", "--json")
    assert code == 0 and [e["mean_score"] for e in json.loads(out)["experts"]] == [1.0, 1.0]
    assert sum(server.requests.values()) == 24
    code, _, err = run_cli(capsys, "train", "--qtable", tmp_path / "q.jsonl", "--experts", tmp_path / "q.experts.json",
                           "--out", tmp_path / "router", "--encoder", tiny_encoder, "--epochs", "3", "--json")
    assert code == 0, err
    code, out, err = run_cli(capsys, "route", "What is 7 plus 3?", "--router", tmp_path / "router",
                             "--weight", "latency=0.5", "--json")
    assert code == 0, err
    decision = json.loads(out)
    assert decision["expert"] in ("good", "sloppy")
    assert {s["expert"]: set(s["penalties"]) for s in decision["scores"]} == {"good": {"latency"}, "sloppy": {"latency"}}


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def test_killed_collection_resumes_with_no_call_lost_or_repeated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    prompts = write_jsonl(tmp_path / "p.jsonl", sums(16))
    env = dict(os.environ)  # the CLI runs in a child process, as a user would run it

    def cli(folder: Path, server: OpenAIServer) -> list[str]:
        folder.mkdir(exist_ok=True)
        experts = write_experts(folder / "e.json", [entry(server, "good", concurrency=1), entry(server, "sloppy", concurrency=1)])
        return [sys.executable, "-m", "tryage.cli", "collect", "--prompts", str(prompts), "--experts", str(experts),
                "--scorer", "numeric", "--out", str(folder / "q.jsonl")]

    with OpenAIServer(delay=0.05) as whole_server:  # the uninterrupted run
        whole = tmp_path / "whole"
        subprocess.run(cli(whole, whole_server), env=env, check=True, capture_output=True, timeout=120)
    with OpenAIServer(delay=0.05) as server:
        killed = tmp_path / "killed"
        log = killed / "q.calls.jsonl"
        process = subprocess.Popen(cli(killed, server), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while _lines(log) < 8 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        before = {(r.prompt_id, r.expert) for r in CallLog(log).records()}
        assert 8 <= len(before) < 32 and not (killed / "q.jsonl").exists()
        subprocess.run(cli(killed, server), env=env, check=True, capture_output=True, timeout=120)
        requests = dict(server.requests)

    def rows(folder: Path) -> list[dict]:
        out = []
        for line in (folder / "q.jsonl").read_text().splitlines():
            row = json.loads(line)
            row.pop("latency_s")
            out.append(row)
        return out

    def calls(folder: Path) -> list[tuple]:
        records = CallLog(folder / "q.calls.jsonl").records()
        return sorted((r.prompt_id, r.expert, r.settings, r.answer, r.input_tokens, r.output_tokens, r.cost, r.error)
                      for r in records)

    assert rows(killed) == rows(whole)
    assert calls(killed) == calls(whole)  # every call logged exactly once, with the same answer
    assert len(calls(killed)) == 32
    # no logged call was made again; only a call in flight at the kill (one per expert at most) was
    prompt_of = {f"What is {i} plus 3?": f"p{i}" for i in range(16)}
    repeated = {(prompt_of[p], m) for (m, p), n in requests.items() if n > 1}
    assert all(n <= 2 for n in requests.values()) and len(repeated) <= 2
    assert not repeated & before


def judge_args(server: OpenAIServer, model: str = "judge", *prices: str) -> list[str]:
    return ["--judge-model", f"openai:{model}", "--judge-kwargs", json.dumps({"base_url": server.base_url}), *prices]


def test_a_judge_that_refuses_the_key_is_one_line(server: OpenAIServer, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [entry(server, "good")])
    prompts = write_jsonl(tmp_path / "p.jsonl", sums(3))
    code, _, err = run_cli(capsys, *collect_args(tmp_path, experts, prompts, "--concurrency", "1",
                                                 *judge_args(server, "locked"), scorer="judge"))
    assert_one_line_error(code, err, "the judge's call failed after 1 attempt(s): ", "AuthenticationError (401)",
                          "a rerun resumes from them")
    assert server.count("locked") == 1      # after a 401 no other judge call is made (one at a time here)
    assert len(CallLog(tmp_path / "q.calls.jsonl").records()) == 3


def test_budget_with_an_unpriced_judge_is_one_line_and_calls_nothing(server: OpenAIServer, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [entry(server, "good")])
    prompts = write_jsonl(tmp_path / "p.jsonl", sums(2))
    code, _, err = run_cli(capsys, *collect_args(tmp_path, experts, prompts, "--budget", "1", *judge_args(server),
                                                 scorer="judge"))
    assert_one_line_error(code, err, "the judge's prices are unknown", "--judge-input-price/--judge-output-price")
    assert server.requests == {}


def test_dry_run_counts_the_judge(server: OpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [entry(server, "good", expected_output_tokens=10)])
    prompts = write_jsonl(tmp_path / "p.jsonl", sums(3))
    code, out, _ = run_cli(capsys, *collect_args(tmp_path, experts, prompts, "--dry-run", "--json", "--budget", "9",
                                                 *judge_args(server, "judge", "--judge-input-price", "1",
                                                             "--judge-output-price", "2"), scorer="judge"))
    plan = json.loads(out)
    assert code == 0 and plan["judge_calls"] == 3 and plan["judge_cost"] > 0 and server.requests == {}
    assert plan["estimated_cost"] == pytest.approx(sum(c["cost"] for c in plan["calls"]) + plan["judge_cost"])


def test_score_with_a_judge_keeps_to_its_budget(server: OpenAIServer, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    experts = write_experts(tmp_path / "e.json", [entry(server, "good")])
    prompts = write_jsonl(tmp_path / "p.jsonl", sums(2))
    assert run_cli(capsys, *collect_args(tmp_path, experts, prompts))[0] == 0
    rescore = ["score", "--log", tmp_path / "q.calls.jsonl", "--prompts", prompts, "--scorer", "judge",
               "--out", tmp_path / "q2.jsonl", *judge_args(server, "judge", "--judge-input-price", "10000",
                                                           "--judge-output-price", "10000")]
    # a judge call is estimated at ~1.4 USD: a budget of 1 makes none
    code, _, err = run_cli(capsys, *rescore, "--budget", "1")
    assert_one_line_error(code, err, "budget reached: spent $0.000000 of $1.000000")
    assert server.count("judge") == 0 and not (tmp_path / "q2.jsonl").exists()
    code, out, _ = run_cli(capsys, *rescore, "--budget", "100", "--json")
    summary = json.loads(out)
    assert code == 0 and server.count("judge") == 2 and summary["calls_made"] == 0
    assert 0 < summary["judge_spent"] == summary["spent"] <= 100
