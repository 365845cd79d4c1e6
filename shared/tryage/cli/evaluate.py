"""``tryage evaluate`` (router against oracle and baselines) and ``tryage pareto`` (a constraint's front)."""

from __future__ import annotations

import argparse
from typing import Any

from tryage._io import check_distinct_files
from tryage.cli._common import (ROUTER_HELP, check_route_arguments, existing_file, format_cell, format_table,
                                load_router, print_json, stdin_file)
from tryage.errors import ConfigurationError
from tryage.predictors.baselines import KNN_K, default_knn_k


def _table_and_predicted(args: argparse.Namespace):  # noqa: ANN202
    from tryage.qtable import QTable

    check_distinct_files({"--out": args.out}, {"--qtable": args.qtable, "--experts": args.experts})
    existing_file(args.qtable, "Q-table file")
    check_route_arguments(args)
    table = QTable.from_file(stdin_file(args.qtable), on_invalid=getattr(args, "on_invalid", "raise"))
    router = load_router(args)
    missing = [e for e in router.experts if e not in table.experts]
    if missing:
        raise ConfigurationError(f"the Q-table has no column for the router's expert(s) {missing}; "
                                 f"it has {list(table.experts)}")
    table = table.select_experts(router.experts)
    embeddings = router.predictor.encode(table.prompts)
    predicted = router.predictor.predict_from_embeddings(embeddings)
    return router, table, embeddings, predicted


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tryage.evaluation import evaluate_router
    from tryage.qtable import QTable

    existing_file(args.qtable, "Q-table file")
    existing_file(args.train, "training Q-table file")
    given = check_route_arguments(args)  # --router, --experts, --weight: before the router loads
    table = QTable.from_file(stdin_file(args.qtable), on_invalid=getattr(args, "on_invalid", "raise"))
    train = QTable.from_file(args.train) if args.train else None
    knn_fit = "train table" if train else "leave-one-out on the test table"
    most = len(train) if train else len(table) - 1  # leave-one-out leaves a row's own out
    if args.knn_k is None:
        args.knn_k = default_knn_k(most + (0 if train else 1))
    if not 1 <= args.knn_k <= most:
        where = (f"the --train table has {len(train)} rows" if train else
                 f"the test table {args.qtable} has {len(table)} rows (leave-one-out; or give --train)")
        raise ConfigurationError(f"--knn-k {args.knn_k} is not possible: {where}; --knn-k must be in [1, {most}]"
                                 if most >= 1 else f"--knn-k: {where}, too few for the kNN baseline")
    fields = sorted({k for e in table.extras for k in e})
    if args.group_by is not None and args.group_by not in fields:
        raise ConfigurationError(f"--group-by {args.group_by!r} is not a field of {args.qtable}; its fields: "
                                 f"{', '.join(fields) or 'none (rows have only prompt and losses)'}")
    group_by = args.group_by or next((g for g in ("task", "domain") if g in fields), None)
    router = load_router(args)
    report = evaluate_router(router, table, train=train, group_by=group_by, knn_k=args.knn_k,
                             weights=given).to_dict()
    report["knn"]["fit_on"] = knn_fit
    report["knn"]["k"] = args.knn_k
    report["best_single"]["chosen_on"] = "train table" if train else "the test table itself"
    if args.plot:
        if report["calibration"] is None:
            raise ConfigurationError("--plot draws the reliability of P(correct): it needs a router of scores in "
                                     "[0, 1]; this router predicts other losses")
        from tryage.evaluation import plot_reliability

        report["calibration"]["png"] = str(plot_reliability(report["calibration"], args.plot))
    if args.json:
        print_json(report)
        return 0
    unit = "score" if report["units"] == "score" else "loss"
    print(f"{report['n']} prompts, mean {unit} achieved (higher is better)" if unit == "score"
          else f"{report['n']} prompts, mean loss achieved (lower is better)")
    rows = [["router", report["router"], report["select_best_accuracy"]],
            [f"best single ({report['best_single']['expert']})", report["best_single"]["value"],
             report["best_single"]["select_best_accuracy"]],
            [f"kNN (k={args.knn_k}, {knn_fit})", report["knn"]["value"], report["knn"]["select_best_accuracy"]],
            ["random", report["random"], None],
            ["oracle", report["oracle"], 1.0]]
    print(format_table(rows, ["router", f"mean {unit}", "picks best"]))
    print(f"gap closed (best single -> oracle): {format_cell(report['gap_closed'])}")
    if (cal := report["calibration"]) is not None:
        how = "calibrated" if cal["calibrated"] else f"not calibrated ({cal.get('why_not')})"
        print(f"expected calibration error of P(correct): {cal['ece']:.4f} ({how}; 1 - loss: "
              f"{cal['ece_uncalibrated']:.4f})" + (f"; reliability plot: {cal['png']}" if "png" in cal else ""))
    if report["missing_entries"]:
        print(f"partial table: {report['missing_entries']} missing entries; {report['unscored_choices']} router "
              "choice(s) had no observed value and are left out of its score")
    if report["per_group"]:
        print()
        rows = [[g, v["n"], v["router"], v["best_single"], v.get("knn"), v["oracle"], v["select_best_accuracy"]]
                for g, v in report["per_group"].items()]
        print(format_table(rows, [group_by, "n", "router", "best single", "kNN", "oracle", "picks best"]))
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from tryage.evaluation import pareto_sweep, plot_pareto, smallest_matching

    router, table, _, predicted = _table_and_predicted(args)
    front = pareto_sweep(predicted, table, router.library, constraint=args.constraint,
                         constraints=router.constraints)
    oracle_front = pareto_sweep(table.losses, table, router.library, constraint=args.constraint,
                                constraints=router.constraints)
    higher = table.kind == "score"
    best_single = max if higher else min
    single_value = best_single(float(table.to_user_units(table.losses[:, j].mean())) for j in range(len(table.experts)))
    match = smallest_matching(front, single_value, higher_is_better=higher)
    result = {"constraint": args.constraint, "units": table.kind, "best_single_value": single_value,
              "smallest_matching_best_single": None if match is None else match.to_dict(),
              "router": [p.to_dict() for p in front], "oracle": [p.to_dict() for p in oracle_front]}
    if args.out:
        xlabel = {"size": "mean parameters of chosen experts", "cost": "mean price per 1M tokens (USD)",
                  "recency": "mean creation time (POSIX seconds)"}.get(args.constraint, f"mean {args.constraint} penalty")
        plot_pareto({"Tryage router": front, "oracle": oracle_front}, args.out, xlabel=xlabel,
                    ylabel=f"mean {table.kind}", xscale="log" if args.constraint in ("size", "cost") else "linear",
                    title=f"Quality against {args.constraint}")
        result["png"] = str(args.out)
    if args.json:
        print_json(result)
        return 0
    rows = [[p.weight, p.value, p.mean_constraint, p.select_best_accuracy,
             ", ".join(f"{k} {v:.0%}" for k, v in sorted(p.usage.items(), key=lambda kv: -kv[1])[:3])] for p in front]
    print(format_table(rows, ["weight", f"mean {table.kind}", f"mean {args.constraint}", "picks best", "top experts"]))
    if match is not None:
        print(f"\nsmallest mean {args.constraint} still matching the best single expert ({single_value:.4f}): "
              f"{match.mean_constraint:.4g} at weight {match.weight:.4g}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def register(sub: Any) -> None:
    for name, func, text in (("evaluate", cmd_evaluate, "measure a router against oracle and baselines"),
                             ("pareto", cmd_pareto, "sweep a constraint weight and trace quality against it")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--router", help=ROUTER_HELP)
        p.add_argument("--qtable", required=True, help="test Q-table (JSONL or CSV; '-': JSONL from stdin)")
        p.add_argument("--experts", help="expert library JSON whose metadata overrides the router's")
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        if name == "evaluate":
            p.add_argument("--train", help="training Q-table: picks the best single expert and fits the kNN")
            p.add_argument("--group-by", help="extra field for per-group results (default: task or domain)")
            p.add_argument("--knn-k", type=int, default=None,
                           help=f"neighbours of the kNN baseline (default: {KNN_K}, at most the table's rows - 1)")
            p.add_argument("--weight", action="append", metavar="NAME=NUMBER", help="constraint weight, e.g. size=0.5")
            p.add_argument("--plot", metavar="PNG", help="write the reliability diagram of P(correct) here")
        else:
            p.add_argument("--constraint", default="size", help="constraint to sweep (size, cost, recency, ...)")
            p.add_argument("--out", help="write the front as a PNG here")
        p.set_defaults(func=func)
