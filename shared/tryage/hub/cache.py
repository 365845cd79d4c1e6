"""The on-disk cache of Hub metadata used by :mod:`tryage.hub`.

One JSON file per repository (``<root>/<endpoint>/models/<owner>--<name>.json``) holding the expert
built from the Hub's answer, where its parameter count came from and when it was fetched; one file
per search (``searches/<hash>.json``) holding the ids it returned. Files are written atomically; a
missing or damaged file is a cache miss, never an error. No token is ever written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from tryage._io import atomic_write_text
from tryage.errors import ExpertLibraryError
from tryage.experts import Expert, parse_datetime

CACHE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class HubRecord:
    """What discovery learned about one repository.

    Attributes:
        expert: The expert built from the Hub metadata; its ``name`` is the id as asked for and its
            ``repo_id`` the Hub's canonical id (they differ for renamed repositories).
        parameters_source: Where the parameter count came from: ``"safetensors.total"``,
            ``"safetensors header"``, ``"config.json"`` or ``"unknown"``.
        fetched_at: When the metadata was fetched from the Hub (UTC).
        from_cache: Whether it was read from the on-disk cache instead of the Hub.
        stale: Whether cached metadata older than the time-to-live was used.
    """

    expert: Expert
    parameters_source: str
    fetched_at: datetime
    from_cache: bool = False
    stale: bool = False


def default_cache_dir() -> Path:
    """``$TRYAGE_HUB_CACHE``, else ``$HF_HOME/tryage/hub``, else ``~/.cache/tryage/hub``."""
    if os.environ.get("TRYAGE_HUB_CACHE"):
        return Path(os.environ["TRYAGE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "tryage" / "hub"
    return Path.home() / ".cache" / "tryage" / "hub"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``, for messages and reprs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


class MetadataCache:
    """Hub metadata of one endpoint on disk, with a time-to-live.

    Args:
        cache_dir: The cache folder (:func:`default_cache_dir` when ``None``).
        endpoint: The Hub URL; each endpoint gets its own sub-folder.
        ttl: How long an entry stays fresh; ``None`` never expires.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None, endpoint: str, ttl: timedelta | None) -> None:
        parts = urlsplit(endpoint)
        host = parts.netloc.rpartition("@")[2]  # never user:password@ in a folder name
        slug = "".join(c if c.isalnum() or c in ".-" else "_" for c in (host + parts.path).strip("/"))
        self.root = Path(cache_dir if cache_dir is not None else default_cache_dir()) / (slug or "hub")
        self.ttl = ttl

    def expired(self, fetched_at: datetime) -> bool:
        """Whether an entry fetched at ``fetched_at`` is past its time-to-live."""
        return self.ttl is not None and datetime.now(timezone.utc) - fetched_at >= self.ttl

    def model_path(self, repo_id: str, revision: str | None = None) -> Path:
        name = quote(repo_id, safe="").replace("%2F", "--")
        if revision:
            name += "@" + quote(revision, safe="")
        return self.root / "models" / f"{name}.json"

    def read_model(self, repo_id: str, revision: str | None = None) -> HubRecord | None:
        """The cached record of ``repo_id`` (``stale`` set when expired), or ``None``."""
        entry = _read_json(self.model_path(repo_id, revision))
        if not isinstance(entry, dict) or entry.get("format_version") != CACHE_FORMAT_VERSION:
            return None
        try:
            fetched = parse_datetime(entry["fetched_at"])
            expert = Expert.from_dict(entry["expert"])
            source = str(entry.get("parameters_source", "unknown"))
        except (KeyError, TypeError, ExpertLibraryError):
            return None
        if fetched is None:
            return None
        return HubRecord(expert, source, fetched, from_cache=True, stale=self.expired(fetched))

    def write_model(self, repo_id: str, record: HubRecord, revision: str | None = None) -> None:
        entry = {"format_version": CACHE_FORMAT_VERSION, "requested_id": repo_id, "revision": revision,
                 "fetched_at": _iso(record.fetched_at), "parameters_source": record.parameters_source,
                 "expert": record.expert.to_dict()}
        atomic_write_text(self.model_path(repo_id, revision), json.dumps(entry, indent=2, ensure_ascii=False) + "\n")

    def search_path(self, key: str) -> Path:
        return self.root / "searches" / f"{key}.json"

    def read_search(self, key: str, revision: str | None = None) -> tuple[bool, list[HubRecord]] | None:
        """``(expired, records)`` of a cached search, or ``None`` when it (or one model) is not cached."""
        entry = _read_json(self.search_path(key))
        if not isinstance(entry, dict) or entry.get("format_version") != CACHE_FORMAT_VERSION:
            return None
        try:
            fetched = parse_datetime(entry["fetched_at"])
            records = [self.read_model(r, revision) for r in entry["repo_ids"]]
        except (KeyError, TypeError, ExpertLibraryError):
            return None
        if fetched is None or any(r is None for r in records):
            return None
        expired = self.expired(fetched)
        return expired, [replace(r, stale=expired) for r in records if r is not None]

    def write_search(self, key: str, query: dict[str, Any], repo_ids: Sequence[str]) -> None:
        entry = {"format_version": CACHE_FORMAT_VERSION, "query": query,
                 "fetched_at": _iso(datetime.now(timezone.utc)), "repo_ids": list(repo_ids)}
        atomic_write_text(self.search_path(key), json.dumps(entry, indent=2) + "\n")


__all__ = ["CACHE_FORMAT_VERSION", "HubRecord", "MetadataCache", "default_cache_dir"]
