"""``tryage cv``: k-fold cross-validation of a router on one Q-table, beside kNN, best single and oracle.

::

    tryage cv --qtable q.jsonl [--folds 5] [--by task] [--experts models.json] [--json]

On each fold a router is trained as ``tryage train`` would (the same defaults) on the other folds
and measured on the held-out rows; the baselines are measured on the same rows. The JSON report has
the keys of ``tryage evaluate --json`` plus ``folds``; the best single expert is chosen on the
training folds, kNN fit on them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tryage.cli._common import existing_file, format_cell, format_table, print_json, stdin_file
from tryage.errors import ConfigurationError


def cmd_cv(args: argparse.Namespace) -> int:
    from tryage.cli.split import stratify_field

    existing_file(args.qtable, "Q-table file")
    existing_file(args.experts, "expert library")
    if args.folds < 2:
        raise ConfigurationError(f"--folds must be at least 2, got {args.folds}")
    if args.knn_k is not None and args.knn_k < 1:
        raise ConfigurationError(f"--knn-k must be a positive integer, got {args.knn_k}")
    from tryage.experts import ExpertLibrary
    from tryage.predictors import PerceptivePredictor
    from tryage.qtable import QTable

    table = QTable.from_file(stdin_file(args.qtable), on_invalid=args.on_invalid)
    if args.folds > len(table):
        raise ConfigurationError(f"--folds {args.folds} is more than the table's {len(table)} rows")
    library = ExpertLibrary.from_json(args.experts) if args.experts else None
    fields = sorted({k for e in table.extras for k in e})
    group_by = args.group_by or next((g for g in ("task", "domain") if g in fields), None)
    if group_by is not None and group_by not in fields:
        raise ConfigurationError(f"--group-by {group_by!r} is not a field of {args.qtable}; its fields: "
                                 f"{', '.join(fields) or 'none'}")
    encoder = PerceptivePredictor(args.encoder, seed=args.seed, progress=not args.json)
    embeddings = encoder.encode(table.prompts)
    options = {} if args.epochs is None else {"epochs": args.epochs}
    report = cross_validate_predictor(table, library, encoder, embeddings, options, folds=args.folds,
                                      by=stratify_field(table, args.by), group_by=group_by, knn_k=args.knn_k)
    if args.json:
        print_json(report)
        return 0
    unit = "score" if report["units"] == "score" else "loss"
    print(f"{report['n']} prompts, {args.folds}-fold cross-validation, mean {unit} on the held-out folds "
          f"({'higher' if unit == 'score' else 'lower'} is better)")
    rows = [["router", report["router"], report["select_best_accuracy"]],
            [f"best single ({report['best_single']['expert']}, chosen on the training folds)",
             report["best_single"]["value"], report["best_single"]["select_best_accuracy"]],
            [f"kNN (k={report['knn']['k']})", report["knn"]["value"], report["knn"]["select_best_accuracy"]],
            ["random", report["random"], None], ["oracle", report["oracle"], 1.0]]
    print(format_table(rows, ["router", f"mean {unit}", "picks best"]))
    print(f"gap closed (best single -> oracle): {format_cell(report['gap_closed'])}")
    if not beats_best_single(report):
        print(f"the router does not beat the best single expert on {report['n']} rows; collect more rows, or "
              f"route everything to {report['best_single']['expert']}", file=sys.stderr)
    return 0


def cross_validate_predictor(table: Any, library: Any, encoder: Any, embeddings: Any, options: dict[str, Any], *,
                             folds: int, by: str | None, group_by: str | None = None,
                             knn_k: int | None = None) -> dict[str, Any]:
    """:func:`tryage.evaluation.cross_validate` of ``PerceptivePredictor(**options)`` sharing ``encoder``'s model."""
    from tryage.evaluation import cross_validate
    from tryage.predictors import PerceptivePredictor

    def fit_predict(train_rows: Any, test_rows: Any) -> Any:
        router = PerceptivePredictor(encoder.encoder, seed=encoder.seed, progress=False, **options)
        router.text_encoder_ = encoder.text_encoder_  # one encoder for every fold
        router.fit(table.subset(train_rows), library, embeddings=embeddings[train_rows])
        return router.predict_from_embeddings(embeddings[test_rows])

    return cross_validate(table, fit_predict, embeddings, folds=folds, by=by, group_by=group_by, knn_k=knn_k,
                          seed=encoder.seed)


def beats_best_single(report: dict[str, Any]) -> bool:
    """Whether the router is strictly better than the best single expert: a higher score, or a lower loss."""
    router, single = report["router"], report["best_single"]["value"]
    return router > single if report["units"] == "score" else router < single


def register(sub: Any) -> None:
    p = sub.add_parser("cv", help="cross-validate a router on one Q-table (router, kNN, best single, oracle)",
                       description="Train a router on k-1 folds, measure it on the held-out one, k times; report it "
                                   "beside kNN, the best single expert and the oracle, with tryage evaluate's keys.")
    p.add_argument("--qtable", required=True, help="Q-table (JSONL or CSV; '-': JSONL from stdin)")
    p.add_argument("--experts", help="expert library JSON (metadata for constraints)")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default: 5)")
    p.add_argument("--by", help="field to stratify the folds by (default: task, else domain; 'none': random)")
    p.add_argument("--group-by", help="extra field for per-group results (default: task or domain)")
    p.add_argument("--encoder", help="encoder folder or Hub id (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--epochs", type=int, help="maximum epochs of each fold's router (default: as tryage train)")
    p.add_argument("--knn-k", type=int, help="neighbours of the kNN baseline (default: 20, at most the training rows)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and of training (default: 0)")
    p.add_argument("--on-invalid", choices=("raise", "drop"), default="raise", help="what to do with malformed rows")
    p.add_argument("--json", action="store_true", help="print the report as JSON (tryage evaluate's keys)")
    p.set_defaults(func=cmd_cv)


__all__ = ["beats_best_single", "cmd_cv", "cross_validate_predictor", "register"]
