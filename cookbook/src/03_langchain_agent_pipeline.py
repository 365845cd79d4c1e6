# %% [markdown]
# # LangChain: a routed chain, a routed agent, streaming
#
# `langchain_tryage` puts a Tryage router inside LangChain:
#
# * **`TryageRouterChain`** — a runnable that routes each input to one of several runnables (chat
#   models, chains) and runs it; drop it anywhere in an LCEL pipeline.
# * **`ChatTryage`** — a chat model made of several chat models; the router picks one per
#   conversation. Tools, agents, streaming and structured output go to the chosen model; it reads a
#   conversation's earlier turns as context and can keep a thread on its expert.
#
# Both record the decision in the trace: a `TryageRoute` run with every expert's predicted loss,
# then the chosen expert's run tagged `tryage:expert=<name>`.
#
# The chat models here are LangChain's offline fakes (`GenericFakeChatModel`) replaying scripted
# replies, so the notebook runs anywhere; swap in `ChatOpenAI`, `ChatOllama` or
# `ChatHuggingFace` and nothing else changes. The router is real: a perceptive router trained in a
# few seconds on a tiny Q-table.
#
# **Needs:** `pip install 'tryage[langchain]' langchain` (for `create_agent`). Offline.
#
# **Takes:** about 30 seconds on 2 CPU cores.

# %%
from itertools import cycle

import torch
from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_core.tracers.context import collect_runs

from langchain_tryage import ChatTryage, TryageRouterChain
from tryage import Expert, ExpertLibrary, QTable, TryageRouter
from tryage.predictors import PerceptivePredictor

torch.set_num_threads(2)

# %% [markdown]
# ## 1. A router for three chat models
#
# Three models: a small generalist, a mid-size code model and a large legal model. The Q-table says
# which model did well on which prompt (here: loss 0 for the right model, 1 for the others; in real
# life, 1 − accuracy or a judge's score measured on your own traffic).

# %%
TRAINING = {
    "code": ["Why does my Python loop never end?", "How do I reverse a list in JavaScript?",
             "What does a segmentation fault mean?", "Fix this null pointer exception in Java",
             "Write a function that sorts a dictionary by value", "Why won't my C++ code compile?",
             "How do I read a CSV file with pandas?", "Explain recursion with a Python example"],
    "legal": ["Is this contract clause enforceable?", "Can my landlord evict me without notice?",
              "What does the court decide on breach of lease?", "How do I sue for unpaid wages?",
              "Is a verbal agreement legally binding?", "What rights does a tenant have?",
              "Who owns the copyright of a photo I commissioned?", "What is the statute of limitations for fraud?"],
    "general": ["What is a good name for a cat?", "How many minutes are in a day?",
                "Suggest a recipe for dinner tonight", "What is the capital of Australia?",
                "Tell me a fun fact about octopuses", "What is 15 percent of 80?",
                "How do I say thank you in Japanese?", "Plan a weekend trip to the mountains"],
}
library = ExpertLibrary([Expert("code", parameters="7B", description="programming help"),
                         Expert("legal", parameters="13B", description="law, contracts, tenancy"),
                         Expert("general", parameters="1B", description="everyday questions")])
qtable = QTable.from_records([{"prompt": p, "losses": {e: float(e != domain) for e in TRAINING}}
                              for domain, prompts in TRAINING.items() for p in prompts])
# A couple dozen exact labels: the sentence embedding (layers="last") generalises best from so few
# examples, the labels need no neighbour smoothing (meant for noisy 0/1 outcomes), and every
# example is used for training. The defaults suit Q-tables of thousands of prompts.
# hidden_dim=64: a table under 300 rows gets a linear head by default; the hidden layer gives the
# wide margins the sticky-thread section (5) switches on.
predictor = PerceptivePredictor(mode="head", layers="last", target_smoothing=0, epochs=150, validation_fraction=0.0,
                                hidden_dim=64, seed=0, progress=False)
router = TryageRouter(predictor.fit(qtable, library), library)
for question in ("My Python script raises a KeyError", "Can my employer read my private email?",
                 "What should I cook for a picnic?"):
    print(f"{question:<42} -> {router.route(question).expert}")

# %% [markdown]
# ## 2. `TryageRouterChain` in an LCEL pipeline
#
# The experts are runnables keyed by the router's expert names. The chain receives what the
# previous step produced (here a chat prompt), routes on the last user message, removes any
# `[Flag: ...]` from it, and calls the chosen expert.

# %%
class ToyChatModel(GenericFakeChatModel):
    """An offline chat model replaying scripted replies; it accepts tools (the script holds the calls)."""

    def bind_tools(self, tools, **kwargs):
        return self


def toy(name):
    return ToyChatModel(messages=cycle([f"[{name} model] Here is my answer to your question."]))


experts = {name: toy(name) for name in router.experts}
prompt = ChatPromptTemplate.from_messages([("system", "You are a helpful assistant."), ("human", "{question}")])
chain = prompt | TryageRouterChain(router, experts) | StrOutputParser()

for question in ("How do I merge two dicts in Python?", "Is a non-compete clause valid in my contract?",
                 "Is a non-compete clause valid in my contract? [Flag: smallest model]"):
    print(f"{question}\n    {chain.invoke({'question': question})}")

# %% [markdown]
# ### The decision in the trace
#
# Every call opens a `TryageRoute` run whose outputs are the full `RoutingDecision` (each expert's
# predicted loss, penalties and total), and the expert's run carries the tag
# `tryage:expert=<name>` and the metadata `tryage_expert`. LangSmith shows the same tree;
# `collect_runs` gives it to us locally.

# %%
def print_tree(run, depth=0):
    tags = [t for t in run.tags or [] if t.startswith("tryage:")]
    line = f"{'  ' * depth}{run.name} ({run.run_type})" + (f"  tags={tags}" if tags else "")
    if run.name == "TryageRoute":
        losses = {s["expert"]: round(s["predicted_loss"], 3) for s in run.outputs["scores"]}
        line += f"  -> chose {run.outputs['expert']!r}, predicted losses {losses}"
    print(line)
    for child in run.child_runs:
        print_tree(child, depth + 1)


with collect_runs() as collector:
    chain.invoke({"question": "My unit tests fail after upgrading Django"})
traced = collector.traced_runs[0]
print_tree(traced)

# %% [markdown]
# ### Per-call weights and the decision itself
#
# `config={"configurable": {"tryage_weights": {...}}}` sets constraint weights for one call (flags
# in the prompt still win), and `return_decision=True` returns the decision next to the output.

# %%
size_aware = TryageRouterChain(router, experts, return_decision=True)
question = "Can I break my lease early if the flat is unsafe?"
for weights in ({}, {"size": 0.5}, {"size": 2.0}):
    result = size_aware.invoke(question, config={"configurable": {"tryage_weights": weights}})
    print(f"size weight {weights.get('size', 0.0):<4} -> {result['expert']:<8} {result['decision'].explain()}")

# %% [markdown]
# ## 3. `ChatTryage` in an agent
#
# `ChatTryage` is a chat model, so `create_agent` takes it like any other. It binds the agent's
# tools on every expert and routes on the user's question, so every step of one agent loop goes to
# the same expert. Each scripted expert first calls the calculator tool, then answers with the
# tool's result.

# %%
@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def agent_expert(name):
    call = AIMessage(content="", tool_calls=[{"name": "multiply", "args": {"a": 12, "b": 7}, "id": "call-1"}])
    return ToyChatModel(messages=cycle([call, AIMessage(content=f"[{name} model] 12 x 7 = 84.")]))


chat = ChatTryage(router=router, experts={name: agent_expert(name) for name in router.experts})
agent = create_agent(model=chat, tools=[multiply])
with collect_runs() as agent_runs:
    state = agent.invoke({"messages": [HumanMessage("How many eggs are in 12 boxes of 7?")]})
for message in state["messages"]:
    detail = message.tool_calls if getattr(message, "tool_calls", None) else message.content
    print(f"{message.type:>5}: {detail}")
answered_by = state["messages"][-1].response_metadata["tryage_expert"]
print("\nanswered by:", answered_by)

# %% [markdown]
# Each model call of the agent shows up as a `ChatTryage` run with its own `TryageRoute` decision.

# %%
def find(run, name):
    return ([run] if run.name == name else []) + [r for c in run.child_runs for r in find(c, name)]


routes = {r.id: r for root in agent_runs.traced_runs for r in find(root, "TryageRoute")}.values()
print(f"{len(routes)} routed model calls, experts chosen: {[r.outputs['expert'] for r in routes]}")

# %% [markdown]
# ## 4. Streaming
#
# Streaming goes straight through to the chosen expert: the router decides before the first token,
# and the first chunk says which expert is speaking.

# %%
streaming_chat = ChatTryage(router=router, experts={
    "code": ToyChatModel(messages=cycle(["Use sorted(d.items(), key=lambda kv: kv[1]) to sort by value."])),
    "legal": ToyChatModel(messages=cycle(["A clause is void if it is unconscionable."])),
    "general": ToyChatModel(messages=cycle(["Bring sandwiches, fruit and lemonade."]))})
chunks = []
for chunk in streaming_chat.stream("How do I sort a Python dict by value?"):
    chunks.append(chunk)
    print(chunk.content, end="|")
print("\n\nfirst chunk from:", chunks[0].response_metadata["tryage_expert"], f"({len(chunks)} chunks)")

# ChatTryage is a chat model like any other, so it streams through a chain too.
streaming_chain = prompt | streaming_chat | StrOutputParser()
print("".join(streaming_chain.stream({"question": "What should we take on a picnic?"})))

# %% [markdown]
# ## 5. Conversations: earlier turns as context, and threads that keep their expert
#
# A follow-up such as *"How long does that usually take?"* says little on its own. `ChatTryage`
# routes the last user turn together with the turns before it: both are scored in one router pass,
# and each expert's predicted loss is `0.75 × loss(last turn) + 0.25 × loss(earlier turns)`
# (`context_weight=0.25` by default; `0` reads the last turn alone). The earlier turns go newest
# first, so an encoder truncating them to its window drops the oldest.
#
# With `sticky=True` a thread stays on the expert that last answered it unless another expert's
# objective is better by more than `stickiness_margin`; a turn with a `[Flag: ...]` routes afresh.
# The thread is LangGraph's `thread_id` (or a `"tryage_thread"` key in `config["configurable"]`),
# and each reply says what happened in `response_metadata["tryage_sticky"]`: `new`, `kept` or
# `switched`. Below, one LangGraph graph with a checkpointer per setting; the same turns go through
# each.

# %%
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph


def conversation_graph(model):
    def respond(state: MessagesState):
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("respond", respond)
    builder.add_edge(START, "respond")
    return builder.compile(checkpointer=InMemorySaver())


def answer(graph, text, thread):
    reply = graph.invoke({"messages": [HumanMessage(text)]}, {"configurable": {"thread_id": thread}})["messages"][-1]
    meta = reply.response_metadata
    return meta["tryage_expert"] + (f" ({meta['tryage_sticky']})" if "tryage_sticky" in meta else "")


def scripted_experts():
    return {name: ToyChatModel(messages=cycle([f"[{name} model] Here is my answer."])) for name in router.experts}


graphs = {
    "last turn only": conversation_graph(ChatTryage(router=router, experts=scripted_experts(), context_weight=0.0)),
    "with context": conversation_graph(ChatTryage(router=router, experts=scripted_experts())),
    "context + sticky": conversation_graph(ChatTryage(router=router, experts=scripted_experts(), sticky=True,
                                                      stickiness_margin=0.2)),
}
TURNS = ["Can my landlord keep my deposit?", "How long does that usually take?", "What are my options?",
         "Is there a quicker way?", "My Python script raises a KeyError"]
table = {label: [answer(graph, turn, "ana") for turn in TURNS] for label, graph in graphs.items()}
print(f"{'thread ana':<36}" + "".join(f"{label:<20}" for label in table))
for i, turn in enumerate(TURNS):
    print(f"{turn:<36}" + "".join(f"{column[i]:<20}" for column in table.values()))
print(f"\n{'thread ben':<36}" + "".join(f"{answer(graph, TURNS[1], 'ben'):<20}" for graph in graphs.values()))

# %% [markdown]
# Read alone, the second turn goes to the generalist; with the conversation as context it stays
# with the legal model. The fourth turn ("a quicker way?") leans to the generalist even with
# context; the sticky thread keeps it on the legal model, whose objective is within the margin of
# the best, and moves it when the user turns to Python. Thread `ben` starts fresh: threads are
# independent. The `TryageRoute` run of each call records the same: its outputs hold `sticky`.
