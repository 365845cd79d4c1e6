"""The Hub client: metadata of named or searched repositories, cached, as :class:`HubRecord` s."""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from tryage.errors import (
    ConfigurationError,
    HubDiscoveryError,
    HubError,
    HubTimeoutError,
    HubUnavailableError,
    StaleMetadataWarning,
    check_scalar,
)
from tryage.experts import Expert
from tryage.hub._errors import hub_module as _hub
from tryage.hub._errors import translate_errors
from tryage.hub.cache import HubRecord, MetadataCache, redact_url
from tryage.hub.parameters import count_parameters_from_config

#: Properties asked from ``model_info`` / ``list_models`` (the Hub returns only these).
EXPAND = ("author", "cardData", "createdAt", "downloads", "gated", "lastModified", "library_name", "likes",
          "pipeline_tag", "safetensors", "siblings", "tags")
#: Sort keys of a search (the Hub sorts in descending order).
SORTS = ("downloads", "likes", "created_at", "last_modified", "trending_score")
#: The ``createdAt`` the Hub reports for every model created before it stored creation dates.
HUB_CREATED_AT_FLOOR = datetime(2022, 3, 2, 23, 29, 4, tzinfo=timezone.utc)
DEFAULT_TTL = timedelta(days=7)
PROGRESS_MIN_ITEMS = 5

_SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
_T = TypeVar("_T")


def is_legacy_created_at(expert: Expert) -> bool:
    """Whether ``expert.created_at`` is the Hub's floor date, i.e. the model may be older."""
    return expert.created_at == HUB_CREATED_AT_FLOOR


def _offline_from_env() -> bool:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name)
        if value is not None and value.strip():
            return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return False


def _license(info: Any) -> str | None:
    card = getattr(info, "card_data", None)
    value = getattr(card, "license", None) if card is not None else None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if isinstance(value, str) and value.strip():
        return value.strip()
    for tag in getattr(info, "tags", None) or ():
        if isinstance(tag, str) and tag.startswith("license:"):
            return tag.split(":", 1)[1]
    return None


def _expert_from_info(name: str, info: Any, parameters: int | None) -> Expert:
    gated = getattr(info, "gated", None)
    return Expert(
        name=name, parameters=parameters, created_at=info.created_at, last_modified=info.last_modified,
        license=_license(info), tags=tuple(info.tags or ()), repo_id=info.id, downloads=info.downloads,
        likes=info.likes, pipeline_tag=info.pipeline_tag, library_name=info.library_name,
        gated=None if gated is None else bool(gated),
    )


class HubClient:
    """Fetches, caches and converts Hub metadata into experts.

    Args:
        endpoint: Hub URL; ``None`` uses huggingface_hub's default (``HF_ENDPOINT`` or huggingface.co).
        token: Passed to huggingface_hub (``None``: its stored login or ``HF_TOKEN``; ``False``: none).
        cache_dir: Folder of the metadata cache; ``None`` is :func:`default_cache_dir`.
        ttl: How long cached metadata is reused (seconds or ``timedelta``; ``None`` = forever).
        offline: Never contact the Hub; ``None`` reads ``HF_HUB_OFFLINE`` at each call.
        timeout: Seconds to wait for each Hub request.
        revision: Git revision to describe (``None``: the Hub's default branch).
        count_from_config: Count parameters from ``config.json`` when the Hub has no count.
        max_workers: Repositories fetched at the same time.
        progress: Show a progress bar; ``None`` shows one for 5 or more repositories on a terminal.
    """

    def __init__(self, *, endpoint: str | None = None, token: str | bool | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, ttl: float | timedelta | None = DEFAULT_TTL,
                 offline: bool | None = None, timeout: float = 10.0, revision: str | None = None,
                 count_from_config: bool = True, max_workers: int = 4, progress: bool | None = None) -> None:
        self.endpoint = endpoint
        self.token = token
        self.cache_dir = cache_dir
        self.ttl = ttl
        self.offline = offline
        self.timeout = timeout
        self.revision = revision
        self.count_from_config = count_from_config
        self.max_workers = max_workers
        self.progress = progress
        self._api: Any = None

    def __repr__(self) -> str:  # never shows the token
        endpoint = None if self.endpoint is None else redact_url(self.endpoint)
        return f"HubClient(endpoint={endpoint!r}, cache_dir={self.cache_dir!r}, ttl={self.ttl!r})"

    # -- public ----------------------------------------------------------------------------------
    def fetch(self, repo_ids: Iterable[str], *, refresh: bool = False,
              known_parameters: Iterable[str] = ()) -> list[HubRecord]:
        """One record per repository id, in the order given.

        ``known_parameters`` names repositories whose parameter count the caller already has, so
        no file is fetched to count them. Raises the repository's :class:`HubError` when one id
        fails and :class:`HubDiscoveryError` listing every failing id when several do; the ids that
        succeeded are cached either way.
        """
        ids = self._check_ids(repo_ids)
        self._check_settings()
        skip = set(known_parameters)
        records = self._run_many(ids, lambda rid: self._fetch_one(rid, refresh, rid not in skip))
        self._warn_stale(records)
        return records

    def search(self, search: str | None = None, *, author: str | None = None, pipeline_tag: str | None = None,
               library: str | None = None, tags: Iterable[str] = (), sort: str = "downloads", limit: int = 20,
               refresh: bool = False) -> list[HubRecord]:
        """Records of the models a Hub search returns, in the Hub's order (best ``sort`` first)."""
        self._check_settings()
        if sort not in SORTS:
            raise ConfigurationError(f"sort must be one of {', '.join(SORTS)}; got {sort!r}")
        check_scalar(limit, "limit", kind=int, low=1)
        filters = [f for f in (library, *([tags] if isinstance(tags, str) else tags)) if f]
        query = {"search": search or None, "author": author or None, "pipeline_tag": pipeline_tag or None,
                 "filter": filters or None, "sort": sort, "limit": limit}
        label = "search " + json.dumps({k: v for k, v in query.items() if v is not None}, sort_keys=True)
        key = hashlib.sha256(json.dumps([self.revision, query], sort_keys=True).encode()).hexdigest()[:20]
        cache = self._cache()
        cached = cache.read_search(key, self.revision)
        offline = self._is_offline()
        if cached is not None and (offline or (not refresh and not cached[0])):
            self._warn_stale(cached[1])
            return cached[1]
        if offline:
            raise HubUnavailableError(
                f"HF_HUB_OFFLINE is set and this {label} is not in the cache at {cache.root}; "
                "run it once with the Hub reachable")
        try:
            with self._hub_errors(None):
                infos = list(self._get_api().list_models(**query, expand=list(EXPAND)))
        except (HubTimeoutError, HubUnavailableError) as exc:
            if cached is None:
                raise type(exc)(f"{exc} ({label}; nothing cached in {cache.root})") from exc
            records = [replace(r, stale=True) for r in cached[1]]
            self._warn_stale(records)
            return records
        by_id = {info.id: info for info in infos}
        records = self._run_many(list(by_id), lambda rid: self._from_info(rid, by_id[rid], True))
        for record in records:
            cache.write_model(record.expert.name, record, self.revision)
        cache.write_search(key, query, list(by_id))
        return records

    # -- one repository ----------------------------------------------------------------------------
    def _fetch_one(self, repo_id: str, refresh: bool, need_parameters: bool) -> HubRecord:
        cache = self._cache()
        cached = cache.read_model(repo_id, self.revision)
        offline = self._is_offline()
        if cached is not None and (offline or (not refresh and not cached.stale)):
            return cached
        if offline:
            raise HubUnavailableError(
                f"HF_HUB_OFFLINE is set and nothing is cached for {repo_id!r} in {cache.root}; "
                "run once with the Hub reachable to fill the cache, or give its metadata yourself",
                repo_id=repo_id)
        try:
            with self._hub_errors(repo_id):
                info = self._get_api().model_info(repo_id, revision=self.revision, expand=list(EXPAND),
                                                  timeout=self.timeout)
            record = self._from_info(repo_id, info, need_parameters)
        except (HubTimeoutError, HubUnavailableError) as exc:
            if cached is None:
                raise type(exc)(f"{exc}; nothing is cached for it in {cache.root}", repo_id=repo_id) from exc
            return replace(cached, stale=True)
        cache.write_model(repo_id, record, self.revision)
        return record

    def _from_info(self, name: str, info: Any, need_parameters: bool) -> HubRecord:
        parameters, source = None, "unknown"
        total = getattr(getattr(info, "safetensors", None), "total", None)
        if isinstance(total, int) and total > 0:
            parameters, source = total, "safetensors.total"
        elif need_parameters:
            parameters, source = self._count_from_files(name, info)
        return HubRecord(_expert_from_info(name, info, parameters), source, datetime.now(timezone.utc))

    def _count_from_files(self, name: str, info: Any) -> tuple[int | None, str]:
        siblings = getattr(info, "siblings", None)
        files = None if siblings is None else {s.rfilename for s in siblings}
        hub_errors = _hub("errors")
        api = self._get_api()
        if files is None or files & set(_SAFETENSORS_FILES):
            try:
                with self._hub_errors(name, what="its safetensors headers"):
                    meta = api.get_safetensors_metadata(info.id, revision=self.revision, timeout=self.timeout)
                total = sum(meta.parameter_count.values())
                if total > 0:
                    return total, "safetensors header"
            except (hub_errors.NotASafetensorsRepoError, hub_errors.SafetensorsParsingError):
                pass
        if self.count_from_config and (files is None or "config.json" in files):
            with self._hub_errors(name, what="config.json"):
                try:
                    local = api.hf_hub_download(info.id, "config.json", revision=self.revision,
                                                cache_dir=self._cache().root / "files", etag_timeout=self.timeout)
                except hub_errors.EntryNotFoundError as exc:
                    if isinstance(exc, hub_errors.LocalEntryNotFoundError):
                        raise  # the Hub could not be asked: a network failure, translated below
                    return None, "unknown"  # the repository has no config.json
            try:
                config = json.loads(Path(local).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None, "unknown"
            count = count_parameters_from_config(config) if isinstance(config, dict) else None
            if count is not None:
                return count, "config.json"
        return None, "unknown"

    def _hub_errors(self, repo_id: str | None, *, what: str = "its metadata") -> AbstractContextManager[None]:
        return translate_errors(repo_id, endpoint=redact_url(self._endpoint()), revision=self.revision, timeout=self.timeout,
                                what=what)

    # -- plumbing --------------------------------------------------------------------------------
    def _get_api(self) -> Any:
        if self._api is None:
            hub = _hub()
            from tryage._version import __version__

            self._api = hub.HfApi(endpoint=self.endpoint, token=self.token, library_name="tryage",
                                  library_version=__version__)
        return self._api

    def _endpoint(self) -> str:
        if self.endpoint:
            return self.endpoint.rstrip("/")
        return str(_hub("constants").ENDPOINT).rstrip("/")

    def _is_offline(self) -> bool:
        if self.offline is not None:
            return bool(self.offline)
        if _offline_from_env():
            return True
        if "HF_HUB_OFFLINE" in os.environ:  # explicitly set to a false value
            return False
        try:
            return bool(_hub("constants").is_offline_mode())
        except AttributeError:
            return False

    def _cache(self) -> MetadataCache:
        ttl = timedelta(seconds=self.ttl) if isinstance(self.ttl, (int, float)) else self.ttl
        return MetadataCache(self.cache_dir, self._endpoint(), ttl)

    def _check_settings(self) -> None:
        ttl = self.ttl
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float, timedelta))
                                or not math.isfinite(ttl.total_seconds() if isinstance(ttl, timedelta) else ttl)
                                or (ttl.total_seconds() if isinstance(ttl, timedelta) else ttl) < 0):
            raise ConfigurationError(f"ttl must be finite seconds >= 0, a timedelta or None (never expire); "
                                     f"got {ttl!r}")
        check_scalar(self.timeout, "timeout (seconds)", low=0, low_open=True)
        check_scalar(self.max_workers, "max_workers", kind=int, low=1)

    @staticmethod
    def _check_ids(repo_ids: Iterable[str]) -> list[str]:
        if isinstance(repo_ids, str):
            repo_ids = [repo_ids]
        ids = list(repo_ids)
        if not ids:
            raise ConfigurationError("no repository ids given; pass ids like ['FacebookAI/roberta-base']")
        validate = _hub("utils").validate_repo_id
        bad, seen, duplicates = [], set(), []
        for rid in ids:
            try:
                if not isinstance(rid, str):
                    raise ValueError
                validate(rid)
            except ValueError:
                bad.append(rid)
            if rid in seen:
                duplicates.append(rid)
            seen.add(rid)
        if bad:
            raise ConfigurationError(
                f"invalid Hub repository ids: {', '.join(repr(b) for b in bad)}; an id is 'name' or "
                "'owner/name' made of letters, digits, '-', '_' and '.'")
        if duplicates:
            raise ConfigurationError(f"repository ids given twice: {', '.join(repr(d) for d in duplicates)}")
        return ids

    def _run_many(self, keys: Sequence[str], work: Callable[[str], _T]) -> list[_T]:
        """Run ``work`` for every key (a few at a time), with a progress bar; aggregate failures."""
        from tqdm.auto import tqdm

        if not keys:
            return []
        disable = (not self.progress) if self.progress is not None else (None if len(keys) >= PROGRESS_MIN_ITEMS
                                                                          else True)
        results: dict[str, _T] = {}
        failures: dict[str, HubError] = {}
        workers = max(1, min(self.max_workers, len(keys)))
        with ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=len(keys), desc="Hub metadata", unit="model", disable=disable) as bar:
            futures = {pool.submit(work, key): key for key in keys}
            for future in as_completed(futures):
                key = futures[future]
                try:
                    results[key] = future.result()
                except HubError as exc:
                    failures[key] = exc
                bar.update(1)
        if failures:
            ordered = {k: failures[k] for k in keys if k in failures}
            if len(ordered) == 1:
                raise next(iter(ordered.values()))
            raise HubDiscoveryError(ordered)
        return [results[k] for k in keys]

    @staticmethod
    def _warn_stale(records: Sequence[HubRecord]) -> None:
        stale = [r.expert.name for r in records if r.stale]
        if stale:
            warnings.warn(
                f"using cached Hub metadata older than its time-to-live for: {', '.join(stale)} "
                "(the Hub could not be reached or offline mode is on)", StaleMetadataWarning, stacklevel=3)


__all__ = ["DEFAULT_TTL", "EXPAND", "HUB_CREATED_AT_FLOOR", "SORTS", "HubClient", "is_legacy_created_at"]
