"""``tryage demo``: the embedded default router on sample prompts, and its Pareto front.

The embedded default (``tryage/default/``) is the paper's domain experiment reproduced offline: a
head over the bundled MiniLM encoder trained to predict the causal-LM loss of 11 experts (the
SmolLM2-135M generalist, 8 domain experts fine-tuned from it, 2 small models trained from scratch).

The demo routes sample prompts of its own, from several domains, with and without flags such as
``[Flag: smallest model]``, prints a table, and draws the Pareto front (mean loss against mean
parameters as the size weight grows). The front is *recomputed* from
``default/measured_losses.jsonl``: for every test passage, keyed by id, it holds the true loss of
every expert and the loss the router predicted at build time (passage text is never stored), which
is all :func:`tryage.evaluation.pareto_sweep` needs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from tryage.cli._common import P_CORRECT, PREDICTED_LOSS, format_table, print_json
from tryage.defaults import DEFAULT_DIR
from tryage.errors import ConfigurationError

SAMPLE_PROMPTS = (
    ("code", "def merge_sorted(a, b):\n    out = []\n    while a and b:\n        out.append(a.pop(0) if a[0] < b[0] else b.pop(0))"),
    ("legal", "The lessee shall indemnify and hold harmless the lessor against any claim arising from the use of the premises."),
    ("biomed", "Patients receiving the inhibitor showed reduced expression of inflammatory cytokines in serum samples."),
    ("math", "Let G be a finite group and H a normal subgroup. Prove that the order of G/H divides the order of G."),
    ("literature", "She walked along the shore at dusk, the letter still folded in her hand, and did not look back at the house."),
    ("encyclopedia", "The river rises in the northern highlands and flows for about 600 kilometres before reaching the sea."),
    ("techdocs", "Set the environment variable before starting the server; the configuration file is read once at startup."),
    ("computing-dictionary", "<networking> A protocol that allows a host to discover the hardware address of another host on the network."),
)
FLAG = " [Flag: smallest model]"

# For the ``open-llms`` router: prompts shaped like the tasks of the LLMRouter table it was trained on.
LLM_SAMPLE_PROMPTS = (
    ("math", "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
             "How many clips did Natalia sell altogether in April and May?"),
    ("code", "Write a Python function to find the longest common prefix of a list of strings.\n"
             "assert longest_prefix(['flower', 'flow', 'flight']) == 'fl'"),
    ("science", "Which of the following best explains why ice floats on water? (A) Ice is denser than water "
                "(B) Hydrogen bonds hold water molecules further apart in ice (C) Ice contains air (D) Salt"),
    ("trivia", "Which English king was known as the Lionheart?"),
    ("commonsense", "Where would you put a plate after washing it? A. cupboard B. table C. restaurant "
                    "D. flea market E. dishwasher"),
    ("competition math", "Find the number of ordered pairs of positive integers (m, n) such that "
                         "m^2 n = 20^20."),
)
LLM_FLAGS = (" [Flag: cheapest]", " [Flag: smallest model]")


def _losses_table(split: str = "test") -> tuple[Any, np.ndarray]:
    """The test passages of the default as a QTable (prompts are passage ids) and the predicted losses."""
    from tryage.qtable import QTable

    rows = [json.loads(line) for line in (DEFAULT_DIR / "measured_losses.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    rows = [r for r in rows if r.get("split") == split]
    experts = tuple(rows[0]["losses"])
    table = QTable(tuple(r["id"] for r in rows), experts, np.array([[r["losses"][e] for e in experts] for r in rows]),
                   tuple({"domain": r["domain"]} for r in rows))
    predicted = np.array([[r["predicted"][e] for e in experts] for r in rows])
    return table, predicted


def run_demo(out_dir: Path, *, json_output: bool = False, router: str = "paper-domains") -> dict[str, Any]:
    """Route the sample prompts with an embedded router, print them, write ``demo.json`` (and ``pareto.png``).

    ``router="open-llms"`` shows the quality / size / price trade-off on the nine open LLMs instead.
    """
    if router == "open-llms":
        return _run_llm_demo(Path(out_dir), json_output=json_output)
    from tryage.evaluation import pareto_sweep, plot_pareto, write_json
    from tryage.experts import format_size
    from tryage.router import TryageRouter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    router = TryageRouter.default()
    prompts = [text for _, text in SAMPLE_PROMPTS]
    plain = router.route_batch(prompts)
    flagged = router.route_batch([p + FLAG for p in prompts])
    rows = []
    for (domain, text), a, b in zip(SAMPLE_PROMPTS, plain, flagged):
        rows.append({"domain": domain, "prompt": text, "expert": a.expert,
                     "predicted_loss": a.chosen.predicted_loss,
                     "parameters": router.library[a.expert].parameters,
                     "with_flag": {"flag": FLAG.strip(), "expert": b.expert,
                                   "predicted_loss": b.chosen.predicted_loss,
                                   "parameters": router.library[b.expert].parameters}})

    table, predicted = _losses_table()
    library = router.library
    fronts = {"perceptive router": pareto_sweep(predicted, table, library),
              "oracle (true losses)": pareto_sweep(table.losses, table, library)}
    png = plot_pareto(fronts, out / "pareto.png", ylabel="mean causal-LM loss (nats, lower is better)",
                      title="Embedded default: loss against model size (test passages)")
    result = {"prompts": rows, "pareto_png": str(png),
              "pareto": {k: [p.to_dict() for p in v] for k, v in fronts.items()},
              "test_passages": len(table)}
    write_json(result, out / "demo.json")
    if json_output:
        print_json(result)
        return result
    table_rows = []
    for r in rows:
        text = r["prompt"].replace("\n", " ")
        f = r["with_flag"]
        table_rows.append([r["domain"], text if len(text) <= 45 else text[:44] + "…", r["expert"],
                           f"{r['predicted_loss']:.2f}", f["expert"], format_size(f["parameters"])])
    print(format_table(table_rows, ["domain", "prompt", "chosen expert", PREDICTED_LOSS,
                                    "with [Flag: smallest model]", "size"]))
    best = min(fronts["perceptive router"], key=lambda p: p.value)
    print(f"\nPareto front over {len(table)} test passages written to {png} "
          f"(best mean loss {best.value:.3f} at {format_size(int(best.mean_constraint))} mean parameters)")
    return result


def _run_llm_demo(out: Path, *, json_output: bool) -> dict[str, Any]:
    """The ``open-llms`` router on LLM-style prompts, plain and with ``cheapest`` / ``smallest model`` flags."""
    from tryage.defaults import default_router_path
    from tryage.evaluation import write_json
    from tryage.experts import format_size
    from tryage.router import TryageRouter

    out.mkdir(parents=True, exist_ok=True)
    router = TryageRouter.default("open-llms")
    prompts = [text for _, text in LLM_SAMPLE_PROMPTS]
    runs = {"plain": router.route_batch(prompts)}
    for flag in LLM_FLAGS:
        runs[flag.strip()] = router.route_batch([p + flag for p in prompts])

    def choice(decision: Any) -> dict[str, Any]:
        expert = router.library[decision.expert]
        return {"expert": decision.expert, "predicted_loss": decision.chosen.predicted_loss,
                "p_correct": 1.0 - decision.chosen.predicted_loss,
                "parameters": expert.parameters, "price_per_1m_tokens": expert.cost}

    rows = [{"task": task, "prompt": text, **{name: choice(d[i]) for name, d in runs.items()}}
            for i, (task, text) in enumerate(LLM_SAMPLE_PROMPTS)]
    measured_path = default_router_path("open-llms") / "results.json"
    measured = json.loads(measured_path.read_text(encoding="utf-8")) if measured_path.exists() else {}
    result = {"router": "open-llms", "prompts": rows, "experts": [e.to_dict() for e in router.library],
              "measured": measured.get("cross_validated", {})}
    write_json(result, out / "demo.json")
    if json_output:
        print_json(result)
        return result
    table_rows = []
    for r in rows:
        cells = [r["task"]]
        for name in runs:
            c = r[name]
            cells.append(f"{c['expert']} ({format_size(c['parameters'])}, ${c['price_per_1m_tokens']:.2f}, "
                         f"loss {c['predicted_loss']:.2f}, P {c['p_correct']:.2f})")
        table_rows.append(cells)
    print(format_table(table_rows, ["task", f"chosen (size, $/1M tokens, {PREDICTED_LOSS}, {P_CORRECT})",
                                    *[f"with {n}" for n in list(runs)[1:]]]))
    score = result["measured"].get("mean_score", {})
    if score:
        print(f"\nCross-validated on LLMRouter (5 folds): router {score['router']:.3f}, best single model "
              f"{score['best_single']:.3f}, oracle {score['oracle']:.3f} mean score")
    match = result["measured"].get("router_matches_best_single_at")
    if match and match.get("price_share") is not None:
        print(f"With the cost weight swept it matches the best single model at {match['price_share']:.0%} of its "
              f"price per token; with the size weight, at {format_size(int(match['mean_parameters']))} mean size")
    return result




def cmd_demo(args: argparse.Namespace) -> int:
    if args.out is None:  # never write into the current folder unasked
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="tryage-demo-"))
    else:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ConfigurationError(f"--out {out} is a file, not a folder")
    run_demo(out, json_output=args.json, router=args.router)
    if not args.json:
        print(f"demo files (demo.json{'' if args.router == 'open-llms' else ', pareto.png'}) in {out}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="route sample prompts with the embedded default and draw its Pareto front")
    p.add_argument("--router", choices=("paper-domains", "open-llms"), default="paper-domains",
                   help="embedded router to demonstrate (default: paper-domains)")
    p.add_argument("--out", help="folder for the demo's PNG and JSON (default: a new temporary folder, printed)")
    p.add_argument("--json", action="store_true", help="print the demo's results as JSON")
    p.set_defaults(func=cmd_demo)


__all__ = ["LLM_SAMPLE_PROMPTS", "SAMPLE_PROMPTS", "register", "run_demo"]
