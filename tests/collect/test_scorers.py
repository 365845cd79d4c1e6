"""The built-in scorers, the judge's reply parser, and what `import tryage.collect` loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tryage.collect import get_scorer
from tryage.collect.calllog import CallRecord
from tryage.collect.prompts import PromptRow
from tryage.collect.runner import is_transient
from tryage.collect.scorers import choice_letter, normalize, parse_judge_score
from tryage.errors import ExpertSpecError, JudgeParseError, ScorerError


def run(name: str, answer: str, reference: str | None, choices: tuple[str, ...] = (), **kwargs) -> float:
    import asyncio

    row = PromptRow("x", "q?", reference, choices)
    return asyncio.run(get_scorer(name, **kwargs).score(CallRecord("x", "e", "s", answer=answer), row))


@pytest.mark.parametrize(("name", "answer", "reference", "expected"), [
    ("exact", "The Paris.", "paris", 1.0),
    ("exact", "Paris, France", "paris", 0.0),
    ("numeric", "so 3 + 4 = 7, i.e. $1,234.50 total", "1234.5", 1.0),
    ("numeric", "It is 12, not 13", "12", 0.0),
    ("contains", "I think it's PARIS!", "Paris", 1.0),
    ("contains", "London", "Paris", 0.0),
    ("contains", "It is not raining.", "no", 0.0),            # whole words: "no" is not in "not"
    ("contains", "No, it is not.", "no", 1.0),
    ("contains", "the new york times", "New York", 1.0),
    ("contains-substring", "It is not raining.", "no", 1.0),  # the old behaviour, by its own name
    ("yes-no", "Yes, it is.", "yes", 1.0),
    ("yes-no", "TRUE", "yes", 1.0),
    ("yes-no", "No. Yes would be wrong.", "yes", 0.0),         # the first yes/no word is the answer
    ("yes-no", "false", "No", 1.0),
    ("yes-no", "I cannot tell.", "no", 0.0),
    ("regex", "order #A-123 shipped", r"#A-\d+", 1.0),
    ("regex", "order shipped", r"#A-\d+", 0.0),
])
def test_builtin_scorers(name: str, answer: str, reference: str, expected: float) -> None:
    assert run(name, answer, reference) == expected


def test_choice_reads_the_letter_and_accepts_a_reference_among_the_choices() -> None:
    assert choice_letter("The answer is (C) because") == "C"
    assert choice_letter("B) the second one") == "B"
    assert choice_letter("Answer: d") == "D"
    assert run("choice", "I pick (B).", "B") == 1.0
    assert run("choice", "Answer: A", "blue", ("red", "blue")) == 0.0
    assert run("choice", "Answer: B", "blue", ("red", "blue")) == 1.0
    with pytest.raises(ScorerError, match="scorer 'choice': prompt 'x' has reference 'green'; give a letter"):
        run("choice", "A", "green", ("red", "blue"))


def test_regex_with_a_fixed_pattern_needs_no_reference_and_a_bad_pattern_is_refused() -> None:
    assert run("regex", "SCORE 9", None, pattern=r"\d") == 1.0
    with pytest.raises(ScorerError, match=r"regex scorer: pattern '\(' is not a valid regular expression"):
        get_scorer("regex", pattern="(")


def test_normalize_drops_case_punctuation_articles_and_spaces() -> None:
    assert normalize("  The  Quick, brown fox! ") == "quick brown fox"


@pytest.mark.parametrize(("reply", "expected"), [("Fine work.\nSCORE: 0.75", 0.75), ("score=1", 1.0), ("0", 0.0),
                                                  ("SCORE: 0.2 ... on reflection SCORE: 0.4", 0.4)])
def test_judge_score_parse(reply: str, expected: float) -> None:
    assert parse_judge_score(reply) == expected


@pytest.mark.parametrize("reply", ["great answer", "SCORE: 7", "SCORE: -0.5", ""])
def test_judge_score_parse_fails_clearly(reply: str) -> None:
    with pytest.raises(JudgeParseError, match=r"cannot read a score in \[0, 1\] from the judge's reply"):
        parse_judge_score(reply)


def test_user_scorer_must_return_a_finite_number() -> None:
    import asyncio

    scorer = get_scorer(lambda answer, row: "yes")
    with pytest.raises(ScorerError, match="returned 'yes' for prompt 'x'; it must return a number"):
        asyncio.run(scorer.score(CallRecord("x", "e", "s", answer="a"), PromptRow("x", "q")))


def test_transient_and_permanent_errors() -> None:
    class Status(Exception):
        def __init__(self, code: int) -> None:
            self.status_code = code

    assert all(is_transient(Status(c)) for c in (408, 429, 500, 502, 503))
    assert not any(is_transient(Status(c)) for c in (400, 401, 403, 404, 422))
    assert is_transient(TimeoutError()) and is_transient(ConnectionResetError())
    assert not is_transient(ValueError("bad input"))


def test_import_loads_no_langchain_torch_or_openai() -> None:
    code = ("import sys, tryage, tryage.collect, tryage.cli.collect; "
            "print(sorted(m for m in ('torch', 'transformers', 'langchain', 'langchain_core', 'langchain_openai', "
            "'openai', 'filelock') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_tryage_collect_is_callable_as_the_issue_names_it(tmp_path) -> None:
    import tryage

    result = tryage.collect(["a b", "c"], {"echo": lambda p: p}, scorer=lambda a, r: len(a) / 3,
                            log=tmp_path / "calls.jsonl", progress=False)
    assert result.qtable.scores.tolist() == [[1.0], [pytest.approx(1 / 3)]]


def test_a_judge_asked_the_same_thing_at_once_pays_once_retries_and_a_failure_is_not_shared() -> None:
    import asyncio

    from tryage.collect.scorers import Judge
    from tryage.errors import JudgeCallError

    class Row:
        id, prompt, reference = "p0", "What is 1 plus 2?", "3"

    class Model:  # a runnable taking a string (what Judge accepts besides LangChain chat models)
        model_name = "slow-judge"

        def __init__(self, fail_first: type[Exception] | None) -> None:
            self.calls, self.fail_first = 0, fail_first

        async def ainvoke(self, text: str) -> str:
            self.calls += 1
            await asyncio.sleep(0.05)
            if self.fail_first is not None and self.calls == 1:
                raise self.fail_first("judge unreachable")
            return "Right. SCORE: 1"

    async def five_at_once(judge: Judge) -> list:
        return await asyncio.gather(*(judge("3", Row()) for _ in range(5)), return_exceptions=True)

    model = Model(fail_first=None)
    assert asyncio.run(five_at_once(Judge(model))) == [1.0] * 5 and model.calls == 1
    # a dropped connection is transient: retried, and the four waiting for that reply get it
    model = Model(fail_first=ConnectionError)
    assert asyncio.run(five_at_once(Judge(model).run_with(retry_base=0.01))) == [1.0] * 5 and model.calls == 2
    # an error that retrying cannot mend fails that call only; a waiter asks again itself
    model = Model(fail_first=ValueError)
    results = asyncio.run(five_at_once(Judge(model).run_with(retry_base=0.01)))
    assert isinstance(results[0], JudgeCallError) and "ValueError: judge unreachable" in str(results[0])
    assert results[1:] == [1.0] * 4 and model.calls == 2


def test_a_judge_must_return_text() -> None:
    from tryage.collect.scorers import Judge

    with pytest.raises(ScorerError, match=r"the judge 'judge' is an 'hf' entry, which only measures a loss"):
        Judge({"hf": "some/folder"})


def test_a_judge_that_never_answers_is_given_up_after_its_timeout() -> None:
    import asyncio
    import time

    from tryage.collect.scorers import Judge
    from tryage.errors import JudgeCallError

    class Row:
        id, prompt, reference = "p0", "What is 1 plus 2?", "3"

    class Hanging:
        model_name = "hanging-judge"

        async def ainvoke(self, text: str) -> str:
            await asyncio.sleep(3600)
            return "SCORE: 1"

    started = time.monotonic()
    with pytest.raises(JudgeCallError, match=r"the judge's call failed after 2 attempt\(s\): TimeoutError"):
        asyncio.run(Judge(Hanging()).run_with(timeout=0.2, retries=1, retry_base=0.01)("3", Row()))
    assert time.monotonic() - started < 5


def test_a_judge_named_by_provider_and_id_is_a_model_entry() -> None:
    from tryage.collect.scorers import Judge

    judge = Judge("openai:gpt-4o-mini")
    assert (judge.spec.model, judge.priced) == ("openai:gpt-4o-mini", False)
    with pytest.raises(ExpertSpecError, match=r"'model' must read '<provider>:<model id>'") as caught:
        Judge("x" * 5000)
    assert len(str(caught.value)) < 200


def test_a_judge_log_keeps_the_line_format_earlier_versions_wrote_and_reads_it_back(tmp_path) -> None:
    import asyncio
    import json

    from tryage.collect.judge import Judge

    class Row:
        id, prompt, reference = "p0", "What is 1 plus 2?", "3"

    class Model:
        model_name = "counting-judge"

        def __init__(self) -> None:
            self.calls = 0

        async def ainvoke(self, text: str) -> str:
            self.calls += 1
            return "Right. SCORE: 1"

    async def grade(judge: Judge, answer: str) -> float:
        try:
            return await judge.run_with()(answer, Row())
        finally:
            await judge.aclose()

    log, model = tmp_path / "q.calls.judge.jsonl", Model()
    assert asyncio.run(grade(Judge(model, log=log), "3")) == 1.0 and model.calls == 1
    [line] = [json.loads(text) for text in log.read_text(encoding="utf-8").splitlines()]
    assert list(line) == ["key", "prompt_id", "reply", "input_tokens", "output_tokens", "cost"]
    assert (line["prompt_id"], line["reply"]) == ("p0", "Right. SCORE: 1")
    # a line as the hand-written log of earlier versions held it is a reply found: not asked again
    log.write_text(json.dumps({"key": line["key"], "prompt_id": "p0", "reply": "SCORE: 0.5", "input_tokens": None,
                               "output_tokens": None, "cost": 0.0}) + "\n", encoding="utf-8")
    assert asyncio.run(grade(Judge(model, log=log), "3")) == 0.5 and model.calls == 1


def test_yes_no_needs_a_yes_no_reference() -> None:
    with pytest.raises(ScorerError, match="scorer 'yes-no': prompt 'x' has reference 'maybe'; give yes, no, true or false"):
        run("yes-no", "yes", "maybe")


def _rows(*records: dict) -> list:
    from tryage.collect.prompts import prompts_from_records

    return prompts_from_records(records)


def test_a_row_or_its_task_picks_its_own_scorer_before_the_run_default() -> None:
    import asyncio

    from tryage.collect.scorers import for_rows

    rows = _rows({"id": "a", "prompt": "2+2?", "reference": "4", "task": "math"},
                 {"id": "b", "prompt": "Is ice cold?", "reference": "yes", "task": "quiz"},
                 {"id": "c", "prompt": "Is fire cold?", "reference": "no", "task": "quiz", "scorer": "contains"},
                 {"id": "d", "prompt": "Capital?", "reference": "Paris"})
    scorer = for_rows(get_scorer("exact"), rows, {"math": "numeric", "quiz": "yes-no"})
    answers = {"a": "it is 4", "b": "Yes, very.", "c": "not at all", "d": "Paris"}
    scores = [asyncio.run(scorer.score(CallRecord(r.id, "e", "s", answer=answers[r.id]), r)) for r in rows]
    assert scores == [1.0, 1.0, 0.0, 1.0]          # numeric, yes-no, the row's contains, the default exact
    assert for_rows(get_scorer("exact"), rows[3:], {"math": "numeric"}) is get_scorer("exact")


@pytest.mark.parametrize(("records", "scorer_map", "message"), [
    ([{"id": "a", "prompt": "q", "reference": "1", "scorer": "bleu"}], None,
     r"prompt 'a' \(task None\): unknown scorer 'bleu'; built-in scorers: exact"),
    ([{"id": "a", "prompt": "q", "reference": "1", "task": "t"}], {"t": "rouge"}, r"prompt 'a' \(task 't'\): unknown scorer 'rouge'"),
    ([{"id": "a", "prompt": "q", "task": "t"}], {"t": "numeric"},
     r"scorer 'numeric' needs a 'reference' for every prompt; 1 have none, e.g. id 'a'"),
    ([{"id": "a", "prompt": "q", "reference": "1"}, {"id": "b", "prompt": "r", "reference": "1", "scorer": "lm-loss"}],
     None, r"the prompts' scorers \['exact', 'lm-loss'\] cannot score one run together"),
    ([{"id": "a", "prompt": "q", "reference": "1"}], ["numeric"], r"the scorer map must be an object of task -> scorer name"),
])
def test_per_row_scorers_are_checked_before_any_call(records: list, scorer_map: object, message: str) -> None:
    from tryage.collect.scorers import for_rows

    with pytest.raises(ScorerError, match=message):
        rows = _rows(*records)
        for_rows(get_scorer("exact"), rows, scorer_map).check(rows)


def test_a_row_scorer_must_be_a_name() -> None:
    from tryage.errors import PromptFileError

    with pytest.raises(PromptFileError, match=r"line 1: 'scorer' must be a scorer name, got 3"):
        from tryage.collect.prompts import prompts_from_records

        prompts_from_records([{"prompt": "q", "scorer": 3}], source="p.jsonl")
