"""Where a ``ChatTryage`` call's nested runs go: its ``TryageRoute`` run and the expert's run hang
under the chat-model run, whether LangChain handed ``_generate``/``_stream`` a run manager or not."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

from tryage.errors import require

require("langchain_core", "langchain", "langchain-core")

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
)
from langchain_core.runnables import RunnableConfig  # noqa: E402
from langchain_core.runnables.config import (  # noqa: E402
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
)

_CALL: ContextVar[tuple[Any, RunnableConfig] | None] = ContextVar("tryage_call", default=None)
"""``(model, config)`` of the ChatTryage call in progress. ``BaseChatModel.stream`` (and a
streaming ``invoke``) call ``_stream`` without the run manager; the config's callbacks and run id
let the route and expert runs nest under the chat-model run all the same."""


@contextmanager
def calling(model: Any, config: RunnableConfig | None) -> Iterator[RunnableConfig]:
    """Note ``model``'s call (with a run id) for :func:`parent_of` while it runs."""
    config = ensure_config(config)
    config["run_id"] = config.get("run_id") or uuid.uuid4()
    token = _CALL.set((model, config))
    try:
        yield config
    finally:
        with suppress(ValueError):  # a stream closed from another context
            _CALL.reset(token)


def children(parent: tuple[Any, Any] | None, *tags: str) -> Any:
    """Callbacks for a run nested in this chat-model run (LLM run managers have no ``get_child``);
    ``parent`` is ``(run manager or configured manager, run id)``."""
    if parent is None:
        return None
    source, run_id = parent
    is_async = isinstance(source, (AsyncCallbackManagerForLLMRun, AsyncCallbackManager))
    manager = (AsyncCallbackManager if is_async else CallbackManager)(handlers=[], parent_run_id=run_id)
    manager.set_handlers(source.inheritable_handlers)
    manager.add_tags(source.inheritable_tags)
    manager.add_metadata(source.inheritable_metadata)
    manager.add_tags(list(tags), inherit=False)
    return manager


def parent_of(model: Any, run_manager: Any, is_async: bool) -> tuple[Any, Any] | None:
    """Where ``model``'s nested runs go: the run manager, or (when LangChain streams without
    handing one over) the callbacks and run id of ``model``'s call in progress."""
    if run_manager is not None:
        return run_manager, run_manager.run_id
    owner, config = _CALL.get() or (None, None)
    if owner is not model:
        return None
    configure = get_async_callback_manager_for_config if is_async else get_callback_manager_for_config
    return configure(config), config["run_id"]


__all__ = ["calling", "children", "parent_of"]
