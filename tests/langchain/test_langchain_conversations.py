"""ChatTryage in conversations: routing on the whole exchange, and threads that keep their expert."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="the LangChain adapter needs the 'langchain' extra")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402
from langchain_core.tracers.context import collect_runs  # noqa: E402
from langchain_fakes import EXPERTS, EchoChatModel, make_router  # noqa: E402

from langchain_tryage import ChatTryage  # noqa: E402
from tryage.errors import ConfigurationError  # noqa: E402

# KeywordPredictor losses (code, legal, general): "python"/"bug" -> (0.1, 0.9, 0.5);
# "court"/"contract" -> (0.9, 0.1, 0.5); no keyword -> (0.9, 0.9, 0.5).
FOLLOW_UP = [HumanMessage("my python function has a bug"), AIMessage("Which line fails?"),
             HumanMessage("why does it happen?")]


def chat_model(**kwargs):
    router, predictor = make_router()
    experts = {name: EchoChatModel(label=name) for name in EXPERTS}
    return ChatTryage(router=router, experts=experts, **kwargs), experts, predictor


def test_a_follow_up_is_routed_with_the_earlier_turns_as_context():
    model, experts, predictor = chat_model()
    reply = model.invoke(FOLLOW_UP)
    # 0.75 * (0.9, 0.9, 0.5) + 0.25 * (0.1, 0.9, 0.5) = (0.7, 0.9, 0.5): still general ...
    assert reply.response_metadata["tryage_expert"] == "general"
    scores = {s["expert"]: s["predicted_loss"] for s in reply.response_metadata["tryage_decision"]["scores"]}
    assert scores == pytest.approx({"code": 0.7, "legal": 0.9, "general": 0.5})
    # ... the turn and its context went through one predictor pass, the context newest turn first
    assert predictor.passes == [2]
    assert predictor.prompts == ["why does it happen?", "Which line fails?\nmy python function has a bug"]
    # a heavier context moves the follow-up to the expert of the conversation
    model, experts, _ = chat_model(context_weight=0.6)
    assert model.invoke(FOLLOW_UP).content == "code: why does it happen?"
    assert [m.content for m in experts["code"].seen[0]] == [m.content for m in FOLLOW_UP]


def test_context_weight_zero_routes_on_the_last_turn_alone():
    model, _, predictor = chat_model(context_weight=0.0)
    reply = model.invoke(FOLLOW_UP)
    scores = {s["expert"]: s["predicted_loss"] for s in reply.response_metadata["tryage_decision"]["scores"]}
    assert scores == pytest.approx({"code": 0.9, "legal": 0.9, "general": 0.5})
    assert predictor.passes == [1]


def test_flags_of_earlier_turns_do_not_apply_to_the_new_turn():
    model, experts, predictor = chat_model(context_weight=0.4)
    conversation = [HumanMessage("hello [Flag: smallest model]"), AIMessage("Hi."),
                    HumanMessage("a question about a court contract")]
    reply = model.invoke(conversation)
    assert reply.response_metadata["tryage_expert"] == "legal"
    assert reply.response_metadata["tryage_decision"]["flags"] == []
    assert predictor.prompts[-1] == "Hi.\nhello"
    assert experts["legal"].seen[0][0].content == "hello"  # the expert never sees a flag


def test_system_messages_are_not_context():
    model, _, predictor = chat_model()
    model.invoke([SystemMessage("You are a python court assistant."), HumanMessage("hi there")])
    assert predictor.passes == [1] and predictor.prompts == ["hi there"]


def test_context_weight_and_margin_are_checked():
    with pytest.raises(ConfigurationError, match=r"context_weight must be a number in \[0, 1\]; got 2"):
        chat_model(context_weight=2)
    with pytest.raises(ConfigurationError, match="stickiness_margin must be a finite number >= 0"):
        chat_model(sticky=True, stickiness_margin=-1)
    with pytest.raises(ConfigurationError, match="max_threads must be a positive integer; got 0"):
        chat_model(sticky=True, max_threads=0)


# -- stickiness ----------------------------------------------------------------------------------
def turn(chat, text, thread, **kwargs):
    reply = chat.invoke(text, config={"configurable": {"thread_id": thread}}, **kwargs)
    return reply.response_metadata["tryage_expert"], reply.response_metadata.get("tryage_sticky")


def test_a_thread_keeps_its_expert_until_another_is_better_by_the_margin():
    model, _, _ = chat_model(sticky=True, stickiness_margin=0.5, context_weight=0.0)
    assert turn(model, "python bug", "t1") == ("code", "new")
    # general (0.5) beats code (0.9) by 0.4, within the margin: the thread stays on code
    assert turn(model, "and what else?", "t1") == ("code", "kept")
    assert turn(model, "one more thing", "t1") == ("code", "kept")
    # legal (0.1) beats code (0.9) by 0.8: the thread moves, and then stays on legal
    assert turn(model, "now a court contract", "t1") == ("legal", "switched")
    assert turn(model, "and what else?", "t1") == ("legal", "kept")
    # without stickiness the same turn goes to the best expert
    plain, _, _ = chat_model(context_weight=0.0)
    reply = plain.invoke("and what else?", config={"configurable": {"thread_id": "t1"}})
    assert reply.response_metadata["tryage_expert"] == "general"
    assert "tryage_sticky" not in reply.response_metadata


def test_threads_are_independent_and_an_explicit_key_wins_over_thread_id():
    model, _, _ = chat_model(sticky=True, stickiness_margin=0.5, context_weight=0.0)
    assert turn(model, "python bug", "a") == ("code", "new")
    assert turn(model, "court contract", "b") == ("legal", "new")
    assert turn(model, "hello", "a") == ("code", "kept")
    assert turn(model, "hello", "b") == ("legal", "kept")
    assert turn(model, "hello", "c") == ("general", "new")
    explicit = {"configurable": {"thread_id": "c", "tryage_thread": "b"}}
    assert model.invoke("hello", config=explicit).response_metadata["tryage_expert"] == "legal"
    assert model.invoke("hello", tryage_thread="a").response_metadata["tryage_sticky"] == "kept"
    # no thread: routed as usual, nothing recorded
    reply = model.invoke("hello")
    assert reply.response_metadata["tryage_expert"] == "general" and "tryage_sticky" not in reply.response_metadata


def test_flags_and_forced_experts_override_stickiness():
    model, _, _ = chat_model(sticky=True, stickiness_margin=5.0, context_weight=0.0)
    assert turn(model, "python bug", "t") == ("code", "new")
    assert turn(model, "python bug [Flag: smallest model]", "t") == ("general", "switched")
    assert turn(model, "python bug", "t", model="legal") == ("legal", "switched")
    assert turn(model, "python bug", "t") == ("legal", "kept")  # the thread is where it last answered


def test_the_least_recently_used_thread_is_forgotten():
    model, _, _ = chat_model(sticky=True, stickiness_margin=0.5, context_weight=0.0, max_threads=2)
    turn(model, "python bug", "a")
    turn(model, "court", "b")
    turn(model, "hello", "c")
    assert turn(model, "hello", "a") == ("general", "new")
    assert turn(model, "hello", "c") == ("general", "kept")


def test_the_route_run_says_what_stickiness_did():
    model, _, _ = chat_model(sticky=True, stickiness_margin=0.5, context_weight=0.0)
    turn(model, "python bug", "t")
    with collect_runs() as runs:
        model.invoke("hello", config={"configurable": {"thread_id": "t"}})
    (route,) = [r for r in runs.traced_runs[0].child_runs if r.name == "TryageRoute"]
    assert route.outputs["sticky"] == "kept" and route.outputs["expert"] == "code"
    assert route.inputs["thread"] == "t"
    totals = {s["expert"]: s["total"] for s in route.outputs["scores"]}
    assert totals["general"] < totals["code"]  # the trace shows the better expert it stayed away from


async def test_streams_and_async_calls_keep_the_thread():
    model, _, _ = chat_model(sticky=True, stickiness_margin=0.5, context_weight=0.0)
    config = {"configurable": {"thread_id": "s"}}
    chunks = list(model.stream("python bug", config=config))
    assert chunks[0].response_metadata["tryage_sticky"] == "new"
    assert (await model.ainvoke("hello", config=config)).response_metadata["tryage_expert"] == "code"
    chunks = [c async for c in model.astream("hello", config=config)]
    assert chunks[0].response_metadata["tryage_sticky"] == "kept"
    assert "".join(c.content for c in chunks) == "code: hello"


def test_fallback_records_the_expert_that_answered():
    router, _ = make_router()
    experts = {name: EchoChatModel(label=name, fail=name == "code") for name in EXPERTS}
    model = ChatTryage(router=router, experts=experts, fallback=True, sticky=True, stickiness_margin=0.5,
                       context_weight=0.0)
    first = model.invoke("python bug", tryage_thread="f")
    assert first.response_metadata["tryage_expert"] == "general"  # code failed; general is next best
    again = model.invoke("hello", tryage_thread="f").response_metadata
    assert (again["tryage_expert"], again["tryage_sticky"]) == ("general", "kept")
    assert "tryage_fallback_from" not in again  # the thread is on general, not on the failing code


# -- LangGraph ------------------------------------------------------------------------------------
def test_langgraph_threads_with_a_checkpointer_keep_their_expert():
    pytest.importorskip("langgraph")
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, MessagesState, StateGraph

    model, experts, _ = chat_model(sticky=True, stickiness_margin=0.3)

    def respond(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("respond", respond)
    builder.add_edge(START, "respond")
    graph = builder.compile(checkpointer=InMemorySaver())

    def say(text: str, thread: str) -> AIMessage:
        state = graph.invoke({"messages": [HumanMessage(text)]}, {"configurable": {"thread_id": thread}})
        return state["messages"][-1]

    first = say("my python function has a bug", "1")
    assert (first.response_metadata["tryage_expert"], first.response_metadata["tryage_sticky"]) == ("code", "new")
    # a vague follow-up: general scores 0.2 better than code (0.7 with the context), within the margin
    follow = say("why does it happen?", "1")
    assert (follow.response_metadata["tryage_expert"], follow.response_metadata["tryage_sticky"]) == ("code", "kept")
    # the checkpointer gave the expert the whole thread
    assert [m.type for m in experts["code"].seen[-1]] == ["human", "ai", "human"]
    other = say("why does it happen?", "2")
    assert (other.response_metadata["tryage_expert"], other.response_metadata["tryage_sticky"]) == ("general", "new")
    legal = say("is the contract valid in court?", "1")
    assert (legal.response_metadata["tryage_expert"], legal.response_metadata["tryage_sticky"]) == ("legal", "switched")


def test_batch_routes_in_one_pass_and_keeps_each_thread():
    model, _, predictor = chat_model(sticky=True, stickiness_margin=0.5, context_weight=0.0)
    turn(model, "python bug", "a")
    turn(model, "court", "b")
    replies = model.batch(["hello", "hello", "hello"], config=[
        {"configurable": {"thread_id": t}} for t in ("a", "b", "c")])
    assert [(r.response_metadata["tryage_expert"], r.response_metadata["tryage_sticky"]) for r in replies] == [
        ("code", "kept"), ("legal", "kept"), ("general", "new")]
    assert predictor.passes[-1] == 3


def test_a_long_conversation_keeps_its_newest_turns_within_the_window():
    model, _, predictor = chat_model()
    predictor.max_length = 64  # the encoder's window in tokens: the context keeps about 8 characters a token
    old = [HumanMessage("my python function has a bug"), AIMessage("Which line?")]
    recent = [m for i in range(3) for m in (HumanMessage(f"question {i} " + "words " * 30), AIMessage(f"answer {i}"))]
    model.invoke([*old, *recent, HumanMessage("and now?")])
    context = predictor.prompts[-1]
    assert context.startswith("answer 2\nquestion 2 ")
    assert len(context) <= 8 * 64 and "python" not in context  # the oldest turns fell off


def test_a_thread_id_must_be_hashable():
    model, _, _ = chat_model(sticky=True)
    with pytest.raises(ConfigurationError, match="thread id must be hashable.*got list"):
        model.invoke("hello", tryage_thread=["a"])
