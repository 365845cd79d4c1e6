"""Scorers: turn an expert's answer to a prompt into a score in [0, 1], higher is better.

Scoring is apart from generation: answers are logged, so cached answers can be re-scored with
another scorer without calling any model (``tryage score``). Built-ins, by name:

* ``exact`` — 1 when the answer equals ``reference`` after normalising (lower case, punctuation,
  articles and extra spaces removed), else 0. Higher: more answers exactly right.
* ``numeric`` — 1 when the last number in the answer equals the number in ``reference``
  (GSM8K-style; commas and ``$`` ignored, relative tolerance 1e-6), else 0.
* ``choice`` — 1 when the multiple-choice letter in the answer (``"(B)"``, ``"Answer: B"``, a lone
  ``B``) is the reference letter (or the letter of the reference among ``choices``), else 0.
* ``contains`` — 1 when the normalised reference occurs in the normalised answer, else 0.
* ``regex`` — 1 when the pattern (``pattern=``, else the row's ``reference``) is found in the answer.
* ``lm-loss`` — ``exp(-loss)`` of an ``hf`` expert's mean next-token NLL on prompt + reference: the
  geometric-mean probability of a token, in (0, 1]. Higher: the model finds the text likelier.
* ``judge`` — an LLM judge (any LangChain chat model) reads the rubric, prompt, reference and
  answer and replies ``SCORE: <0..1>``; a reply without such a number is a :class:`JudgeParseError`.
  Higher: the judge rates the answer better.

Any callable ``f(answer, row) -> float`` (sync or async) is a scorer too; its docstring should say
what higher means.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tryage._io import iter_jsonl, truncate_torn_tail
from tryage.errors import JudgeParseError, ScorerError

ScoreFn = Callable[[Any, Any], "float | Awaitable[float]"]

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
    """1.0 when the normalised reference occurs in the normalised answer."""
    return float(normalize(row.reference) in normalize(answer))


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


def _lm_loss(loss: float, row: Any) -> float:
    return math.exp(-loss)


DEFAULT_RUBRIC = ("You grade an answer to a question. Compare it with the reference answer when one is given. "
                  "Reply with one short sentence of reasoning, then a last line 'SCORE: <number between 0 and 1>', "
                  "where 1 means fully correct and helpful and 0 means wrong or useless.")
_SCORE = re.compile(r"score\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_judge_score(reply: str) -> float:
    """The score in a judge's reply: ``SCORE: x`` (the last one), or a reply that is only a number."""
    found = _SCORE.findall(reply)
    text = found[-1] if found else reply.strip()
    try:
        value = float(text)
    except ValueError:
        raise JudgeParseError(reply) from None
    if not 0.0 <= value <= 1.0:
        raise JudgeParseError(reply)
    return value


class Judge:
    """An LLM judge: ``Judge(model, rubric=...)`` is a scorer function (async).

    Its calls go through collect's :class:`~tryage.collect.runner.Runner`: retries with backoff on
    transient errors (429, 5xx, timeouts, dropped connections), a timeout per attempt, the entry's rate
    limit, and the run's budget. ``collect`` and ``score`` count what the judge spends in ``budget``.

    Args:
        model: The judge: an expert entry with its prices (an :class:`ExpertSpec` or a dict such as
            ``{"name": "judge", "model": "openai:gpt-4o-mini", "input_price": 0.15, "output_price": 0.6}``),
            a ``"<provider>:<model id>"`` string, or any LangChain chat model, runnable or callable taking a
            string (those three: prices unknown, so a run with a budget refuses them; give an entry instead,
            e.g. ``ExpertSpec("judge", runnable=model, input_price=..., output_price=...)``).
        rubric: Instructions; the reply must end with ``SCORE: <0..1>``.
        log: A JSONL file of the judge's replies, keyed by the judge's model, the rubric, the prompt,
            the reference and the answer: a reply found there is reused, not paid for again
            (``collect`` and ``score`` keep it beside the call log as ``<log>.judge.jsonl``).
    """

    def __init__(self, model: Any, *, rubric: str = DEFAULT_RUBRIC, log: str | os.PathLike[str] | None = None) -> None:
        from tryage.collect.backends import ExpertSpec

        if isinstance(model, ExpertSpec):
            self.spec = model
        elif isinstance(model, dict):
            self.spec = ExpertSpec.from_dict({"name": "judge", **model})
        elif isinstance(model, str):           # "<provider>:<model id>", as init_chat_model and --judge-model read it
            self.spec = ExpertSpec("judge", model=model)
        else:
            self.spec = ExpertSpec("judge", runnable=model)
        if self.spec.kind == "hf":
            raise ScorerError(f"the judge {self.spec.name!r} is an 'hf' entry, which only measures a loss; a judge is a "
                              "chat model ('model' entry), a LangChain runnable or a callable that returns text")
        self.rubric = rubric
        self.log = log
        self._replies: dict[str, str] | None = None
        self._pending: dict[str, Any] = {}    # key → future of a judge call in flight
        self._runner: Any = None
        self._backend: Any = None
        self._limiter: Any = None
        self._planner: Any = None
        self.stats: Any = None

    @property
    def priced(self) -> bool:
        """Whether both prices of the judge are known (a run with a budget needs them)."""
        return self.spec.input_price is not None and self.spec.output_price is not None

    @property
    def spent(self) -> float:
        """USD the judge's calls cost since the last :meth:`run_with` (timeouts at their estimate)."""
        return 0.0 if self.stats is None else float(self.stats.spent)

    def run_with(self, *, budget: float | None = None, timeout: float | None = 60.0, retries: int = 3,
                 retry_base: float = 0.5) -> Judge:
        """Make the next calls under these settings; ``budget``: USD the judge may spend from now on."""
        from tryage.collect.backends import build_backend
        from tryage.collect.runner import Runner, RunStats

        if self._backend is None:
            self._backend = build_backend(self.spec)
        self._runner = Runner({self.spec.name: self.spec}, {self.spec.name: self._backend}, None,  # type: ignore[arg-type]
                              timeout=timeout, retries=retries, budget=budget, retry_base=retry_base,
                              observed_output_tokens=self._observed())
        self._limiter = self._runner.limiter(self.spec)
        self.stats = RunStats()
        return self

    async def aclose(self) -> None:
        """Close the judge's HTTP client (a later call opens a new one)."""
        backend, self._backend, self._runner = self._backend, None, None
        if backend is not None:
            await backend.aclose()

    def _who(self) -> str:
        if self.spec.model is not None:       # what the built chat model calls itself (its model_name)
            return self.spec.model.split(":", 1)[1]
        model = self.spec.runnable
        return getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__qualname__

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self._who()}\0{text}".encode("utf-8")).hexdigest()[:32]

    def _records(self) -> list[dict[str, Any]]:
        path = Path(self.log) if self.log is not None else None
        if path is None or not path.is_file():
            return []
        truncate_torn_tail(path)      # a killed writer's half line would swallow the next append
        # A damaged line is a reply not cached, never an error: asking again is always safe.
        return [record for _, record, problem in iter_jsonl(path)
                if problem is None and isinstance(record, dict) and isinstance(record.get("key"), str)
                and isinstance(record.get("reply"), str)]

    def _cached(self) -> dict[str, str]:
        if self._replies is None:
            self._replies = {record["key"]: record["reply"] for record in self._records()}
        return self._replies

    def _observed(self) -> dict[str, list[int]]:
        tokens = [r["output_tokens"] for r in self._records()
                  if isinstance(r.get("output_tokens"), int) and r["output_tokens"] >= 0]
        return {self.spec.name: tokens} if tokens else {}

    def plan(self, text: str) -> Any:
        """The estimated tokens and cost of asking the judge ``text`` (a :class:`PlannedCall`)."""
        if self._runner is None and self._planner is None:   # a dry run: its estimates, without a client
            from tryage.collect.runner import Runner

            self._planner = Runner({}, {}, None, observed_output_tokens=self._observed())  # type: ignore[arg-type]
        return (self._runner or self._planner).plan(_Ask("", text), self.spec)

    def question(self, answer: str, row: Any) -> str:
        """What the judge is asked about ``answer`` to ``row``."""
        text = f"{self.rubric}\n\nQuestion:\n{row.prompt}\n\n"
        if row.reference is not None:
            text += f"Reference answer:\n{row.reference}\n\n"
        return text + f"Answer to grade:\n{answer}\n"

    def cached(self, answer: str, row: Any) -> bool:
        """Whether the judge's reply about ``answer`` to ``row`` is in its log already (no call)."""
        return self._key(self.question(answer, row)) in self._cached()

    async def _ask(self, key: str, text: str) -> tuple[str, Any]:
        from tryage.errors import BudgetReachedError, JudgeCallError

        record = await self._runner.call(_Ask(key, text), self.spec, self.stats, self._limiter)
        if record is None:
            if self.spec.name in self.stats.skipped_experts:
                raise JudgeCallError(self.stats.skipped_experts[self.spec.name], 1)
            raise BudgetReachedError(float(self._runner.budget), self.spent, 1)
        if not record.ok:
            raise JudgeCallError(record.error, record.attempts)
        return str(record.answer), record

    async def __call__(self, answer: str, row: Any) -> float:
        """The judge's score of ``answer`` to ``row``; higher: the judge rates it better.

        Equal questions with equal answers (experts that agree) cost one judge call, even when they are
        scored at the same time: later ones wait for the first one's reply.
        """
        import asyncio

        if self._runner is None:
            self.run_with()
        text = self.question(answer, row)
        key, replies = self._key(text), self._cached()
        if key not in replies:
            pending = self._pending.get(key)
            if pending is not None:
                await asyncio.shield(pending)
            else:
                self._pending[key] = asyncio.get_running_loop().create_future()
                try:
                    reply, record = await self._ask(key, text)
                    replies[key] = reply
                    if self.log is not None:
                        Path(self.log).parent.mkdir(parents=True, exist_ok=True)
                        with open(self.log, "a", encoding="utf-8") as handle:
                            handle.write(json.dumps({"key": key, "prompt_id": row.id, "reply": reply,
                                                     "input_tokens": record.input_tokens,
                                                     "output_tokens": record.output_tokens,
                                                     "cost": record.cost}) + "\n")
                finally:
                    waiting = self._pending.pop(key)
                    waiting.set_result(None)   # waiters read ``replies``; after a failure they ask themselves
            if key not in replies:
                return await self(answer, row)
        return parse_judge_score(replies[key])


@dataclass(frozen=True)
class _Ask:
    """One question to the judge, shaped as the prompt row a :class:`Runner` calls an expert on."""

    id: str
    prompt: str
    reference: None = None


BUILTIN = {
    "exact": Scorer("exact", exact, True, higher="1 = the answer equals the reference (normalised), 0 = not"),
    "numeric": Scorer("numeric", numeric, True, higher="1 = the last number equals the reference number, 0 = not"),
    "choice": Scorer("choice", choice, True, higher="1 = the chosen letter is the right one, 0 = not"),
    "contains": Scorer("contains", contains, True, higher="1 = the answer contains the reference, 0 = not"),
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
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ScorerError(f"regex scorer: pattern {pattern!r} is not a valid regular expression ({exc})") from None
            return Scorer("regex", lambda a, r: float(compiled.search(a) is not None), False,
                          higher=f"1 = the answer matches {pattern!r}, 0 = not")
        return Scorer("regex", lambda a, r: float(re.search(r.reference, a) is not None), True,
                      higher="1 = the answer matches the row's reference pattern, 0 = not")
    if scorer == "judge":
        if judge is None:
            raise ScorerError("scorer 'judge' needs a judge model: judge=<entry, 'provider:id' or chat model> "
                              "(CLI: --judge-model <provider:id>)")
        return Scorer("judge", Judge(judge, rubric=rubric, log=judge_log), False, higher="the judge's rating, 1 = best, 0 = worst")
    raise ScorerError(f"unknown scorer {scorer!r}; built-in scorers: {', '.join(NAMES)} (or pass a Python callable)")


__all__ = ["DEFAULT_RUBRIC", "Judge", "NAMES", "Scorer", "choice_letter", "get_scorer", "normalize", "parse_judge_score"]
