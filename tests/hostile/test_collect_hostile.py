"""``tryage collect`` / ``tryage score`` / ``tryage.collect`` as a hostile user or a broken provider drives them
(issue 25, the collect side): file arguments that name one file, provider token counts that cannot be billed,
regular expressions that backtrack catastrophically, inputs that used to raise tracebacks, and the accepts
decided since (a long ``Retry-After``, an edited prompt, a callable that returns ``None`` or is replaced, a
Q-table column that is never observed). Real parts: the CLI in-process, ChatOpenAI against a real local
server (:mod:`faulty_server`), real files and links."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tryage.collect
from tryage.cli import main
from tryage.collect import CallLog, ExpertSpec, collect, score
from tryage.collect.prompts import prompts_from_records
from tryage.collect.retry import RetryPolicy
from tryage.errors import (BudgetReachedError, CallLogError, ConfigurationError, PromptFileError, QTableError,
                           ScorerError, UnobservedExpertWarning)
from tryage.qtable import QTable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faulty_server import FaultyServer  # noqa: E402

SLOW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
API_KEY = "test-key"


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with FaultyServer(faults={}) as running:
        yield running


def entry(base_url: str, model: str = "plain", **extra: Any) -> dict[str, Any]:
    return {"name": model.split("=")[0], "model": f"openai:{model}", "model_kwargs": {"base_url": base_url},
            "input_cost": 1.0, "output_cost": 2.0, **extra}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err
    return code, (lines[-1] if lines else "")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and not p.name.endswith(".lock")}


# -- 1. file arguments that name one file -------------------------------------------------------
FLAGS = {"out": "--out", "log": "--log", "library_out": "--library-out", "prompts": "--prompts", "experts": "--experts"}
CONTENT = {"prompts": json.dumps({"id": "p0", "prompt": "What is 1 plus 3?", "reference": "4"}) + "\n",
           "experts": json.dumps([entry("http://127.0.0.1:9/v1")]),
           "log": json.dumps({"prompt_id": "p0", "expert": "plain", "settings": "x", "answer": "4"}) + "\n"}


def link(kind: str, target: Path, name: str) -> Path:
    """Another name for ``target``: the same string, a detour through ``..``, a symlink or a hard link."""
    if kind == "same":
        return target
    if kind == "dotted":
        return target.parent / ".." / target.parent.name / "." / target.name
    other = target.parent / name
    if kind == "symlink":
        other.symlink_to(target)
    else:
        os.link(target, other)
    return other


PAIRS = [("collect", a, b) for a, b in (("out", "log"), ("out", "prompts"), ("log", "prompts"), ("library_out", "log"),
                                        ("library_out", "prompts"), ("out", "library_out"), ("log", "experts"))]
PAIRS += [("score", a, b) for a, b in (("out", "log"), ("out", "prompts"), ("library_out", "log"), ("out", "experts"))]


@pytest.mark.parametrize("kind", ["same", "dotted", "symlink", "hardlink"])
@pytest.mark.parametrize(("command", "first", "second"), PAIRS)
def test_file_arguments_naming_one_file_are_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, first: str, second: str, kind: str) -> None:
    files = {"prompts": write(tmp_path / "prompts.jsonl", CONTENT["prompts"]),
             "experts": write(tmp_path / "experts.json", CONTENT["experts"]), "out": tmp_path / "q.jsonl"}
    if command == "score":
        files["log"] = write(tmp_path / "q.calls.jsonl", CONTENT["log"])
    content = next((CONTENT[a] for a in (second, first) if a in CONTENT), "an earlier result, kept\n")
    target = files[second] if second in files and files[second].exists() else write(tmp_path / f"{second}.file", content)
    files[second] = target
    files[first] = link(kind, target, f"{first}.link")
    before = snapshot(tmp_path)
    args = [command] + [x for a in ("prompts", "out", "log", "library_out", "experts") if a in files
                        and (command == "collect" or a != "experts" or "experts" in (first, second))
                        for x in (FLAGS[a], files[a])] + ["--scorer", "exact"]
    code, line = run(capsys, *args)
    assert code == 2 and line.startswith("tryage: error: ")
    assert first in line and second in line and "same file" in line, line
    assert snapshot(tmp_path) == before   # nothing written, nothing replaced, no lock or log created


def test_the_python_api_refuses_a_log_that_is_the_qtable_too(tmp_path: Path) -> None:
    log = write(tmp_path / "run.jsonl", CONTENT["log"])
    with pytest.raises(ConfigurationError, match="out and log name the same file"):
        collect(["hi"], {"e": lambda p: "x"}, scorer=lambda a, r: 1.0, out=str(log), log=log)
    assert log.read_text(encoding="utf-8") == CONTENT["log"]


def _other_commands(tmp_path: Path) -> dict[str, tuple[list[Any], Path]]:
    table = write(tmp_path / "q.jsonl", json.dumps({"prompt": "p", "scores": {"a": 1, "b": 0}}) + "\n")
    inputs = write(tmp_path / "prompts.txt", "hello\n")
    feedback = write(tmp_path / "feedback.jsonl", json.dumps({"prompt": "p", "expert": "a", "score": 1}) + "\n")
    overrides = write(tmp_path / "overrides.json", "{}")
    passages = write(tmp_path / "passages.jsonl", json.dumps({"text": "some text"}) + "\n")
    inside = tmp_path / "data"
    inside.mkdir()
    nested = write(inside / "q.jsonl", table.read_text(encoding="utf-8"))
    return {
        "train --out is the Q-table": (["train", "--qtable", table, "--out", table, "--overwrite"], table),
        "train --out holds the Q-table": (["train", "--qtable", nested, "--out", inside, "--overwrite"], nested),
        "measure --out is --passages": (["measure", "--passages", passages, "--model", tmp_path / "m", "--out", passages],
                                        passages),
        "measure --qtable is --out": (["measure", "--passages", passages, "--model", tmp_path / "m", "--out", table,
                                       "--qtable", link("symlink", table, "q2.jsonl")], table),
        "route --out is --input": (["route", "--input", inputs, "--out", inputs], inputs),
        "pareto --out is --qtable": (["pareto", "--qtable", table, "--out", table], table),
        "discover --out is --overrides": (["discover", "org/model", "--offline", "--overrides", overrides,
                                           "--out", overrides], overrides),
        "update --out is --feedback": (["update", "--router", tmp_path / "router", "--feedback", feedback,
                                        "--out", feedback], feedback),
    }


@pytest.mark.parametrize("case", ["train --out is the Q-table", "train --out holds the Q-table",
                                  "measure --out is --passages", "measure --qtable is --out", "route --out is --input",
                                  "pareto --out is --qtable", "discover --out is --overrides",
                                  "update --out is --feedback"])
def test_every_command_that_writes_refuses_an_output_that_is_one_of_its_inputs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    argv, kept = _other_commands(tmp_path)[case]
    before = snapshot(tmp_path)
    code, line = run(capsys, *argv)
    assert code == 2 and ("same file" in line or "lies inside" in line), line
    assert snapshot(tmp_path) == before and kept.is_file()


# -- 2. provider token counts are checked before they are billed --------------------------------
BAD_USAGE = st.one_of(st.integers(max_value=-1), st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda f: not (f == f and abs(f) != float("inf") and f.is_integer() and f >= 0)),
    st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2))


@SLOW
@given(usage=BAD_USAGE, concurrency=st.integers(1, 4), side=st.sampled_from(["input_tokens", "output_tokens"]))
def test_a_budget_that_fits_two_calls_never_lets_more_through_whatever_usage_the_provider_reports(
        usage: Any, concurrency: int, side: str) -> None:
    calls = []
    lock = threading.Lock()

    def liar(prompt: str) -> dict:
        with lock:
            calls.append(prompt)
        return {"text": "fine", "input_tokens": 1, "output_tokens": 1, side: usage}

    # 1 USD a token; each call is estimated at 1 input token ("p0") + 4 output tokens = 5 USD: 2 fit in 11
    spec = ExpertSpec("liar", runnable=liar, input_cost=1e6, output_cost=1e6, expected_output_tokens=4)
    with tempfile.TemporaryDirectory() as folder:
        with pytest.raises(BudgetReachedError) as caught:
            collect([f"p{i}" for i in range(6)], [spec], scorer=lambda a, r: 1.0, log=Path(folder) / "c.jsonl",
                    budget=11.0, concurrency=concurrency, progress=False)
        records = CallLog(Path(folder) / "c.jsonl").records()
    assert len(calls) <= 2 and caught.value.spent <= 11.0
    assert all(r.error.startswith("ProviderUsageError") and "'liar'" in r.error and side in r.error for r in records)
    assert all(r.cost == 5.0 for r in records)   # charged its estimate: never less, never a negative


def test_negative_usage_from_a_real_server_is_an_error_naming_the_expert_and_the_budget_holds(
        server: FaultyServer, tmp_path: Path) -> None:
    spec = entry(server.base_url, "usage=-1000", expected_output_tokens=4, input_cost=1e6, output_cost=1e6)
    prompts = [{"id": f"p{i}", "prompt": f"p{i}"} for i in range(6)]
    with pytest.raises(BudgetReachedError) as caught:
        collect(prompts, [spec], scorer=lambda a, r: 1.0, log=tmp_path / "c.jsonl",
                budget=11.0, retries=0, progress=False)
    records = CallLog(tmp_path / "c.jsonl").records()
    assert server.stats()["requests"] == 2 and len(records) == 2 and caught.value.spent == 10.0
    assert all("ProviderUsageError: expert 'usage'" in r.error and "-1000" in r.error for r in records)


# -- 3. the regex scorer cannot be driven super-linear ------------------------------------------
CATASTROPHIC = ["(a+)+$", "(a|aa)+$", "(a|a?)+$", "^(a+)+b"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
@pytest.mark.parametrize("via", ["--pattern", "reference", "python"])
def test_a_catastrophic_regex_ends_in_a_score_or_one_line_never_a_hang(
        server: FaultyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], pattern: str, via: str) -> None:
    answer_of = "a" * 27   # the server answers "ok: " + the prompt: 31 characters
    row = {"id": "p0", "prompt": answer_of, **({"reference": pattern} if via == "reference" else {})}
    started = time.monotonic()
    if via == "python":
        try:
            result = tryage.collect([row], [entry(server.base_url)], scorer="regex", pattern=pattern,
                                    log=tmp_path / "c.jsonl", progress=False)
            assert result.qtable.scores.shape == (1, 1)
        except ScorerError as exc:
            assert "ran past" in str(exc) and "'p0'" in str(exc)
    else:
        prompts = write(tmp_path / "p.jsonl", json.dumps(row) + "\n")
        experts = write(tmp_path / "e.json", json.dumps([entry(server.base_url)]))
        code, line = run(capsys, "collect", "--prompts", prompts, "--experts", experts, "--scorer", "regex",
                         "--out", tmp_path / "q.jsonl", *(["--pattern", pattern] if via == "--pattern" else []))
        assert code == 0 or (code == 2 and "ran past" in line and "simplify the pattern" in line), line
    assert time.monotonic() - started < 30


def test_a_pattern_that_backtracks_for_ever_is_stopped_by_the_time_limit(tmp_path: Path) -> None:
    with pytest.raises(ScorerError, match=r"ran past 1 s on the answer to prompt 'p0'"):
        collect([{"id": "p0", "prompt": "q"}], {"e": lambda p: "a" * 60 + "!"}, scorer="regex", pattern="(a|aa)+$",
                log=tmp_path / "c.jsonl", progress=False)


def test_an_invalid_reference_pattern_is_refused_before_any_call(server: FaultyServer, tmp_path: Path) -> None:
    rows = [{"id": "ok", "prompt": "x", "reference": "o+"}, {"id": "bad", "prompt": "y", "reference": "(unclosed"}]
    with pytest.raises(ScorerError, match=r"the reference of prompt 'bad' '\(unclosed' is not a valid regular"):
        collect(rows, [entry(server.base_url)], scorer="regex", log=tmp_path / "c.jsonl", progress=False)
    assert server.stats()["requests"] == 0


# -- 4. inputs that raised tracebacks -----------------------------------------------------------
@SLOW
@given(before=st.text(max_size=5), after=st.text(max_size=5),
       surrogate=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), field=st.sampled_from(["prompt", "id", "task"]))
def test_a_lone_surrogate_anywhere_in_a_row_is_one_error_naming_the_field(before: str, after: str, surrogate: str,
                                                                          field: str) -> None:
    row = {"prompt": "fine", field: f"x{before}{surrogate}{after}"}
    with pytest.raises(PromptFileError, match=f"field '{field}' holds a lone surrogate"):
        prompts_from_records([row])


def test_a_lone_surrogate_in_a_prompts_file_is_one_line_naming_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = write(tmp_path / "p.jsonl", '{"prompt": "fine"}\n{"prompt": "bad \\ud800 text"}\n')
    experts = write(tmp_path / "e.json", CONTENT["experts"])
    code, line = run(capsys, "collect", "--prompts", prompts, "--experts", experts, "--scorer", "exact",
                     "--out", tmp_path / "q.jsonl")
    assert code == 2 and "line 2" in line and "lone surrogate" in line, line


FIELDS = st.sampled_from(["answer", "error", "loss", "cost", "latency_s", "attempts", "prompt_id", "expert", "settings"])
WRONG = st.one_of(st.integers(), st.floats(allow_nan=True), st.lists(st.integers(), max_size=2), st.booleans(),
                  st.dictionaries(st.text(max_size=2), st.integers(), max_size=1), st.text(max_size=3))


def _fits(field: str, value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    finite = number and value == value and abs(value) != float("inf")
    return {"answer": value is None or isinstance(value, str), "error": value is None or isinstance(value, str),
            "loss": value is None or (finite and value >= 0), "cost": finite and value >= 0, "latency_s": finite and value >= 0,
            "attempts": isinstance(value, int) and not isinstance(value, bool) and value >= 0}.get(
        field, isinstance(value, str))


@SLOW
@given(field=FIELDS, value=WRONG)
def test_a_call_log_line_with_a_field_of_the_wrong_kind_is_an_error_naming_file_and_line(field: str, value: Any) -> None:
    good = {"prompt_id": "p0", "expert": "e", "settings": "s", "answer": "4", "cost": 0.0}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.calls.jsonl"
        path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "prompt_id": "p1", field: value}) + "\n",
                        encoding="utf-8")
        if _fits(field, value):
            assert len(CallLog(path).records()) == 2
            return
        with pytest.raises(CallLogError, match=rf"c\.calls\.jsonl, line 2: '{field}' must be"):
            CallLog(path).records()


def test_tryage_score_on_a_log_whose_answer_is_a_number_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write(tmp_path / "c.jsonl", json.dumps({"prompt_id": "p0", "expert": "e", "settings": "s", "answer": 4}) + "\n")
    prompts = write(tmp_path / "p.jsonl", CONTENT["prompts"])
    code, line = run(capsys, "score", "--log", log, "--prompts", prompts, "--scorer", "exact", "--out", tmp_path / "q.jsonl")
    assert code == 2 and "c.jsonl, line 1: 'answer' must be text or null, got 4" in line, line


@pytest.mark.parametrize("prompts", [None, 5, b"prompts.jsonl", {"prompt": "a mapping, not rows"}])
def test_collect_refuses_prompts_that_are_neither_a_file_nor_rows(tmp_path: Path, prompts: Any) -> None:
    with pytest.raises(ConfigurationError, match="prompts must be a .jsonl/.csv file or a list of rows"):
        tryage.collect(prompts, {"e": lambda p: "x"}, scorer=lambda a, r: 1.0, log=tmp_path / "c.jsonl")


@pytest.mark.parametrize("experts", [None, 5, b"experts.json"])
def test_collect_refuses_experts_that_are_no_entries(tmp_path: Path, experts: Any) -> None:
    with pytest.raises(ConfigurationError, match="experts must be an experts JSON file"):
        tryage.collect(["hi"], experts, scorer=lambda a, r: 1.0, log=tmp_path / "c.jsonl")


@settings(max_examples=25, deadline=None)
@given(base=st.one_of(st.floats(max_value=-1e-9), st.just(float("nan")), st.just(float("inf")), st.text(max_size=3),
                      st.booleans(), st.none()))
def test_retry_base_must_be_a_finite_number_of_seconds(base: Any) -> None:
    calls = []
    with tempfile.TemporaryDirectory() as folder:
        for run_it in (lambda: collect(["hi"], {"e": calls.append}, scorer=lambda a, r: 1.0,
                                       log=Path(folder) / "c.jsonl", retry_base=base),
                       lambda: score(Path(folder) / "c.jsonl", ["hi"], scorer="exact", retry_base=base)):
            with pytest.raises(ConfigurationError, match=r"retry_base must be a finite number >= 0, got"):
                run_it()
    assert not calls


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_an_out_no_one_can_write_reports_the_real_error_not_another_collection(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = write(tmp_path / "p.jsonl", CONTENT["prompts"])
    experts = write(tmp_path / "e.json", CONTENT["experts"])
    code, line = run(capsys, "collect", "--prompts", prompts, "--experts", experts, "--scorer", "exact",
                     "--out", "/proc/q.jsonl")
    assert code == 2 and "cannot write the call log /proc/q.calls.jsonl" in line and "locked" not in line, line


# -- 5. questionable accepts, decided ----------------------------------------------------------
def test_a_retry_after_longer_than_the_policy_waits_stops_the_expert_with_the_servers_time(
        server: FaultyServer, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(QTableError, match=r"the server asks to retry after 3600 s, longer than the 60 s"):
        collect([f"p{i}" for i in range(8)], [entry(server.base_url, "wait=3600")], scorer=lambda a, r: 1.0,
                log=tmp_path / "c.jsonl", retries=3, concurrency=2, progress=False)
    assert time.monotonic() - started < 20 and server.stats()["requests"] <= 2   # no 60 s waits, no hammering
    policy = RetryPolicy()
    short, long = _rate_limited("30"), _rate_limited("3600")
    assert policy.retries_on(short) and not policy.retries_on(long) and policy.delay(1, short) == 30.0


def _rate_limited(seconds: str) -> Exception:
    class Response:
        status_code = 429
        headers = {"retry-after": seconds}

    error = RuntimeError("rate limited")
    error.response = Response()  # type: ignore[attr-defined]
    return error


def test_an_edited_prompt_that_keeps_its_id_is_asked_again_and_old_logs_still_read(tmp_path: Path) -> None:
    asked: list[str] = []

    def echo(prompt: str) -> str:
        asked.append(prompt)
        return prompt

    def same(answer: str, row: Any) -> float:
        return float(answer == row.prompt)

    log = tmp_path / "c.jsonl"
    collect([{"id": "p0", "prompt": "old text"}], {"echo": echo}, scorer=same, log=log, progress=False)
    result = collect([{"id": "p0", "prompt": "new text"}], {"echo": echo}, scorer=same, log=log, progress=False)
    assert asked == ["old text", "new text"] and result.qtable.scores.tolist() == [[1.0]]
    with pytest.raises(QTableError, match="no prompt has an answer"):   # score: the old answer is not scored either
        score(log, [{"id": "p0", "prompt": "third text"}], scorer=same)
    legacy = [{k: v for k, v in json.loads(line).items() if k != "input_sha"} for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps(r) + "\n" for r in legacy), encoding="utf-8")   # a log from before the hash
    again = collect([{"id": "p0", "prompt": "new text"}], {"echo": echo}, scorer=same, log=log, progress=False)
    assert asked == ["old text", "new text"] and again.cached == 1


@pytest.mark.parametrize("returned", [None, 5, b"bytes", {"text": None}, {"answer": "x"}])
def test_a_python_expert_that_returns_no_text_is_an_error_naming_it_not_an_answer(tmp_path: Path, returned: Any) -> None:
    with pytest.raises(QTableError, match=r"a Python expert must return text .* but 'quiet' returned"):
        collect(["hi"], {"quiet": lambda p: returned}, scorer=lambda a, r: 1.0, log=tmp_path / "c.jsonl", progress=False)
    [record] = CallLog(tmp_path / "c.jsonl").records()
    assert record.answer is None and record.error.startswith("ExpertSpecError")


def test_a_replaced_callable_expert_does_not_reuse_the_first_ones_answers(tmp_path: Path) -> None:
    log = tmp_path / "c.jsonl"
    first = collect(["hi"], {"e": lambda p: "first"}, scorer=lambda a, r: float(a == "second"), log=log, progress=False)
    second = collect(["hi"], {"e": lambda p: "second"}, scorer=lambda a, r: float(a == "second"), log=log,
                     progress=False)

    def named(prompt: str) -> str:
        return "second"

    third = collect(["hi"], {"e": named}, scorer=lambda a, r: float(a == "second"), log=log, progress=False)
    again = collect(["hi"], {"e": named}, scorer=lambda a, r: float(a == "second"), log=log, progress=False)
    assert (first.made, second.made, third.made, again.made) == (1, 1, 1, 0)
    assert second.qtable.scores.tolist() == [[1.0]] and first.qtable.scores.tolist() == [[0.0]]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_qtable_column_never_observed_is_named_in_a_warning(tmp_path: Path, suffix: str) -> None:
    if suffix == ".jsonl":
        path = write(tmp_path / "q.jsonl", "".join(json.dumps({"prompt": p, "scores": {"a": 1, "ghost": None}}) + "\n"
                                                   for p in ("x", "y")))
    else:
        path = write(tmp_path / "q.csv", "prompt,score:a,score:ghost\nx,0.5,\ny,0.1,\n")
    with pytest.warns(UnobservedExpertWarning, match=r"\['ghost'\] have no value in any row"):
        table = QTable.from_file(path)
    assert table.experts == ("a",)
