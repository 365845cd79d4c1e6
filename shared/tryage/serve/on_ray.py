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
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tryage.serve.config import ServeConfig
from tryage.serve.learner import Learner, learn_forever
from tryage.serve.routing import DecisionStore

log = logging.getLogger("tryage.serve")
APP_NAME = "tryage"
_RECALL_WAIT = 1.0  # how long the learner waits for a decision another replica has not sent yet


# -- the router as bytes -------------------------------------------------------------------------------
def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file of a saved router folder by its relative path (what crosses the object store)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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
            self._task = asyncio.get_running_loop().create_task(
                learn_forever(self.learner, self._wake, self.config.update_interval, self._learn))

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

    async def _learn(self) -> dict[str, Any] | None:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._update)

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
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        if self.learner is not None:
            self.learner.close()


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
    from tryage.serve.replica import ReplicaServer
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
    from tryage.scale.distributed import tryage_cause

    try:
        return call(*args, **kwargs)
    except Exception as exc:
        cause = tryage_cause(exc)
        if cause is not None:
            raise cause from None
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


__all__ = ["APP_NAME", "FeedbackLearner", "RayServed", "deploy", "deployment_options", "folder_files", "run"]
