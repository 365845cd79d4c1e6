"""The one retry policy of a collection's paid calls (experts, Ray workers, the judge), on tenacity.

* **Which errors**: transient ones — HTTP 408, 409, 425, 429, 5xx, timeouts, dropped connections —
  are retried; permanent ones (400, 401, 403, 404, 422, any error without a status) are not.
* **How long**: exponential backoff with jitter (``base × 2^(attempt-1)``, at most ``max_wait``,
  times a random factor in [0.5, 1)); a response's ``Retry-After`` (or OpenAI's ``retry-after-ms``)
  longer than that is waited out instead, up to ``max(max_wait, RETRY_AFTER_MAX)``.
* **How often**: ``retries`` further attempts after the first.
* **When not to wait**: a server that asks for a longer wait than that (a 429 with ``Retry-After: 3600``)
  is not retried at all: the error is raised at once, and :meth:`RetryPolicy.explain` says how long
  the server asked for (collect then stops that expert's calls; a rerun later resumes from the log).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tryage.errors import ExpertUnreachableError, check_scalar, require

TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
AUTH_STATUS = frozenset({401, 403})
#: The longest ``Retry-After`` obeyed (seconds) when it exceeds ``max_wait``; a longer one is cut to this.
RETRY_AFTER_MAX = 60.0
# openai / anthropic / httpx name them so, without a status code
_TRANSIENT_NAMES = frozenset({"APITimeoutError", "APIConnectionError", "TimeoutException", "ConnectError",
                              "RemoteProtocolError", "ReadError", "WriteError", "PoolTimeout"})


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (``status_code`` or ``response.status_code``), if any."""
    for candidate in (exc, getattr(exc, "response", None)):
        code = getattr(candidate, "status_code", None) or getattr(candidate, "status", None)
        if isinstance(code, int):
            return code
    return None


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait before retrying, from the error's HTTP response (OpenAI's
    ``retry-after-ms``, else ``Retry-After``: seconds or an HTTP date) or, for an error that keeps the
    header itself (:class:`~tryage.errors.UpstreamError`), its ``retry_after``; ``None`` when it did not say."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    value = getattr(exc, "retry_after", None)
    try:
        if value is None and headers is not None and hasattr(headers, "get"):
            if headers.get("retry-after-ms") is not None:
                return float(headers.get("retry-after-ms")) / 1000.0
            value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return (when - datetime.now(timezone.utc)).total_seconds()
    except (TypeError, ValueError, OverflowError):   # a header no one can read is no instruction
        return None


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is a timeout (the provider may have billed the attempt)."""
    return (isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "Timeout" in type(exc).__name__
            or getattr(exc, "timed_out", False) is True)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may succeed: 408/409/425/429, 5xx, timeouts, connection errors."""
    status = status_of(exc)
    if status is not None:
        return status in TRANSIENT_STATUS or status >= 500
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    return bool({c.__name__ for c in type(exc).__mro__} & _TRANSIENT_NAMES)


def describe(exc: BaseException) -> str:
    """``"<Type> (<status>): <first line, cut to 300 characters>"``: how a failed call is logged."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    status = status_of(exc)
    head = type(exc).__name__ + (f" ({status})" if status else "")
    return f"{head}: {text[:300]}" if text else head


_DNS_WORDS = ("name or service not known", "nodename nor servname", "getaddrinfo", "name resolution",
              "no address associated", "name does not resolve")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (``__cause__``, else ``__context__``), outermost first."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return chain


def unreachable(exc: BaseException, expert: str, url: str | None) -> ExpertUnreachableError | None:
    """An :class:`~tryage.errors.ExpertUnreachableError` naming ``expert`` and ``url`` when ``exc``
    means its server could not be reached (refused, unknown host, timeout), else ``None``."""
    if isinstance(exc, ExpertUnreachableError) or status_of(exc) is not None:
        return None
    chain = _causes(exc)
    names = {c.__name__ for e in chain for c in type(e).__mro__}
    text = " ".join(str(e) for e in chain).lower()
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "connection refused" in text \
            or "connect call failed" in text:
        return ExpertUnreachableError(expert, url, "connection refused (is its server running?)")
    if any(isinstance(e, socket.gaierror) for e in chain) or any(w in text for w in _DNS_WORDS):
        return ExpertUnreachableError(expert, url, "its host name does not resolve (DNS)")
    if names & {"APITimeoutError", "TimeoutException", "ConnectTimeout", "ReadTimeout", "PoolTimeout"}:
        return ExpertUnreachableError(expert, url, "no answer in time (timeout)", True)
    if names & {"APIConnectionError", "ConnectError", "ConnectionError"}:
        return ExpertUnreachableError(expert, url, f"connection failed ({type(chain[-1]).__name__}: {str(chain[-1])[:120]})")
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry a call; see the module doc.

    Attributes:
        retries: Further attempts after a transient error.
        base: Seconds before the first retry (doubled each time, with jitter).
        max_wait: Longest backoff between attempts.
    """

    retries: int = 3
    base: float = 0.5
    max_wait: float = 30.0

    def __post_init__(self) -> None:  # the one check of the policy's numbers: serve, collect and the judge build one
        object.__setattr__(self, "retries", int(check_scalar(self.retries, "retries", kind=int, low=0)))
        object.__setattr__(self, "base", float(check_scalar(self.base, "retry_base", low=0.0)))
        object.__setattr__(self, "max_wait", float(check_scalar(self.max_wait, "retry_max", low=0.0)))

    @property
    def longest_wait(self) -> float:
        """The longest ``Retry-After`` waited out (seconds); a server asking for more is not retried."""
        return max(self.max_wait, RETRY_AFTER_MAX)

    def refuses_wait(self, exc: BaseException) -> bool:
        """Whether ``exc`` asks for a wait longer than :attr:`longest_wait` (then it is not retried)."""
        asked = retry_after(exc)
        return asked is not None and asked > self.longest_wait

    def explain(self, exc: BaseException) -> str:
        """:func:`describe` of ``exc``, plus the server's wait when it was too long to retry."""
        if not self.refuses_wait(exc):
            return describe(exc)
        return (f"{describe(exc)[:300]}; the server asks to retry after {retry_after(exc):.0f} s, longer than the "
                f"{self.longest_wait:.0f} s this run waits: not retried, rerun later")

    def retries_on(self, exc: BaseException) -> bool:
        """Whether ``exc`` is retried: a transient error whose server does not ask for too long a wait."""
        return is_transient(exc) and not self.refuses_wait(exc)

    def delay(self, attempt: int, exc: BaseException | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based) that raised ``exc``."""
        delay = min(self.max_wait, self.base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        asked = retry_after(exc) if exc is not None else None
        if asked is not None and asked > delay:   # the server knows its limits better
            delay = min(asked, self.longest_wait)
        return delay

    def attempts(self) -> Any:
        """A tenacity ``AsyncRetrying``: ``async for attempt in policy.attempts(): with attempt: ...``.

        A transient error is retried after :meth:`delay` (unless the server asks for a longer wait than
        :attr:`longest_wait`); any other error, and the last attempt's, is raised as it was.
        """
        tenacity = require("tenacity", "collect")
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.retries + 1), retry=tenacity.retry_if_exception(self.retries_on),
            wait=lambda state: self.delay(state.attempt_number, state.outcome.exception()), reraise=True)


__all__ = ["AUTH_STATUS", "RETRY_AFTER_MAX", "TRANSIENT_STATUS", "RetryPolicy", "describe", "is_timeout",
           "is_transient", "retry_after", "status_of", "unreachable"]
