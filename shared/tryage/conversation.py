"""Conversations: routing a turn with its context, and keeping a thread on one expert.

Four pieces, framework-free (the LangChain adapter's ``ChatTryage`` uses them):

* :class:`EarlierTurns` reads a conversation's earlier turns without their flags, each turn parsed
  once by the router's flag parser (the flags removed as :func:`tryage.flags.remove_spans` does), and
  joins them, newest first, into the context text the router reads.
* :func:`blend_decisions` mixes the decision for the newest user turn with the decision for the
  earlier turns of the conversation: each expert's predicted loss becomes
  ``(1 - w) * loss(turn) + w * loss(context)``; the turn's flags, weights, penalties and filters
  stand. The newest turn keeps the larger weight, so a follow-up ("and in Rust?") is read in the
  light of what came before without being drowned by it.
* :func:`stick` applies *stickiness*: a thread stays on the expert it used last unless another
  expert's objective (predicted loss plus penalties) is lower by more than a margin. A turn with
  flags, or a previous expert that is no longer eligible, is routed afresh.
* :class:`ThreadStore` remembers each thread's last expert: a bounded, thread-safe LRU map.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Literal

from tryage.errors import ConfigurationError, FlagError
from tryage.flags import ParsedFlags
from tryage.objective import RoutingDecision

Sticky = Literal["new", "kept", "switched"]
"""What stickiness did: ``"new"`` (the thread had no expert yet), ``"kept"`` (the thread stayed on
its expert), ``"switched"`` (it moved to another)."""


def check_fraction(value: object, name: str) -> float:
    """``value`` as a float in [0, 1], else a :class:`~tryage.errors.ConfigurationError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigurationError(f"{name} must be a number in [0, 1]; got {value!r}")
    return float(value)


def check_margin(value: object, name: str = "stickiness_margin") -> float:
    """``value`` as a finite float >= 0, else a :class:`~tryage.errors.ConfigurationError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{name} must be a finite number >= 0 (in units of the objective); got {value!r}")
    return float(value)


class EarlierTurns:
    """The turns of one conversation without their flags, each parsed once.

    One instance per call (or per batch of calls): a turn read for the routing context and again for
    the expert's input is parsed once. Flags are the router's to find (``parse`` is ``router.parse``);
    a turn's text without them is the core's (:attr:`ParsedFlags.prompt`).

    Args:
        parse: The router's flag parser.
    """

    def __init__(self, parse: Callable[[str], ParsedFlags]) -> None:
        self._parse = parse
        self._clean: dict[str, str | None] = {}

    def without_flags(self, text: str) -> str:
        """``text`` with its flags removed and its white space tidied as the router's own prompt is.

        Raises:
            FlagError: a flag of the turn does not parse (it failed when the turn was new).
        """
        clean = self._clean.get(text)
        if clean is None:
            try:
                clean = self._parse(text).prompt
            except FlagError:
                self._clean[text] = None
                raise
            self._clean[text] = clean
        return clean

    def context(self, turns: Sequence[tuple[str, bool]], *, max_chars: int) -> str:
        """The context text of ``turns`` (oldest first, as ``(text, from the user)``): newest first,
        flags cut from the user's turns, white space collapsed, one turn per line, whole turns up to
        ``max_chars`` (the newest alone is cut to fit). A user turn whose flags do not parse is left out.

        Newest first, so that an encoder truncating the text to its window drops the oldest turns.
        """
        lines: list[str] = []
        used = 0
        for text, from_user in reversed(turns):
            if from_user:
                try:
                    text = self.without_flags(text)
                except FlagError:
                    continue
            text = " ".join(text.split())
            if not text:
                continue
            if used + len(text) > max_chars:
                if not lines:
                    lines.append(text[:max_chars])
                break
            lines.append(text)
            used += len(text) + 1
        return "\n".join(lines)


def blend_decisions(turn: RoutingDecision, context: RoutingDecision, context_weight: float) -> RoutingDecision:
    """``turn`` with each predicted loss mixed with ``context``'s, and the expert chosen again.

    Args:
        turn: The decision for the newest user turn (its flags, weights, penalties and filters stand).
        context: The decision for the earlier turns, over the same experts in the same order.
        context_weight: ``w`` in ``(1 - w) * loss(turn) + w * loss(context)``, in [0, 1].

    Returns:
        A :class:`RoutingDecision` like ``turn`` whose scores hold the mixed losses and totals and whose
        expert is the eligible one with the lowest mixed total (ties: library order); when
        exploration chose the turn's expert (``turn.explored``), that choice stands.
    """
    w = check_fraction(context_weight, "context_weight")
    names = [s.expert for s in turn.scores]
    if [s.expert for s in context.scores] != names:
        raise ConfigurationError(f"cannot blend decisions over different experts: {names} and "
                                 f"{[s.expert for s in context.scores]}")
    if w == 0.0:
        return turn
    scores = []
    for own, other in zip(turn.scores, context.scores):
        loss = (1.0 - w) * own.predicted_loss + w * other.predicted_loss
        scores.append(dataclasses.replace(own, predicted_loss=loss, total=loss + sum(own.penalties.values())))
    if getattr(turn, "explored", False):
        return dataclasses.replace(turn, scores=tuple(scores))
    best = min((s for s in scores if s.eligible), key=lambda s: s.total)  # first minimum: library order
    return dataclasses.replace(turn, expert=best.expert, scores=tuple(scores))


def stick(decision: RoutingDecision, previous: str | None, *, margin: float) -> tuple[RoutingDecision, Sticky]:
    """Keep a thread on ``previous`` unless ``decision``'s choice is better by more than ``margin``.

    Args:
        decision: The fresh decision for the thread's new turn.
        previous: The expert the thread used last, or ``None`` for a new thread.
        margin: How much lower (in objective units: predicted loss plus penalties) another expert's
            total must be to move the thread.

    Returns:
        ``(decision, what happened)``. When the thread is kept on ``previous`` although another
        expert scored better, the returned decision names ``previous`` (its scores are unchanged,
        so the trace still shows the better total). A turn with flags, or a ``previous`` that is
        not eligible (filtered out, forced away, no longer offered), is routed afresh and reads
        ``"kept"`` only when the fresh choice is ``previous``. So does a decision where
        exploration chose the expert (``decision.explored``): exploring is its purpose.
    """
    margin = check_margin(margin)
    if previous is None:
        return decision, "new"
    if decision.expert == previous:
        return decision, "kept"
    own = next((s for s in decision.scores if s.expert == previous), None)
    if decision.flags or getattr(decision, "explored", False) or own is None or not own.eligible:
        return decision, "switched"
    if own.total - decision.chosen.total > margin:
        return decision, "switched"
    return dataclasses.replace(decision, expert=previous), "kept"


class ThreadStore:
    """The last expert of each conversation thread: a bounded LRU map, safe to share across threads.

    A thread id is any hashable value; ids are told apart by type and value (:meth:`key`), so ``True``,
    ``1`` and ``1.0`` are three threads, not one.

    Args:
        max_threads: Threads remembered; past it, the least recently used thread is forgotten (its
            next turn routes as a new thread).
    """

    def __init__(self, max_threads: int = 10_000) -> None:
        if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
            raise ConfigurationError(f"max_threads must be a positive integer; got {max_threads!r}")
        self.max_threads = max_threads
        self._experts: OrderedDict[tuple[type, Hashable], str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(thread: object) -> tuple[type, Hashable]:
        """``(type, thread)``: the key a thread is kept under; a :class:`ConfigurationError` for an id that
        cannot be hashed (a list, a dict, a tuple holding one)."""
        try:
            hash(thread)
        except TypeError:
            raise ConfigurationError(f"a conversation thread id must be hashable (a string, a number, a UUID); "
                                     f"got {type(thread).__name__}: {thread!r:.60}") from None
        return type(thread), thread  # type: ignore[return-value]

    def get(self, thread: Hashable) -> str | None:
        """The thread's last expert (marking the thread recently used), or ``None``."""
        key = self.key(thread)
        with self._lock:
            expert = self._experts.get(key)
            if expert is not None:
                self._experts.move_to_end(key)
            return expert

    def set(self, thread: Hashable, expert: str) -> None:
        """Record that ``thread`` used ``expert``; forget the least recently used thread when full."""
        key = self.key(thread)
        with self._lock:
            self._experts[key] = expert
            self._experts.move_to_end(key)
            while len(self._experts) > self.max_threads:
                self._experts.popitem(last=False)

    def forget(self, thread: Hashable) -> None:
        """Drop ``thread`` (its next turn routes as a new thread)."""
        key = self.key(thread)
        with self._lock:
            self._experts.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._experts)

    def __contains__(self, thread: object) -> bool:
        key = self.key(thread)
        with self._lock:
            return key in self._experts

    def __repr__(self) -> str:
        return f"ThreadStore(max_threads={self.max_threads}, threads={len(self)})"


__all__ = ["EarlierTurns", "Sticky", "ThreadStore", "blend_decisions", "stick"]
