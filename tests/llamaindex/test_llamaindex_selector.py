"""TryageSelector on its own: choices, mapping, top-k, flags, weights, fallback and errors."""

from __future__ import annotations

import pytest
from llamaindex_helpers import LIBRARY, KeywordPredictor, NoEncoderPredictor
from llama_index.core.base.base_selector import SelectorResult
from llama_index.core.schema import QueryBundle
from llama_index.core.tools.types import ToolMetadata

from llamaindex_tryage import TryageSelector, TryageSelectorResult, UnknownChoiceError
from tryage import ExpertNotFoundError, Filter, FlagError, MissingMetadataError, TryageError, TryageRouter
from tryage.errors import ConfigurationError, UnknownConstraintError

LEGAL_QUERY = "Can the court void this contract clause?"
TOOLS = [
    ToolMetadata(name="legal", description="Answers about contracts and courts"),
    ToolMetadata(name="medical", description="Answers about patients and doses"),
    ToolMetadata(name="code", description="Answers about python code"),
]


def test_selector_picks_lowest_predicted_loss(router):
    result = TryageSelector(router).select(TOOLS, LEGAL_QUERY)

    assert isinstance(result, SelectorResult) and isinstance(result, TryageSelectorResult)
    assert result.ind == 0
    assert result.experts == ["legal"]
    assert result.decision.expert == "legal"
    assert result.decision.chosen.predicted_loss == pytest.approx(0.3)


def test_selector_reason_is_the_decision_explanation(router):
    result = TryageSelector(router, weights={"size": 0.1}).select(TOOLS, LEGAL_QUERY)

    assert result.reason == result.decision.explain()
    assert "predicted loss 0.3" in result.reason
    assert "size penalty" in result.reason and "total" in result.reason


def test_selector_only_considers_offered_choices(router):
    result = TryageSelector(router).select([TOOLS[2], TOOLS[1]], LEGAL_QUERY)

    assert result.ind == 1  # medical (0.91) beats code (0.92); legal was not offered
    assert result.decision.expert == "medical"
    legal = next(s for s in result.decision.scores if s.expert == "legal")
    assert not legal.eligible
    assert "not among the allowed experts" in legal.excluded_because


def test_selector_accepts_choices_in_any_order(router):
    result = TryageSelector(router).select([TOOLS[1], TOOLS[2], TOOLS[0]], LEGAL_QUERY)

    assert result.ind == 2


def test_selector_expert_map_maps_tool_names(router):
    tools = [ToolMetadata(name="contracts_index", description="legal documents"),
             ToolMetadata(name="medical", description="medical documents")]
    selector = TryageSelector(router, expert_map={"contracts_index": "legal"})

    result = selector.select(tools, LEGAL_QUERY)

    assert result.ind == 0
    assert result.experts == ["legal"]
    assert result.reason.endswith("tool 'contracts_index'")


def test_selector_top_k_returns_best_first(router):
    selector = TryageSelector(router, max_outputs=2)

    result = selector.select(TOOLS, "My python function has a bug when the patient list is empty")

    assert result.inds == [2, 1]  # code 0.12, medical 0.71, legal 0.9
    assert result.experts == ["code", "medical"]
    assert result.reasons[0] == result.decision.explain()
    assert result.reasons[1].startswith("ranked 2: 'medical': predicted loss 0.71")


def test_selector_top_k_larger_than_choices_returns_every_choice(router):
    result = TryageSelector(router, max_outputs=10).select(TOOLS[:2], LEGAL_QUERY)

    assert result.inds == [0, 1]


def test_selector_flags_decide_and_are_removed_from_the_query(router):
    query = QueryBundle(f"{LEGAL_QUERY} [Flag: smallest model]")

    result = TryageSelector(router).select(TOOLS, query)

    assert result.decision.expert == "medical"  # 1B
    assert result.decision.flags == ("smallest model",)
    assert "flags: smallest model" in result.reason
    assert query.query_str == LEGAL_QUERY


def test_selector_leaves_a_query_without_flags_untouched(router):
    query = QueryBundle("Can   the court void this contract clause?")

    TryageSelector(router).select(TOOLS, query)

    assert query.query_str == "Can   the court void this contract clause?"


def test_selector_rewrite_query_false_keeps_flags(router):
    query = QueryBundle(f"{LEGAL_QUERY} [Flag: smallest model]")

    TryageSelector(router, rewrite_query=False).select(TOOLS, query)

    assert query.query_str.endswith("[Flag: smallest model]")


def test_selector_expert_flag_limits_to_that_expert(router):
    result = TryageSelector(router).select(TOOLS, f"{LEGAL_QUERY} [Flag: expert code]")

    assert result.inds == [2]


def test_selector_weights_on_selector_apply_to_every_query(router):
    selector = TryageSelector(router, weights={"size": 1.0})

    assert selector.select(TOOLS, LEGAL_QUERY).experts == ["medical"]


def test_selector_select_weights_override_selector_weights(router):
    selector = TryageSelector(router, weights={"size": 1.0})

    result = selector.select(TOOLS, LEGAL_QUERY, weights={"size": 0.0})

    assert result.experts == ["legal"]
    assert result.decision.weights["size"] == 0.0


def test_selector_using_block_sets_weights_and_ends_with_it(router):
    selector = TryageSelector(router)

    with selector.using(weights={"size": -5.0}):
        inside = selector.select(TOOLS, LEGAL_QUERY)
    after = selector.select(TOOLS, LEGAL_QUERY)

    assert inside.experts == ["code"]  # 13B, the largest
    assert after.experts == ["legal"]


def test_selector_using_blocks_nest_and_flags_win(router):
    selector = TryageSelector(router)

    with selector.using(weights={"size": -5.0}), selector.using(filters=[Filter(max_parameters=10**10)]):
        nested = selector.select(TOOLS, LEGAL_QUERY)
        flagged = selector.select(TOOLS, f"{LEGAL_QUERY} [Flag: size=1]")

    assert nested.experts == ["legal"]  # code (13B) is filtered out, legal (7B) is the largest left
    assert flagged.experts == ["medical"]


def test_selector_using_is_per_selector(router):
    first, second = TryageSelector(router), TryageSelector(router)

    with first.using(weights={"size": 1.0}):
        assert second.select(TOOLS, LEGAL_QUERY).experts == ["legal"]


async def test_selector_aselect_matches_select(router):
    selector = TryageSelector(router, max_outputs=3)
    query = QueryBundle(f"{LEGAL_QUERY} [Flag: cost=0]")

    with selector.using(weights={"size": 0.05}):
        result = await selector.aselect(TOOLS, query)

    assert result.inds == selector.select(TOOLS, LEGAL_QUERY, weights={"size": 0.05}).inds
    assert query.query_str == LEGAL_QUERY


async def test_selector_aselect_takes_per_call_weights(router):
    result = await TryageSelector(router).aselect(TOOLS, LEGAL_QUERY, weights={"size": 1.0})

    assert result.experts == ["medical"]


def test_selector_unknown_choice_is_a_clear_error(router):
    tools = [*TOOLS, ToolMetadata(name="finance", description="stock markets")]

    with pytest.raises(UnknownChoiceError) as info:
        TryageSelector(router).select(tools, LEGAL_QUERY)

    assert isinstance(info.value, (TryageError, KeyError, ExpertNotFoundError))
    assert info.value.choice == "finance" and info.value.index == 3
    message = str(info.value)
    assert "choice 3 ('finance') is not an expert of the router" in message
    assert "'legal', 'medical', 'code'" in message
    assert "expert_map" in message and "fallback='description_similarity'" in message


def test_selector_nameless_choice_is_a_clear_error(router):
    with pytest.raises(UnknownChoiceError, match="choice 0 has no name"):
        TryageSelector(router).select(["contracts and courts"], LEGAL_QUERY)


def test_selector_empty_query_is_a_clear_error(router):
    with pytest.raises(ConfigurationError, match="routes on the query text, got query_str=''"):
        TryageSelector(router).select(TOOLS, "")


def test_selector_query_of_only_flags_is_a_clear_error(router):
    with pytest.raises(ConfigurationError, match="empty prompt"):
        TryageSelector(router).select(TOOLS, "[Flag: smallest model]")


def test_selector_bad_flag_is_a_flag_error(router):
    with pytest.raises(FlagError, match="unknown flag"):
        TryageSelector(router).select(TOOLS, f"{LEGAL_QUERY} [Flag: fastest please]")


def test_selector_no_choices_is_a_clear_error(router):
    with pytest.raises(ConfigurationError, match="no choices"):
        TryageSelector(router).select([], LEGAL_QUERY)


def test_selector_two_choices_for_one_expert_is_an_error(router):
    tools = [TOOLS[0], ToolMetadata(name="contracts", description="more contracts")]

    with pytest.raises(ConfigurationError, match="both map to expert 'legal'"):
        TryageSelector(router, expert_map={"contracts": "legal"}).select(tools, LEGAL_QUERY)


def test_selector_filters_excluding_every_offered_choice_is_an_error(router):
    with pytest.raises(TryageError, match="exclude every expert"):
        TryageSelector(router).select(TOOLS[:1], f"{LEGAL_QUERY} [Flag: max size 2B]")


def test_selector_fallback_scores_unknown_choice_by_description(router):
    tools = [*TOOLS, ToolMetadata(name="cooking", description="recipes for tomato soup and bread")]
    selector = TryageSelector(router, fallback="description_similarity")

    soup = selector.select(tools, "a recipe for tomato soup")
    legal = selector.select(tools, LEGAL_QUERY)

    assert soup.experts == ["cooking"] and soup.ind == 3
    cooking = soup.decision.chosen
    assert 0.0 <= cooking.predicted_loss < 0.5  # 1 - cos(query, description)
    assert legal.experts == ["legal"]
    assert next(s for s in legal.decision.scores if s.expert == "cooking").predicted_loss > 0.5


def test_selector_fallback_names_nameless_choices_by_position(router):
    selector = TryageSelector(router, fallback="description_similarity")

    result = selector.select(["recipes for tomato soup", "gardening tips"], "tomato soup recipes")

    assert result.ind == 0 and result.experts == ["<choice 0>"]


def test_selector_fallback_unknown_choices_have_no_size(router):
    tools = [*TOOLS, ToolMetadata(name="cooking", description="recipes")]

    with pytest.raises(MissingMetadataError, match="'cooking'"):
        TryageSelector(router, fallback="description_similarity").select(
            tools, f"{LEGAL_QUERY} [Flag: smallest model]")


def test_selector_fallback_needs_an_encoder():
    router = TryageRouter(NoEncoderPredictor(), LIBRARY)
    tools = [*TOOLS, ToolMetadata(name="cooking", description="recipes")]

    with pytest.raises(ConfigurationError, match="needs a predictor with an encode"):
        TryageSelector(router, fallback="description_similarity").select(tools, LEGAL_QUERY)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"max_outputs": 0}, ConfigurationError, "max_outputs must be an integer >= 1, got 0"),
    ({"max_outputs": True}, ConfigurationError, "max_outputs"),
    ({"fallback": "similar"}, ConfigurationError, r"fallback must be None or one of \['description_similarity'\]"),
    ({"expert_map": {"docs": "finance"}}, ExpertNotFoundError, r"expert_map\['docs'\] = 'finance': unknown expert"),
    ({"weights": {"speed": 1.0}}, UnknownConstraintError, "unknown constraint 'speed'"),
    ({"filters": ["max 7B"]}, ConfigurationError, "tryage.Filter"),
])
def test_selector_constructor_rejects_bad_arguments(router, kwargs, error, match):
    with pytest.raises(error, match=match):
        TryageSelector(router, **kwargs)


def test_selector_rejects_a_router_that_is_not_a_tryage_router():
    with pytest.raises(ConfigurationError, match="router must be a tryage.TryageRouter, got KeywordPredictor"):
        TryageSelector(KeywordPredictor())


def test_selector_using_rejects_unknown_constraint(router):
    selector = TryageSelector(router)

    with pytest.raises(UnknownConstraintError), selector.using(weights={"speed": 1.0}):
        pass


def test_selector_from_defaults_uses_given_router(router):
    selector = TryageSelector.from_defaults(router, max_outputs=2)

    assert selector.router is router and selector.max_outputs == 2


def test_selector_from_defaults_without_router_loads_the_default(router, monkeypatch):
    monkeypatch.setattr(TryageRouter, "default", classmethod(lambda cls, **kw: router))

    assert TryageSelector.from_defaults().router is router


def test_selector_from_defaults_loads_a_router_folder(router, monkeypatch, tmp_path):
    loaded = []
    monkeypatch.setattr(TryageRouter, "from_pretrained",
                        classmethod(lambda cls, path, **kw: loaded.append(path) or router))

    selector = TryageSelector.from_defaults(tmp_path, weights={"size": 0.5})

    assert loaded == [tmp_path]
    assert selector.router is router and dict(selector.weights) == {"size": 0.5}


def test_selector_has_no_prompts(router):
    selector = TryageSelector(router)

    assert selector.get_prompts() == {}
    selector.update_prompts({})  # accepted, nothing to update
