"""The ``tryage`` command: train, route, evaluate, pareto, discover, demo, update.

Every sub-command prints a table for people and, with ``--json``, one JSON document for programs.
Bad input ends with a one-line ``tryage: error: ...`` on stderr and exit code 2; nothing is half
written.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tryage._table import format_cell, format_table
from tryage.errors import ConfigurationError, TryageError

EXIT_USAGE = 2


def _weights(items: Sequence[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigurationError(f"--weight takes NAME=NUMBER (e.g. size=0.5), got {item!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigurationError(f"--weight {item!r}: {value!r} is not a number") from None
    return out


def _finite(data: Any) -> Any:
    """``data`` with NaN and infinities as ``None``: ``--json`` prints strict JSON (no ``Infinity``)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def _print_json(data: Any) -> None:
    print(json.dumps(_finite(data), indent=2, ensure_ascii=False, default=str, allow_nan=False))


def _router_by_name_or_folder(router: str | None, runtime: str = "torch"):  # noqa: ANN202
    """``--router``: a saved router folder, or the name of an embedded router (default: the paper's)."""
    from tryage.defaults import EMBEDDED_ROUTERS
    from tryage.errors import TryageFileNotFoundError
    from tryage.router import TryageRouter

    if router is None or (router in EMBEDDED_ROUTERS and not Path(router).is_dir()):
        return TryageRouter.default(router, runtime=runtime)
    if not Path(router).is_dir():
        raise TryageFileNotFoundError(f"router folder not found: {router} (nor is it an embedded router: "
                                      f"{', '.join(EMBEDDED_ROUTERS)})")
    return TryageRouter.from_pretrained(router, runtime=runtime)


def _load_router(args: argparse.Namespace):  # noqa: ANN202
    from tryage.router import TryageRouter

    router = _router_by_name_or_folder(args.router, getattr(args, "runtime", "torch"))
    if getattr(args, "experts", None):
        from tryage.experts import ExpertLibrary

        given = ExpertLibrary.from_json(args.experts)
        known = [e for e in given if e.name in router.library]
        if not known:
            raise ConfigurationError(f"{args.experts} describes none of the router's experts {list(router.experts)}")
        router = TryageRouter(router.predictor, router.library.merge(known), constraints=router.constraints)
    return router


# -- sub-commands ------------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from tryage.cli_measure import ray_options
    from tryage.experts import ExpertLibrary
    from tryage.predictors import PerceptivePredictor
    from tryage.qtable import QTable

    ray = ray_options(args)
    if args.ray and args.mode != "head":
        raise ConfigurationError("--ray encodes the prompts on a Ray actor pool for --mode head; --mode finetune "
                                 "re-encodes every step and trains on this machine (leave out --ray)")
    qtable = QTable.from_file(args.qtable, on_invalid=args.on_invalid)
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
    Path(args.out).absolute().parent.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails now too
    options = {} if args.layers is None else {"layers": args.layers}
    router = PerceptivePredictor(args.encoder, mode=args.mode, seed=args.seed, epochs=args.epochs,
                                 progress=not args.json, **options)
    if args.ray:
        from tryage.distributed import fit_router

        fit_router(router, qtable, library, workers=ray["workers"], num_gpus=ray["num_gpus"], address=ray["address"],
                   num_cpus=ray["num_cpus"])
    else:
        router.fit(qtable, library)
    out = router.save_pretrained(args.out, overwrite=args.overwrite)
    summary = {"router": str(out), "experts": list(router.experts_), "rows": len(qtable), "mode": args.mode,
               "backend": "ray" if args.ray else "local",
               "epochs_run": len(router.history_),  # no validation split (a tiny table): best_val_loss null
               "best_val_loss": min((h["val_loss"] for h in router.history_ if "val_loss" in h), default=None)}
    if args.json:
        _print_json(summary)
    else:
        print(f"trained a {args.mode} router on {len(qtable)} prompts x {len(qtable.experts)} experts "
              f"({summary['epochs_run']} epochs); saved to {out}")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    if bool(args.prompt) == bool(args.input) or bool(args.input) != bool(args.out):
        raise ConfigurationError("give prompts as arguments, or --input FILE with --out FILE, not both")
    if args.input:
        from tryage.cli_measure import ray_options
        from tryage.bulk import route_file

        options = ray_options(args)
        written = route_file(_load_router(args), args.input, args.out, weights=_weights(args.weight),
                             column=args.column, backend="ray" if args.ray else "local", workers=options["workers"],
                             num_gpus=options["num_gpus"], address=options["address"], num_cpus=options["num_cpus"])
        if args.json:
            _print_json({"out": str(args.out), "decisions": written, "backend": "ray" if args.ray else "local"})
        else:
            print(f"routed {written} prompt(s) from {args.input}; decisions in {args.out}")
        return 0
    router = _load_router(args)
    prompts = args.prompt
    decisions = router.route_batch(prompts, weights=_weights(args.weight))
    if args.json:
        _print_json([d.to_dict() for d in decisions] if len(decisions) > 1 else decisions[0].to_dict())
        return 0
    for decision in decisions:
        print(f"prompt:  {decision.prompt}")
        if decision.flags:
            print(f"flags:   {', '.join(decision.flags)}")
        print(f"expert:  {decision.expert}")
        names = sorted({n for s in decision.scores for n in s.penalties})
        rows = [[s.expert + (" *" if s.expert == decision.expert else ""), s.predicted_loss,
                 *[s.penalties.get(n, 0.0) for n in names], s.total if s.eligible else None,
                 s.excluded_because or ""] for s in decision.scores]
        print(format_table(rows, ["expert", "predicted loss", *[f"{n} penalty" for n in names], "total", "excluded"]))
        print()
    return 0


def _table_and_predicted(args: argparse.Namespace):  # noqa: ANN202
    from tryage.qtable import QTable

    router = _load_router(args)
    table = QTable.from_file(args.qtable, on_invalid=getattr(args, "on_invalid", "raise"))
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

    router = _load_router(args)
    table = QTable.from_file(args.qtable, on_invalid=getattr(args, "on_invalid", "raise"))
    train = QTable.from_file(args.train) if args.train else None
    knn_fit = "train table" if train else "leave-one-out on the test table"
    most = len(train) if train else len(table) - 1  # leave-one-out leaves a row's own out
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
    report = evaluate_router(router, table, train=train, group_by=group_by, knn_k=args.knn_k,
                             weights=_weights(args.weight)).to_dict()
    report["knn"]["fit_on"] = knn_fit
    report["knn"]["k"] = args.knn_k
    report["best_single"]["chosen_on"] = "train table" if train else "the test table itself"
    if args.json:
        _print_json(report)
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
        _print_json(result)
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


def cmd_demo(args: argparse.Namespace) -> int:
    from tryage.demo import run_demo

    run_demo(Path(args.out), json_output=args.json, router=args.router)
    return 0


# -- parser ------------------------------------------------------------------------------------------

ROUTER_HELP = "saved router folder, or an embedded router: paper-domains (default) or open-llms"


def build_parser() -> argparse.ArgumentParser:
    from tryage.cli_measure import add_ray_arguments, register as register_measure

    parser = argparse.ArgumentParser(prog="tryage", description="Route prompts to the best expert model.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a perceptive predictor (the router's Q-function) on a Q-table")
    p.add_argument("--qtable", required=True, help="JSONL or CSV of prompts and per-expert losses or scores")
    p.add_argument("--experts", help="expert library JSON (metadata for constraints)")
    p.add_argument("--out", required=True, help="folder to save the router in (a new or empty folder, or a router)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out even if it is a file or a folder that is not a saved router")
    p.add_argument("--encoder", help="encoder folder or Hub id (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--mode", choices=("head", "finetune"), default="head")
    p.add_argument("--layers", choices=("last", "all"), default=None,
                   help="encoder pooling: last layer, or every layer concatenated (default: the router's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="maximum epochs (default: 300 head / 4 finetune, early stopped)")
    p.add_argument("--on-invalid", choices=("raise", "drop"), default="raise",
                   help="what to do with malformed Q-table rows")
    p.add_argument("--json", action="store_true")
    add_ray_arguments(p)   # --ray: the prompts are encoded by a Ray actor pool, the head trains here
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("route", help="choose the expert for one or more prompts")
    p.add_argument("prompt", nargs="*", help="prompt text; may contain [Flag: ...]")
    p.add_argument("--router", help=ROUTER_HELP)
    p.add_argument("--experts", help="expert library JSON whose metadata overrides the router's")
    p.add_argument("--weight", action="append", metavar="NAME=NUMBER", help="constraint weight, e.g. size=0.5")
    p.add_argument("--input", help="JSONL of prompts ({\"prompt\", \"id\"?} per line) to route in bulk")
    p.add_argument("--column", default="prompt", help="field of --input holding the prompt")
    p.add_argument("--out", help="JSONL of decisions for --input, one per line in input order")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="run the encoder in PyTorch or in ONNX Runtime (same choices, faster on a CPU; tryage[onnx])")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_route)
    add_ray_arguments(p)

    for name, func, text in (("evaluate", cmd_evaluate, "measure a router against oracle and baselines"),
                             ("pareto", cmd_pareto, "sweep a constraint weight and trace quality against it")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--router", help=ROUTER_HELP)
        p.add_argument("--qtable", required=True, help="test Q-table (JSONL or CSV)")
        p.add_argument("--experts", help="expert library JSON whose metadata overrides the router's")
        p.add_argument("--json", action="store_true")
        if name == "evaluate":
            p.add_argument("--train", help="training Q-table: picks the best single expert and fits the kNN")
            p.add_argument("--group-by", help="extra field for per-group results (default: task or domain)")
            p.add_argument("--knn-k", type=int, default=50)
            p.add_argument("--weight", action="append", metavar="NAME=NUMBER")
        else:
            p.add_argument("--constraint", default="size", help="constraint to sweep (size, cost, recency, ...)")
            p.add_argument("--out", help="write the front as a PNG here")
        p.set_defaults(func=func)

    register_measure(sub)

    p = sub.add_parser("demo", help="route sample prompts with the embedded default and draw its Pareto front")
    p.add_argument("--router", choices=("paper-domains", "open-llms"), default="paper-domains",
                   help="embedded router to demonstrate (default: paper-domains)")
    p.add_argument("--out", default="tryage-demo", help="folder for the demo's PNG and JSON")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    try:
        from tryage import cli_discover
    except ImportError:  # pragma: no cover - the module ships with the package
        cli_discover = None
    if cli_discover is not None:
        cli_discover.register(sub)
    from tryage.cli_collect import register as register_collect  # tryage collect, tryage score
    register_collect(sub)
    from tryage import cli_update

    cli_update.register(sub)
    return parser


def _quiet_model_loading() -> None:
    """Keep transformers' weight-loading bars and notices off the terminal: the CLI shows its own."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    else:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_model_loading()
    try:
        return int(args.func(args) or 0)
    except TryageError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"tryage: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the file system refused (a read-only folder, a full disk, a folder given as a file)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"tryage: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tryage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
