"""The money of one collection: a ledger every paid call goes through.

The experts' :class:`~tryage.collect.runner.Runner`, the Ray driver (:mod:`tryage.collect.on_ray`)
and the judge (:mod:`tryage.collect.judge`) of a run share one :class:`Budget`, so ``spent`` is the
run's whole spend and one rule decides when it stops.
"""

from __future__ import annotations

import math

from tryage.errors import BudgetReachedError, check_scalar

#: Rounding slack of the budget test: a call that fits to within this many USD fits.
SLACK = 1e-12


class Budget:
    """The ledger of one run: its limit, what it spent and what calls in flight have reserved.

    **The rule.** A call starts only when ``spent + reserved + its estimate <= limit``: its estimate
    is reserved (:meth:`reserve`) before each attempt, and turned into what it really cost
    (:meth:`commit`) or given back (:meth:`release`) when the attempt ends. The first call that
    does not fit *closes* the ledger: no call starts after it, however small, so a run stops at the
    first call that would pass the limit and a rerun with a higher budget resumes from the logs.
    Where the caller cannot reserve per call (the Ray driver, whose workers start the calls), it
    asks :meth:`admit` for the largest estimate of the run after each batch: the same rule, for the
    costliest call that could start next.

    **A call may cost more than its estimate** (a server that ignores ``max_tokens``): the largest
    amount by which a committed call passed its reservation is kept as ``overrun``, and every later
    reservation holds that much more, so the calls in flight can pass their estimates by as much again
    without taking the spend past the limit.

    **Spend never goes down.** A cost that is negative, NaN or infinite (a provider's broken
    ``usage``) is counted as the call's reserved estimate instead (0 when nothing was reserved).
    An attempt that timed out is committed at its estimate: the provider may have billed it.

    This class is the one place that raises :class:`~tryage.errors.BudgetReachedError`.

    Args:
        limit: USD the run may spend, or ``None``: no limit (every call fits; spend is still counted).

    Attributes:
        limit: The limit, or ``None``.
        spent: USD counted so far.
        reserved: USD held by calls in flight.
        closed: Whether a call was refused (then every later :meth:`reserve` is refused too).
        overrun: The most USD a call has cost beyond what it reserved (held extra by each reservation).
    """

    def __init__(self, limit: float | None = None) -> None:
        self.limit = None if limit is None else float(check_scalar(limit, "budget", low=0.0))
        self.spent = 0.0
        self.reserved = 0.0
        self.closed = False
        self.overrun = 0.0

    def fits(self, estimate: float) -> bool:
        """Whether a call estimated at ``estimate`` USD may start now (no side effect)."""
        if self.closed:
            return False
        return self.limit is None or self.spent + self.reserved + estimate + self.overrun <= self.limit + SLACK

    def reserve(self, estimate: float) -> float:
        """Hold ``estimate`` USD for a call about to start; returns it, to :meth:`commit` or :meth:`release`.

        Raises:
            BudgetReachedError: The call does not fit (or an earlier one did not); the ledger is closed.
        """
        estimate = float(check_scalar(estimate, "estimated cost", low=0.0))
        if not self.fits(estimate):
            self.closed = True
            self.check(remaining_calls=1)
        held = estimate + self.overrun
        self.reserved += held
        return held

    def admit(self, estimate: float) -> None:
        """Raise :class:`BudgetReachedError` (closing the ledger) unless a call of ``estimate`` USD fits now."""
        self.release(self.reserve(estimate))

    def release(self, reserved: float) -> None:
        """Give back a reservation whose attempt cost nothing (it failed before the provider billed it)."""
        self.reserved = max(0.0, self.reserved - reserved)

    def commit(self, reserved: float, cost: float) -> float:
        """End a reservation and count ``cost`` USD as spent; returns what was counted.

        A ``cost`` that is negative or not finite is counted as ``reserved`` (see the class doc); a cost
        beyond ``reserved`` raises ``overrun``.
        """
        self.release(reserved)
        counted = cost if isinstance(cost, (int, float)) and math.isfinite(cost) and cost >= 0 else reserved
        self.spent += counted
        if reserved > 0:   # a cost counted without a reservation (the Ray driver's) says nothing of estimates
            self.overrun = max(self.overrun, counted - reserved)
        return counted

    def check(self, remaining_calls: int) -> None:
        """Raise :class:`BudgetReachedError` for ``remaining_calls`` calls not made if a call was refused."""
        if self.closed:
            raise BudgetReachedError(float(self.limit or 0.0), self.spent, remaining_calls)

    def __repr__(self) -> str:
        return (f"Budget(limit={self.limit!r}, spent={self.spent!r}, reserved={self.reserved!r}, "
                f"overrun={self.overrun!r}, closed={self.closed})")


__all__ = ["SLACK", "Budget"]
