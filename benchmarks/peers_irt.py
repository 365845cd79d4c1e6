"""A multidimensional IRT router: the prompt's ability vector is a linear map of its embedding.

    P(model m answers prompt x) = sigmoid(a_m . theta(x) - b_m),   theta(x) = W x + c   (dim d)

with a per-model discrimination vector ``a_m`` and difficulty ``b_m`` (the roles of item and respondent are
those of RouterArena's IRT routers: prompts are the respondents whose "ability" differs per model). Fitted by
full-batch Adam on the binary cross-entropy against the score matrix (scores in [0, 1] read as soft targets)
with an L2 penalty. ``py-irt`` and ``girth`` estimate one free ability per respondent and have no way to read
it from features, so they cannot score an unseen prompt; this head is the smallest model that can.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class IRTRouter:
    """Multidimensional IRT with embedding-driven abilities.

    Attributes:
        dim: the ability vector's width.
        components: the embedding is first projected on its leading principal directions (training prompts)
            when it is wider: still a linear map, and a fit in seconds on one core (None: the raw width).
        weight_decay: the L2 penalty on every parameter.
        epochs, learning_rate, seed: full-batch Adam's settings.
        params_: the fitted tensors (``W``, ``c``, ``a``, ``b``) as numpy arrays, after ``fit``.
    """

    def __init__(self, *, dim: int = 8, weight_decay: float = 1e-4, epochs: int = 200,
                 learning_rate: float = 0.02, components: int | None = 256, seed: int = 0) -> None:
        self.dim = dim
        self.components = components
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.seed = seed

    def fit(self, x: np.ndarray, scores: np.ndarray) -> IRTRouter:
        import torch
        if x.ndim != 2 or scores.ndim != 2 or len(x) != len(scores):
            raise ValueError(f"x {x.shape} and scores {scores.shape}: expected (n, features) and (n, models)")
        g = torch.Generator().manual_seed(self.seed)
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(scores, dtype=torch.float32).clamp(0, 1)
        mu, sd = xt.mean(0), xt.std(0) + 1e-6          # standardised inputs; folded back into W, c at the end
        xs = (xt - mu) / sd
        proj = torch.eye(x.shape[1])
        if self.components is not None and x.shape[1] > self.components:
            proj = torch.linalg.svd(xs, full_matrices=False).Vh[:self.components].T
        xs = xs @ proj
        k = scores.shape[1]
        w = (torch.randn(xs.shape[1], self.dim, generator=g) / np.sqrt(xs.shape[1])).requires_grad_()
        c = torch.zeros(self.dim, requires_grad=True)
        a = (torch.randn(k, self.dim, generator=g) / np.sqrt(self.dim)).requires_grad_()
        p0 = yt.mean(0).clamp(1e-3, 1 - 1e-3)
        b = (-torch.log(p0 / (1 - p0))).clone().requires_grad_()   # start at each model's base rate
        opt = torch.optim.Adam([w, c, a, b], lr=self.learning_rate)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for _ in range(self.epochs):
            opt.zero_grad()
            logits = (xs @ w + c) @ a.T - b
            loss = loss_fn(logits, yt) + self.weight_decay * sum((p ** 2).sum() for p in (w, c, a))
            loss.backward()
            opt.step()
        with torch.no_grad():
            w_raw = (proj @ w) / sd[:, None]
            self.params_ = {"W": w_raw.numpy(), "c": (c - mu @ w_raw).numpy(), "a": a.detach().numpy().copy(),
                            "b": b.detach().numpy().copy()}
        return self

    def ability(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32) @ self.params_["W"] + self.params_["c"]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, models): the probability each model answers each prompt."""
        logits = self.ability(x) @ self.params_["a"].T - self.params_["b"]
        return 1.0 / (1.0 + np.exp(-logits))

    def predict_losses(self, x: np.ndarray) -> np.ndarray:
        return 1.0 - self.predict_proba(x)

    def get_params(self) -> dict[str, Any]:
        return {"dim": self.dim, "weight_decay": self.weight_decay, "epochs": self.epochs,
                "learning_rate": self.learning_rate, "components": self.components}
