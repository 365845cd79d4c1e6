"""Every error Tryage raises.

Each exception pairs the domain base :class:`TryageError` with the builtin that fits, so
``except ValueError`` keeps working for callers who do not know Tryage, and carries the offending
value as an attribute, not only in its text.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence


def _options(values: Iterable[object]) -> str:
    return ", ".join(repr(v) for v in values)


class TryageError(Exception):
    """Base class of every error raised by Tryage."""


class TryageFileNotFoundError(TryageError, FileNotFoundError):
    """A file Tryage was asked to read does not exist."""


class EncoderLoadError(TryageError, OSError):
    """An encoder folder or Hub id could not be loaded."""


class ConfigurationError(TryageError, ValueError):
    """An argument has a value that is not allowed."""


def check_scalar(value: object, name: str, *, kind: type = float, low: float | None = None,
                 high: float | None = None, low_open: bool = False, high_open: bool = False,
                 error: type[TryageError] | None = None) -> float | int:
    """``value`` checked once, at the boundary (scikit-learn's ``check_scalar`` with Tryage's errors).

    A finite number (``kind=int``: a whole number) in ``[low, high]`` (``low_open``/``high_open`` leave the
    bound out) is returned as ``kind``; anything else (``bool``, NaN, strings, out of range) raises ``error``
    (default :class:`ConfigurationError`) in one line naming ``name``, the value and what is allowed.
    """
    try:
        number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int too large for a float
        number = math.nan
    if (math.isfinite(number) and (kind is not int or number.is_integer())
            and (low is None or (number > low if low_open else number >= low))
            and (high is None or (number < high if high_open else number <= high))):
        return int(value) if kind is int else number  # type: ignore[call-overload]
    bounds = [f"{sign[o]} {int(b) if float(b).is_integer() and abs(b) < 1e16 else format(b, 'g')}"  # not 4.29497e+09
              for b, o, sign in ((low, low_open, (">=", ">")), (high, high_open, ("<=", "<"))) if b is not None]
    allowed = ("a whole number" if kind is int else "a finite number") + "".join(
        f"{' and' if k else ''} {b}" for k, b in enumerate(bounds))
    raise (error or ConfigurationError)(f"{name} must be {allowed}, got {value!r:.60}")


class _NameNotFoundError(TryageError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ExpertNotFoundError(_NameNotFoundError):
    """An expert name is not in the library.

    Attributes:
        name: The name that was asked for.
        available: The names the library holds.
    """

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name, self.available = name, tuple(available)
        super().__init__(f"unknown expert {name!r}; the library holds: {_options(self.available)}")


class ExpertLibraryError(TryageError, ValueError):
    """An expert library is malformed (duplicate names, bad metadata, unreadable file)."""


class MissingMetadataError(TryageError, ValueError):
    """A constraint needs metadata that some experts do not have.

    Attributes:
        constraint: The constraint's name.
        experts: The experts whose metadata is missing.
        supported: The flags the router supports instead, when no expert has the metadata (else ``None``).
    """

    def __init__(self, constraint: str, experts: Iterable[str], field: str, supported: Sequence[str] | None = None) -> None:
        self.constraint, self.experts, self.field, self.supported = (
            constraint, tuple(experts), field, None if supported is None else tuple(supported))
        super().__init__(f"constraint {constraint!r} needs {field!r}, which is unknown for: " + (
            f"{_options(self.experts)}; set it in the expert library, or give those experts a value with Constraint("
            "..., missing=<value in [0, 1]>)" if supported is None else f"all {len(self.experts)} experts of this "
            f"router; the flags it supports: {'; '.join(self.supported)} (or give its experts {field!r}: --experts FILE)"))

    def __reduce__(self):  # noqa: ANN204 - pickles across processes (Ray workers report it to the driver)
        return (type(self), (self.constraint, self.experts, self.field, self.supported))


class UnknownConstraintError(_NameNotFoundError):
    """A constraint weight names a constraint that is not registered."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name, self.available = name, tuple(available)
        super().__init__(f"unknown constraint {name!r}; known constraints: {_options(self.available)}")


class FlagError(TryageError, ValueError):
    """A ``[Flag: ...]`` in a prompt is unknown or malformed.

    Attributes:
        flag: The text of the offending flag.
        valid: Descriptions of the flags that are understood.
    """

    def __init__(self, flag: str, reason: str, valid: Iterable[str]) -> None:
        self.flag, self.valid = flag, tuple(valid)
        shown = flag if len(flag) <= 80 else flag[:77] + "..."
        super().__init__(f"{reason}: [Flag: {shown}]; valid flags: {'; '.join(self.valid)}")


class NoEligibleExpertError(TryageError, ValueError):
    """Hard filters (from flags or arguments) removed every expert."""


class NonFinitePredictionError(TryageError, ValueError):
    """The loss predictor returned NaN or an infinity (a damaged or diverged save), so no expert can be
    chosen honestly: routing on it would pick an arbitrary expert.

    Attributes:
        experts: The experts with a non-finite predicted loss.
        prompts: The prompts (or, when they are unknown, the row numbers) affected.
    """

    def __init__(self, experts: Iterable[str], prompts: Iterable[object]) -> None:
        self.experts, self.prompts = tuple(experts), tuple(prompts)
        shown = ", ".join(repr(p)[:60] for p in self.prompts[:3]) + (
            f" and {len(self.prompts) - 3} more" if len(self.prompts) > 3 else "")
        super().__init__(f"the loss predictor returned NaN or infinite losses for expert(s) {_options(self.experts)} "
                         f"on {len(self.prompts)} prompt(s): {shown}; predicted losses must be finite "
                         "(re-train or re-save the router: its weights or target scale are not finite)")


class _FileLineError(TryageError, ValueError):
    """A file (or one of its lines) is malformed; the message starts with ``path, line N:``.

    Attributes:
        path: The file, when the data came from one.
        line: The 1-based line (JSONL) or row (CSV: the header is line 1), when one is to blame.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path, self.line = path, line
        where = "" if path is None else (f"{path}, line {line}: " if line is not None else f"{path}: ")
        super().__init__(where + message)


class QTableError(_FileLineError):
    """A Q-table file or row is malformed (``path`` and ``line`` say where)."""


class NotFittedError(TryageError, ValueError):
    """A router was used before it was trained or loaded."""


class RouterFormatError(TryageError, ValueError):
    """A saved router folder is missing files, has an unknown format version or does not match."""


class TrainingDivergedError(TryageError, FloatingPointError):
    """Training diverged: the loss or the weights became NaN or infinite, or the loss grew by a large factor
    (a learning rate or ``l2`` too large); an update keeps the weights it started from. Non-finite weights
    are never saved."""


class TargetExistsError(TryageError, FileExistsError):
    """An output path holds something Tryage would destroy (a user's folder or file); pass ``overwrite``."""


class OutputWriteError(TryageError, OSError):
    """An output could not be written (a read-only or missing folder, a full disk); nothing half-written
    is left behind. ``errno`` and ``filename`` are those of the underlying :class:`OSError`."""

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None) -> None:
        super().__init__(message)
        self.errno, self.filename = errno, filename

    def __str__(self) -> str:  # OSError's own would be "[Errno N] None: 'filename'"
        return str(self.args[0])


class RouterMismatchError(TryageError, ValueError):
    """A router was trained for a different set of experts than the one it is used with.

    Attributes:
        router_experts: The experts the router predicts losses for.
        library_experts: The experts of the library it was paired with.
    """

    def __init__(self, router_experts: Iterable[str], library_experts: Iterable[str]) -> None:
        self.router_experts, self.library_experts = tuple(router_experts), tuple(library_experts)
        missing = [e for e in self.router_experts if e not in self.library_experts]
        extra = [e for e in self.library_experts if e not in self.router_experts]
        super().__init__("the router was trained for a different expert set than the library: router-only experts: "
                         f"{_options(missing) or 'none'}; library-only experts: {_options(extra) or 'none'}")


class ExpertMappingError(RouterMismatchError):
    """The runnables given for the experts (a framework adapter's mapping) do not match the router.

    Attributes:
        router_experts: The experts the router can choose.
        library_experts: The names of the mapping it was paired with.
    """

    def __init__(self, router_experts: Iterable[str], mapped_experts: Iterable[str]) -> None:
        self.router_experts, self.library_experts = tuple(router_experts), tuple(mapped_experts)
        unknown = [e for e in self.library_experts if e not in self.router_experts]
        missing = [e for e in self.router_experts if e not in self.library_experts]
        ValueError.__init__(self, "the expert mapping does not match the router's experts: names the router does not "
                            f"know: {_options(unknown) or 'none'}; router experts with no runnable: "
                            f"{_options(missing) or 'none'}; the router's experts are: {_options(self.router_experts)}")


class MissingDependencyError(TryageError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        self.package, self.extra = package, extra
        super().__init__(f"{package!r} is required for this feature; install it with: pip install 'tryage[{extra}]'")

    def __reduce__(self):  # noqa: ANN204 - a Ray worker reports it to the driver
        return (type(self), (self.package, self.extra))


class ClusterConnectionError(TryageError, ConnectionError):
    """A Ray cluster could not be joined or started (``tryage.scale.distributed``).

    Attributes:
        address: The address given, or ``"a local Ray instance"``.
    """

    def __init__(self, address: str, detail: str) -> None:
        self.address = address
        super().__init__(f"cannot connect to Ray at {address}: {detail}; give the address of a running cluster "
                         "(e.g. 'ray://head:10001' or 'head:6379') or leave --address out to start one locally")


def require(module: str, extra: str, package: str | None = None):  # noqa: ANN201 - returns a module
    """Import an optional dependency or raise :class:`MissingDependencyError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(package or module.split(".")[0], extra) from exc


# -- measuring experts (tryage.measure) ----------------------------------------------------------
class MeasureError(TryageError, ValueError):
    """Bad input to a measurement: an empty corpus, an unknown task or a malformed rows file."""


class ExpertModelNotFoundError(TryageError, FileNotFoundError):
    """The folder (or GGUF file) of an expert to measure does not exist.

    Attributes:
        path: The path that was given.
    """

    def __init__(self, path: str | os.PathLike[str], detail: str = "") -> None:
        self.path = str(path)
        super().__init__(f"expert model not found: {self.path}" + (f" ({detail})" if detail else "")
                         + "; give a local folder holding config.json + weights, or a folder and gguf_file=")


# -- Hugging Face Hub discovery (tryage.hub) -----------------------------------------------------
class HubError(TryageError, OSError):
    """Metadata for a Hugging Face Hub repository could not be obtained.

    Hub errors are :class:`OSError` s, like ``huggingface_hub``'s own; each subclass adds the builtin that fits.

    Attributes:
        repo_id: The repository id as the user wrote it (``None`` for a search).
    """

    problem = "Hub error"  #: a few words naming the failure, for one-line summaries

    def __init__(self, message: str, *, repo_id: str | None = None) -> None:
        self.repo_id = repo_id
        super().__init__(message)

    def __reduce__(self):  # noqa: ANN204 - keep keyword attributes through pickling
        return (_rebuild_hub_error, (type(self), str(self), self.repo_id))


def _rebuild_hub_error(cls: type[HubError], message: str, repo_id: str | None) -> HubError:
    return cls(message, repo_id=repo_id)


class HubRepoNotFoundError(HubError, LookupError):
    """The Hub has no repository with this id (or it is private and no valid token was given)."""

    problem = "repository not found"


class HubGatedRepoError(HubError, PermissionError):
    """The repository is gated and the Hub refused access to the files Tryage needed."""

    problem = "gated repository"


class HubTimeoutError(HubError, TimeoutError):
    """The Hub did not answer within the timeout, and no cached metadata could stand in."""

    problem = "timeout"


class HubUnavailableError(HubError, ConnectionError):
    """The Hub cannot be reached (no network, or ``HF_HUB_OFFLINE`` is set) and nothing is cached."""

    problem = "Hub unreachable, nothing cached"


class HubDiscoveryError(HubError):
    """Several repositories of one request failed; every failing id is listed.

    Attributes:
        failures: Each failing repository id mapped to its own :class:`HubError`.
    """

    def __init__(self, failures: dict[str, HubError]) -> None:
        self.failures = dict(failures)
        summary = ", ".join(f"{repo_id!r} ({error.problem})" for repo_id, error in self.failures.items())
        lines = [f"  {repo_id}: {type(error).__name__}: {error}" for repo_id, error in self.failures.items()]
        super().__init__(f"Hub metadata could not be obtained for {len(self.failures)} repositories: {summary}\n" + "\n".join(lines))

    @property
    def repo_ids(self) -> tuple[str, ...]:
        """The failing repository ids, in the order they were asked for."""
        return tuple(self.failures)

    def __reduce__(self):  # noqa: ANN204
        return (type(self), (self.failures,))


class UnobservedExpertWarning(UserWarning):
    """A Q-table names an expert without a value in any row: its column is left out."""


class StaleMetadataWarning(UserWarning):
    """Cached Hub metadata older than its time-to-live was used (offline, or the Hub was unreachable)."""


# collect: errors of ``tryage collect`` / ``tryage score`` (tryage.collect) --------------------------
class PromptFileError(_FileLineError):
    """A prompts file (JSONL or CSV) is malformed: no ``prompt``, bad JSON, duplicate ids (``path``, ``line``)."""


class ExpertSpecError(TryageError, ValueError):
    """An entry of an experts file cannot be built (unknown key, no backend, a key written in the file)."""


class UnknownProviderError(ExpertSpecError):
    """``"model": "<provider>:<id>"`` names a provider ``init_chat_model`` does not know (``expert``, ``provider``)."""

    def __init__(self, expert: str, provider: str, detail: str = "") -> None:
        self.expert, self.provider, self.detail = expert, provider, detail
        super().__init__(f"expert {expert!r}: unknown model provider {provider!r}" + (f" ({detail})" if detail else "")
                         + "; write 'model' as '<provider>:<model id>', e.g. 'openai:gpt-4o-mini', "
                           "'anthropic:claude-3-5-haiku-latest', 'ollama:llama3'")

    def __reduce__(self):  # noqa: ANN204 - a `collect --ray` worker reports it to the driver
        return (type(self), (self.expert, self.provider, self.detail))


class MissingCredentialsError(TryageError, PermissionError):
    """A chat-model expert needs an API key that is not in the environment (``expert``, ``variable`` read)."""

    def __init__(self, expert: str, variable: str) -> None:
        self.expert, self.variable = expert, variable
        super().__init__(f"expert {expert!r}: no API key; set the environment variable {variable} (keys are read from the "
                         "environment only, never from the experts file)")

    def __reduce__(self):  # noqa: ANN204 - a `collect --ray` worker reports it to the driver
        return (type(self), (self.expert, self.variable))


class ExpertUnreachableError(TryageError, ConnectionError):
    """A chat expert's server cannot be reached (refused, unknown host, timeout): ``expert``, ``url``, ``reason``."""

    def __init__(self, expert: str, url: str | None, reason: str, timed_out: bool = False) -> None:
        self.expert, self.url, self.reason, self.timed_out = expert, url, reason, timed_out
        super().__init__(f"expert {expert!r}{f' at {url}' if url else ''} is unreachable: {reason}")

    def __reduce__(self):  # noqa: ANN204 - a `collect --ray` worker reports it to the driver
        return (type(self), (self.expert, self.url, self.reason, self.timed_out))


class LimitIgnoredWarning(UserWarning):
    """An expert answered with more output tokens than its ``max_tokens``: its server ignores the limit."""


class ScorerError(TryageError, ValueError):
    """A scorer is unknown, or cannot score the input it was given (e.g. it needs a ``reference``)."""


class ScorerTimeoutError(ScorerError, TimeoutError):
    """A scorer's regular expression ran past its time limit on an answer (catastrophic backtracking)."""


class JudgeCallError(ScorerError):
    """The judge's call failed for good (after its retries, or at once for a permanent error such as 401):
    ``error`` (the last, as the call log writes it) after ``attempts`` attempts."""

    def __init__(self, error: str | None, attempts: int) -> None:
        self.error, self.attempts = error, attempts
        super().__init__(f"the judge's call failed after {attempts} attempt(s): {error}; the answers and the "
                         "judge's replies so far are kept, so a rerun resumes from them")


class JudgeParseError(ScorerError):
    """A judge model's reply (``reply``) holds no score in [0, 1]."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        shown = reply if len(reply) <= 80 else reply[:77] + "..."
        super().__init__(f"cannot read a score in [0, 1] from the judge's reply {shown!r}; "
                         "the rubric must make the judge end with 'SCORE: <number between 0 and 1>'")


class ProviderUsageError(TryageError, ValueError):
    """A provider's token counts (``usage``) are not whole numbers >= 0; nothing is billed from them."""


class CallLogError(TryageError, ValueError):
    """A call log is malformed (a middle line that is not a JSON record)."""


class LogLockedError(TryageError, BlockingIOError):
    """Another process is writing the same append-only log (a call log, serve's feedback log; ``path``): two
    writers would pay twice for the same calls, or learn twice from the same rows."""

    def __init__(self, path: str, *, what: str = "call log", holder: str = "collection",
                 hint: str = "wait for it to finish or give another --log") -> None:
        self.path = path
        super().__init__(f"{what} {path} is locked by another running {holder} ({path}.lock); {hint}")


class BudgetReachedError(TryageError, RuntimeError):
    """The next call would take the spend past ``budget`` (USD); nothing over budget was called. ``spent``: USD
    spent (estimated for calls that timed out) when the run stopped; ``remaining_calls``: calls not made."""

    def __init__(self, budget: float, spent: float, remaining_calls: int) -> None:
        self.budget, self.spent, self.remaining_calls = budget, spent, remaining_calls
        super().__init__(f"budget reached: spent ${spent:.6f} of ${budget:.6f}; {remaining_calls} call(s) not made "
                         "(the next would pass the budget); rerun with a higher --budget to resume from the call log")


# serve ------------------------------------------------------------------------------------------
class ServeRequestError(TryageError, ValueError):
    """A request ``tryage serve`` answers with an OpenAI-shaped error, not an answer.

    Attributes:
        status: The HTTP status (400, 401, 404, 413, 429, 502, 504, ...).
        kind: The error's ``type`` (``invalid_request_error``, ``rate_limit_error``, ...).
        param: The request field to blame, or ``None``.
        code: A short machine-readable code, or ``None``.
        retry_after: Seconds for the ``Retry-After`` header (429 and 503), or ``None``.
    """

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, retry_after: int | None = None) -> None:
        self.status, self.kind, self.param, self.code, self.retry_after = status, kind, param, code, retry_after
        super().__init__(message)


class UpstreamError(TryageError, ConnectionError):
    """An expert's endpoint failed (after its retries): an HTTP error, a timeout or a refused connection.

    Attributes:
        expert: The expert's name.
        status: The HTTP status the expert answered with, or ``None`` (timeout, connection).
        body: The expert's error body when the client may see it (a 4xx about the request), else ``None``.
        retry_after: The expert's ``Retry-After`` header, as sent, or ``None``.
    """

    def __init__(self, expert: str, message: str, *, status: int | None = None, body: object = None,
                 retry_after: str | None = None) -> None:
        self.expert, self.status, self.body, self.retry_after = expert, status, body, retry_after
        super().__init__(f"expert {expert!r}: {message}")
