"""Per-request routing options, from the body's ``tryage`` field and ``x-tryage-*`` headers.

With the ``openai`` client::

    client.chat.completions.create(model="tryage", messages=[...],
        extra_body={"tryage": {"weights": {"cost": 0.5}, "experts": ["a", "b"],
                               "filters": {"max_parameters": "8B"}, "fallback": False,
                               "min_quality": 0.8}})

or the headers ``x-tryage-weights: cost=0.5,size=0.2``, ``x-tryage-experts: a,b``,
``x-tryage-fallback: false``, ``x-tryage-min-quality: 0.8`` (``extra_headers=``). The body's values win
over the headers'; flags in the prompt win over both, as they do for ``TryageRouter.route``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tryage.constraints import Filter
from tryage.errors import ServeRequestError, TryageError, check_scalar
from tryage.objective import check_min_quality

_FILTER_KEYS = ("max_parameters", "min_parameters", "licenses", "newer_than", "experts")
_OPTION_KEYS = ("weights", "experts", "filters", "fallback", "min_quality")


def _bad(message: str, param: str) -> ServeRequestError:
    return ServeRequestError(400, message, param=param, code="invalid_tryage_option")


@dataclass(frozen=True)
class RouteOptions:
    """What one request asks of routing.

    Attributes:
        weights: Constraint weights over the server's defaults.
        filters: Hard filters (``experts`` becomes a filter too).
        fallback: Fall back to the next expert, or ``None`` for the server's setting.
        min_quality: Quality floor in [0, 1] (the cheapest expert whose calibrated P(correct) reaches it, as
            ``TryageRouter.route``'s), or ``None`` for the router's own.
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    filters: tuple[Filter, ...] = ()
    fallback: bool | None = None
    min_quality: float | None = None

    @classmethod
    def parse(cls, extra: Any, headers: Mapping[str, str], *, experts: Sequence[str],
              check_weights: Callable[[Mapping[str, float]], Any]) -> RouteOptions:
        """Options of a request: ``extra`` is its ``tryage`` field (or ``None``); 400 on anything malformed."""
        given: dict[str, Any] = {}
        if headers.get("x-tryage-weights"):
            given["weights"] = _pairs(headers["x-tryage-weights"])
        if headers.get("x-tryage-experts"):
            given["experts"] = [e.strip() for e in headers["x-tryage-experts"].split(",") if e.strip()]
        if headers.get("x-tryage-fallback"):
            value = headers["x-tryage-fallback"].strip().lower()
            if value not in ("true", "false", "1", "0"):
                raise _bad(f"x-tryage-fallback must be true or false, got {value!r:.40}", "x-tryage-fallback")
            given["fallback"] = value in ("true", "1")
        if headers.get("x-tryage-min-quality"):
            text = headers["x-tryage-min-quality"].strip()
            given["min_quality"] = _min_quality(_number_or_text(text), "x-tryage-min-quality")
        if extra is not None:
            if not isinstance(extra, Mapping):
                raise _bad(f"'tryage' must be an object with {', '.join(_OPTION_KEYS)}, got {type(extra).__name__}",
                           "tryage")
            unknown = sorted(set(extra) - set(_OPTION_KEYS))
            if unknown:
                raise _bad(f"unknown tryage option(s) {unknown}; allowed: {', '.join(_OPTION_KEYS)}", "tryage")
            given.update(extra)
        return cls(_weights(given.get("weights"), check_weights), _filters(given, experts),
                   _fallback(given.get("fallback")), _min_quality(given.get("min_quality"), "tryage.min_quality"))


def _pairs(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise _bad(f"x-tryage-weights takes NAME=NUMBER pairs separated by commas, got {item.strip()!r:.60}",
                       "x-tryage-weights") from None
        if not sep or not name.strip():
            raise _bad(f"x-tryage-weights takes NAME=NUMBER pairs separated by commas, got {item.strip()!r:.60}",
                       "x-tryage-weights")
    return out


def _weights(value: Any, check: Callable[[Mapping[str, float]], Any]) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(f"tryage.weights must be an object of constraint: number, got {type(value).__name__}",
                   "tryage.weights")
    out = {}
    for name, number in value.items():
        try:
            out[str(name)] = check_scalar(number, f"tryage.weights.{name}")
        except TryageError as exc:
            raise _bad(str(exc), "tryage.weights") from None
    try:
        check(out)
    except TryageError as exc:
        raise _bad(str(exc).splitlines()[0], "tryage.weights") from None
    return out


def _filters(given: Mapping[str, Any], experts: Sequence[str]) -> tuple[Filter, ...]:
    out: list[Filter] = []
    names = given.get("experts")
    if names is not None:
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _bad("tryage.experts must be a non-empty list of expert names", "tryage.experts")
        unknown = [n for n in names if n not in experts]
        if unknown:
            raise _bad(f"unknown expert(s) {unknown}; this server offers {', '.join(map(repr, experts))}",
                       "tryage.experts")
        out.append(Filter(experts=tuple(names)))
    raw = given.get("filters")
    if raw is None:
        return tuple(out)
    for item in raw if isinstance(raw, list) else [raw]:
        if not isinstance(item, Mapping) or set(item) - set(_FILTER_KEYS):
            raise _bad(f"tryage.filters must be an object (or a list of objects) with keys among "
                       f"{', '.join(_FILTER_KEYS)}, got {item!r:.80}", "tryage.filters")
        try:
            out.append(_filter(dict(item)))
        except (TryageError, TypeError, ValueError) as exc:
            raise _bad(f"tryage.filters: {str(exc).splitlines()[0]}", "tryage.filters") from None
    return tuple(out)


def _filter(item: dict[str, Any]) -> Filter:
    if isinstance(item.get("newer_than"), str):
        from tryage.experts import parse_datetime

        item["newer_than"] = parse_datetime(item["newer_than"])
    for key in ("licenses", "experts"):
        if key in item:
            if not isinstance(item[key], list) or not all(isinstance(v, str) for v in item[key]):
                raise ValueError(f"{key} must be a list of strings")
            item[key] = tuple(item[key])
    return Filter(**item)


def _fallback(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise _bad(f"tryage.fallback must be true or false, got {value!r:.40}", "tryage.fallback")


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text   # check_scalar names it as not a number


def _min_quality(value: Any, param: str) -> float | None:
    try:
        return check_min_quality(value, param)
    except TryageError as exc:
        raise _bad(str(exc).splitlines()[0], param) from None


__all__ = ["RouteOptions"]
