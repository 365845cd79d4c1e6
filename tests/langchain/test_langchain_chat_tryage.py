"""ChatTryage as a chat model (tools, agents, structured output, streaming) and TryageRouteDecider
as a LangGraph conditional edge."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("langchain_core", reason="the LangChain adapter needs the 'langchain' extra")

from langchain_core.language_models import FakeListChatModel, GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_core.tracers.context import collect_runs  # noqa: E402
from langchain_fakes import EXPERTS, EchoChatModel, make_router  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from langchain_tryage import ChatTryage, TryageRouteDecider  # noqa: E402
from tryage import RoutingDecision  # noqa: E402
from tryage.errors import ConfigurationError, ExpertMappingError, ExpertNotFoundError  # noqa: E402


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture
def chat():
    router, predictor = make_router()
    experts = {name: EchoChatModel(label=name) for name in EXPERTS}
    return ChatTryage(router=router, experts=experts), experts, predictor


def test_chat_tryage_answers_with_the_chosen_expert_and_says_which(chat):
    model, experts, _ = chat
    reply = model.invoke("My python function crashes [Flag: size=0.01]")
    assert isinstance(reply, AIMessage)
    assert reply.content == "code: My python function crashes"
    assert reply.response_metadata["tryage_expert"] == "code"
    scores = {s["expert"]: s for s in reply.response_metadata["tryage_decision"]["scores"]}
    assert scores["code"]["predicted_loss"] == pytest.approx(0.1)
    assert experts["legal"].seen == []


def test_chat_tryage_per_call_weights_model_override_and_stop(chat):
    model, experts, _ = chat
    assert model.invoke("python bug", tryage_weights={"size": 1000.0}).content.startswith("general: ")
    assert model.invoke("python bug", config={"configurable": {"tryage_weights": {"size": 1000.0}}}) \
        .content.startswith("general: ")
    assert model.invoke("python bug", model="legal").response_metadata["tryage_expert"] == "legal"
    assert model.bind(model="legal").invoke("python bug").content == "legal: python bug"
    with pytest.raises(ExpertNotFoundError, match="unknown expert 'gpt-9'"):
        model.invoke("python bug", model="gpt-9")
    model.invoke("contract", stop=["\n"])
    assert experts["legal"].seen_kwargs[-1]["stop"] == ["\n"]
    assert model._get_ls_params(model="legal")["ls_model_name"] == "legal"


def test_chat_tryage_forwards_standard_params_to_the_expert():
    router, _ = make_router()
    experts = {name: EchoChatModel(label=name) for name in EXPERTS}
    ChatTryage(router=router, experts=experts, temperature=0.2, max_tokens=64, stop=["END"]).invoke("court")
    assert experts["legal"].seen_kwargs[-1] == {"stop": ["END"], "temperature": 0.2, "max_tokens": 64}


def test_chat_tryage_batch_routes_in_one_pass(chat):
    model, experts, predictor = chat
    replies = model.batch(["python", "court", "hi", "law"])
    assert [r.content for r in replies] == ["code: python", "legal: court", "general: hi", "legal: law"]
    assert predictor.passes == [4]
    assert len(experts["legal"].seen) == 2


async def test_chat_tryage_async_invoke_batch_and_stream(chat):
    model, _, predictor = chat
    assert (await model.ainvoke("court")).content == "legal: court"
    assert [r.content for r in await model.abatch(["python", "hi"])] == ["code: python", "general: hi"]
    chunks = [c async for c in model.astream("python code")]
    assert len(chunks) > 1 and all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(c.content for c in chunks) == "code: python code"
    assert chunks[0].response_metadata["tryage_expert"] == "code"
    assert predictor.passes == [1, 2, 1]


def test_chat_tryage_streams_from_fake_chat_models_and_streaming_invoke_joins_them():
    router, _ = make_router()
    experts = {"code": FakeListChatModel(responses=["print(1)"]),
               "legal": GenericFakeChatModel(messages=iter(["Clause four applies here.", "Again."])),
               "general": FakeListChatModel(responses=["Hi!"])}
    model = ChatTryage(router=router, experts=experts)
    chunks = list(model.stream("a court case"))
    assert len(chunks) > 2
    assert "".join(c.content for c in chunks) == "Clause four applies here."
    streaming = ChatTryage(router=router, experts=experts, streaming=True)
    reply = streaming.invoke("python")
    assert type(reply) is AIMessage and reply.content == "print(1)"


def test_chat_tryage_trace_shows_route_and_expert_runs(chat):
    model, _, _ = chat
    with collect_runs() as collector:
        reply = model.invoke([HumanMessage("about the law")])
    (root,) = collector.traced_runs
    assert root.name == "ChatTryage" and root.run_type == "llm"  # BaseChatModel's own run
    route, expert = root.child_runs
    assert route.name == "TryageRoute" and route.outputs["expert"] == "legal"
    assert "tryage:route" in route.tags
    assert expert.run_type == "llm" and "tryage:expert=legal" in expert.tags
    assert route.outputs["decision_id"] == reply.response_metadata["tryage_decision_id"]


async def test_chat_tryage_stream_nests_the_route_and_expert_runs_under_its_own(chat):
    model, _, _ = chat
    with collect_runs() as collector:
        list(model.stream("about the law"))
        [c async for c in model.astream("python bug")]
        ChatTryage(router=model.router, experts=model.experts, streaming=True).invoke("court")
    assert [r.name for r in collector.traced_runs] == ["ChatTryage"] * 3
    for root, expert in zip(collector.traced_runs, ["legal", "code", "legal"]):
        route, expert_run = root.child_runs
        assert route.name == "TryageRoute" and route.outputs["expert"] == expert
        assert f"tryage:expert={expert}" in expert_run.tags


def test_chat_tryage_generate_path_routes_too(chat):
    model, _, _ = chat
    result = model.generate([[HumanMessage("python")], [HumanMessage("law")]])
    assert [g[0].message.content for g in result.generations] == ["code: python", "legal: law"]


def test_chat_tryage_bind_tools_binds_on_the_chosen_expert(chat):
    model, experts, _ = chat
    bound = model.bind_tools([add], tool_choice="any")
    reply = bound.invoke("python: add 2 and 3")
    assert reply.tool_calls[0]["name"] == "add" and reply.tool_calls[0]["args"] == {"a": 2, "b": 3}
    kwargs = experts["code"].seen_kwargs[-1]
    assert kwargs["tool_choice"] == "any" and kwargs["tools"][0]["function"]["name"] == "add"


def test_chat_tryage_bind_tools_fails_clearly_when_an_expert_cannot_call_tools():
    router, _ = make_router()
    experts = {"code": EchoChatModel(label="code"), "legal": FakeListChatModel(responses=["x"]),
               "general": EchoChatModel(label="general")}
    with pytest.raises(ConfigurationError, match="expert 'legal' \\(FakeListChatModel\\) does not support tool"):
        ChatTryage(router=router, experts=experts).bind_tools([add])


def test_chat_tryage_runs_an_agent_loop_on_one_expert(chat):
    create_agent = pytest.importorskip("langchain.agents").create_agent
    model, experts, predictor = chat
    agent = create_agent(model=model, tools=[add])
    state = agent.invoke({"messages": [HumanMessage("python: what is 2 + 3?")]})
    messages = state["messages"]
    assert isinstance(messages[2], ToolMessage) and messages[2].content == "5"
    assert messages[-1].content == "code: tool said 5"
    assert len(experts["code"].seen) == 2 and experts["legal"].seen == [] and experts["general"].seen == []
    assert predictor.prompts[-2:] == ["python: what is 2 + 3?"] * 2  # both steps routed on the question


def test_chat_tryage_with_structured_output_uses_each_experts_own(chat):
    class Person(BaseModel):
        """A person."""

        name: str
        age: int

    router, _ = make_router()
    experts = {n: EchoChatModel(label=n, tool_args={"name": n, "age": 36}) for n in EXPERTS}
    model = ChatTryage(router=router, experts=experts)
    assert model.with_structured_output(Person).invoke("court") == Person(name="legal", age=36)
    raw = model.with_structured_output(Person, include_raw=True).invoke("python")
    assert raw["parsed"] == Person(name="code", age=36) and isinstance(raw["raw"], AIMessage)
    meta = raw["raw"].response_metadata
    assert meta["tryage_expert"] == "code" and meta["tryage_decision"]["expert"] == "code"
    assert uuid.UUID(meta["tryage_decision_id"])


def test_chat_tryage_rejects_bad_experts():
    router, _ = make_router()
    with pytest.raises(ConfigurationError, match="must be a chat model.*'code': 'RunnableLambda'"):
        ChatTryage(router=router, experts={"code": RunnableLambda(str), "legal": EchoChatModel(label="l"),
                                           "general": EchoChatModel(label="g")})
    with pytest.raises(ExpertMappingError, match="experts 'coder' are not the router's experts"):
        ChatTryage(router=router, experts={"coder": EchoChatModel(label="c")})
    with pytest.raises(ExpertNotFoundError, match=r"expert_map\['coder'\] = 'gpt-9': unknown expert 'gpt-9'"):
        ChatTryage(router=router, experts={"coder": EchoChatModel(label="c")}, expert_map={"coder": "gpt-9"})
    with pytest.raises(ConfigurationError, match="empty prompt"):
        ChatTryage(router=router, experts={n: EchoChatModel(label=n) for n in EXPERTS}).invoke("")


def test_chat_tryage_offers_a_subset_under_the_users_names():
    router, predictor = make_router()
    experts = {"coder": EchoChatModel(label="coder"), "chat": EchoChatModel(label="chat")}
    model = ChatTryage(router=router, experts=experts, expert_map={"coder": "code", "chat": "general"})
    # legal would win "court" (0.1) but is not offered: general (0.5) beats code (0.9)
    replies = model.batch(["python bug", "court ruling"])
    assert [r.content for r in replies] == ["coder: python bug", "chat: court ruling"]
    assert [r.response_metadata["tryage_expert"] for r in replies] == ["coder", "chat"]
    assert replies[1].response_metadata["tryage_decision"]["expert"] == "general"
    assert predictor.passes == [2]
    assert model.invoke("python bug", model="chat").content == "chat: python bug"


def test_chat_tryage_gives_each_decision_its_own_id(chat):
    model, _, _ = chat
    ids = [r.response_metadata["tryage_decision_id"] for r in [*model.batch(["python", "law"]), model.invoke("hi")]]
    assert len({str(uuid.UUID(i)) for i in ids}) == 3


def test_chat_tryage_uses_the_chat_model_cache():
    from langchain_core.caches import InMemoryCache

    router, predictor = make_router()
    experts = {name: EchoChatModel(label=name) for name in EXPERTS}
    model = ChatTryage(router=router, experts=experts, cache=InMemoryCache())
    first, second = model.invoke("court ruling"), model.invoke("court ruling")
    assert first.content == second.content == "legal: court ruling"
    assert len(experts["legal"].seen) == 1 and predictor.passes == [1]  # the second call never routed


def test_chat_tryage_falls_back_when_the_chosen_expert_raises():
    router, _ = make_router()
    experts = {"code": FakeListChatModel(responses=[]), "legal": EchoChatModel(label="legal"),
               "general": EchoChatModel(label="general")}
    model = ChatTryage(router=router, experts=experts, fallback=True)
    reply = model.invoke("python bug")
    assert reply.content == "general: python bug" and reply.response_metadata["tryage_fallback_from"] == ["code"]
    assert [r.content for r in model.batch(["python bug", "court"])] == ["general: python bug", "legal: court"]
    with pytest.raises(IndexError):
        ChatTryage(router=router, experts=experts).invoke("python bug")


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")  # the issue asks for this agent
def test_chat_tryage_prebound_runs_in_langgraph_create_react_agent():
    pytest.importorskip("langgraph")
    from langgraph.prebuilt import create_react_agent

    router, _ = make_router()
    experts = {"code": EchoChatModel(label="code", tool_args={"a": 2, "b": 3}),
               "legal": EchoChatModel(label="legal", tool_args={"a": 40, "b": 2})}
    model = ChatTryage(router=router, experts=experts)  # two tool-calling experts, a subset of the router's
    agent = create_react_agent(model.bind_tools([add]), [add])
    messages = agent.invoke({"messages": [HumanMessage("court: what is 40 + 2?")]})["messages"]
    tool_message = next(m for m in messages if isinstance(m, ToolMessage))
    assert tool_message.name == "add" and tool_message.content == "42"  # the tool ran with legal's arguments
    assert messages[-1].content == "legal: tool said 42"
    assert messages[-1].response_metadata["tryage_expert"] == "legal"
    assert experts["code"].seen == [] and len(experts["legal"].seen) == 2


# -- routing only ----------------------------------------------------------------------------------
def test_route_decider_returns_names_decisions_or_dicts():
    router, predictor = make_router()
    decider = TryageRouteDecider(router)
    assert decider.invoke({"messages": [HumanMessage("python")]}) == "code"
    assert decider.batch([{"messages": [("human", "law")]}, {"messages": [("human", "hi")]}]) == ["legal", "general"]
    assert predictor.passes == [1, 2]
    decision = TryageRouteDecider(router, output="decision", input_key="q").invoke({"q": "court"})
    assert isinstance(decision, RoutingDecision) and decision.expert == "legal"
    as_dict = TryageRouteDecider(router, output="dict").invoke(
        {"messages": "python"}, config={"configurable": {"tryage_weights": {"size": 1000.0}}})
    assert as_dict["expert"] == "general" and as_dict["weights"] == {"size": 1000.0}
    with collect_runs() as collector:
        decider.invoke({"messages": "court"})
    assert collector.traced_runs[0].outputs["expert"] == "legal"
    with pytest.raises(ConfigurationError, match="no key 'messages'"):
        decider.invoke({"input": "x"})
    offered = TryageRouteDecider(router, experts=["coder", "chat"], expert_map={"coder": "code", "chat": "general"})
    assert offered.batch([{"messages": "court"}, {"messages": "python"}]) == ["chat", "coder"]


def test_route_decider_sends_the_state_without_flags_to_the_chosen_node():
    pytest.importorskip("langgraph")
    from langgraph.graph import END, START, MessagesState, StateGraph

    router, _ = make_router()
    experts = {n: EchoChatModel(label=n) for n in EXPERTS}
    graph = StateGraph(MessagesState)
    for name, expert in experts.items():
        graph.add_node(name, lambda state, expert=expert: {"messages": [expert.invoke(state["messages"])]})
        graph.add_edge(name, END)
    graph.add_conditional_edges(START, TryageRouteDecider(router, output="send"), list(experts))
    app = graph.compile()
    out = app.invoke({"messages": [HumanMessage("Hi [Flag: cheapest]"), AIMessage("Hello"),
                                   HumanMessage("python bug\n[Flag: smallest model]")]})
    assert out["messages"][-1].content == "general: python bug"
    assert [m.content for m in experts["general"].seen[-1]] == ["Hi", "Hello", "python bug"]


def test_route_decider_drives_a_langgraph_conditional_edge():
    pytest.importorskip("langgraph")
    from langgraph.graph import END, START, MessagesState, StateGraph

    router, _ = make_router()
    experts = {n: EchoChatModel(label=n) for n in EXPERTS}
    graph = StateGraph(MessagesState)
    for name, expert in experts.items():
        graph.add_node(name, lambda state, expert=expert: {"messages": [expert.invoke(state["messages"])]})
        graph.add_edge(name, END)
    graph.add_conditional_edges(START, TryageRouteDecider(router), list(experts))
    app = graph.compile()
    assert app.invoke({"messages": [HumanMessage("a court ruling")]})["messages"][-1].content == \
        "legal: a court ruling"
    assert app.invoke({"messages": [HumanMessage("python bug")]})["messages"][-1].content == "code: python bug"
