"""``tryage route``: choose the expert for prompts given as arguments, or for a JSONL file in bulk."""

from __future__ import annotations

import argparse
from typing import Any

from tryage._io import check_distinct_files
from tryage.cli._common import (P_CORRECT, PREDICTED_LOSS, ROUTER_HELP, add_ray_arguments, check_route_arguments,
                                existing_file, format_table, load_router, predicts_chance, print_json, ray_options,
                                stdin_file, stdin_lines)
from tryage.errors import ConfigurationError


def cmd_route(args: argparse.Namespace) -> int:
    prompts = stdin_lines() if args.prompt == ["-"] else args.prompt
    if bool(prompts) == bool(args.input) or bool(args.input) != bool(args.out):
        raise ConfigurationError("give prompts as arguments ('-': one a line from stdin), or --input FILE with "
                                 "--out FILE, not both")
    if args.input:
        check_distinct_files({"--out": args.out}, {"--input": args.input})
        from tryage.scale.bulk import route_file

        if args.min_quality is not None:
            raise ConfigurationError("--min-quality applies to prompts given as arguments; in an --input file, "
                                     "write [Flag: min quality 0.8] into the prompts")
        existing_file(args.input, "prompts file")
        given = check_route_arguments(args)  # before the router loads: files, weights, metadata
        options = ray_options(args)
        source = stdin_file(args.input)
        written = route_file(load_router(args), source, args.out, weights=given,
                             column=args.column, backend="ray" if args.ray else "local", workers=options["workers"],
                             num_gpus=options["num_gpus"], address=options["address"], num_cpus=options["num_cpus"])
        if args.json:
            print_json({"out": str(args.out), "decisions": written, "backend": "ray" if args.ray else "local"})
        else:
            print(f"routed {written} prompt(s) from {'stdin' if args.input == '-' else args.input}; "
                  f"decisions in {args.out}")
        return 0
    given = check_route_arguments(args, prompts)  # flags, weights and files, before the router loads
    ray_options(args)
    router = load_router(args)
    decisions = router.route_batch(prompts, weights=given, min_quality=args.min_quality)
    if args.json:
        print_json([d.to_dict() for d in decisions] if len(decisions) > 1 else decisions[0].to_dict())
        return 0
    chance = predicts_chance(router)
    for decision in decisions:
        print(f"prompt:  {decision.prompt}")
        if decision.flags:
            print(f"flags:   {', '.join(decision.flags)}")
        print(f"expert:  {decision.expert}")
        if decision.floor_met is not None:
            print(f"floor:   P(correct) >= {decision.min_quality:g} " + (
                "met" if decision.floor_met else "reached by no expert: the best predicted was chosen"))
        names = sorted({n for s in decision.scores for n in s.penalties})
        floor = decision.floor_met is not None
        rows = [[s.expert + (" *" if s.expert == decision.expert else ""), s.predicted_loss,
                 *([s.quality] if floor else [1.0 - s.predicted_loss] if chance else []),
                 *[s.penalties.get(n, 0.0) for n in names], s.total if s.eligible else None,
                 s.excluded_because or ""] for s in decision.scores]
        print(format_table(rows, ["expert", PREDICTED_LOSS, *([P_CORRECT] if floor or chance else []),
                                  *[f"{n} penalty" for n in names], "total", "excluded"]))
        print()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("route", help="choose the expert for one or more prompts")
    p.add_argument("prompt", nargs="*", help="prompt text; may contain [Flag: ...]; '-' reads one prompt a line "
                                             "from stdin")
    p.add_argument("--router", help=ROUTER_HELP)
    p.add_argument("--experts", help="expert library JSON whose metadata overrides the router's")
    p.add_argument("--weight", action="append", metavar="NAME=NUMBER", help="constraint weight, e.g. size=0.5")
    p.add_argument("--min-quality", type=float, metavar="P",
                   help="quality floor in [0, 1]: among experts whose P(correct) reaches it, the weights decide")
    p.add_argument("--input", help="JSONL of prompts ({\"prompt\", \"id\"?} per line) to route in bulk ('-': stdin)")
    p.add_argument("--column", default="prompt", help="field of --input holding the prompt")
    p.add_argument("--out", help="JSONL of decisions for --input, one per line in input order")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="run the encoder in PyTorch or in ONNX Runtime (same choices, faster on a CPU; tryage[onnx])")
    p.add_argument("--json", action="store_true", help="print the decisions as JSON")
    p.set_defaults(func=cmd_route)
    add_ray_arguments(p)
