"""Test doubles for the LangChain adapter: a keyword loss predictor that counts its passes, and chat
models that record what they receive."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from tryage import Expert, ExpertLibrary, TryageRouter

EXPERTS = ("code", "legal", "general")
LIBRARY = ExpertLibrary([
    Expert("code", parameters=7_000_000_000),
    Expert("legal", parameters=13_000_000_000),
    Expert("general", parameters=1_000_000_000),
])
KEYWORDS = {"code": ("python", "function", "bug"), "legal": ("contract", "court", "law")}


class KeywordPredictor:
    """Loss 0.1 for an expert whose keyword is in the prompt, 0.9 otherwise; ``general`` is 0.5.

    ``passes`` records the size of every ``predict_losses`` call, ``prompts`` what it read.
    """

    experts = EXPERTS

    def __init__(self) -> None:
        self.passes: list[int] = []
        self.prompts: list[str] = []

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray:
        self.passes.append(len(prompts))
        self.prompts.extend(prompts)
        rows = []
        for p in prompts:
            low = p.lower()
            rows.append([0.1 if any(k in low for k in KEYWORDS["code"]) else 0.9,
                         0.1 if any(k in low for k in KEYWORDS["legal"]) else 0.9,
                         0.5])
        return np.array(rows)


def make_router() -> tuple[TryageRouter, KeywordPredictor]:
    predictor = KeywordPredictor()
    return TryageRouter(predictor, LIBRARY), predictor


def _text(message: BaseMessage) -> str:
    return message.content if isinstance(message.content, str) else str(message.content)


class EchoChatModel(BaseChatModel):
    """Answers ``"<label>: <last user text>"``; records every conversation it receives.

    With tools bound, its first reply calls the first tool with ``tool_args``; after a tool result
    it answers ``"<label>: tool said <result>"``. ``fail=True`` raises ``RuntimeError``.
    """

    label: str
    seen: list[list[BaseMessage]] = Field(default_factory=list)
    seen_kwargs: list[dict[str, Any]] = Field(default_factory=list)
    fail: bool = False
    tool_args: dict[str, Any] = Field(default_factory=lambda: {"a": 2, "b": 3})

    @property
    def _llm_type(self) -> str:
        return "echo"

    def _reply(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        self.seen.append(list(messages))
        self.seen_kwargs.append(dict(kwargs))
        if self.fail:
            raise RuntimeError(f"{self.label} is down")
        last = messages[-1]
        tools = kwargs.get("tools")
        if isinstance(last, ToolMessage):
            return AIMessage(content=f"{self.label}: tool said {last.content}")
        if tools:
            name = tools[0]["function"]["name"]
            return AIMessage(content="", tool_calls=[{"name": name, "args": dict(self.tool_args), "id": "call-1"}])
        user = [m for m in messages if m.type == "human"]
        return AIMessage(content=f"{self.label}: {_text(user[-1]) if user else ''}")

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages, stop=stop, **kwargs))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        reply = self._reply(messages, stop=stop, **kwargs)
        if reply.tool_calls:
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[
                {"name": c["name"], "args": str(c["args"]).replace("'", '"'), "id": c["id"], "index": 0}
                for c in reply.tool_calls]))
            return
        for piece in re.findall(r"\S+\s*", str(reply.content)):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any):  # noqa: ANN201
        formatted = [convert_to_openai_tool(t) for t in tools]
        extra = {} if tool_choice is None else {"tool_choice": tool_choice}
        return self.bind(tools=formatted, **extra, **kwargs)


class GroupRecorder(Runnable[Any, str]):
    """A runnable expert that records every ``batch`` group it is given (and answers ``label: input``)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.groups: list[list[Any]] = []
        self.name = f"GroupRecorder[{label}]"

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> str:  # noqa: A002
        return self.batch([input], config)[0]

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> str:  # noqa: A002
        return (await self.abatch([input], config))[0]

    def batch(self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False,
              **kwargs: Any) -> list[str]:
        self.groups.append(list(inputs))
        return [f"{self.label}: {x}" for x in inputs]

    async def abatch(self, inputs: list[Any], config: Any = None, *, return_exceptions: bool = False,
                     **kwargs: Any) -> list[str]:
        return self.batch(inputs, config)


class NamedRouter:
    """A router that is not a TryageRouter: it wraps one and may rename its choice (to test checks)."""

    def __init__(self, inner: TryageRouter, rename: dict[str, str] | None = None) -> None:
        self.inner = inner
        self.rename = rename or {}

    def route_batch(self, prompts: Sequence[str], *, weights: Any = None, filters: Any = (),
                    return_exceptions: bool = False) -> list[Any]:
        import dataclasses

        out = self.inner.route_batch(prompts, weights=weights, filters=filters, return_exceptions=return_exceptions)
        return [d if isinstance(d, Exception) else dataclasses.replace(d, expert=self.rename.get(d.expert, d.expert))
                for d in out]
