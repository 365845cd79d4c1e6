"""The adapters' contract: both take any object of the ``tryage.Router`` protocol, map names through the
core's one ``ExpertMap`` (so a bad map is the same one-line error everywhere), and parse each earlier
turn of a conversation once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.language_models import FakeListChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from llama_index.core.tools.types import ToolMetadata  # noqa: E402

from langchain_tryage import ChatTryage, TryageRouteDecider, TryageRouterChain  # noqa: E402
from llamaindex_tryage import TryageSelector  # noqa: E402
from tryage import Expert, ExpertLibrary, Filter, Router, TryageRouter  # noqa: E402
from tryage.constraints import ConstraintSet  # noqa: E402
from tryage.errors import ConfigurationError, ExpertNotFoundError, TryageError  # noqa: E402
from tryage.flags import ParsedFlags  # noqa: E402
from tryage.objective import RoutingDecision  # noqa: E402
from tryage.router import BatchRouter, ExpertMap  # noqa: E402

EXPERTS = ("code", "legal", "general")


class Keywords:
    """Loss 0.1 for the expert whose keyword is in the prompt, 0.9 otherwise; ``general`` 0.5."""

    experts = EXPERTS

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray:
        return np.array([[0.1 if "python" in p.lower() else 0.9, 0.1 if "court" in p.lower() else 0.9, 0.5]
                         for p in prompts])


def tryage_router() -> TryageRouter:
    return TryageRouter(Keywords(), ExpertLibrary([Expert("code", parameters=7_000_000_000),
                                                   Expert("legal", parameters=13_000_000_000),
                                                   Expert("general", parameters=1_000_000_000)]))


class ProtocolRouter:
    """A router that is not a TryageRouter, only of the Router protocol; it counts the texts it parses."""

    def __init__(self) -> None:
        self._inner = tryage_router()
        self.parsed: Counter[str] = Counter()

    @property
    def experts(self) -> tuple[str, ...]:
        return self._inner.experts

    @property
    def constraints(self) -> ConstraintSet:
        return self._inner.constraints

    def parse(self, prompt: str) -> ParsedFlags:
        self.parsed[prompt] += 1
        return self._inner.parse(prompt)

    def route_batch(self, prompts: Iterable[str], *, weights: Mapping[str, float] | None = None,
                    filters: Sequence[Filter] = (), return_exceptions: bool = False,
                    ) -> list[RoutingDecision | TryageError]:
        return self._inner.route_batch(prompts, weights=weights, filters=filters,
                                       return_exceptions=return_exceptions)


def chat_experts() -> dict[str, FakeListChatModel]:
    return {name: FakeListChatModel(responses=[f"{name} answers"] * 10) for name in EXPERTS}


def test_a_router_of_the_protocol_is_a_router_and_a_predictor_is_not():
    assert isinstance(ProtocolRouter(), Router) and not isinstance(ProtocolRouter(), TryageRouter)
    assert isinstance(tryage_router(), Router)
    assert not isinstance(Keywords(), BatchRouter)


def test_both_adapters_route_with_any_object_of_the_router_protocol():
    router = ProtocolRouter()
    chain = TryageRouterChain(router, {n: RunnableLambda(lambda x, n=n: f"{n}: {x}") for n in EXPERTS})
    assert chain.invoke("fix my python [Flag: size=0.01]") == "code: fix my python"
    assert chain.invoke("a court ruling") == "legal: a court ruling"
    chat = ChatTryage(router=router, experts=chat_experts())
    assert chat.invoke("a court ruling").response_metadata["tryage_expert"] == "legal"
    assert TryageRouteDecider(router).invoke({"messages": [HumanMessage("python bug")]}) == "code"
    tools = [ToolMetadata(name=n, description=f"the {n} tool") for n in EXPERTS]
    selected = TryageSelector(router).select(tools, "a court ruling [Flag: largest model]")
    assert selected.experts == ["legal"] and selected.ind == 1
    assert TryageSelector(router, max_outputs=3).select(tools, "python").experts == ["code", "general", "legal"]


def test_the_selector_needs_the_whole_protocol_and_its_fallback_a_tryage_router():
    class Bare:
        def route_batch(self, prompts: Iterable[str], **kwargs: Any) -> list[Any]:
            return []

    with pytest.raises(ConfigurationError, match=r"^router must be a tryage.TryageRouter, got Bare; .*Router protocol"):
        TryageSelector(Bare())
    assert TryageRouterChain(Bare(), {"code": RunnableLambda(str)}).router.__class__ is Bare  # LangChain: route_batch
    with pytest.raises(ConfigurationError, match="fallback='description_similarity' .* got a ProtocolRouter"):
        TryageSelector(ProtocolRouter(), fallback="description_similarity")


BAD_MAPS = [
    ({"mine": "gpt-9"}, ExpertNotFoundError, "expert_map['mine'] = 'gpt-9': unknown expert 'gpt-9'"),
    ({5: "code"}, ConfigurationError, "expert_map keys must be names (str); got 5"),
    (["code"], ConfigurationError, "expert_map must be a dict of your name -> router expert; got list"),
]


@pytest.mark.parametrize(("expert_map", "error", "start"), BAD_MAPS)
def test_the_shared_expert_map_gives_every_adapter_the_same_one_line_error(expert_map, error, start):
    router = tryage_router()
    experts = {"mine": RunnableLambda(str), "legal": RunnableLambda(str)}
    attempts = {
        "core": lambda: ExpertMap.check_map(expert_map, router.experts),
        "TryageRouterChain": lambda: TryageRouterChain(router, experts, expert_map=expert_map),
        "ChatTryage": lambda: ChatTryage(router=router, experts={"mine": FakeListChatModel(responses=["x"]),
                                                                 "legal": FakeListChatModel(responses=["x"])},
                                         expert_map=expert_map),
        "TryageRouteDecider": lambda: TryageRouteDecider(router, experts=["mine", "legal"], expert_map=expert_map),
        "TryageSelector": lambda: TryageSelector(router, expert_map=expert_map),
    }
    messages = {}
    for name, attempt in attempts.items():
        with pytest.raises(error) as info:
            attempt()
        assert type(info.value) is error, name
        messages[name] = str(info.value)
    assert set(messages.values()) == {messages["core"]}, messages
    assert messages["core"].startswith(start) and "\n" not in messages["core"]


def test_the_expert_map_names_offered_experts_both_ways():
    named = ExpertMap.build(["coder", "general"], {"coder": "code"}, known=EXPERTS)
    assert dict(named.to_router) == {"coder": "code", "general": "general"}
    assert dict(named.to_user) == {"code": "coder", "general": "general"}
    assert named.offered is not None and named.offered.experts == ("code", "general")
    assert ExpertMap.build(list(EXPERTS), known=EXPERTS).offered is None
    assert ExpertMap.build(["anything"], known=None).offered is None  # a router that lists no experts
    choices, missing = ExpertMap.for_choices(["contracts", None, "code"], {"contracts": "legal"}, known=EXPERTS)
    assert list(choices.to_router.values()) == ["legal", "<choice 1>", "code"] and missing == (1,)
    with pytest.raises(ConfigurationError, match=r"^choices 0 \('legal'\) and 1 \('contracts'\) both map to"):
        ExpertMap.for_choices(["legal", "contracts"], {"contracts": "legal"}, known=EXPERTS)


def test_each_earlier_turn_is_parsed_once_per_call_and_per_batch():
    router = ProtocolRouter()
    chat = ChatTryage(router=router, experts=chat_experts(), context_weight=0.4)
    earlier = "hello [Flag: smallest model]"
    conversation = [HumanMessage(earlier), AIMessage("Hi."), HumanMessage("a question about a court ruling")]

    reply = chat.invoke(conversation)
    assert reply.response_metadata["tryage_expert"] == "legal"
    assert router.parsed == Counter({earlier: 1})

    router.parsed.clear()
    chat.batch([conversation, [*conversation[:2], HumanMessage("and in python?")]])
    assert router.parsed == Counter({earlier: 1})
