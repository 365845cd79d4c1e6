"""Routers trained on small tables (40-200 rows): do they beat the best single expert?

    python benchmarks/small_tables.py [--sizes 40 100 200] [--repeats 5] [--folds 5] \
        [--embeddings /work/cache/llmrouter_minilm.npy]

Subsamples of the LLMRouter score matrix (../shared/data/llmrouter, 0/1 scores of nine LLMs), each
cross-validated in ``--folds`` folds. On every fold, measured in the same run on the same held-out
rows (mean score, higher is better):

* ``router_default``: ``PerceptivePredictor`` with its large-table settings (``small_table=False``);
* ``router``: ``PerceptivePredictor`` defaults (on fewer than ``SMALL_TABLE_ROWS`` rows: a linear,
  regularised head, fixed epochs, no validation split: see ``tryage.predictors._training.table_settings``);
* ``router_hidden64``: the same with a 64-unit hidden layer (the small-table head before it became linear);
* ``ridge``: a ridge regression per expert on the frozen embeddings (alpha by leave-one-out, RidgeCV);
* ``knn``: the kNN baseline at ``tryage evaluate``'s default k (``min(KNN_K, rows - 1)``);
* ``best_single``: the expert with the best mean score on the training folds; ``oracle``: the best
  expert of each row; ``random``: the mean of all experts.

``--embeddings`` reuses cached ``PerceptivePredictor().encode`` embeddings of train.jsonl (.npy);
without it the prompts are encoded once here. Prints JSON and writes
benchmarks/results/small_tables.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter"
METHODS = ("router", "router_hidden64", "router_default", "ridge", "knn", "best_single", "random", "oracle")


def _ridge(train_x: np.ndarray, train_losses: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(train_x, train_losses)
    return model.predict(test_x)


def _fold_values(table, embeddings: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray, seed: int,
                 encoder) -> dict:
    import torch

    from tryage.evaluation import choice_metrics
    from tryage.predictors import PerceptivePredictor
    from tryage.predictors.baselines import default_knn_k, neighbour_mean

    torch.set_num_threads(1)
    train, test = table.subset(train_idx), table.subset(test_idx)
    x_train, x_test = embeddings[train_idx], embeddings[test_idx]
    predicted = {}
    for name, options in (("router", {}), ("router_hidden64", {"hidden_dim": 64}),
                          ("router_default", {"small_table": False})):
        router = PerceptivePredictor(seed=seed, progress=False, **options)
        router.text_encoder_ = encoder  # loaded once; fit reuses it
        router.fit(train, embeddings=x_train)
        predicted[name] = router.predict_from_embeddings(x_test)
    predicted["ridge"] = _ridge(x_train, train.losses, x_test)
    predicted["knn"] = neighbour_mean(x_train, train.losses, default_knn_k(len(train)), queries=x_test)
    values = {name: choice_metrics(np.argmin(p, axis=1), test).value for name, p in predicted.items()}
    single = int(np.argmin(train.losses.mean(axis=0)))
    values["best_single"] = choice_metrics(np.full(len(test), single), test).value
    values["random"] = float(test.scores.mean())
    values["oracle"] = float(test.scores.max(axis=1).mean())
    return values


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 100, 200])
    parser.add_argument("--repeats", type=int, default=5, help="subsamples per size")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embeddings", type=Path, help="cached encoder embeddings of train.jsonl (.npy)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "small_tables.json")
    args = parser.parse_args(argv)

    from tryage import QTable
    from tryage.predictors import PerceptivePredictor
    from tryage.predictors._training import SMALL_TABLE, SMALL_TABLE_ROWS

    table = QTable.from_file(args.data / "train.jsonl")
    encoder = PerceptivePredictor(progress=False)
    encoder._ensure_encoder()
    if args.embeddings is not None:
        embeddings = np.load(args.embeddings)
        if len(embeddings) != len(table):
            sys.exit(f"--embeddings {args.embeddings} has {len(embeddings)} rows; train.jsonl has {len(table)}")
    else:
        embeddings = encoder.encode(table.prompts)
    started = time.perf_counter()
    results: dict = {"data": str(args.data / "train.jsonl"), "rows_available": len(table), "experts": list(table.experts),
                     "folds": args.folds, "repeats": args.repeats, "small_table_rows": SMALL_TABLE_ROWS, "small_table_settings": SMALL_TABLE,
                     "units": "mean score (share correct), higher is better", "sizes": {}}
    for size in args.sizes:
        folds_values: list[dict] = []
        for repeat in range(args.repeats):
            rng = np.random.default_rng(args.seed + 1000 * repeat + size)
            rows = np.sort(rng.choice(len(table), size=size, replace=False))
            sub, sub_x = table.subset(rows), embeddings[rows]
            parts = np.array_split(rng.permutation(size), args.folds)
            for i, test_idx in enumerate(parts):
                train_idx = np.concatenate(parts[:i] + parts[i + 1:])
                folds_values.append(_fold_values(sub, sub_x, train_idx, test_idx, seed=args.seed + i,
                                                 encoder=encoder.text_encoder_))
        mean = {m: float(np.mean([v[m] for v in folds_values])) for m in METHODS}
        beats = {m: float(np.mean([v[m] > v["best_single"] for v in folds_values])) for m in METHODS[:5]}
        results["sizes"][str(size)] = {"mean": mean, "share_of_folds_beating_best_single": beats,
                                       "minus_best_single": {m: mean[m] - mean["best_single"] for m in METHODS},
                                       "folds": folds_values}
        print(f"{size} rows: " + ", ".join(f"{m} {mean[m]:.3f}" for m in METHODS), file=sys.stderr, flush=True)
        results["seconds"] = time.perf_counter() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)  # after each size: a long run keeps what it measured
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in results.items() if k != "sizes"} |
                     {"sizes": {s: {k: v for k, v in r.items() if k != "folds"} for s, r in results["sizes"].items()}},
                     indent=2))
    return results


if __name__ == "__main__":
    main()
