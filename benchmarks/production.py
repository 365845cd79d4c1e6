"""A router in production, on the LLMRouter score matrix (../shared/data/llmrouter): one run, JSON out.

    python benchmarks/production.py [--folds 3] [--seed 0] [--embeddings PATH] [--threads 1] [--smoke]

Every "final router" number is measured on a held-out fold that no router saw, against a router
trained on the full training part of the same fold (the baseline, same run), and the best single
model chosen on that training part.

(a) New expert: hide one expert from training, then ``add_expert`` it from 25 / 50 / 100 calibration
    rows of the training part; mean score of routing over all experts; share of the full router's
    gain over the best single model that is recovered.
(b) Bandit replay: train on 20% of the prompts, then feed the rest of the training part in
    mini-batches, revealing only the chosen expert's score, with ``router.update`` after each batch
    (replay / L2 / no regularisation; greedy, epsilon-greedy and Thompson exploration). Reports the
    mean revealed score over the stream and the final router's held-out score, and a router refitted
    from scratch on everything logged (initial table + partial stream rows, masked loss).
(c) Masked training: drop 50% of the training entries at random (every row keeps one); held-out
    score against training on the full table.

Embeddings of the prompts (bundled MiniLM, all layers) are read from ``--embeddings`` when given
(rows in Q-table order), otherwise computed once. Writes benchmarks/results/production.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter"
CACHE = Path("/work/cache/llmrouter_minilm_all_layers.npy")


class CachedPredictor:
    """A loss predictor over precomputed embeddings: the real router path without re-encoding."""

    def __init__(self, predictor, index: dict[str, int], embeddings: np.ndarray) -> None:
        # The router strips surrounding whitespace (and flags) before predicting: key on both forms.
        self.predictor, self.embeddings = predictor, embeddings
        self.index = {**{p.strip(): i for p, i in index.items()}, **index}

    @property
    def experts(self) -> tuple[str, ...]:
        return self.predictor.experts_

    def predict_losses(self, prompts):
        return self.predictor.predict_from_embeddings(self.embeddings[[self.index[p] for p in prompts]])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--embeddings", type=Path, default=CACHE if CACHE.exists() else None)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=160, help="stream mini-batch size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--update-epochs", type=int, default=20, help="epochs of each router.update in (b)")
    parser.add_argument("--update-lr", type=float, default=None,
                        help="learning rate of each update (default: the router's)")
    parser.add_argument("--parts", default="add,bandit,masked", help="comma-separated subset of add,bandit,masked")
    parser.add_argument("--out", default="production.json", help="file name under benchmarks/results/")
    parser.add_argument("--smoke", action="store_true", help="600 prompts, for checking the script")
    args = parser.parse_args(argv)
    if not (args.data / "train.jsonl").exists():
        sys.exit(f"llmrouter data not found in {args.data}; pass --data")

    import torch

    from tryage import QTable, TryageRouter
    from tryage.evaluation import choice_metrics
    from tryage.objective import Exploration
    from tryage.predictors import PerceptivePredictor

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    table = QTable.from_file(args.data / "train.jsonl")
    if args.embeddings is not None:
        embeddings = np.load(args.embeddings)
        if embeddings.shape[0] != len(table):
            sys.exit(f"{args.embeddings} has {embeddings.shape[0]} rows; the table has {len(table)}")
    else:
        embeddings = PerceptivePredictor(progress=True).encode(table.prompts)
    if args.smoke:
        keep = np.sort(np.random.default_rng(args.seed).permutation(len(table))[:600])
        table, embeddings = table.subset(keep), embeddings[keep]
    index = {p: i for i, p in enumerate(table.prompts)}
    experts = table.experts
    encoder = PerceptivePredictor(progress=False)
    encoder.encode(["warm up"])  # loads the encoder once; routers share it

    def fit(sub: QTable, rows: np.ndarray, seed: int) -> PerceptivePredictor:
        router = PerceptivePredictor(seed=seed, progress=False)
        router.text_encoder_, router.encoder_spec_ = encoder.text_encoder_, encoder.encoder_spec_
        return router.fit(sub, embeddings=embeddings[rows])

    def held_out(router: PerceptivePredictor, test_idx: np.ndarray) -> float:
        predicted = router.predict_from_embeddings(embeddings[test_idx])
        columns = [router.experts_.index(e) for e in experts if e in router.experts_]
        names = [e for e in experts if e in router.experts_]
        choice = np.array([experts.index(names[c]) for c in predicted[:, columns].argmin(1)])
        return choice_metrics(choice, table.subset(test_idx)).value

    order = np.random.default_rng(args.seed).permutation(len(table))
    parts = np.array_split(order, args.folds)
    hidden_experts = [experts[i] for i in np.argsort(table.losses.mean(0))[:3]]  # the three best: the hard cases
    results: dict = {"add_expert": [], "bandit": [], "masked": [], "full": []}
    for fold, test_idx in enumerate(parts):
        test_idx = np.sort(test_idx)
        pool = np.sort(np.concatenate(parts[:fold] + parts[fold + 1:]))
        train = table.subset(pool)
        seed = args.seed + fold
        single_j = int(np.argmin(train.losses.mean(0)))
        single = float(table.scores[test_idx, single_j].mean())
        oracle = float(table.scores[test_idx].max(1).mean())
        full = fit(train, pool, seed)
        full_score = held_out(full, test_idx)
        results["full"].append({"fold": fold, "router": full_score, "best_single": single, "oracle": oracle,
                                "best_single_expert": experts[single_j]})
        log(results["full"][-1])

        # (c) masked training: half the entries dropped, every row keeps at least one
        parts_wanted = set(args.parts.split(","))
        rng = np.random.default_rng(seed)
        losses = train.losses.copy()
        drop = rng.random(losses.shape) < 0.5
        empty = drop.all(1)
        drop[empty, rng.integers(0, len(experts), empty.sum())] = False
        losses[drop] = np.nan
        if "masked" in parts_wanted:
            masked = fit(QTable(train.prompts, experts, losses, train.extras, train.kind), pool, seed)
            results["masked"].append({"fold": fold, "dropped_share": float(drop.mean()),
                                      "router": held_out(masked, test_idx), "full": full_score,
                                      "best_single": single})
            log(results["masked"][-1])

        # (a) hide an expert, then add it back from calibration rows of the training part
        for name in hidden_experts if "add" in parts_wanted else []:
            others = [e for e in experts if e != name]
            base = fit(train.select_experts(others), pool, seed)
            entry = {"fold": fold, "expert": name, "without_it": held_out(base, test_idx), "full": full_score,
                     "best_single": single, "added": {}}
            for n in (25, 50, 100):
                router = copy.deepcopy(base)
                rows = np.random.default_rng(seed * 1000 + n).choice(len(pool), n, replace=False)
                calibration = [{"prompt": train.prompts[i], "loss": float(train.losses[i, experts.index(name)])}
                               for i in rows]
                router.add_output(name, calibration, embeddings=embeddings[pool[rows]])
                score = held_out(router, test_idx)
                entry["added"][n] = {"router": score, "gain_recovered": _ratio(score, single, full_score)}
            results["add_expert"].append(entry)
            log(entry)

        # (b) bandit replay: 20% of all prompts labelled in full, the rest of the pool one batch at a time
        n_start = min(int(round(0.2 * len(table))), len(pool) // 2)
        start_rows = pool[np.random.default_rng(seed).permutation(len(pool))[:n_start]]
        stream_rows = np.setdiff1d(pool, start_rows)
        stream_rows = stream_rows[np.random.default_rng(seed + 1).permutation(len(stream_rows))]
        if "bandit" not in parts_wanted:
            continue
        start_router = fit(table.subset(np.sort(start_rows)), np.sort(start_rows), seed)
        variants = {"greedy+replay": (None, "replay"),
                    "epsilon0.1+replay": (Exploration("epsilon", 0.1, seed=seed), "replay"),
                    "thompson0.05+replay": (Exploration("thompson", noise=0.05, seed=seed), "replay"),
                    "greedy+l2": (None, "l2"), "greedy+none": (None, "none")}
        fold_bandit = {"fold": fold, "start_rows": int(n_start), "stream_rows": int(len(stream_rows)),
                       "start_router": held_out(start_router, test_idx), "full": full_score, "best_single": single,
                       "variants": {}}
        for label, (exploration, regularization) in variants.items():
            predictor = copy.deepcopy(start_router)
            router = TryageRouter(CachedPredictor(predictor, index, embeddings), exploration=exploration)
            revealed, explored, logged = [], 0, []
            seen = list(start_rows)
            for b in range(0, len(stream_rows), args.batch):
                batch = stream_rows[b:b + args.batch]
                decisions = router.route_batch([table.prompts[i] for i in batch])
                rows = []
                for i, d in zip(batch, decisions):
                    j = experts.index(d.expert)
                    revealed.append(float(table.scores[i, j]))
                    explored += d.explored
                    rows.append({"prompt": table.prompts[i], "expert": d.expert, "loss": float(table.losses[i, j])})
                logged.extend(rows)
                reference = np.random.default_rng(seed + b).choice(seen, min(1000, len(seen)), replace=False)
                # What router.update does, on the predictor behind the cached-embedding wrapper.
                predictor.partial_fit(rows, regularization=regularization, epochs=args.update_epochs,
                                      learning_rate=args.update_lr,
                                      embeddings=embeddings[batch], reference_embeddings=embeddings[reference])
                seen.extend(batch.tolist())
            logged_table = QTable(tuple(r["prompt"] for r in logged), experts,
                                  np.array([[r["loss"] if e == r["expert"] else np.nan for e in experts]
                                            for r in logged]))
            both = QTable(table.subset(np.sort(start_rows)).prompts + logged_table.prompts, experts,
                          np.vstack([table.losses[np.sort(start_rows)], logged_table.losses]))
            rows_both = np.concatenate([np.sort(start_rows), [index[p] for p in logged_table.prompts]])
            refit = fit(both, rows_both, seed) if regularization == "replay" else None
            fold_bandit["variants"][label] = {
                "stream_mean_score": float(np.mean(revealed)), "explored_share": explored / len(revealed),
                "final_router_updated": held_out(predictor, test_idx),
                "final_router_refit_on_log": None if refit is None else held_out(refit, test_idx)}
            log({label: fold_bandit["variants"][label]})
        fold_bandit["stream_oracle"] = float(table.scores[stream_rows].max(1).mean())
        fold_bandit["stream_best_single"] = float(table.scores[stream_rows, single_j].mean())
        results["bandit"].append(fold_bandit)

    summary = _summary(results, hidden_experts)
    result = {"command": "python benchmarks/production.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "data": str(args.data), "n": len(table), "folds": args.folds, "seed": args.seed,
              "embeddings": str(args.embeddings) if args.embeddings else "computed", "stream_batch": args.batch,
              "update": {"epochs": args.update_epochs, "learning_rate": args.update_lr or "router's (1e-3)"},
              "parts": args.parts,
              "router_config": "PerceptivePredictor defaults (head mode, bundled MiniLM all layers); "
                               "update: reference replay of up to 1000 earlier prompts",
              "summary": summary, "detail": results, "seconds": time.perf_counter() - started}
    print(json.dumps(summary, indent=2))
    if not args.smoke:
        out = Path(__file__).resolve().parent / "results" / args.out
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _ratio(score: float, single: float, full: float) -> float | None:
    return None if full - single <= 0 else (score - single) / (full - single)


def _summary(results: dict, hidden: list[str]) -> dict:
    mean = lambda xs: float(np.mean([x for x in xs if x is not None]))  # noqa: E731
    full = mean(r["router"] for r in results["full"])
    single = mean(r["best_single"] for r in results["full"])
    add = {}
    for name in hidden:
        entries = [e for e in results["add_expert"] if e["expert"] == name]
        if not entries:
            continue
        add[name] = {"without_it": mean(e["without_it"] for e in entries),
                     **{str(n): {"router": mean(e["added"][n]["router"] for e in entries),
                                 "gain_recovered": _ratio(mean(e["added"][n]["router"] for e in entries), single, full)}
                        for n in (25, 50, 100)}}
    bandit = {}
    for label in results["bandit"][0]["variants"] if results["bandit"] else []:
        rows = [b["variants"][label] for b in results["bandit"]]
        refit = [r["final_router_refit_on_log"] for r in rows if r["final_router_refit_on_log"] is not None]
        bandit[label] = {"stream_mean_score": mean(r["stream_mean_score"] for r in rows),
                         "final_updated": mean(r["final_router_updated"] for r in rows),
                         "final_updated_minus_full": mean(r["final_router_updated"] for r in rows) - full,
                         "final_refit_on_log": mean(refit) if refit else None,
                         "final_refit_minus_full": mean(refit) - full if refit else None,
                         "explored_share": mean(r["explored_share"] for r in rows)}
    out: dict = {"held_out": {"full_router": full, "best_single": single,
                              "oracle": mean(r["oracle"] for r in results["full"])}}
    if add:
        out["add_expert"] = add
    if bandit:
        out["bandit"] = {"start_router_20pct": mean(b["start_router"] for b in results["bandit"]),
                         "stream_best_single": mean(b["stream_best_single"] for b in results["bandit"]),
                         "stream_oracle": mean(b["stream_oracle"] for b in results["bandit"]), "variants": bandit}
    if results["masked"]:
        out["masked_50pct"] = {"router": mean(r["router"] for r in results["masked"]), "full": full,
                               "difference": mean(r["router"] for r in results["masked"]) - full}
    return out


def log(item: dict) -> None:
    print(json.dumps(item), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
