# %% [markdown]
# # From your models and your prompts to a router: collect → train → route
#
# A router needs a Q-table: how well each of your models did on each prompt. `tryage collect` builds
# it: it calls every model on every prompt (async, with retries, rate limits, a timeout and a budget),
# logs every call so that a killed run resumes without paying twice, scores the answers and writes
# the table plus an expert library with each model's measured cost and latency. Then
# `tryage train` fits a router on it, and `ChatTryage` routes between the same models.
#
# The three models here are served by a small OpenAI-compatible server started on 127.0.0.1 (from
# the test suite: `tests/collect/openai_server.py`). It stands in for vLLM, Ollama, llama.cpp or
# any other OpenAI-compatible endpoint, and the real client is used: LangChain's `ChatOpenAI`,
# built by `init_chat_model` from each entry. Point `base_url` (or `"model"`) at your own models
# and nothing else changes.
#
# **Needs:** `pip install 'tryage[collect,langchain]'`, a checkout (for the local server). Offline.
#
# **Takes:** about 30 seconds on 2 CPU cores.

# %%
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path("..") / "tests" / "collect"))  # the local OpenAI-compatible server
from openai_server import OpenAIServer  # noqa: E402

from tryage.collect import build_chat_models, collect  # noqa: E402

torch.set_num_threads(2)
server = OpenAIServer().__enter__()  # runs in a thread until the kernel stops
os.environ.setdefault("OPENAI_API_KEY", "test-key")  # keys come from the environment, never from files
work = Path(tempfile.mkdtemp(prefix="tryage-collect-"))
print("server:", server.base_url)

# %% [markdown]
# ## 1. Prompts and experts
#
# Prompts are JSONL (or CSV) rows with a `prompt`, and for most scorers a `reference` answer. Two
# tasks here: sums, and spelling a word backwards. The three models differ: `good` adds right but
# cannot spell backwards, `sloppy` spells right but adds one too many when the first number is odd,
# `flaky` does both right but answers its first request for each prompt with HTTP 429 (collect
# retries it). Prices are USD per 1M tokens.

# %%
words = ["house", "garden", "river", "pencil", "window", "planet", "silver", "orange", "candle", "forest",
         "bridge", "rocket", "summer", "winter", "yellow", "spider", "button", "castle", "mirror", "violin"]
rows = [{"id": f"sum{i}", "prompt": f"What is {i} plus 3?", "reference": str(i + 3), "task": "sum"} for i in range(20)]
rows += [{"id": f"spell-{w}", "prompt": f"Spell {w} backwards.", "reference": w[::-1], "task": "spell"} for w in words]
prompts = work / "prompts.jsonl"
prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))

def entry(name, input_cost, output_cost):
    return {"name": name, "model": f"openai:{name}", "input_cost": input_cost, "output_cost": output_cost,
            "model_kwargs": {"base_url": server.base_url, "temperature": 0}}

experts = work / "experts.json"
experts.write_text(json.dumps([entry("good", 3.0, 10.0), entry("sloppy", 0.1, 0.4), entry("flaky", 1.0, 4.0)], indent=1))
print(experts.read_text())

# %% [markdown]
# ## 2. What will it cost? `--dry-run`
#
# Before calling anything, a dry run lists the calls and their estimated cost (input tokens from
# the prompt's length, output tokens from `max_tokens`, else what the model answered so far, else
# 512 — deliberately high). On the command line:
# `tryage collect --prompts prompts.jsonl --experts experts.json --scorer contains --out q.jsonl --dry-run`.

# %%
plan = collect(prompts, experts, scorer="contains", out=work / "q.jsonl", dry_run=True)
print(f"{len(plan.calls)} calls, estimated ${plan.estimated_cost:.4f}")

# %% [markdown]
# ## 3. Collect, under a budget
#
# `budget` stops the run *before* the next call would pass it, judged by the call's estimate (here
# 512 output tokens at `good`'s $10 per 1M: half a cent, so a one-cent budget allows a single call).
# The calls made stay in the call log, so a second run with a larger budget makes only the missing ones.

# %%
from tryage.errors import BudgetReachedError  # noqa: E402

try:
    collect(prompts, experts, scorer="contains", out=work / "q.jsonl", budget=0.01, progress=False)
except BudgetReachedError as stop:
    print(stop)
result = collect(prompts, experts, scorer="contains", out=work / "q.jsonl", budget=1.0, progress=False)
print(f"calls made now: {result.made}, from the log: {result.cached}, spent now: ${result.spent:.6f}")
flaky_requests = server.count("flaky")
print(f"server requests to 'flaky' (one 429 then a retry per prompt): {flaky_requests}")

# %% [markdown]
# Each Q-table row has the scores (`contains`: 1 when the answer contains the reference) and, per
# expert, the call's cost, latency and output tokens. The expert library beside it carries the
# measured means, which the `cost` and `latency` constraints read.

# %%
first = json.loads((work / "q.jsonl").read_text().splitlines()[1])
print(json.dumps({k: first[k] for k in ("prompt", "scores", "cost", "output_tokens")}, indent=1))
for e in result.library:
    print(f"{e.name:7} price in/out {e.input_cost}/{e.output_cost} per 1M, measured ${e.measured_cost:.7f} "
          f"and {e.measured_latency_s * 1000:.1f} ms per call")
for task in ("sum", "spell"):
    keep = [i for i, t in enumerate(result.qtable.column("task")) if t == task]
    means = result.qtable.scores[keep].mean(axis=0)
    print(task, dict(zip(result.qtable.experts, means.round(2).tolist())))

# %% [markdown]
# ### The same answers, graded by an LLM judge, within a budget
#
# `score` re-scores the logged answers without calling any expert. With `scorer="judge"` an LLM grades
# each answer (here the local server's `judge` model). Its calls go through the same retries, timeout and
# budget as the experts' calls, so a budget needs the judge's prices (on the command line:
# `tryage score --scorer judge --judge-model openai:gpt-4o-mini --judge-input-price 0.15
# --judge-output-price 0.6 --budget 0.05 ...`). Experts that agree share one judge call, and the replies
# are kept beside the call log (`q.calls.judge.jsonl`): grading the same answers again costs nothing.

# %%
from tryage.collect import score  # noqa: E402

judge = {"model": "openai:judge", "model_kwargs": {"base_url": server.base_url}, "input_cost": 0.15, "output_cost": 0.6}
judged = score(work / "q.calls.jsonl", prompts, scorer="judge", judge=judge, experts=experts, budget=0.05,
               out=work / "q_judged.jsonl")
judge_calls = server.count("judge")
print(f"judge calls: {judge_calls} for {judged.qtable.scores.size} answers, spent ${judged.judge_spent:.6f} of $0.05")
print("the judge agrees with 'contains' on every answer:", bool((judged.qtable.scores == result.qtable.scores).all()))
again = score(work / "q.calls.jsonl", prompts, scorer="judge", judge=judge, experts=experts, budget=0.05)
print(f"graded again: {server.count('judge') - judge_calls} new judge calls, spent ${again.judge_spent:.6f}")

# %% [markdown]
# ## 4. Train
#
# `tryage train --qtable q.jsonl --experts q.experts.json --out router/` reads the table as it is.
# Here the same in Python, on the bundled MiniLM encoder.

# %%
from tryage import QTable, TryageRouter  # noqa: E402
from tryage.experts import ExpertLibrary  # noqa: E402
from tryage.predictors import PerceptivePredictor  # noqa: E402

qtable = QTable.from_file(work / "q.jsonl")
library = ExpertLibrary.from_json(work / "q.experts.json")
predictor = PerceptivePredictor(mode="head", layers="last", target_smoothing=0, epochs=150, validation_fraction=0.0,
                             seed=0, progress=False)
router = TryageRouter(predictor.fit(qtable, library), library)

# %% [markdown]
# ## 5. Route
#
# New prompts of both tasks. Without weights the router picks a model that gets the task right;
# with a `cost` weight it picks the cheapest one that does (`flaky` for sums, `sloppy` for
# spelling).

# %%
questions = ["What is 41 plus 3?", "Spell monday backwards.", "What is 58 plus 3?", "Spell tiger backwards."]
for weights in ({}, {"cost": 0.5}):
    print(weights or "no weights", [router.route(q, weights=weights).expert for q in questions])

# %% [markdown]
# `ChatTryage` routes between the same entries as chat models: `build_chat_models` builds them from
# the experts file collect used.

# %%
from langchain_tryage import ChatTryage  # noqa: E402

chat = ChatTryage(router=router, experts=build_chat_models(experts), weights={"cost": 0.5})
for q in questions[:2]:
    reply = chat.invoke(q)
    print(f"{q:28} -> {reply.response_metadata.get('tryage_expert', '?'):7} {reply.content}")
