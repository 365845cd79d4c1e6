"""Build a server from its settings and run it on uvicorn (one process) — ``tryage serve``'s work."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from tryage.errors import ConfigurationError
from tryage.serve.config import ServeConfig
from tryage.serve.learner import Learner
from tryage.serve.service import Service
from tryage.serve.upstream import Upstream

log = logging.getLogger("tryage.serve")


def build_service(config: ServeConfig, load_router: Callable[[], Any]) -> tuple[Service, str]:
    """The service of ``config`` and where its router came from (the state folder's, else ``load_router()``)."""
    from tryage.collect.backends import load_experts

    upstreams = {spec.name: Upstream.from_spec(spec) for spec in load_experts(config.experts)}
    learner = Learner(config.state_dir, update_every=config.update_every, read_only=config.read_only)
    router, source = learner.load(load_router, config.router)
    try:
        check_router(config, router, upstreams)
    except BaseException:
        learner.close()
        raise
    return Service(config, router, upstreams, learner), source


def check_router(config: ServeConfig, router: Any, served: Iterable[str]) -> None:
    """Refuse a router that lacks an expert of ``served``, the default weights, or (to learn) a head."""
    unknown = [name for name in served if name not in router.experts]
    if unknown:
        raise ConfigurationError(f"{config.experts}: expert(s) {unknown} are not experts of the router; its "
                                 f"experts are {', '.join(router.experts)}")
    router.constraints.check_weights(config.weights)  # used as each request's default weights
    if not hasattr(router.predictor, "head_") and not config.read_only:
        raise ConfigurationError("this router cannot learn from feedback (it is not a trained perceptive "
                                 "router); serve it with --read-only")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free port), so the address is known before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # every response waits ~40 ms for the client's delayed ACK (headers and body are two writes)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def configure_logging(config: ServeConfig) -> None:
    root = logging.getLogger("tryage.serve")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("tryage serve: %(levelname)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    access = logging.getLogger("tryage.serve.access")
    access.propagate = False
    if config.access_log is not None:
        handler = logging.StreamHandler(sys.stderr) if config.access_log == "-" else \
            logging.FileHandler(config.access_log, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)


def announce(service: Service, source: str, url: str, *, out: TextIO) -> None:
    """Where the server listens and which experts answer (keys never shown)."""
    print(f"tryage serve: listening on {url}", file=out, flush=True)
    print(f"tryage serve: router {source}; feedback {'off (--read-only)' if service.learner.read_only else 'on'} "
          f"(state in {service.learner.folder})", file=out, flush=True)
    for upstream in service.upstreams.values():
        print(f"tryage serve: expert {upstream.name} -> {upstream.url} (model {upstream.model})", file=out, flush=True)


def run(config: ServeConfig, load_router: Callable[[], Any], *, out: TextIO = sys.stdout) -> int:
    """Serve until SIGINT/SIGTERM: stop accepting, finish requests and streams in flight, close the log."""
    import uvicorn

    from tryage.serve.app import create_app

    configure_logging(config)
    keys = config.api_keys()
    config.check_exposure(keys)
    service, source = build_service(config, load_router)
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    announce(service, source, f"http://{shown}:{port}/v1", out=out)
    app = create_app(service, api_keys=keys)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=int(config.shutdown_timeout) or 1,
                                           timeout_keep_alive=30))
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; a stop asked for is a
    # clean exit here (status 0), so the handlers it restores ignore that second delivery.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("tryage serve: stopped", file=out, flush=True)
    return 0


__all__ = ["announce", "bind", "build_service", "check_router", "configure_logging", "run"]
