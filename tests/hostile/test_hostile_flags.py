"""Hostile prompts and flags: only FlagError (or ConfigurationError for a non-text prompt), never a hang."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tryage import FlagError, FlagParser, strip_flags
from tryage.errors import ConfigurationError, TryageError

DIGITS_400 = "9" * 400

BAD_FLAGS = [
    # (prompt, what the message must contain besides the flag text)
    ("hi [Flag: tiniest model]", "unknown flag"),
    ("hi [Flag: ]", "empty flag"),
    ("hi [Flag: ;]", "empty flag"),
    ("hi [Flag: cheapest,]", "empty flag"),
    ("hi [Flag: smallest model", "unclosed flag bracket"),
    ("hi [flag:", "unclosed flag bracket"),
    ("hi [Flag: smallest [model]", "unclosed flag bracket"),
    ("hi [Flag: size=nan]", "weight must be finite"),
    ("hi [Flag: size=inf]", "weight must be finite"),
    ("hi [Flag: size=1e999]", "weight must be finite"),
    ("hi [Flag: size=big]", "is not a number"),
    (f"hi [Flag: max size {DIGITS_400}]", "cannot read size"),
    (f"hi [Flag: min size {DIGITS_400}B]", "cannot read size"),
    ("hi [Flag: max size 0.0001]", "cannot read size"),
    ("hi [Flag: max size -5B]", "cannot read size"),
    ("hi [Flag: max size huge]", "cannot read size"),
    ("hi [Flag: max size 1e400]", "cannot read size"),
    ("hi [Flag: newer than 2024-13-45]", "cannot read date"),
    ("hi [Flag: newer than yesterday]", "cannot read date"),
    ("hi [Flag: expert]", "unknown flag"),
    ("[[Flag: cheapest]Flag: newest]", "nested"),
    ("x [ [Flag: cheapest] flag: newest]", "nested"),
]


@pytest.mark.parametrize(("prompt", "reason"), BAD_FLAGS, ids=[p[:40] for p, _ in BAD_FLAGS])
def test_bad_flag_raises_flag_error_naming_the_flag(prompt: str, reason: str) -> None:
    with pytest.raises(FlagError) as info:
        FlagParser(["size", "cost", "recency"]).parse(prompt)
    assert type(info.value) is FlagError
    message, flag = str(info.value), info.value.flag
    assert reason in message
    assert "\n" not in message
    assert f"[Flag: {flag[:40]}" in message  # the offending flag, as written (shortened when long)
    if flag.strip():
        assert flag.split()[0][:10].lower() in prompt.lower()


def test_weight_flag_for_an_unknown_constraint_names_it_and_the_known_ones() -> None:
    with pytest.raises(FlagError, match="unknown constraint 'speed'.*size\\|cost"):
        FlagParser(["size", "cost"]).parse("x [Flag: speed=1]")


@pytest.mark.parametrize("phrase", ["", "  ", "a [b]", "x,y", "x;y", "cheapest"])
def test_registering_a_bad_phrase_raises_flag_error(phrase: str) -> None:
    with pytest.raises(FlagError) as info:
        FlagParser().register(phrase)
    assert repr(phrase)[1:-1].strip() in str(info.value)


@pytest.mark.parametrize("prompt", [None, b"bytes [Flag: cheapest]", 5, ["a list"]], ids=repr)
def test_a_prompt_that_is_not_text_is_a_configuration_error_naming_its_type(prompt: object) -> None:
    with pytest.raises(ConfigurationError, match=type(prompt).__name__):
        FlagParser().parse(prompt)  # type: ignore[arg-type]


def test_a_lone_surrogate_is_a_configuration_error_naming_where_it_is() -> None:
    with pytest.raises(ConfigurationError, match=r"lone surrogate '\\udc80' at character 6"):
        FlagParser().parse("hello \udc80 world")


@pytest.mark.parametrize("prompt", [
    "x [flag:" + " " * 3000 + "y",
    "x [flag:" + " " * 1_000_000 + "y",
    "[" * 1_000_000,
    "[ " * 500_000,
    "[flag" * 200_000,
    "[flag :" * 100_000,
    "[Flag: cheapest]" * 20_000,
    "[Flag:" + "a" * 1_000_000 + "]",
], ids=["3000 spaces", "a million spaces", "a million [", "[ x 500k", "[flag x 200k", "[flag : x 100k",
        "20k flags", "a one-million-character flag"])
def test_pathological_prompts_finish_within_the_deadline(prompt: str) -> None:
    """Super-linear parsing took ~55 s on the first and never finished the second (issue 14)."""
    try:
        parsed = FlagParser().parse(prompt)
    except FlagError as exc:
        assert len(str(exc)) < 2000  # the message quotes the flag, shortened
    else:
        assert "[flag:" not in parsed.prompt.lower().replace(" ", "")


@pytest.mark.parametrize("keyword", ["license", "max size", "min size", "newer than", "expert", "size =", "cheapest"])
def test_white_space_runs_inside_a_flag_do_not_make_its_patterns_backtrack(keyword: str) -> None:
    """``[Flag: license`` + 1,000 spaces + ``\na\nb]`` took 5 s (cubic) before white space was collapsed first."""
    prompt = "x [Flag: " + keyword + " " * 200_000 + "\n a \n\t b ]"
    try:
        FlagParser().parse(prompt)
    except FlagError as exc:
        assert keyword.split()[0] in str(exc)


def test_spans_locate_each_bracket_in_the_original_prompt() -> None:
    prompt = "Summarise [FLAG: cheapest] this\n[flag : max size 8B; size=0.4]\ntext, please. [Flag: newest]"
    parsed = FlagParser().parse(prompt)
    assert [prompt[s:e] for s, e in parsed.spans] == [
        "[FLAG: cheapest]", "[flag : max size 8B; size=0.4]", "[Flag: newest]"]
    assert parsed.prompt == "Summarise this\ntext, please."
    assert parsed.flags == ("cheapest", "max size 8B", "size=0.4", "newest")


# -- properties -------------------------------------------------------------------------------------
FLAG_WORDS = ["cheapest", "smallest model", "Largest", "newest", "size=0.5", "cost=-2", "max size 8B",
              "min size 1M", "license mit, apache-2.0", "newer than 2024-01-01", "expert b", "tiniest",
              "size=nan", "max size 9999999999999999999", "", ";", ","]
fragments = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["[", "]", "[Flag:", "[flag :", "[ FLAG:", " ", "\n", "\t", ".", "?", "flag", ":"]),
    st.builds(lambda w, a, b: f"[{a}Flag{b}: {w}]", st.sampled_from(FLAG_WORDS),
              st.sampled_from(["", " ", "\t"]), st.sampled_from(["", " "])),
)
prompts = st.lists(fragments, max_size=12).map("".join)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(prompts)
def test_parse_raises_nothing_but_flag_error(prompt: str) -> None:
    try:
        FlagParser(["size", "cost", "recency"]).parse(prompt)
    except FlagError:
        pass


@PROPERTY
@given(prompts)
def test_stripping_is_idempotent(prompt: str) -> None:
    parser = FlagParser(["size", "cost", "recency"])
    try:
        once = parser.parse(prompt)
    except FlagError:
        return
    twice = parser.parse(once.prompt)
    assert twice.prompt == once.prompt
    assert twice.flags == () and twice.spans == ()


@PROPERTY
@given(prompts)
def test_every_span_is_a_whole_flag_bracket_and_spans_are_ordered(prompt: str) -> None:
    try:
        parsed = FlagParser().parse(prompt)
    except TryageError:
        return
    ends = -1
    for start, end in parsed.spans:
        assert start >= ends
        text = prompt[start:end]
        assert text.startswith("[") and text.endswith("]") and text.count("]") == 1
        assert text[1:].lstrip().lower().startswith("flag")
        ends = end
    assert len(parsed.flags) >= len(parsed.spans)


@PROPERTY
@given(st.text(alphabet=st.characters(blacklist_characters="[]", blacklist_categories=("Cs",)), max_size=200))
def test_a_prompt_without_brackets_is_only_trimmed(prompt: str) -> None:
    assert strip_flags(prompt) == prompt.strip()
