"""``tryage metrics``: answer metrics (verbosity, readability, safety, hallucination) from a call log.

::

    tryage metrics --log q.calls.jsonl --out q.experts.json                      # verbosity, readability
    tryage metrics --log q.calls.jsonl --out q.experts.json --metric safety --unsafe-words "bomb,poison"
    tryage metrics --log q.calls.jsonl --prompts prompts.jsonl --out q.experts.json \\
        --metric hallucination --hallucination-judge openai:gpt-4o-mini --metric-judge-input-price 0.15 --metric-judge-output-price 0.6

The metrics land in the expert library ``--out`` (merged into it when it exists), where the constraints
of the same names read them: ``[Flag: shortest answer]``, ``[Flag: safest]``, ``[Flag: max unsafe 1%]``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tryage.cli._common import format_table, print_json
from tryage.errors import ConfigurationError
from tryage.experts import METRICS, MIN_METRIC_ANSWERS


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    """The options that choose the checks behind ``safety`` and ``hallucination`` (shared with collect/score)."""
    group = p.add_argument_group("metric checks")
    group.add_argument("--unsafe-words", metavar="WORD,WORD", help="safety: flag answers containing any of these words")
    group.add_argument("--safety-judge", metavar="PROVIDER:ID", help="safety: a judge chat model with a safety rubric")
    group.add_argument("--hallucination-judge", metavar="PROVIDER:ID",
                       help="hallucination: a judge chat model with a faithfulness rubric")
    group.add_argument("--metric-judge-input-price", type=float, metavar="USD", help="those judges' price per 1M input tokens")
    group.add_argument("--metric-judge-output-price", type=float, metavar="USD", help="those judges' price per 1M output tokens")


def checks(args: argparse.Namespace) -> dict[str, Any]:
    """``safety`` and ``hallucination`` checks from the options of :func:`add_check_arguments`."""
    from tryage.collect.judge import Judge, judge_log_path
    from tryage.collect.metrics import HALLUCINATION_RUBRIC, SAFETY_RUBRIC, KeywordCheck

    def judge(model: str | None, rubric: str) -> Judge | None:
        if model is None:
            return None
        entry = {"model": model, "input_price": args.metric_judge_input_price,
                 "output_price": args.metric_judge_output_price}
        return Judge(entry, rubric=rubric, log=judge_log_path(args.log) if args.log else None)

    if args.unsafe_words and args.safety_judge:
        raise ConfigurationError("give --unsafe-words or --safety-judge, not both")
    safety = KeywordCheck(args.unsafe_words.split(",")) if args.unsafe_words else judge(args.safety_judge, SAFETY_RUBRIC)
    return {"safety": safety, "hallucination": judge(args.hallucination_judge, HALLUCINATION_RUBRIC)}


def summary(library: Any, metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"expert": e.name, **{m: None if m not in e.metrics else e.metrics[m].to_dict() for m in metrics}}
            for e in library]


def print_summary(rows: list[dict[str, Any]], metrics: tuple[str, ...], out: Any) -> None:
    def cell(entry: dict[str, Any] | None) -> str:
        if entry is None:
            return "missing"
        err = "" if entry["stderr"] is None else f" ± {entry['stderr']:.3g}"
        few = " (too few)" if entry["count"] < MIN_METRIC_ANSWERS else ""
        return f"{entry['mean']:.4g}{err} (n={entry['count']}){few}"

    print(format_table([[r["expert"], *(cell(r[m]) for m in metrics)] for r in rows], ["expert", *metrics]))
    print(f"wrote {out}" if out else "")


def run_metrics(args: argparse.Namespace) -> int:
    from tryage.collect.metrics import check_metrics, measure_metrics

    metrics = check_metrics(args.metric) if args.metric else check_metrics(None)
    library = measure_metrics(args.log, prompts=args.prompts, metrics=metrics, library=args.experts, out=args.out,
                              budget=args.budget, **checks(args))
    rows = summary(library, metrics)
    if args.json:
        print_json({"out": args.out, "metrics": list(metrics), "experts": rows})
    else:
        print_summary(rows, metrics, args.out)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("metrics", help="measure answer metrics (verbosity, readability, safety, hallucination) "
                                       "from a call log into an expert library",
                       description="Read the answers `tryage collect` logged (no expert is called) and write each "
                                   "expert's mean, count and standard error of each metric into the expert library, "
                                   f"where the constraints of the same names read them. Metrics: {', '.join(METRICS)}.")
    p.add_argument("--log", required=True, help="the call log of `tryage collect`")
    p.add_argument("--out", required=True, help="expert library JSON to write (merged into when it exists)")
    p.add_argument("--prompts", help="the prompts file (needed by hallucination: each row's context or reference)")
    p.add_argument("--experts", help="expert library JSON to add the metrics to (default: --out when it exists)")
    p.add_argument("--metric", action="append", metavar="NAME",
                   help=f"a metric to measure, repeatable: {', '.join(METRICS)} (default: verbosity and readability)")
    p.add_argument("--budget", type=float, metavar="USD", help="stop before the judges' spend would pass this many USD")
    add_check_arguments(p)
    p.add_argument("--json", action="store_true", help="print the measured metrics as JSON")
    p.set_defaults(func=run_metrics)


__all__ = ["add_check_arguments", "checks", "register", "run_metrics"]
