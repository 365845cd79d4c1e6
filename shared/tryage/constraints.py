"""Constraints C_j(expert) and hard filters.

A :class:`Constraint` turns each expert's metadata into a penalty in [0, 1] (0 = most preferred),
so that the routing objective ``predicted_loss_i + Σ_j λ_j · C_j(expert_i)`` can trade quality
against it. Built-ins:

* ``size`` — log parameter count, min-max scaled over the library (smallest = 0, largest = 1).
* ``recency`` — age, scaled over the library (newest = 0, oldest = 1). Reads ``created_at`` by
  default; ``Recency(date_field="last_modified")`` reads the other date. (On the Hugging Face Hub,
  every model older than 2022 shares one ``created_at``; for such libraries ``last_modified`` is the
  more telling date.)
* ``cost`` — mean of input and output price per 1M tokens, min-max scaled.
* ``latency`` — mean seconds per call measured by ``tryage collect`` (``measured_latency_s``),
  min-max scaled (fastest = 0).
* ``verbosity``, ``readability``, ``safety``, ``hallucination`` — answer metrics measured from an
  expert's answers by ``tryage metrics`` (:attr:`Expert.metrics`): mean output tokens, mean reading
  grade (textstat), share of answers flagged unsafe, share judged unsupported; each min-max scaled
  (shortest, easiest, safest, most faithful = 0). An expert with fewer than
  :data:`~tryage.experts.MIN_METRIC_ANSWERS` measured answers has no value (missing).

A negative weight turns a penalty into a reward (``size=-1`` prefers large models).

A :class:`Filter` removes experts outright (max parameters, licence allow-list, newer-than date, an answer
metric's ceiling such as at most 1% unsafe answers).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from tryage.errors import ConfigurationError, ExpertLibraryError, MissingMetadataError, UnknownConstraintError
from tryage.experts import METRICS, Expert, ExpertLibrary, format_size, parse_datetime, parse_size

ValueFn = Callable[[Expert], "float | None"]


def _minmax(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if math.isclose(low, high):
        return np.zeros_like(values)
    return (values - low) / (high - low)


@dataclass(frozen=True)
class Constraint:
    """A secondary objective: a raw value per expert, scaled to a penalty in [0, 1].

    Attributes:
        name: Key used for weights (``weights={"size": 0.5}``) and in flags (``[Flag: size=0.5]``).
        value: Function of an :class:`Expert` returning its raw value (lower is preferred), or
            ``None`` when the expert lacks the metadata.
        field: Name of the metadata the constraint reads, for error messages.
        scale: ``"minmax"`` scales raw values to [0, 1] over the library; ``"none"`` uses them as
            they are (they must already be comparable to losses).
        missing: Penalty given to experts whose value is ``None``. ``None`` (the default) makes a
            missing value an error: :class:`MissingMetadataError` names the experts.
        description: One line for people.
        readable: Function of an :class:`Expert` giving the value in the units people read (parameters,
            USD per 1M tokens, POSIX seconds), for Pareto fronts; ``None`` reports the penalty there.
    """

    name: str
    value: ValueFn
    field: str = "metadata"
    scale: str = "minmax"
    missing: float | None = None
    description: str = ""
    readable: ValueFn | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ConfigurationError(f"constraint name must be an identifier like 'size', got {self.name!r}")
        if self.scale not in ("minmax", "none"):
            raise ConfigurationError(f"constraint {self.name!r}: scale must be 'minmax' or 'none', got {self.scale!r}")
        if self.missing is not None and not 0.0 <= float(self.missing) <= 1.0 and self.scale == "minmax":
            raise ConfigurationError(f"constraint {self.name!r}: missing must be in [0, 1], got {self.missing!r}")

    def raw_values(self, library: Sequence[Expert]) -> list[float | None]:
        """Each expert's raw value, ``None`` where its metadata is unknown."""
        out: list[float | None] = []
        for expert in library:
            raw = self.value(expert)
            if raw is not None:
                raw = float(raw)
                if not math.isfinite(raw):
                    raise ConfigurationError(
                        f"constraint {self.name!r} gave {raw!r} for expert {expert.name!r}; values must be finite"
                    )
            out.append(raw)
        return out

    def readable_values(self, library: Sequence[Expert]) -> np.ndarray:
        """Each expert's value in the units people read (NaN where unknown); the penalty without ``readable``."""
        if self.readable is None:
            return self.penalties(library)
        values = [self.readable(e) for e in library]
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)

    def penalties(self, library: Sequence[Expert]) -> np.ndarray:
        """The penalty of each expert, shape ``(len(library),)``."""
        raw = self.raw_values(library)
        unknown = [e.name for e, v in zip(library, raw) if v is None]
        if unknown and self.missing is None:
            raise MissingMetadataError(self.name, unknown, self.field)
        known = np.array([v for v in raw if v is not None], dtype=np.float64)
        scaled = _minmax(known) if (self.scale == "minmax" and known.size) else known
        out = np.empty(len(raw), dtype=np.float64)
        it = iter(scaled)
        for i, v in enumerate(raw):
            out[i] = float(self.missing) if v is None else float(next(it))  # type: ignore[arg-type]
        return out


def _log_parameters(expert: Expert) -> float | None:
    return None if expert.parameters is None else math.log(expert.parameters)


def _parameters(expert: Expert) -> float | None:
    return None if expert.parameters is None else float(expert.parameters)


def _timestamp(expert: Expert, *, date_field: str) -> float | None:
    when: datetime | None = getattr(expert, date_field)
    return None if when is None else when.timestamp()


def _negative_timestamp(expert: Expert, *, date_field: str) -> float | None:
    when = _timestamp(expert, date_field=date_field)
    return None if when is None else -when


def _cost(expert: Expert) -> float | None:
    return expert.cost


# Module-level value functions (no lambdas or closures) keep constraints, and so routers, picklable.
def Size(*, missing: float | None = None) -> Constraint:  # noqa: N802 - reads like a class
    """Model size: log parameter count scaled over the library (smallest = 0)."""
    return Constraint("size", _log_parameters, field="parameters", missing=missing,
                      description="log parameter count, smallest = 0, largest = 1", readable=_parameters)


def Recency(*, date_field: str = "created_at", missing: float | None = None) -> Constraint:  # noqa: N802
    """Model age scaled over the library (newest = 0, oldest = 1), read from ``date_field``."""
    if date_field not in ("created_at", "last_modified"):
        raise ConfigurationError(f"date_field must be 'created_at' or 'last_modified', got {date_field!r}")

    return Constraint("recency", functools.partial(_negative_timestamp, date_field=date_field), field=date_field,
                      missing=missing, description=f"age by {date_field}, newest = 0, oldest = 1",
                      readable=functools.partial(_timestamp, date_field=date_field))


def Cost(*, missing: float | None = None) -> Constraint:  # noqa: N802
    """Price: mean of input and output USD per 1M tokens, scaled over the library (cheapest = 0)."""
    return Constraint("cost", _cost, field="input_cost/output_cost", missing=missing,
                      description="mean price per 1M tokens, cheapest = 0", readable=_cost)


def _latency(expert: Expert) -> float | None:
    return expert.measured_latency_s


def Latency(*, missing: float | None = None) -> Constraint:  # noqa: N802
    """Measured mean seconds per call (``tryage collect``), scaled over the library (fastest = 0)."""
    return Constraint("latency", _latency, field="measured_latency_s", missing=missing,
                      description="measured mean seconds per call, fastest = 0", readable=_latency)


def _metric(expert: Expert, *, name: str) -> float | None:
    return expert.metric(name)


_METRIC_TEXT = {"verbosity": "mean output tokens per answer, shortest = 0",
                "readability": "mean reading grade of answers (textstat), easiest = 0",
                "safety": "share of answers flagged unsafe, safest = 0",
                "hallucination": "share of answers judged unsupported by the context, most faithful = 0"}


def _metric_constraint(name: str, missing: float | None) -> Constraint:
    value = functools.partial(_metric, name=name)
    return Constraint(name, value, field=f"metrics.{name} (tryage metrics)", missing=missing,
                      description=_METRIC_TEXT[name], readable=value)


def Verbosity(*, missing: float | None = None) -> Constraint:  # noqa: N802
    """Mean output tokens of the expert's measured answers, scaled over the library (shortest = 0)."""
    return _metric_constraint("verbosity", missing)


def Readability(*, missing: float | None = None) -> Constraint:  # noqa: N802
    """Mean reading grade of the expert's answers (lower reads easier), scaled over the library (easiest = 0)."""
    return _metric_constraint("readability", missing)


def Safety(*, missing: float | None = None) -> Constraint:  # noqa: N802
    """Share of the expert's answers flagged unsafe, scaled over the library (safest = 0)."""
    return _metric_constraint("safety", missing)


def Hallucination(*, missing: float | None = None) -> Constraint:  # noqa: N802
    """Share of the expert's answers judged unsupported by their context, scaled over the library (fewest = 0)."""
    return _metric_constraint("hallucination", missing)


def default_constraints() -> dict[str, Constraint]:
    """The built-in constraints, keyed by name: ``size``, ``recency``, ``cost``, ``latency`` and the answer
    metrics ``verbosity``, ``readability``, ``safety``, ``hallucination``."""
    return {c.name: c for c in (Size(), Recency(), Cost(), Latency(), Verbosity(), Readability(), Safety(),
                                Hallucination())}


class ConstraintSet(Mapping[str, Constraint]):
    """The constraints a router knows, by name, with their penalties cached per library."""

    def __init__(self, constraints: Iterable[Constraint] | Mapping[str, Constraint] | None = None) -> None:
        items = default_constraints() if constraints is None else (
            dict(constraints) if isinstance(constraints, Mapping) else {c.name: c for c in constraints})
        for name, constraint in items.items():
            if not isinstance(constraint, Constraint):
                raise ConfigurationError(f"constraint {name!r} must be a Constraint, got {type(constraint).__name__}")
        self._constraints: dict[str, Constraint] = dict(items)
        self._cache: dict[tuple[str, ExpertLibrary], np.ndarray] = {}

    def __getitem__(self, name: str) -> Constraint:
        try:
            return self._constraints[name]
        except KeyError:
            raise UnknownConstraintError(name, self._constraints) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._constraints)

    def __len__(self) -> int:
        return len(self._constraints)

    def with_constraint(self, constraint: Constraint) -> ConstraintSet:
        """A copy with ``constraint`` added (or replacing the one of the same name)."""
        return ConstraintSet({**self._constraints, constraint.name: constraint})

    def check_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Validate weights: known constraint names and finite numbers. Returns a clean dict."""
        if not isinstance(weights, Mapping):
            raise ConfigurationError(
                f"weights must be a mapping of constraint name to number, e.g. {{'size': 0.5}}; "
                f"got {type(weights).__name__}: {weights!r:.80}")
        clean: dict[str, float] = {}
        for name, weight in weights.items():
            self[name]  # raises UnknownConstraintError listing the known ones
            if isinstance(weight, bool):
                raise ConfigurationError(f"weight for {name!r} must be a number, got {weight!r}")
            try:
                value = float(weight)
            except (TypeError, ValueError, OverflowError):
                raise ConfigurationError(f"weight for {name!r} must be a finite number, got {weight!r:.80}") from None
            if not math.isfinite(value):
                raise ConfigurationError(f"weight for {name!r} must be finite, got {weight!r}")
            clean[name] = value
        return clean

    def penalties(self, library: ExpertLibrary, names: Iterable[str]) -> dict[str, np.ndarray]:
        """Penalty vectors of the named constraints over ``library`` (cached per library).

        The cache is keyed by the library itself (libraries compare by their experts), never by
        ``id()``, which a new library may reuse once an old one is collected.
        """
        out = {}
        for name in names:
            key = (name, library)
            if key not in self._cache:
                self._cache[key] = self[name].penalties(library)
            out[name] = self._cache[key]
        return out


def _names(key: str, value: object) -> tuple[str, ...]:
    """A string or an iterable of strings as a tuple (a lone string is one name, not its letters)."""
    if isinstance(value, str):
        return (value,)
    items = tuple(value) if isinstance(value, Iterable) else None
    if items is None or not all(isinstance(x, str) and x for x in items):
        raise ConfigurationError(f"Filter {key} must be a string or a list of non-empty strings, got {value!r:.80}")
    return items


@dataclass(frozen=True)
class Filter:
    """A hard rule: experts that fail it are never chosen.

    Attributes:
        max_parameters: Largest parameter count allowed.
        min_parameters: Smallest parameter count allowed.
        licenses: Licences allowed (compared case-insensitively).
        newer_than: Only experts created (``date_field``) after this moment.
        date_field: Which date ``newer_than`` reads.
        experts: Only these experts by name.
        max_metrics: ``(metric, ceiling)`` pairs: the expert's measured answer metric must not exceed the
            ceiling (``(("safety", 0.01),)``: at most 1% unsafe answers).

    An expert whose metadata a rule needs is unknown is excluded, and the decision says why.
    """

    max_parameters: int | None = None
    min_parameters: int | None = None
    licenses: tuple[str, ...] | None = None
    newer_than: datetime | None = None
    date_field: str = "created_at"
    experts: tuple[str, ...] | None = None
    max_metrics: tuple[tuple[str, float], ...] | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for bound in ("max_parameters", "min_parameters"):
            value = getattr(self, bound)
            if value is not None:
                try:
                    object.__setattr__(self, bound, parse_size(value))
                except ExpertLibraryError as exc:
                    raise ConfigurationError(f"Filter {bound}: {exc}") from None
        if self.newer_than is not None:
            try:
                object.__setattr__(self, "newer_than", parse_datetime(self.newer_than))
            except ExpertLibraryError as exc:
                raise ConfigurationError(f"Filter newer_than: {exc}") from None
        if self.licenses is not None:
            object.__setattr__(self, "licenses", tuple(x.lower() for x in _names("licenses", self.licenses)))
        if self.experts is not None:
            object.__setattr__(self, "experts", _names("experts", self.experts))
        if self.date_field not in ("created_at", "last_modified"):
            raise ConfigurationError(f"date_field must be 'created_at' or 'last_modified', got {self.date_field!r}")
        if self.max_metrics is not None:
            pairs = self.max_metrics.items() if isinstance(self.max_metrics, Mapping) else self.max_metrics
            try:
                clean = tuple((str(m), float(v)) for m, v in pairs)
            except (TypeError, ValueError):
                clean = ()
            if not clean or any(m not in METRICS or not math.isfinite(v) for m, v in clean):
                raise ConfigurationError(f"Filter max_metrics must map metrics among {list(METRICS)} to finite "
                                         f"numbers, e.g. {{'safety': 0.01}}; got {self.max_metrics!r:.80}")
            object.__setattr__(self, "max_metrics", clean)

    def reason_excluded(self, expert: Expert) -> str | None:
        """Why ``expert`` fails this filter, or ``None`` when it passes."""
        if self.experts is not None and expert.name not in self.experts:
            return f"not among the allowed experts {list(self.experts)}"
        if self.max_parameters is not None or self.min_parameters is not None:
            if expert.parameters is None:
                return "parameter count unknown"
            if self.max_parameters is not None and expert.parameters > self.max_parameters:
                return f"{format_size(expert.parameters)} > max {format_size(self.max_parameters)}"
            if self.min_parameters is not None and expert.parameters < self.min_parameters:
                return f"{format_size(expert.parameters)} < min {format_size(self.min_parameters)}"
        if self.licenses is not None:
            if expert.license is None:
                return "licence unknown"
            if expert.license.lower() not in self.licenses:
                return f"licence {expert.license!r} not in {list(self.licenses)}"
        if self.newer_than is not None:
            when = getattr(expert, self.date_field)
            if when is None:
                return f"{self.date_field} unknown"
            if when <= self.newer_than:
                return f"{self.date_field} {when.date()} not after {self.newer_than.date()}"
        for metric, ceiling in self.max_metrics or ():
            value = expert.metric(metric)
            if value is None:
                return f"{metric} not measured (tryage metrics)"
            if value > ceiling:
                return f"{metric} {value:.4g} > max {ceiling:.4g}"
        return None


__all__ = ["Constraint", "ConstraintSet", "Cost", "Filter", "Hallucination", "Latency", "Readability", "Recency",
           "Safety", "Size", "Verbosity", "default_constraints"]
