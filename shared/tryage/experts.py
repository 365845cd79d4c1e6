"""Experts and the library that holds them.

An :class:`Expert` is a record of what Tryage knows about one model: its name (the key the router
predicts a loss for) and the metadata that constraints read. Unknown metadata is ``None``; nothing
is guessed. An :class:`ExpertLibrary` is an ordered, immutable collection of experts with unique
names; its order is the order of the router's output columns.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, overload

from tryage._io import atomic_write_text, dumps_strict
from tryage.errors import ExpertLibraryError, ExpertNotFoundError, RouterMismatchError, TryageFileNotFoundError

LIBRARY_FORMAT_VERSION = 1
#: Fields of a ``tryage collect`` experts-file entry that say how to call a model, not what it is:
#: an expert library read from that file skips them.
CALLING_FIELDS = frozenset({"model_kwargs", "hf", "gguf_file", "system_prompt", "requests_per_second", "concurrency",
                            "expected_output_tokens", "api_key_env", "max_length", "discover"})

_SIZE_RE = re.compile(r"^\s*(?:(\d+)\s*[x×]\s*)?(\d+(?:\.\d+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


MAX_PARAMETERS = 10**15  #: the largest parameter count accepted ("1000T"); more is a typo

#: The answer metrics ``tryage metrics`` measures from a call log (each lower-is-better; see :mod:`tryage.constraints`).
METRICS = ("verbosity", "readability", "safety", "hallucination")
#: Fewest measured answers for an expert's metric to count; fewer reads as missing (``None``).
MIN_METRIC_ANSWERS = 5


@dataclass(frozen=True)
class MetricSummary:
    """One answer metric of one expert, measured over its answers.

    Attributes:
        mean: Mean over the measured answers (tokens, grade level, or a share in [0, 1]).
        count: How many answers were measured.
        stderr: Standard error of the mean (``None`` below two answers).
    """

    mean: float
    count: int
    stderr: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> MetricSummary:
        """The summary of measured values (at least one)."""
        n = len(values)
        mean = math.fsum(values) / n
        var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else None
        return cls(mean, n, None if var is None else math.sqrt(var / n))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "count": self.count, "stderr": self.stderr}


def _metrics(name: str, value: Any) -> dict[str, MetricSummary]:
    if not isinstance(value, Mapping):
        raise ExpertLibraryError(f"expert {name!r}: metrics must be an object of metric -> "
                                 f"{{mean, count, stderr}}, got {value!r:.60}")
    out: dict[str, MetricSummary] = {}
    for metric, entry in value.items():
        if isinstance(entry, MetricSummary):
            entry = entry.to_dict()
        if not isinstance(metric, str) or not metric.isidentifier() or not isinstance(entry, Mapping):
            raise ExpertLibraryError(f"expert {name!r}: metrics[{metric!r}] must be {{mean, count, stderr}}, "
                                     f"got {entry!r:.60}")
        mean = entry.get("mean")
        if isinstance(mean, bool) or not isinstance(mean, (int, float)) or not math.isfinite(mean):
            raise ExpertLibraryError(f"expert {name!r}: metrics[{metric!r}].mean must be a finite number, got {mean!r:.60}")
        count = _optional_int(name, f"metrics[{metric!r}].count", entry.get("count"))
        stderr = _optional_float(name, f"metrics[{metric!r}].stderr", entry.get("stderr"))
        out[metric] = MetricSummary(float(mean), count or 0, stderr)
    return out


def parse_size(value: str | int | float | None) -> int | None:
    """Parse a parameter count such as ``"7B"``, ``"135M"``, ``"8x7B"`` or ``7_000_000_000``.

    ``None`` and ``""`` mean unknown and return ``None``. Anything else that is not a whole count
    between 1 and :data:`MAX_PARAMETERS` raises :class:`ExpertLibraryError`.
    """
    if value is None or value == "":
        return None
    allowed = "a number of parameters between 1 and 1000T, or a size like '135M', '7B', '8x7B'"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ExpertLibraryError(f"parameter count must be {allowed}; got {type(value).__name__} {value!r:.60}")
    if isinstance(value, (int, float)):
        total: float | int = value
    else:
        text = value.strip()
        match = _SIZE_RE.match(text) if len(text) <= 40 else None
        if not match:
            raise ExpertLibraryError(f"cannot read parameter count {value!r:.60}; use {allowed}")
        count, number, unit = match.groups()
        total = float(number) * _SIZE_UNITS[unit.upper()] * (int(count) if count else 1)
    if isinstance(total, float) and not math.isfinite(total):
        raise ExpertLibraryError(f"parameter count must be {allowed}; got {value!r:.60}")
    if not 1 <= total <= MAX_PARAMETERS:
        raise ExpertLibraryError(f"parameter count must be {allowed}; got {value!r:.60}")
    return int(total)


def format_size(parameters: int | None) -> str:
    """Format a parameter count for people: ``7000000000`` → ``"7B"``; ``None`` → ``"?"``."""
    if parameters is None:
        return "?"
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if parameters >= scale:
            return f"{parameters / scale:.3g}{unit}"
    return str(parameters)


def parse_datetime(value: str | date | datetime | None) -> datetime | None:
    """Read an ISO-8601 date or timestamp as an aware UTC ``datetime``; ``None`` stays unknown."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ExpertLibraryError(
            f"cannot read date {value!r:.60}; use ISO 8601, e.g. '2024-05-01' or '2024-05-01T12:00:00Z'"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _optional_float(name: str, key: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ExpertLibraryError(f"expert {name!r}: {key} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ExpertLibraryError(f"expert {name!r}: {key} must be a finite number >= 0, got {value!r:.60}") from None
    if not math.isfinite(number) or number < 0:
        raise ExpertLibraryError(f"expert {name!r}: {key} must be a finite number >= 0, got {value!r}")
    return number


def _optional_int(name: str, key: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
            or (isinstance(value, float) and not math.isfinite(value))):
        raise ExpertLibraryError(f"expert {name!r}: {key} must be a whole number >= 0, got {value!r:.60}")
    return int(value)


@dataclass(frozen=True)
class Expert:
    """One model that prompts can be routed to.

    Attributes:
        name: Unique key of the expert; the router predicts one loss per name.
        parameters: Parameter count, or ``None`` when unknown.
        created_at: When the model was created (UTC), or ``None``.
        last_modified: When the model was last changed (UTC), or ``None``.
        license: Licence identifier (e.g. ``"apache-2.0"``), or ``None``.
        input_cost: USD per 1M input tokens, or ``None``.
        output_cost: USD per 1M output tokens, or ``None``.
        description: Free text: what the model is good at.
        tags: Free-form tags (domains, tasks).
        repo_id: Hugging Face Hub repository id, when the expert lives there.
        downloads: Hub download count, or ``None``.
        likes: Hub like count, or ``None``.
        pipeline_tag: Hub pipeline tag (e.g. ``"fill-mask"``), or ``None``.
        library_name: Hub library name (e.g. ``"transformers"``), or ``None``.
        gated: Whether the Hub repository is gated, or ``None`` when unknown.
        measured_cost: Mean USD per call measured by ``tryage collect``, or ``None``.
        measured_latency_s: Mean seconds per call measured by ``tryage collect``, or ``None``.
        metrics: Answer metrics measured from its answers (``tryage metrics``), by name (see :data:`METRICS`).
    """

    name: str
    parameters: int | None = None
    created_at: datetime | None = None
    last_modified: datetime | None = None
    license: str | None = None
    input_cost: float | None = None
    output_cost: float | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    repo_id: str | None = None
    downloads: int | None = None
    likes: int | None = None
    pipeline_tag: str | None = None
    library_name: str | None = None
    gated: bool | None = None
    measured_cost: float | None = None
    measured_latency_s: float | None = None
    metrics: Mapping[str, MetricSummary] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ExpertLibraryError(f"expert name must be a non-empty string, got {self.name!r}")
        if self.parameters is not None:
            try:
                object.__setattr__(self, "parameters", parse_size(self.parameters))
            except ExpertLibraryError as exc:
                raise ExpertLibraryError(f"expert {self.name!r}: {exc}") from None
        for key in ("created_at", "last_modified"):
            try:
                object.__setattr__(self, key, parse_datetime(getattr(self, key)))
            except ExpertLibraryError as exc:
                raise ExpertLibraryError(f"expert {self.name!r}: {key}: {exc}") from None
        for key in ("input_cost", "output_cost", "measured_cost", "measured_latency_s"):
            object.__setattr__(self, key, _optional_float(self.name, key, getattr(self, key)))
        for key in ("downloads", "likes"):
            object.__setattr__(self, key, _optional_int(self.name, key, getattr(self, key)))
        object.__setattr__(self, "metrics", _metrics(self.name, {} if self.metrics is None else self.metrics))
        for key in ("license", "repo_id", "pipeline_tag", "library_name"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ExpertLibraryError(
                    f"expert {self.name!r}: {key} must be a string or null, got {type(value).__name__} {value!r:.60}")
        if not isinstance(self.description, str):
            raise ExpertLibraryError(
                f"expert {self.name!r}: description must be a string, got {type(self.description).__name__}")
        if self.gated is not None and not isinstance(self.gated, bool):
            raise ExpertLibraryError(f"expert {self.name!r}: gated must be true, false or null, got {self.gated!r:.60}")
        tags = (self.tags,) if isinstance(self.tags, str) else (
            tuple(self.tags) if isinstance(self.tags, Iterable) and not isinstance(self.tags, (bytes, Mapping)) else None)
        if tags is not None and all(isinstance(t, str) for t in tags):
            object.__setattr__(self, "tags", tags)
        else:
            raise ExpertLibraryError(
                f"expert {self.name!r}: tags must be a string or a list of strings, got {self.tags!r:.60}")

    @property
    def cost(self) -> float | None:
        """Mean of input and output cost per 1M tokens, or ``None`` when neither is known."""
        known = [c for c in (self.input_cost, self.output_cost) if c is not None]
        return sum(known) / len(known) if known else None

    def metric(self, name: str, *, min_count: int = MIN_METRIC_ANSWERS) -> float | None:
        """The mean of answer metric ``name``, ``None`` when unmeasured or measured on fewer than ``min_count`` answers."""
        summary = self.metrics.get(name)
        return None if summary is None or summary.count < min_count else summary.mean

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; dates as ISO 8601 strings, unknown values as ``None``."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "metrics"}
        if self.metrics:
            data["metrics"] = {k: v.to_dict() for k, v in sorted(self.metrics.items())}
        for key in ("created_at", "last_modified"):
            if data[key] is not None:
                data[key] = data[key].isoformat().replace("+00:00", "Z")
        data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str | None = None) -> Expert:
        """Build an expert from a dict of :meth:`to_dict` or of LLMRouter's ``models.json``.

        LLMRouter's keys are understood too: ``size`` (``"7B"``), ``input_price``,
        ``output_price``, ``feature`` (the description) and ``model`` (the serving id, kept as
        ``repo_id`` unless the entry has one). An entry of ``tryage collect``'s experts file is read
        too: the fields that say how to call the model (``model_kwargs``, ``system_prompt``, ...) are
        skipped. Unknown keys are an error, so a typo never silently drops metadata.
        """
        aliases = {"size": "parameters", "input_price": "input_cost", "output_price": "output_cost",
                   "feature": "description", "model": "repo_id", "params": "parameters"}
        ignored = {"service", *CALLING_FIELDS} | ({"model"} if isinstance(data, Mapping) and "repo_id" in data else set())
        if not isinstance(data, Mapping):
            raise ExpertLibraryError(f"an expert entry must be an object with 'name' and metadata, got {data!r:.80}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in ignored:
                continue
            target = aliases.get(key, key)
            if target not in known:
                raise ExpertLibraryError(
                    f"expert {name or data.get('name')!r}: unknown field {key!r}; "
                    f"allowed: {', '.join(sorted(known | set(aliases)))}"
                )
            kwargs[target] = value
        if name is not None:
            kwargs.setdefault("name", name)
        if "name" not in kwargs:
            raise ExpertLibraryError(f"expert entry has no name: {dict(data)!r}")
        try:
            return cls(**kwargs)
        except ExpertLibraryError as exc:
            if kwargs["name"] in str(exc):
                raise
            raise ExpertLibraryError(f"expert {kwargs['name']!r}: {exc}") from None


class ExpertLibrary(Sequence[Expert]):
    """An ordered, immutable set of experts with unique names.

    Index it by position or by name. The order is the order of a router's output columns.
    """

    def __init__(self, experts: Iterable[Expert]) -> None:
        self._experts: tuple[Expert, ...] = tuple(experts)
        if not self._experts:
            raise ExpertLibraryError("an expert library needs at least one expert")
        self._index: dict[str, int] = {}
        for position, expert in enumerate(self._experts):
            if not isinstance(expert, Expert):
                raise ExpertLibraryError(f"expected Expert objects, got {type(expert).__name__}")
            if expert.name in self._index:
                raise ExpertLibraryError(f"duplicate expert name {expert.name!r}")
            self._index[expert.name] = position

    # -- Sequence protocol -------------------------------------------------------------------
    @overload
    def __getitem__(self, key: int | str) -> Expert: ...
    @overload
    def __getitem__(self, key: slice) -> Sequence[Expert]: ...
    def __getitem__(self, key: int | str | slice) -> Expert | Sequence[Expert]:
        if isinstance(key, str):
            return self._experts[self.index(key)]
        return self._experts[key]

    def __len__(self) -> int:
        return len(self._experts)

    def __iter__(self) -> Iterator[Expert]:
        return iter(self._experts)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return item in self._index
        return item in self._experts

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExpertLibrary) and self._experts == other._experts

    def __hash__(self) -> int:
        return hash(self._experts)

    def __repr__(self) -> str:
        return f"ExpertLibrary([{', '.join(repr(e.name) for e in self._experts)}])"

    # -- lookups -----------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """Expert names in library order."""
        return tuple(e.name for e in self._experts)

    def index(self, name: str, *args: Any) -> int:  # type: ignore[override]
        """Position of the expert called ``name``; :class:`ExpertNotFoundError` if absent."""
        if not isinstance(name, str):
            return self._experts.index(name, *args)
        try:
            return self._index[name]
        except KeyError:
            raise ExpertNotFoundError(name, self.names) from None

    def subset(self, names: Iterable[str]) -> ExpertLibrary:
        """A library of the named experts, in the order given."""
        return ExpertLibrary(self[n] for n in names)

    def reorder(self, names: Sequence[str]) -> ExpertLibrary:
        """The same experts in the order of ``names``, which must name each exactly once."""
        if sorted(names) != sorted(self.names):
            raise RouterMismatchError(names, self.names)
        return self.subset(names)

    def merge(self, overrides: ExpertLibrary | Iterable[Expert], *, prefer: str = "overrides") -> ExpertLibrary:
        """Combine two descriptions of the same experts field by field.

        For each expert in ``overrides`` that this library also holds, every field that is known
        (not ``None``/empty) in the preferred side wins; the other side fills the gaps. Experts
        only in ``overrides`` are appended. ``prefer`` is ``"overrides"`` or ``"self"``.
        """
        if prefer not in ("overrides", "self"):
            raise ExpertLibraryError(f"prefer must be 'overrides' or 'self', got {prefer!r}")
        others = {e.name: e for e in overrides}
        merged: list[Expert] = []
        for expert in self._experts:
            other = others.pop(expert.name, None)
            if other is None:
                merged.append(expert)
                continue
            first, second = (other, expert) if prefer == "overrides" else (expert, other)
            values = {}
            for f in dataclasses.fields(Expert):
                a, b = getattr(first, f.name), getattr(second, f.name)
                values[f.name] = {**b, **a} if f.name == "metrics" else (a if a not in (None, "", ()) else b)
            merged.append(Expert(**values))
        merged.extend(others.values())
        return ExpertLibrary(merged)

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format_version": LIBRARY_FORMAT_VERSION, "experts": [e.to_dict() for e in self._experts]}

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the library as JSON, atomically (a crash never leaves half a file)."""
        target = Path(path)
        atomic_write_text(target, dumps_strict(self.to_dict(), what=f"expert library {target}") + "\n")
        return target

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> ExpertLibrary:
        """Read Tryage's format (``{"format_version", "experts": [...]}``), a plain list of expert
        dicts, or LLMRouter's ``{name: {"size", "input_price", ...}}`` mapping."""
        if isinstance(data, Mapping) and "experts" in data:
            version = data.get("format_version", LIBRARY_FORMAT_VERSION)
            if version != LIBRARY_FORMAT_VERSION:
                raise ExpertLibraryError(
                    f"{source}: unsupported expert library format_version {version!r}; "
                    f"this Tryage reads version {LIBRARY_FORMAT_VERSION}"
                )
            entries = data["experts"]
            if not isinstance(entries, list):
                raise ExpertLibraryError(f"{source}: 'experts' must be a list")
            return cls(Expert.from_dict(e) for e in entries)
        if isinstance(data, list):
            return cls(Expert.from_dict(e) for e in data)
        if isinstance(data, Mapping):
            experts = []
            for name, entry in data.items():
                if not isinstance(entry, Mapping):
                    raise ExpertLibraryError(f"{source}: entry {name!r} must be an object, got {entry!r}")
                experts.append(Expert.from_dict(entry, name=name))
            return cls(experts)
        raise ExpertLibraryError(
            f"{source}: expected an object with 'experts', a list of experts, or a mapping "
            f"name -> metadata; got {type(data).__name__}"
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike[str], *, names: Iterable[str] | None = None) -> ExpertLibrary:
        """Load a library from a JSON file; ``names`` keeps only those experts, in that order."""
        source = Path(path)
        allowed = "an expert library is a UTF-8 JSON file"
        try:
            text = source.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise TryageFileNotFoundError(f"expert library file not found: {source}") from None
        except UnicodeDecodeError as exc:
            raise ExpertLibraryError(f"{source}: is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} "
                                     f"at offset {exc.start}); {allowed}") from None
        except OSError as exc:
            what = "is a folder, not a file" if source.is_dir() else f"cannot be read ({exc.strerror or exc})"
            raise ExpertLibraryError(f"{source}: {what}; {allowed}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ExpertLibraryError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}); {allowed}") from None
        except RecursionError:
            raise ExpertLibraryError(f"{source}: JSON nested too deeply; {allowed}") from None
        try:
            library = cls.from_dict(data, source=str(source))
        except ExpertLibraryError as exc:
            if str(source) in str(exc):
                raise
            raise ExpertLibraryError(f"{source}: {exc}") from None
        return library.subset(names) if names is not None else library

    @classmethod
    def from_names(cls, names: Iterable[str]) -> ExpertLibrary:
        """A library of bare experts: names only, every piece of metadata unknown."""
        return cls(Expert(name=n) for n in names)


__all__ = ["METRICS", "MIN_METRIC_ANSWERS", "Expert", "ExpertLibrary", "MetricSummary", "format_size",
           "parse_datetime", "parse_size"]
