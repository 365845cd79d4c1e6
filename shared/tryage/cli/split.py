"""``tryage split``: a Q-table into train / validation / test files, or k cross-validation folds.

::

    tryage split --qtable q.jsonl --out-dir splits [--test 0.2] [--validation 0.1] [--by task] [--seed 0]
    tryage split --qtable q.jsonl --out-dir folds --folds 5           # folds/fold-1/{train,test}.jsonl ...

Rows are stratified by ``--by`` (default: the table's ``task`` field, else ``domain``), so every
task keeps its share in each part; tasks too rare to stratify share one stratum.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tryage.cli._common import existing_file, format_table, print_json, stdin_file
from tryage.errors import ConfigurationError, check_scalar


def stratify_field(table: Any, by: str | None) -> str | None:
    """``--by``: the field to stratify by (default ``task``, else ``domain``; ``none``: not stratified)."""
    if by == "none":
        return None
    if by is not None:
        return by
    fields = {k for e in table.extras for k in e}
    return next((f for f in ("task", "domain") if f in fields), None)


def check_split_arguments(args: argparse.Namespace) -> None:
    """The shares and the fold count, checked before the table is read (the same words as the split's own)."""
    if args.folds is not None:
        check_scalar(args.folds, "folds", kind=int, low=2)
        return
    test = check_scalar(args.test, "test fraction", low=0, high=1, low_open=True, high_open=True)
    validation = check_scalar(args.validation, "validation fraction", low=0, high=1, high_open=True)
    if test + validation >= 1:
        raise ConfigurationError(f"the test ({test}) and validation ({validation}) fractions leave no training rows")


def cmd_split(args: argparse.Namespace) -> int:
    from tryage.evaluation import fold_indices, split_indices, strata
    from tryage.qtable import QTable

    check_split_arguments(args)
    existing_file(args.qtable, "Q-table file")
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out-dir {out} is a file, not a folder")
    table = QTable.from_file(stdin_file(args.qtable), on_invalid=args.on_invalid)
    by = stratify_field(table, args.by)
    written: dict[str, Any] = {}
    if args.folds is not None:
        for i, (train, test) in enumerate(fold_indices(table, args.folds, by=by, seed=args.seed), start=1):
            for name, rows in (("train", train), ("test", test)):
                written[f"fold-{i}/{name}"] = (table.subset(rows).to_jsonl(out / f"fold-{i}" / f"{name}.jsonl"), len(rows))
        stratified = by if strata(table, by, smallest=args.folds) is not None else None
    else:
        parts = split_indices(table, test=args.test, validation=args.validation, by=by, seed=args.seed)
        for name, rows in parts.items():
            written[name] = (table.subset(rows).to_jsonl(out / f"{name}.jsonl"), len(rows))
        stratified = by if strata(table, by, smallest=2) is not None else None
    summary = {"rows": len(table), "stratified_by": stratified, "seed": args.seed,
               "files": {name: {"path": str(path), "rows": n} for name, (path, n) in written.items()}}
    if args.json:
        print_json(summary)
        return 0
    print(format_table([[name, n, str(path)] for name, (path, n) in written.items()], ["part", "rows", "file"]))
    print(f"{len(table)} rows, " + (f"stratified by {stratified}" if stratified else "not stratified")
          + f", seed {args.seed}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("split", help="split a Q-table into train/validation/test files or k folds, by task",
                       description="Write train.jsonl, validation.jsonl (with --validation) and test.jsonl, or "
                                   "fold-I/train.jsonl and fold-I/test.jsonl (with --folds), stratified by a field.")
    p.add_argument("--qtable", required=True, help="Q-table to split (JSONL or CSV; '-': JSONL from stdin)")
    p.add_argument("--out-dir", required=True, help="folder to write the parts into (created)")
    p.add_argument("--test", type=float, default=0.2, help="share of rows in test.jsonl (default: 0.2)")
    p.add_argument("--validation", type=float, default=0.0, help="share of rows in validation.jsonl (default: 0, none)")
    p.add_argument("--folds", type=int, help="write this many cross-validation folds instead of one split")
    p.add_argument("--by", help="field to stratify by (default: task, else domain; 'none': random rows)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle (default: 0)")
    p.add_argument("--on-invalid", choices=("raise", "drop"), default="raise", help="what to do with malformed rows")
    p.add_argument("--json", action="store_true", help="print the files written as JSON")
    p.set_defaults(func=cmd_split)


__all__ = ["check_split_arguments", "cmd_split", "register", "stratify_field"]
