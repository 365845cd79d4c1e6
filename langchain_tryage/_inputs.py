"""What a LangChain runnable receives, read for routing: the text to route on, and the same input
with every ``[Flag: ...]`` removed for the expert.

Accepted inputs are those of a chat model (a string, a list of messages or message-likes, a
:class:`~langchain_core.prompt_values.PromptValue`) and a dict holding one of them under a key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tryage.errors import ConfigurationError, require

require("langchain_core", "langchain", "langchain-core")

from langchain_core.messages import BaseMessage, ChatMessage, convert_to_messages  # noqa: E402
from langchain_core.prompt_values import ChatPromptValue, PromptValue, StringPromptValue  # noqa: E402

from tryage.flags import FlagParser  # noqa: E402

# A flag at the start of a line takes the blanks after it; elsewhere it takes the blanks before it,
# so "Question? [Flag: cheapest]" -> "Question?" and indentation of other lines is left alone.
_FLAG_SPAN = re.compile(r"^[ \t]*\[\s*flag\s*:[^\[\]]*\][ \t]*|[ \t]*\[\s*flag\s*:[^\[\]]*\]",
                        re.IGNORECASE | re.MULTILINE)
_FLAG_OPEN = re.compile(r"\[\s*flag\s*:", re.IGNORECASE)

_ACCEPTED = "a string, a list of messages, a PromptValue, or a dict holding one of them"


@dataclass(frozen=True)
class RoutableInput:
    """One input as the router sees it.

    Attributes:
        text: The text the router reads (flags still in it: the router interprets them).
        value: The routed value, normalised: a ``str``, a ``list[BaseMessage]`` or a ``PromptValue``.
        container: The dict the value came from, or ``None``.
        key: The dict key of the value, or ``None``.
    """

    text: str
    value: Any
    container: Mapping[str, Any] | None = None
    key: str | None = None


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


def _conversation_text(messages: Sequence[BaseMessage], window: int) -> str:
    users = [i for i, m in enumerate(messages) if is_user(m)]
    if not users:
        kinds = ", ".join(m.type for m in messages) or "none"
        raise ConfigurationError(f"cannot route: the input holds no user message (message types: {kinds})")
    last = users[-1]
    if window == 1:
        return message_text(messages[last])
    turns = [m for m in messages[: last + 1] if is_user(m) or m.type == "ai"]
    texts = [t for t in (message_text(m) for m in turns[-window:]) if t.strip()]
    return "\n".join(texts)


def read_input(input: Any, *, input_key: str, window: int) -> RoutableInput:  # noqa: A002 - LangChain's name
    """Find the routed value in ``input`` and the text to route on.

    Raises:
        ConfigurationError: the input is of an unsupported type, a dict lacks ``input_key``, there
            is no user message, or the text to route on is empty.
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
    if isinstance(value, str):
        text = value
    elif isinstance(value, StringPromptValue):
        text = value.text
    elif isinstance(value, PromptValue):
        value = ChatPromptValue(messages=value.to_messages()) if not isinstance(value, ChatPromptValue) else value
        text = _conversation_text(value.messages, window)
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        try:
            value = convert_to_messages(value)
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise ConfigurationError(f"cannot read the input as messages ({exc}); accepted: {_ACCEPTED}") from exc
        text = _conversation_text(value, window)
    else:
        where = f" under key {key!r}" if key is not None else ""
        raise ConfigurationError(f"cannot route a {type(value).__name__}{where}; accepted: {_ACCEPTED}")
    if not text.strip():
        raise ConfigurationError(f"cannot route an empty input: the text to route on is {text!r}")
    return RoutableInput(text, value, container, key)


def strip_text(text: str, parser: FlagParser) -> str:
    """``text`` without its flags; text without flags comes back unchanged (white space included).

    Raises:
        FlagError: a flag is unknown or malformed (the router would reject it too).
    """
    if not _FLAG_OPEN.search(text):
        return text
    parser.parse(text)  # validates every flag, raises FlagError with the valid ones
    return _FLAG_SPAN.sub("", text).strip()


def _strip_message(message: BaseMessage, parser: FlagParser) -> BaseMessage:
    if not is_user(message):
        return message
    content = message.content
    if isinstance(content, str):
        new: Any = strip_text(content, parser)
    else:
        new = []
        for block in content:
            if isinstance(block, str):
                new.append(strip_text(block, parser))
            elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                new.append({**block, "text": strip_text(block["text"], parser)})
            else:
                new.append(block)
    return message if new == content else message.model_copy(update={"content": new})


def strip_input(routable: RoutableInput, parser: FlagParser) -> Any:
    """What the expert receives: the input with flags removed from every user turn."""
    value = routable.value
    if isinstance(value, str):
        stripped: Any = strip_text(value, parser)
    elif isinstance(value, StringPromptValue):
        stripped = StringPromptValue(text=strip_text(value.text, parser))
    elif isinstance(value, ChatPromptValue):
        stripped = ChatPromptValue(messages=[_strip_message(m, parser) for m in value.messages])
    else:
        stripped = [_strip_message(m, parser) for m in value]
    if routable.container is None:
        return stripped
    return {**routable.container, routable.key: stripped}
