from __future__ import annotations


import numpy as np
import pytest

from tryage import Constraint, ConstraintSet, Expert, ExpertLibrary, Filter, FlagError, FlagParser, strip_flags
from tryage.errors import MissingMetadataError, UnknownConstraintError
from tryage.flags import STRONG_WEIGHT

LIB = ExpertLibrary([
    Expert("small", parameters="100M", created_at="2020-01-01", input_cost=0.1, output_cost=0.1, license="mit"),
    Expert("mid", parameters="1B", created_at="2022-01-01", input_cost=0.5, output_cost=0.5, license="apache-2.0"),
    Expert("big", parameters="10B", created_at="2024-01-01", input_cost=0.9, output_cost=0.9, license="llama3"),
])


def test_size_penalty_is_log_scaled_over_the_library():
    pen = ConstraintSet()["size"].penalties(LIB)
    np.testing.assert_allclose(pen, [0.0, 0.5, 1.0])


def test_recency_and_cost_prefer_new_and_cheap():
    cs = ConstraintSet()
    assert list(cs["recency"].penalties(LIB).round(3)) == [1.0, pytest.approx(0.5, abs=1e-3), 0.0]
    np.testing.assert_allclose(cs["cost"].penalties(LIB), [0.0, 0.5, 1.0])


def test_missing_metadata_names_the_experts_or_uses_the_given_value():
    lib = ExpertLibrary([Expert("known", parameters="1B"), Expert("mystery")])
    with pytest.raises(MissingMetadataError, match="'size' needs 'parameters'.*'mystery'"):
        ConstraintSet()["size"].penalties(lib)
    from tryage import Size

    assert list(Size(missing=1.0).penalties(lib)) == [0.0, 1.0]


def test_user_defined_constraint_is_scaled_and_usable_by_name():
    domain = Constraint("not_legal", lambda e: 0.0 if "legal" in e.tags else 1.0, field="tags")
    lib = ExpertLibrary([Expert("a", tags=("legal",)), Expert("b")])
    cs = ConstraintSet().with_constraint(domain)
    assert list(cs["not_legal"].penalties(lib)) == [0.0, 1.0]
    with pytest.raises(UnknownConstraintError, match="known constraints: 'size', 'recency', 'cost', 'latency', "
                       "'verbosity', 'readability', 'safety', 'hallucination', 'not_legal'"):
        cs.check_weights({"legality": 1.0})


def test_filters_explain_why_an_expert_is_excluded():
    assert Filter(max_parameters=2_000_000_000).reason_excluded(LIB["big"]) == "10B > max 2B"
    assert Filter(licenses=("MIT",)).reason_excluded(LIB["small"]) is None
    assert "not in" in Filter(licenses=("mit",)).reason_excluded(LIB["big"])
    assert Filter(newer_than="2021-06-01").reason_excluded(LIB["small"]).startswith("created_at 2020-01-01")
    assert Filter(max_parameters=10).reason_excluded(Expert("x")) == "parameter count unknown"


def test_paper_flag_is_parsed_and_stripped():
    parsed = FlagParser().parse("The capital of California is [MASK]. [Flag: smallest model]")
    assert parsed.prompt == "The capital of California is [MASK]."
    assert parsed.flags == ("smallest model",)
    assert parsed.weights == {"size": STRONG_WEIGHT}


def test_several_flags_anywhere_case_insensitive():
    parsed = FlagParser().parse("[FLAG: Cheapest] Summarise this [flag: max size 8B; size=0.4] text, please.")
    assert parsed.prompt == "Summarise this text, please."
    assert parsed.weights == {"cost": STRONG_WEIGHT, "size": 0.4}
    assert parsed.filters[0].max_parameters == 8_000_000_000


def test_licence_and_date_and_expert_flags_become_filters():
    parsed = FlagParser().parse("x [Flag: license mit, apache-2.0] [Flag: newer than 2023-01-01] [Flag: expert mid]")
    f_lic, f_date, f_exp = parsed.filters
    assert f_lic.licenses == ("mit", "apache-2.0")
    assert f_date.newer_than.year == 2023
    assert f_exp.experts == ("mid",)


@pytest.mark.parametrize(("prompt", "message"), [
    ("hi [Flag: tiniest model]", "unknown flag: \\[Flag: tiniest model\\]; valid flags: cheapest"),
    ("hi [Flag: size=big]", "weight 'big' is not a number"),
    ("hi [Flag: max size huge]", "cannot read size 'huge'"),
    ("hi [Flag: smallest model", "unclosed flag bracket"),
    ("hi [Flag: ]", "empty flag"),
])
def test_bad_flags_raise_flag_error_naming_the_flag_and_the_valid_ones(prompt, message):
    with pytest.raises(FlagError, match=message) as info:
        FlagParser().parse(prompt)
    assert isinstance(info.value, ValueError)
    assert "smallest model" in str(info.value)


def test_weight_flag_for_unknown_constraint_is_rejected_when_names_are_known():
    with pytest.raises(FlagError, match="unknown constraint 'speed'"):
        FlagParser(["size", "cost"]).parse("x [Flag: speed=1]")


def test_registered_flag_sets_its_weights_and_filters():
    parser = FlagParser().register("legal only", filters=[Filter(experts=("lawyer",))], description="only the lawyer")
    parsed = parser.parse("Is this clause valid? [Flag: Legal  Only]")
    assert parsed.filters[0].experts == ("lawyer",)
    assert "legal only (only the lawyer)" in parser.valid_flags()
    with pytest.raises(FlagError, match="built-in"):
        parser.register("cheapest")


def test_strip_flags_keeps_text_without_flags_unchanged():
    assert strip_flags("plain prompt, nothing else") == "plain prompt, nothing else"
    assert strip_flags("line one\n[Flag: newest]\nline two") == "line one\nline two"


def test_stripping_flags_keeps_the_prompts_own_white_space():
    code = "def f(x):\n    return  x  # two spaces [Flag: cheapest]\n\n\tpass"
    assert strip_flags(code) == "def f(x):\n    return  x  # two spaces\n\n\tpass"
    assert strip_flags("Is it [Flag: smallest model]?") == "Is it?"


def test_penalty_cache_follows_the_library_not_its_identity():
    cs = ConstraintSet()
    np.testing.assert_allclose(cs.penalties(LIB, ["size"])["size"], [0.0, 0.5, 1.0])
    other = ExpertLibrary([Expert("a", parameters="1B"), Expert("b", parameters="1M")])
    np.testing.assert_allclose(cs.penalties(other, ["size"])["size"], [1.0, 0.0])
