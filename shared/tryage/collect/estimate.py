"""What a call will cost before it is made: the dry run's figures and the budget's reservations."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tryage.collect.backends import ExpertSpec

DEFAULT_OUTPUT_TOKENS = 512


def estimate_tokens(text: str) -> int:
    """A deliberately high token estimate: one token per 3 UTF-8 bytes (real tokenizers give ~4)."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 3))


def usable_tokens(value: Any) -> int | None:
    """A provider's token count if it is a whole number >= 0, else ``None`` (not usable: estimate it).

    Negative, fractional, non-finite or non-numeric ``usage`` never prices a call (it could lower
    the run's spend): the runner makes such a call a ``ProviderUsageError`` charged at its estimate.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if value >= 0 else None


def price(spec: ExpertSpec, input_tokens: int, output_tokens: int) -> float:
    """USD of a call: tokens × the entry's prices per 1M tokens (unknown prices count as 0)."""
    return (input_tokens * (spec.input_cost or 0.0) + output_tokens * (spec.output_cost or 0.0)) / 1e6


@dataclass(frozen=True)
class PlannedCall:
    """A call a run would make (``--dry-run``).

    Attributes:
        prompt_id: The prompt's id.
        expert: The expert's name.
        input_tokens: Estimated input tokens.
        output_tokens: Estimated output tokens.
        cost: Estimated USD.
    """

    prompt_id: str
    expert: str
    input_tokens: int
    output_tokens: int
    cost: float


class CostEstimator:
    """Estimated tokens and USD of a call: input tokens ≈ UTF-8 bytes / 3; output tokens = the entry's
    ``expected_output_tokens``, else its ``max_tokens`` (or an alias) — unless an answer so far was
    longer (its server ignores the limit): then its longest answer —, else the mean of its answers so
    far, else :data:`DEFAULT_OUTPUT_TOKENS`; ``hf`` experts generate nothing.

    Args:
        observed: Output tokens of earlier answers, by expert name (counts that are not whole numbers
            >= 0 are ignored). :meth:`observe` adds the answers of this run.
    """

    def __init__(self, observed: Mapping[str, Iterable[Any]] | None = None) -> None:
        self._observed: dict[str, list[int]] = {}
        for name, counts in (observed or {}).items():
            for count in counts:
                self.observe(name, count)

    def observe(self, name: str, output_tokens: Any) -> None:
        """Count one answer's output tokens into ``name``'s estimate of its next calls."""
        count = usable_tokens(output_tokens)
        if count is not None:
            seen = self._observed.setdefault(name, [0, 0, 0])
            seen[0] += count
            seen[1] += 1
            seen[2] = max(seen[2], count)

    def expected_output_tokens(self, spec: ExpertSpec) -> int:
        """Output tokens assumed for ``spec``'s next call."""
        if spec.kind == "hf":
            return 0
        if spec.expected_output_tokens is not None:
            return spec.expected_output_tokens
        total, count, longest = self._observed.get(spec.name, (0, 0, 0))
        if spec.max_tokens is not None:
            return max(spec.max_tokens, longest)
        return math.ceil(total / count) if count else DEFAULT_OUTPUT_TOKENS

    def input_tokens(self, row: Any, spec: ExpertSpec) -> int:
        """Input tokens assumed for calling ``spec`` on ``row`` (its ``system_prompt`` included; an ``hf``
        expert reads the reference too)."""
        text = row.prompt if spec.kind != "hf" or row.reference is None else f"{row.prompt} {row.reference}"
        if spec.system_prompt:
            text = f"{spec.system_prompt}\n{text}"  # sent before every prompt, paid as input too
        return estimate_tokens(text)

    def plan(self, row: Any, spec: ExpertSpec) -> PlannedCall:
        """The estimated tokens and cost of calling ``spec`` on ``row``."""
        tin, tout = self.input_tokens(row, spec), self.expected_output_tokens(spec)
        return PlannedCall(row.id, spec.name, tin, tout, price(spec, tin, tout))


__all__ = ["DEFAULT_OUTPUT_TOKENS", "CostEstimator", "PlannedCall", "estimate_tokens", "price", "usable_tokens"]
