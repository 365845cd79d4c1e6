"""Routing for the server: a conversation read as ``ChatTryage`` reads it, in micro-batches, off the loop.

* :func:`conversation_text` — the last user turn (what is routed) and the earlier user and assistant
  turns, newest first with their flags cut (the context, blended in with
  :func:`tryage.conversation.blend_decisions`).
* :func:`strip_messages` — the messages an expert receives: flags cut from every user turn.
* :class:`MicroBatcher` — requests that arrive within ``window`` seconds (at most ``max_batch``
  prompts) share one ``route_batch``, run in one worker thread so the event loop keeps relaying
  other requests' streams while the encoder runs.
* :class:`DecisionStore` — recent decisions by id, so feedback can name a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tryage.constraints import Filter
from tryage.conversation import EarlierTurns
from tryage.errors import FlagError, ServeRequestError


def message_text(content: Any) -> str:
    """A message's text: a string, or the ``text`` parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def conversation_text(messages: Sequence[Mapping[str, Any]], turns: EarlierTurns, *,
                      max_chars: int = 4096) -> tuple[str, str]:
    """``(last user turn, context)``: the context is the earlier user/assistant turns newest first, flags cut
    (:meth:`EarlierTurns.context`, as ``ChatTryage`` builds it)."""
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        raise ServeRequestError(400, "messages hold no user message to route; add one with role 'user'",
                                param="messages")
    last = users[-1]
    earlier = [(message_text(m.get("content")), m.get("role") == "user") for m in messages[:last]
               if m.get("role") in ("user", "assistant")]
    return message_text(messages[last].get("content")), turns.context(earlier, max_chars=max_chars)


def strip_messages(messages: Sequence[Mapping[str, Any]], routed: str | None,
                   turns: EarlierTurns) -> list[dict[str, Any]]:
    """``messages`` with flags cut from every user turn; the last user turn becomes ``routed`` (the
    decision's clean prompt) when given. Content parts other than text are kept as they are."""
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        message = dict(message)
        if message.get("role") == "user":
            if users and i == users[-1] and routed is not None and isinstance(message.get("content"), str):
                message["content"] = routed
            else:
                message["content"] = _strip_content(message.get("content"), turns)
        out.append(message)
    return out


def _strip_content(content: Any, turns: EarlierTurns) -> Any:
    def cut(text: str) -> str:
        try:
            return turns.without_flags(text)
        except (FlagError, ValueError):
            return text

    if isinstance(content, str):
        return cut(content)
    if isinstance(content, list):
        return [{**p, "text": cut(p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str) else p
                for p in content]
    return content


@dataclass
class _Item:
    texts: list[str]
    weights: Mapping[str, float]
    filters: tuple[Filter, ...]
    min_quality: float | None
    future: asyncio.Future


class MicroBatcher:
    """Route requests together: one ``route_batch`` per distinct (weights, filters, quality floor) over what
    arrived within ``window`` seconds, in one worker thread.

    Args:
        router: A callable returning the router in force (read at each batch, so a swap takes effect
            at the next batch and a batch in flight finishes on the router it started with).
        window: Seconds to wait for more requests after the first.
        max_batch: Most prompts per batch (a request's prompts are never split, so one may exceed it).
        on_batch: Called with each batch's number of prompts (metrics).
    """

    def __init__(self, router: Callable[[], Any], *, window: float, max_batch: int,
                 on_batch: Callable[[int], Any] | None = None) -> None:
        self.router = router
        self.on_batch = on_batch
        self.window = window
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tryage-route")
        self.batches = 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=False)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the routing thread and wait for it (from another thread: the learner's)."""
        return self._pool.submit(fn).result()

    async def route(self, texts: list[str], weights: Mapping[str, float], filters: tuple[Filter, ...],
                    min_quality: float | None = None) -> list[Any]:
        """The decisions (or per-prompt errors) for ``texts``; ``min_quality`` ``None`` is the router's floor."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(texts, dict(weights), filters, min_quality, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].texts)
            deadline = loop.time() + self.window
            while size < self.max_batch:
                try:  # what queued while the last batch ran joins at once, however late the window
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                batch.append(item)
                size += len(item.texts)
            batch = [item for item in batch if not item.future.cancelled()]
            if not batch:
                continue
            self.batches += 1
            if self.on_batch is not None:
                self.on_batch(sum(len(item.texts) for item in batch))
            try:
                results = await loop.run_in_executor(self._pool, self._route, batch)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                results = [exc] * len(batch)
            for item, result in zip(batch, results):
                if item.future.cancelled():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    def _route(self, batch: list[_Item]) -> list[Any]:
        router = self.router()
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(batch):
            groups.setdefault((tuple(sorted(item.weights.items())), item.filters, item.min_quality), []).append(i)
        out: list[Any] = [None] * len(batch)
        for (weights, filters, floor), members in groups.items():
            texts = [t for i in members for t in batch[i].texts]
            try:
                decisions = router.route_batch(texts, weights=dict(weights), filters=filters, min_quality=floor,
                                               return_exceptions=True)
            except Exception as exc:  # noqa: BLE001 - a bad weight for this group only
                for i in members:
                    out[i] = exc
                continue
            start = 0
            for i in members:
                out[i] = decisions[start:start + len(batch[i].texts)]
                start += len(batch[i].texts)
        return out


@dataclass(frozen=True)
class Decided:
    """What feedback on a decision needs: the prompt the router read and the expert that answered."""

    prompt: str
    expert: str


class DecisionStore:
    """Recent decisions by id (a bounded LRU, safe across threads)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._items: OrderedDict[str, Decided] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return f"dec-{uuid.uuid4().hex}"

    def put(self, decision_id: str, prompt: str, expert: str) -> None:
        with self._lock:
            self._items[decision_id] = Decided(prompt, expert)
            self._items.move_to_end(decision_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, decision_id: str) -> Decided | None:
        with self._lock:
            return self._items.get(decision_id)


__all__ = ["DecisionStore", "Decided", "MicroBatcher", "conversation_text", "message_text", "strip_messages"]
