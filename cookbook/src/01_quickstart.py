# %% [markdown]
# # Quickstart: route prompts with the router that ships with Tryage
#
# Tryage chooses, for each prompt, the expert model expected to do best on it, under your
# constraints (size, recency, cost). It does so with a **perceptive router**: a small network that
# reads the prompt and predicts every expert's loss before any expert runs. The choice is
#
#     argmin over experts of   predicted loss + Σ λ_j · constraint_j(expert)
#
# and flags written in the prompt, such as `[Flag: smallest model]`, set the weights λ for that one
# request.
#
# Tryage ships a trained router: `TryageRouter.default()`. Its experts are small language models
# specialised in different domains (code, law, biomedicine, mathematics, literature...), and it was
# trained on their measured losses (notebook 06 shows how well it does).
#
# **Needs:** `pip install tryage`; nothing else, no network, no GPU.
#
# **Takes:** about 15 seconds (loading the bundled MiniLM encoder is most of it).

# %%
import json

import torch

from tryage import TryageRouter
from tryage.errors import TryageError
from tryage.experts import format_size

torch.set_num_threads(2)
router = TryageRouter.default()


def show(rows, header):
    """Print rows as an aligned text table."""
    cells = [list(map(str, header))] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


show([(e.name, format_size(e.parameters), ", ".join(e.tags) or "-") for e in router.library],
     ["expert", "size", "tags"])

# %% [markdown]
# ## 1. Route one prompt
#
# `route` returns a `RoutingDecision`: the chosen expert, the prompt to send it, and everything
# behind the choice. `explain()` says it in one line.

# %%
decision = router.route("The lessee shall indemnify the lessor against any claim arising from the use of the premises.")
print("expert :", decision.expert)
print("why    :", decision.explain())

# %% [markdown]
# ## 2. Read a `RoutingDecision`
#
# * `expert` — the choice; `chosen` — its `ExpertScore`; `ranking` — eligible experts, best first
# * `prompt` — what the expert should receive (flags removed); `original_prompt` — as given
# * `flags` — the flags found; `weights` — the constraint weights in force
# * `scores` — one `ExpertScore` per expert: `predicted_loss`, `penalties` (λ · C per constraint),
#   `total` (what was minimised), `eligible` and `excluded_because` (hard filters)
# * `to_dict()` — all of it as JSON-ready data, for logs and traces

# %%
def show_decision(d):
    print(f"prompt sent: {d.prompt!r}\nflags: {list(d.flags)}   weights: {dict(d.weights)}\n")
    rows = []
    for s in sorted(d.scores, key=lambda s: s.total):
        penalties = ", ".join(f"{k} {v:+.3f}" for k, v in s.penalties.items()) or "-"
        mark = "->" if s.expert == d.expert else ""
        rows.append((mark, s.expert, format_size(router.library[s.expert].parameters), s.predicted_loss,
                     penalties, s.total, "yes" if s.eligible else f"no: {s.excluded_because}"))
    show(rows, ["", "expert", "size", "predicted loss", "penalties", "total", "eligible"])


show_decision(decision)

# %% [markdown]
# ## 3. Flags
#
# Flags go anywhere in the prompt, are case-insensitive, and are removed before the expert sees it.
#
# | flag | effect |
# |---|---|
# | `[Flag: smallest model]` / `[Flag: largest model]` | size weight ±1000: size decides, the loss breaks ties |
# | `[Flag: size=0.5]` | set one constraint's weight (also `recency=`, `cost=`) |
# | `[Flag: max size 200M]` | hard filter on parameters (also `min size`) |
# | `[Flag: expert NAME]` | only that expert |
# | `[Flag: most recent]`, `[Flag: cheapest]`, `[Flag: license mit]`, `[Flag: newer than 2024-01-01]` | need dates, prices or licences in the expert library (see notebook 05) |

# %%
prompt = "Theorem 2. For every integer n > 1 there is a prime p with n < p < 2n. Proof. Suppose not; then"
smallest = min(router.library, key=lambda e: e.parameters).name
rows = []
for flag in ("", "[Flag: smallest model]", "[Flag: largest model]", "[Flag: size=10]", "[Flag: max size 100M]",
             f"[Flag: expert {smallest}]"):
    d = router.route(f"{prompt} {flag}".strip())
    rows.append((flag or "(none)", d.expert, format_size(router.library[d.expert].parameters), d.chosen.predicted_loss))
show(rows, ["flag", "chosen expert", "size", "its predicted loss"])

# %% [markdown]
# With a flag, the decision shows the penalties that moved the choice:

# %%
show_decision(router.route(prompt + " [Flag: size=10]"))

# %% [markdown]
# ## 4. Weights from code
#
# The same trade-off without touching the prompt: `weights={"size": λ}` per call, or
# `TryageRouter(..., weights=...)` as a default. Flags in the prompt override both. The size
# penalty is the log parameter count scaled to [0, 1] over the library (smallest 0, largest 1),
# and losses are in nats per token. In this library the two tiny from-scratch models are several
# nats worse than the 135M experts, so only a large λ makes the router give up that much quality
# for size; with experts closer in quality, small weights already matter (notebook 02).

# %%
sweep = []
for weight in (0.0, 1.0, 3.0, 6.0, 10.0, 20.0):
    d = router.route(prompt, weights={"size": weight})
    sweep.append((weight, d.expert, format_size(router.library[d.expert].parameters), d.chosen.predicted_loss, d.chosen.total))
show(sweep, ["size weight", "chosen expert", "size", "predicted loss", "total"])

# %% [markdown]
# ## 5. Many prompts at once
#
# `route_batch` encodes all prompts in one pass of the router (much faster than a loop). One
# passage-like prompt per domain of the library:

# %%
samples = {
    "code": "import numpy as np\n\ndef normalize(x):\n    return (x - x.mean()) / x.std()",
    "legal": "The defendant moved to dismiss the complaint for lack of personal jurisdiction.",
    "biomed": "Patients receiving the inhibitor showed reduced expression of inflammatory cytokines.",
    "math": "We show that the sequence converges. Since |a_n - a_m| < epsilon for all n, m > N, it is Cauchy.",
    "literature": '"I shall not go," said Elizabeth, turning from the window; and her mother sighed.',
    "encyclopedia": "Paris is the capital and most populous city of France, with about 2.1 million residents.",
    "techdocs": "To install the package, run pip install foo, then set the API key in settings.yaml.",
    "computing-dictionary": "<programming> A data structure in which the last item added is the first removed.",
}
decisions = router.route_batch(list(samples.values()))
show([(domain, text.replace("\n", " ")[:48], d.expert, d.chosen.predicted_loss)
      for (domain, text), d in zip(samples.items(), decisions)],
     ["domain", "prompt", "chosen expert", "predicted loss"])

# %% [markdown]
# The router predicts losses, not topics: it picks the expert it expects to have the lowest loss
# on the text, and that is not always the expert named after the text's domain. Sometimes another
# expert really is better; sometimes the router is wrong. Notebook 06 measures how often it picks
# the truly best expert on held-out passages, and how close its mean loss comes to the oracle's,
# per domain.
#
# ## 6. Mistakes are explained
#
# Every error is a `TryageError` (and the matching built-in, e.g. `ValueError`) whose message says
# what was received and what is allowed.

# %%
mistakes = {"unknown flag": lambda: router.route("Hello [Flag: fastest]"),
            "unknown constraint": lambda: router.route("Hello", weights={"speed": 1.0}),
            "unknown expert": lambda: router.route("Hello [Flag: expert gpt-9]")}
for what, attempt in mistakes.items():
    try:
        attempt()
    except TryageError as error:
        print(f"{what}: {type(error).__name__}: {str(error)[:240]}\n")

# %% [markdown]
# ## 7. Log it, or do it from a shell
#
# `decision.to_dict()` is JSON-ready. The command line does the same routing:
# `tryage route "Prove that ... [Flag: smallest model]"` prints a table (`--json` for programs), and
# `tryage demo` routes sample prompts and draws the default router's Pareto front.
#
# Next: train a router on your own experts (02), use it from LangChain (03) or LlamaIndex (04), get
# expert metadata from the Hub (05), and see how the default router was built and measured (06).

# %%
record = router.route(prompt + " [Flag: smallest model]").to_dict()
record["scores"] = record["scores"][:1] + [f"... {len(record['scores']) - 1} more experts"]
print(json.dumps(record, indent=1))
