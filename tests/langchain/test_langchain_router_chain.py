"""TryageRouterChain: routing, flags, batching, async, streaming, traces, per-call weights, fallbacks."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="the LangChain adapter needs the 'langchain' extra")

from langchain_core.language_models import FakeListChatModel, GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from langchain_core.tracers.context import collect_runs  # noqa: E402
from langchain_fakes import EXPERTS, EchoChatModel, GroupRecorder, NamedRouter, make_router  # noqa: E402

from langchain_tryage import TryageRouterChain  # noqa: E402
from tryage import RoutingDecision  # noqa: E402
from tryage.errors import (  # noqa: E402
    ConfigurationError,
    ExpertMappingError,
    ExpertNotFoundError,
    FlagError,
    RouterMismatchError,
    TryageError,
    UnknownConstraintError,
)


@pytest.fixture
def routed():
    router, predictor = make_router()
    experts = {name: EchoChatModel(label=name) for name in EXPERTS}
    return TryageRouterChain(router, experts), experts, predictor


def _last_user_text(model: EchoChatModel) -> str:
    return [m for m in model.seen[-1] if m.type == "human"][-1].content


def _find(runs, name):
    for run in runs:
        if run.name == name:
            return run
        found = _find(run.child_runs, name)
        if found is not None:
            return found
    return None


# -- routing and what the expert receives --------------------------------------------------------
def test_router_chain_sends_the_input_to_the_chosen_expert_only(routed):
    chain, experts, _ = routed
    reply = chain.invoke("Why does this Python function crash?")
    assert reply.content == "code: Why does this Python function crash?"
    assert len(experts["code"].seen) == 1
    assert experts["legal"].seen == [] and experts["general"].seen == []


def test_router_chain_strips_flags_from_every_user_turn_and_obeys_them(routed):
    chain, experts, predictor = routed
    messages = [SystemMessage("Answer briefly. [Flag: cheapest] is literal here"),
                HumanMessage("Hi [Flag: cheapest]"), AIMessage("Hello!"),
                HumanMessage("Review this contract clause.\n    indented line\n[Flag: smallest model]")]
    reply = chain.invoke(messages)
    # "smallest model" beats the legal keyword: the 1B general expert wins.
    assert reply.content.startswith("general: ")
    seen = experts["general"].seen[-1]
    assert [m.content for m in seen] == ["Answer briefly. [Flag: cheapest] is literal here", "Hi", "Hello!",
                                         "Review this contract clause.\n    indented line"]
    # the router reads the core's cleaned text; the expert keeps the user's indentation
    assert predictor.prompts[-1] == "Review this contract clause.\n    indented line"


def test_router_chain_accepts_prompt_values_tuples_and_dicts():
    router, _ = make_router()
    got = []
    experts = {n: RunnableLambda(lambda x, n=n: got.append((n, x)) or n) for n in EXPERTS}
    prompt = ChatPromptTemplate.from_messages([("system", "You are terse."), ("human", "{q}")])
    chain = prompt | TryageRouterChain(router, {n: EchoChatModel(label=n) for n in EXPERTS})
    assert chain.invoke({"q": "Is this contract valid in court? [Flag: largest model]"}).content == \
        "legal: Is this contract valid in court?"

    by_key = TryageRouterChain(router, experts, input_key="question")
    assert by_key.invoke({"question": "fix my python [Flag: size=0.01]", "user": "ada"}) == "code"
    assert got[-1] == ("code", {"question": "fix my python", "user": "ada"})
    assert by_key.invoke({"question": [("human", "what does the law say")]}) == "legal"
    assert got[-1][1]["question"][0].content == "what does the law say"


def test_router_chain_routes_on_the_last_user_turn_unless_a_window_is_set():
    conversation = [HumanMessage("My Python function has a bug"), AIMessage("Show me the code."),
                    HumanMessage("It is about a contract, actually")]
    router, predictor = make_router()
    experts = {n: EchoChatModel(label=n) for n in EXPERTS}
    assert TryageRouterChain(router, experts).route(conversation).expert == "legal"
    assert predictor.prompts[-1] == "It is about a contract, actually"

    decision = TryageRouterChain(router, experts, window=3).route(conversation)
    assert predictor.prompts[-1] == "My Python function has a bug\nShow me the code.\nIt is about a contract, actually"
    assert decision.predicted_losses == {"code": 0.1, "legal": 0.1, "general": 0.5}


# -- batches ---------------------------------------------------------------------------------------
def test_router_chain_batch_routes_in_one_pass_and_calls_each_expert_once_with_its_group():
    router, predictor = make_router()
    experts = {n: GroupRecorder(n) for n in EXPERTS}
    chain = TryageRouterChain(router, experts)
    prompts = ["python bug", "court ruling", "hello there", "python function", "contract law", "weather?"]
    out = chain.batch(prompts)
    assert out == ["code: python bug", "legal: court ruling", "general: hello there",
                   "code: python function", "legal: contract law", "general: weather?"]
    assert predictor.passes == [6]
    assert experts["code"].groups == [["python bug", "python function"]]
    assert experts["legal"].groups == [["court ruling", "contract law"]]
    assert experts["general"].groups == [["hello there", "weather?"]]


async def test_router_chain_abatch_routes_in_one_pass_and_keeps_order():
    router, predictor = make_router()
    experts = {n: GroupRecorder(n) for n in EXPERTS}
    chain = TryageRouterChain(router, experts)
    out = await chain.abatch(["court", "python", "hi", "law"])
    assert out == ["legal: court", "code: python", "general: hi", "legal: law"]
    assert predictor.passes == [4]
    assert experts["legal"].groups == [["court", "law"]]


def test_router_chain_batch_return_exceptions_isolates_a_bad_input(routed):
    chain, _, predictor = routed
    out = chain.batch(["python", "", "law"], return_exceptions=True)
    assert out[0].content == "code: python" and out[2].content == "legal: law"
    assert isinstance(out[1], ConfigurationError) and "empty" in str(out[1])
    assert predictor.passes == [2]
    out = chain.batch(["python [Flag: bogus]", "law", "[Flag: size=1]"], return_exceptions=True)
    assert isinstance(out[0], FlagError) and out[1].content == "legal: law"
    assert isinstance(out[2], ConfigurationError) and "empty prompt" in str(out[2])
    assert predictor.passes == [2, 1]
    with pytest.raises(ConfigurationError, match="empty"):
        chain.batch(["python", ""])


# -- async and streaming ---------------------------------------------------------------------------
async def test_router_chain_ainvoke_uses_the_chosen_expert(routed):
    chain, experts, _ = routed
    reply = await chain.ainvoke([HumanMessage("a court case")])
    assert reply.content == "legal: a court case"
    assert experts["code"].seen == []


def test_router_chain_stream_yields_the_chosen_experts_chunks():
    router, _ = make_router()
    experts = {"code": FakeListChatModel(responses=["def f(): pass"]),
               "legal": FakeListChatModel(responses=["See clause 4."]),
               "general": FakeListChatModel(responses=["Hello!"])}
    chain = TryageRouterChain(router, experts)
    chunks = list(chain.stream("python please"))
    assert len(chunks) > 3  # FakeListChatModel streams one character at a time
    assert "".join(c.content for c in chunks) == "def f(): pass"


async def test_router_chain_astream_yields_the_chosen_experts_chunks():
    router, _ = make_router()
    experts = {n: GenericFakeChatModel(messages=iter([f"{n} says hello world"])) for n in EXPERTS}
    chain = TryageRouterChain(router, experts)
    chunks = [c async for c in chain.astream("a contract question")]
    assert len(chunks) > 2
    assert "".join(c.content for c in chunks) == "legal says hello world"


# -- observability ---------------------------------------------------------------------------------
def test_router_chain_trace_holds_the_decision_and_names_the_expert(routed):
    chain, _, _ = routed
    with collect_runs() as collector:
        chain.invoke("python bug [Flag: size=0.1]")
    (root,) = collector.traced_runs
    assert root.name == "TryageRouterChain"
    route = _find([root], "TryageRoute")
    assert route.parent_run_id == root.id
    assert route.outputs["expert"] == "code" and route.outputs["flags"] == ["size=0.1"]
    scores = {s["expert"]: s for s in route.outputs["scores"]}
    assert scores["code"]["predicted_loss"] == pytest.approx(0.1)
    assert set(scores["legal"]["penalties"]) == {"size"}
    expert_run = _find([root], "EchoChatModel")
    assert "tryage:expert=code" in expert_run.tags
    assert expert_run.extra["metadata"]["tryage_expert"] == "code"


async def test_router_chain_astream_events_show_the_route_and_the_experts_tokens(routed):
    chain, _, _ = routed
    events = [e async for e in chain.astream_events("a court hearing", version="v2")]
    route_end = next(e for e in events if e["event"] == "on_chain_end" and e["name"] == "TryageRoute")
    assert route_end["data"]["output"]["expert"] == "legal"
    tokens = [e for e in events if e["event"] == "on_chat_model_stream"]
    assert tokens and all(e["metadata"]["tryage_expert"] == "legal" for e in tokens)
    assert "".join(e["data"]["chunk"].content for e in tokens) == "legal: a court hearing"


def test_router_chain_return_decision_and_route_give_the_decision(routed):
    chain, _, predictor = routed
    full = chain.with_config(run_name="x").invoke("python")  # with_config keeps the behaviour
    assert full.content == "code: python"
    chain_d = TryageRouterChain(chain.router, chain.experts, return_decision=True)
    out = chain_d.invoke("contract")
    assert out["expert"] == "legal" and out["output"].content == "legal: contract"
    assert isinstance(out["decision"], RoutingDecision) and out["decision"].expert == "legal"
    streamed = None
    for chunk in chain_d.stream("contract"):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed["decision"].expert == "legal" and streamed["output"].content == "legal: contract"
    passes = len(predictor.passes)
    assert chain.route("hello").expert == "general"
    assert len(predictor.passes) == passes + 1
    assert chain.as_decider().invoke({"input": "court"}) == "legal"
    assert chain.as_decider(output="decision").invoke({"input": "python"}).expert == "code"


async def test_router_chain_aroute_is_traced_as_one_route_run(routed):
    chain, experts, _ = routed
    with collect_runs() as collector:
        decision = await chain.aroute([("human", "court")])
    assert decision.expert == "legal" and experts["legal"].seen == []
    (run,) = collector.traced_runs
    assert run.name == "TryageRoute" and run.outputs["expert"] == "legal"


# -- per-call weights and forced experts -----------------------------------------------------------
def test_router_chain_weights_come_from_the_config_and_flags_override_them(routed):
    chain, _, _ = routed
    small = {"configurable": {"tryage_weights": {"size": 1000.0}}}
    assert chain.invoke("python bug", config=small).content.startswith("general: ")
    assert chain.with_config(small).invoke("python bug").content.startswith("general: ")
    assert chain.invoke("python bug [Flag: largest model]", config=small).content.startswith("legal: ")
    defaults = TryageRouterChain(chain.router, chain.experts, weights={"size": 1000.0})
    assert defaults.invoke("python bug").content.startswith("general: ")
    assert defaults.invoke("python bug", config={"configurable": {"tryage_weights": {"size": 0.0}}}) \
        .content.startswith("code: ")
    assert {s.id for s in chain.config_specs} >= {"tryage_weights", "tryage_expert"}


def test_router_chain_tryage_expert_forces_an_expert_and_keeps_the_scores(routed):
    chain, _, _ = routed
    out = TryageRouterChain(chain.router, chain.experts, return_decision=True).invoke(
        "python bug", config={"configurable": {"tryage_expert": "legal"}})
    assert out["output"].content == "legal: python bug"
    assert out["decision"].predicted_losses["code"] == pytest.approx(0.1)


# -- fallbacks -------------------------------------------------------------------------------------
def test_router_chain_fallback_tries_the_next_best_expert_and_says_so_in_the_trace():
    router, _ = make_router()
    experts = {n: EchoChatModel(label=n, fail=(n == "code")) for n in EXPERTS}
    with pytest.raises(RuntimeError, match="code is down"):
        TryageRouterChain(router, experts).invoke("python bug")

    chain = TryageRouterChain(router, experts, fallback=True, return_decision=True)
    with collect_runs() as collector:
        out = chain.invoke("python bug")
    # ranking: code 0.1, general 0.5, legal 0.9
    assert out["expert"] == "general" and out["decision"].expert == "code"
    (root,) = collector.traced_runs
    failed, answered = [r for r in root.child_runs if r.name == "EchoChatModel"]
    assert failed.error and "tryage:expert=code" in failed.tags
    assert "tryage:fallback" in answered.tags and answered.extra["metadata"]["tryage_fallback_from"] == ["code"]


def test_router_chain_fallback_works_in_batch_and_stream_and_stops_at_max_fallbacks():
    router, _ = make_router()
    experts = {n: EchoChatModel(label=n, fail=(n != "legal")) for n in EXPERTS}
    chain = TryageRouterChain(router, experts, fallback=True)
    assert [m.content for m in chain.batch(["python", "law"])] == ["legal: python", "legal: law"]
    assert "".join(c.content for c in chain.stream("python")) == "legal: python"
    with pytest.raises(RuntimeError, match="code is down"):  # code -> general, then no more tries
        TryageRouterChain(router, experts, fallback=True, max_fallbacks=1).invoke("python")


async def test_router_chain_fallback_works_async():
    router, _ = make_router()
    experts = {n: EchoChatModel(label=n, fail=(n == "legal")) for n in EXPERTS}
    chain = TryageRouterChain(router, experts, fallback=True)
    assert (await chain.ainvoke("court")).content == "general: court"
    assert [m.content for m in await chain.abatch(["court", "python"])] == ["general: court", "code: python"]
    assert "".join([c.content async for c in chain.astream("court")]) == "general: court"


# -- schemas ---------------------------------------------------------------------------------------
def test_router_chain_schemas_come_from_the_experts(routed):
    chain, experts, _ = routed
    assert chain.get_input_schema().model_json_schema() == experts["code"].get_input_schema().model_json_schema()
    assert chain.get_output_schema().model_json_schema() == experts["code"].get_output_schema().model_json_schema()
    mixed = TryageRouterChain(chain.router, {"code": RunnableLambda(lambda x: 1), "legal": experts["legal"],
                                             "general": experts["general"]})
    assert mixed.InputType is not experts["code"].InputType


# -- errors ----------------------------------------------------------------------------------------
def test_router_chain_rejects_names_the_router_does_not_know():
    router, _ = make_router()
    with pytest.raises(ExpertMappingError, match=r"^experts 'medical' are not the router's experts; .*expert_map") \
            as info:
        TryageRouterChain(router, {"code": RunnableLambda(str), "medical": RunnableLambda(str)})
    assert isinstance(info.value, RouterMismatchError) and isinstance(info.value, ValueError)
    with pytest.raises(ExpertNotFoundError, match=r"^expert_map\['coder'\] = 'gpt-9': unknown expert 'gpt-9'"):
        TryageRouterChain(router, {"coder": RunnableLambda(str)}, expert_map={"coder": "gpt-9"})
    with pytest.raises(ConfigurationError, match="expert_map names 'lawyer', which is not among the experts"):
        TryageRouterChain(router, {"coder": RunnableLambda(str)}, expert_map={"coder": "code", "lawyer": "legal"})
    with pytest.raises(ConfigurationError, match="'code' and 'coder' both stand for router expert 'code'"):
        TryageRouterChain(router, {"code": RunnableLambda(str), "coder": RunnableLambda(str)},
                          expert_map={"coder": "code"})
    with pytest.raises(ConfigurationError, match="at least one expert"):
        TryageRouterChain(router, {})
    with pytest.raises(ConfigurationError, match="route_batch"):
        TryageRouterChain(object(), {"a": RunnableLambda(str)})
    with pytest.raises(ConfigurationError, match="window"):
        TryageRouterChain(router, {n: RunnableLambda(str) for n in EXPERTS}, window=0)


def test_router_chain_routes_only_among_the_offered_experts_under_the_users_names():
    router, _ = make_router()
    experts = {"coder": GroupRecorder("coder"), "chat": GroupRecorder("chat")}
    chain = TryageRouterChain(router, experts, expert_map={"coder": "code", "chat": "general"},
                              return_decision=True)
    # "court" would go to legal (0.1), which is not offered: general (0.5) beats code (0.9)
    out = chain.batch(["python bug", "court ruling"])
    assert [o["expert"] for o in out] == ["coder", "chat"]
    assert out[1]["decision"].expert == "general" and out[1]["output"] == "chat: court ruling"
    scores = {s.expert: s for s in out[1]["decision"].scores}
    assert not scores["legal"].eligible and scores["general"].eligible
    assert chain.invoke("court", config={"configurable": {"tryage_expert": "coder"}})["expert"] == "coder"
    with pytest.raises(ExpertNotFoundError, match="unknown expert 'code'"):  # the user's names, not the router's
        chain.invoke("court", config={"configurable": {"tryage_expert": "code"}})


def test_router_chain_falls_back_when_an_experts_own_batch_raises():
    router, _ = make_router()
    broken = FakeListChatModel(responses=[])  # its batch() raises IndexError instead of returning it
    with pytest.raises(IndexError):
        broken.batch(["x", "y"], return_exceptions=True)
    experts = {"code": broken, "legal": FakeListChatModel(responses=["law"]),
               "general": FakeListChatModel(responses=["ok"])}
    chain = TryageRouterChain(router, experts, fallback=True, return_decision=True)
    out = chain.batch(["python bug", "python function", "court"])
    assert [(o["expert"], o["output"].content) for o in out] == [("general", "ok"), ("general", "ok"),
                                                                 ("legal", "law")]
    with pytest.raises(IndexError):
        TryageRouterChain(router, experts).batch(["python bug", "python function"])


async def test_router_chain_falls_back_when_an_experts_own_abatch_raises():
    router, _ = make_router()
    experts = {"code": FakeListChatModel(responses=[]), "legal": FakeListChatModel(responses=["law"]),
               "general": FakeListChatModel(responses=["ok"])}
    chain = TryageRouterChain(router, experts, fallback=True)
    assert [m.content for m in await chain.abatch(["python bug", "python function"])] == ["ok", "ok"]


def test_router_chain_rejects_empty_and_unreadable_inputs(routed):
    chain, _, _ = routed
    with pytest.raises(ConfigurationError, match="empty prompt"):
        chain.invoke("   ")
    with pytest.raises(ConfigurationError, match="empty prompt"):
        chain.invoke("[Flag: cheapest]")
    with pytest.raises(ConfigurationError, match="no user message"):
        chain.invoke([])
    with pytest.raises(ConfigurationError, match=r"no user message \(message types: system, ai\)"):
        chain.invoke([SystemMessage("s"), AIMessage("a")])
    with pytest.raises(ConfigurationError, match="no key 'input'.*'question'"):
        chain.invoke({"question": "python"})
    with pytest.raises(ConfigurationError, match="cannot route a int"):
        chain.invoke(42)
    with pytest.raises(FlagError, match="unknown flag"):
        chain.invoke("python [Flag: fastest please]")


def test_router_chain_reports_unknown_experts_and_bad_weights(routed):
    chain, experts, _ = routed
    with pytest.raises(ExpertNotFoundError, match="unknown expert 'medical'"):
        chain.invoke("python", config={"configurable": {"tryage_expert": "medical"}})
    with pytest.raises(UnknownConstraintError, match="unknown constraint 'speed'"):
        chain.invoke("python", config={"configurable": {"tryage_weights": {"speed": 1.0}}})
    with pytest.raises(ConfigurationError, match="weight for 'size' must be a finite number, got 'big'"):
        chain.invoke("python", config={"configurable": {"tryage_weights": {"size": "big"}}})
    with pytest.raises(ConfigurationError, match="tryage_weights must be a dict.*got list"):
        chain.invoke("python", config={"configurable": {"tryage_weights": [1.0]}})
    renaming = NamedRouter(chain.router, rename={"code": "coder"})  # lists no experts: checked per call
    loose = TryageRouterChain(renaming, experts)
    assert loose.invoke("law").content == "legal: law"
    with pytest.raises(ExpertNotFoundError, match="unknown expert 'coder'") as info:
        loose.invoke("python")
    assert isinstance(info.value, TryageError) and isinstance(info.value, KeyError)
