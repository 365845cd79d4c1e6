"""Expert discovery from Hugging Face Hub metadata.

Name the models you have, or search the Hub, and get an :class:`~tryage.ExpertLibrary` whose size,
dates, licence and popularity come from the Hub, so that ``[Flag: smallest model]`` and
``[Flag: most recent]`` work without typing a parameter count or a date::

    library = ExpertLibrary.from_hub(["FacebookAI/roberta-base", "HuggingFaceTB/SmolLM2-135M"])
    library = discover_experts(search="bert", pipeline_tag="fill-mask", sort="downloads", limit=10)

Everything goes through ``huggingface_hub.HfApi`` (``model_info(expand=...)``, ``list_models``,
``get_safetensors_metadata``, ``hf_hub_download``), installed with ``pip install 'tryage[hub]'``.
``import tryage`` and ``import tryage.hub`` do not import ``huggingface_hub``; the first request does.

**Parameter count.** In this order: the Hub's ``safetensors.total``; the safetensors file headers
(``get_safetensors_metadata``, a few KB per file); the model's ``config.json``, built on PyTorch's
``meta`` device by the ``transformers`` class its ``architectures`` names (no weights are
downloaded or allocated; the count is what ``model.num_parameters()`` gives after loading). Custom
architectures (``trust_remote_code``) are never run. Otherwise the count stays unknown (``None``).
:attr:`HubRecord.parameters_source` says which one was used.

**Which date drives recency.** Both Hub dates are kept as the Hub reports them: ``created_at``
(``createdAt``, when the repository was created) and ``last_modified`` (``lastModified``, its last
commit). The ``recency`` constraint reads ``created_at`` by default, because a new commit (a README
fix) does not make a model new. The Hub started recording creation dates on 2022-03-02, so every
older model reports :data:`HUB_CREATED_AT_FLOOR`: for those, ``created_at`` is an upper bound and
they tie as the oldest. To tell legacy models apart, route with
``Recency(date_field="last_modified")``.

**Cache.** Each repository's metadata is stored as JSON under :func:`default_cache_dir` (one folder
per endpoint) and reused for ``ttl`` (7 days); ``refresh=True`` fetches again. With
``HF_HUB_OFFLINE=1`` cached metadata is used whatever its age and nothing is requested; when the Hub
cannot be reached, expired metadata is used with a :class:`StaleMetadataWarning`. A token is passed
to ``huggingface_hub`` only: it is never written to the cache, logged or put in a message.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from tryage.errors import (
    ConfigurationError,
    HubDiscoveryError,
    HubError,
    HubGatedRepoError,
    HubRepoNotFoundError,
    HubTimeoutError,
    HubUnavailableError,
    require,
)
from tryage.experts import Expert, ExpertLibrary
from tryage.hub_cache import HubRecord, MetadataCache, StaleMetadataWarning, default_cache_dir

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
_META_LOCK = threading.Lock()
_T = TypeVar("_T")


def is_legacy_created_at(expert: Expert) -> bool:
    """Whether ``expert.created_at`` is the Hub's floor date, i.e. the model may be older."""
    return expert.created_at == HUB_CREATED_AT_FLOOR


def _hub(submodule: str = "") -> Any:
    """``huggingface_hub`` (or one of its submodules), imported on first use; extra ``hub``."""
    name = "huggingface_hub" + (f".{submodule}" if submodule else "")
    return require(name, "hub", "huggingface_hub")


def _offline_from_env() -> bool:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name)
        if value is not None and value.strip():
            return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return False


def _kind_of_failure(exc: BaseException) -> str | None:
    """``"timeout"``, ``"unavailable"`` or ``None``, from the exception and its causes.

    Network errors come from the HTTP library huggingface_hub uses (requests, httpx or httpx2,
    depending on its version), so they are recognised by class name as well as by builtin type.
    """
    seen: BaseException | None = exc
    depth = 0
    while seen is not None and depth < 8:
        names = {cls.__name__ for cls in type(seen).__mro__}
        if isinstance(seen, TimeoutError) or any("Timeout" in n for n in names):
            return "timeout"
        if isinstance(seen, ConnectionError) or names & {"ConnectError", "NetworkError", "ProxyError",
                                                          "OfflineModeIsEnabled", "RemoteProtocolError"}:
            return "unavailable"
        seen = seen.__cause__ or seen.__context__
        depth += 1
    return None


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


def count_parameters_from_config(config: dict[str, Any]) -> int | None:
    """Parameters of the ``transformers`` architecture a ``config.json`` names, or ``None``.

    The model is built on PyTorch's ``meta`` device (no memory, no weights), so the count is
    exact for that architecture and configuration. ``None`` when transformers or torch is not
    installed, when ``architectures`` names no ``transformers`` model class (custom code is never
    run), or when the configuration cannot be built.
    """
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if not architectures or not isinstance(architectures[0], str) or not isinstance(model_type, str):
        return None
    try:
        import torch
        import transformers
    except ImportError:
        return None
    arch = architectures[0]
    cls = getattr(transformers, arch, None) if arch.isidentifier() else None
    if not isinstance(cls, type) or not issubclass(cls, transformers.PreTrainedModel):
        return None
    settings = {k: v for k, v in config.items() if k not in ("model_type", "auto_map")}
    with _META_LOCK:
        try:
            model_config = transformers.AutoConfig.for_model(model_type, **settings)
            with torch.device("meta"):
                model = cls(model_config)
        except Exception:  # noqa: BLE001 - any failure means "cannot count honestly"
            return None
        return int(sum(p.numel() for p in model.parameters())) or None


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
        return f"HubClient(endpoint={self.endpoint!r}, cache_dir={self.cache_dir!r}, ttl={self.ttl!r})"

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
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit must be a whole number >= 1, got {limit!r}")
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

    # -- errors ----------------------------------------------------------------------------------
    @contextmanager
    def _hub_errors(self, repo_id: str | None, *, what: str = "its metadata") -> Iterator[None]:
        """Translate huggingface_hub and network errors into :class:`HubError` subclasses."""
        hub_errors = _hub("errors")
        endpoint = self._endpoint()
        subject = f"{repo_id!r}" if repo_id else "the search"
        try:
            yield
        except HubError:
            raise
        except hub_errors.GatedRepoError as exc:
            raise HubGatedRepoError(
                f"{subject} is a gated repository and {endpoint} refused access to {what}; accept its "
                f"conditions at {endpoint}/{repo_id} and pass a token of that account (token=, HF_TOKEN or "
                "`hf auth login`), or give its parameter count yourself (overrides=)", repo_id=repo_id) from exc
        except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError) as exc:
            if isinstance(exc, hub_errors.RevisionNotFoundError):
                problem = f"has no revision {self.revision!r}"
            else:
                problem = "does not exist (or is private and no valid token was given)"
            raise HubRepoNotFoundError(
                f"model repository {subject} on {endpoint} {problem}; check the id (it looks like "
                "'owner/name'), or pass token= for a private repository", repo_id=repo_id) from exc
        except Exception as exc:
            kind = _kind_of_failure(exc)
            if kind is None and isinstance(exc, hub_errors.LocalEntryNotFoundError):
                kind = "unavailable"
            if kind == "timeout":
                raise HubTimeoutError(
                    f"{endpoint} did not answer within {self.timeout}s while fetching {what} of {subject}; "
                    "retry later or raise timeout=", repo_id=repo_id) from exc
            if kind == "unavailable":
                raise HubUnavailableError(
                    f"cannot reach {endpoint} to fetch {what} of {subject} ({type(exc).__name__})",
                    repo_id=repo_id) from exc
            if isinstance(exc, hub_errors.HfHubHTTPError):
                status = getattr(getattr(exc, "response", None), "status_code", "?")
                raise HubError(f"{endpoint} answered HTTP {status} while fetching {what} of {subject}",
                               repo_id=repo_id) from exc
            raise

    # -- plumbing --------------------------------------------------------------------------------
    def _get_api(self) -> Any:
        if self._api is None:
            hub = _hub()
            from tryage import __version__

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
                                or (ttl.total_seconds() if isinstance(ttl, timedelta) else ttl) < 0):
            raise ConfigurationError(f"ttl must be seconds >= 0, a timedelta or None (never expire); got {ttl!r}")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
            raise ConfigurationError(f"timeout must be a number of seconds > 0, got {self.timeout!r}")
        if isinstance(self.max_workers, bool) or not isinstance(self.max_workers, int) or self.max_workers < 1:
            raise ConfigurationError(f"max_workers must be a whole number >= 1, got {self.max_workers!r}")

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


# -- libraries ---------------------------------------------------------------------------------------
def load_overrides(overrides: Any) -> ExpertLibrary | None:
    """What the user knows, as a library: from a library, experts, or a core-format JSON file."""
    if overrides is None:
        return None
    if isinstance(overrides, ExpertLibrary):
        return overrides
    if isinstance(overrides, (str, os.PathLike)):
        return ExpertLibrary.from_json(overrides)
    return ExpertLibrary(overrides)


def _override_key(expert: Expert) -> str:
    return expert.repo_id or expert.name


def known_parameters(overrides: ExpertLibrary | None) -> set[str]:
    """Repository ids (and names) whose parameter count the user gave: no file is fetched for them."""
    return {key for e in overrides or () if e.parameters is not None for key in (e.name, _override_key(e))}


def apply_overrides(records: Sequence[HubRecord], overrides: Any) -> ExpertLibrary:
    """A library of the records' experts where what the user knows wins over the Hub.

    An override matches a record by its ``repo_id`` (or, without one, its ``name``) against the
    id asked for or the Hub's canonical id; the expert takes the override's name, and every field
    the override knows replaces the Hub's. Overrides that match no record are appended, as
    :meth:`ExpertLibrary.merge` does.
    """
    library = ExpertLibrary(r.expert for r in records)
    user = load_overrides(overrides)
    if user is None:
        return library
    names = {}
    for override in user:
        names[_override_key(override)] = override.name
    renamed = []
    for expert in library:
        new_name = names.get(expert.name) or names.get(expert.repo_id or "")
        renamed.append(Expert(**{**_fields(expert), "name": new_name}) if new_name else expert)
    return ExpertLibrary(renamed).merge(user, prefer="overrides")


def _fields(expert: Expert) -> dict[str, Any]:
    return {name: getattr(expert, name) for name in expert.__dataclass_fields__}


def from_hub(repo_ids: Iterable[str], *, overrides: Any = None, refresh: bool = False,
             client: HubClient | None = None, **client_options: Any) -> ExpertLibrary:
    """An expert library of the named Hub repositories (see :class:`HubClient` for options).

    Args:
        repo_ids: Repository ids such as ``"FacebookAI/roberta-base"``; each becomes an expert named
            by the id as written.
        overrides: What you already know (an :class:`ExpertLibrary`, experts, or a JSON file of the
            core format); your values win over the Hub's (see :func:`apply_overrides`).
        refresh: Fetch again even when the cache is fresh.
        client: A configured :class:`HubClient`; otherwise one is built from ``client_options``
            (``endpoint``, ``token``, ``cache_dir``, ``ttl``, ``offline``, ``timeout``, ...).

    Raises:
        HubRepoNotFoundError, HubGatedRepoError, HubTimeoutError, HubUnavailableError: one id failed.
        HubDiscoveryError: several ids failed; ``.failures`` maps each to its error.
    """
    client = client or HubClient(**client_options)
    user = load_overrides(overrides)
    records = client.fetch(repo_ids, refresh=refresh, known_parameters=known_parameters(user))
    return apply_overrides(records, user)


def discover_experts(search: str | None = None, *, author: str | None = None, pipeline_tag: str | None = None,
                     library: str | None = None, tags: Iterable[str] = (), sort: str = "downloads",
                     limit: int = 20, overrides: Any = None, refresh: bool = False,
                     client: HubClient | None = None, **client_options: Any) -> ExpertLibrary:
    """An expert library of the models a Hub search returns, best ``sort`` first.

    ``search`` filters on the model id, ``pipeline_tag`` on the task (``"fill-mask"``), ``author``
    on the owner, ``library`` and ``tags`` on Hub tags (``"transformers"``, ``"license:mit"``).
    """
    client = client or HubClient(**client_options)
    records = client.search(search, author=author, pipeline_tag=pipeline_tag, library=library, tags=tags,
                            sort=sort, limit=limit, refresh=refresh)
    if not records:
        raise ConfigurationError(
            f"the Hub search returned no models (search={search!r}, author={author!r}, "
            f"pipeline_tag={pipeline_tag!r}, library={library!r}); widen it")
    return apply_overrides(records, overrides)


__all__ = [
    "DEFAULT_TTL", "EXPAND", "HUB_CREATED_AT_FLOOR", "SORTS", "HubClient", "HubRecord", "StaleMetadataWarning",
    "apply_overrides", "count_parameters_from_config", "default_cache_dir", "discover_experts", "from_hub",
    "is_legacy_created_at", "known_parameters", "load_overrides",
]
