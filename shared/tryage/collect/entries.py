"""The experts file: one entry format for ``tryage collect``, the expert library and ``tryage serve``.

An experts file is a JSON list (or ``{"experts": [...]}``) of entries, one per expert::

    {"name": "mini", "model": "openai:gpt-4o-mini",
     "model_kwargs": {"base_url": "http://127.0.0.1:8000/v1", "temperature": 0, "max_tokens": 64},
     "input_cost": 0.15, "output_cost": 0.6, "parameters": "135M", "license": "apache-2.0",
     "system_prompt": "Answer in one word."}
    {"name": "tiny-lm", "hf": "path/to/folder"}            # loss of a local causal LM
    {"name": "smol", "hf": "path/to/folder", "gguf_file": "model.gguf"}

* ``model`` + ``model_kwargs`` are passed to LangChain's ``init_chat_model`` (any provider it knows:
  ``openai:``, ``anthropic:``, ``ollama:``, ... and any OpenAI-compatible ``base_url``).
* ``hf`` is a local folder or a Hugging Face Hub id (fetched with ``huggingface_hub``, which honours
  ``HF_HUB_OFFLINE`` and its cache; needs ``tryage[hub]``): its causal-LM loss on
  ``prompt`` + ``reference`` is measured with :mod:`tryage.measure`; it generates no text.
* ``input_cost`` / ``output_cost``: USD per 1M tokens (cost = tokens × price), the names the expert
  library uses. The old ``input_price`` / ``output_price`` are still read, with a ``DeprecationWarning``.
* What a router needs to know about the expert, copied into the expert library that ``collect``
  writes (so a collected router takes ``[Flag: smallest model]``, ``[Flag: newest]``, ...):
  ``parameters`` (``"135M"``, ``7e9``), ``created_at`` / ``last_modified`` (ISO 8601), ``license``,
  ``tags``, ``description`` and ``repo_id`` (its Hugging Face Hub id; with ``"discover": true``
  ``collect`` fills the metadata the entry leaves out from the Hub before any call:
  :func:`discover_metadata`).
* ``system_prompt``: sent as a system message before every prompt (``collect``, ``serve`` and
  :func:`~tryage.collect.backends.build_chat_models`); experts that differ only by it are separate entries.
* **Limits**: ``max_tokens`` in ``model_kwargs``. langchain-openai sends it as
  ``max_completion_tokens``, which llama.cpp, vLLM and other OpenAI-compatible servers may ignore, so
  for an ``openai:`` entry whose ``base_url`` is not OpenAI's, ``max_tokens`` is sent in *both* fields
  (``max_tokens`` through ``extra_body``). ``collect`` checks every answer's output tokens against it
  and warns once per expert whose server ignores it (:class:`~tryage.errors.LimitIgnoredWarning`).
* ``requests_per_second`` (> 0): a rate limit (LangChain's ``InMemoryRateLimiter``); ``concurrency``:
  calls in flight at once (default: the run's ``concurrency``); ``expected_output_tokens``: used to
  estimate the cost of a call before it is made (default: ``max_tokens`` if set, else the mean of
  this expert's calls so far, else 512).
* ``api_key_env``: the environment variable holding the key (default: the provider's usual one).
  A key written in the file (``api_key``) is refused: keys are read from the environment only. An
  expert whose ``base_url`` is local (``127.0.0.1``, ``localhost``, ``::1``) needs no key: without one
  none is asked for (the client sends a placeholder, which a keyless server ignores).

In Python, an expert may also be any LangChain chat model or runnable, or a plain callable
``f(prompt: str) -> str`` (sync or async): pass ``{"name": obj}`` or ``ExpertSpec(name, runnable=obj)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tryage.errors import ExpertLibraryError, ExpertSpecError, TryageFileNotFoundError
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
#: Hosts of a server on this machine: an expert there needs no API key.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: model_kwargs that limit an answer's length, in the order they are read.
LIMIT_KEYS = ("max_tokens", "max_completion_tokens", "max_new_tokens", "num_predict")
#: The experts-file fields that describe the model to a router (copied into the expert library).
METADATA_FIELDS = ("parameters", "created_at", "last_modified", "license", "tags", "repo_id")
#: Old names of the prices, still read (with a DeprecationWarning).
DEPRECATED_FIELDS = {"input_price": "input_cost", "output_price": "output_cost"}


@dataclass(frozen=True)
class ExpertSpec:
    """How to build, price and describe one expert.

    Attributes:
        name: Unique name (a Q-table column).
        model: ``"<provider>:<model id>"`` for ``init_chat_model``, or ``None``.
        model_kwargs: Keyword arguments of ``init_chat_model`` (no keys).
        hf: Local folder or Hub id of a causal LM whose loss is measured, or ``None``.
        gguf_file: A GGUF file inside ``hf``.
        runnable: A chat model, runnable or callable given in Python, or ``None``.
        input_cost: USD per 1M input tokens (``None``: unknown, counted as 0).
        output_cost: USD per 1M output tokens.
        requests_per_second: Rate limit (> 0), or ``None``.
        concurrency: Calls in flight at once for this expert, or ``None`` (the run's default).
        expected_output_tokens: Output tokens assumed when estimating a call's cost, or ``None``.
        api_key_env: Environment variable holding the key, or ``None`` (the provider's usual one).
        max_length: Tokens of prompt + reference an ``hf`` expert reads.
        description: Free text, copied into the expert library.
        system_prompt: A system message sent before every prompt, or ``None``.
        parameters: Parameter count (``"135M"``, ``7e9``), or ``None``.
        created_at: Release date (ISO 8601), or ``None``.
        last_modified: Last update (ISO 8601), or ``None``.
        license: Licence identifier, or ``None``.
        tags: Free-form tags.
        repo_id: Hugging Face Hub id of the model, or ``None`` (the library then keeps ``model`` or ``hf``).
        discover: Fill the metadata this entry leaves out from the Hub's record of ``repo_id``.
    """

    name: str
    model: str | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    hf: str | None = None
    gguf_file: str | None = None
    runnable: Any = None
    input_cost: float | None = None
    output_cost: float | None = None
    requests_per_second: float | None = None
    concurrency: int | None = None
    expected_output_tokens: int | None = None
    api_key_env: str | None = None
    max_length: int = 256
    description: str = ""
    system_prompt: str | None = None
    parameters: Any = None
    created_at: Any = None
    last_modified: Any = None
    license: str | None = None
    tags: Any = ()
    repo_id: str | None = None
    discover: bool = False

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
        self._check_numbers()
        if self.model is not None and (not isinstance(self.model, str) or ":" not in self.model):
            raise ExpertSpecError(f"expert {self.name!r}: 'model' must read '<provider>:<model id>' "
                                  f"(e.g. 'openai:gpt-4o-mini'), got {self.model!r:.60}")
        if self.system_prompt is not None and (not isinstance(self.system_prompt, str) or not self.system_prompt.strip()):
            raise ExpertSpecError(f"expert {self.name!r}: 'system_prompt' must be non-empty text, got {self.system_prompt!r:.60}")
        if self.system_prompt is not None and self.kind == "hf":
            raise ExpertSpecError(f"expert {self.name!r}: 'system_prompt' applies to chat experts; an 'hf' expert reads "
                                  "prompt + reference as they are")
        if not isinstance(self.discover, bool) or (self.discover and not self.repo_id):
            raise ExpertSpecError(f"expert {self.name!r}: 'discover' is true or false, and true needs a 'repo_id' "
                                  f"(a Hugging Face Hub id); got discover={self.discover!r}, repo_id={self.repo_id!r}")
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))
        try:   # the metadata is checked as the expert library checks it: one set of rules
            object.__setattr__(self, "tags", self.to_expert().tags)
        except ExpertLibraryError as exc:
            raise ExpertSpecError(str(exc)) from None

    def _check_numbers(self) -> None:
        for key in ("input_cost", "output_cost", "requests_per_second"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):
                raise ExpertSpecError(f"expert {self.name!r}: {key} must be a finite number >= 0, got {value!r}")
        if self.requests_per_second == 0:   # a limiter at 0 requests/s never lets a call through
            raise ExpertSpecError(f"expert {self.name!r}: requests_per_second must be > 0 (leave it out for no "
                                  "rate limit), got 0")
        for key in ("concurrency", "expected_output_tokens"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ExpertSpecError(f"expert {self.name!r}: {key} must be a whole number >= 1, got {value!r}")

    @property
    def kind(self) -> str:
        """``"chat"`` (a LangChain chat model from ``model``), ``"hf"`` or ``"python"``."""
        return "chat" if self.model is not None else "hf" if self.hf is not None else "python"

    @property
    def provider(self) -> str | None:
        return None if self.model is None else self.model.split(":", 1)[0]

    @property
    def base_url(self) -> str | None:
        """The endpoint in ``model_kwargs`` (``base_url`` or ``openai_api_base``), or ``None``."""
        url = self.model_kwargs.get("base_url") or self.model_kwargs.get("openai_api_base")
        return None if url is None else str(url)

    @property
    def is_local(self) -> bool:
        """Whether ``base_url`` is a server on this machine (``127.0.0.1``, ``localhost``, ``::1``)."""
        try:
            return self.base_url is not None and urlsplit(self.base_url).hostname in LOCAL_HOSTS
        except ValueError:
            return False

    @property
    def max_tokens(self) -> int | None:
        """The limit on an answer's tokens in ``model_kwargs`` (:data:`LIMIT_KEYS`), or ``None``."""
        for key in LIMIT_KEYS:
            value = self.model_kwargs.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    def settings(self) -> dict[str, Any]:
        """What decides the answer: the model and its generation settings (no transport, no keys)."""
        prompt = {} if self.system_prompt is None else {"system_prompt": self.system_prompt}
        if self.kind == "chat":
            return {"model": self.model, **prompt,
                    **{k: v for k, v in sorted(self.model_kwargs.items()) if k not in TRANSPORT_KEYS}}
        if self.kind == "hf":
            return {"hf": self.hf, "gguf_file": self.gguf_file, "max_length": self.max_length}
        return {"python": getattr(self.runnable, "__qualname__", type(self.runnable).__qualname__), **prompt,
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
        """The :class:`~tryage.experts.Expert` record of this entry (prices, metadata, measured values)."""
        return Expert(name=self.name, input_cost=self.input_cost, output_cost=self.output_cost,
                      description=self.description, repo_id=self.repo_id or self.model or self.hf,
                      **{k: getattr(self, k) for k in METADATA_FIELDS if k != "repo_id"}, **measured)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "") -> ExpertSpec:
        """An entry of an experts file; ``where`` says which (``"entry 3 of experts.json"``) in errors."""
        at = f" ({where})" if where else ""
        if not isinstance(data, Mapping):
            raise ExpertSpecError(f"an expert entry must be an object, got {data!r:.80}{at}")
        if "name" not in data:
            raise ExpertSpecError(f"an expert entry needs a 'name'{at}; it has {sorted(map(str, data))}")
        values = dict(data)
        for old, new in DEPRECATED_FIELDS.items():
            if old in values:
                if new in values:
                    raise ExpertSpecError(f"expert {data.get('name')!r}: give {new!r} only ({old!r} is its old name)")
                warnings.warn(f"expert {data.get('name')!r}: {old!r} is deprecated; write {new!r} (USD per 1M tokens)",
                              DeprecationWarning, stacklevel=3)
                values[new] = values.pop(old)
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            hint = " (keys are read from the environment only)" if set(unknown) & SECRET_KEYS else ""
            raise ExpertSpecError(f"expert {data.get('name')!r}: unknown field(s) {unknown}{hint}; "
                                  f"allowed: {', '.join(FIELDS)}")
        return cls(**values)


#: The fields of an experts-file entry (everything but ``runnable``, which is given in Python).
FIELDS = tuple(f.name for f in dataclasses.fields(ExpertSpec) if f.name != "runnable")


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
        data = _read_file(source)
        specs = [ExpertSpec.from_dict(e, where=f"entry {i} of {source}") for i, e in enumerate(data, start=1)]
    elif isinstance(experts, Mapping):
        specs = [ExpertSpec.from_dict({"name": name, **value}) if isinstance(value, Mapping) and not callable(value)
                 else ExpertSpec(name=name, runnable=value) for name, value in experts.items()]
    else:
        specs = [e if isinstance(e, ExpertSpec) else ExpertSpec.from_dict(e, where=f"entry {i}")
                 for i, e in enumerate(experts, start=1)]
    if not specs:
        raise ExpertSpecError("no experts given")
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExpertSpecError(f"duplicate expert name(s) {duplicates}")
    return specs


def discover_metadata(specs: Iterable[ExpertSpec], *, client: Any = None) -> list[ExpertSpec]:
    """``specs`` with what the entries marked ``"discover": true`` leave out (``parameters``, dates,
    ``license``) filled from the Hub's record of their ``repo_id`` (one fetch, cached; see
    :class:`~tryage.hub.client.HubClient`, which ``client`` is, default: one with its default settings).
    The entry's own values win. Hub failures are :class:`~tryage.errors.HubError` s, before any call."""
    specs = list(specs)
    wanted = [s for s in specs if s.discover]
    if not wanted:
        return specs
    from tryage.hub.client import HubClient

    records = (client or HubClient()).fetch([s.repo_id for s in wanted])  # type: ignore[misc]
    found = {s.name: r.expert for s, r in zip(wanted, records)}
    keys = ("parameters", "created_at", "last_modified", "license")
    return [s if s.name not in found else dataclasses.replace(
        s, discover=False, **{k: getattr(found[s.name], k) for k in keys if getattr(s, k) in (None, "")})
        for s in specs]


def _read_file(source: Path) -> list[Any]:
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
    return data


__all__ = ["FIELDS", "KEY_VARIABLES", "LIMIT_KEYS", "LOCAL_HOSTS", "SECRET_KEYS", "TRANSPORT_KEYS", "ExpertSpec",
           "discover_metadata", "load_experts", "python_identity"]
