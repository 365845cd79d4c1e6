"""``tryage discover``: build an expert library from Hugging Face Hub metadata.

::

    tryage discover FacebookAI/roberta-base microsoft/codebert-base --out experts.json
    tryage discover --search bert --pipeline-tag fill-mask --sort downloads --limit 10 --json

The lead's ``tryage.cli`` calls :func:`register` with its sub-parsers; the parsed namespace carries
the handler as ``args.func``. Bad input raises :class:`~tryage.errors.TryageError` subclasses, which
the CLI turns into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from tryage._io import check_distinct_files
from tryage.cli._common import format_table, print_json
from tryage.errors import ConfigurationError
from tryage.experts import Expert, format_size

SEARCH_OPTIONS = ("search", "author", "pipeline_tag", "library", "tag")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``discover`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    from tryage.hub import DEFAULT_TTL, SORTS

    parser = subparsers.add_parser(
        "discover", help="build an expert library from Hugging Face Hub metadata",
        description="Fetch size, dates, licence and popularity of Hub models (named, or found by a search) "
                    "and print them as a table, as JSON (--json) or into an expert library file (--out). "
                    "Metadata is cached on disk; HF_HUB_OFFLINE=1 uses the cache only. A token is read by "
                    "huggingface_hub from HF_TOKEN or `hf auth login`.")
    parser.add_argument("repo_ids", nargs="*", metavar="REPO_ID", help="Hub model ids, e.g. FacebookAI/roberta-base")
    search = parser.add_argument_group("search the Hub instead of naming models")
    search.add_argument("--search", metavar="TEXT", help="text the model id contains")
    search.add_argument("--pipeline-tag", metavar="TASK", help="task, e.g. fill-mask, text-generation")
    search.add_argument("--author", metavar="OWNER", help="user or organisation owning the models")
    search.add_argument("--library", metavar="NAME", help="library, e.g. transformers")
    search.add_argument("--tag", action="append", default=[], metavar="TAG", help="Hub tag (repeatable)")
    search.add_argument("--sort", choices=SORTS, default="downloads", help="best first by this key (default: downloads)")
    search.add_argument("--limit", type=int, default=20, metavar="N", help="at most N models (default: 20)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the library as JSON (the expert library format)")
    out.add_argument("--out", metavar="PATH", help="write the library to this JSON file")
    out.add_argument("--overrides", metavar="PATH",
                     help="expert library JSON with values you know; they win over the Hub's")
    hub = parser.add_argument_group("Hub and cache")
    hub.add_argument("--endpoint", metavar="URL", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    hub.add_argument("--refresh", action="store_true", help="fetch again even if the cache is fresh")
    hub.add_argument("--offline", action="store_true", help="use the cache only (like HF_HUB_OFFLINE=1)")
    hub.add_argument("--cache-dir", metavar="DIR", help="metadata cache folder")
    hub.add_argument("--ttl", type=float, default=DEFAULT_TTL.total_seconds(), metavar="SECONDS",
                     help="reuse cached metadata this long (default: 7 days)")
    hub.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per request (default: 10)")
    parser.set_defaults(func=run_discover)
    return parser


def run_discover(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """Handle ``tryage discover``; returns the exit code (0)."""
    from tryage.hub import HubClient, load_overrides
    from tryage.hub.library import fetch_library, search_library

    stream = stdout or sys.stdout
    searching = any(getattr(args, name) for name in SEARCH_OPTIONS)
    if args.repo_ids and searching:
        raise ConfigurationError(
            f"give repository ids or search options (--search/--author/--pipeline-tag/--library/--tag), "
            f"not both; got ids {args.repo_ids!r}")
    if not args.repo_ids and not searching:
        raise ConfigurationError("nothing to discover: give repository ids (tryage discover OWNER/NAME ...) "
                                 "or a search (tryage discover --search TEXT)")
    client = HubClient(endpoint=args.endpoint, cache_dir=args.cache_dir, ttl=args.ttl,
                       offline=True if args.offline else None, timeout=args.timeout)
    check_distinct_files({"--out": args.out}, {"--overrides": args.overrides})
    user = load_overrides(args.overrides)
    if searching:
        library, records = search_library(args.search, author=args.author, pipeline_tag=args.pipeline_tag,
                                          library=args.library, tags=args.tag, sort=args.sort, limit=args.limit,
                                          overrides=user, refresh=args.refresh, client=client)
    else:
        library, records = fetch_library(args.repo_ids, overrides=user, refresh=args.refresh, client=client)
    if args.out:
        library.to_json(args.out)
    if args.json:
        print_json(library.to_dict(), file=stream)
        return 0
    sources = {}
    for record in records:
        sources[record.expert.name] = sources[record.expert.repo_id or ""] = (
            record.parameters_source + (" (cached)" if record.from_cache else ""))
    user_sized = {e.name for e in user or () if e.parameters is not None}
    rows = [_row(e, "overrides" if e.name in user_sized else sources.get(e.name) or sources.get(e.repo_id or "", "-"))
            for e in library]
    stream.write(format_table(rows, HEADERS) + "\n")
    if args.out:
        stream.write(f"wrote {len(library)} experts to {args.out}\n")
    return 0


HEADERS = ("expert", "params", "params from", "created", "modified", "license", "downloads", "likes", "task", "gated")


def _row(expert: Expert, source: str) -> tuple[str, ...]:
    from tryage.hub import is_legacy_created_at

    created = "?" if expert.created_at is None else expert.created_at.date().isoformat()
    if is_legacy_created_at(expert):
        created = "<=" + created  # the Hub's floor date: the model is at least this old
    modified = "?" if expert.last_modified is None else expert.last_modified.date().isoformat()
    gated = "?" if expert.gated is None else ("yes" if expert.gated else "no")
    return (expert.name, format_size(expert.parameters), source, created, modified, expert.license or "?",
            _count(expert.downloads), _count(expert.likes), expert.pipeline_tag or "?", gated)


def _count(value: int | None) -> str:
    return "?" if value is None else (format_size(value) if value >= 10_000 else str(value))


__all__ = ["register", "run_discover"]
