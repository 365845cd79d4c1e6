# %% [markdown]
# # The paper, reproduced
#
# Hari & Thomson (2023), *Tryage: Real-time, Intelligent Routing of User Prompts to Large Language
# Models*, built a library of domain-expert language models, measured each expert's loss on
# passages from every domain, trained a perceptive router to predict those losses from the text,
# and reported how often the router picks the best expert (**select-best accuracy**, 50.9% in the
# paper), the **Pareto front** of quality against model size as the size weight grows, and a
# **UMAP** of the router's latent space, where prompts cluster by domain.
#
# This project reproduces the experiment offline on CPU: a SmolLM2-135M generalist, 8 domain
# experts fine-tuned from it (code, law, biomedicine, mathematics, literature, encyclopedia,
# technical docs, a computing dictionary) and 2 small models trained from scratch, scored by
# causal-LM loss on held-out passages of the 8 domains. Training the experts and measuring the
# losses takes far longer than a notebook should, so a script does it and writes its results to
# `benchmarks/results/paper_domains.json` (with two PNGs, shown below as images of the repository);
# this notebook reads them, and recomputes the Pareto front from the data embedded in the default
# router.
#
# **Needs:** `pip install 'tryage[plot]'` and a checkout (the results live in `benchmarks/results/`).
# To regenerate them (hours on CPU; needs `tryage[paper]` and `../shared/data/domains`):
#
#     python benchmarks/paper/build_domain_library.py
#     python benchmarks/paper/domain_experiment.py --export-default
#
# **Takes:** about 15 seconds.

# %%
import json
import tempfile
from pathlib import Path

import torch

from tryage.experts import format_size

torch.set_num_threads(2)
REPO = Path.cwd().parent
RESULTS = REPO / "benchmarks" / "results" / "paper_domains.json"
REGENERATE = ("python benchmarks/paper/build_domain_library.py && "
              "python benchmarks/paper/domain_experiment.py --export-default")

if RESULTS.exists():
    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    print(f"results from {RESULTS.relative_to(REPO)}, written by:\n    {results.get('command', REGENERATE)}")
    print("figures:", ", ".join(results["figures"].values()))
    print(f"router trained on {results['data']['router_train_n']} validation passages, "
          f"tested on {results['data']['test_n']} test passages")
else:
    results = None
    print(f"{RESULTS.relative_to(REPO)} is not there yet: the experiment has not been run in this checkout.\n"
          f"Regenerate it with:\n    {REGENERATE}\nThe cells below skip what needs it.")


def show(rows, header):
    """Print rows as an aligned text table."""
    cells = [list(map(str, header))] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))

# %% [markdown]
# ## 1. The expert library
#
# Each expert's loss was measured on every test passage. The table also says how often each expert
# *is* the best one (the oracle's choice) and how often the router chose it.

# %%
if results:
    oracle_share = results["oracle_choice_share"]
    test_n = results["data"]["test_n"]
    show([(e["name"], format_size(e["parameters"]), ", ".join(e["tags"]) or "-", oracle_share.get(e["name"], 0.0),
           results["router_choices"].get(e["name"], 0) / test_n) for e in results["experts"]],
         ["expert", "size", "tags", "best on (share)", "router chose (share)"])

# %% [markdown]
# ## 2. Select-best accuracy and mean loss
#
# Losses are causal-LM losses in nats per token: lower is better. *Best single* is the expert with
# the lowest mean loss on the training passages; *kNN* averages the losses of the 20 most similar
# training passages; the *oracle* picks the best expert for each passage in hindsight.

# %%
if results:
    loss = results["mean_loss"]
    acc = results["select_best_accuracy"]
    print(f"select-best accuracy: {acc:.1%}  (paper: {results['targets']['select_best_accuracy_paper']:.1%}; "
          f"best single expert: {results['best_single_select_best_accuracy']:.1%}; "
          f"kNN: {results['knn_select_best_accuracy']:.1%})\n")
    show([("Tryage router", loss["router"]), (f"best single ({loss['best_single_expert']})", loss["best_single"]),
          ("kNN", loss["knn"]), ("random expert", loss["random"]), ("oracle", loss["oracle"])],
         ["method", "mean loss (nats)"])
    print(f"\nrouter above oracle: {results['router_over_oracle']:+.1%};  "
          f"gap from best single to oracle closed: {results['gap_closed']:.0%}")

# %% [markdown]
# Per domain:

# %%
if results:
    show([(domain, g["n"], g["select_best_accuracy"], g["router"], g["best_single"], g.get("knn"), g["oracle"])
          for domain, g in results["per_domain"].items()],
         ["domain", "n", "select-best acc.", "router", "best single", "kNN", "oracle"])

# %% [markdown]
# ## 3. The Pareto front
#
# Sweeping the size weight λ from 0 upwards moves the choice from the best predicted expert towards
# the smallest one. Each point is one λ: mean parameters of the chosen experts against mean loss.
# The oracle's front uses the true losses; stars are single experts used for every passage.
#
# ![Pareto front of the domain experiment](../benchmarks/results/paper_domains_pareto.png)

# %%
if results:
    front = results["pareto"]["perceptive router"]
    changes = [p for i, p in enumerate(front) if i == 0 or round(p["value"], 4) != round(front[i - 1]["value"], 4)]
    print("Points of the router's front where the choice changes:\n")
    show([(p["weight"], format_size(int(p["mean_constraint"])), p["value"],
           ", ".join(f"{k} {v:.0%}" for k, v in sorted(p["usage"].items(), key=lambda kv: -kv[1])[:2]))
          for p in changes], ["size weight", "mean size", "mean loss", "most used experts"])

# %% [markdown]
# ## 4. The router's latent space
#
# The paper's UMAP shows prompts clustering by domain in the router's representation. Here: the
# untrained encoder (mean-pooled MiniLM) beside the trained router's own embedding (its head's
# hidden layer), coloured by domain, with the silhouette score (cosine; higher means tighter,
# better separated domains).
#
# ![UMAP of the untrained encoder and of the trained router, by domain](../benchmarks/results/paper_domains_latent.png)

# %%
if results:
    latent = results["latent"]
    print(f"silhouette by domain: untrained encoder {latent['silhouette_untrained_encoder']:.3f}, "
          f"trained router {latent['silhouette_trained_router']:.3f}  ({latent['n']} test passages)")

# %% [markdown]
# ## 5. Recompute the front from the embedded default
#
# The default router (`TryageRouter.default()`, notebook 01) is the router trained above. Its
# folder also holds, for every test passage (by id, never its text), each expert's true loss and
# the loss the router predicted. `tryage demo` (here `run_demo`) routes sample prompts with it and
# recomputes the Pareto front from those numbers in seconds: it is the front of section 3.

# %%
from tryage.defaults import default_router_path  # noqa: E402
from tryage.errors import TryageFileNotFoundError  # noqa: E402

try:
    default_router_path()
except TryageFileNotFoundError as missing:
    print(f"No embedded default in this installation ({missing}); skipping the recomputation.")
else:
    from tryage.cli.demo import run_demo

    demo = run_demo(Path(tempfile.gettempdir()) / "tryage-cookbook-demo")
    if results:
        stored = [p["value"] for p in results["pareto"]["perceptive router"]]
        recomputed = [p["value"] for p in demo["pareto"]["perceptive router"]]
        print(f"\nlargest difference from the front in the results file: "
              f"{max(abs(a - b) for a, b in zip(stored, recomputed)):.1e} nats")
