"""Is there any within-task signal in the embeddings? A permutation test on the LLMRouter folds.

    PYTHONPATH=shared python benchmarks/exploratory/exp_shuffle.py EMB.npy [EMB2.npy ...] [--permutations 20] [--out F.json]

For each cached embedding array (rows in the order of train.jsonl), on the five folds of
benchmarks/llmrouter_quality.py: the kNN router's out-of-fold score with the true outcomes, and the same
router after the training folds' outcome rows are shuffled among prompts of the same task (so each task's
per-model means stay exactly as they are; only which prompt got which outcome row is lost). If the true
outcomes score no better than the shuffled ones, the embeddings carry no usable information about which
model is right beyond the task, and no head on them can beat what the task alone gives by much.
Prints JSON (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tryage import QTable

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "llmrouter"


def knn_predict(train_emb, train_loss, test_emb, k):
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = unit(test_emb) @ unit(train_emb).T
    nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    return train_loss[nearest].mean(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("embeddings", nargs="+", type=Path)
    parser.add_argument("--permutations", type=int, default=20)
    parser.add_argument("--ks", default="20,50,100")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args(argv)
    table = QTable.from_file(DATA / "train.jsonl")
    scores, losses = 1.0 - table.losses, table.losses
    tasks = np.array(table.column("task"))
    parts = np.array_split(np.random.default_rng(0).permutation(len(table)), 5)
    ks = [int(k) for k in args.ks.split(",")]
    rng = np.random.default_rng(1)

    def oof_score(emb, k, shuffle):
        total = 0.0
        for i, test in enumerate(parts):
            train = np.sort(np.concatenate(parts[:i] + parts[i + 1:]))
            target = losses[train].copy()
            if shuffle:
                for t in np.unique(tasks[train]):
                    rows = np.flatnonzero(tasks[train] == t)
                    target[rows] = target[rng.permutation(rows)]
            choice = np.argmin(knn_predict(emb[train], target, emb[test], k), axis=1)
            total += scores[test, choice].sum()
        return total / len(table)

    task_best = 0.0
    for i, test in enumerate(parts):
        train = np.sort(np.concatenate(parts[:i] + parts[i + 1:]))
        for t in np.unique(tasks[test]):
            best = np.argmax(scores[train][tasks[train] == t].mean(0))
            total = scores[test][tasks[test] == t, best].sum()
            task_best += total
    report = {"command": "python benchmarks/exploratory/exp_shuffle.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "task_label_best_model": task_best / len(table), "permutations": args.permutations, "encoders": {}}
    for path in args.embeddings:
        emb = np.load(path).astype(np.float32)
        per_k = {}
        for k in ks:
            true = oof_score(emb, k, shuffle=False)
            null = [oof_score(emb, k, shuffle=True) for _ in range(args.permutations)]
            per_k[k] = {"true": true, "shuffled_mean": float(np.mean(null)), "shuffled_sd": float(np.std(null)),
                        "shuffled_max": float(np.max(null)),
                        "p_value": (1 + sum(n >= true for n in null)) / (1 + len(null))}
            print(path.name, k, json.dumps(per_k[k]), flush=True)
        report["encoders"][path.name] = per_k
    print(json.dumps(report, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
