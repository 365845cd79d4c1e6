"""A replica of ``tryage serve --ray``: its own service and app, the one learner reached through its actor.

Built by :mod:`tryage.serve.on_ray` (see there for the whole picture). A replica answers requests as one
process does, sends feedback rows and the decisions it made to the learner, and swaps in each newer router
the learner puts in force.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from tryage.errors import ConfigurationError
from tryage.serve.config import ServeConfig
from tryage.serve.routing import DecisionStore

log = logging.getLogger("tryage.serve")
POLL_SECONDS = 1.0  # how often a replica asks the learner for a newer router
_FLUSH_SECONDS = 0.02  # how often a replica sends the learner the decisions it made


def router_from_files(files: Mapping[str, bytes]) -> Any:
    """The router saved as ``files`` (:func:`folder_files`), loaded from a private temporary folder."""
    from tryage.router import TryageRouter

    with tempfile.TemporaryDirectory(prefix="tryage-router-") as tmp:
        for name, data in files.items():
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise ConfigurationError(f"router file {name!r:.80} is not inside the router folder")
            target = Path(tmp, *relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return TryageRouter.from_pretrained(tmp)


# -- a replica ---------------------------------------------------------------------------------------------
class RemoteLearner:
    """What a replica's service sees as its learner: the one learner's log, reached through its actor.

    ``version`` is the router in force on this replica; ``logged``/``applied`` are the learner's counts as
    last heard. Updates are the learner's: :meth:`due` is never true here and :meth:`update` learns nothing.
    """

    def __init__(self, config: ServeConfig, actor: Any, version: int) -> None:
        self.folder = Path(config.state_dir)
        self.update_every = config.update_every
        self.read_only = config.read_only
        self.actor = actor
        self.version = version
        self.logged = self.applied = 0

    @property
    def pending(self) -> int:
        return max(self.logged - self.applied, 0)

    def mirror(self, state: Mapping[str, Any]) -> None:
        self.logged, self.applied = int(state["logged"]), int(state["applied"])

    def record(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Send ``rows`` to the learner; returns once it has fsync'd them (blocking: a worker thread)."""
        import ray

        self.mirror(ray.get(self.actor.record.remote([dict(r) for r in rows])))

    def due(self) -> bool:
        return False

    def update(self, router: Any, encode: Callable[[list[str]], Any]) -> None:
        return None

    def close(self) -> None:
        pass


class RemoteDecisions(DecisionStore):
    """A replica's decisions: kept here and sent to the learner in batches, where every replica finds them."""

    def __init__(self, actor: Any) -> None:
        super().__init__()
        self.actor = actor
        self._outbox: list[tuple[str, str, str]] = []

    def put(self, decision_id: str, prompt: str, expert: str) -> None:
        super().put(decision_id, prompt, expert)
        self._outbox.append((decision_id, prompt, expert))

    def learn(self, decision_id: str, prompt: str, expert: str) -> None:
        """A decision another replica made (kept here, not sent back)."""
        super().put(decision_id, prompt, expert)

    def flush(self) -> None:
        if self._outbox:
            batch, self._outbox = self._outbox, []
            self.actor.remember.remote(batch)


class _Edge:
    """Around a replica's app: ``x-tryage-replica`` on every answer, and the decisions that ``/v1/feedback``
    names but another replica made fetched from the learner before the app reads the body."""

    def __init__(self, app: Any, replica: str, decisions: RemoteDecisions, actor: Any, config: ServeConfig,
                 keys: frozenset[str]) -> None:
        self.app, self.tag, self.decisions, self.actor = app, [(b"x-tryage-replica", replica.encode())], decisions, actor
        self.limit, self.keys = config.max_body_bytes, [k.encode() for k in keys]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.tag]}
            await send(message)

        if scope["path"] == "/v1/feedback" and scope["method"] == "POST" and self._authorized(scope):
            receive = await self._resolve(receive)
        await self.app(scope, receive, tagged)

    def _authorized(self, scope: Any) -> bool:
        import hmac

        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        token = given[7:].strip() if given[:7].lower() == b"bearer " else b""
        return not self.keys or any(hmac.compare_digest(token, k) for k in self.keys)

    async def _resolve(self, receive: Any) -> Any:
        messages, size, more = [], 0, True
        while more and size <= self.limit:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        if not more and all(m["type"] == "http.request" for m in messages):
            missing = [i for i in _decision_ids(b"".join(m.get("body", b"") for m in messages))
                       if self.decisions.get(i) is None]
            if missing:
                found = await self.actor.recall.remote(missing[:1024])
                for decision_id, (prompt, expert) in found.items():
                    self.decisions.learn(decision_id, prompt, expert)

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        return replay


def _decision_ids(body: bytes) -> list[str]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return []  # the app answers the bad JSON
    rows = data if isinstance(data, list) else [data]
    return list(dict.fromkeys(str(r["decision_id"]) for r in rows
                              if isinstance(r, dict) and "decision_id" in r and "prompt" not in r))


class ReplicaServer:
    """One Ray Serve replica: its own :class:`~tryage.serve.service.Service` and app, following the learner."""

    async def __init__(self, config: ServeConfig, specs: Sequence[Any], keys: frozenset[str], actor: Any,
                       load_router: Callable[[], Any]) -> None:
        from ray import serve

        from tryage.serve.service import Service
        from tryage.serve.upstream import Upstream

        self.config, self.keys, self.actor, self.load_router = config, keys, actor, load_router
        version, files = await actor.router_files.remote()
        router = await asyncio.to_thread(self._load, files)
        self.learner = RemoteLearner(config, actor, version)
        self.learner.mirror(await actor.current.remote())
        self.service = Service(config, router, {s.name: Upstream.from_spec(s) for s in specs}, self.learner)
        self.decisions = RemoteDecisions(actor)
        self.service.decisions = self.decisions
        try:
            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside a replica (a unit test): no tag to give
            self.replica = "local"
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow()), loop.create_task(self._flush())]

    def __serve_build_asgi_app__(self) -> Any:
        from tryage.serve.app import create_app

        return _Edge(create_app(self.service, api_keys=self.keys), self.replica, self.decisions, self.actor,
                     self.config, self.keys)

    def _load(self, files: Mapping[str, bytes] | None) -> Any:
        return self.load_router() if files is None else router_from_files(files)

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_SECONDS)
            self.decisions.flush()

    async def _follow(self) -> None:
        """Swap in each newer router the learner puts in force (loaded off the event loop)."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                state = await self.actor.current.remote()
                self.learner.mirror(state)
                if state["version"] > self.learner.version:
                    version, files = await self.actor.router_files.remote()
                    router = await asyncio.to_thread(self._load, files)
                    self.service.router, self.learner.version = router, version
                    self.service.metrics.updates.inc()
                    log.info("replica %s: router version %s in force", self.replica, version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving the router in force; ask again later
                log.warning("replica %s: cannot follow the learner (%s: %s)", self.replica, type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "")

    async def __del__(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.decisions.flush()


__all__ = ["POLL_SECONDS", "RemoteDecisions", "RemoteLearner", "ReplicaServer", "router_from_files"]
