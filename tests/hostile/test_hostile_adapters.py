"""Both framework adapters on hostile input: the exact Tryage error class, a message naming the input.

LangChain's ``ChatTryage``: bad weights (constructor and per call), bad flags, empty messages, unknown
experts in ``experts``/``expert_map``. LlamaIndex's ``TryageSelector``: bad choices and queries, bad
settings. Inputs LangChain or LlamaIndex refuse themselves before Tryage sees them (``invoke(None)``)
are theirs to report and are not listed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tryage.errors import (
    ConfigurationError,
    ExpertMappingError,
    ExpertNotFoundError,
    FlagError,
    NoEligibleExpertError,
    UnknownConstraintError,
)

NAN = float("nan")
HUGE = "9" * 400

# name: (what to do with (router, experts) -> result, exact error class, text the message holds)
LANGCHAIN: dict[str, tuple[Callable[[Any, Any], Any], type[Exception], str]] = {
    "weights as a list": (lambda C, r, e: C(router=r, experts=e, weights=[1, 2]), ConfigurationError, "got list"),
    "weights nan": (lambda C, r, e: C(router=r, experts=e, weights={"size": NAN}), ConfigurationError, "'size'"),
    "weights inf": (lambda C, r, e: C(router=r, experts=e, weights={"size": float("inf")}), ConfigurationError,
                    "'size'"),
    "weights a string": (lambda C, r, e: C(router=r, experts=e, weights={"size": "high"}), ConfigurationError,
                         "'high'"),
    "weights unknown constraint": (lambda C, r, e: C(router=r, experts=e, weights={"speed": 1}),
                                   UnknownConstraintError, "'speed'"),
    "call weights nan": (lambda C, r, e: C(router=r, experts=e).invoke("hi", tryage_weights={"cost": NAN}),
                         ConfigurationError, "'cost'"),
    "call weights a list": (lambda C, r, e: C(router=r, experts=e).invoke("hi", tryage_weights=[1]),
                            ConfigurationError, "tryage_weights"),
    "call weights unknown": (lambda C, r, e: C(router=r, experts=e).invoke("hi", tryage_weights={"speed": 1}),
                             UnknownConstraintError, "'speed'"),
    "unknown flag": (lambda C, r, e: C(router=r, experts=e).invoke("hi [Flag: fastest]"), FlagError, "fastest"),
    "unclosed flag": (lambda C, r, e: C(router=r, experts=e).invoke("hi [Flag: smallest"), FlagError,
                      "unclosed flag bracket"),
    "400-digit size flag": (lambda C, r, e: C(router=r, experts=e).invoke(f"hi [Flag: max size {HUGE}]"),
                            FlagError, "cannot read size '9999"),
    "flag weight 1e999": (lambda C, r, e: C(router=r, experts=e).invoke("hi [Flag: size=1e999]"), FlagError,
                          "finite"),
    "flag excludes every expert": (lambda C, r, e: C(router=r, experts=e).invoke("hi [Flag: expert zzz]"),
                                   NoEligibleExpertError, "'zzz'"),
    "flags only": (lambda C, r, e: C(router=r, experts=e).invoke("[Flag: smallest]"), ConfigurationError,
                   "'[Flag: smallest]'"),
    "empty string": (lambda C, r, e: C(router=r, experts=e).invoke(""), ConfigurationError, "got ''"),
    "empty message list": (lambda C, r, e: C(router=r, experts=e).invoke([]), ConfigurationError,
                           "no user message"),
    "only a system message": (lambda C, r, e: C(router=r, experts=e).invoke([("system", "be brief")]),
                              ConfigurationError, "message types: system"),
    "lone surrogate": (lambda C, r, e: C(router=r, experts=e).invoke("x \udc80 y"), ConfigurationError,
                       "lone surrogate"),
    "unknown expert in expert_map": (lambda C, r, e: C(router=r, experts=e, expert_map={"a": "zzz"}),
                                     ExpertNotFoundError, "expert_map['a'] = 'zzz'"),
    "unknown expert in experts": (lambda C, r, e: C(router=r, experts={**e, "zzz": e["a"]}), ExpertMappingError,
                                  "'zzz'"),
    "no experts": (lambda C, r, e: C(router=r, experts={}), ConfigurationError, "empty mapping"),
    "experts not chat models": (lambda C, r, e: C(router=r, experts={"a": 5, "b": 6, "c": 7}), ConfigurationError,
                                "'a': 'int'"),
    "router None": (lambda C, r, e: C(router=None, experts=e), ConfigurationError, "got NoneType"),
    "unknown model override": (lambda C, r, e: C(router=r, experts=e).invoke("hi", model="gpt-9"),
                               ExpertNotFoundError, "'gpt-9'"),
}


@pytest.mark.parametrize("case", list(LANGCHAIN))
def test_chat_tryage_bad_input_raises_the_exact_class_naming_it(router, case: str) -> None:  # noqa: ANN001
    pytest.importorskip("langchain_core")
    from langchain_core.language_models import FakeListChatModel

    from langchain_tryage import ChatTryage

    experts = {name: FakeListChatModel(responses=[f"{name} answers"]) for name in ("a", "b", "c")}
    action, error, shown = LANGCHAIN[case]
    with pytest.raises(error) as info:
        action(ChatTryage, router, experts)
    assert type(info.value) is error
    assert shown in str(info.value)


TOOLS = ("a", "b", "c")

LLAMAINDEX: dict[str, tuple[Callable[[Any, Any, Any], Any], type[Exception], str]] = {
    "no choices": (lambda S, r, t: S(r).select([], "hi"), ConfigurationError, "no choices"),
    "unknown choice": (lambda S, r, t: S(r).select([t("zzz")], "hi"), None, "choice 0 ('zzz')"),
    "choice without a name": (lambda S, r, t: S(r).select([t(None)], "hi"), None, "choice 0 has no name"),
    "two choices of one expert": (lambda S, r, t: S(r).select([t("a"), t("a")], "hi"), ConfigurationError,
                                  "choices 0 ('a') and 1 ('a')"),
    "empty query": (lambda S, r, t: S(r).select([t("a"), t("b")], ""), ConfigurationError, "query_str=''"),
    "flags-only query": (lambda S, r, t: S(r).select([t("a"), t("b")], "[Flag: smallest]"), ConfigurationError,
                         "'[Flag: smallest]'"),
    "unknown flag in query": (lambda S, r, t: S(r).select([t("a"), t("b")], "hi [Flag: fastest]"), FlagError,
                              "fastest"),
    "unclosed flag in query": (lambda S, r, t: S(r).select([t("a"), t("b")], "hi [Flag: cheapest"), FlagError,
                               "unclosed flag bracket"),
    "400-digit size in query": (lambda S, r, t: S(r).select([t("a"), t("b")], f"hi [Flag: min size {HUGE}]"),
                                FlagError, "cannot read size '9999"),
    "query excluding every choice": (lambda S, r, t: S(r).select([t("a"), t("b")], "hi [Flag: expert zzz]"),
                                     NoEligibleExpertError, "'zzz'"),
    "lone surrogate in query": (lambda S, r, t: S(r).select([t("a")], "x \udc80"), ConfigurationError,
                                "lone surrogate"),
    "weights as a list": (lambda S, r, t: S(r, weights=[1]), ConfigurationError, "got list"),
    "weights nan": (lambda S, r, t: S(r, weights={"size": NAN}), ConfigurationError, "'size'"),
    "weights unknown constraint": (lambda S, r, t: S(r, weights={"speed": 1}), UnknownConstraintError, "'speed'"),
    "unknown expert in expert_map": (lambda S, r, t: S(r, expert_map={"tool": "zzz"}), ExpertNotFoundError,
                                     "expert_map['tool'] = 'zzz'"),
    "router None": (lambda S, r, t: S(None), ConfigurationError, "got NoneType"),
}


@pytest.mark.parametrize("case", list(LLAMAINDEX))
def test_tryage_selector_bad_input_raises_the_exact_class_naming_it(router, case: str) -> None:  # noqa: ANN001
    pytest.importorskip("llama_index.core")
    from llama_index.core.tools.types import ToolMetadata

    from llamaindex_tryage import TryageSelector, UnknownChoiceError

    def tool(name: str | None) -> ToolMetadata:
        return ToolMetadata(name=name, description=f"the {name} tool")

    action, error, shown = LLAMAINDEX[case]
    error = error or UnknownChoiceError
    with pytest.raises(error) as info:
        action(TryageSelector, router, tool)
    assert type(info.value) is error
    assert shown in str(info.value)
