"""``ChatTryage``: a chat model that routes each conversation to the best of several chat models.

Example::

    from langchain.agents import create_agent
    from langchain_tryage import ChatTryage

    model = ChatTryage(router=router, experts={"small": small_chat, "large": large_chat},
                       expert_map={"small": "SmolLM2-135M", "large": "Llama-3-8B"})
    agent = create_agent(model=model, tools=[search])

``ChatTryage`` implements ``_generate`` / ``_agenerate`` / ``_stream`` / ``_astream``; ``invoke``,
``batch`` and ``stream`` are :class:`~langchain_core.language_models.BaseChatModel`'s, so its cache,
rate limiter and LLM-run callbacks apply. Everything a chat model does goes to the chosen expert:
``bind_tools`` binds the tools on every expert, ``with_structured_output`` uses each expert's own
structured output, streaming streams the expert's tokens.

Conversations: the router reads the last user message (``window`` widens that) and, as context, the
turns before it (user and AI text, newest first, flags removed). Both are routed in the same router
pass and each expert's predicted loss is ``(1 - context_weight) * loss(last turn) +
context_weight * loss(earlier turns)``; the last turn's flags and the call's weights apply. The
context is newest first so that an encoder truncating it to its window (``max_length`` tokens)
drops the oldest turns. Tool steps after the last user message are not read, so every step of an
agent loop over one question goes to the same expert. ``context_weight=0`` routes on the last turn
alone.

Stickiness (opt in with ``sticky=True``): a conversation thread, named by LangGraph's
``config["configurable"]["thread_id"]`` or an explicit ``"tryage_thread"`` key there (or
``tryage_thread=`` per call), stays on the expert that last answered it unless another expert's
objective (predicted loss plus penalties) is lower by more than ``stickiness_margin``. A turn with
flags, or a forced expert, routes afresh. Threads live in a bounded, thread-safe LRU map
(``max_threads``) in this model's memory; a call without a thread is routed as usual.

Per-call options: ``tryage_weights={...}`` and ``model="<expert>"`` (use that expert) as keyword
arguments, or ``tryage_weights`` / ``tryage_expert`` in ``config["configurable"]``. A call's
chat-model run holds a ``TryageRoute`` run (the decision) and the expert's chat-model run (tagged
``tryage:expert=<name>``). The reply's ``response_metadata`` holds ``tryage_expert`` (the expert
that answered), ``tryage_decision`` (predicted losses, penalties and totals of every expert) and
``tryage_decision_id`` (a fresh id per decision: log it with the user's verdict, then train the
router on the outcomes), and with ``sticky=True`` on a thread ``tryage_sticky``: ``"new"``,
``"kept"`` or ``"switched"`` (also in the ``TryageRoute`` run's outputs as ``sticky``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NoReturn

from langchain_tryage._inputs import context_text, read_input, strip_input
from langchain_tryage._routing import (
    END,
    EXPERT_KEY,
    TAG_FALLBACK,
    TAG_ROUTE,
    WEIGHTS_KEY,
    Engine,
    Job,
    adrive,
    call_options,
    check_router,
    check_weights,
    check_window,
    drive,
    expert_tag,
    map_experts,
    open_stream,
    route,
    route_now,
    run_experts,
    turns_of,
)
from langchain_tryage._runs import calling, children, parent_of
from langchain_tryage._timeouts import call_within, stream_within
from langchain_tryage.router_chain import TryageRouterChain

from langchain_core.callbacks import (  # noqa: I001 - after the dependency check in _inputs
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    get_config_list,
)
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from tryage.collect.backends import endpoint_of
from tryage.collect.retry import unreachable
from tryage.conversation import EarlierTurns, ThreadStore, check_fraction, check_margin, stick
from tryage.errors import ConfigurationError, TryageError
from tryage.objective import RoutingDecision
from tryage.router import BatchRouter, ExpertMap, TryageRouter

_FORWARDED = ("temperature", "max_tokens", "timeout")
_ROUTING_KWARGS = ("tools", "tool_choice", "tool_options", "tryage_weights", "model", "tryage_thread")
THREAD_KEY = "tryage_thread"
"""``config["configurable"]`` key naming a conversation thread (wins over LangGraph's ``thread_id``)."""

_PREROUTED: ContextVar[tuple[Any, Mapping[Any, Any], EarlierTurns] | None] = ContextVar("tryage_prerouted",
                                                                                        default=None)
"""``(model, decisions, turns)``: what :meth:`ChatTryage.batch` routed in one pass, for the calls it
then makes, and the turns it read (so that each call reads them again without parsing them again)."""


def _annotate(message: Any, job: Job) -> Any:
    """``message`` with the routing decision in its ``response_metadata``."""
    if not isinstance(message, BaseMessage):
        return message
    decision = job.decision.to_dict()  # type: ignore[union-attr]
    extra: dict[str, Any] = {"tryage_expert": job.expert, "tryage_decision_id": job.decision_id,
                             "tryage_decision": {k: decision[k] for k in ("expert", "flags", "weights", "scores")}}
    if job.tried:
        extra["tryage_fallback_from"] = list(job.tried)
    if job.sticky is not None:
        extra["tryage_sticky"] = job.sticky
    return message.model_copy(update={"response_metadata": {**message.response_metadata, **extra}})


class _StructuredRouterChain(TryageRouterChain):
    """Routes to the experts' own structured-output runnables; the decision goes on the raw message."""

    def _finish(self, output: Any, job: Job) -> Any:
        if isinstance(output, dict) and isinstance(output.get("raw"), BaseMessage):
            return {**output, "raw": _annotate(output["raw"], job)}
        return output


class ChatTryage(BaseChatModel):
    """A chat model over several chat-model experts; a Tryage router picks one per conversation.

    Args:
        router: A :class:`tryage.TryageRouter`, or any :class:`tryage.router.Router` (or, with names
            checked per call, a :class:`tryage.router.BatchRouter`: ``route_batch`` alone).
        experts: Expert name → chat model. Names are the router's experts, or your own names mapped
            by ``expert_map``; a subset of the router's experts routes only among those.
        expert_map: ``{your name: router expert}`` for experts not named after a router expert.
        model: Name reported in traces (``ls_model_name``); ``"tryage"`` by default.
        window: Messages the router reads (1: the last user message).
        context_weight: Share of the earlier turns in each predicted loss, in [0, 1] (0: the last
            turn alone).
        sticky: Keep each conversation thread on its expert unless another is better by more than
            ``stickiness_margin``.
        stickiness_margin: How much lower another expert's objective must be to move a thread.
        max_threads: Threads remembered for stickiness (least recently used are forgotten).
        weights: Default constraint weights (per call: ``tryage_weights``; flags override both).
        fallback: When the chosen expert raises, try the next-best expert.
        max_fallbacks: At most this many further experts (``None``: all eligible ones).
        temperature: If set, sent to the chosen expert with every call (as ``temperature=``).
        max_tokens: If set, sent to the chosen expert with every call.
        timeout: If set, sent to the chosen expert with every call, and enforced by ChatTryage too: an
            expert (its retries included) that has not answered ``timeout`` + 1 s later is given up with
            a ``TimeoutError`` (then, with ``fallback``, the next expert answers), even when the
            expert's own client ignores its timeout. A stream is held to it chunk by chunk: one that sends
            nothing for ``timeout`` + 1 s is given up with a ``TimeoutError``, before its first chunk
            (then, with ``fallback``, the next expert streams) or later (raised to the reader, after the
            chunks already given).
        stop: Default stop sequences, sent to the chosen expert.
        max_retries: Retries of the chosen expert (by ChatTryage) before falling back or raising.
        streaming: If ``True``, ``invoke`` streams from the expert and returns the joined message.
    """

    router: BatchRouter
    experts: dict[str, BaseChatModel]
    expert_map: dict[str, str] | None = None
    model_name: str = Field(default="tryage", alias="model")
    window: int = 1
    context_weight: float = 0.25
    sticky: bool = False
    stickiness_margin: float = 0.05
    max_threads: int = 10_000
    weights: dict[str, float] | None = None
    fallback: bool = False
    max_fallbacks: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    stop: list[str] | None = None
    max_retries: int | None = None
    streaming: bool = False
    _names: ExpertMap = PrivateAttr()
    _threads: ThreadStore = PrivateAttr()

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
        names = map_experts(router, tuple(experts), kwargs.get("expert_map"))
        check_window(kwargs.get("window", 1))
        for name in ("sticky", "fallback", "streaming"):  # pydantic would read "yes" or "no" as True
            if name in kwargs and not isinstance(kwargs[name], bool):
                raise ConfigurationError(f"{name} must be True or False, got {kwargs[name]!r:.60}")
        if kwargs.get("weights") is not None:
            kwargs["weights"] = check_weights(router, kwargs["weights"], "weights")
        if "context_weight" in kwargs:
            kwargs["context_weight"] = check_fraction(kwargs["context_weight"], "context_weight")
        if "stickiness_margin" in kwargs:
            kwargs["stickiness_margin"] = check_margin(kwargs["stickiness_margin"])
        threads = ThreadStore(kwargs.get("max_threads", 10_000))
        super().__init__(**kwargs)
        self._names = names
        self._threads = threads

    def _convert_input(self, model_input: LanguageModelInput) -> PromptValue:
        """LangChain's reading of the input, its refusal of ``None``, a number or a list of those as Tryage's
        one-line :class:`~tryage.errors.ConfigurationError` (as every other input Tryage refuses)."""
        try:
            return super()._convert_input(model_input)
        except (ValueError, TypeError, NotImplementedError) as exc:
            if isinstance(exc, TryageError):
                raise
            raise ConfigurationError(f"ChatTryage takes a string, a list of messages or a PromptValue; got "
                                     f"{type(model_input).__name__}: {model_input!r:.60}") from None

    # -- chat model identity ---------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "tryage"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "experts": list(self.experts), "expert_map": self.expert_map,
                "weights": self.weights, "window": self.window, "context_weight": self.context_weight,
                "sticky": self.sticky, "stickiness_margin": self.stickiness_margin, "fallback": self.fallback}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """BaseChatModel's (``model=`` names the forced expert), with this model's default ``stop``."""
        params = super()._get_ls_params(stop=stop or self.stop, **kwargs)
        params["ls_provider"] = "tryage"
        return params

    # -- per-call options from the config ----------------------------------------------------------
    def _config_kwargs(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``tryage_weights`` / ``tryage_expert`` (and, when sticky, the thread: ``tryage_thread``,
        else ``thread_id``) of ``config["configurable"]`` as call kwargs (``_generate`` sees kwargs,
        not the config); explicit kwargs win. The four calls below only add these and note the call
        for :func:`_children`; the work is ``BaseChatModel``'s."""
        configurable = (config or {}).get("configurable") or {}
        extra = {}
        if configurable.get(WEIGHTS_KEY) is not None:
            extra["tryage_weights"] = configurable[WEIGHTS_KEY]
        if configurable.get(EXPERT_KEY) is not None:
            extra["model"] = configurable[EXPERT_KEY]
        if self.sticky:
            thread = configurable.get(THREAD_KEY, configurable.get("thread_id"))
            if thread is not None:
                extra["tryage_thread"] = thread
        return {**extra, **kwargs}

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,  # noqa: A002
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        with calling(self, config) as config:
            return super().invoke(input, config, stop=stop, **self._config_kwargs(config, kwargs))

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,  # noqa: A002
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        with calling(self, config) as config:
            return await super().ainvoke(input, config, stop=stop, **self._config_kwargs(config, kwargs))

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,  # noqa: A002
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        with calling(self, config) as config:
            yield from super().stream(input, config, stop=stop, **self._config_kwargs(config, kwargs))

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,  # noqa: A002
                      stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        with calling(self, config) as config:
            async for chunk in super().astream(input, config, stop=stop, **self._config_kwargs(config, kwargs)):
                yield chunk

    # -- batch: one router pass, then BaseChatModel's calls ------------------------------------------
    def _preroute(self, inputs: list[LanguageModelInput], config: Any,
                  kwargs: dict[str, Any]) -> tuple[ChatTryage, Mapping[Any, Any], EarlierTurns] | None:
        if len(inputs) < 2:
            return None
        jobs, turns = [], turns_of(self.router)
        for i, (inp, cfg) in enumerate(zip(inputs, get_config_list(config, len(inputs)))):
            try:
                jobs.append(self._job(i, self._convert_input(inp).to_messages(), CallbackManager(handlers=[]),
                                      self._config_kwargs(cfg, kwargs), turns))
            except Exception:  # noqa: BLE001 - the call itself reports it
                continue
        return self, route_now(self.router, jobs, self._names), turns

    def batch(self, inputs: list[LanguageModelInput], config: RunnableConfig | list[RunnableConfig] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any) -> list[AIMessage]:
        """Route the whole batch in one router pass, then run each call as ``BaseChatModel.batch``
        does (cache, rate limiter, callbacks), each using its decision from that pass."""
        token = _PREROUTED.set(self._preroute(inputs, config, kwargs))
        try:
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        finally:
            _PREROUTED.reset(token)

    async def abatch(self, inputs: list[LanguageModelInput],
                     config: RunnableConfig | list[RunnableConfig] | None = None,
                     *, return_exceptions: bool = False, **kwargs: Any) -> list[AIMessage]:
        """Async :meth:`batch`."""
        token = _PREROUTED.set(self._preroute(inputs, config, kwargs))
        try:
            return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        finally:
            _PREROUTED.reset(token)

    # -- the engine behind _generate / _agenerate / _stream / _astream -------------------------------
    def _job(self, index: int, messages: list[BaseMessage], manager: Any, kwargs: dict[str, Any],
             turns: EarlierTurns) -> Job:
        routable = read_input(messages, input_key="", window=self.window)
        options = call_options({}, self.weights, self._names, weights=kwargs.get("tryage_weights"),
                               expert=kwargs.get("model"))
        context = ""
        if self.context_weight > 0.0:
            context = context_text(routable, self.window, turns, max_chars=self._context_chars())
        thread = kwargs.get("tryage_thread") if self.sticky else None
        if thread is not None:
            ThreadStore.key(thread)  # an id that cannot be hashed fails here, before routing
        return Job(index, routable.text, options, manager, routable, context=context,
                   context_weight=self.context_weight, thread=thread)

    def _context_chars(self) -> int:
        """A bound on the context text: about 8 characters a token of the encoder's window (the
        encoder truncates to its window anyway; this only keeps very long conversations cheap)."""
        predictor = self.router.predictor if isinstance(self.router, TryageRouter) else None
        max_length = getattr(predictor, "max_length", None)
        return 8 * (max_length if isinstance(max_length, int) and max_length > 0 else 512)

    def _stick(self, job: Job, decision: RoutingDecision) -> RoutingDecision:
        """Stickiness: keep ``job``'s thread on its last expert unless ``decision`` beats it by the margin."""
        if job.thread is None:
            return decision
        decision, job.sticky = stick(decision, self._threads.get(job.thread), margin=self.stickiness_margin)
        return decision

    def _raise_named(self, job: Job, exc: BaseException) -> NoReturn:
        """Raise ``exc``, the first expert's error, or an ``ExpertUnreachableError`` naming the expert and
        its URL when its server could not be reached (refused, unknown host, timeout)."""
        name = job.queue[0] if job.queue else job.expert
        named = unreachable(exc, name, endpoint_of(self.experts[name]))
        if named is None:
            raise exc
        raise named from exc

    def _answered(self, job: Job) -> None:
        """Record the expert that answered ``job`` as its thread's expert."""
        if job.thread is not None:
            self._threads.set(job.thread, self._names.to_router[job.expert])

    def _expert_call(self, parent: Any, stop: list[str] | None, kwargs: dict[str, Any],
                     ) -> Callable[[Job], tuple[Runnable[Any, Any], RunnableConfig, dict[str, Any]]]:
        """What calling a job's current expert takes: the runnable, its config, its kwargs."""
        expert_kwargs = {k: v for k, v in kwargs.items() if k not in _ROUTING_KWARGS}
        stop = stop if stop is not None else self.stop
        if stop is not None:
            expert_kwargs["stop"] = stop
        for name in _FORWARDED:
            if getattr(self, name) is not None:
                expert_kwargs.setdefault(name, getattr(self, name))
        tools = kwargs.get("tools")
        choice = {} if kwargs.get("tool_choice") is None else {"tool_choice": kwargs["tool_choice"]}

        def prepare(job: Job) -> tuple[Runnable[Any, Any], RunnableConfig, dict[str, Any]]:
            expert: Runnable[Any, Any] = self.experts[job.expert]
            if tools is not None:
                expert = expert.bind_tools(tools, **choice, **(kwargs.get("tool_options") or {}))  # type: ignore[attr-defined]
            if self.max_retries:
                expert = expert.with_retry(stop_after_attempt=self.max_retries + 1)
            tags = [expert_tag(job.expert)] + ([TAG_FALLBACK] if job.tried else [])
            metadata = {"tryage_expert": job.expert, "tryage_decision_id": job.decision_id}
            if job.tried:
                metadata["tryage_fallback_from"] = list(job.tried)
            config: RunnableConfig = {"metadata": metadata}
            if parent is not None:
                config["callbacks"] = children(parent, *tags)
            else:
                config["tags"] = tags
            return expert, config, expert_kwargs

        return prepare

    def _routed(self, messages: list[BaseMessage], parent: Any, kwargs: dict[str, Any], is_async: bool) -> Engine:
        # configure() (not a bare child manager) so context handlers (collect_runs, LangSmith) see it
        configure = get_async_callback_manager_for_config if is_async else get_callback_manager_for_config
        owner, known, turns = _PREROUTED.get() or (None, None, None)
        if owner is not self or turns is None:
            known, turns = None, turns_of(self.router)
        job = self._job(0, messages, configure({"callbacks": children(parent, TAG_ROUTE)}), kwargs, turns)
        (routed,) = yield from route(self.router, [job], self._names, fallback=self.fallback,
                                     max_fallbacks=self.max_fallbacks, known=known,
                                     adjust=self._stick)
        if isinstance(routed, Exception):
            raise routed
        job.payload = strip_input(job.payload, job.decision, turns)  # type: ignore[arg-type]
        return job

    def _generate_engine(self, messages: list[BaseMessage], stop: list[str] | None, run_manager: Any,
                         is_async: bool, kwargs: dict[str, Any]) -> Engine:
        parent = parent_of(self, run_manager, is_async)
        job = yield from self._routed(messages, parent, kwargs, is_async)
        prepare = self._expert_call(parent, stop, kwargs)

        def call(name: str, group: list[Job]) -> tuple[Any, Any]:
            return call_within(self.timeout, name, *prepare(group[0]), group[0].payload)

        ((_, out),) = yield from run_experts([job], call, (Exception,))
        if isinstance(out, BaseException):
            self._raise_named(job, out)
        self._answered(job)
        return ChatResult(generations=[ChatGeneration(message=_annotate(out, job))])

    def _stream_engine(self, messages: list[BaseMessage], stop: list[str] | None, run_manager: Any,
                       is_async: bool, kwargs: dict[str, Any]) -> Engine:
        parent = parent_of(self, run_manager, is_async)
        job = yield from self._routed(messages, parent, kwargs, is_async)
        prepare = self._expert_call(parent, stop, kwargs)

        def call(job: Job) -> tuple[Any, Any]:
            return stream_within(self.timeout, job.expert, *prepare(job), job.payload)

        try:
            first, rest = yield from open_stream(job, call, (Exception,))
        except Exception as exc:  # noqa: BLE001 - raised again, naming the expert's server when it is down
            self._raise_named(job, exc)
        self._answered(job)
        return job, first, rest

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return drive(self._generate_engine(messages, stop, run_manager, False, kwargs))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return await adrive(self._generate_engine(messages, stop, run_manager, True, kwargs))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        job, first, rest = drive(self._stream_engine(messages, stop, run_manager, False, kwargs))
        if first is not END:
            yield ChatGenerationChunk(message=_annotate(first, job))
            for chunk in rest:
                yield ChatGenerationChunk(message=chunk)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        job, first, rest = await adrive(self._stream_engine(messages, stop, run_manager, True, kwargs))
        if first is not END:
            yield ChatGenerationChunk(message=_annotate(first, job))
            async for chunk in rest:
                yield ChatGenerationChunk(message=chunk)

    # -- tools and structured output ---------------------------------------------------------------
    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], *,
                   tool_choice: str | None = None, **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` on every expert (checked now; the chosen expert's binding is used per call).

        The binding holds the tools as OpenAI tool dicts, which is what LangGraph's
        ``create_react_agent`` reads from a pre-bound model.
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        choice = {} if tool_choice is None else {"tool_choice": tool_choice}
        for name, expert in self.experts.items():
            try:
                expert.bind_tools(formatted, **choice, **kwargs)
            except NotImplementedError as exc:
                raise ConfigurationError(
                    f"expert {name!r} ({type(expert).__name__}) does not support tool calling; every expert "
                    "of a ChatTryage needs bind_tools to bind tools") from exc
        bound: dict[str, Any] = {"tools": formatted, **choice}
        if kwargs:
            bound["tool_options"] = kwargs
        return self.bind(**bound)

    def with_structured_output(self, schema: dict[str, Any] | type, *, include_raw: bool = False,
                               **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """Route to the experts' own ``with_structured_output(schema, ...)`` runnables; with
        ``include_raw=True`` the raw message carries the decision as ``invoke``'s reply does.

        The structured runnable routes as :class:`TryageRouterChain` does: on the last user turn
        (``window``), without the conversation context or stickiness."""
        structured = {}
        for name, expert in self.experts.items():
            try:
                structured[name] = expert.with_structured_output(schema, include_raw=include_raw, **kwargs)
            except NotImplementedError as exc:
                raise ConfigurationError(
                    f"expert {name!r} ({type(expert).__name__}) does not support structured output") from exc
        return _StructuredRouterChain(self.router, structured, expert_map=self.expert_map, window=self.window,
                                      weights=self.weights, fallback=self.fallback,
                                      max_fallbacks=self.max_fallbacks, name=self.get_name())


__all__ = ["ChatTryage"]
