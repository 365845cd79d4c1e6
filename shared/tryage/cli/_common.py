"""What every ``tryage`` sub-command shares: the router argument, weights, Ray options, JSON and tables.

One convention: a sub-command is a module of this package with ``register(subparsers)``; it prints a
table for people (:func:`format_table`) and, with ``--json``, one strict JSON document (:func:`print_json`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from tryage.errors import ConfigurationError, check_scalar

ROUTER_HELP = "saved router folder, or an embedded router: paper-domains (default) or open-llms"

EXIT_USAGE = 2


def weights(items: Sequence[str] | None) -> dict[str, float]:
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


def print_json(data: Any, *, file: TextIO | None = None) -> None:
    """``data`` as one strict JSON document (NaN and infinities as ``null``) on stdout or ``file``."""
    print(json.dumps(_finite(data), indent=2, ensure_ascii=False, default=str, allow_nan=False),
          file=file or sys.stdout)


def router_by_name_or_folder(router: str | None, runtime: str = "torch"):  # noqa: ANN202
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


def load_router(args: argparse.Namespace):  # noqa: ANN202
    from tryage.router import TryageRouter

    router = router_by_name_or_folder(args.router, getattr(args, "runtime", "torch"))
    if getattr(args, "experts", None):
        from tryage.experts import ExpertLibrary

        given = ExpertLibrary.from_json(args.experts)
        known = [e for e in given if e.name in router.library]
        if not known:
            raise ConfigurationError(f"{args.experts} describes none of the router's experts {list(router.experts)}")
        router = TryageRouter(router.predictor, router.library.merge(known), constraints=router.constraints)
    return router


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray``, ``--address``, ``--num-cpus``, ``--workers``, ``--num-gpus`` (shared with ``route``)."""
    group = parser.add_argument_group("Ray (pip install 'tryage[ray]')")
    group.add_argument("--ray", action="store_true", help="run on Ray: one actor pool per expert / router / encoder")
    group.add_argument("--address", help="Ray cluster to join (default: start a local Ray instance)")
    group.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    group.add_argument("--workers", type=int, default=None, help="actors per pool (default: 1)")
    group.add_argument("--num-gpus", type=float, default=None, help="GPUs per actor (default: 0)")


def ray_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Ray settings of ``args``; an error when they are given without ``--ray``."""
    given = [f"--{n.replace('_', '-')}" for n in ("address", "num_cpus", "workers", "num_gpus")
             if getattr(args, n) is not None]
    if given and not args.ray:
        raise ConfigurationError(f"{', '.join(given)} only apply with --ray")
    for name, kind, low in (("workers", int, 1), ("num_cpus", int, 1), ("num_gpus", float, 0)):
        if getattr(args, name) is not None:  # --num-gpus nan is a float to argparse
            check_scalar(getattr(args, name), f"--{name.replace('_', '-')}", kind=kind, low=low)
    if args.ray:  # the CLI shows its own progress; Ray Data's per-operator INFO lines would drown it
        import logging

        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return {"address": args.address, "num_cpus": args.num_cpus, "workers": args.workers or 1,
            "num_gpus": args.num_gpus or 0.0}


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned columns under a dashed rule; floats with 4 decimals, ``None`` as ``-``."""
    cells = [[str(c) for c in header]] + [[format_cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)
