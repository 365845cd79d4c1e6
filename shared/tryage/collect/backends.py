"""The backends that call experts, and the LangChain chat models of experts-file entries.

The entry format (:class:`ExpertSpec`, :func:`load_experts`) lives in :mod:`tryage.collect.entries`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import os
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tryage.collect.entries import KEY_VARIABLES, ExpertSpec, load_experts
from tryage.errors import (
    ExpertSpecError,
    ExpertUnreachableError,
    MissingCredentialsError,
    MissingDependencyError,
    UnknownProviderError,
    require,
)

#: Providers whose LangChain class retries by itself unless told not to; in collect, collect retries
#: instead (chat models built for routing keep the provider's retries).
_OWN_RETRIES = frozenset({"openai", "anthropic", "azure_openai", "mistralai", "groq", "deepseek", "xai"})
_OPENAI_CLIENTS = frozenset({"openai", "azure_openai"})
#: The key sent to a local server when none is set: a keyless server ignores it (the client needs one).
NO_KEY = "not-needed"
#: Hosts whose servers read ``max_completion_tokens``: elsewhere ``max_tokens`` is sent in both fields.
_READS_COMPLETION_TOKENS = frozenset({"api.openai.com"})


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
    kwargs = {**spec.model_kwargs, **_limit_fields(spec), **overrides}
    variable = _key_variable(spec)
    if variable is not None:
        key = os.environ.get(variable)
        if not key and spec.is_local and not spec.api_key_env:
            kwargs["api_key"] = NO_KEY   # a server on this machine: no key asked for
        elif not key:
            raise MissingCredentialsError(spec.name, variable)
        elif spec.api_key_env:
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


def _limit_fields(spec: ExpertSpec) -> dict[str, Any]:
    """``extra_body={"max_tokens": N}`` for an ``openai:`` entry with a limit and a ``base_url`` not OpenAI's.

    langchain-openai sends the limit as ``max_completion_tokens`` only, which llama.cpp and other
    OpenAI-compatible servers ignore; they read ``max_tokens``, so both are sent.
    """
    limit, url = spec.max_tokens, spec.base_url
    if spec.provider != "openai" or limit is None or url is None or urlsplit(url).hostname in _READS_COMPLETION_TOKENS:
        return {}
    extra = spec.model_kwargs.get("extra_body") or {}
    if not isinstance(extra, Mapping):
        raise ExpertSpecError(f"expert {spec.name!r}: model_kwargs.extra_body must be an object, got {extra!r:.60}")
    return {"extra_body": {"max_tokens": limit, **extra}}


def build_chat_models(experts: str | os.PathLike[str] | Iterable[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """Expert name → LangChain chat model for every ``model`` entry (``hf`` entries, which only
    measure a loss, are left out), ready for ``ChatTryage(router=..., experts=...)``."""
    out = {}
    for spec in load_experts(experts):
        if spec.kind == "chat":
            out[spec.name] = build_chat_model(spec)
        elif spec.kind == "python" and _is_chat_model(spec.runnable):
            out[spec.name] = spec.runnable
        else:
            continue
        if spec.system_prompt is not None:
            out[spec.name] = _system_prompted()(model=out[spec.name], system_prompt=spec.system_prompt)
    return out


@functools.lru_cache(maxsize=1)
def _system_prompted() -> type:
    """The class of a chat model that sends an entry's ``system_prompt`` before every conversation
    (built on first use: LangChain is imported only when a chat model is built)."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import SystemMessage
    from langchain_core.runnables import RunnableLambda

    class SystemPrompted(BaseChatModel):
        """``model`` with ``system_prompt`` sent as the first message of every call (tools and streams too)."""

        model: BaseChatModel
        system_prompt: str

        @property
        def _llm_type(self) -> str:
            return self.model._llm_type

        def _first(self, messages: list[Any]) -> list[Any]:
            return [SystemMessage(self.system_prompt), *messages]

        def _generate(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            return self.model._generate(self._first(messages), stop=stop, **kwargs)

        async def _agenerate(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            return await self.model._agenerate(self._first(messages), stop=stop, **kwargs)

        def _stream(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            yield from self.model._stream(self._first(messages), stop=stop, **kwargs)

        async def _astream(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            async for chunk in self.model._astream(self._first(messages), stop=stop, **kwargs):
                yield chunk

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            first = RunnableLambda(lambda value: self._first(self._convert_input(value).to_messages()))
            return first | self.model.bind_tools(tools, **kwargs)

    return SystemPrompted


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

    Args:
        runnable: The chat model or runnable.
        http_client: An async HTTP client this backend owns (closed by :meth:`aclose`).
        name: The expert's name, for errors (an unreachable server is an
            :class:`~tryage.errors.ExpertUnreachableError` naming it and ``url``).
        url: The address the runnable calls, or ``None``.
        system_prompt: Sent as a system message before each prompt, or ``None``.
    """

    def __init__(self, runnable: Any, http_client: Any = None, *, name: str = "", url: str | None = None,
                 system_prompt: str | None = None) -> None:
        self.runnable = runnable
        self.http_client = http_client
        self.name, self.url, self.system_prompt = name, url, system_prompt

    async def aclose(self) -> None:
        if self.http_client is not None:
            await self.http_client.aclose()

    async def __call__(self, row: Any) -> Answer:
        from tryage.collect.retry import unreachable

        prompt = row.prompt if self.system_prompt is None else [("system", self.system_prompt), ("human", row.prompt)]
        try:
            result = await self.runnable.ainvoke(prompt)
        except Exception as exc:
            named = unreachable(exc, self.name, self.url)
            if named is None:
                raise
            raise named from exc
        usage = getattr(result, "usage_metadata", None) or {}
        text = getattr(result, "text", None)  # a message's text, whatever its content blocks
        if not isinstance(text, str):
            content = getattr(result, "content", result)
            text = content if isinstance(content, str) else str(content)
        return Answer(text, usage.get("input_tokens"), usage.get("output_tokens"))


def endpoint_of(model: Any) -> str | None:
    """The address a LangChain chat model calls (``base_url`` and its provider aliases), or ``None``."""
    for attribute in ("openai_api_base", "base_url", "anthropic_api_url", "api_base", "endpoint_url"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    client = getattr(model, "root_async_client", None) or getattr(model, "root_client", None)
    url = getattr(client, "base_url", None)
    if url is None and _is_chat_model(inner := getattr(model, "model", None)):
        return endpoint_of(inner)  # a wrapper, e.g. an entry's system_prompt around its chat model
    return str(url).rstrip("/") if url is not None else None


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
        model = build_chat_model(spec, **overrides)
        return RunnableBackend(model, client, name=spec.name, url=spec.base_url or endpoint_of(model),
                               system_prompt=spec.system_prompt)
    if spec.kind == "hf":
        folder = _hf_folder(spec)
        return HFLossBackend(dataclasses.replace(spec, hf=str(folder))).load()
    if hasattr(spec.runnable, "ainvoke"):
        return RunnableBackend(spec.runnable, name=spec.name, url=endpoint_of(spec.runnable),
                               system_prompt=spec.system_prompt)
    if spec.system_prompt is not None:
        raise ExpertSpecError(f"expert {spec.name!r}: 'system_prompt' needs a chat model or runnable; a plain "
                              "callable gets the prompt text only")
    if callable(spec.runnable):
        return CallableBackend(spec.runnable, spec.name)
    raise ExpertSpecError(f"expert {spec.name!r}: a Python expert must be a LangChain runnable or a callable, "
                          f"got {type(spec.runnable).__name__}")


__all__ = ["Answer", "Backend", "ExpertSpec", "build_backend", "build_chat_model", "build_chat_models", "endpoint_of",
           "load_experts"]
