"""huggingface_hub and network errors, translated into :mod:`tryage.errors`' Hub errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tryage.errors import (
    HubError,
    HubGatedRepoError,
    HubRepoNotFoundError,
    HubTimeoutError,
    HubUnavailableError,
    require,
)


def hub_module(submodule: str = "") -> Any:
    """``huggingface_hub`` (or one of its submodules), imported on first use; extra ``hub``."""
    name = "huggingface_hub" + (f".{submodule}" if submodule else "")
    return require(name, "hub", "huggingface_hub")



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



@contextmanager
def translate_errors(repo_id: str | None, *, endpoint: str, revision: str | None, timeout: float,
                     what: str = "its metadata") -> Iterator[None]:
    """Translate huggingface_hub and network errors raised inside the block into :class:`HubError` subclasses."""
    hub_errors = hub_module("errors")
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
            problem = f"has no revision {revision!r}"
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
                f"{endpoint} did not answer within {timeout}s while fetching {what} of {subject}; "
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
