"""Which small-table head, on your own Q-table: 5-fold cross-validation of the router with a linear head
(the small-table default), with a 64-unit hidden layer (the default before), and kNN at k = 5 and 20.

    python benchmarks/small_table_heads.py Q.jsonl [Q2.jsonl ...] [--folds 5] [--seed 0]

The folds are ``tryage cv``'s (stratified by task, else domain); every method on the same folds and
MiniLM embeddings. Used on the first-hour walks' Q-tables (``benchmarks/first_hour.py --work DIR`` leaves
``DIR/q.jsonl``). JSON to stdout and to benchmarks/results/small_table_heads.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def heads(table, embeddings: np.ndarray, seed: int) -> dict:
    from tryage.predictors import PerceptivePredictor
    from tryage.predictors._base import neighbour_mean

    def head(**options):
        def fit_predict(train_rows, test_rows):
            router = PerceptivePredictor(seed=seed, progress=False, **options)
            router.fit(table.subset(train_rows), None, embeddings=embeddings[train_rows])
            return router.predict_from_embeddings(embeddings[test_rows])
        return fit_predict

    def knn(k):
        return lambda train_rows, test_rows: neighbour_mean(embeddings[train_rows], table.losses[train_rows],
                                                            min(k, len(train_rows)), queries=embeddings[test_rows])

    return {"linear (default)": head(), "hidden 64": head(hidden_dim=64), "kNN k=5": knn(5), "kNN k=20": knn(20)}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qtables", nargs="+", type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "small_table_heads.json")
    args = parser.parse_args()
    import torch

    from tryage import QTable
    from tryage.cli.split import stratify_field
    from tryage.evaluation import cross_validate
    from tryage.predictors import PerceptivePredictor

    torch.set_num_threads(1)
    encoder = PerceptivePredictor(progress=False)
    results = {"folds": args.folds, "seed": args.seed, "units": "mean score on held-out folds", "tables": {}}
    for path in args.qtables:
        table = QTable.from_file(path)
        embeddings = encoder.encode(table.prompts)
        by = stratify_field(table, None)
        row: dict = {"rows": len(table), "experts": list(table.experts), "stratified_by": by}
        for name, fit_predict in heads(table, embeddings, args.seed).items():
            report = cross_validate(table, fit_predict, embeddings, folds=args.folds, by=by, seed=args.seed)
            row[name] = report["router"] if report["units"] == "score" else 1 - report["router"]
        means = 1 - np.nanmean(table.losses, axis=0) if report["units"] == "score" else np.nanmean(table.losses, axis=0)
        row["best single in hindsight"] = float(np.max(means)) if report["units"] == "score" else float(np.min(means))
        row["best single chosen on training folds"] = report["best_single"]["value"]
        row["oracle"] = report["oracle"]
        results["tables"][str(path)] = row
    text = json.dumps(results, indent=2)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return results


if __name__ == "__main__":
    main()
