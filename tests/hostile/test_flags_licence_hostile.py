"""A licence list in one bracket with other flags: ``[Flag: license mit, cheapest]`` applies both.

A licence list keeps its commas (``license mit, apache-2.0``) and ends at the next piece that is a flag of its
own, so the order in which the flags of a bracket are written does not change what they ask for.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tryage import FlagParser
from tryage.flags import STRONG_WEIGHT

OTHERS = ["cheapest", "smallest model", "size=0.5", "max size 8B", "newer than 2023-01-01", "expert b",
          "legal only"]


def _parser() -> FlagParser:
    return FlagParser(("size", "recency", "cost", "latency")).register("legal only", weights={"latency": 2.0})


def test_license_then_cheapest_applies_both(router) -> None:
    parsed = router.parse("hi [Flag: license mit, cheapest]")
    assert parsed.flags == ("license mit", "cheapest")
    assert dict(parsed.weights) == {"cost": STRONG_WEIGHT}
    assert [f.licenses for f in parsed.filters] == [("mit",)]
    decision = router.route("hi [Flag: license mit, apache-2.0, cheapest]")
    assert decision.expert == "a"  # the cheapest of the mit and apache-2.0 experts
    assert router.route("hi [Flag: license apache-2.0, llama3, cheapest]").expert == "b"


@settings(max_examples=150, deadline=None, database=None)
@given(licences=st.lists(st.sampled_from(["mit", "apache-2.0", "llama3", "cc-by-4.0"]), min_size=1, max_size=3,
                         unique=True),
       others=st.lists(st.sampled_from(OTHERS), max_size=3, unique=True), at=st.integers(0, 3))
def test_a_licence_list_anywhere_in_a_bracket_asks_for_the_same(licences, others, at) -> None:
    parser = _parser()
    licence = "license " + ", ".join(licences)
    at = min(at, len(others))
    mixed = parser.parse(f"hi [Flag: {', '.join([*others[:at], licence, *others[at:]])}]")
    apart = parser.parse(f"hi [Flag: {'; '.join([*others, licence])}]")  # ';' always separates
    assert dict(mixed.weights) == dict(apart.weights)
    assert sorted(map(repr, mixed.filters)) == sorted(map(repr, apart.filters))
    assert sorted(mixed.flags) == sorted(apart.flags)
    assert mixed.prompt == "hi"
