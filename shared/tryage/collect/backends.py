"""Expert entries and the backends that call them.

An experts file is a JSON list (or ``{"experts": [...]}``) of entries, one per expert::

    {"name": "mini", "model": "openai:gpt-4o-mini",
     "model_kwargs": {"base_url": "http://127.0.0.1:8000/v1", "temperature": 0},
     "input_price": 0.15, "output_price": 0.6}
    {"name": "tiny-lm", "hf": "path/to/folder"}            # loss of a local causal LM
    {"name": "smol", "hf": "path/to/folder", "gguf_file": "model.gguf"}

* ``model`` + ``model_kwargs`` are passed to LangChain's ``init_chat_model`` (any provider it knows:
  ``openai:``, ``anthropic:``, ``ollama:``, ... and any OpenAI-compatible ``base_url``).
* ``hf`` is a local folder or a Hugging Face Hub id (fetched with ``huggingface_hub``, which honours
  ``HF_HUB_OFFLINE`` and its cache; needs ``tryage[hub]``): its causal-LM loss on
  ``prompt`` + ``reference`` is measured with :mod:`tryage.measure`; it generates no text.
* ``input_price`` / ``output_price``: USD per 1M tokens (cost = tokens × price).
* ``requests_per_second``: a rate limit (LangChain's ``InMemoryRateLimiter``); ``concurrency``:
  calls in flight at once (default: the run's ``concurrency``); ``expected_output_tokens``: used to
  estimate the cost of a call before it is made (default: ``max_tokens`` if set, else the mean of
  this expert's calls so far, else 512).
* ``api_key_env``: the environment variable holding the key (default: the provider's usual one).
  A key written in the file (``api_key``) is refused: keys are read from the environment only.

In Python, an expert may also be any LangChain chat model or runnable, or a plain callable
``f(prompt: str) -> str`` (sync or async): pass ``{"name": obj}`` or ``ExpertSpec(name, runnable=obj)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import re
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tryage.errors import (
    ExpertSpecError,
    MissingCredentialsError,
    MissingDependencyError,
    TryageFileNotFoundError,
    UnknownProviderError,
    require,
)
from tryage.experts import Expert

#: model_kwargs that say how to reach a model, not what it generates: left out of the settings hash,
#: so moving to another endpoint or timeout keeps the cached calls.
TRANSPORT_KEYS = frozenset({"base_url", "openai_api_base", "timeout", "request_timeout", "max_retries",
                            "default_headers", "default_query", "organization", "openai_organization",
                            "http_client", "http_async_client", "streaming", "rate_limiter", "api_key_env"})
SECRET_KEYS = frozenset({"api_key", "openai_api_key", "anthropic_api_key", "google_api_key", "token", "secret"})
#: The environment variable each provider reads its key from, when it needs one.
KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "mistralai": "MISTRAL_API_KEY",
                 "groq": "GROQ_API_KEY", "fireworks": "FIREWORKS_API_KEY", "together": "TOGETHER_API_KEY",
                 "cohere": "COHERE_API_KEY", "google_genai": "GOOGLE_API_KEY", "deepseek": "DEEPSEEK_API_KEY",
                 "xai": "XAI_API_KEY", "perplexity": "PPLX_API_KEY", "azure_openai": "AZURE_OPENAI_API_KEY"}
#: Providers whose LangChain class retries by itself unless told not to; in collect, collect retries
#: instead (chat models built for routing keep the provider's retries).
_OWN_RETRIES = frozenset({"openai", "anthropic", "azure_openai", "mistralai", "groq", "deepseek", "xai"})
_OPENAI_CLIENTS = frozenset({"openai", "azure_openai"})
_FIELDS = ("name", "model", "model_kwargs", "hf", "gguf_file", "input_price", "output_price",
           "requests_per_second", "concurrency", "expected_output_tokens", "api_key_env", "max_length",
           "description")


@dataclass(frozen=True)
class ExpertSpec:
    """How to build and price one expert.

    Attributes:
        name: Unique name (a Q-table column).
        model: ``"<provider>:<model id>"`` for ``init_chat_model``, or ``None``.
        model_kwargs: Keyword arguments of ``init_chat_model`` (no keys).
        hf: Local folder or Hub id of a causal LM whose loss is measured, or ``None``.
        gguf_file: A GGUF file inside ``hf``.
        runnable: A chat model, runnable or callable given in Python, or ``None``.
        input_price: USD per 1M input tokens (``None``: unknown, counted as 0).
        output_price: USD per 1M output tokens.
        requests_per_second: Rate limit, or ``None``.
        concurrency: Calls in flight at once for this expert, or ``None`` (the run's default).
        expected_output_tokens: Output tokens assumed when estimating a call's cost, or ``None``.
        api_key_env: Environment variable holding the key, or ``None`` (the provider's usual one).
        max_length: Tokens of prompt + reference an ``hf`` expert reads.
        description: Free text, copied into the expert library.
    """

    name: str
    model: str | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    hf: str | None = None
    gguf_file: str | None = None
    runnable: Any = None
    input_price: float | None = None
    output_price: float | None = None
    requests_per_second: float | None = None
    concurrency: int | None = None
    expected_output_tokens: int | None = None
    api_key_env: str | None = None
    max_length: int = 256
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ExpertSpecError(f"an expert needs a non-empty 'name', got {self.name!r}")
        given = [k for k in ("model", "hf", "runnable") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ExpertSpecError(f"expert {self.name!r}: give exactly one of 'model' (a LangChain chat model "
                                  f"'<provider>:<id>'), 'hf' (a local causal LM folder) or a Python object; got {given or 'none'}")
        if not isinstance(self.model_kwargs, Mapping):
            raise ExpertSpecError(f"expert {self.name!r}: 'model_kwargs' must be an object, got {self.model_kwargs!r}")
        secrets = sorted(k for k in self.model_kwargs if k in SECRET_KEYS or k.endswith("_api_key"))
        if secrets:
            raise ExpertSpecError(f"expert {self.name!r}: model_kwargs {secrets} hold a key; keys are read from the "
                                  "environment only: set the provider's variable or name one with 'api_key_env'")
        for key in ("input_price", "output_price", "requests_per_second"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):
                raise ExpertSpecError(f"expert {self.name!r}: {key} must be a finite number >= 0, got {value!r}")
        for key in ("concurrency", "expected_output_tokens"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ExpertSpecError(f"expert {self.name!r}: {key} must be a whole number >= 1, got {value!r}")
        if self.model is not None and (not isinstance(self.model, str) or ":" not in self.model):
            raise ExpertSpecError(f"expert {self.name!r}: 'model' must read '<provider>:<model id>' "
                                  f"(e.g. 'openai:gpt-4o-mini'), got {self.model!r:.60}")
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))

    @property
    def kind(self) -> str:
        """``"chat"`` (a LangChain chat model from ``model``), ``"hf"`` or ``"python"``."""
        return "chat" if self.model is not None else "hf" if self.hf is not None else "python"

    @property
    def provider(self) -> str | None:
        return None if self.model is None else self.model.split(":", 1)[0]

    def settings(self) -> dict[str, Any]:
        """What decides the answer: the model and its generation settings (no transport, no keys)."""
        if self.kind == "chat":
            return {"model": self.model, **{k: v for k, v in sorted(self.model_kwargs.items()) if k not in TRANSPORT_KEYS}}
        if self.kind == "hf":
            return {"hf": self.hf, "gguf_file": self.gguf_file, "max_length": self.max_length}
        return {"python": getattr(self.runnable, "__qualname__", type(self.runnable).__qualname__),
                "code": python_identity(self.runnable), **{k: v for k, v in sorted(self.model_kwargs.items())}}

    def settings_hash(self) -> str:
        """First 16 hex digits of the SHA-256 of :meth:`settings` as canonical JSON."""
        cached = self.__dict__.get("_settings_hash")
        if cached is None:
            text = json.dumps(self.settings(), sort_keys=True, default=str, separators=(",", ":"))
            cached = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
            object.__setattr__(self, "_settings_hash", cached)  # the spec is frozen: the hash never changes
        return cached

    def to_expert(self, **measured: Any) -> Expert:
        """The :class:`~tryage.experts.Expert` record of this entry (prices, description, measured values)."""
        return Expert(name=self.name, input_cost=self.input_price, output_cost=self.output_price,
                      description=self.description, repo_id=self.model or self.hf, **measured)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpertSpec:
        if not isinstance(data, Mapping):
            raise ExpertSpecError(f"an expert entry must be an object, got {data!r}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            hint = " (keys are read from the environment only)" if set(unknown) & SECRET_KEYS else ""
            raise ExpertSpecError(f"expert {data.get('name')!r}: unknown field(s) {unknown}{hint}; "
                                  f"allowed: {', '.join(_FIELDS)}")
        return cls(**dict(data))


def python_identity(obj: Any) -> str:
    """What tells one Python expert from another of the same name, for the settings hash: a function's
    module, name and code (its bytecode and constants, nested functions' too), a LangChain model's
    identifying parameters (model, temperature, ...), else its class and its ``__call__``'s code.
    Two lambdas, or a function edited between runs, get different hashes, so neither reuses the
    other's logged answers. Values a closure captures are not seen: rename such a function when they change."""
    def code_text(code: Any) -> str:
        consts = [code_text(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]
        return f"{code.co_name}|{code.co_code.hex()}|{consts}|{code.co_names}"

    fn = getattr(obj, "__func__", obj)
    if hasattr(fn, "__code__"):
        text = f"{getattr(fn, '__module__', '')}.{fn.__qualname__}|{code_text(fn.__code__)}|{getattr(fn, '__defaults__', None)!r}"
    elif isinstance(getattr(obj, "_identifying_params", None), Mapping):
        text = f"{type(obj).__qualname__}|{sorted((str(k), repr(v)) for k, v in obj._identifying_params.items())}"
    else:
        call = getattr(type(obj), "__call__", None)
        text = f"{type(obj).__module__}.{type(obj).__qualname__}|" + (code_text(call.__code__) if hasattr(call, "__code__") else "")
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)   # an object's address differs from run to run
    return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:16]


def load_experts(experts: str | os.PathLike[str] | Iterable[Any] | Mapping[str, Any]) -> list[ExpertSpec]:
    """Expert entries from a JSON file, a list of dicts/:class:`ExpertSpec`, or a mapping name → object.

    A mapping's values may be entries (dicts) or Python objects (chat models, runnables, callables).
    """
    if isinstance(experts, (str, os.PathLike)):
        source = Path(experts)
        if source.is_dir():
            raise ExpertSpecError(f"{source}: is a folder; an experts file is a UTF-8 JSON file")
        if not source.is_file():
            raise TryageFileNotFoundError(f"experts file not found: {source}")
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ExpertSpecError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except UnicodeDecodeError as exc:
            raise ExpertSpecError(f"{source}: is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r}); "
                                  "an experts file is a UTF-8 JSON file") from None
        except RecursionError:
            raise ExpertSpecError(f"{source}: JSON nested too deeply") from None
        if isinstance(data, Mapping) and "experts" in data:
            data = data["experts"]
        if not isinstance(data, list):
            raise ExpertSpecError(f"{source}: expected a list of expert entries (or {{'experts': [...]}})")
        specs = [ExpertSpec.from_dict(e) for e in data]
    elif isinstance(experts, Mapping):
        specs = [ExpertSpec.from_dict({"name": name, **value}) if isinstance(value, Mapping) and not callable(value)
                 else ExpertSpec(name=name, runnable=value) for name, value in experts.items()]
    else:
        specs = [e if isinstance(e, ExpertSpec) else ExpertSpec.from_dict(e) for e in experts]
    if not specs:
        raise ExpertSpecError("no experts given")
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExpertSpecError(f"duplicate expert name(s) {duplicates}")
    return specs


# -- building chat models ----------------------------------------------------------------------
def _key_variable(spec: ExpertSpec) -> str | None:
    return spec.api_key_env or KEY_VARIABLES.get(spec.provider or "")


def build_chat_model(spec: ExpertSpec, **overrides: Any) -> Any:
    """The LangChain chat model of a ``model`` entry, via ``init_chat_model`` (keys from the environment).

    ``overrides`` are further ``init_chat_model`` keyword arguments (not part of the settings hash).
    """
    if spec.kind != "chat":
        raise ExpertSpecError(f"expert {spec.name!r} is not a chat model entry ('model'); it is {spec.kind!r}")
    chat_models = require("langchain.chat_models", "collect", "langchain")
    kwargs = {**spec.model_kwargs, **overrides}
    variable = _key_variable(spec)
    if variable is not None:
        key = os.environ.get(variable)
        if not key:
            raise MissingCredentialsError(spec.name, variable)
        if spec.api_key_env:
            kwargs["api_key"] = key
    try:
        return chat_models.init_chat_model(spec.model, **kwargs)
    except ImportError as exc:
        raise MissingDependencyError(getattr(exc, "name", None) or f"langchain-{spec.provider}", "collect") from exc
    except ValueError as exc:
        text = str(exc)
        if "provider" in text.lower():
            raise UnknownProviderError(spec.name, spec.provider or "", text.splitlines()[0]) from None
        raise ExpertSpecError(f"expert {spec.name!r}: init_chat_model({spec.model!r}) failed: {text.splitlines()[0]}") from None
    except Exception as exc:  # provider clients raise their own types for a missing key
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "api_key" in text.lower() or "api key" in text.lower():
            raise MissingCredentialsError(spec.name, variable or "the provider's API key variable") from None
        raise ExpertSpecError(f"expert {spec.name!r}: init_chat_model({spec.model!r}) failed: {text}") from None


def build_chat_models(experts: str | os.PathLike[str] | Iterable[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """Expert name → LangChain chat model for every ``model`` entry (``hf`` entries, which only
    measure a loss, are left out), ready for ``ChatTryage(router=..., experts=...)``."""
    out = {}
    for spec in load_experts(experts):
        if spec.kind == "chat":
            out[spec.name] = build_chat_model(spec)
        elif spec.kind == "python" and _is_chat_model(spec.runnable):
            out[spec.name] = spec.runnable
    return out


def _is_chat_model(obj: Any) -> bool:
    try:
        from langchain_core.language_models import BaseChatModel
    except ImportError:
        return False
    return isinstance(obj, BaseChatModel)


# -- backends ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """What one call returned.

    Attributes:
        text: The answer (``None`` for a loss-only expert).
        input_tokens: Prompt tokens, or ``None`` when the model did not say.
        output_tokens: Generated tokens, or ``None``.
        loss: Mean next-token NLL of prompt + reference (``hf`` experts), else ``None``.
    """

    text: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    loss: float | None = None


class Backend:
    """Calls one expert on one prompt row."""

    async def __call__(self, row: Any) -> Answer:  # pragma: no cover - interface
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the backend holds (HTTP clients)."""


class RunnableBackend(Backend):
    """A LangChain chat model or runnable: ``ainvoke(prompt)``; tokens from ``usage_metadata``.

    ``http_client``: an async HTTP client this backend owns (closed by :meth:`aclose`).
    """

    def __init__(self, runnable: Any, http_client: Any = None) -> None:
        self.runnable = runnable
        self.http_client = http_client

    async def aclose(self) -> None:
        if self.http_client is not None:
            await self.http_client.aclose()

    async def __call__(self, row: Any) -> Answer:
        result = await self.runnable.ainvoke(row.prompt)
        usage = getattr(result, "usage_metadata", None) or {}
        text = getattr(result, "text", None)  # a message's text, whatever its content blocks
        if not isinstance(text, str):
            content = getattr(result, "content", result)
            text = content if isinstance(content, str) else str(content)
        return Answer(text, usage.get("input_tokens"), usage.get("output_tokens"))


class CallableBackend(Backend):
    """A plain callable ``f(prompt) -> str`` (or a dict ``{"text", "input_tokens", "output_tokens"}``)."""

    def __init__(self, fn: Callable[[str], Any], name: str = "") -> None:
        self.fn = fn
        self.name = name

    async def __call__(self, row: Any) -> Answer:
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(row.prompt)
        else:
            result = await asyncio.to_thread(self.fn, row.prompt)
            if inspect.isawaitable(result):
                result = await result
        text = result.get("text") if isinstance(result, Mapping) else result
        if not isinstance(text, str):   # None is no answer: "None" would be scored as one
            got = f"a dict whose 'text' is {text!r:.40}" if isinstance(result, Mapping) else f"{result!r:.40}"
            raise ExpertSpecError(f"a Python expert must return text (or a dict with 'text'), but {self.name!r} "
                                  f"returned {got}")
        if isinstance(result, Mapping):
            return Answer(text, result.get("input_tokens"), result.get("output_tokens"))
        return Answer(text)


class HFLossBackend(Backend):
    """A local causal LM: the mean next-token NLL of ``prompt`` + ``" "`` + ``reference`` (the paper's measure).

    The model loads on the first call (in a worker thread) and runs one prompt at a time.
    """

    def __init__(self, spec: ExpertSpec) -> None:
        self.spec = spec
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def load(self) -> HFLossBackend:
        """Load the model now, so that a model that cannot load fails before any call."""
        from tryage.errors import TryageError
        from tryage.measure import load_expert

        with self._lock:
            if self._loaded is None:
                from transformers.utils import logging as hf_logging  # a core dependency, like torch
                bars = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()  # collect shows its own bar, and none off a terminal
                try:
                    self._loaded = load_expert(self.spec.hf, gguf_file=self.spec.gguf_file, dtype="float32")  # type: ignore[arg-type]
                except TryageError:
                    raise
                except Exception as exc:  # transformers' own errors: one line naming the expert
                    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise ExpertSpecError(f"expert {self.spec.name!r}: cannot load {self.spec.hf!r}: {text}") from None
                finally:
                    if bars:
                        hf_logging.enable_progress_bar()
        return self

    def _measure(self, text: str) -> Answer:
        from tryage.measure import causal_losses

        self.load()
        with self._lock:
            net, tokenizer = self._loaded  # type: ignore[misc]
            import torch
            enc = tokenizer([text], return_tensors="pt", truncation=True, max_length=self.spec.max_length)
            with torch.inference_mode():
                logits = net(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
                losses, counts = causal_losses(logits, enc["input_ids"], enc["attention_mask"])
            return Answer(None, int(enc["input_ids"].shape[1]), 0, float(losses[0]))

    async def __call__(self, row: Any) -> Answer:
        text = row.prompt if row.reference is None else f"{row.prompt} {row.reference}"
        return await asyncio.to_thread(self._measure, text)


def _hf_folder(spec: ExpertSpec) -> Path:
    """The local folder of an ``hf`` entry: the folder itself, or the snapshot of a Hub id."""
    folder = Path(spec.hf)  # type: ignore[arg-type]
    if folder.is_dir():
        return folder
    from tryage.measure import ExpertModelNotFoundError

    looks_like_id = spec.hf.count("/") == 1 and not spec.hf.startswith((".", "/", "~"))  # type: ignore[union-attr]
    if not looks_like_id:
        raise ExpertModelNotFoundError(folder, f"expert {spec.name!r}")
    hub = require("huggingface_hub", "hub")
    patterns = [spec.gguf_file, "*.json", "tokenizer*", "*.txt", "*.model"] if spec.gguf_file else None
    try:
        return Path(hub.snapshot_download(spec.hf, allow_patterns=patterns))
    except Exception as exc:  # offline, unknown id, gated: one line naming the expert
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExpertModelNotFoundError(folder, f"expert {spec.name!r}: not a local folder, and the Hub gave "
                                               f"{type(exc).__name__}: {text}") from None


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process (building one loads the CA bundle: tens of ms), shared by every client."""
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def build_backend(spec: ExpertSpec) -> Backend:
    """The backend that calls ``spec`` (a chat model is built now, so a missing key fails before any call)."""
    if spec.kind == "chat":
        overrides: dict[str, Any] = {}
        if spec.provider in _OWN_RETRIES and "max_retries" not in spec.model_kwargs:
            overrides["max_retries"] = 0  # collect retries, with backoff, and logs every attempt
        client = None
        if spec.provider in _OPENAI_CLIENTS and not {"http_async_client", "http_client"} & set(spec.model_kwargs):
            # langchain-openai shares one cached HTTP client per base_url, bound to the event loop that
            # used it first; a client of the run's own keeps another loop's client out of this run.
            openai = require("openai", "collect", "langchain-openai")
            client = overrides["http_async_client"] = openai.DefaultAsyncHttpxClient(verify=_ssl_context())
        return RunnableBackend(build_chat_model(spec, **overrides), client)
    if spec.kind == "hf":
        folder = _hf_folder(spec)
        return HFLossBackend(dataclasses.replace(spec, hf=str(folder))).load()
    if hasattr(spec.runnable, "ainvoke"):
        return RunnableBackend(spec.runnable)
    if callable(spec.runnable):
        return CallableBackend(spec.runnable, spec.name)
    raise ExpertSpecError(f"expert {spec.name!r}: a Python expert must be a LangChain runnable or a callable, "
                          f"got {type(spec.runnable).__name__}")


__all__ = ["Answer", "Backend", "ExpertSpec", "build_backend", "build_chat_model", "build_chat_models", "load_experts",
           "python_identity"]
