"""What a LangChain runnable receives, read for routing: the text to route on, and the same input
with every ``[Flag: ...]`` removed for the expert.

Accepted inputs are those of a chat model (a string, a list of messages or message-likes, a
:class:`~langchain_core.prompt_values.PromptValue`) and a dict holding one of them under a key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tryage.errors import ConfigurationError, require

require("langchain_core", "langchain", "langchain-core")

from langchain_core.messages import BaseMessage, ChatMessage, convert_to_messages  # noqa: E402
from langchain_core.prompt_values import ChatPromptValue, PromptValue, StringPromptValue  # noqa: E402

from tryage.conversation import EarlierTurns  # noqa: E402
from tryage.objective import RoutingDecision  # noqa: E402

_ACCEPTED = "a string, a list of messages, a PromptValue, or a dict holding one of them"


@dataclass(frozen=True)
class RoutableInput:
    """One input as the router sees it.

    Attributes:
        text: The text the router reads (flags still in it: the router interprets them).
        value: The routed value, normalised: a ``str``, a ``list[BaseMessage]`` or a ``PromptValue``.
        container: The dict the value came from, or ``None``.
        key: The dict key of the value, or ``None``.
        routed: Index of the message whose string content alone is ``text`` (the routed turn, when
            ``window`` is 1), or ``None``. Its stripped text is the decision's ``prompt``.
    """

    text: str
    value: Any
    container: Mapping[str, Any] | None = None
    key: str | None = None
    routed: int | None = None


def is_user(message: BaseMessage) -> bool:
    return message.type == "human" or (isinstance(message, ChatMessage) and message.role == "user")


def message_text(message: BaseMessage) -> str:
    """The text of a message: its string content, or its text blocks joined by newlines."""
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "\n".join(parts)


def _conversation_text(messages: Sequence[BaseMessage], window: int) -> tuple[str, int | None]:
    users = [i for i, m in enumerate(messages) if is_user(m)]
    if not users:
        kinds = ", ".join(m.type for m in messages) or "none"
        raise ConfigurationError(f"cannot route: the input holds no user message (message types: {kinds})")
    last = users[-1]
    if window == 1:
        return message_text(messages[last]), last if isinstance(messages[last].content, str) else None
    turns = [m for m in messages[: last + 1] if is_user(m) or m.type == "ai"]
    texts = [t for t in (message_text(m) for m in turns[-window:]) if t.strip()]
    return "\n".join(texts), None


def context_text(routable: RoutableInput, window: int, turns: EarlierTurns, *, max_chars: int) -> str:
    """The conversation before the turns the router reads, as context for routing (see
    :meth:`tryage.conversation.EarlierTurns.context`): its user and AI turns.

    Tool calls, tool results and system messages are not read; neither are the turns after the last
    user message (an agent loop's tool steps), so every step of one agent loop sees the same
    context. ``""`` when the input is not a conversation or has no earlier turn.
    """
    value = routable.value
    if isinstance(value, ChatPromptValue):
        value = value.messages
    if isinstance(value, (str, PromptValue)) or not value:
        return ""
    users = [i for i, m in enumerate(value) if is_user(m)]
    said = [m for m in value[: users[-1] + 1] if is_user(m) or m.type == "ai"]
    return turns.context([(message_text(m), is_user(m)) for m in said[:-window]], max_chars=max_chars)


def read_input(input: Any, *, input_key: str, window: int) -> RoutableInput:  # noqa: A002 - LangChain's name
    """Find the routed value in ``input`` and the text to route on.

    Raises:
        ConfigurationError: the input is of an unsupported type, a dict lacks ``input_key``, or
            there is no user message. (Flags and empty prompts are the router's to judge.)
    """
    container: Mapping[str, Any] | None = None
    key: str | None = None
    value = input
    if isinstance(input, Mapping):
        if input_key not in input:
            raise ConfigurationError(
                f"the input dict has no key {input_key!r} (keys: {', '.join(map(repr, input)) or 'none'}); "
                f"pass input_key=<the key holding the prompt or messages>")
        container, key, value = input, input_key, input[input_key]
    routed: int | None = None
    if isinstance(value, str):
        text = value
    elif isinstance(value, StringPromptValue):
        text = value.text
    elif isinstance(value, PromptValue):
        value = ChatPromptValue(messages=value.to_messages()) if not isinstance(value, ChatPromptValue) else value
        text, routed = _conversation_text(value.messages, window)
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        try:
            value = convert_to_messages(value)
        except (ValueError, TypeError, NotImplementedError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # LangChain adds a help link line
            raise ConfigurationError(f"cannot read the input as messages ({first}); accepted: {_ACCEPTED}") from exc
        text, routed = _conversation_text(value, window)
    else:
        where = f" under key {key!r}" if key is not None else ""
        raise ConfigurationError(f"cannot route a {type(value).__name__}{where}; accepted: {_ACCEPTED}")
    return RoutableInput(text, value, container, key, routed)


def _strip_message(message: BaseMessage, turns: EarlierTurns, routed_text: str | None) -> BaseMessage:
    if not is_user(message):
        return message
    content = message.content
    if isinstance(content, str):
        new: Any = routed_text if routed_text is not None else turns.without_flags(content)
    else:
        new = []
        for block in content:
            if isinstance(block, str):
                new.append(turns.without_flags(block))
            elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                new.append({**block, "text": turns.without_flags(block["text"])})
            else:
                new.append(block)
    return message if new == content else message.model_copy(update={"content": new})


def strip_input(routable: RoutableInput, decision: RoutingDecision, turns: EarlierTurns) -> Any:
    """What the expert receives: the input with flags removed from every user turn.

    The routed text's flags were parsed once, by the router: a routed string (or the routed turn)
    becomes ``decision.prompt``; every other user turn is the core's text without its flags
    (``turns``, which parses each turn once, however often it is read).
    """
    value = routable.value
    if isinstance(value, str):
        stripped: Any = decision.prompt
    elif isinstance(value, StringPromptValue):
        stripped = StringPromptValue(text=decision.prompt)
    else:
        messages = value.messages if isinstance(value, ChatPromptValue) else value
        stripped = [_strip_message(m, turns, decision.prompt if i == routable.routed else None)
                    for i, m in enumerate(messages)]
        if isinstance(value, ChatPromptValue):
            stripped = ChatPromptValue(messages=stripped)
    if routable.container is None:
        return stripped
    return {**routable.container, routable.key: stripped}
