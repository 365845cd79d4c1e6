"""``tryage update``: warm-start a saved router on production feedback.

::

    tryage update --router my-router --feedback feedback.jsonl [--out my-router-v2] [--json]

The feedback file holds one observation a line, ``{"prompt": ..., "expert": ..., "score": ...}``
(or ``"loss"``), typically only the expert that was chosen; CSV with the same columns works too.
The router is updated in place unless ``--out`` names another folder (written whole, never half).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tryage._io import check_distinct_files
from tryage.cli._common import existing_file, format_table, print_json
from tryage.errors import TryageFileNotFoundError, check_scalar


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``update`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    from tryage.feedback import REGULARIZATIONS

    parser = subparsers.add_parser(
        "update", help="warm-start a saved router on (prompt, expert, score) feedback",
        description="Train a saved head-mode router further on feedback rows, keeping what it knew: "
                    "its weights are pulled toward the old ones (or, with --regularization replay, entries the "
                    "feedback does not observe are replayed from the router's own predictions).")
    parser.add_argument("--router", required=True, help="saved router folder")
    parser.add_argument("--feedback", required=True, help="JSONL or CSV of prompt, expert, score|loss rows")
    parser.add_argument("--out", help="folder for the updated router (default: overwrite --router)")
    parser.add_argument("--regularization", choices=REGULARIZATIONS, default="l2",
                        help="l2: pull toward the old weights (default); replay: the router's own predictions "
                             "as soft targets for what the feedback does not observe; none")
    parser.add_argument("--reference", help="text file of reference prompts (one a line) to replay as well")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the feedback (default: 3)")
    parser.add_argument("--seed", type=int, default=None, help="shuffling seed (default: the router's)")
    parser.add_argument("--json", action="store_true", help="print the update report as JSON")
    parser.set_defaults(func=run_update)
    return parser


def run_update(args: argparse.Namespace) -> int:
    from tryage.feedback import read_feedback, read_prompt_lines
    from tryage.router import TryageRouter

    check_scalar(args.epochs, "epochs", kind=int, low=1)  # and the seed, before the router loads
    if args.seed is not None:
        check_scalar(args.seed, "seed", kind=int, low=0, high=2**32 - 1)
    check_distinct_files({"--out": args.out or args.router}, {"--feedback": args.feedback, "--reference": args.reference},
                         folders=["--out"])
    if not Path(args.router).is_dir():
        raise TryageFileNotFoundError(f"router folder not found: {args.router}")
    existing_file(args.feedback, "feedback file")
    rows = read_feedback(args.feedback)
    reference = read_prompt_lines(args.reference) if args.reference else None
    router = TryageRouter.from_pretrained(args.router)
    report = router.update(rows, regularization=args.regularization, reference_prompts=reference,
                           epochs=args.epochs, seed=args.seed)
    out = router.save_pretrained(args.out or args.router)
    summary = {"router": str(out), **report.to_dict()}
    if args.json:
        print_json(summary)
        return 0
    print(f"updated on {report.prompts} feedback prompt(s) ({args.regularization}, {report.epochs} epochs); "
          f"saved to {out}")
    print(format_table([[e, n] for e, n in report.observed.items()], ["expert", "observations"]))
    print(f"loss on the observed feedback: {report.loss_before:.4f} -> {report.loss_after:.4f}", file=sys.stdout)
    return 0


__all__ = ["register", "run_update"]
