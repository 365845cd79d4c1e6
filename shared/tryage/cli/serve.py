"""``tryage serve``: one OpenAI-compatible endpoint in front of your experts.

::

    tryage serve --router open-llms --experts experts.json [--host 127.0.0.1] [--port 8000] [--config serve.toml]

Point any OpenAI client at ``http://HOST:PORT/v1`` with ``model="tryage"`` (routed) or an expert's
name (that expert). Every flag is also a key of the ``--config`` file (TOML or YAML); flags win.
Needs ``pip install 'tryage[serve]'``.
"""

from __future__ import annotations

import argparse
from typing import Any

from tryage.cli._common import ROUTER_HELP, weights

_FLAGS = (  # (flag, type, help); every one is also a config-file key
    ("--host", str, "address to bind (default 127.0.0.1; beyond loopback needs API keys or --no-auth)"),
    ("--port", int, "port (default 8000; 0: any free port)"),
    ("--api-keys-file", str, "file of client API keys, one a line (TRYAGE_API_KEYS adds comma-separated ones)"),
    ("--state-dir", str, "folder of the feedback log and the routers learned from it (default ./tryage-state)"),
    ("--update-every", int, "feedback rows that trigger a router update (default 64)"),
    ("--update-interval", float, "seconds after which pending feedback triggers an update (default 300)"),
    ("--timeout", float, "seconds an expert may take (a stream: to its first chunk, then per chunk; default 60)"),
    ("--retries", int, "retries of an expert on 429/5xx/timeouts before falling back (default 2)"),
    ("--backoff", float, "seconds before the first retry, doubling after each (default 0.5)"),
    ("--max-fallbacks", int, "at most this many further experts after the chosen one (default: all)"),
    ("--max-concurrency", int, "requests in flight at once; beyond it 429 + Retry-After (default 512)"),
    ("--expert-concurrency", int, "calls in flight per expert (an entry's 'concurrency' wins; default 128)"),
    ("--max-body-bytes", int, "largest request body (default 4 MiB)"),
    ("--context-weight", float, "share of earlier turns in each predicted loss, 0-1 (default 0.25)"),
    ("--stickiness-margin", float, "how much better another expert must be to move a thread (default 0.05)"),
    ("--batch-window-ms", float, "ms routing waits for more requests to share an encoder pass (default 2)"),
    ("--max-batch", int, "most prompts per encoder pass (default 32)"),
    ("--access-log", str, "file for JSON access-log lines ('-': stderr; default off)"),
    ("--shutdown-timeout", float, "seconds a graceful shutdown waits for requests in flight (default 30)"),
    ("--replicas", int, "Ray Serve replicas, a fixed number (with --ray; default 1)"),
    ("--autoscale", str, "Ray Serve autoscaling instead: MIN:MAX replicas (with --ray; e.g. 1:4)"),
    ("--replica-cpus", float, "CPUs Ray reserves for each replica (with --ray; fractions allowed; default 1)"),
    ("--address", str, "Ray cluster to join (with --ray)"),
)
_SWITCHES = (("--no-auth", "no_auth", True, "serve without API keys even beyond loopback"),
             ("--read-only", "read_only", True, "take no feedback and never update the router"),
             ("--no-fallback", "fallback", False, "never try the next-best expert when the chosen one fails"),
             ("--log-prompts", "log_prompts", True, "put prompt text into the access log"),
             ("--ray", "ray", True, "run on Ray Serve (pip install 'tryage[ray]')"))


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` sub-command to ``subparsers``."""
    parser = subparsers.add_parser(
        "serve", help="an OpenAI-compatible endpoint that routes every request to the best expert",
        description="Serve OpenAI's chat-completions API: model 'tryage' routes each conversation to the best "
                    "expert of --experts (tryage collect's experts file), model '<expert>' calls that one; "
                    "POST /v1/route returns decisions only, POST /v1/feedback teaches the router.")
    parser.add_argument("--router", help=ROUTER_HELP)
    parser.add_argument("--experts", help="experts file (JSON, as tryage collect reads) of OpenAI-compatible endpoints")
    parser.add_argument("--config", help="TOML or YAML file whose keys (at the top or in a [serve] table) are these "
                                         "flags' names; the other commands' keys and tables are left to them")
    for flag, kind, text in _FLAGS:
        parser.add_argument(flag, type=kind, default=None, help=text)
    for flag, dest, value, text in _SWITCHES:
        parser.add_argument(flag, dest=dest, action="store_const", const=value, default=None, help=text)
    parser.add_argument("--weight", action="append", metavar="NAME=NUMBER", help="default constraint weight")
    parser.set_defaults(func=run_serve)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    from tryage.errors import require

    require("fastapi", "serve")
    require("uvicorn", "serve")
    require("prometheus_client", "serve", "prometheus-client")
    require("httpx", "serve")
    from tryage.serve.config import ServeConfig

    given = {k: v for k, v in vars(args).items() if k in ServeConfig.keys()}
    if args.weight:
        given["weights"] = weights(args.weight)
    config = ServeConfig.build(given, args.config, elsewhere=getattr(args, "config_elsewhere", ()))
    load = _Loader(config.router)
    if config.ray:
        require("ray", "ray", "ray[serve]")
        require("ray.serve", "ray", "ray[serve]")
        from tryage.serve.on_ray import run as run_on_ray

        return run_on_ray(config, load)
    from tryage.serve.server import run

    return run(config, load)


class _Loader:
    """``router_by_name_or_folder(router)`` as a callable that Ray can send to its replicas and learner."""

    def __init__(self, router: str) -> None:
        self.router = router

    def __call__(self) -> Any:
        from tryage.cli._common import router_by_name_or_folder

        return router_by_name_or_folder(self.router)


__all__ = ["register", "run_serve"]
