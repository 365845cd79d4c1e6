"""Expert libraries from the Hub: by repository id, by search, with the user's overrides winning."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from tryage.errors import ConfigurationError
from tryage.experts import Expert, ExpertLibrary
from tryage.hub.cache import HubRecord
from tryage.hub.client import HubClient


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


def fetch_library(repo_ids: Iterable[str], *, overrides: Any = None, refresh: bool = False,
                  client: HubClient) -> tuple[ExpertLibrary, list[HubRecord]]:
    """:func:`from_hub`'s library together with the records it was built from."""
    user = load_overrides(overrides)
    records = client.fetch(repo_ids, refresh=refresh, known_parameters=known_parameters(user))
    return apply_overrides(records, user), records


def search_library(search: str | None = None, *, author: str | None = None, pipeline_tag: str | None = None,
                   library: str | None = None, tags: Iterable[str] = (), sort: str = "downloads", limit: int = 20,
                   overrides: Any = None, refresh: bool = False,
                   client: HubClient) -> tuple[ExpertLibrary, list[HubRecord]]:
    """:func:`discover_experts`' library together with the records it was built from."""
    records = client.search(search, author=author, pipeline_tag=pipeline_tag, library=library, tags=tags,
                            sort=sort, limit=limit, refresh=refresh)
    if not records:
        raise ConfigurationError(
            f"the Hub search returned no models (search={search!r}, author={author!r}, "
            f"pipeline_tag={pipeline_tag!r}, library={library!r}); widen it")
    return apply_overrides(records, overrides), records


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
    return fetch_library(repo_ids, overrides=overrides, refresh=refresh,
                         client=client or HubClient(**client_options))[0]


def discover_experts(search: str | None = None, *, author: str | None = None, pipeline_tag: str | None = None,
                     library: str | None = None, tags: Iterable[str] = (), sort: str = "downloads",
                     limit: int = 20, overrides: Any = None, refresh: bool = False,
                     client: HubClient | None = None, **client_options: Any) -> ExpertLibrary:
    """An expert library of the models a Hub search returns, best ``sort`` first.

    ``search`` filters on the model id, ``pipeline_tag`` on the task (``"fill-mask"``), ``author``
    on the owner, ``library`` and ``tags`` on Hub tags (``"transformers"``, ``"license:mit"``).
    """
    return search_library(search, author=author, pipeline_tag=pipeline_tag, library=library, tags=tags, sort=sort,
                          limit=limit, overrides=overrides, refresh=refresh,
                          client=client or HubClient(**client_options))[0]


__all__ = ["apply_overrides", "discover_experts", "fetch_library", "from_hub", "known_parameters", "load_overrides",
           "search_library"]
