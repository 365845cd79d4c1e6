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


HEADS = {"linear (default)": {}, "hidden 64": {"hidden_dim": 64}}
KNN = {"kNN k=5": 5, "kNN k=20": 20}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qtables", nargs="+", type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "small_table_heads.json")
    args = parser.parse_args()
    missing = [str(p) for p in args.qtables if not p.is_file()]
    if missing or args.folds < 2:
        parser.error(f"Q-table file(s) not found: {', '.join(missing)}" if missing else
                     f"--folds must be at least 2, got {args.folds}")
    import torch
    from tryage import QTable
    from tryage.cli.cv import cross_validate_predictor
    from tryage.cli.split import stratify_field
    from tryage.predictors import PerceptivePredictor

    torch.set_num_threads(1)
    encoder = PerceptivePredictor(seed=args.seed, progress=False)
    results = {"folds": args.folds, "seed": args.seed, "tables": {}}
    for path in args.qtables:
        table = QTable.from_file(path)
        embeddings = encoder.encode(table.prompts)
        by = stratify_field(table, None)
        row: dict = {"rows": len(table), "experts": list(table.experts), "stratified_by": by}
        # each head's run also measures one kNN baseline on the same folds (cross_validate's knn_k)
        for (name, options), (knn_name, k) in zip(HEADS.items(), KNN.items()):
            report = cross_validate_predictor(table, None, encoder, embeddings, options, folds=args.folds, by=by,
                                              knn_k=k)
            row[name], row[knn_name] = report["router"], report["knn"]["value"]
        scores = table.scores if report["units"] == "score" else -table.losses
        row["units"] = report["units"]
        row["best single in hindsight"] = float(abs(np.nanmean(scores, axis=0).max()))
        row["best single chosen on training folds"] = report["best_single"]["value"]
        row["oracle"] = report["oracle"]
        results["tables"][str(path)] = row
    text = json.dumps(results, indent=2)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return results


if __name__ == "__main__":
    main()
