"""Routing quality on the LLMRouter score matrix (../shared/data/llmrouter), cross-validated.

    python benchmarks/llmrouter_quality.py [--folds 5] [--seed 0] [--knn-k 50] [--embeddings-cache FILE.npy]

Trains the perceptive router (its defaults: head mode over the bundled MiniLM) on k-1 folds and
measures it on the held-out fold, beside the baselines measured on the same folds in the same run:
the best single model (chosen on the training folds), a kNN router on the same embeddings, random
choice (exact expectation) and the per-prompt oracle. Then sweeps the size weight over the
out-of-fold predictions and reports the smallest mean parameter count at which the router still
matches the best single model's score. Prints JSON and writes benchmarks/results/llmrouter_quality.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--knn-k", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--embeddings-cache", type=Path, default=None,
                        help=".npy of the default encoder's embeddings of the prompts in Q-table order "
                             "(written when missing, read when present)")
    args = parser.parse_args(argv)
    if not (args.data / "train.jsonl").exists():
        sys.exit(f"llmrouter data not found in {args.data}; put ../shared beside the checkout or pass --data")

    import torch

    from tryage import ExpertLibrary, QTable
    from tryage.evaluation import evaluate_predictions, pareto_sweep, smallest_matching
    from tryage.predictors import KNNPredictor, PerceptivePredictor

    torch.set_num_threads(args.threads)
    table = QTable.from_file(args.data / "train.jsonl")
    library = ExpertLibrary.from_json(args.data / "models.json", names=table.experts)
    started = time.perf_counter()
    encoder = PerceptivePredictor(progress=True)
    if args.embeddings_cache is not None and args.embeddings_cache.exists():
        embeddings = np.load(args.embeddings_cache)
        encoder.encode(table.prompts[:1])  # loads the encoder the folds share
        if embeddings.shape[0] != len(table):
            sys.exit(f"{args.embeddings_cache} holds {embeddings.shape[0]} embeddings; the table has {len(table)} prompts")
    else:
        embeddings = encoder.encode(table.prompts)
        if args.embeddings_cache is not None:
            np.save(args.embeddings_cache, embeddings)
    encode_s = time.perf_counter() - started

    order = np.random.default_rng(args.seed).permutation(len(table))
    parts = np.array_split(order, args.folds)
    oof_router = np.zeros_like(table.losses)
    oof_knn = np.zeros_like(table.losses)
    oof_single = np.zeros(len(table), dtype=int)
    oof_task_best = np.zeros(len(table), dtype=int)
    fold_reports = []
    for i, test_idx in enumerate(parts):
        train_idx = np.sort(np.concatenate(parts[:i] + parts[i + 1:]))
        test_idx = np.sort(test_idx)
        train, test = table.subset(train_idx), table.subset(test_idx)
        router = PerceptivePredictor(seed=args.seed + i, progress=False)
        router.text_encoder_, router.encoder_spec_ = encoder.text_encoder_, encoder.encoder_spec_
        router.fit(train, library, embeddings=embeddings[train_idx])
        oof_router[test_idx] = router.predict_from_embeddings(embeddings[test_idx])
        knn = KNNPredictor(encoder.encode, k=args.knn_k).fit(train, embeddings=embeddings[train_idx])
        oof_knn[test_idx] = knn.predict_from_embeddings(embeddings[test_idx])
        oof_single[test_idx] = int(np.argmin(train.losses.mean(0)))
        # Reference, not a router: the best model of each task on the training folds, given the task label.
        train_tasks, test_tasks = np.array(train.column("task")), np.array(test.column("task"))
        for task in set(test_tasks):
            oof_task_best[test_idx[test_tasks == task]] = int(np.argmin(train.losses[train_tasks == task].mean(0)))
        report = evaluate_predictions(oof_router[test_idx], test, train=train, knn_predicted=oof_knn[test_idx])
        fold_reports.append({"fold": i, "router": report.router.value, "best_single": report.best_single.value,
                             "knn": report.knn.value, "oracle": report.oracle, "epochs": len(router.history_)})
        print(json.dumps(fold_reports[-1]), file=sys.stderr)

    # Out-of-fold: every prompt is predicted by a router that never saw it.
    overall = evaluate_predictions(oof_router, table, knn_predicted=oof_knn, group_by="task").to_dict()
    single_value = float(np.mean([1.0 - table.losses[j, oof_single[j]] for j in range(len(table))]))
    overall["best_single"] = {"expert": "per fold: best mean on the training folds", "value": single_value}
    overall["gap_closed"] = (overall["router"] - single_value) / (overall["oracle"] - single_value)

    front = pareto_sweep(oof_router, table, library, constraint="size")
    match = smallest_matching(front, single_value)
    largest_single = library[int(np.argmin(table.losses.mean(0)))]
    result = {
        "command": "python benchmarks/llmrouter_quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": str(args.data), "n": len(table), "folds": args.folds, "seed": args.seed,
        "router_config": {"mode": "head", "encoder": "bundled all-MiniLM-L6-v2",
                          "hidden_dim": PerceptivePredictor().hidden_dim, "layers": PerceptivePredictor().layers,
                          "target_smoothing": "auto: min(20, n_train // 50) for 0/1 scores"},
        "mean_score": {"router": overall["router"], "best_single": single_value,
                       "knn": overall["knn"]["value"], "random": overall["random"], "oracle": overall["oracle"],
                       "task_label_reference": float(np.mean(table.scores[np.arange(len(table)), oof_task_best]))},
        "knn_k": args.knn_k,
        "select_best_accuracy": {"router": overall["select_best_accuracy"],
                                 "knn": overall["knn"]["select_best_accuracy"]},
        "gap_closed": overall["gap_closed"],
        "per_task": overall["per_group"],
        "folds_detail": fold_reports,
        "cost_aware": {
            "best_single_always": {"expert": largest_single.name, "parameters": largest_single.parameters},
            "smallest_mean_parameters_matching_best_single": None if match is None else match.mean_constraint,
            "at_size_weight": None if match is None else match.weight,
            "score_there": None if match is None else match.value,
            "front": [p.to_dict() for p in front],
        },
        "seconds": {"encode": encode_s, "total": time.perf_counter() - started},
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_task",)} | {
        "cost_aware": {k: v for k, v in result["cost_aware"].items() if k != "front"}}, indent=2))
    out = Path(__file__).resolve().parent / "results" / "llmrouter_quality.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
