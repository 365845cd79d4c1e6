"""tryage.research.joint: routing and expert fine-tuning alternate, and the routed loss falls."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from paper_fixtures import DOMAIN_TEXTS
from tryage.errors import ConfigurationError
from tryage.research.joint import joint_train
from tryage.qtable import QTable

VOCAB = sorted({w for texts in DOMAIN_TEXTS.values() for t in texts for w in t.split()})


class UnigramExpert:
    """A word-unigram language model (add-one smoothing); fit() adds the routed prompts' counts."""

    def __init__(self, seed_text: str) -> None:
        self.counts = Counter(seed_text.split())

    def losses(self, prompts: Sequence[str]) -> np.ndarray:
        total = sum(self.counts.values()) + len(VOCAB)
        return np.array([np.mean([-math.log((self.counts[w] + 1) / total) for w in p.split()]) for p in prompts])

    def fit(self, prompts: Sequence[str]) -> None:
        for p in prompts:
            self.counts.update(p.split() * 3)


class LookupRouter:
    """Predicts the losses it was trained on (a memorising router: enough to exercise the loop)."""

    def fit(self, table: QTable) -> "LookupRouter":
        self.experts = table.experts
        self.rows_ = {p: row for p, row in zip(table.prompts, table.losses)}
        return self

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray:
        return np.stack([self.rows_[p] for p in prompts])


def test_joint_train_specialises_experts_and_lowers_routed_loss() -> None:
    prompts = [t for texts in DOMAIN_TEXTS.values() for t in texts]
    experts = {"a": UnigramExpert("code python"), "b": UnigramExpert("court law"), "c": UnigramExpert("gene cell")}
    result = joint_train(LookupRouter(), experts, prompts, rounds=3)
    first, last = result.history[0], result.history[-1]
    assert len(result.history) == 4
    assert last.routed_loss < first.routed_loss - 0.1
    assert all(n > 0 for n in last.usage.values())
    assert result.qtable.experts == ("a", "b", "c") and len(result.qtable) == len(prompts)


def test_joint_train_rejects_bad_input() -> None:
    with pytest.raises(ConfigurationError, match="at least 2 prompts"):
        joint_train(LookupRouter(), {"a": UnigramExpert("x")}, ["only one"])
    with pytest.raises(ConfigurationError, match="these do not: \\['b'\\]"):
        joint_train(LookupRouter(), {"a": UnigramExpert("x"), "b": object()}, ["p q", "r s"])  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="rounds must be a positive integer"):
        joint_train(LookupRouter(), {"a": UnigramExpert("x")}, ["p q", "r s"], rounds=0)
