# %% [markdown]
# # Train your own router
#
# A router learns from a **Q-table**: for each prompt, how well each expert did on it. Here the
# Q-table is real: the LLMRouter score matrix (4,799 prompts from 14 benchmarks, each answered by
# 9 LLMs from 7B to 70B parameters, scored 0/1 or in [0, 1]). We train Tryage's perceptive router
# on part of it, measure it on prompts it never saw against the oracle, the best single model and
# a k-nearest-neighbour router, and draw the Pareto front of quality against model size.
#
# **Needs:** `pip install 'tryage[plot]'`; the score matrix in `../shared/data/llmrouter/` beside
# the repository (or set `TRYAGE_LLMROUTER_DIR`). Without it the notebook says so and builds a small
# synthetic Q-table itself, so every cell still runs. Offline.
#
# **Takes:** about 1–2 minutes on 2 CPU cores. To stay in that budget it uses a stratified subset
# of **800 prompts** (600 to train, 200 to test) and reads 128 tokens per prompt; encoding them
# with the bundled MiniLM is most of the time. The full table gives steadier numbers:
# `benchmarks/llmrouter_quality.py` runs the cross-validated version.

# %%
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from IPython.display import Image, display

from tryage import Expert, ExpertLibrary, QTable, TryageRouter
from tryage.evaluation import evaluate_predictions, pareto_sweep, plot_pareto, smallest_matching
from tryage.predictors import KNNPredictor
from tryage.experts import format_size
from tryage.predictors import PerceptivePredictor

torch.set_num_threads(2)  # be a good neighbour on a shared machine
OUT = Path(tempfile.mkdtemp(prefix="tryage-cookbook-"))
DATA = Path(os.environ.get("TRYAGE_LLMROUTER_DIR", Path.cwd().parent.parent / "shared" / "data" / "llmrouter"))


def show(rows, header):
    """Print rows as an aligned text table (floats with 3 decimals)."""
    cells = [list(map(str, header))] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))

# %% [markdown]
# ## 1. The Q-table
#
# `QTable.from_file` reads JSONL rows `{"prompt", "scores": {expert: value}, ...}` (or `losses`).
# Scores are turned into losses as `loss = 1 − score`; the table remembers it held scores, so every
# report below speaks in scores again (higher is better). Other fields (`task`, `metric`) are kept as
# extras for per-task reports.
#
# If the data is not there, we build a small Q-table of our own: three kinds of prompt and four
# made-up experts whose success rate depends on the kind, sampled with a fixed seed.

# %%
def synthetic_qtable(seed=0, per_task=100):
    """A Q-table of templated prompts and simulated 0/1 scores, with a library to match."""
    rng = np.random.default_rng(seed)
    experts = ("generalist-8b", "coder-7b", "math-7b", "large-70b")
    success = {"code": (0.3, 0.9, 0.2, 0.6), "math": (0.3, 0.2, 0.9, 0.6), "trivia": (0.8, 0.1, 0.1, 0.6)}
    templates = {"code": "Write a Python function that {} a list of {}.",
                 "math": "What is {} of the first {} prime numbers?",
                 "trivia": "Which country {} the most {}?"}
    words = {"code": (["sorts", "reverses", "deduplicates", "sums", "filters"], ["integers", "strings", "tuples", "dates"]),
             "math": (["the sum", "the product", "the mean", "the median"], [str(n) for n in range(3, 40)]),
             "trivia": (["exports", "produces", "imports", "consumes"], ["coffee", "tea", "copper", "wheat", "rice"])}
    records = []
    for task, template in templates.items():
        a, b = words[task]
        for i in range(per_task):
            prompt = template.format(rng.choice(a), rng.choice(b)) + f" (case {i})"
            scores = {e: float(rng.random() < p) for e, p in zip(experts, success[task])}
            records.append({"prompt": prompt, "task": task, "scores": scores})
    library = ExpertLibrary([Expert("generalist-8b", parameters="8B", input_cost=0.2, output_cost=0.2),
                             Expert("coder-7b", parameters="7B", input_cost=0.2, output_cost=0.2),
                             Expert("math-7b", parameters="7B", input_cost=0.2, output_cost=0.2),
                             Expert("large-70b", parameters="70B", input_cost=0.9, output_cost=0.9)])
    return QTable.from_records(records), library


if (DATA / "train.jsonl").exists():
    table = QTable.from_file(DATA / "train.jsonl")
    # models.json describes 14 models; keep the 9 the table scores, in its column order.
    library = ExpertLibrary.from_json(DATA / "models.json", names=table.experts)
    SOURCE = "LLMRouter score matrix"
else:
    print(f"The LLMRouter data is not at {DATA}; using a small synthetic Q-table instead.")
    table, library = synthetic_qtable()
    SOURCE = "synthetic Q-table"

tasks = table.column("task")
print(f"{SOURCE}: {len(table)} prompts x {len(table.experts)} experts, kind={table.kind!r}, "
      f"{len(set(tasks))} tasks")
show([(e.name, format_size(e.parameters), e.cost, float(table.scores[:, i].mean()))
      for i, e in enumerate(library)], ["expert", "size", "USD / 1M tokens", "mean score (all prompts)"])

# %% [markdown]
# ## 2. A stratified subset, then train / test
#
# `QTable.split(fraction, by="task")` splits each task separately, so small tasks keep their share.
# We keep 800 prompts, then hold out a quarter of them for testing.

# %%
n_keep = min(800, len(table))
sample = table if n_keep == len(table) else table.split(n_keep / len(table), seed=0, by="task")[1]
train, test = sample.split(0.25, seed=0, by="task")
print(f"train: {len(train)} prompts, test: {len(test)} prompts (stratified by task)")

# %% [markdown]
# ## 3. Train the perceptive router
#
# `PerceptivePredictor(mode="head")` keeps the bundled all-MiniLM-L6-v2 encoder frozen and trains a
# small head that predicts one loss per expert. We encode the prompts once and hand the embeddings
# to `fit`, so the kNN baseline below can reuse them. (`mode="finetune"` trains the encoder too:
# slower, sometimes better.) Scores of 0 or 1 are read as outcomes: the head is trained with binary
# cross-entropy and predicts, for each expert, the probability that it fails on the prompt
# (`objective="auto"`; other losses are regressed with MSE).

# %%
predictor = PerceptivePredictor(mode="head", max_length=128, seed=0, progress=False)
started = time.perf_counter()
train_emb = predictor.encode(train.prompts)
test_emb = predictor.encode(test.prompts)
encoded = time.perf_counter() - started
predictor.fit(train, library, embeddings=train_emb)
fitted = time.perf_counter() - started - encoded
best = min((h["val_loss"] for h in predictor.history_ if "val_loss" in h), default=float("nan"))  # nan: no split (small table)
print(f"encoded {len(train) + len(test)} prompts in {encoded:.0f} s; trained the head in {fitted:.1f} s "
      f"({len(predictor.history_)} epochs, objective {predictor.objective_!r}, best validation loss {best:.3f})")
print("experts (output columns):", ", ".join(predictor.experts))

# %% [markdown]
# ## 4. How good is it?
#
# On the 200 test prompts we compare the router's choice with
#
# * the **oracle** — the best expert for each prompt, known only in hindsight (the ceiling);
# * the **best single** expert — the one with the best mean score on the training prompts;
# * **random** choice — the mean over experts;
# * **kNN** — average the scores of the 20 most similar training prompts (same embeddings).
#
# *Select-best accuracy* is the share of prompts where the chosen expert is one of the best for
# that prompt (ties count: when every expert fails, any choice is "best").

# %%
predicted = predictor.predict_from_embeddings(test_emb)
knn = KNNPredictor(predictor.encode, k=20).fit(train, embeddings=train_emb)
report = evaluate_predictions(predicted, test, train=train, knn_predicted=knn.predict_from_embeddings(test_emb),
                              group_by="task", library=library)
show([("Tryage (perceptive router)", report.router.value, report.router.select_best_accuracy),
      (f"best single: {report.best_single_expert}", report.best_single.value, report.best_single.select_best_accuracy),
      ("kNN (k=20, same embeddings)", report.knn.value, report.knn.select_best_accuracy),
      ("random expert", report.random, None),
      ("oracle", report.oracle, 1.0)],
     ["method", "mean score", "select-best accuracy"])
gap = "n/a" if report.gap_closed is None else f"{report.gap_closed:.0%}"
print(f"\nShare of the gap between the best single expert and the oracle that the router closes: {gap}")

# %% [markdown]
# With only 600 training prompts the numbers move by a few points with the seed, and kNN on the
# same embeddings is a strong baseline at this size; `benchmarks/llmrouter_quality.py` compares
# them cross-validated on the whole table.
#
# Per task, the router can beat the best single model where another model is stronger (for
# example a code model on code), and lose a little where the single model is already the best.
# With 200 test prompts each task has only ~15 prompts, so read these as indications.

# %%
show([(task, g["n"], g["router"], g["best_single"], g.get("knn"), g["oracle"])
      for task, g in report.per_group.items()],
     ["task", "n", "router", "best single", "kNN", "oracle"])
print("\nHow often the router chose each expert:",
      ", ".join(f"{e} {c}" for e, c in sorted(report.choices.items(), key=lambda kv: -kv[1]) if c))

# %% [markdown]
# ## 5. Quality against size: the Pareto front
#
# The routing objective is `predicted loss + λ · size penalty`. Sweeping the size weight λ from 0
# upwards moves the router from "best predicted quality" to "smallest model". `pareto_sweep` does
# it on the test prompts; fed the true losses it traces the oracle's front.

# %%
fronts = {"Tryage router": pareto_sweep(predicted, test, library, constraint="size"),
          "oracle (true scores)": pareto_sweep(test.losses, test, library, constraint="size")}
single = library[report.best_single_expert]
png = plot_pareto(fronts, OUT / "pareto.png", ylabel="mean score (higher is better)",
                  title=f"{SOURCE}: quality against model size (test prompts)",
                  references={f"always {single.name}": (float(single.parameters), report.best_single.value)})
display(Image(filename=str(png), width=640))

point = smallest_matching(fronts["Tryage router"], report.best_single.value)
if point is None:
    print("On this sample no point of the router's front reaches the best single expert's score.")
else:
    print(f"The router matches the best single expert's score ({report.best_single.value:.3f}) with "
          f"{format_size(int(point.mean_constraint))} mean parameters per prompt (weight {point.weight:.3g}), "
          f"instead of {format_size(single.parameters)}.")

# %% [markdown]
# ## 6. Use it, save it, load it
#
# The trained predictor plugs into a `TryageRouter` with its library, which adds flags and
# constraints. A saved router is a folder (`config.json`, `model.safetensors`, `experts.json`):
# load it with `TryageRouter.from_pretrained(folder)`, the CLI (`tryage route --router folder`),
# or the LangChain / LlamaIndex adapters.
#
# The same steps from a shell: `tryage train --qtable train.jsonl --experts experts.json --out my-router`,
# then `tryage evaluate --router my-router --qtable test.jsonl --train train.jsonl`.

# %%
router = TryageRouter(predictor, library)
question = "Write a Python function that returns the n-th Fibonacci number."
for prompt in (question, question + " [Flag: smallest model]", question + " [Flag: cheapest]"):
    decision = router.route(prompt)
    print(f"{prompt[len(question):] or '(no flag)':<26} -> {decision.expert}")

folder = predictor.save_pretrained(OUT / "my-router")
reloaded = TryageRouter.from_pretrained(folder)
print("\nsaved:", sorted(p.name for p in folder.iterdir()))
same = np.allclose(reloaded.predict_losses([question]), router.predict_losses([question]), atol=1e-5)
print("reloaded router predicts the same losses:", same)
