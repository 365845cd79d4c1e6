"""ChatTryage as a chat model (tools, agents, structured output, streaming) and TryageRouteDecider
as a LangGraph conditional edge."""

from __future__ import annotations

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
        model.invoke([HumanMessage("about the law")])
    (root,) = collector.traced_runs
    assert root.name == "ChatTryage"
    route, expert = root.child_runs
    assert route.name == "TryageRoute" and route.outputs["expert"] == "legal"
    assert expert.run_type == "llm" and "tryage:expert=legal" in expert.tags


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


def test_chat_tryage_rejects_bad_experts():
    router, _ = make_router()
    with pytest.raises(ConfigurationError, match="must be a chat model.*'code': 'RunnableLambda'"):
        ChatTryage(router=router, experts={"code": RunnableLambda(str), "legal": EchoChatModel(label="l"),
                                           "general": EchoChatModel(label="g")})
    with pytest.raises(ExpertMappingError, match="router experts with no runnable: 'legal', 'general'"):
        ChatTryage(router=router, experts={"code": EchoChatModel(label="c")})
    with pytest.raises(ConfigurationError, match="empty input"):
        ChatTryage(router=router, experts={n: EchoChatModel(label=n) for n in EXPERTS}).invoke("")


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
