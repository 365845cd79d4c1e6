"""Hostile expert metadata, weights, filters and predictions: one clear error, never a wrong expert."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tryage import Expert, ExpertLibrary, Filter, TryageRouter
from tryage.errors import (
    ConfigurationError,
    ExpertLibraryError,
    NoEligibleExpertError,
    NonFinitePredictionError,
    TryageError,
    UnknownConstraintError,
)

BIG = 10**400

BAD_METADATA = [
    # (field, value, text the message must contain)
    ("parameters", 0.001, "0.001"),
    ("parameters", 0, "got 0"),
    ("parameters", -7, "-7"),
    ("parameters", "0.1", "'0.1'"),
    ("parameters", "9" * 400, "'99999"),
    ("parameters", BIG, "10000"),
    ("parameters", float("inf"), "inf"),
    ("parameters", float("nan"), "nan"),
    ("parameters", True, "True"),
    ("parameters", "huge", "'huge'"),
    ("parameters", [7], "[7]"),
    ("parameters", "2000T", "'2000T'"),
    ("license", 5, "license must be a string"),
    ("license", ["mit"], "['mit']"),
    ("tags", 5, "tags must be"),
    ("tags", [1, 2], "[1, 2]"),
    ("description", 5, "description must be a string"),
    ("gated", "yes", "'yes'"),
    ("repo_id", 3.5, "3.5"),
    ("downloads", -1, "-1"),
    ("downloads", float("inf"), "inf"),
    ("downloads", "many", "'many'"),
    ("input_cost", "cheap", "'cheap'"),
    ("input_cost", -1, "-1"),
    ("input_cost", BIG, "10000"),
    ("output_cost", float("nan"), "nan"),
    ("created_at", "yesterday", "'yesterday'"),
    ("created_at", 5, "5"),
    ("last_modified", "2024-02-30", "'2024-02-30'"),
    ("paramters", "7B", "unknown field 'paramters'"),
]


@pytest.mark.parametrize(("field", "value", "shown"), BAD_METADATA,
                         ids=[f"{f}={str(v)[:12]}" for f, v, _ in BAD_METADATA])
def test_bad_expert_metadata_is_an_expert_library_error_naming_expert_and_value(field: str, value: object,
                                                                                 shown: str) -> None:
    with pytest.raises(ExpertLibraryError) as info:
        Expert.from_dict({"name": "m7", field: value})
    assert type(info.value) is ExpertLibraryError
    message = str(info.value)
    assert "'m7'" in message and shown in message and "\n" not in message
    assert len(message) < 400  # a 400-digit value is shortened


@pytest.mark.parametrize("name", ["", "   ", 5, None])
def test_an_expert_without_a_usable_name_is_refused(name: object) -> None:
    with pytest.raises(ExpertLibraryError, match="expert name must be a non-empty string"):
        Expert(name)  # type: ignore[arg-type]


def test_the_smallest_model_flag_works_with_tiny_but_valid_sizes() -> None:
    """``parameters: 0.001`` used to reach log(0) ("math domain error"); now 1 is the smallest count."""
    library = ExpertLibrary([Expert("a", parameters=1), Expert("b", parameters=2)])
    router = TryageRouter(_Fixed({"a": 0.5, "b": 0.1}), library)
    assert router.route("x [Flag: smallest model]").expert == "a"


class _Fixed:
    def __init__(self, losses: dict[str, float]) -> None:
        self.experts = tuple(losses)
        self.row = np.array(list(losses.values()), dtype=np.float64)

    def predict_losses(self, prompts):  # noqa: ANN001, ANN201
        return np.tile(self.row, (len(prompts), 1))


metadata_values = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                            st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                            st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3))
FIELDS = ["parameters", "license", "tags", "created_at", "last_modified", "input_cost", "output_cost",
          "downloads", "likes", "gated", "description", "repo_id", "size", "input_price"]


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), metadata_values, max_size=5))
def test_expert_from_any_metadata_is_valid_or_an_expert_library_error(data: dict) -> None:
    try:
        expert = Expert.from_dict({"name": "m", **data})
    except ExpertLibraryError as exc:
        assert "'m'" in str(exc)
        return
    assert expert.parameters is None or 1 <= expert.parameters <= 10**15
    for cost in (expert.input_cost, expert.output_cost):
        assert cost is None or (math.isfinite(cost) and cost >= 0)
    assert all(isinstance(t, str) for t in expert.tags)
    assert expert.license is None or isinstance(expert.license, str)


# -- weights --------------------------------------------------------------------------------------------
BAD_WEIGHTS = [
    ([("size", 1.0)], ConfigurationError, "got list"),
    ((0.5, 0.5), ConfigurationError, "got tuple"),
    ("size=1", ConfigurationError, "got str"),
    ({"size": "big"}, ConfigurationError, "'big'"),
    ({"size": float("nan")}, ConfigurationError, "nan"),
    ({"size": float("inf")}, ConfigurationError, "inf"),
    ({"size": BIG}, ConfigurationError, "1000000"),
    ({"size": True}, ConfigurationError, "True"),
    ({"size": None}, ConfigurationError, "None"),
    ({"speed": 1.0}, UnknownConstraintError, "'speed'"),
]


@pytest.mark.parametrize(("weights", "error", "shown"), BAD_WEIGHTS, ids=[repr(w)[:20] for w, _, _ in BAD_WEIGHTS])
def test_bad_weights_are_refused_naming_them(router: TryageRouter, weights: object, error: type, shown: str) -> None:
    with pytest.raises(error) as info:
        router.route("hello", weights=weights)  # type: ignore[arg-type]
    assert type(info.value) is error
    assert shown in str(info.value)


def test_bad_default_weights_are_refused_when_the_router_is_built() -> None:
    with pytest.raises(ConfigurationError, match="got list"):
        TryageRouter(_Fixed({"a": 0.1}), weights=[("size", 1)])  # type: ignore[arg-type]


# -- filters --------------------------------------------------------------------------------------------
BAD_FILTERS = [
    ([None], "NoneType"),
    (["max size 8B"], "'max size 8B'"),
    ([{"max_parameters": 8}], "dict"),
    ((Filter(experts=("b",)), None), "NoneType"),
]


@pytest.mark.parametrize(("filters", "shown"), BAD_FILTERS, ids=[repr(f)[:20] for f, _ in BAD_FILTERS])
def test_filters_that_are_not_filter_objects_are_a_configuration_error(router: TryageRouter, filters: list,
                                                                        shown: str) -> None:
    with pytest.raises(ConfigurationError, match="filters must be Filter objects") as info:
        router.route("hello", filters=filters)
    assert type(info.value) is ConfigurationError
    assert shown in str(info.value)


@pytest.mark.parametrize(("kwargs", "shown"), [
    ({"max_parameters": "huge"}, "'huge'"),
    ({"max_parameters": BIG}, "10000"),
    ({"min_parameters": -1}, "-1"),
    ({"licenses": 5}, "5"),
    ({"experts": [None]}, "[None]"),
    ({"experts": [""]}, "['']"),
    ({"newer_than": "soon"}, "'soon'"),
    ({"date_field": "birthday"}, "'birthday'"),
], ids=lambda v: repr(v)[:20])
def test_bad_filter_arguments_are_a_configuration_error(kwargs: dict, shown: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Filter(**kwargs)
    assert type(info.value) is ConfigurationError
    assert shown in str(info.value)


def test_a_lone_string_filter_value_is_one_name_not_its_letters(router: TryageRouter) -> None:
    assert Filter(licenses="MIT").licenses == ("mit",)
    assert router.route("hello", filters=[Filter(experts="b")]).expert == "b"
    assert router.route("hello", filters=[Filter(max_parameters="8B", min_parameters="5B")]).expert == "b"


def test_filters_excluding_everything_name_each_expert_and_why(router: TryageRouter) -> None:
    with pytest.raises(NoEligibleExpertError, match="a: .*b: .*c: "):
        router.route("hello [Flag: expert zzz]")


def test_filters_are_absolute_when_eligible_totals_overflow(router: TryageRouter) -> None:
    """Issue 14: ``size=1e308, cost=1e308`` with ``[Flag: expert b]`` returned ``a``."""
    decision = router.route("hello [Flag: expert b]", weights={"size": 1e308, "cost": 1e308})
    assert decision.expert == "b"
    decision = router.route("hello [Flag: expert c]", weights={"size": 1e308, "cost": -1e308})
    assert decision.expert == "c"


weights_st = st.dictionaries(st.sampled_from(["size", "cost", "recency"]),
                             st.one_of(st.floats(-1e308, 1e308), st.sampled_from([1e308, -1e308, 0.0])), max_size=3)
filters_st = st.lists(st.one_of(
    st.builds(lambda n: Filter(experts=n), st.lists(st.sampled_from("abc"), min_size=1, max_size=2)),
    st.builds(lambda n: Filter(max_parameters=n), st.sampled_from(["1B", "7B", "70B"])),
    st.builds(lambda n: Filter(licenses=n), st.sampled_from([["mit"], ["llama3", "apache-2.0"]])),
), max_size=2)


@settings(max_examples=300, deadline=None)
@given(weights_st, filters_st, st.lists(st.floats(-1e308, 1e308), min_size=3, max_size=3))
def test_the_chosen_expert_always_passes_every_filter(weights: dict, filters: list, losses: list) -> None:
    library = ExpertLibrary([Expert("a", parameters="1B", license="mit", created_at="2023-01-01", input_cost=1),
                             Expert("b", parameters="7B", license="apache-2.0", created_at="2024-01-01", input_cost=2),
                             Expert("c", parameters="70B", license="llama3", created_at="2024-06-01", input_cost=9)])
    router = TryageRouter(_Fixed(dict(zip("abc", losses))), library)
    try:
        decision = router.route("hello", weights=weights, filters=filters)
    except NoEligibleExpertError:
        assert all(any(f.reason_excluded(e) for f in filters) for e in library)
        return
    chosen = library[decision.expert]
    assert all(f.reason_excluded(chosen) is None for f in filters)
    assert decision.chosen.eligible


# -- predictions -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_predicted_losses_are_an_error_naming_experts_and_prompts(make_router, bad: float) -> None:  # noqa: ANN001
    router = make_router({"a": bad, "b": 0.2, "c": 0.3})
    with pytest.raises(NonFinitePredictionError) as info:
        router.route_batch(["first prompt", "second prompt"])
    assert info.value.experts == ("a",)
    assert "'a'" in str(info.value) and "'first prompt'" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TryageError)


def test_non_finite_predictions_in_a_batch_name_every_affected_row() -> None:
    from tryage.objective import decide
    from tryage.constraints import ConstraintSet

    library = ExpertLibrary.from_names(["a", "b"])
    predicted = np.array([[0.1, 0.2], [np.nan, 0.1], [0.3, np.inf]])
    with pytest.raises(NonFinitePredictionError) as info:
        decide(predicted, library, ConstraintSet(), prompts=["ok", "bad one", "bad two"])
    assert info.value.experts == ("a", "b")
    assert info.value.prompts == ("bad one", "bad two")


def test_an_empty_prompt_after_flags_is_refused(router: TryageRouter) -> None:
    with pytest.raises(ConfigurationError, match="empty prompt"):
        router.route("  [Flag: cheapest]  ")


@pytest.mark.parametrize("filters", [Filter(experts=("b",)), "max size 8B", 8], ids=repr)
def test_filters_given_as_one_value_instead_of_a_list_are_a_configuration_error(router: TryageRouter,
                                                                               filters: object) -> None:
    with pytest.raises(ConfigurationError, match=f"filters must be a list of Filter objects, got {type(filters).__name__}"):
        router.route("hello", filters=filters)  # type: ignore[arg-type]
