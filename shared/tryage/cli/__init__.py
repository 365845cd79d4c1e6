"""The ``tryage`` command: one module per sub-command, each with ``register(subparsers)``.

Every sub-command prints a table for people and, with ``--json``, one JSON document for programs.
Bad input ends with a one-line ``tryage: error: ...`` on stderr and exit code 2; nothing is half
written. A new sub-command is a module here added to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from tryage._version import __version__
from tryage.cli._common import EXIT_USAGE, apply_config
from tryage.errors import TryageError

#: The sub-command modules of this package, in the order ``tryage --help`` lists them.
COMMANDS = ("train", "route", "evaluate", "cv", "split", "measure", "demo", "discover", "collect", "metrics",
            "update", "serve", "joint")


class _Parser(argparse.ArgumentParser):
    """argparse with its error on one line: what was wrong and where the allowed usage is, no usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tryage", description="Route prompts to the best expert model.")
    parser.add_argument("--version", action="version", version=f"tryage {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"tryage.cli.{name}").register(sub)
    for command in sub.choices.values():
        if not any(a.dest == "config" for a in command._actions):  # serve has its own
            command.add_argument("--config", metavar="FILE",
                                 help="TOML (or YAML) settings: top-level keys and a table per command; flags win")
    return parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


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
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv, elsewhere = apply_config(_commands(parser), argv)
    except TryageError as exc:  # a config file's error: one line and exit 2, as every other
        print(f"tryage: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_USAGE
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named against the sub-command, whose --help lists what it takes
        _commands(parser)[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    args.config_elsewhere = elsewhere
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
