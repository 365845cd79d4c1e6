# %% [markdown]
# # Feedback from a chain: log the decision id, collect thumbs, update the router
#
# In production a router learns what it routed: every answer of a `ChatTryage` carries
# `response_metadata["tryage_decision_id"]`, a fresh id for the routing decision behind it. Log the
# id with what the router needs to learn from (the prompt and the expert that answered); when the
# user's thumbs-up or thumbs-down arrives for that answer, it becomes a feedback row
# `{"prompt", "expert", "score"}`; `router.update(rows)` warm-starts the router on the rows without
# forgetting what it knew.
#
# The chat models are LangChain's offline fakes and the "users" are simulated (they like an answer
# when the expert suits the question), so the notebook runs anywhere. The router is real: a
# perceptive router trained in a few seconds on a tiny Q-table.
#
# **Needs:** `pip install 'tryage[langchain]'`. Offline.
#
# **Takes:** about 30 seconds on 2 CPU cores.

# %%
from itertools import cycle

import torch
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.prompts import ChatPromptTemplate

from langchain_tryage import ChatTryage
from tryage import Expert, ExpertLibrary, QTable, TryageRouter
from tryage.predictors import PerceptivePredictor

torch.set_num_threads(2)

# %% [markdown]
# ## 1. A router that has never seen tax questions
#
# Three experts: a code model, a legal model and a small generalist. The router is trained on a
# couple dozen labelled questions; none is about taxes or money.

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
library = ExpertLibrary([Expert("code", parameters="7B"), Expert("legal", parameters="13B"),
                         Expert("general", parameters="1B")])
qtable = QTable.from_records([{"prompt": p, "losses": {e: float(e != domain) for e in TRAINING}}
                              for domain, prompts in TRAINING.items() for p in prompts])
# hidden_dim=64: a table under 300 rows gets a linear head by default; this notebook keeps the hidden
# layer its story was written with (a router that gets a few rated questions wrong and learns them).
predictor = PerceptivePredictor(mode="head", layers="last", target_smoothing=0, epochs=150, validation_fraction=0.0,
                                hidden_dim=64, seed=0, progress=False)
router = TryageRouter(predictor.fit(qtable, library), library)

# %% [markdown]
# ## 2. A chain whose answers carry the decision id
#
# `ChatTryage` sits in an ordinary LCEL chain. Each reply's `response_metadata` names the expert
# that answered (`tryage_expert`, your name for it) and the decision (`tryage_decision`, whose
# `expert` is the router's name: what feedback rows use), and `tryage_decision_id`. We keep a
# small log keyed by that id; a real service would write it to its database next to the answer it
# showed.

# %%
def toy(name):
    return GenericFakeChatModel(messages=cycle([f"[{name} model] Here is my answer."]))


chat = ChatTryage(router=router, experts={name: toy(name) for name in router.experts})
chain = ChatPromptTemplate.from_messages([("system", "You are a helpful assistant."), ("human", "{question}")]) | chat

decision_log = {}  # decision id -> what the router needs to learn from that answer


def ask(question):
    reply = chain.invoke({"question": question})
    meta = reply.response_metadata
    decision_log[meta["tryage_decision_id"]] = {"prompt": question, "expert": meta["tryage_decision"]["expert"]}
    return meta["tryage_decision_id"], meta["tryage_expert"]


reply_id, expert = ask("How do I undo my last git commit?")
print(f"answered by {expert!r}; decision id {reply_id}")
print(decision_log[reply_id])

# %% [markdown]
# ## 3. Traffic, and the users' thumbs
#
# A week of traffic brings questions the training table never covered: taxes. Here the users are
# simulated: they give a thumbs-up when the answering expert suits the question (tax questions want
# the legal model) and a thumbs-down otherwise. Their verdicts arrive keyed by decision id, as a
# feedback button would send them.

# %%
TRAFFIC = {
    "legal": ["How much income tax do I owe on a bonus?", "Can I deduct my home office from my taxes?",
              "Do I pay capital gains tax when I sell my flat?", "What is the VAT rate for freelancers?",
              "How do I appeal a tax assessment?", "Are gifts to my children taxed?",
              "When is the deadline for filing my tax return?", "Is inheritance tax due on a house I inherit?"],
    "code": ["How do I undo my last git commit?", "Why is my SQL query so slow?"],
    "general": ["What is a nice gift for my sister?", "How long should I boil an egg?"],
}
wanted = {q: domain for domain, questions in TRAFFIC.items() for q in questions}


def user_verdict(question, expert):  # the simulated user: thumbs-up when the expert suits the question
    return expert == wanted[question]


thumbs = {}  # decision id -> True (thumbs-up) / False (thumbs-down), as the feedback button sends them
before = {}  # question -> the expert that answered it
for question in wanted:
    decision_id, before[question] = ask(question)
    thumbs[decision_id] = user_verdict(question, before[question])

HELD_OUT = ["Do I have to pay tax on my pension?", "How do I declare tips on my tax return?",
            "Is my scholarship taxable income?", "What happens if I file my taxes late?"]
held_out_before = {q: router.route(q).expert for q in HELD_OUT}  # tax questions nobody rates
print(f"{len(thumbs)} answers, {sum(thumbs.values())} thumbs-up")
for question, expert in before.items():
    print(f"  {'up  ' if expert == wanted[question] else 'down'}  {expert:<8} {question}")

# %% [markdown]
# ## 4. Feedback rows, and the update
#
# Each verdict joins its log entry by decision id: a row `{"prompt", "expert", "score"}` with score
# 1 for a thumbs-up and 0 for a thumbs-down. Only the expert that answered is observed on each
# prompt; `router.update` trains on exactly those entries and keeps the router's other predictions
# where they were, so what it knew about code and legal questions stays.
#
# `router.update` is the predictor's own `partial_fit` (scikit-learn's name for learning after `fit`):
# a bare `PerceptivePredictor` takes the same rows with `predictor.partial_fit(rows)` and keeps the
# report in `predictor.last_update_`.

# %%
rows = [{**decision_log[decision_id], "score": 1.0 if up else 0.0} for decision_id, up in thumbs.items()]
print(rows[0])
report = router.update(rows)
print(f"updated on {report.prompts} prompts, observed entries per expert {report.observed}; "
      f"loss on the feedback {report.loss_before:.3f} -> {report.loss_after:.3f}")

# %% [markdown]
# ## 5. What changed
#
# The same questions, routed again, and new tax questions nobody rated. The training questions
# still go where they went.

# %%
after = {q: router.route(q).expert for q in wanted}
held_out_after = {q: router.route(q).expert for q in HELD_OUT}
print(f"rated questions on the right expert: {sum(before[q] == wanted[q] for q in wanted)}/{len(wanted)} before, "
      f"{sum(after[q] == wanted[q] for q in wanted)}/{len(wanted)} after")
print("tax questions nobody rated (before -> after):")
for question in HELD_OUT:
    print(f"  {held_out_before[question]:>8} -> {held_out_after[question]:<8} {question}")
training_kept = sum(router.route(p).expert == domain for domain, prompts in TRAINING.items() for p in prompts)
print(f"training questions still on their expert: {training_kept}/{sum(map(len, TRAINING.values()))}")
