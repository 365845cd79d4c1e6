"""``tryage collect`` and ``tryage score``: build a Q-table from your models and prompts.

::

    tryage collect --prompts prompts.jsonl --experts experts.json --scorer exact --out q.jsonl --budget 2
    tryage collect ... --dry-run                      # list the calls and their estimated cost
    tryage collect ... --ray --workers 2              # one pool of 2 Ray actors per expert
    tryage score --log q.calls.jsonl --prompts prompts.jsonl --scorer contains --out q2.jsonl

``tryage.cli`` calls :func:`register` with its sub-parsers. Bad input raises
:class:`~tryage.errors.TryageError` subclasses, which the CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from tryage.cli._common import add_ray_arguments, existing_file, format_table, print_json, ray_options, stdin_file
from tryage.errors import ConfigurationError


def register(subparsers: Any) -> None:
    """Add ``collect`` and ``score`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    from tryage.collect.scorers import NAMES

    p = subparsers.add_parser(
        "collect", help="call every expert on every prompt, score the answers, write a Q-table",
        description="Call each expert of --experts on each prompt of --prompts (async, retried, rate limited, "
                    "within --budget), log every call, score the answers and write a Q-table that `tryage train` "
                    "reads. A killed run resumes from the call log without repeating a logged call. API keys are "
                    "read from the environment only.")
    p.add_argument("--prompts", required=True, help="JSONL or CSV with 'prompt' and optional id, reference, choices, "
                                                    "task ('-': JSONL from stdin)")
    p.add_argument("--experts", required=True, help="experts JSON: entries with 'model' (provider:id) or 'hf' (folder)")
    p.add_argument("--scorer", required=True, metavar="NAME", help=f"one of: {', '.join(NAMES)}")
    p.add_argument("--out", required=True, help="the Q-table JSONL to write")
    p.add_argument("--log", help="call log (default: <out stem>.calls.jsonl beside --out)")
    p.add_argument("--library-out", help="expert library JSON with measured cost and latency (default: <out stem>.experts.json)")
    p.add_argument("--budget", type=float, metavar="USD", help="stop before spend would pass this many USD")
    p.add_argument("--dry-run", action="store_true", help="list the calls and their estimated cost; call nothing")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="calls in flight per expert (default: 4)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds per attempt (default: 60)")
    p.add_argument("--retries", type=int, default=3, metavar="N", help="retries of a transient error (default: 3)")
    _scorer_options(p)
    _metric_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    add_ray_arguments(p)  # --ray: one Ray actor pool of --workers actors per expert; this process logs
    p.set_defaults(func=run_collect)

    p = subparsers.add_parser(
        "score", help="re-score the answers of a call log into a Q-table, calling no expert",
        description="Score the answers logged by `tryage collect` again (another scorer, fixed references) "
                    "and write a Q-table; no expert model is called.")
    p.add_argument("--log", required=True, help="the call log of an earlier `tryage collect`")
    p.add_argument("--prompts", required=True, help="the prompts file (its references are scored against; '-': stdin)")
    p.add_argument("--scorer", required=True, metavar="NAME", help=f"one of: {', '.join(NAMES)}")
    p.add_argument("--out", required=True, help="the Q-table JSONL to write")
    p.add_argument("--experts", help="experts JSON: keep these experts at their current settings (default: all in the log)")
    p.add_argument("--library-out", help="expert library JSON (default: <out stem>.experts.json)")
    _scorer_options(p)
    _metric_options(p)
    p.add_argument("--budget", type=float, metavar="USD", help="stop before the judge's spend would pass this many USD")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run_score)


def _scorer_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("scorer options")
    group.add_argument("--scorer-map", metavar="JSON", help="task -> scorer name, as a JSON object or a JSON file, "
                       "e.g. '{\"math\": \"numeric\", \"quiz\": \"yes-no\"}'; a prompt's own \"scorer\" field wins, "
                       "--scorer scores the rest")
    group.add_argument("--pattern", help="regular expression of --scorer regex (default: each prompt's reference)")
    group.add_argument("--judge-model", metavar="PROVIDER:ID", help="chat model of --scorer judge, e.g. openai:gpt-4o-mini")
    group.add_argument("--judge-kwargs", metavar="JSON", default="{}", help="init_chat_model keyword arguments of the judge")
    group.add_argument("--judge-input-price", type=float, metavar="USD",
                       help="the judge's price per 1M input tokens (with --budget, both prices are needed: judge calls count)")
    group.add_argument("--judge-output-price", type=float, metavar="USD", help="the judge's price per 1M output tokens")
    group.add_argument("--rubric", help="the judge's instructions (default: a correctness rubric ending in 'SCORE: <0..1>')")


def _metric_options(p: argparse.ArgumentParser) -> None:
    from tryage.cli.metrics import add_check_arguments

    p.add_argument("--metrics", metavar="NAME,NAME", help="also measure these answer metrics into the expert library "
                                                          "(verbosity, readability, safety, hallucination; see tryage metrics)")
    add_check_arguments(p)


def _check_metric_names(args: argparse.Namespace) -> None:
    """Refuse an unknown --metrics name before any expert is called."""
    if args.metrics:
        from tryage.collect.metrics import check_metrics

        check_metrics(args.metrics)


def _measure(args: argparse.Namespace, result: Any, summary: dict[str, Any]) -> None:
    """With --metrics: the answer metrics of the run's log, merged into the library it wrote."""
    if not args.metrics:
        return
    from tryage.cli.metrics import checks, summary as metric_rows
    from tryage.collect.metrics import check_metrics, measure_metrics

    names = check_metrics(args.metrics)
    args.log = str(result.log)
    library = measure_metrics(result.log, prompts=args.prompts, metrics=names, out=result.library_path,
                              budget=args.budget, **checks(args))
    summary["metrics"] = metric_rows(library, names)


def _scorer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from tryage.collect.scorers import DEFAULT_RUBRIC

    judge = None
    if args.scorer == "judge" and args.judge_model:
        from tryage.collect.backends import ExpertSpec

        try:
            kwargs = json.loads(args.judge_kwargs)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"--judge-kwargs must be a JSON object, got {args.judge_kwargs!r} ({exc.msg})") from None
        if not isinstance(kwargs, dict):
            raise ConfigurationError(f"--judge-kwargs must be a JSON object, got {args.judge_kwargs!r}")
        judge = ExpertSpec("judge", model=args.judge_model, model_kwargs=kwargs, input_cost=args.judge_input_price,
                           output_cost=args.judge_output_price)
    return {"pattern": args.pattern, "judge": judge, "rubric": args.rubric or DEFAULT_RUBRIC,
            "scorer_map": _scorer_map(args.scorer_map)}


def _scorer_map(value: str | None) -> dict[str, str] | None:
    """``--scorer-map``: a JSON object, or the path of a JSON file holding one."""
    if value is None:
        return None
    text = value
    if not value.lstrip().startswith("{"):
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"--scorer-map: {value!r} is neither a JSON object nor a readable JSON file "
                                     f"({type(exc).__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--scorer-map must be a JSON object of task -> scorer name ({exc.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigurationError(f"--scorer-map must be a JSON object of task -> scorer name, got {text.strip()[:80]!r}")
    return data


def _summary(result: Any) -> dict[str, Any]:
    table = result.qtable
    experts = []
    for j, name in enumerate(table.experts):
        mine = [r for r in result.records if r.expert == name]
        experts.append({"expert": name, "mean_score": float(table.scores[:, j].mean()),
                        "mean_cost": statistics.fmean(r.cost for r in mine) if mine else None,
                        "mean_latency_s": statistics.fmean(r.latency_s for r in mine) if mine else None,
                        "total_cost": sum(r.cost for r in mine)})
    return {"out": str(result.out), "log": str(result.log), "library": str(result.library_path), "rows": len(table),
            "incomplete": list(result.incomplete), "calls_made": result.made, "calls_cached": result.cached,
            "errors": result.errors, "spent": result.spent, "judge_spent": result.judge_spent, "skipped_experts": dict(result.skipped_experts),
            "experts": experts}


def _usd(value: float | None) -> str | None:
    return None if value is None else f"{value:.6f}"


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    rows = [[e["expert"], e["mean_score"], _usd(e["mean_cost"]), e["mean_latency_s"], _usd(e["total_cost"])]
            for e in summary["experts"]]
    print(format_table(rows, ["expert", "mean score", "mean cost (USD)", "mean latency (s)", "cost of rows (USD)"]))
    print(f"{summary['rows']} rows written to {summary['out']} (expert library: {summary['library']}); "
          f"calls made {summary['calls_made']}, from the log {summary['calls_cached']}, errors {summary['errors']}, "
          f"spent ${summary['spent']:.6f}" + (f" (the judge ${summary['judge_spent']:.6f})" if summary["judge_spent"] else ""))
    if summary["incomplete"]:
        print(f"{len(summary['incomplete'])} prompt(s) left out: some expert has no answer (see {summary['log']}), "
              f"e.g. {summary['incomplete'][0]!r}")
    for name, error in summary["skipped_experts"].items():
        print(f"expert {name!r} stopped after an authentication error: {error}")
    if summary.get("metrics"):
        from tryage.cli.metrics import print_summary

        print_summary(summary["metrics"], tuple(k for k in summary["metrics"][0] if k != "expert"), summary["library"])


def run_collect(args: argparse.Namespace) -> int:
    from tryage.collect import collect
    from tryage.collect.pipeline import DryRun

    existing_file(args.experts, "experts file")
    existing_file(args.prompts, "prompts file")
    args.prompts = stdin_file(args.prompts, suffix=".jsonl")
    _check_metric_names(args)
    ray = ray_options(args)
    if ray["num_gpus"]:
        raise ConfigurationError(f"--num-gpus does not apply to collect (its Ray actors call APIs), got {args.num_gpus}")
    on_ray = {"backend": "ray", "address": ray["address"], "workers": ray["workers"],
              "num_cpus": ray["num_cpus"]} if args.ray else {}
    result = collect(args.prompts, args.experts, scorer=args.scorer, out=args.out, log=args.log,
                     library_out=args.library_out, budget=args.budget, dry_run=args.dry_run,
                     concurrency=args.concurrency, timeout=args.timeout, retries=args.retries,
                     progress=None if not args.json else False, **on_ray, **_scorer_kwargs(args))
    if isinstance(result, DryRun):
        if args.json:
            print_json({"calls": [c.__dict__ for c in result.calls], "cached": result.cached,
                        "judge_calls": result.judge_calls, "judge_cost": result.judge_cost,
                        "estimated_cost": result.estimated_cost})
            return 0
        rows = [[c.prompt_id, c.expert, c.input_tokens, c.output_tokens, _usd(c.cost)] for c in result.calls]
        if rows:
            print(format_table(rows, ["prompt id", "expert", "input tokens (est.)", "output tokens (est.)", "cost (USD, est.)"]))
        judged = f", {result.judge_calls} judge call(s) ${result.judge_cost:.6f}" if args.scorer == "judge" else ""
        print(f"{len(result.calls)} call(s) to make, {result.cached} in the log already{judged}; "
              f"estimated cost ${result.estimated_cost:.6f}" + (f" (budget ${args.budget:.6f})" if args.budget is not None else ""))
        return 0
    summary = _summary(result)
    _measure(args, result, summary)
    _print(summary, args.json)
    return 0


def run_score(args: argparse.Namespace) -> int:
    from tryage.collect import score

    existing_file(args.log, "call log")
    existing_file(args.prompts, "prompts file")
    existing_file(args.experts, "experts file")
    args.prompts = stdin_file(args.prompts, suffix=".jsonl")
    _check_metric_names(args)
    result = score(args.log, args.prompts, scorer=args.scorer, out=args.out, experts=args.experts,
                   library_out=args.library_out, budget=args.budget, progress=None if not args.json else False,
                   **_scorer_kwargs(args))
    summary = _summary(result)
    _measure(args, result, summary)
    _print(summary, args.json)
    return 0


__all__ = ["register", "run_collect", "run_score"]
