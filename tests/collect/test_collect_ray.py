"""``collect(..., backend="ray")`` on a real local Ray instance (2 CPUs) against the local OpenAI server."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

pytest.importorskip("langchain_openai", reason="these tests drive the real ChatOpenAI (extra 'collect')")
ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'tryage[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'tryage[ray]')")

from collect_helpers import API_KEY, entry, sums, write_experts, write_jsonl
from openai_server import OpenAIServer
from tryage.collect import CallLog, collect
from tryage.errors import BudgetReachedError, ConfigurationError

FAST = {"retry_base": 0.01, "progress": False}


@pytest.fixture(scope="module")
def cluster() -> str:
    """One local Ray instance for the module; its workers get the API key from their environment."""
    os.environ.setdefault("RAY_worker_niceness", "0")  # as in tests/test_distributed.py
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OPENAI_API_KEY": API_KEY}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def without_latency(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("latency_s",)} for r in rows]


def log_records(path: Path) -> list[dict]:
    """The call log's records without latency, in key order (both backends log in completion order)."""
    return sorted(({k: v for k, v in asdict(r).items() if k != "latency_s"} for r in CallLog(path).records()),
                  key=lambda r: (r["prompt_id"], r["expert"]))


def test_ray_backend_writes_the_local_rows_and_log_and_a_rerun_calls_nothing(cluster: str, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    results = {}
    for backend in ("local", "ray"):  # a server each: flaky's first request per prompt is a 429 on both
        with OpenAIServer(api_key=API_KEY) as server:
            experts = [entry(server, "good"), entry(server, "sloppy"), entry(server, "flaky")]
            out = tmp_path / backend / "q.jsonl"
            extra = {"backend": "ray", "workers": 2} if backend == "ray" else {}
            results[backend] = collect(sums(6), experts, scorer="numeric", out=out, concurrency=2, **FAST, **extra)
            assert server.count("flaky") == 12 and server.count("good") == 6  # the retry happened on the worker
            if backend == "ray":  # resume: everything is in the log, no request leaves
                again = collect(sums(6), experts, scorer="numeric", out=out, backend="ray", **FAST)
                assert again.made == 0 and again.cached == 18
                assert sum(server.requests.values()) == 24
    local, on_ray = results["local"], results["ray"]
    assert (on_ray.made, on_ray.cached, on_ray.errors) == (18, 0, 0)
    assert on_ray.spent == pytest.approx(local.spent)
    rows = {b: [json.loads(line) for line in (tmp_path / b / "q.jsonl").read_text().splitlines()] for b in results}
    assert without_latency(rows["ray"]) == without_latency(rows["local"])
    assert log_records(tmp_path / "ray" / "q.calls.jsonl") == log_records(tmp_path / "local" / "q.calls.jsonl")
    assert [r["attempts"] for r in log_records(tmp_path / "ray" / "q.calls.jsonl") if r["expert"] == "flaky"] == [2] * 6


def test_ray_budget_stops_the_run_on_the_driver(cluster: str, tmp_path: Path) -> None:
    with OpenAIServer(api_key=API_KEY) as server:
        # each call is estimated at (6 + 4 × 2) / 1e6 USD and costs (5 + 4 × 2) / 1e6: after 4 calls
        # (52e-6 spent) the next one's estimate would pass 65e-6
        experts = [entry(server, "good", expected_output_tokens=4)]
        with pytest.raises(BudgetReachedError):
            collect(sums(10), experts, scorer="numeric", out=tmp_path / "q.jsonl", budget=65e-6, concurrency=1,
                    backend="ray", **FAST)
        logged = CallLog(tmp_path / "q.calls.jsonl").records()
        assert len(logged) == 4 and sum(r.cost for r in logged) <= 65e-6
        assert server.count("good") >= 4  # calls in flight when it stopped may have been made, unlogged
        with pytest.raises(BudgetReachedError):  # not even one call fits: none is made
            collect(sums(2), [entry(server, "sloppy")], scorer="numeric", out=tmp_path / "r.jsonl", budget=1e-6,
                    backend="ray", **FAST)
        assert server.count("sloppy") == 0


def test_a_key_missing_on_the_workers_is_the_local_one_line_error(cluster: str, tmp_path: Path) -> None:
    from tryage.errors import MissingCredentialsError

    with OpenAIServer(api_key=API_KEY) as server:
        experts = [entry(server, "good", api_key_env="TRYAGE_TEST_UNSET_KEY")]
        with pytest.raises(MissingCredentialsError, match="set the environment variable TRYAGE_TEST_UNSET_KEY"):
            collect(sums(2), experts, scorer="numeric", out=tmp_path / "q.jsonl", backend="ray", **FAST)
        assert server.count("good") == 0 and CallLog(tmp_path / "q.calls.jsonl").records() == []


def test_hf_and_python_experts_are_refused_on_ray_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tryage.cli import main

    prompts = write_jsonl(tmp_path / "p.jsonl", sums(2))
    experts = write_experts(tmp_path / "e.json", [{"name": "tiny", "hf": str(tmp_path)}])
    assert main(["collect", "--prompts", str(prompts), "--experts", str(experts), "--scorer", "lm-loss",
                 "--out", str(tmp_path / "q.jsonl"), "--ray"]) == 2
    assert capsys.readouterr().err.strip() == ("tryage: error: backend 'ray' calls experts with a 'model' entry only; "
                                               "tiny (hf) run locally: collect them without --ray")
    with pytest.raises(ConfigurationError, match=r"echo \(Python object\)"):
        collect(sums(1), {"echo": lambda p: p}, scorer="exact", out=tmp_path / "q.jsonl", backend="ray")
    assert main(["collect", "--prompts", str(prompts), "--experts", str(experts), "--scorer", "lm-loss",
                 "--out", str(tmp_path / "q.jsonl"), "--workers", "2"]) == 2
    assert capsys.readouterr().err.strip() == "tryage: error: --workers only apply with --ray"


def test_cli_collect_ray_joins_the_cluster(cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from tryage.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with OpenAIServer(api_key=API_KEY) as server:
        prompts = write_jsonl(tmp_path / "p.jsonl", sums(3))
        experts = write_experts(tmp_path / "e.json", [entry(server, "good"), entry(server, "sloppy")])
        args = ["collect", "--prompts", str(prompts), "--experts", str(experts), "--scorer", "numeric",
                "--out", str(tmp_path / "q.jsonl"), "--json", "--ray", "--address", cluster, "--workers", "2"]
        assert main(args) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["calls_made"] == 6 and summary["rows"] == 3
        assert main(args) == 0
        assert json.loads(capsys.readouterr().out)["calls_cached"] == 6
        assert sum(server.requests.values()) == 6
