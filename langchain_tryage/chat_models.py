"""``ChatTryage``: a chat model that routes each conversation to the best of several chat models.

Example::

    from langchain.agents import create_agent
    from langchain_tryage import ChatTryage

    model = ChatTryage(router=router, experts={"small": small_chat, "large": large_chat})
    agent = create_agent(model=model, tools=[search])

Everything a chat model does goes to the chosen expert: ``bind_tools`` binds the tools on every
expert, ``with_structured_output`` uses each expert's own structured output, streaming streams
the expert's tokens. The router reads the last user message (``window`` widens that), so every
step of an agent loop over one question goes to the same expert.

Per-call options: ``tryage_weights={...}`` and ``model="<expert>"`` (use that expert) as keyword
arguments, or ``tryage_weights`` / ``tryage_expert`` in ``config["configurable"]``. Calls open a
chain run named ``ChatTryage`` holding a ``TryageRoute`` run (the decision) and the expert's
chat-model run (tagged ``tryage:expert=<name>``). The returned message's ``response_metadata``
holds ``tryage_expert`` (the expert that answered) and ``tryage_decision`` (predicted losses,
penalties and totals of every expert).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from langchain_tryage._routing import (
    EXPERT_KEY,
    WEIGHTS_KEY,
    check_experts,
    check_router,
    check_window,
)
from langchain_tryage.router_chain import TryageRouterChain, _Job

from langchain_core.callbacks import (  # noqa: I001 - after the dependency check in _inputs
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config, get_config_list
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field

from tryage.errors import ConfigurationError

_FORWARDED = ("temperature", "max_tokens", "timeout")


def _annotate(message: Any, job: _Job) -> Any:
    if not isinstance(message, BaseMessage):
        return message
    decision = job.decision.to_dict()
    extra: dict[str, Any] = {"tryage_expert": job.expert,
                             "tryage_decision": {k: decision[k] for k in ("expert", "flags", "weights", "scores")}}
    if job.tried:
        extra["tryage_fallback_from"] = list(job.tried)
    return message.model_copy(update={"response_metadata": {**message.response_metadata, **extra}})


def _children_of(run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None) -> Any:
    """Callbacks for runs nested in a chat-model run (LLM run managers have no ``get_child``)."""
    if run_manager is None:
        return None
    cls = AsyncCallbackManager if isinstance(run_manager, AsyncCallbackManagerForLLMRun) else CallbackManager
    manager = cls(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


class _ChatRouterChain(TryageRouterChain):
    """The router chain behind one ChatTryage call: binds tools on the chosen expert, annotates replies."""

    tools: list[Any] | None = None
    tool_choice: Any = None
    tool_options: dict[str, Any] = Field(default_factory=dict)
    max_retries: int | None = None

    def _expert_runnable(self, name: str) -> Runnable[Any, Any]:
        expert: Runnable[Any, Any] = self.experts[name]
        if self.tools is not None:
            choice = {} if self.tool_choice is None else {"tool_choice": self.tool_choice}
            expert = expert.bind_tools(self.tools, **choice, **self.tool_options)  # type: ignore[attr-defined]
        if self.max_retries:
            expert = expert.with_retry(stop_after_attempt=self.max_retries + 1)
        return expert

    def _finish(self, output: Any, job: _Job) -> Any:
        return _annotate(output, job)

    def _finish_chunk(self, chunk: Any, job: _Job, first: bool) -> Any:
        return _annotate(chunk, job) if first else chunk


class ChatTryage(BaseChatModel):
    """A chat model over several chat-model experts; a Tryage router picks one per conversation.

    Args:
        router: A :class:`tryage.TryageRouter` (or an object with ``route_batch``).
        experts: Expert name → chat model; the names must be the router's experts.
        model: Name reported in traces (``ls_model_name``); ``"tryage"`` by default.
        window: Messages the router reads (1: the last user message).
        weights: Default constraint weights (per call: ``tryage_weights``; flags override both).
        fallback: When the chosen expert raises, try the next-best expert.
        max_fallbacks: At most this many further experts (``None``: all eligible ones).
        temperature: If set, sent to the chosen expert with every call (as ``temperature=``).
        max_tokens: If set, sent to the chosen expert with every call.
        timeout: If set, sent to the chosen expert with every call.
        stop: Default stop sequences, sent to the chosen expert.
        max_retries: Retries of the chosen expert (by ChatTryage) before falling back or raising.
        streaming: If ``True``, ``invoke`` streams from the expert and returns the joined message.
    """

    router: Any
    experts: dict[str, BaseChatModel]
    model_name: str = Field(default="tryage", alias="model")
    window: int = 1
    weights: dict[str, float] | None = None
    fallback: bool = False
    max_fallbacks: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    stop: list[str] | None = None
    max_retries: int | None = None
    streaming: bool = False

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True, protected_namespaces=())

    def __init__(self, **kwargs: Any) -> None:
        router = kwargs.get("router")
        experts = kwargs.get("experts")
        check_router(router)
        if not isinstance(experts, Mapping):
            raise ConfigurationError(
                f"experts must be a dict of expert name -> chat model; got {type(experts).__name__}")
        not_chat = {n: type(e).__name__ for n, e in experts.items() if not isinstance(e, BaseChatModel)}
        if not_chat:
            raise ConfigurationError(
                f"every ChatTryage expert must be a chat model (BaseChatModel); got {not_chat}; "
                "use TryageRouterChain to route between other runnables")
        check_experts(router, tuple(experts))
        check_window(kwargs.get("window", 1))
        super().__init__(**kwargs)

    # -- chat model identity ---------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "tryage"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "experts": list(self.experts), "weights": self.weights,
                "window": self.window, "fallback": self.fallback}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model")
        params = LangSmithParams(ls_provider="tryage", ls_model_type="chat",
                                 ls_model_name=model if isinstance(model, str) else self.model_name)
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # -- per-call setup --------------------------------------------------------------------------
    def _chain(self, kwargs: dict[str, Any]) -> tuple[_ChatRouterChain, dict[str, Any], dict[str, Any]]:
        """The router chain for one call, the configurable entries to add, and the expert's kwargs."""
        kwargs = dict(kwargs)
        tools = kwargs.pop("tools", None)
        tool_choice = kwargs.pop("tool_choice", None)
        tool_options = kwargs.pop("tool_options", None) or {}
        configurable: dict[str, Any] = {}
        if (weights := kwargs.pop("tryage_weights", None)) is not None:
            configurable[WEIGHTS_KEY] = weights
        if (model := kwargs.pop("model", None)) is not None:
            configurable[EXPERT_KEY] = model
        if kwargs.get("stop") is None:
            kwargs.pop("stop", None)
            if self.stop is not None:
                kwargs["stop"] = self.stop
        for name in _FORWARDED:
            if getattr(self, name) is not None:
                kwargs.setdefault(name, getattr(self, name))
        chain = _ChatRouterChain(
            self.router, self.experts, window=self.window, weights=self.weights, fallback=self.fallback,
            max_fallbacks=self.max_fallbacks, name=self.get_name(), tools=None if tools is None else list(tools),
            tool_choice=tool_choice, tool_options=tool_options, max_retries=self.max_retries)
        return chain, configurable, kwargs

    @staticmethod
    def _with(config: RunnableConfig | None, configurable: dict[str, Any]) -> RunnableConfig:
        config = ensure_config(config)
        if configurable:
            config["configurable"] = {**(config.get("configurable") or {}), **configurable}
        return config

    # -- runnable protocol -----------------------------------------------------------------------
    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,  # noqa: A002
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        if self.streaming:
            joined: Any = None
            for chunk in self.stream(input, config, stop=stop, **kwargs):
                joined = chunk if joined is None else joined + chunk
            return message_chunk_to_message(joined) if isinstance(joined, AIMessageChunk) else joined
        chain, configurable, kwargs = self._chain({**kwargs, "stop": stop})
        return chain.invoke(input, self._with(config, configurable), **kwargs)

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,  # noqa: A002
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        if self.streaming:
            joined: Any = None
            async for chunk in self.astream(input, config, stop=stop, **kwargs):
                joined = chunk if joined is None else joined + chunk
            return message_chunk_to_message(joined) if isinstance(joined, AIMessageChunk) else joined
        chain, configurable, kwargs = self._chain({**kwargs, "stop": stop})
        return await chain.ainvoke(input, self._with(config, configurable), **kwargs)

    def batch(self, inputs: list[LanguageModelInput], config: RunnableConfig | list[RunnableConfig] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any) -> list[AIMessage]:
        """One router pass for the whole batch, then one ``batch`` call per chosen expert."""
        if not inputs:
            return []
        chain, configurable, kwargs = self._chain(kwargs)
        configs = [self._with(c, configurable) for c in get_config_list(config, len(inputs))]
        return chain.batch(inputs, configs, return_exceptions=return_exceptions, **kwargs)

    async def abatch(self, inputs: list[LanguageModelInput],
                     config: RunnableConfig | list[RunnableConfig] | None = None,
                     *, return_exceptions: bool = False, **kwargs: Any) -> list[AIMessage]:
        if not inputs:
            return []
        chain, configurable, kwargs = self._chain(kwargs)
        configs = [self._with(c, configurable) for c in get_config_list(config, len(inputs))]
        return await chain.abatch(inputs, configs, return_exceptions=return_exceptions, **kwargs)

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,  # noqa: A002
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        chain, configurable, kwargs = self._chain({**kwargs, "stop": stop})
        yield from chain.stream(input, self._with(config, configurable), **kwargs)

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,  # noqa: A002
                      stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        chain, configurable, kwargs = self._chain({**kwargs, "stop": stop})
        async for chunk in chain.astream(input, self._with(config, configurable), **kwargs):
            yield chunk

    # -- the generate() path (legacy callers): same routing, nested under this model's run -----------
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        chain, configurable, kwargs = self._chain({**kwargs, "stop": stop})
        config = self._with({"callbacks": _children_of(run_manager)}, configurable)
        return ChatResult(generations=[ChatGeneration(message=chain.invoke(messages, config, **kwargs))])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        chain, configurable, kwargs = self._chain({**kwargs, "stop": stop})
        config = self._with({"callbacks": _children_of(run_manager)}, configurable)
        message = await chain.ainvoke(messages, config, **kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])

    # -- tools and structured output ---------------------------------------------------------------
    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], *,
                   tool_choice: str | None = None, **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` on every expert (checked now; the chosen expert's binding is used per call)."""
        tools = list(tools)
        choice = {} if tool_choice is None else {"tool_choice": tool_choice}
        for name, expert in self.experts.items():
            try:
                expert.bind_tools(tools, **choice, **kwargs)
            except NotImplementedError as exc:
                raise ConfigurationError(
                    f"expert {name!r} ({type(expert).__name__}) does not support tool calling; every expert "
                    "of a ChatTryage needs bind_tools to bind tools") from exc
        bound: dict[str, Any] = {"tools": tools, **choice}
        if kwargs:
            bound["tool_options"] = kwargs
        return self.bind(**bound)

    def with_structured_output(self, schema: dict[str, Any] | type, *, include_raw: bool = False,
                               **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """Route to the experts' own ``with_structured_output(schema, ...)`` runnables."""
        structured = {}
        for name, expert in self.experts.items():
            try:
                structured[name] = expert.with_structured_output(schema, include_raw=include_raw, **kwargs)
            except NotImplementedError as exc:
                raise ConfigurationError(
                    f"expert {name!r} ({type(expert).__name__}) does not support structured output") from exc
        return TryageRouterChain(self.router, structured, window=self.window, weights=self.weights,
                                 fallback=self.fallback, max_fallbacks=self.max_fallbacks, name=self.get_name())


__all__ = ["ChatTryage"]
