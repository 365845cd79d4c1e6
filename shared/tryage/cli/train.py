"""``tryage train``: fit a perceptive predictor on a Q-table and save it as a router folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tryage._io import check_distinct_files
from tryage.cli._common import add_ray_arguments, existing_file, print_json, ray_options, stdin_file
from tryage.errors import ConfigurationError
from tryage.predictors._training import SMALL_TABLE_ROWS

#: Folds of the check ``tryage train`` runs on a table of fewer than ``SMALL_TABLE_ROWS`` rows.
CHECK_FOLDS = 5


def cmd_train(args: argparse.Namespace) -> int:
    from tryage.experts import ExpertLibrary
    from tryage.predictors import PerceptivePredictor
    from tryage.qtable import QTable

    existing_file(args.qtable, "Q-table file")
    existing_file(args.experts, "expert library")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigurationError(f"--epochs must be a positive integer, got {args.epochs}")
    ray = ray_options(args)
    if args.ray and args.mode != "head":
        raise ConfigurationError("--ray encodes the prompts on a Ray actor pool for --mode head; --mode finetune "
                                 "re-encodes every step and trains on this machine (leave out --ray)")
    qtable = QTable.from_file(stdin_file(args.qtable), on_invalid=args.on_invalid)
    if qtable.dropped:
        print(f"dropped {len(qtable.dropped)} invalid row(s), e.g. line {qtable.dropped[0].line}: "
              f"{qtable.dropped[0].reason}", file=sys.stderr)
    library = None
    if args.experts:
        library = ExpertLibrary.from_json(args.experts)
        missing = [e for e in qtable.experts if e not in library]
        if missing:
            raise ConfigurationError(f"{args.experts} has no metadata for Q-table expert(s) {missing}")
    from tryage.predictors._persistence import check_save_target

    check_save_target(args.out, overwrite=args.overwrite)  # refuse before training, not after
    check_distinct_files({"--out": args.out}, {"--qtable": args.qtable, "--experts": args.experts}, folders=["--out"])
    Path(args.out).absolute().parent.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails now too
    options = {k: v for k, v in (("layers", args.layers), ("epochs", args.epochs)) if v is not None}
    router = PerceptivePredictor(args.encoder, mode=args.mode, seed=args.seed, progress=not args.json, **options)
    check = None
    if args.ray:
        from tryage.scale.distributed import fit_router

        fit_router(router, qtable, library, workers=ray["workers"], num_gpus=ray["num_gpus"], address=ray["address"],
                   num_cpus=ray["num_cpus"])
    elif args.mode == "head" and len(qtable) < SMALL_TABLE_ROWS and not args.no_check and len(qtable) >= CHECK_FOLDS:
        embeddings = router.encode(qtable.prompts)  # once: the check's folds and the router share it
        check = small_table_check(qtable, library, router, embeddings, options)
        router.fit(qtable, library, embeddings=embeddings)
    else:
        router.fit(qtable, library)
    out = router.save_pretrained(args.out, overwrite=args.overwrite)
    summary = {"router": str(out), "experts": list(router.experts_), "rows": len(qtable), "mode": args.mode,
               "backend": "ray" if args.ray else "local",
               "epochs_run": len(router.history_),  # no validation split (a tiny table): best_val_loss null
               "best_val_loss": min((h["val_loss"] for h in router.history_ if "val_loss" in h), default=None)}
    summary["small_table_check"] = check
    if args.json:
        print_json(summary)
        return 0
    print(f"trained a {args.mode} router on {len(qtable)} prompts x {len(qtable.experts)} experts "
          f"({summary['epochs_run']} epochs); saved to {out}")
    if check is not None:
        print(check["message"])
    return 0


def small_table_check(qtable: Any, library: Any, router: Any, embeddings: Any, options: dict[str, Any]) -> dict[str, Any]:
    """On a small table: a 5-fold check of the router against the best single expert, kNN and the oracle."""
    from tryage.cli.cv import beats_best_single, cross_validate_predictor
    from tryage.cli.split import stratify_field

    report = cross_validate_predictor(qtable, library, router, embeddings, options, folds=CHECK_FOLDS,
                                      by=stratify_field(qtable, None))
    unit = "score" if report["units"] == "score" else "loss"
    numbers = (f"{CHECK_FOLDS}-fold mean {unit} on these {len(qtable)} rows: router {report['router']:.3f}, best single "
               f"({report['best_single']['expert']}) {report['best_single']['value']:.3f}, kNN {report['knn']['value']:.3f}, "
               f"oracle {report['oracle']:.3f}")
    better = beats_best_single(report)
    message = (f"small table: {numbers}. " + ("The router beats the best single expert." if better else
               f"The table is too small for the router to beat {report['best_single']['expert']}: collect more "
               "rows (`tryage collect`), or send every prompt to it."))
    keys = ("router", "oracle", "random", "select_best_accuracy", "gap_closed")
    return {"folds": CHECK_FOLDS, "beats_best_single": better, "message": message,
            **{k: report[k] for k in keys}, "best_single": report["best_single"], "knn": report["knn"]}


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train a perceptive predictor (the router's Q-function) on a Q-table")
    p.add_argument("--qtable", required=True, help="JSONL or CSV of prompts and per-expert losses or scores "
                                                   "('-': JSONL from stdin)")
    p.add_argument("--experts", help="expert library JSON (metadata for constraints)")
    p.add_argument("--out", required=True, help="folder to save the router in (a new or empty folder, or a router)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out even if it is a file or a folder that is not a saved router")
    p.add_argument("--encoder", help="encoder folder or Hub id (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--mode", choices=("head", "finetune"), default="head",
                   help="head: train a head on the frozen encoder (default); finetune: the encoder too")
    p.add_argument("--layers", choices=("last", "all"), default=None,
                   help="encoder pooling: last layer, or every layer concatenated (default: the router's default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and shuffling (default: 0)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: 300 head / 4 finetune, early stopped; "
                                              "fixed and fewer on a small table)")
    p.add_argument("--on-invalid", choices=("raise", "drop"), default="raise",
                   help="what to do with malformed Q-table rows")
    p.add_argument("--no-check", action="store_true",
                   help=f"skip the {CHECK_FOLDS}-fold check against the best single expert run on a table of fewer "
                        f"than {SMALL_TABLE_ROWS} rows")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_ray_arguments(p)   # --ray: the prompts are encoded by a Ray actor pool, the head trains here
    p.set_defaults(func=cmd_train)
