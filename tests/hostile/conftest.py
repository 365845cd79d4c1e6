"""Shared pieces of the hostile-input suite: a deadline on every test, a small real router.

Every test in this folder runs under ``pytest-timeout``: a parser that backtracks or a read that
blocks fails the test instead of hanging the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tryage import Expert, ExpertLibrary, TryageRouter

DEADLINE_S = 60  #: per test; generous for a loaded 2-core machine, far below a hang

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().parent == HERE and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEADLINE_S))


class FixedPredictor:
    """A loss predictor that predicts the same losses for every prompt (a stand-in for a trained one)."""

    def __init__(self, losses: dict[str, float]) -> None:
        self.experts = tuple(losses)
        self.row = np.array(list(losses.values()), dtype=np.float64)

    def predict_losses(self, prompts):  # noqa: ANN001, ANN201
        return np.tile(self.row, (len(prompts), 1))


LIBRARY = ExpertLibrary([
    Expert("a", parameters="1B", license="mit", created_at="2023-01-01", input_cost=1, output_cost=1),
    Expert("b", parameters="7B", license="apache-2.0", created_at="2024-01-01", input_cost=2, output_cost=2),
    Expert("c", parameters="70B", license="llama3", created_at="2024-06-01", input_cost=10, output_cost=10),
])


@pytest.fixture()
def router() -> TryageRouter:
    """Experts a (1B, cheapest, oldest), b, c (70B, newest); ``a`` has the lowest predicted loss."""
    return TryageRouter(FixedPredictor({"a": 0.1, "b": 0.2, "c": 0.3}), LIBRARY)


@pytest.fixture()
def make_router():  # noqa: ANN201
    """``make_router({"a": 0.1, "b": nan})``: a router over those experts of the library, with those losses."""
    def build(losses: dict[str, float]) -> TryageRouter:
        return TryageRouter(FixedPredictor(losses), LIBRARY.subset(losses))
    return build
