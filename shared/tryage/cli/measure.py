"""``tryage measure``: run local expert models over passages and append their losses to a rows file.

::

    tryage measure --passages passages.jsonl --model gpt2=models/gpt2 --model models/opt --out rows.jsonl
    tryage measure ... --ray --workers 2              # one pool of 2 Ray actors per expert, local Ray
    tryage measure ... --ray --address head:6379 --num-gpus 1

Pairs already in ``--out`` are skipped, so the same command resumes an interrupted run, with or
without ``--ray``. ``--qtable`` also writes the Q-table of the passages every expert has measured.
:func:`register` adds the sub-command to the parser of :mod:`tryage.cli`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tryage._io import check_distinct_files
from tryage.cli._common import add_ray_arguments, existing_file, print_json, ray_options
from tryage.errors import ConfigurationError, TryageFileNotFoundError


def _models(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name, path = (name.strip(), path.strip()) if sep else (Path(item).name, item)
        if not name or not path:
            raise ConfigurationError(f"--model takes PATH or NAME=PATH, got {item!r}")
        if name in out:
            raise ConfigurationError(f"two --model options are named {name!r}; name them NAME=PATH")
        out[name] = path
    return out


def cmd_measure(args: argparse.Namespace) -> int:
    from tryage.measure import LossRecorder, assemble_qtable, load_passages, measure_losses

    options = ray_options(args)
    check_distinct_files({"--out": args.out, "--qtable": args.qtable}, {"--passages": args.passages})
    models = _models(args.model)
    existing_file(args.passages, "passages file")
    for name, path in models.items():
        if not Path(path).is_dir():
            raise TryageFileNotFoundError(f"--model {name}={path}: model folder not found")
    passages = load_passages(args.passages, splits=args.split or None)
    settings = {"task": args.task, "batch_size": args.batch_size, "max_length": args.max_length,
                "dtype": args.dtype, "seed": args.seed, "progress": not args.json}
    if args.ray:
        from tryage.scale.distributed import measure_pools

        written = measure_pools(models, passages, args.out, **settings, **options)
    else:
        written = sum(measure_losses(path, passages, args.out, name=name, **settings) for name, path in models.items())
    rows = LossRecorder(args.out).rows()
    ids = {p.id for p in passages}
    counts = {name: sum(1 for r in rows if r["expert"] == name and r["id"] in ids) for name in models}
    summary: dict[str, Any] = {"out": str(args.out), "backend": "ray" if args.ray else "local",
                               "passages": len(passages), "written_now": written, "rows_per_expert": counts}
    if args.qtable:
        table = assemble_qtable(rows, passages, experts=list(models), task=args.task)
        summary["qtable"] = str(table.to_jsonl(args.qtable))
        summary["qtable_rows"] = len(table)
    if args.json:
        print_json(summary)
    else:
        print(f"measured {written} new row(s) on {summary['backend']}; {args.out} has "
              + ", ".join(f"{n}: {c}/{len(passages)}" for n, c in counts.items())
              + (f"; Q-table of {summary['qtable_rows']} passages in {summary['qtable']}" if args.qtable else ""))
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``measure`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    from tryage.measure import DTYPES, TASKS

    p = subparsers.add_parser("measure", help="measure local expert models' losses on passages (resumable)",
                              description="Append one row per passage and expert to --out; rows already there "
                                          "are skipped, so rerunning resumes.")
    p.add_argument("--passages", required=True, help="JSONL of {text, domain?, split?, id?}")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]PATH",
                   help="local model folder (repeat for several experts)")
    p.add_argument("--out", required=True, help="rows file (JSONL, appended to)")
    p.add_argument("--qtable", help="also write the Q-table of the passages every expert has measured (JSONL)")
    p.add_argument("--task", choices=TASKS, default="causal", help="loss measured: causal LM or masked LM (default: causal)")
    p.add_argument("--split", action="append", help="keep only passages of this split (repeatable)")
    p.add_argument("--batch-size", type=int, default=16, help="passages per forward pass (default: 16)")
    p.add_argument("--max-length", type=int, default=128, help="tokens kept per passage (default: 128)")
    p.add_argument("--dtype", choices=DTYPES, default="auto", help="weights' dtype (default: auto, the model's own)")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks (task masked)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_ray_arguments(p)
    p.set_defaults(func=cmd_measure)
    return p


__all__ = ["cmd_measure", "register"]
