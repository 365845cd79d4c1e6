"""Route a file of prompts to a file of decisions, in this process or on Ray (``tryage route --input``).

The input is JSONL, one ``{"prompt": ..., "id"?: ...}`` per line (the field is ``column``). The output
is JSONL, one :meth:`tryage.RoutingDecision.to_dict` per input line, in input order, with the input's
``id`` first when it has one. Both backends write the same file; it is written under a temporary
name and renamed when complete, so a failed run never leaves half a file behind.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tryage._io import iter_jsonl
from tryage.errors import ConfigurationError, TryageFileNotFoundError, check_scalar

if TYPE_CHECKING:  # pragma: no cover
    from tryage.router import TryageRouter


def _local_prompts(source: Path, column: str) -> Iterator[tuple[Any, str]]:
    for number, row, problem in iter_jsonl(source):
        if problem is not None:
            raise ConfigurationError(f"{source}, line {number}: {problem}")
        prompt = row.get(column) if isinstance(row, dict) else None
        if not isinstance(prompt, str):
            raise ConfigurationError(f"{source}, line {number}: needs a {column!r} string, got {prompt!r:.60}")
        yield row.get("id"), prompt


def _write(handle: IO[str], ident: Any, decision: Mapping[str, Any]) -> None:
    record = {"id": ident, **decision} if ident is not None else dict(decision)
    handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def route_file(router: TryageRouter, source: str | os.PathLike[str], out: str | os.PathLike[str], *,
               weights: Mapping[str, float] | None = None, column: str = "prompt", backend: str = "local",
               batch_size: int = 256, workers: int = 1, num_gpus: float = 0.0, address: str | None = None,
               num_cpus: int | None = None) -> int:
    """Route every prompt of ``source`` and write the decisions to ``out``; returns how many.

    ``backend="ray"`` reads the file with ``ray.data.read_json`` and routes it with
    :func:`tryage.scale.distributed.route_dataset` (``workers`` actors, ``num_gpus`` each).
    """
    if backend not in ("local", "ray"):
        raise ConfigurationError(f"backend must be 'local' or 'ray', got {backend!r}")
    check_scalar(batch_size, "batch_size", kind=int, low=1)
    source, target = Path(source), Path(out)
    if not source.is_file():
        raise TryageFileNotFoundError(f"prompts file not found: {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if backend == "local":
                items = _local_prompts(source, column)  # streamed: one batch in memory at a time
                while chunk := list(itertools.islice(items, batch_size)):
                    decisions = router.route_batch([p for _, p in chunk], weights=weights)
                    for (ident, _), d in zip(chunk, decisions):
                        _write(handle, ident, d.to_dict())
                    count += len(chunk)
            else:
                count = _route_on_ray(router, source, handle, weights=weights, column=column, batch_size=batch_size,
                                      workers=workers, num_gpus=num_gpus, address=address, num_cpus=num_cpus)
            if count == 0:
                raise ConfigurationError(f"{source}: no prompts; give a JSONL file with a {column!r} string per line")
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return count


def _route_on_ray(router: TryageRouter, source: Path, handle: IO[str], *, weights: Mapping[str, float] | None,
                  column: str, batch_size: int, workers: int, num_gpus: float, address: str | None,
                  num_cpus: int | None) -> int:
    from tryage.scale import distributed

    distributed.init(address, num_cpus=num_cpus, num_gpus=num_gpus)
    import ray.data

    # Reading takes no CPU slot: the routing actors may hold every CPU of the cluster, and a read task
    # waiting for one would never run (Ray Data starts the actor pool first).
    ds = ray.data.read_json(str(source), lines=True, file_extensions=None, num_cpus=0)
    routed = distributed.route_dataset(router, ds, column=column, weights=weights, workers=workers,
                                       batch_size=batch_size, num_gpus=num_gpus)
    count = 0
    for batch in distributed.stream(routed, batch_format="numpy", batch_size=None):
        idents = batch["id"] if "id" in batch else [None] * len(batch["decision"])
        for ident, line in zip(idents, batch["decision"]):
            _write(handle, ident.item() if hasattr(ident, "item") else ident, json.loads(line))
            count += 1
    return count


__all__ = ["route_file"]
