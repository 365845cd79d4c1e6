"""Scorers: turn an expert's answer to a prompt into a score in [0, 1], higher is better.

Scoring is apart from generation: answers are logged, so cached answers can be re-scored with
another scorer without calling any model (``tryage score``). Built-ins, by name:

* ``exact`` — 1 when the answer equals ``reference`` after normalising (lower case, punctuation,
  articles and extra spaces removed), else 0. Higher: more answers exactly right.
* ``numeric`` — 1 when the last number in the answer equals the number in ``reference``
  (GSM8K-style; commas and ``$`` ignored, relative tolerance 1e-6), else 0.
* ``choice`` — 1 when the multiple-choice letter in the answer (``"(B)"``, ``"Answer: B"``, a lone
  ``B``) is the reference letter (or the letter of the reference among ``choices``), else 0.
* ``contains`` — 1 when the normalised reference occurs in the normalised answer as whole words
  (``"no"`` is not found in ``"not"``), else 0. ``contains-substring``: anywhere, even inside a word.
* ``yes-no`` — 1 when the first yes/no word of the answer (``yes``/``true`` or ``no``/``false``) is
  the reference's, else 0 (an answer with none scores 0).
* ``regex`` — 1 when the pattern (``pattern=``, else the row's ``reference``) is found in the answer.
  Patterns run on the ``regex`` package with a time limit (:data:`REGEX_TIMEOUT_S` per answer): a
  pattern that backtracks catastrophically (``(a|aa)+$``) is a :class:`ScorerTimeoutError` naming
  it and the prompt, never a hang. Every pattern is compiled before any call.
* ``lm-loss`` — ``exp(-loss)`` of an ``hf`` expert's mean next-token NLL on prompt + reference: the
  geometric-mean probability of a token, in (0, 1]. Higher: the model finds the text likelier.
* ``judge`` — an LLM judge (any LangChain chat model) reads the rubric, prompt, reference and
  answer and replies ``SCORE: <0..1>``; a reply without such a number is a :class:`JudgeParseError`.
  Higher: the judge rates the answer better. It lives in :mod:`tryage.collect.judge`.

Any callable ``f(answer, row) -> float`` (sync or async) is a scorer too; its docstring should say
what higher means.

**A scorer per prompt**: a prompt row's own ``"scorer"`` field wins, then its task's scorer in a map
``{task: scorer name}`` (``collect(..., scorer_map=...)``, ``--scorer-map``), then the run's
``scorer`` (:func:`for_rows`). Every name is checked before any call.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tryage.collect.judge import DEFAULT_RUBRIC, Judge, parse_judge_score
from tryage.errors import ScorerError, ScorerTimeoutError, require

ScoreFn = Callable[[Any, Any], "float | Awaitable[float]"]
#: Seconds a ``regex`` scorer's pattern may run on one answer.
REGEX_TIMEOUT_S = 1.0

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD's normalisation)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def _number(text: str, *, last: bool) -> float | None:
    found = _NUMBER.findall(text.replace("$", ""))
    if not found:
        return None
    try:
        return float((found[-1] if last else found[0]).replace(",", ""))
    except ValueError:
        return None


def exact(answer: str, row: Any) -> float:
    """1.0 when the normalised answer equals the normalised reference."""
    return float(normalize(answer) == normalize(row.reference))


def numeric(answer: str, row: Any) -> float:
    """1.0 when the answer's last number equals the reference's number."""
    want = _number(row.reference, last=True)
    if want is None:
        raise ScorerError(f"scorer 'numeric': prompt {row.id!r} has reference {row.reference!r}, which holds no number")
    got = _number(answer, last=True)
    return float(got is not None and math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9))


_LETTER_PATTERNS = (re.compile(r"answer\s*(?:is|:)?\s*\(?([A-Z])\b\)?", re.IGNORECASE),
                    re.compile(r"\(([A-Z])\)"), re.compile(r"^\s*([A-Z])(?:[).:\s]|$)"), re.compile(r"\b([A-Z])\b"))


def choice_letter(answer: str) -> str | None:
    """The multiple-choice letter an answer gives, or ``None``."""
    for pattern in _LETTER_PATTERNS:
        match = pattern.search(answer)
        if match:
            return match.group(1).upper()
    return None


def choice(answer: str, row: Any) -> float:
    """1.0 when the answer's letter is the reference letter."""
    reference = row.reference.strip()
    if len(reference) == 1 and reference.isalpha():
        want = reference.upper()
    elif row.choices and reference in row.choices:
        want = string.ascii_uppercase[row.choices.index(reference)]
    else:
        raise ScorerError(f"scorer 'choice': prompt {row.id!r} has reference {reference!r}; give a letter (A, B, ...) "
                          "or one of its 'choices'")
    return float(choice_letter(answer) == want)


def contains(answer: str, row: Any) -> float:
    """1.0 when the normalised reference occurs in the normalised answer as whole words."""
    return float(f" {normalize(row.reference)} " in f" {normalize(answer)} ")


def contains_substring(answer: str, row: Any) -> float:
    """1.0 when the normalised reference occurs anywhere in the normalised answer."""
    return float(normalize(row.reference) in normalize(answer))


_YES_NO = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}


def _yes_no(text: str) -> str | None:
    return next((_YES_NO[w] for w in normalize(text).split() if w in _YES_NO), None)


def yes_no(answer: str, row: Any) -> float:
    """1.0 when the answer's first yes/no word (yes, true / no, false) is the reference's."""
    want = _yes_no(row.reference)
    if want is None:
        raise ScorerError(f"scorer 'yes-no': prompt {row.id!r} has reference {row.reference!r}; give yes, no, true or false")
    return float(_yes_no(answer) == want)


@dataclass(frozen=True)
class Scorer:
    """A named scorer.

    Attributes:
        name: Its name (``--scorer``).
        fn: ``fn(answer, row) -> float`` (or awaitable); for ``lm-loss``, ``fn(loss, row)``.
        needs_reference: Every prompt must have a ``reference``.
        reads: ``"answer"`` (the text) or ``"loss"`` (an ``hf`` expert's loss).
        higher: What a higher score means.
    """

    name: str
    fn: ScoreFn
    needs_reference: bool = False
    reads: str = "answer"
    higher: str = ""
    check_row: Callable[[Any], None] | None = None  #: raises :class:`ScorerError` for a row it cannot score

    async def score(self, record: Any, row: Any) -> float:
        """The score of one logged call on its prompt row."""
        if self.reads == "loss":
            if record.loss is None:
                raise ScorerError(f"scorer {self.name!r} reads an LM loss, but expert {record.expert!r} gave text; "
                                  "use it with 'hf' experts only, or pick a scorer that reads answers")
            value = self.fn(record.loss, row)
        else:
            if record.answer is None:
                raise ScorerError(f"scorer {self.name!r} reads answers, but expert {record.expert!r} gave only a loss; "
                                  "use --scorer lm-loss for 'hf' experts")
            value = self.fn(record.answer, row)
        if inspect.isawaitable(value):
            value = await value
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ScorerError(f"scorer {self.name!r} returned {value!r} for prompt {row.id!r}; it must return a number") from None
        if not math.isfinite(number):
            raise ScorerError(f"scorer {self.name!r} returned {number!r} for prompt {row.id!r}; scores must be finite")
        return number

    def check(self, rows: Any) -> None:
        """Raise :class:`ScorerError` before any call when a prompt lacks what this scorer needs."""
        if self.needs_reference:
            missing = [r for r in rows if r.reference is None]
            if missing:
                first = missing[0]
                where = f" (line {first.line})" if first.line else ""
                raise ScorerError(f"scorer {self.name!r} needs a 'reference' for every prompt; {len(missing)} have none, "
                                  f"e.g. id {first.id!r}{where}")
        if self.check_row is not None:
            for row in rows:
                self.check_row(row)


def compile_pattern(pattern: Any, where: str) -> Any:
    """``pattern`` compiled by the ``regex`` package; :class:`ScorerError` naming ``where`` if it is none."""
    engine = require("regex", "collect")
    if not isinstance(pattern, str):
        raise ScorerError(f"regex scorer: {where} must be a regular expression (text), got {pattern!r:.60}")
    try:
        return engine.compile(pattern)
    except (engine.error, ValueError, OverflowError, RecursionError) as exc:
        raise ScorerError(f"regex scorer: {where} {pattern!r:.80} is not a valid regular expression ({exc})") from None


def regex_score(compiled: Any, answer: str, row: Any) -> float:
    """1.0 when ``compiled`` is found in ``answer``; :class:`ScorerTimeoutError` after :data:`REGEX_TIMEOUT_S`."""
    try:
        return float(compiled.search(answer, timeout=REGEX_TIMEOUT_S) is not None)
    except TimeoutError:
        raise ScorerTimeoutError(f"regex scorer: pattern {compiled.pattern!r:.80} ran past {REGEX_TIMEOUT_S:g} s on the "
                                 f"answer to prompt {row.id!r} (catastrophic backtracking, e.g. a nested repeat "
                                 "like (a|aa)+); simplify the pattern") from None


def _reference_pattern(row: Any) -> Any:
    return compile_pattern(row.reference, f"the reference of prompt {row.id!r}")


def _lm_loss(loss: float, row: Any) -> float:
    return math.exp(-loss)


BUILTIN = {
    "exact": Scorer("exact", exact, True, higher="1 = the answer equals the reference (normalised), 0 = not"),
    "numeric": Scorer("numeric", numeric, True, higher="1 = the last number equals the reference number, 0 = not"),
    "choice": Scorer("choice", choice, True, higher="1 = the chosen letter is the right one, 0 = not"),
    "contains": Scorer("contains", contains, True, higher="1 = the answer contains the reference's words, 0 = not"),
    "contains-substring": Scorer("contains-substring", contains_substring, True,
                                 higher="1 = the reference occurs in the answer (inside words too), 0 = not"),
    "yes-no": Scorer("yes-no", yes_no, True, higher="1 = the answer's yes/no is the reference's, 0 = not"),
    "lm-loss": Scorer("lm-loss", _lm_loss, False, reads="loss",
                      higher="exp(-loss): geometric-mean token probability of prompt + reference, in (0, 1]"),
}
NAMES = (*BUILTIN, "regex", "judge")


def get_scorer(scorer: str | Scorer | ScoreFn, *, pattern: str | None = None, judge: Any = None,
               rubric: str = DEFAULT_RUBRIC, judge_log: str | os.PathLike[str] | None = None) -> Scorer:
    """A :class:`Scorer` from a name (see the module doc), a :class:`Scorer` or a callable ``f(answer, row)``.

    Args:
        scorer: The name, scorer or callable.
        pattern: The regular expression of ``regex`` (default: each row's ``reference``).
        judge: The chat model of ``judge``.
        rubric: The judge's instructions.
        judge_log: Where the judge's replies are kept and reused (see :class:`Judge`).
    """
    if isinstance(scorer, Scorer):
        return scorer
    if callable(scorer) and not isinstance(scorer, str):
        name = getattr(scorer, "__name__", type(scorer).__name__)
        return Scorer(name, scorer, False, higher=(inspect.getdoc(scorer) or "as the callable defines").splitlines()[0])
    if scorer in BUILTIN:
        return BUILTIN[scorer]
    if scorer == "regex":
        if pattern is not None:
            compiled = compile_pattern(pattern, "pattern")
            return Scorer("regex", lambda a, r: regex_score(compiled, a, r), False,
                          higher=f"1 = the answer matches {pattern!r}, 0 = not")
        return Scorer("regex", lambda a, r: regex_score(_reference_pattern(r), a, r), True,
                      higher="1 = the answer matches the row's reference pattern, 0 = not",
                      check_row=_reference_pattern)
    if scorer == "judge":
        if judge is None:
            raise ScorerError("scorer 'judge' needs a judge model: judge=<entry, 'provider:id' or chat model> "
                              "(CLI: --judge-model <provider:id>)")
        return Scorer("judge", Judge(judge, rubric=rubric, log=judge_log), False, higher="the judge's rating, 1 = best, 0 = worst")
    raise ScorerError(f"unknown scorer {scorer!r}; built-in scorers: {', '.join(NAMES)} (or pass a Python callable)")


def for_rows(default: Scorer, rows: Sequence[Any], scorer_map: Mapping[str, str] | None = None,
             **options: Any) -> Scorer:
    """The scorer of a run whose prompts may name their own: a row's ``"scorer"`` field, else its
    task's in ``scorer_map`` ({task: name}), else ``default``. ``options`` are :func:`get_scorer`'s.

    Returns ``default`` itself when every row uses it. Refused before any call (:class:`ScorerError`):
    an unknown name, ``judge`` beside other scorers (it scores a whole run), scorers of one run that
    read different things (answers and ``hf`` losses), a row without the ``reference`` its scorer needs.
    """
    if scorer_map is not None and (not isinstance(scorer_map, Mapping)
                                   or not all(isinstance(k, str) and isinstance(v, str) for k, v in scorer_map.items())):
        raise ScorerError(f"the scorer map must be an object of task -> scorer name, got {scorer_map!r:.80}")
    by_name: dict[str, Scorer] = {default.name: default}
    by_row: dict[str, Scorer] = {}
    for row in rows:
        name = row.extras.get("scorer") or (scorer_map or {}).get(row.task or "")
        if name is None:
            by_row[row.id] = default
            continue
        if not isinstance(name, str):
            raise ScorerError(f"prompt {row.id!r}: 'scorer' must be a scorer name, got {name!r:.60}")
        if name not in by_name:
            try:
                by_name[name] = get_scorer(name, **options)
            except ScorerError as exc:
                raise ScorerError(f"prompt {row.id!r} (task {row.task!r}): {exc}") from None
        by_row[row.id] = by_name[name]
    used = {id(s): s for s in by_row.values()}
    if len(used) <= 1:
        return next(iter(used.values()), default)
    names = sorted({s.name for s in used.values()})
    if "judge" in names or {s.reads for s in used.values()} != {default.reads}:
        raise ScorerError(f"the prompts' scorers {names} cannot score one run together: 'judge' scores a whole run, "
                          "and 'lm-loss' reads 'hf' experts only; collect those prompts in a separate run")
    return _RowScorer(f"per-row ({', '.join(names)})", lambda value, row: by_row[row.id].fn(value, row),
                      reads=default.reads, higher="as each prompt's own scorer says", by_row=by_row)


@dataclass(frozen=True)
class _RowScorer(Scorer):
    """Scores each prompt with its own scorer (see :func:`for_rows`)."""

    by_row: Mapping[str, Scorer] = field(default_factory=dict)

    def check(self, rows: Any) -> None:
        groups: dict[int, tuple[Scorer, list[Any]]] = {}
        for row in rows:
            scorer = self.by_row[row.id]
            groups.setdefault(id(scorer), (scorer, []))[1].append(row)
        for scorer, mine in groups.values():
            scorer.check(mine)


__all__ = ["DEFAULT_RUBRIC", "Judge", "NAMES", "REGEX_TIMEOUT_S", "Scorer", "choice_letter", "for_rows", "get_scorer", "normalize", "parse_judge_score"]
