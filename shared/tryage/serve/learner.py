"""Feedback for the server: a durable log, and router updates saved atomically and swapped in.

The state folder holds::

    feedback.jsonl      every feedback row, appended and fsync'd before the client hears "ok"
    routers/v000001/    each router learned from the log (a saved router folder)
    current.json        which folder is in force and how many log rows it has learned from

An update trains a copy of the router in force (``router.update``: the same warm start as
``tryage update``) on the rows not learned yet, saves it to a new folder, then replaces
``current.json`` atomically; only then is the copy swapped in. Requests routed meanwhile use the old
router to the end. Killed at any moment, the folder names the old router or the new one, and the
log holds every row acknowledged; a restart loads the router in force and learns the rest.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tryage._io import AppendLog, atomic_write_text, iter_jsonl
from tryage.errors import LogLockedError

_KEEP = 2  # router folders kept: the one in force and the one before


class Learner:
    """The state folder of one server: the feedback log, the routers learned, the rows pending.

    Args:
        state_dir: The folder (created when missing).
        update_every: Pending rows that make :meth:`due` true.
        read_only: Neither log nor learn (the state folder is only read).
    """

    def __init__(self, state_dir: str | Path, *, update_every: int, read_only: bool = False) -> None:
        self.folder = Path(state_dir)
        self.update_every = update_every
        self.read_only = read_only
        self.log = AppendLog(self.folder / "feedback.jsonl", what="feedback log", fsync=True, locked=functools.partial(
            LogLockedError, what="feedback log", holder="tryage serve",
            hint="stop it, or give this one another --state-dir (or --read-only)"))
        self.version = 0
        self.applied = 0
        self.logged = 0
        self._lock = threading.Lock()

    # -- starting -------------------------------------------------------------------------------
    def load(self, initial: Callable[[], Any], name: str = "the given router") -> tuple[Any, str]:
        """The router to serve and where it came from: the one in force in the folder, else ``initial()``
        (described as ``name``)."""
        if not self.read_only:
            self.log.open()
        self.logged = sum(1 for _ in self._rows())
        pointer = self.folder / "current.json"
        if pointer.is_file():
            from tryage.router import TryageRouter

            state = json.loads(pointer.read_text(encoding="utf-8"))
            self.version, self.applied = int(state["version"]), int(state["rows"])
            path = self.folder / "routers" / state["folder"]
            return TryageRouter.from_pretrained(path), f"{path} (learned from {self.applied} feedback row(s))"
        return initial(), name

    def close(self) -> None:
        self.log.close()

    # -- feedback -------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return self.logged - self.applied

    def record(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append ``rows`` and fsync them (blocking: call it from a worker thread)."""
        stamped = [{**row, "time": round(time.time(), 3)} for row in rows]
        with self._lock:
            self.log.append(stamped, hint="the rows acknowledged before are kept")
            self.logged += len(stamped)

    def due(self) -> bool:
        return not self.read_only and self.pending >= self.update_every

    def _rows(self, start: int = 0) -> list[dict[str, Any]]:
        if not self.log.path.is_file():
            return []
        rows = [r for _, r, problem in iter_jsonl(self.log.path, torn_tail=True) if problem is None and isinstance(r, dict)]
        return rows[start:]

    # -- learning -------------------------------------------------------------------------------
    def update(self, router: Any, encode: Callable[[list[str]], Any]) -> tuple[Any, dict[str, Any]] | None:
        """A copy of ``router`` trained on the pending rows, saved and put in force (blocking).

        ``encode(prompts)`` embeds the feedback prompts (the server runs it on its routing thread, the
        one thread that uses the shared encoder). Returns ``(new router, report)``, or ``None`` when
        nothing is pending.
        """
        with self._lock:
            end = self.logged
        rows = self._rows(self.applied)[: end - self.applied]
        if not rows:
            return None
        prompts = list(dict.fromkeys(r["prompt"] for r in rows))  # feedback_table's row order
        embeddings = encode(prompts)
        encoder = getattr(router.predictor, "text_encoder_", None)  # shared, never trained: not copied
        fresh = copy.deepcopy(router, memo={id(encoder): encoder} if encoder is not None else None)
        report = fresh.update(rows, embeddings=embeddings)
        version = self.version + 1
        name = f"v{version:06d}"
        fresh.save_pretrained(self.folder / "routers" / name)
        atomic_write_text(self.folder / "current.json",
                          json.dumps({"version": version, "folder": name, "rows": self.applied + len(rows)}) + "\n")
        self.version, self.applied = version, self.applied + len(rows)
        self._prune(name)
        return fresh, {"version": version, "rows": len(rows), **report.to_dict()}

    def _prune(self, current: str) -> None:
        folders = sorted(p for p in (self.folder / "routers").iterdir() if p.is_dir() and p.name.startswith("v"))
        for old in folders[:-_KEEP]:
            if old.name != current:
                shutil.rmtree(old, ignore_errors=True)


async def learn_forever(learner: Learner, wake: asyncio.Event, interval: float,
                        update: Callable[[], Awaitable[Mapping[str, Any] | None]]) -> None:
    """Run ``update()`` (a new router put in force; its report, or ``None``) whenever ``wake`` is set or
    ``interval`` seconds pass with feedback pending. A failed update leaves the router in force and the
    feedback logged, and is tried again after a pause. One loop for the one-process server and for Ray's
    learner actor."""
    log = logging.getLogger("tryage.serve")
    while True:
        try:
            await asyncio.wait_for(wake.wait(), interval)
        except asyncio.TimeoutError:
            pass
        wake.clear()
        if learner.pending == 0:
            continue
        try:
            report = await update()
        except Exception:  # noqa: BLE001 - the server keeps serving the router in force
            log.exception("router update failed; the router in force stays, the feedback stays logged")
            await asyncio.sleep(min(interval, 30.0))
            continue
        if report is not None:
            log.info("router updated: version %s from %s feedback row(s)", report["version"], report["rows"])

__all__ = ["Learner", "learn_forever"]
