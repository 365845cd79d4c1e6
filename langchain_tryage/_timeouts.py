"""Time limits on an expert: ChatTryage's ``timeout`` enforced on a call and on each chunk of a stream.

An expert's client may ignore its own timeout; these helpers give it up on time all the same. A sync
call or stream runs in a daemon thread (with the caller's context) and is left behind when late; an
async one is awaited under ``asyncio.timeout`` in the caller's task. Late means ``limit`` seconds:
ChatTryage passes its ``timeout`` plus :data:`TIMEOUT_GRACE_S`. The error raised is a ``TimeoutError``
naming the expert (:func:`late`, :func:`stalled`); an expert's own ``TimeoutError`` keeps its message.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any


async def alist(awaitable: Any) -> list[Any]:
    """``[await awaitable]``: an async expert call as a group's list of outputs."""
    return [await awaitable]


TIMEOUT_GRACE_S = 1.0
"""How long past ``timeout`` ChatTryage waits before giving an expert up (its client should stop first)."""


def late(name: str, limit: float) -> TimeoutError:
    return TimeoutError(f"expert {name!r} did not answer within {limit:g} s (timeout + {TIMEOUT_GRACE_S:g} s grace)")


def stalled(name: str, limit: float) -> TimeoutError:
    return TimeoutError(f"expert {name!r} sent nothing for {limit:g} s (timeout + {TIMEOUT_GRACE_S:g} s grace); "
                        "its stream was given up")


def chunks_within(limit: float, name: str, open_stream: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    """The chunks of ``open_stream()``, each given up after ``limit`` seconds without one.

    The stream is read by one daemon thread (in this context) and handed over a queue, so a stalled
    expert is left behind on time; a reader who stops early makes the thread close the stream at its
    next chunk.
    """
    chunks: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    stop = threading.Event()
    context = contextvars.copy_context()

    def read() -> None:
        stream = iter(open_stream())
        try:
            for chunk in stream:
                chunks.put(("chunk", chunk))
                if stop.is_set():
                    break
            chunks.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            chunks.put(("error", exc))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    threading.Thread(target=context.run, args=(read,), name=f"tryage-stream-{name}", daemon=True).start()
    try:
        while True:
            try:
                kind, value = chunks.get(timeout=limit)
            except queue.Empty:
                raise stalled(name, limit) from None
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


async def achunks_within(limit: float, name: str, stream: Any) -> Any:
    """The chunks of the async ``stream``, each given up after ``limit`` seconds without one."""
    chunks = stream.__aiter__()
    try:
        while True:
            try:
                chunk = await _timed(chunks.__anext__(), limit)
            except StopAsyncIteration:
                return
            except _Expired:
                raise stalled(name, limit) from None
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class _Expired(Exception):
    """ChatTryage's own limit ran out (an expert's own ``TimeoutError`` is not this)."""


async def _timed(awaitable: Any, limit: float) -> Any:
    """``await awaitable`` within ``limit`` s, in this task (so the context an async generator sets stays its own)."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10: wait_for's TimeoutError is asyncio's own class there
        try:
            return await asyncio.wait_for(awaitable, limit)
        except asyncio.TimeoutError:
            raise _Expired from None
    scope = timeout(limit)
    try:
        async with scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():
            raise _Expired from None
        raise


async def awithin(limit: float, name: str, awaitable: Any) -> Any:
    try:
        return await _timed(awaitable, limit)
    except _Expired:
        raise late(name, limit) from None


def within(limit: float, name: str, work: Callable[[], Any]) -> Any:
    """``work()`` in a daemon thread (with this context), given up after ``limit`` seconds.

    A sync call cannot be cancelled: an expert that ignores its own timeout keeps its thread until it
    returns, but the caller is answered (or falls back) on time.
    """
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            box["value"] = context.run(work)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"tryage-expert-{name}", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise late(name, limit)
    if "error" in box:
        raise box["error"]
    return box["value"]


Calls = tuple[Callable[[], Any], Callable[[], Any]]


def call_within(timeout: float | None, name: str, expert: Any, config: Any, kwargs: dict[str, Any],
                payload: Any) -> Calls:
    """The sync and async calls of runnable ``expert`` on ``payload`` (each giving a one-output
    list), given up ``timeout`` + :data:`TIMEOUT_GRACE_S` seconds on when ``timeout`` is set."""
    if timeout is None:
        return (lambda: [expert.invoke(payload, config, **kwargs)],
                lambda: alist(expert.ainvoke(payload, config, **kwargs)))
    limit = timeout + TIMEOUT_GRACE_S
    return (lambda: [within(limit, name, lambda: expert.invoke(payload, config, **kwargs))],
            lambda: alist(awithin(limit, name, expert.ainvoke(payload, config, **kwargs))))


def stream_within(timeout: float | None, name: str, expert: Any, config: Any, kwargs: dict[str, Any],
                  payload: Any) -> Calls:
    """The sync and async streams of runnable ``expert`` on ``payload``, each chunk given up
    ``timeout`` + :data:`TIMEOUT_GRACE_S` seconds on when ``timeout`` is set."""
    if timeout is None:
        return (lambda: expert.stream(payload, config, **kwargs),
                lambda: expert.astream(payload, config, **kwargs))
    limit = timeout + TIMEOUT_GRACE_S
    return (lambda: chunks_within(limit, name, lambda: expert.stream(payload, config, **kwargs)),
            lambda: achunks_within(limit, name, expert.astream(payload, config, **kwargs)))


__all__ = ["TIMEOUT_GRACE_S", "achunks_within", "alist", "awithin", "call_within", "chunks_within", "late",
           "stalled", "stream_within", "within"]
