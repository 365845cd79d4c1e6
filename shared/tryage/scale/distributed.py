"""Tryage's batch work on a Ray cluster: loss measurement, router embeddings, routing in bulk.

Install the extra ``tryage[ray]``. ``import tryage`` never imports Ray; this module imports it when a
function here runs. :func:`init` joins a cluster (``address=``) or starts a local one (``num_cpus=``);
a Ray instance already running in the process is reused.

What runs where
---------------
* **Driver** (the process that calls :func:`run_pools`): reads the append-only log, leaves out every
  key already in it (exactly what the local backend skips, so resume is the same), builds one Ray
  Data pipeline, and is the *only* writer of the log. Rows stream back with ``iter_batches`` and are
  appended and fsynced batch by batch; a killed driver leaves at most a partial last line, which
  :class:`tryage.measure.LossRecorder` cuts off on the next run. Workers never open the log, so a
  cluster needs no shared file system for it.
* **Workers**: one actor pool per expert (``Dataset.map_batches`` with
  ``ray.data.ActorPoolStrategy``). Each actor builds its worker once — a Hugging Face expert is
  loaded once per actor, and ``num_gpus`` reserves GPUs for it — then maps batches of work items to
  rows. The pools of several experts are one ``union``-ed dataset, so they run side by side.
* **Failures**: Ray Data gives its pool actors ``max_restarts=-1`` and ``max_task_retries=-1``: a
  killed actor is restarted and its in-flight batch re-run, so no row is lost. The driver also
  drops a row whose key it has already written, so a re-run batch cannot duplicate one.

Why Ray Data and not ``ray.util.ActorPool``: the same few lines give streaming with backpressure
(millions of items never sit in driver memory as results), actor restarts with batch retries,
several pools running at once, and readers (``ray.data.read_json``) for inputs too large for the
driver. An ``ActorPool`` would need all of that written by hand.

Plugging in another producer (e.g. ``tryage collect``)
------------------------------------------------------
:func:`run_pools` is generic. Give it :class:`PoolSpec` s and a *recorder*:

* ``PoolSpec.items``: JSON-able dicts, each with a string ``"id"``; the payload is free.
* ``PoolSpec.worker``: a class importable on the workers (installed package, not ``__main__``).
  ``worker(**PoolSpec.kwargs)`` is built once per actor (kwargs are plain values such as paths:
  a model is loaded on the worker, never shipped); ``worker(items) -> rows`` maps a list of items to
  one JSON-able row per item carrying the item's ``"id"`` and ``"expert": PoolSpec.name``.
  API experts subclass :class:`AsyncWorker` (``async def call(item) -> row``, concurrent calls
  under a per-actor rate limit).
* The recorder has ``done() -> set[(id, expert)]`` and ``append(rows) -> int`` — as
  :class:`tryage.measure.LossRecorder` has.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tryage.errors import ClusterConnectionError, ConfigurationError, TryageError, check_scalar, require

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

    from tryage.measure import Passage
    from tryage.predictors import PerceptivePredictor
    from tryage.qtable import QTable
    from tryage.router import TryageRouter


class Recorder(Protocol):
    """Where finished rows go: the append-only log of the local backend, or any log keyed the same way."""

    def done(self) -> set[tuple[str, str]]: ...

    def append(self, rows: Sequence[Mapping[str, Any]]) -> int: ...


@dataclass(frozen=True)
class PoolSpec:
    """One expert's actor pool and the items it still has to process.

    Attributes:
        name: The expert; rows are keyed by ``(item id, name)``.
        items: Work items, JSON-able dicts with a string ``"id"``.
        worker: Class built once per actor as ``worker(**kwargs)``; ``worker(items) -> rows``.
        kwargs: Plain constructor arguments (paths and settings, not loaded models).
        size: Number of actors in the pool.
        batch_size: Items per call of the worker.
        num_cpus: CPUs reserved per actor.
        num_gpus: GPUs reserved per actor (0 on CPU machines).
    """

    name: str
    items: Sequence[Mapping[str, Any]]
    worker: type
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    size: int = 1
    batch_size: int = 16
    num_cpus: float = 1.0
    num_gpus: float = 0.0


CONNECT_TIMEOUT_S = 10.0  #: for a TCP connection to ``address`` (``ray.init`` alone would retry for minutes)


def init(address: str | None = None, *, num_cpus: int | None = None, num_gpus: float = 0.0) -> None:
    """Join the Ray cluster at ``address`` or, without one, start a local instance with ``num_cpus``
    (reused when Ray is already initialised in this process), then check that some node has the
    ``num_gpus`` an actor will reserve (:class:`ConfigurationError`: Ray would wait forever). An ``address``
    that takes no TCP connection within :data:`CONNECT_TIMEOUT_S` is a :class:`ClusterConnectionError`."""
    ray = require("ray", "ray", "ray[data]")
    if num_cpus is not None:
        check_scalar(num_cpus, "num_cpus", kind=int, low=1)
    num_gpus = check_scalar(num_gpus, "num_gpus", low=0.0)
    if not ray.is_initialized():
        import logging

        try:
            if address:
                _check_reachable(address)
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                         log_to_driver=False)
        except ClusterConnectionError:
            raise
        except (ConnectionError, TimeoutError, ValueError) as exc:
            raise ClusterConnectionError(address or "a local Ray instance", str(exc).splitlines()[0]) from None
        ray.data.DataContext.get_current().enable_progress_bars = False
    if num_gpus:
        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        most = max((float(r.get("GPU", 0.0)) for r in nodes), default=0.0)
        if most < num_gpus:
            raise ConfigurationError(
                f"num_gpus={num_gpus:g}: each actor would reserve {num_gpus:g} GPU(s), but no node of the Ray "
                f"cluster has that many (the most on one node: {most:g}), so Ray would wait for them forever; "
                "leave --num-gpus out (or 0) where there is no GPU")


def _check_reachable(address: str) -> None:
    """A :class:`ClusterConnectionError` unless ``host:port`` of ``address`` (``ray://`` or a GCS address)
    accepts a TCP connection within :data:`CONNECT_TIMEOUT_S`; other forms (``"auto"``) are Ray's to read."""
    import socket

    host, sep, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:  # refused, unreachable, unknown host, timed out; a port past 65535
        detail = "no answer" if isinstance(exc, TimeoutError) else getattr(exc, "strerror", None) or str(exc)
        raise ClusterConnectionError(address, f"nothing accepts a connection at {host}:{port} within "
                                              f"{CONNECT_TIMEOUT_S:g} s ({detail})") from None


def stream(ds: ray.data.Dataset, **kwargs: Any) -> Iterator[Any]:
    """``ds.iter_batches(**kwargs)``, re-raising a :class:`TryageError` that a worker raised as itself.

    Ray wraps a worker's exception in ``RayTaskError`` / ``UserCodeException``; a user should see the
    one-line Tryage error (bad metadata, a missing model) the local backend would have raised.
    """
    try:
        yield from ds.iter_batches(**kwargs)
    except Exception as exc:
        cause = tryage_cause(exc)
        if cause is not None:
            raise cause from None
        raise


def tryage_cause(exc: BaseException) -> TryageError | None:
    """The :class:`TryageError` a Ray worker raised, found in the ``RayTaskError`` chain that wraps it."""
    seen, pending = set(), [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, TryageError) and not isinstance(error, type(exc)) \
                and type(error).__module__.startswith("tryage"):
            return error
        pending += [getattr(error, "cause", None), error.__cause__, error.__context__]
    return None


def _pipeline(ds: ray.data.Dataset) -> ray.data.Dataset:
    ds.context.execution_options.preserve_order = True  # same row order as the local run
    ds.context.raise_original_map_exception = True  # a worker's TryageError, not a UserCodeException
    return ds


class _PoolActor:
    """The Ray Data UDF: builds the user's worker once and maps a batch of JSON items to JSON rows."""

    def __init__(self, worker: type, kwargs: Mapping[str, Any]) -> None:
        self.worker = worker(**kwargs)

    def __call__(self, batch: Any) -> dict[str, list[str]]:
        items = [json.loads(s) for s in batch.column("item").to_pylist()]
        rows = self.worker(items)
        if len(rows) != len(items):
            raise ConfigurationError(f"{type(self.worker).__name__} returned {len(rows)} rows for {len(items)} items; "
                                     "a worker must return one row per item")
        return {"row": [json.dumps(r, ensure_ascii=False) for r in rows]}


def run_pools(pools: Sequence[PoolSpec], recorder: Recorder, *, address: str | None = None,
              num_cpus: int | None = None, progress: bool = True) -> int:
    """Run every pool on Ray and append its rows to ``recorder``; returns the rows written now.

    Items whose ``(id, pool name)`` is already in ``recorder.done()`` are not sent (resume).
    """
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"pool names must be unique, got {names}")
    for pool in pools:
        for key, kind in (("size", int), ("batch_size", int), ("num_cpus", float), ("num_gpus", float)):
            check_scalar(getattr(pool, key), f"pool {pool.name!r}: {key}", kind=kind, low=1 if kind is int else 0)
    seen = set(recorder.done())
    todo = {p.name: [it for it in p.items if (str(it["id"]), p.name) not in seen] for p in pools}
    total = sum(len(v) for v in todo.values())
    if not total:
        return 0
    init(address, num_cpus=num_cpus, num_gpus=max(p.num_gpus for p in pools))
    ray = require("ray", "ray", "ray[data]")
    branches = []
    for pool in pools:
        items = todo[pool.name]
        if not items:
            continue
        ds = ray.data.from_items([{"item": json.dumps(it, ensure_ascii=False)} for it in items],
                                 override_num_blocks=max(1, min(len(items) // pool.batch_size, 200)))
        branches.append(ds.map_batches(
            _PoolActor, fn_constructor_kwargs={"worker": pool.worker, "kwargs": dict(pool.kwargs)},
            batch_size=pool.batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=pool.size),
            num_cpus=pool.num_cpus, num_gpus=pool.num_gpus or None))
    dataset = _pipeline(branches[0].union(*branches[1:]) if len(branches) > 1 else branches[0])
    from tryage._io import progress_bar

    bar = progress_bar(total, ", ".join(names) + " (ray)", enabled=progress, unit="passage")
    written = 0
    try:  # the recorder may stop the run by raising (tryage collect's budget)
        for batch in stream(dataset, batch_format="pyarrow", batch_size=None):
            fresh = []
            for line in batch.column("row").to_pylist():
                row = json.loads(line)
                key = (str(row["id"]), str(row["expert"]))
                if key not in seen:  # a re-run batch of a restarted actor
                    seen.add(key)
                    fresh.append(row)
            written += recorder.append(fresh) if fresh else 0
            bar.update(batch.num_rows)
    finally:
        bar.close()
    return written


class AsyncWorker:
    """Base of API-expert workers: ``call(item)`` for each item of a batch, concurrently, rate-limited.

    Subclass it and implement ``async def call(self, item) -> row``. Each actor keeps at most
    ``max_in_flight`` calls open and starts at most ``requests_per_second`` per second; a pool of
    ``size`` actors therefore sends up to ``size * requests_per_second`` (divide a provider's limit
    by the pool size).
    """

    def __init__(self, *, max_in_flight: int = 8, requests_per_second: float | None = None) -> None:
        check_scalar(max_in_flight, "max_in_flight", kind=int, low=1)
        if requests_per_second is not None:
            check_scalar(requests_per_second, "requests_per_second", low=0, low_open=True)
        self.max_in_flight = max_in_flight
        self.requests_per_second = requests_per_second
        self._loop = asyncio.new_event_loop()
        self._next_start = 0.0

    async def call(self, item: Mapping[str, Any]) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    async def _paced(self, item: Mapping[str, Any], gate: asyncio.Semaphore) -> dict[str, Any]:
        async with gate:
            if self.requests_per_second:
                now = time.monotonic()
                start = max(now, self._next_start)
                self._next_start = start + 1.0 / self.requests_per_second
                await asyncio.sleep(start - now)
            return await self.call(item)

    async def _batch(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        gate = asyncio.Semaphore(self.max_in_flight)
        return list(await asyncio.gather(*(self._paced(it, gate) for it in items)))

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return self._loop.run_until_complete(self._batch(items))


# -- loss measurement ---------------------------------------------------------------------------
class MeasureWorker:
    """Loads one expert once (on the actor's GPU when it has one) and measures batches of passages."""

    def __init__(self, *, model: str, name: str, task: str, gguf_file: str | None, dtype: str, max_length: int,
                 seed: int, mask_fraction: float) -> None:
        import torch

        from tryage.measure import load_expert

        self.net, self.tokenizer = load_expert(model, task=task, gguf_file=gguf_file, dtype=dtype)
        if torch.cuda.is_available():  # Ray exposes only the GPUs reserved with num_gpus
            self.net.to("cuda")
        self.options = {"expert": name, "task": task, "max_length": max_length, "seed": seed,
                        "mask_fraction": mask_fraction}

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        from tryage.measure import Passage, measure_batch

        batch = [Passage(it["id"], it["text"], it.get("domain"), it.get("split")) for it in items]
        return measure_batch(self.net, self.tokenizer, batch, **self.options)


def measure_pools(models: Mapping[str, str | os.PathLike[str]], passages: Sequence[Passage],
                  out: str | os.PathLike[str], *, task: str = "causal", gguf_file: str | None = None,
                  batch_size: int = 16, max_length: int = 128, dtype: str = "auto", seed: int = 0,
                  mask_fraction: float = 0.15, workers: int = 1, num_gpus: float = 0.0,
                  address: str | None = None, num_cpus: int | None = None, progress: bool = True) -> int:
    """Measure several experts (``{name: model folder}``) on Ray, one pool of ``workers`` actors each.

    Rows go to the same append-only file as :func:`tryage.measure.measure_losses` writes, row for
    row the same; pairs already there are skipped. Returns the rows written now.
    """
    from tryage.measure import ExpertModelNotFoundError, LossRecorder, _check_task

    _check_task(task)
    for model in models.values():  # fail on the driver, in one line, before any worker starts
        folder = Path(model)
        if not folder.is_dir() or (gguf_file is None and not (folder / "config.json").is_file()):
            raise ExpertModelNotFoundError(folder, "not a model folder")
    items = [{"id": p.id, "text": p.text, "domain": p.domain, "split": p.split} for p in passages]
    pools = [PoolSpec(name, items, MeasureWorker,
                      {"model": str(Path(model).resolve()), "name": name, "task": task, "gguf_file": gguf_file,
                       "dtype": dtype, "max_length": max_length, "seed": seed, "mask_fraction": mask_fraction},
                      size=workers, batch_size=batch_size, num_gpus=num_gpus)
             for name, model in models.items()]
    return run_pools(pools, LossRecorder(out), address=address, num_cpus=num_cpus, progress=progress)


# -- router training ----------------------------------------------------------------------------
class EmbedWorker:
    """Builds the router's text encoder once per actor and embeds batches of prompts."""

    def __init__(self, *, spec: Mapping[str, Any]) -> None:
        import torch

        from tryage.encoders import EncoderSpec, TextEncoder

        device = "cuda" if torch.cuda.is_available() else None  # Ray exposes only the GPUs reserved
        self.encoder = TextEncoder(EncoderSpec.from_dict(dict(spec)), device=device)

    def __call__(self, batch: Any) -> dict[str, Any]:
        texts = batch.column("prompt").to_pylist()
        return {"index": batch.column("index").to_numpy(), "embedding": list(self.encoder.encode(texts))}


def embed_dataset(router: PerceptivePredictor, prompts: Sequence[str], *, workers: int = 1, batch_size: int = 64,
                  num_gpus: float = 0.0, address: str | None = None, num_cpus: int | None = None) -> np.ndarray:
    """The router encoder's embeddings of ``prompts``, shape ``(n, d)``, computed by a Ray actor pool.

    Equal to ``router.encode(prompts)`` up to float rounding (batches pad differently).
    """
    from tryage.encoders import EncoderSpec
    from tryage.predictors.perceptive import _check_prompts

    prompts = _check_prompts(prompts)
    if not prompts:
        raise ConfigurationError("embed_dataset needs at least one prompt, got none")
    spec = getattr(router, "encoder_spec_", None) or EncoderSpec.resolve(
        router.encoder, max_length=router.max_length, layers=router.layers)
    if spec.source == "saved":
        raise ConfigurationError("embed_dataset needs an encoder the workers can load (bundled, a folder or a Hub "
                                 "id), not one fine-tuned inside a router folder")
    init(address, num_cpus=num_cpus, num_gpus=num_gpus)
    ray = require("ray", "ray", "ray[data]")
    ds = ray.data.from_items([{"index": i, "prompt": p} for i, p in enumerate(prompts)],
                             override_num_blocks=max(1, min(len(prompts) // batch_size, 200)))
    ds = _pipeline(ds.map_batches(EmbedWorker, fn_constructor_kwargs={"spec": spec.to_dict()}, batch_size=batch_size,
                                  batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
                                  num_gpus=num_gpus or None))
    out: np.ndarray | None = None
    for batch in stream(ds, batch_format="numpy", batch_size=None):
        rows = np.stack(list(batch["embedding"])).astype(np.float32)
        if out is None:
            out = np.empty((len(prompts), rows.shape[1]), dtype=np.float32)
        out[batch["index"]] = rows
    if out is None:  # pragma: no cover - from_items of a non-empty list yields at least one batch
        raise ConfigurationError("the Ray pipeline returned no embeddings")
    return out


def fit_router(router: PerceptivePredictor, data: QTable | ray.data.Dataset, library: Any = None, *,
               workers: int = 1, batch_size: int = 64, num_gpus: float = 0.0, address: str | None = None,
               num_cpus: int | None = None) -> PerceptivePredictor:
    """Train ``router`` (head mode) with its embeddings computed on Ray; the same artefact as ``router.fit``.

    ``data`` is a Q-table or a Ray Dataset of Q-table records (``prompt``, ``losses`` and extras),
    gathered on the driver: the head trains there, in seconds, on the embeddings the pool made.
    """
    from tryage.qtable import QTable

    if router.mode != "head":
        raise ConfigurationError(f"fit_router trains mode='head' routers; got mode={router.mode!r} "
                                 "(fine-tuning re-encodes every step and runs where the router is)")
    table = data if isinstance(data, QTable) else QTable.from_records(data.take_all())
    embeddings = embed_dataset(router, table.prompts, workers=workers, batch_size=batch_size, num_gpus=num_gpus,
                               address=address, num_cpus=num_cpus)
    return router.fit(table, library, embeddings=embeddings)


# -- routing in bulk ----------------------------------------------------------------------------
def _router_package(router: TryageRouter) -> dict[str, Any]:
    """What a routing actor needs: the saved router folder as bytes, and the router's plain settings."""
    import tempfile

    from tryage.predictors import PerceptivePredictor

    if not isinstance(router.predictor, PerceptivePredictor):
        raise ConfigurationError("route_dataset ships a saved router folder to the workers; its predictor must be a "
                                 f"tryage.predictors.PerceptivePredictor, got {type(router.predictor).__name__}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = router.predictor.save_pretrained(Path(tmp) / "router")
        files = {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}
    return {"files": files, "library": router.library, "constraints": router.constraints,
            "weights": router.weights, "filters": router.filters, "flag_parser": router.flag_parser}


class RouteWorker:
    """Rebuilds the router once per actor from the shipped folder and routes batches of prompts."""

    def __init__(self, *, package: list[Any], column: str, weights: Mapping[str, float] | None) -> None:
        import tempfile

        import ray
        import torch

        from tryage.predictors import PerceptivePredictor
        from tryage.router import TryageRouter

        shipped = ray.get(package[0])
        self._folder = tempfile.TemporaryDirectory(prefix="tryage-router-")
        for name, data in shipped["files"].items():
            target = Path(self._folder.name, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        predictor = PerceptivePredictor.from_pretrained(self._folder.name,
                                                     device="cuda" if torch.cuda.is_available() else None)
        self.router = TryageRouter(predictor, shipped["library"], constraints=shipped["constraints"],
                                   weights=shipped["weights"], filters=shipped["filters"],
                                   flag_parser=shipped["flag_parser"])
        self.column = column
        self.weights = dict(weights or {})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [str(p) for p in batch[self.column]]
        decisions = self.router.route_batch(prompts, weights=self.weights)
        return {**batch, "expert": np.array([d.expert for d in decisions], dtype=object),
                "decision": np.array([json.dumps(d.to_dict(), ensure_ascii=False) for d in decisions], dtype=object)}


def route_dataset(router: TryageRouter, ds: ray.data.Dataset, *, column: str = "prompt",
                  weights: Mapping[str, float] | None = None, workers: int = 1, batch_size: int = 256,
                  num_gpus: float = 0.0) -> ray.data.Dataset:
    """Route every row of ``ds`` (text in ``column``) on a Ray actor pool; a lazy Dataset of decisions.

    The output keeps the input's columns and order and adds ``expert`` and ``decision`` (the JSON of
    :meth:`tryage.RoutingDecision.to_dict`). What is shipped: the router's saved folder
    (``save_pretrained``: config, safetensors head, experts.json; a fine-tuned encoder too), as bytes
    put once in the object store, plus its plain settings (library, constraints, weights, filters,
    flag parser). Each actor writes the folder to a temporary directory and loads it with
    ``from_pretrained``, once; the bundled encoder comes from the package installed on the worker.
    No model object is pickled and no cluster-wide file system is needed.

    The ``workers`` actors hold a CPU each: when ``ds`` comes from a reader, leave a CPU free or read
    with ``num_cpus=0`` (as :func:`tryage.scale.bulk.route_file` does), else the read waits forever.
    """
    ray = require("ray", "ray", "ray[data]")
    check_scalar(workers, "workers", kind=int, low=1)
    check_scalar(batch_size, "batch_size", kind=int, low=1)
    if column not in ds.columns():
        raise ConfigurationError(f"the dataset has no column {column!r}; its columns are {ds.columns()}")
    ref = ray.put(_router_package(router))
    return _pipeline(ds.map_batches(RouteWorker, fn_constructor_kwargs={"package": [ref], "column": column,
                                                                        "weights": weights},
                                    batch_size=batch_size, batch_format="numpy",
                                    compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=num_gpus or None))


def iter_decisions(ds: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    """The decisions of a :func:`route_dataset` output, streamed to the driver as dicts, in order."""
    for batch in stream(ds, batch_format="numpy", batch_size=None):
        for line in batch["decision"]:
            yield json.loads(line)


__all__ = ["AsyncWorker", "EmbedWorker", "MeasureWorker", "PoolSpec", "Recorder", "RouteWorker", "embed_dataset",
           "fit_router", "init", "iter_decisions", "measure_pools", "route_dataset", "run_pools", "stream"]
