"""``tryage serve --ray``: the same app on Ray Serve — many replicas, one learner.

Each replica of the Ray Serve deployment runs the app of :mod:`tryage.serve.app` over its own
:class:`~tryage.serve.service.Service` (routing, calling the experts, relaying streams, metrics), as one
process does. Feedback and learning belong to ONE Ray actor, :class:`FeedbackLearner`: it owns the state
folder (the fsync'd feedback log, the routers learned, ``current.json``) through the same
:class:`~tryage.serve.learner.Learner` and runs every update. A replica

* forwards ``/v1/feedback`` rows to the learner and answers once the learner has fsync'd them;
* tells the learner the decisions it made (in batches, every few ms), so feedback naming a
  ``decision_id`` that another replica made is found (the learner waits up to a second for it);
* asks the learner for its router version every second; a newer router comes as the bytes of its saved
  folder through the object store (no shared disk needed), is loaded off the event loop and swapped in;
  requests in flight finish on the router they started with.

Upstream API keys are read from each replica's environment (set them on every node, as for
``tryage collect --ray``); the experts file is read once, by the driver. A router folder given as
``--router`` must be readable at the same path on every node (the embedded routers always are).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from tryage.errors import ConfigurationError, TryageError
from tryage.serve.config import ServeConfig
from tryage.serve.learner import Learner
from tryage.serve.routing import DecisionStore

log = logging.getLogger("tryage.serve")
APP_NAME = "tryage"
POLL_SECONDS = 1.0  # how often a replica asks the learner for a newer router
_FLUSH_SECONDS = 0.02  # how often a replica sends the learner the decisions it made
_RECALL_WAIT = 1.0  # how long the learner waits for a decision another replica has not sent yet


# -- the router as bytes -------------------------------------------------------------------------------
def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file of a saved router folder by its relative path (what crosses the object store)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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


# -- the one learner -------------------------------------------------------------------------------------
class FeedbackLearner:
    """The learner of a Ray Serve deployment (run as one Ray actor): the state folder, updates, decisions.

    Args:
        config: The server's settings (``state_dir``, ``update_every``, ``update_interval``, ``read_only``).
        load_router: Builds the given router when the state folder holds none.
        served: The experts the replicas serve (checked against the router, as one process does).
    """

    def __init__(self, config: ServeConfig, load_router: Callable[[], Any], served: Sequence[str]) -> None:
        self.config, self.load_router, self.served = config, load_router, tuple(served)
        self.learner: Learner | None = None
        self.router: Any = None
        self.source = ""
        self.in_force: tuple[int, dict[str, bytes] | None] = (0, None)  # version, its folder as bytes (None: v0)
        self.decisions = DecisionStore()
        self._arrived: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tryage-learn")
        self._starting = asyncio.Lock()

    async def start(self) -> dict[str, Any]:
        """Open the state folder and load the router in force (once; again after a restart of the actor)."""
        async with self._starting:
            if self.learner is None:
                await self._open()
        return {"source": self.source, **self.state()}

    async def _open(self) -> None:
        from tryage.serve.server import check_router

        learner = Learner(self.config.state_dir, update_every=self.config.update_every,
                          read_only=self.config.read_only)
        try:
            router, source = await asyncio.to_thread(learner.load, self.load_router, self.config.router)
            check_router(self.config, router, self.served)
            files = (await asyncio.to_thread(folder_files, self._folder(learner.version))
                     if learner.version else None)
        except BaseException:
            learner.close()
            raise
        self.learner, self.router, self.source = learner, router, source
        self.in_force = (learner.version, files)
        self._arrived, self._wake = asyncio.Event(), asyncio.Event()
        if not learner.read_only:
            if learner.due():
                self._wake.set()
            self._task = asyncio.get_running_loop().create_task(self._learn_loop())

    def _folder(self, version: int) -> Path:
        return Path(self.config.state_dir) / "routers" / f"v{version:06d}"

    def state(self) -> dict[str, Any]:
        learner = self.learner
        assert learner is not None, "start() first"
        return {"version": self.in_force[0], "logged": learner.logged, "applied": learner.applied,
                "pending": learner.pending, "read_only": learner.read_only}

    async def current(self) -> dict[str, Any]:
        """:meth:`state` (started first: the actor may have been restarted since)."""
        await self.start()
        return self.state()

    async def router_files(self) -> tuple[int, dict[str, bytes] | None]:
        """``(version, files)`` of the router in force (``files`` is ``None`` for the given router)."""
        await self.start()
        return self.in_force

    async def record(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Log ``rows`` (fsync'd before this returns) and wake the update when enough are pending."""
        await self.start()
        assert self.learner is not None and self._wake is not None
        await asyncio.to_thread(self.learner.record, rows)
        if self.learner.due():
            self._wake.set()
        return self.state()

    def remember(self, decided: list[tuple[str, str, str]]) -> None:
        """Decisions the replicas made: ``(decision_id, prompt, expert)``."""
        for decision_id, prompt, expert in decided:
            self.decisions.put(decision_id, prompt, expert)
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = asyncio.Event()

    async def recall(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """The decisions of ``ids`` known here, waiting up to a second for ones still on their way."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RECALL_WAIT
        while True:
            known = {i: (d.prompt, d.expert) for i in ids if (d := self.decisions.get(i)) is not None}
            left = deadline - loop.time()
            if len(known) == len(ids) or left <= 0 or self._arrived is None:
                return known
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def _learn_loop(self) -> None:
        assert self.learner is not None and self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.update_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if self.learner.pending == 0:
                continue
            try:
                result = await loop.run_in_executor(self._pool, self._update)
            except Exception:  # noqa: BLE001 - the replicas keep serving the router in force
                log.exception("router update failed; the router in force stays, the feedback stays logged")
                await asyncio.sleep(min(self.config.update_interval, 30.0))
                continue
            if result is not None:
                log.info("router updated: version %s from %s feedback row(s)", result["version"], result["rows"])

    def _update(self) -> dict[str, Any] | None:
        assert self.learner is not None
        router = self.router
        result = self.learner.update(router, router.predictor.encode)  # this thread alone uses its encoder
        if result is None:
            return None
        fresh, report = result
        files = folder_files(self._folder(report["version"]))
        self.router, self.in_force = fresh, (report["version"], files)  # version and bytes change together
        return report

    async def close(self) -> None:
        """Stop learning (an update in progress finishes) and close the log."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        if self.learner is not None:
            self.learner.close()


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


# -- the driver ------------------------------------------------------------------------------------------
@dataclass
class RayServed:
    """A ``tryage serve`` app running on Ray Serve.

    Attributes:
        url: Its ``/v1`` URL.
        source: Where the router in force came from.
        learner: The handle of the one learner actor.
        experts: The experts served, as ``(name, url, model)``.
    """

    url: str
    source: str
    learner: Any
    experts: list[tuple[str, str, str]]

    def stop(self) -> None:
        """Delete the app (replicas finish their requests), then close the learner's log and end it."""
        import ray
        from ray import serve

        serve.delete(APP_NAME)
        try:
            ray.get(self.learner.close.remote(), timeout=120)
        finally:
            ray.kill(self.learner)


def deployment_options(config: ServeConfig) -> dict[str, Any]:
    """Ray Serve options of the replicas: how many (fixed or autoscaled), their CPUs, their limits."""
    scaling = config.autoscaling_config()
    return {"name": APP_NAME, **({"autoscaling_config": scaling} if scaling else {"num_replicas": config.replicas}),
            "ray_actor_options": {"num_cpus": config.replica_cpus},
            "max_ongoing_requests": config.max_concurrency,  # the service answers 429 beyond it
            "graceful_shutdown_timeout_s": config.shutdown_timeout, "max_constructor_retry_count": 3}


def deploy(config: ServeConfig, load_router: Callable[[], Any], *, keys: frozenset[str] = frozenset()) -> RayServed:
    """Start the learner and the replicas on the Ray instance of this process (joined or started here,
    ``config.address``); the HTTP proxy listens on ``config.host:config.port`` (0: a free port)."""
    from tryage.collect.backends import load_experts
    from tryage.scale.distributed import init
    from tryage.serve.server import bind
    from tryage.serve.upstream import Upstream

    specs = load_experts(config.experts)
    upstreams = [Upstream.from_spec(spec) for spec in specs]  # a bad entry fails here, in one line
    port = config.port
    if port == 0:
        with bind(config.host, 0) as probe:
            port = probe.getsockname()[1]
    else:
        bind(config.host, port).close()  # in use: one line now, not a proxy that never starts
    init(config.address)
    import ray
    from ray import serve

    actor = ray.remote(FeedbackLearner).options(num_cpus=0, max_restarts=-1).remote(
        config, load_router, [u.name for u in upstreams])
    try:
        started = _unwrapped(ray.get, actor.start.remote())
        serve.start(http_options={"host": config.host, "port": port})
        app = serve.deployment(serve.ingress()(ReplicaServer), **deployment_options(config))
        _unwrapped(serve.run, app.bind(config, specs, keys, actor, load_router), name=APP_NAME, route_prefix="/",
                   blocking=False)
    except BaseException:
        ray.kill(actor)
        raise
    shown = f"[{config.host}]" if ":" in config.host else config.host
    return RayServed(f"http://{shown}:{port}/v1", started["source"], actor,
                     [(u.name, u.url, u.model) for u in upstreams])


def _unwrapped(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call(...)``, re-raising a :class:`TryageError` raised inside Ray as itself (one line, no traceback)."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:
        seen, pending = set(), [exc]
        while pending:
            error = pending.pop()
            if error is None or id(error) in seen:
                continue
            seen.add(id(error))
            if isinstance(error, TryageError) and type(error).__module__.startswith("tryage"):
                raise error from None
            pending += [getattr(error, "cause", None), error.__cause__, error.__context__]
        raise


def run(config: ServeConfig, load_router: Callable[[], Any], *, out: TextIO = sys.stdout) -> int:
    """``tryage serve --ray``: deploy, say where, serve until SIGINT/SIGTERM, then stop the app and the learner."""
    from tryage.serve.server import configure_logging

    configure_logging(config)
    keys = config.api_keys()
    config.check_exposure(keys)
    import ray

    joined = ray.is_initialized() or config.address is not None
    served = deploy(config, load_router, keys=keys)
    scaling = config.autoscaling_config()
    replicas = (f"{scaling['min_replicas']}-{scaling['max_replicas']} replicas (autoscaled)" if scaling
                else f"{config.replicas} replica(s)")
    print(f"tryage serve: listening on {served.url}", file=out, flush=True)
    print(f"tryage serve: on Ray Serve, {replicas}; router {served.source}; feedback "
          f"{'off (--read-only)' if config.read_only else 'on'} (one learner, state in {config.state_dir})",
          file=out, flush=True)
    for name, url, model in served.experts:
        print(f"tryage serve: expert {name} -> {url} (model {model})", file=out, flush=True)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        served.stop()
        if not joined:
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    print("tryage serve: stopped", file=out, flush=True)
    return 0


__all__ = ["APP_NAME", "FeedbackLearner", "POLL_SECONDS", "RayServed", "RemoteDecisions", "RemoteLearner",
           "ReplicaServer", "deploy", "deployment_options", "folder_files", "router_from_files", "run"]
