"""Every setting of ``tryage serve``: one frozen record, read from flags and one config file.

Each flag has a key of the same name in the config file (``--max-body-bytes`` is ``max_body_bytes``
or ``max-body-bytes``); a flag given on the command line wins over the file, the file over the
defaults. The file is TOML (``.toml``, read with :mod:`tomllib`) or YAML (``.yaml``/``.yml``, needs
PyYAML). Values are checked once, here, with :func:`tryage.errors.check_scalar`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tryage._io import read_settings
from tryage.errors import ConfigurationError, TryageFileNotFoundError, check_scalar

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class ServeConfig:
    """The settings of one ``tryage serve``.

    Attributes:
        router: A saved router folder or an embedded router's name.
        experts: The experts file (``tryage collect``'s format) naming the endpoints that answer.
        host: Address to bind; anything but loopback needs API keys or ``no_auth``.
        port: Port to bind (0: any free port).
        api_keys_file: A file of client keys, one a line (``TRYAGE_API_KEYS`` adds comma-separated ones).
        no_auth: Serve without keys even beyond loopback.
        state_dir: Where the feedback log and the routers learned from it are kept.
        read_only: Log no feedback and never update the router.
        update_every: Feedback rows that trigger a router update.
        update_interval: Seconds after which pending feedback (at least one row) triggers an update.
        timeout: Seconds an expert may take to answer (a stream: to send its first chunk, then each chunk).
        retries: Retries of an expert on 429, 5xx, timeouts and refused connections, before falling back.
        backoff: Seconds before the first retry, doubling after each (a ``Retry-After`` up to 30 s wins).
        fallback: Try the next-best expert when the chosen one fails.
        max_fallbacks: At most this many further experts (``None``: every eligible one).
        max_concurrency: Requests in flight at once; beyond it, 429 with ``Retry-After``.
        expert_concurrency: Calls in flight per expert (an entry's own ``concurrency`` wins).
        max_body_bytes: Largest request body accepted (413 beyond it).
        context_weight: Share of a conversation's earlier turns in each predicted loss, in [0, 1].
        stickiness_margin: How much lower another expert's objective must be to move a thread.
        batch_window_ms: How long routing waits for more requests to share one encoder pass.
        max_batch: Most prompts in one encoder pass.
        weights: Default constraint weights.
        access_log: File for JSON access-log lines (``"-"``: stderr; ``None``: off).
        log_prompts: Put prompt text into the access log.
        shutdown_timeout: Seconds a graceful shutdown waits for requests and streams in flight.
        ray: Run on Ray Serve.
        replicas: Ray Serve replicas (a fixed number).
        autoscale: Ray Serve autoscaling instead: ``"MIN:MAX"`` replicas, or (config file) a table of Ray
            Serve's ``autoscaling_config`` keys (``min_replicas``, ``max_replicas``,
            ``target_ongoing_requests``, ...).
        replica_cpus: CPUs Ray reserves for each replica (fractions allowed; 0: none).
        address: Ray cluster to join.
    """

    router: str
    experts: str
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys_file: str | None = None
    no_auth: bool = False
    state_dir: str = "tryage-state"
    read_only: bool = False
    update_every: int = 64
    update_interval: float = 300.0
    timeout: float = 60.0
    retries: int = 2
    backoff: float = 0.5
    fallback: bool = True
    max_fallbacks: int | None = None
    max_concurrency: int = 512
    expert_concurrency: int = 128
    max_body_bytes: int = 4 * 1024 * 1024
    context_weight: float = 0.25
    stickiness_margin: float = 0.05
    batch_window_ms: float = 2.0
    max_batch: int = 32
    weights: Mapping[str, float] = field(default_factory=dict)
    access_log: str | None = None
    log_prompts: bool = False
    shutdown_timeout: float = 30.0
    ray: bool = False
    replicas: int = 1
    autoscale: str | Mapping[str, Any] | None = None
    replica_cpus: float = 1.0
    address: str | None = None

    def __post_init__(self) -> None:
        for name in ("router", "experts", "host"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigurationError(f"{name} must be a non-empty string, got {getattr(self, name)!r:.60}")
        whole = {"port": (0, 65535), "retries": (0, 20), "update_every": (1, None), "max_concurrency": (1, None),
                 "expert_concurrency": (1, None), "max_body_bytes": (1024, None), "max_batch": (1, 4096),
                 "replicas": (1, 1024)}
        for name, (low, high) in whole.items():
            object.__setattr__(self, name, check_scalar(getattr(self, name), name, kind=int, low=low, high=high,
                                                        error=ConfigurationError))
        if self.max_fallbacks is not None:
            object.__setattr__(self, "max_fallbacks", check_scalar(self.max_fallbacks, "max_fallbacks", kind=int,
                                                                   low=0, error=ConfigurationError))
        positive = ("update_interval", "timeout", "shutdown_timeout")
        for name in positive:
            object.__setattr__(self, name, check_scalar(getattr(self, name), name, low=0, low_open=True,
                                                        error=ConfigurationError))
        for name, high in (("backoff", 60.0), ("batch_window_ms", 1000.0), ("context_weight", 1.0),
                           ("stickiness_margin", None)):
            object.__setattr__(self, name, check_scalar(getattr(self, name), name, low=0, high=high,
                                                        error=ConfigurationError))
        for name in ("no_auth", "read_only", "fallback", "log_prompts", "ray"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be true or false, got {getattr(self, name)!r:.60}")
        if not isinstance(self.weights, Mapping):
            raise ConfigurationError(f"weights must be a table of constraint = number, got {self.weights!r:.60}")
        object.__setattr__(self, "weights", {str(k): check_scalar(v, f"weights.{k}", error=ConfigurationError)
                                             for k, v in self.weights.items()})
        object.__setattr__(self, "replica_cpus", check_scalar(self.replica_cpus, "replica_cpus", low=0, high=1024,
                                                              error=ConfigurationError))
        if self.autoscale is not None:
            object.__setattr__(self, "autoscale", _autoscale(self.autoscale))
            if self.replicas != 1:
                raise ConfigurationError(f"give replicas ({self.replicas}) or autoscale ({self.autoscale}), not both")

    def autoscaling_config(self) -> dict[str, Any] | None:
        """Ray Serve's ``autoscaling_config`` (``None``: a fixed number of replicas)."""
        return dict(self.autoscale) if isinstance(self.autoscale, Mapping) else None

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, given: Mapping[str, Any], config_file: str | os.PathLike[str] | None = None, *,
              elsewhere: Collection[str] = ()) -> ServeConfig:
        """The settings: ``given`` (flags set on the command line) over ``config_file`` over the defaults.

        ``elsewhere``: keys of the config file that belong to other commands (see :func:`read_config_file`).
        """
        values = dict(read_config_file(config_file, elsewhere=elsewhere)) if config_file is not None else {}
        values.update({k: v for k, v in given.items() if v is not None})
        missing = [k for k in ("router", "experts") if k not in values]
        if missing:
            raise ConfigurationError(f"tryage serve needs {' and '.join('--' + k for k in missing)} "
                                   "(on the command line or as keys of --config)")
        return cls(**values)

    def api_keys(self) -> frozenset[str]:
        """Client keys: ``TRYAGE_API_KEYS`` (comma-separated) and the lines of ``api_keys_file``."""
        keys = {k.strip() for k in os.environ.get("TRYAGE_API_KEYS", "").split(",") if k.strip()}
        if self.api_keys_file is not None:
            path = Path(self.api_keys_file)
            if not path.is_file():
                raise TryageFileNotFoundError(f"API keys file not found: {path}")
            keys |= {line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                     if line.strip() and not line.lstrip().startswith("#")}
        return frozenset(keys)

    def check_exposure(self, keys: frozenset[str]) -> None:
        """Refuse to bind beyond loopback with no keys, unless ``no_auth`` says so."""
        if self.host not in LOOPBACK and not keys and not self.no_auth:
            raise ConfigurationError(f"refusing to serve on {self.host} without API keys: set TRYAGE_API_KEYS or "
                                   "--api-keys-file, or pass --no-auth to serve anyone who can reach the port")


def _autoscale(value: Any) -> Mapping[str, Any]:
    """``"MIN:MAX"`` or a table of ``autoscaling_config`` keys, as a table (Ray checks the keys it knows)."""
    if isinstance(value, Mapping):
        table = {str(k): v for k, v in value.items()}
    elif isinstance(value, str) and value.count(":") == 1:
        low, high = value.split(":")
        table = {"min_replicas": low.strip(), "max_replicas": high.strip()}
        for key, number in table.items():
            if not number.isdigit():
                raise ConfigurationError(f"autoscale must be MIN:MAX replicas (e.g. 1:4), got {value!r:.60}")
            table[key] = int(number)
    else:
        raise ConfigurationError(f"autoscale must be MIN:MAX replicas (e.g. 1:4) or a table of Ray Serve "
                               f"autoscaling_config keys, got {value!r:.60}")
    low = check_scalar(table.get("min_replicas", 1), "autoscale min_replicas", kind=int, low=0, high=1024,
                       error=ConfigurationError)
    high = check_scalar(table.get("max_replicas", max(low, 1)), "autoscale max_replicas", kind=int,
                        low=max(low, 1), high=1024, error=ConfigurationError)
    return {**table, "min_replicas": low, "max_replicas": high}


def read_config_file(path: str | os.PathLike[str], *, elsewhere: Collection[str] = ()) -> dict[str, Any]:
    """The serve keys of a TOML or YAML config file, dashes read as underscores; unknown keys refused.

    The settings sit at the top or under a ``[serve]`` table. In the one config file every ``tryage``
    command reads (``tryage.cli._common``), ``elsewhere`` names the keys and tables that belong to the
    other commands: they are left to them.
    """
    source = Path(path)
    data = read_settings(source)
    if isinstance(data.get("serve"), Mapping):  # the settings may sit under a [serve] table
        data = {**{k: v for k, v in data.items() if k != "serve"},
                **{str(k).replace("-", "_"): v for k, v in data["serve"].items()}}
    data = {k: v for k, v in data.items() if k in ServeConfig.keys() or k not in elsewhere}
    unknown = sorted(set(data) - set(ServeConfig.keys()))
    if unknown:
        raise ConfigurationError(f"{source}: unknown key(s) {unknown}; allowed: {', '.join(ServeConfig.keys())}")
    for key in ("router", "experts", "api_keys_file", "state_dir", "access_log"):  # relative to the file
        if isinstance(data.get(key), str) and data[key] != "-" and not Path(data[key]).is_absolute():
            candidate = source.parent / data[key]
            if key != "router" or candidate.exists():
                data[key] = str(candidate)
    return data


__all__ = ["LOOPBACK", "ServeConfig", "read_config_file"]
