"""Test doubles for the LlamaIndex adapter: a tiny deterministic loss predictor and its library."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from tryage import Expert, ExpertLibrary

KEYWORDS = {
    "legal": ("contract", "court", "clause", "law", "tenant", "lease"),
    "medical": ("patient", "dose", "symptom", "fever", "disease", "aspirin"),
    "code": ("python", "function", "bug", "compile", "list", "exception"),
}
# A fixed offset per expert so ties never depend on anything but library order.
OFFSET = {"legal": 0.0, "medical": 0.01, "code": 0.02}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


class KeywordPredictor:
    """Deterministic loss predictor: each keyword of an expert in the prompt lowers its loss by 0.2.

    Its ``encode`` is a hashed bag of words, enough for the description-similarity fallback.
    """

    experts = tuple(KEYWORDS)

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(prompts), len(self.experts)))
        for i, prompt in enumerate(prompts):
            words = set(_words(prompt))
            for j, expert in enumerate(self.experts):
                hits = sum(k in words for k in KEYWORDS[expert])
                out[i, j] = max(0.05, 0.9 - 0.2 * hits) + OFFSET[expert]
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), 64))
        for i, text in enumerate(texts):
            for word in _words(text):
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
        return out


class NoEncoderPredictor:
    """A predictor with no encode()/embed(): the description fallback cannot work with it."""

    experts = tuple(KEYWORDS)

    def predict_losses(self, prompts: Sequence[str]) -> np.ndarray:
        return KeywordPredictor().predict_losses(prompts)


LIBRARY = ExpertLibrary([
    Expert("legal", parameters="7B", description="contracts, courts and tenancy law"),
    Expert("medical", parameters="1B", description="patients, symptoms and drug doses"),
    Expert("code", parameters="13B", description="python programming and debugging"),
])
