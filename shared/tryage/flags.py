"""Flags written in the prompt: ``The capital of California is [MASK]. [Flag: smallest model]``.

A flag sets constraint weights or hard filters for that one request and is removed from the prompt
before any expert sees it. Flags are case-insensitive; a prompt may carry several, and one bracket
may hold several separated by commas or semicolons (``[Flag: cheapest; max size 8B]``).

Built-in flags:

==========================  =================================================================
``smallest model``          size weight +STRONG (the smallest eligible model wins; among equal
                            sizes, the lowest predicted loss)
``largest model``           size weight −STRONG
``most recent``             recency weight +STRONG
``cheapest``                cost weight +STRONG (price decides, whatever the predicted quality)
``cheapest that answers``   cost weight +STRONG under the quality floor :data:`DEFAULT_MIN_QUALITY`:
                            the cheapest expert whose P(correct) reaches it
``min quality 0.8``         quality floor (also ``min quality 80%``): among the experts whose
                            calibrated P(correct) reaches it, the weights decide; none does → the
                            best predicted expert, and the decision says so
``shortest answer``         verbosity weight +STRONG (fewest output tokens measured)
``most readable``           readability weight +STRONG (lowest reading grade measured)
``safest``                  safety weight +STRONG (smallest share of answers flagged unsafe)
``fewest hallucinations``   hallucination weight +STRONG
``max unsafe 1%``           filter: at most that share of answers flagged unsafe (also ``max
                            hallucinations 5%``, ``max verbosity 200``, ``max readability 8``)
``<constraint>=<number>``   set that constraint's weight, e.g. ``size=0.4``
``max size 8B``             filter: at most 8B parameters (also ``min size 1B``)
``license mit, apache-2.0`` filter: licence allow-list (it ends at the next flag: ``license mit, cheapest``)
``newer than 2024-01-01``   filter: created after that date
``expert NAME``             filter: only that expert
==========================  =================================================================

``STRONG`` is :data:`STRONG_WEIGHT` — large enough to outweigh any difference in loss, so the named
preference decides and the loss breaks ties. Register your own with :meth:`FlagParser.register`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from tryage.constraints import Filter
from tryage.errors import ConfigurationError, ExpertLibraryError, FlagError
from tryage.experts import parse_datetime, parse_size

STRONG_WEIGHT = 1000.0
#: The quality floor of ``[Flag: cheapest that answers]``: P(correct) of at least 0.8.
DEFAULT_MIN_QUALITY = 0.8

_WEIGHT_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\S+)$")
_SIZE_FILTER_RE = re.compile(r"^(max|min)(?:imum)?\s+(?:size|params|parameters)\s*(?:[:=<>]\s*)?(.+)$", re.I)
_LICENSE_RE = re.compile(r"^licen[sc]e\s*[:=]?\s*(.+)$", re.I)
_NEWER_RE = re.compile(r"^newer\s+than\s+(.+)$", re.I)
_EXPERT_RE = re.compile(r"^(?:expert|model)\s*[:=]?\s+(.+)$", re.I)
_FLOOR_RE = re.compile(r"^min(?:imum)?\s+quality\s*[:=]?\s*(\S+?)\s*(%?)$", re.I)
_METRIC_FILTER_RE = re.compile(
    r"^max(?:imum)?\s+(unsafe|safety|hallucinations?|hallucination|verbosity|tokens|readability|grade)"
    r"\s*[:=]?\s*(\S+?)\s*(%?)$", re.I)
_METRIC_WORDS = {"unsafe": "safety", "safety": "safety", "hallucination": "hallucination",
                 "hallucinations": "hallucination", "verbosity": "verbosity", "tokens": "verbosity",
                 "readability": "readability", "grade": "readability"}
#: Phrases that set a quality floor besides their weights.
_FLOOR_PRESETS: dict[str, tuple[dict[str, float], float]] = {
    "cheapest that answers": ({"cost": STRONG_WEIGHT}, DEFAULT_MIN_QUALITY),
    "cheapest that still answers": ({"cost": STRONG_WEIGHT}, DEFAULT_MIN_QUALITY),
}

_PRESETS: dict[str, dict[str, float]] = {
    "smallest model": {"size": STRONG_WEIGHT},
    "smallest": {"size": STRONG_WEIGHT},
    "largest model": {"size": -STRONG_WEIGHT},
    "largest": {"size": -STRONG_WEIGHT},
    "most recent": {"recency": STRONG_WEIGHT},
    "most recent model": {"recency": STRONG_WEIGHT},
    "newest": {"recency": STRONG_WEIGHT},
    "cheapest": {"cost": STRONG_WEIGHT},
    "cheapest model": {"cost": STRONG_WEIGHT},
    "shortest answer": {"verbosity": STRONG_WEIGHT},
    "shortest": {"verbosity": STRONG_WEIGHT},
    "most readable": {"readability": STRONG_WEIGHT},
    "safest": {"safety": STRONG_WEIGHT},
    "fewest hallucinations": {"hallucination": STRONG_WEIGHT},
}


@dataclass(frozen=True)
class ParsedFlags:
    """What the flags of one prompt asked for.

    Attributes:
        prompt: The prompt with every flag removed and white space tidied.
        flags: The flags as written (without ``[Flag: ]``), in order.
        weights: Constraint weights the flags set (later flags override earlier ones).
        filters: Hard filters the flags added.
        spans: ``(start, end)`` of each ``[Flag: ...]`` bracket in the original prompt, in order
            (``original[start:end]`` is the whole bracket); one span per bracket, even when a bracket
            holds several flags.
        min_quality: The quality floor the flags set (the last one wins), ``None`` when none did.
    """

    prompt: str
    flags: tuple[str, ...] = ()
    weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    filters: tuple[Filter, ...] = ()
    spans: tuple[tuple[int, int], ...] = ()
    min_quality: float | None = None


class FlagParser:
    """Finds, interprets and strips ``[Flag: ...]`` markers.

    Args:
        constraint_names: Names accepted in ``name=value`` weight flags. ``None`` accepts any
            identifier (the router checks names against its constraints).
    """

    def __init__(self, constraint_names: Iterable[str] | None = None) -> None:
        self.constraint_names = None if constraint_names is None else tuple(constraint_names)
        self._custom: dict[str, tuple[dict[str, float], tuple[Filter, ...], str]] = {}

    def register(self, phrase: str, *, weights: Mapping[str, float] | None = None,
                 filters: Iterable[Filter] = (), description: str = "") -> FlagParser:
        """Add a flag: ``parser.register("legal only", filters=[Filter(experts=("legal",))])``.

        ``phrase`` is matched case-insensitively with white space collapsed. Returns ``self``.
        """
        key = " ".join(str(phrase).lower().split())
        if not key or "[" in key or "]" in key or "," in key or ";" in key:
            raise FlagError(str(phrase), "a flag phrase must be non-empty text without [ ] , ;", self.valid_flags())
        if key in _PRESETS or key in _FLOOR_PRESETS:
            raise FlagError(str(phrase), "that phrase is a built-in flag", self.valid_flags())
        self._custom[key] = (dict(weights or {}), tuple(filters), description)
        return self

    def valid_flags(self, usable: Iterable[str] | None = None) -> list[str]:
        """One line per understood flag, for error messages and ``--help``.

        ``usable``: only the constraint flags of these constraints (those the experts have values for).
        """
        usable = None if usable is None else set(usable)
        if self.constraint_names is None and usable is None:
            names = "<constraint>"
        else:
            names = "|".join(n for n in self.constraint_names or sorted(usable or ()) if usable is None or n in usable)

        def can(name: str) -> bool:
            return usable is None or name in usable

        out = sorted([*(p for p, w in _PRESETS.items() if all(can(n) for n in w)),
                      *(p for p, (w, _) in _FLOOR_PRESETS.items() if all(can(n) for n in w))])
        out += [f"{names}=<number>"] if names else []
        out += ["max size <N like 8B>", "min size <N>"] if can("size") else []
        out += ["license <id>[, <id>...]"] + (["newer than <YYYY-MM-DD>"] if can("recency") else []) + ["expert <name>"]
        ceilings = "|".join(w for w, n in (("unsafe", "safety"), ("hallucinations", "hallucination"),
                                           ("verbosity", "verbosity"), ("readability", "readability")) if can(n))
        out += ["min quality <0..1 or N%>"] + ([f"max {ceilings} <number or N%>"] if ceilings else [])
        out += [k + (f" ({d})" if d else "") for k, (_, _, d) in self._custom.items()]
        return out

    def parse(self, prompt: str) -> ParsedFlags:
        """Split ``prompt`` into its cleaned text and what its flags ask for.

        Time is linear in the length of ``prompt``.

        Raises:
            FlagError: a flag is unknown, malformed, nested, or a ``[Flag:`` is never closed.
            ConfigurationError: ``prompt`` is not a string, or holds a lone surrogate.
        """
        if not isinstance(prompt, str):
            raise ConfigurationError(f"a prompt must be a string, got {type(prompt).__name__}: {prompt!r:.80}")
        _check_encodable(prompt)
        flags: list[str] = []
        weights: dict[str, float] = {}
        filters: list[Filter] = []
        floor: float | None = None
        spans = _find_flags(prompt, self.valid_flags)
        for start, end, body in spans:
            for part in self._split(body):
                w, f = self._interpret(part)
                floor = self._floor(part, floor)
                flags.append(part)
                weights.update(w)
                filters.extend(f)
        cleaned = remove_spans(prompt, [(s, e) for s, e, _ in spans]).strip()
        if spans:
            # Removing "[Flag: a]" from "[[Flag: a]Flag: b]" would leave a new flag behind; refuse
            # it, so that stripping is idempotent and no flag reaches an expert.
            _find_flags(cleaned, self.valid_flags, nested=True)
        return ParsedFlags(cleaned, tuple(flags), MappingProxyType(weights), tuple(filters),
                           tuple((s, e) for s, e, _ in spans), floor)

    def strip(self, prompt: str) -> str:
        """The prompt without its flags (flags are still validated)."""
        return self.parse(prompt).prompt

    def _split(self, body: str) -> list[str]:
        # "license mit, apache-2.0" keeps its commas: a licence list runs on to the next piece that is a flag
        # of its own, so "license mit, cheapest" is two flags, as "cheapest, license mit" is.
        parts: list[str] = []
        for chunk in body.split(";"):
            chunk = " ".join(chunk.split())  # one space per run first: the patterns below never backtrack far
            licence = False
            for piece in (p.strip() for p in chunk.split(",")):
                if licence and not self._is_flag(piece):
                    parts[-1] += ", " + piece
                    continue
                licence = bool(_LICENSE_RE.match(piece))
                parts.append(piece)
        return parts

    def _is_flag(self, text: str) -> bool:
        """Whether ``text`` reads as a flag (its value may still be wrong): it starts a new one after a licence."""
        key = text.lower()
        return key in _PRESETS or key in _FLOOR_PRESETS or key in self._custom or any(
            pattern.match(text) for pattern in (_WEIGHT_RE, _SIZE_FILTER_RE, _LICENSE_RE, _NEWER_RE, _EXPERT_RE,
                                                _FLOOR_RE, _METRIC_FILTER_RE))

    def _floor(self, text: str, floor: float | None) -> float | None:
        """The quality floor after flag ``text`` (already interpreted): its own, or ``floor`` unchanged."""
        if text.lower() in _FLOOR_PRESETS:
            return _FLOOR_PRESETS[text.lower()][1]
        if m := _FLOOR_RE.match(text):
            return self._fraction(text, m.group(1), m.group(2), unit=True)
        return floor

    def _fraction(self, text: str, raw: str, percent: str, *, unit: bool) -> float:
        """``raw`` as a number (``percent``: divided by 100); ``unit`` requires it to lie in [0, 1]."""
        try:
            value = float(raw) / (100.0 if percent else 1.0)
        except ValueError:
            raise FlagError(text, f"{raw!r:.40} is not a number", self.valid_flags()) from None
        if not math.isfinite(value) or (unit and not 0.0 <= value <= 1.0):
            allowed = "a probability in [0, 1] or a percentage in [0%, 100%]" if unit else "a finite number"
            raise FlagError(text, f"{raw}{percent} is not {allowed}", self.valid_flags())
        return value

    def _interpret(self, text: str) -> tuple[dict[str, float], list[Filter]]:
        key = text.lower()
        if not key:
            raise FlagError(text, "empty flag", self.valid_flags())
        if key in _PRESETS:
            return dict(_PRESETS[key]), []
        if key in _FLOOR_PRESETS:
            return dict(_FLOOR_PRESETS[key][0]), []
        if m := _FLOOR_RE.match(text):
            self._fraction(text, m.group(1), m.group(2), unit=True)
            return {}, []
        if m := _METRIC_FILTER_RE.match(text):
            metric = _METRIC_WORDS[m.group(1).lower()]
            ceiling = self._fraction(text, m.group(2), m.group(3), unit=metric in ("safety", "hallucination"))
            return {}, [Filter(max_metrics=((metric, ceiling),), source=text)]
        if key in self._custom:
            weights, filters, _ = self._custom[key]
            return dict(weights), list(filters)
        if m := _WEIGHT_RE.match(text):
            name, raw = m.group(1).lower(), m.group(2)
            if self.constraint_names is not None and name not in self.constraint_names:
                raise FlagError(text, f"unknown constraint {name!r}", self.valid_flags())
            try:
                value = float(raw)
            except ValueError:
                raise FlagError(text, f"weight {raw!r:.40} is not a number", self.valid_flags()) from None
            if not math.isfinite(value):
                raise FlagError(text, "weight must be finite", self.valid_flags())
            return {name: value}, []
        if m := _SIZE_FILTER_RE.match(text):
            try:
                size = parse_size(m.group(2))
            except ExpertLibraryError:
                raise FlagError(text, f"cannot read size {m.group(2)!r:.40} (use e.g. 8B, 135M; at most 1000T)", self.valid_flags()) from None
            bound = "max_parameters" if m.group(1).lower() == "max" else "min_parameters"
            return {}, [Filter(**{bound: size}, source=text)]
        if m := _LICENSE_RE.match(text):
            allowed = tuple(x.strip() for x in re.split(r"[,\s]+", m.group(1)) if x.strip())
            return {}, [Filter(licenses=allowed, source=text)]
        if m := _NEWER_RE.match(text):
            try:
                when = parse_datetime(m.group(1))
            except ExpertLibraryError:
                raise FlagError(text, f"cannot read date {m.group(1)!r:.40} (use YYYY-MM-DD)", self.valid_flags()) from None
            return {}, [Filter(newer_than=when, source=text)]
        if m := _EXPERT_RE.match(text):
            return {}, [Filter(experts=(m.group(1).strip(),), source=text)]
        raise FlagError(text, "unknown flag", self.valid_flags())


def _check_encodable(prompt: str) -> None:
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigurationError(
            f"the prompt holds a lone surrogate {prompt[exc.start]!r} at character {exc.start} "
            f"(near {prompt[max(0, exc.start - 20):exc.start + 20]!r}); a prompt must be valid Unicode "
            "text: decode bytes with errors='replace'") from None


def _find_flags(text: str, valid: Callable[[], list[str]], *,
                nested: bool = False) -> list[tuple[int, int, str]]:
    """Every ``[ flag : body ]`` of ``text`` as ``(start, end, stripped body)``, in one linear pass.

    A hand scan instead of a regular expression: ``[``, white space, ``flag`` (any case), white
    space, ``:``, then the body up to the next ``]``. Each character is looked at a bounded number
    of times, so a prompt of a million spaces after ``[flag:`` costs one pass, not a backtracking
    search. A ``[Flag:`` whose body meets ``[`` or the end of the text before ``]`` is unclosed.
    """
    found: list[tuple[int, int, str]] = []
    n = len(text)
    i = text.find("[")
    while i != -1:
        j = i + 1
        while j < n and text[j].isspace():
            j += 1
        if text[j:j + 4].lower() != "flag":
            i = text.find("[", j if j > i + 1 else i + 1)
            continue
        k = j + 4
        while k < n and text[k].isspace():
            k += 1
        if k >= n or text[k] != ":":
            i = text.find("[", k)
            continue
        match = _BRACKET_RE.search(text, k + 1)
        if match is None or match.group() == "[":
            shown = text[i:i + 40]
            if nested:
                raise FlagError(shown, "flags must not be nested inside other brackets", valid())
            raise FlagError(shown, "unclosed flag bracket", valid())
        if nested:
            raise FlagError(text[i:match.end()], "flags must not be nested inside other brackets", valid())
        found.append((i, match.end(), text[k + 1:match.start()].strip()))
        i = text.find("[", match.end())
    return found


_BRACKET_RE = re.compile(r"[\[\]]")
_PUNCTUATION_AFTER = ".,;:!?)"


def remove_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` without the given (sorted, disjoint) spans, white space tidied around each gap.

    Spans separated only by spaces or tabs form one run. A run alone on its line disappears with
    its line break; elsewhere it leaves one space between words and nothing at an edge of a line or
    before punctuation. The prompt's own white space elsewhere is kept as written.
    """
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    index = 0
    while index < len(spans):
        start, end = spans[index]
        index += 1
        while index < len(spans) and _blank(text, end, spans[index][0]):
            end = spans[index][1]
            index += 1
        while start > pos and text[start - 1] in " \t":
            start -= 1
        while end < len(text) and text[end] in " \t":
            end += 1
        before = text[start - 1] if start > 0 else "\n"
        after = text[end] if end < len(text) else "\n"
        out.append(text[pos:start])
        if before == "\n" and after == "\n":
            end += 1 if end < len(text) else 0  # a line of flags only: drop the line
        elif before != "\n" and after not in "\n" + _PUNCTUATION_AFTER:
            out.append(" ")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _blank(text: str, start: int, end: int) -> bool:
    return all(c in " \t" for c in text[start:end])


def strip_flags(prompt: str) -> str:
    """Remove every ``[Flag: ...]`` from ``prompt`` (validating them with the built-in flags)."""
    return FlagParser().strip(prompt)


__all__ = ["DEFAULT_MIN_QUALITY", "STRONG_WEIGHT", "FlagParser", "ParsedFlags", "remove_spans", "strip_flags"]
