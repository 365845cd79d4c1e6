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

#: What ``route`` and ``demo`` call the predictor's output, and, for a router trained on scores
#: (correct = 1), the chance of a correct answer it implies (1 - predicted loss).
PREDICTED_LOSS, P_CORRECT = "predicted loss", "P(correct)"


def predicts_chance(router: Any) -> bool:
    """Whether ``router`` was trained on scores in [0, 1], so that 1 - its predicted loss is P(correct)."""
    return getattr(getattr(router, "predictor", None), "objective_", None) == "bce"


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


# -- files and stdin -----------------------------------------------------------------------------
def existing_file(path: str | None, what: str) -> str | None:
    """``path`` when it is a file (or ``-``: stdin), checked before any model loads; ``None`` stays ``None``."""
    from tryage.errors import TryageFileNotFoundError

    if path is None or path == "-":
        return path
    if not Path(path).is_file():
        raise TryageFileNotFoundError(f"{what} not found: {path}" + (" (it is a folder)" if Path(path).is_dir() else ""))
    return path


def stdin_lines() -> list[str]:
    """The non-blank lines of stdin: ``tryage route -`` routes each line as a prompt."""
    lines = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not lines:
        raise ConfigurationError("'-' reads the prompts from stdin, one a line, but stdin was empty")
    return lines


def stdin_file(path: str | None, *, suffix: str = ".jsonl") -> str | None:
    """``-``: stdin copied to a temporary file (removed at exit) for readers that take a path; else ``path``."""
    if path != "-":
        return path
    import atexit
    import tempfile

    data = sys.stdin.buffer.read()
    if not data.strip():
        raise ConfigurationError("'-' reads the file from stdin, but stdin was empty")
    handle = tempfile.NamedTemporaryFile(prefix="tryage-stdin-", suffix=suffix, delete=False)  # noqa: SIM115
    with handle:
        handle.write(data)
    atexit.register(Path(handle.name).unlink, missing_ok=True)
    return handle.name


def router_experts_file(router: str | None) -> Path:
    """The ``experts.json`` of ``--router`` (a folder or an embedded name), found without loading the router."""
    from tryage.defaults import EMBEDDED_ROUTERS, default_router_path
    from tryage.errors import TryageFileNotFoundError

    if router is None or (router in EMBEDDED_ROUTERS and not Path(router).is_dir()):
        return default_router_path(router) / "experts.json"
    if not Path(router).is_dir():
        raise TryageFileNotFoundError(f"router folder not found: {router} (nor is it an embedded router: "
                                      f"{', '.join(EMBEDDED_ROUTERS)})")
    return Path(router) / "experts.json"


def check_route_arguments(args: argparse.Namespace, prompts: Sequence[str] = ()) -> dict[str, float]:
    """Everything a routing command can check before the router loads: files, weights, each prompt's flags.

    Returns the ``--weight`` mapping. Flags and weights are checked against the router folder's
    ``experts.json`` (merged with ``--experts``) and the default constraints, as routing would.
    """
    from tryage.experts import ExpertLibrary
    from tryage.router import check_prompts

    existing_file(getattr(args, "experts", None), "expert library")
    given = weights(getattr(args, "weight", None))
    library_file = router_experts_file(args.router)
    if not library_file.is_file():
        return given  # an older router folder: the router's own loading reports it
    library = ExpertLibrary.from_json(library_file)
    if getattr(args, "experts", None):
        known = [e for e in ExpertLibrary.from_json(args.experts) if e.name in library]
        if not known:
            raise ConfigurationError(f"{args.experts} describes none of the router's experts {list(library.names)}")
        library = library.merge(known)
    check_prompts(prompts or ["-"], library, weights=given)
    return given


# -- one config file for every command -----------------------------------------------------------
#: Config keys whose values name files, read relative to the config file's folder (as serve does).
PATH_KEYS = frozenset({"router", "experts", "qtable", "train", "prompts", "input", "out", "log", "library_out",
                       "feedback", "passages", "reference", "encoder", "overrides", "cache_dir", "out_dir"})
_NOT_KEYS = frozenset({"help", "config", "func", "version", "command"})


def config_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The config-file keys of one sub-command: its options' ``dest`` names (``--knn-k`` is ``knn_k``)."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest not in _NOT_KEYS}


def _config_argument(argv: Sequence[str]) -> str | None:
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--config="):
            return token.partition("=")[2]
    return None


def apply_config(commands: dict[str, argparse.ArgumentParser], argv: list[str]) -> tuple[list[str], set[str]]:
    """``argv`` with the settings of ``--config FILE`` put in front of the command line's own flags (which win).

    The file (TOML, or YAML with PyYAML) holds keys shared by every command that has the option at
    its top, and one table per command (``[train]``, ``[route]``, ``[serve]``, ...) whose keys win
    over the top ones. Keys are option names (``knn-k`` or ``knn_k``); an unknown key is a one-line
    error naming the allowed ones. ``serve`` reads its table itself (:mod:`tryage.serve.config`);
    returned beside ``argv`` are the keys it leaves to the other commands.
    """
    from tryage._io import read_settings
    from tryage.serve.config import ServeConfig

    path = _config_argument(argv)
    command = next((t for t in argv if t in commands), None)
    if path is None or command is None:
        return argv, set()
    data = read_settings(path)
    keys = {name: config_keys(p) for name, p in commands.items()}
    every = sorted(set().union(*keys.values()))
    top = {k: v for k, v in data.items() if k not in commands}
    unknown = sorted(set(top) - set(every) - set(ServeConfig.keys()))
    if unknown:
        raise ConfigurationError(f"{path}: unknown key(s) {unknown}; allowed at the top: the options of any command "
                                 f"({', '.join(every)}) or a table per command ({', '.join(commands)})")
    for name in (n for n in commands if n in data):
        section = data[name]
        if not isinstance(section, dict):
            raise ConfigurationError(f"{path}: [{name}] must be a table of {name}'s settings, got {section!r:.60}")
        if name == "serve":
            continue  # serve checks its own keys (tryage.serve.config)
        bad = sorted({str(k).replace("-", "_") for k in section} - set(keys[name]))
        if bad:
            raise ConfigurationError(f"{path}: unknown key(s) {bad} in [{name}]; allowed: {', '.join(sorted(keys[name]))}")
    elsewhere = (set(commands) | set(every)) - {"serve"}
    if command == "serve":
        return argv, elsewhere
    mine = {k: v for k, v in top.items() if k in keys[command]}
    mine.update({str(k).replace("-", "_"): v for k, v in data.get(command, {}).items()})
    tokens = [t for key, value in mine.items() for t in _tokens(keys[command][key], key, value, Path(path))]
    at = argv.index(command) + 1
    return [*argv[:at], *tokens, *argv[at:]], elsewhere


def _tokens(action: argparse.Action, key: str, value: Any, source: Path) -> list[str]:
    """A config value as the command-line tokens argparse reads (its types, choices and errors apply)."""
    flag = max(action.option_strings, key=len)
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)):
        if not isinstance(value, bool):
            raise ConfigurationError(f"{source}: {key} is a switch: true or false, got {value!r:.60}")
        return [flag] if value == (action.const if action.const is not None else True) else []
    if key == "weight" and isinstance(value, dict):  # weight = {size = 0.3}
        value = [f"{k}={v}" for k, v in value.items()]
    if key == "experts" and isinstance(value, list):  # [[experts]] tables: the experts file itself
        value = _experts_file(value)
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not (isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+")):
        raise ConfigurationError(f"{source}: {key} takes one value, got the list {value!r:.60}")
    if isinstance(action, argparse._AppendAction):
        return [t for v in values for t in (flag, _text(v, key, source))]
    return [flag, *[_text(v, key, source) for v in values]]


def _text(value: Any, key: str, source: Path) -> str:
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        raise ConfigurationError(f"{source}: {key} takes a string or a number, got {value!r:.60}")
    text = str(value)
    if key in PATH_KEYS and text != "-" and not Path(text).is_absolute():
        candidate = source.parent / text
        if key not in ("router", "encoder") or candidate.exists():  # those may name an embedded router / Hub id
            return str(candidate)
    return text


def _experts_file(entries: list[Any]) -> str:
    """Inline ``[[experts]]`` tables written to a temporary experts JSON (removed at exit)."""
    import atexit
    import tempfile

    from tryage._io import dumps_strict

    handle = tempfile.NamedTemporaryFile("w", prefix="tryage-experts-", suffix=".json", delete=False,  # noqa: SIM115
                                         encoding="utf-8")
    with handle:
        handle.write(dumps_strict({"experts": entries}, what="the config file's experts"))
    atexit.register(Path(handle.name).unlink, missing_ok=True)
    return handle.name
