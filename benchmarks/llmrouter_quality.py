"""Routing quality and cost on the LLMRouter score matrix (../shared/data/llmrouter), cross-validated.

    python benchmarks/llmrouter_quality.py [--folds 5] [--seed 0] [--embeddings PATH] [--target-smoothing K]

Trains the perceptive router (its defaults: head mode over the bundled MiniLM) on k-1 folds and
measures it on the held-out fold, beside the baselines measured on the same folds in the same run:
the best single model (chosen on the training folds), a kNN router on the same embeddings whose k is
chosen by an inner cross-validation on the training folds only, an ensemble of the two (the mean of
their predicted per-expert failure probabilities), random choice (exact expectation) and the
per-prompt oracle. Per-fold router − kNN differences are reported.

Cost: the cost and size weights are swept over the out-of-fold predictions
(:func:`tryage.evaluation.pareto_sweep`); reported are the smallest mean price per token (as a share
of the best single model's price) and the smallest mean parameter count at which each router still
matches the best single model's score, and APGR-style curves: the share of the best-single → oracle
gap kept (PGR) against the cost share, with their average over cost shares 0..1 (APGR, as in
RouteLLM). Size is swept twice: under the built-in ``size`` constraint (log parameter count) and
under a linear one (``size_linear``, see :func:`cost_report`). ``--embeddings`` reuses a cached ``PerceptivePredictor().encode(table.prompts)`` array
(``.npy``, rows in the order of ``train.jsonl``).

Prints JSON and writes benchmarks/results/llmrouter_quality.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter"
KNN_KS = (20, 30, 50, 75, 100, 150, 200, 300)


def _no_encoder(prompts):
    raise AssertionError("the inner cross-validation passes embeddings; nothing is encoded")


def knn_k_by_inner_cv(embeddings: np.ndarray, table, ks=KNN_KS, *, folds: int = 4, seed: int = 1) -> tuple[int, dict]:
    """The k of a kNN router with the best mean score in an inner cross-validation on ``table`` only."""
    from tryage.evaluation import choice_metrics
    from tryage.predictors import KNNPredictor

    parts = np.array_split(np.random.default_rng(seed).permutation(len(table)), folds)
    scores = {}
    for k in ks:
        values = []
        for i, test_idx in enumerate(parts):
            train_idx = np.concatenate(parts[:i] + parts[i + 1:])
            knn = KNNPredictor(_no_encoder, k=k).fit(table.subset(train_idx), embeddings=embeddings[train_idx])
            choice = np.argmin(knn.predict_from_embeddings(embeddings[test_idx]), axis=1)
            values.append(choice_metrics(choice, table.subset(test_idx)).value)
        scores[k] = float(np.mean(values))
    return max(scores, key=scores.get), scores


def _parameters(expert):
    return expert.parameters


def cost_report(predicted: np.ndarray, table, library, single_value: float, oracle_value: float,
                single_expert: str) -> dict:
    """Cost/size sweeps of one router's out-of-fold predictions: smallest matching point and APGR curve.

    ``size`` sweeps the built-in size constraint (log parameter count); ``size_linear`` the same
    predictions under a user-defined constraint of the parameter count itself, the weight whose sweep
    traces the smallest *mean* size (the Lagrangian of a mean is linear in each choice's size).
    """
    from tryage.constraints import Constraint, ConstraintSet
    from tryage.evaluation import pareto_sweep, smallest_matching

    linear = ConstraintSet().with_constraint(Constraint("size", _parameters, field="parameters", readable=_parameters,
                                                        description="parameter count, min-max scaled"))
    out = {}
    for key, constraint, constraints, unit_of in (("cost", "cost", None, lambda e: e.cost),
                                                  ("size", "size", None, lambda e: e.parameters),
                                                  ("size_linear", "size", linear, lambda e: e.parameters)):
        front = pareto_sweep(predicted, table, library, constraint=constraint, constraints=constraints)
        reference = float(unit_of(library[single_expert]))
        match = smallest_matching(front, single_value)
        gap = oracle_value - single_value
        curve = [{"share": p.mean_constraint / reference, "value": p.value,
                  "pgr": (p.value - single_value) / gap, "weight": p.weight} for p in front]
        grid = np.linspace(0.0, 1.0, 101)
        # Upper envelope: the best PGR reachable at or below each cost share (0 when none: the
        # best single model itself is at share 1 with PGR 0, so the curve ends at >= 0).
        best = [max([c["pgr"] for c in curve if c["share"] <= s + 1e-12] + ([0.0] if s >= 1.0 else [-np.inf]))
                for s in grid]
        finite = [b if np.isfinite(b) else 0.0 for b in best]
        out[key] = {
            "reference": {"expert": single_expert, "value": reference},
            "smallest_mean_matching_best_single": None if match is None else match.mean_constraint,
            "share_of_best_single": None if match is None else match.mean_constraint / reference,
            "at_weight": None if match is None else match.weight,
            "score_there": None if match is None else match.value,
            "apgr": float(np.mean(finite)),
            "curve": curve,
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embeddings", type=Path, help="cached encoder embeddings of train.jsonl (.npy)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--target-smoothing", type=int, default=None,
                        help="PerceptivePredictor target_smoothing (default: its auto rule, 20 here)")
    args = parser.parse_args(argv)
    if not (args.data / "train.jsonl").exists():
        sys.exit(f"llmrouter data not found in {args.data}; put ../shared beside the checkout or pass --data")

    import torch

    from tryage import ExpertLibrary, QTable
    from tryage.evaluation import choice_metrics, evaluate_predictions
    from tryage.predictors import KNNPredictor, PerceptivePredictor

    torch.set_num_threads(args.threads)
    table = QTable.from_file(args.data / "train.jsonl")
    library = ExpertLibrary.from_json(args.data / "models.json", names=table.experts)
    started = time.perf_counter()
    encoder = PerceptivePredictor(progress=True)
    if args.embeddings is not None:
        embeddings = np.load(args.embeddings)
        encoder.encode(["warm-up"])  # loads the encoder the routers share
        if embeddings.shape != (len(table), encoder.text_encoder_.dim):
            sys.exit(f"--embeddings {args.embeddings} has shape {embeddings.shape}; expected "
                     f"{(len(table), encoder.text_encoder_.dim)} (PerceptivePredictor().encode of train.jsonl)")
    else:
        embeddings = encoder.encode(table.prompts)
    encode_s = time.perf_counter() - started

    order = np.random.default_rng(args.seed).permutation(len(table))
    parts = np.array_split(order, args.folds)
    oof = {name: np.zeros_like(table.losses) for name in ("router", "knn", "ensemble")}
    oof_single = np.zeros(len(table), dtype=int)
    oof_task_best = np.zeros(len(table), dtype=int)
    fold_reports = []
    for i, test_idx in enumerate(parts):
        train_idx = np.sort(np.concatenate(parts[:i] + parts[i + 1:]))
        test_idx = np.sort(test_idx)
        train, test = table.subset(train_idx), table.subset(test_idx)
        router = PerceptivePredictor(seed=args.seed + i, progress=False, target_smoothing=args.target_smoothing)
        router.text_encoder_, router.encoder_spec_ = encoder.text_encoder_, encoder.encoder_spec_
        router.fit(train, library, embeddings=embeddings[train_idx])
        oof["router"][test_idx] = router.predict_from_embeddings(embeddings[test_idx])
        k, inner = knn_k_by_inner_cv(embeddings[train_idx], train)
        knn = KNNPredictor(encoder.encode, k=k).fit(train, embeddings=embeddings[train_idx])
        oof["knn"][test_idx] = knn.predict_from_embeddings(embeddings[test_idx])
        oof["ensemble"][test_idx] = (oof["router"][test_idx] + oof["knn"][test_idx]) / 2
        oof_single[test_idx] = int(np.argmin(train.losses.mean(0)))
        # Reference, not a router: the best model of each task on the training folds, given the task label.
        train_tasks, test_tasks = np.array(train.column("task")), np.array(test.column("task"))
        for task in set(test_tasks):
            oof_task_best[test_idx[test_tasks == task]] = int(np.argmin(train.losses[train_tasks == task].mean(0)))
        values = {name: choice_metrics(np.argmin(pred[test_idx], axis=1), test).value for name, pred in oof.items()}
        fold_reports.append({"fold": i, **values, "router_minus_knn": values["router"] - values["knn"],
                             "ensemble_minus_knn": values["ensemble"] - values["knn"],
                             "best_single": choice_metrics(oof_single[test_idx], test).value,
                             "oracle": float(test.to_user_units(test.losses.min(1).mean())),
                             "knn_k": k, "knn_inner_cv": inner, "router_epochs": len(router.history_)})
        print(json.dumps({k_: v for k_, v in fold_reports[-1].items() if k_ != "knn_inner_cv"}), file=sys.stderr)

    # Out-of-fold: every prompt is predicted by routers that never saw it.
    overall = evaluate_predictions(oof["router"], table, knn_predicted=oof["knn"], group_by="task").to_dict()
    single_value = float(np.mean(table.scores[np.arange(len(table)), oof_single]))
    oracle_value = overall["oracle"]
    means = {name: choice_metrics(np.argmin(pred, axis=1), table).value for name, pred in oof.items()}
    diffs = {name: [f[f"{name}_minus_knn"] for f in fold_reports] for name in ("router", "ensemble")}
    single_expert = table.experts[int(np.argmin(table.losses.mean(0)))]
    result = {
        "command": "python benchmarks/llmrouter_quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": str(args.data), "n": len(table), "folds": args.folds, "seed": args.seed,
        "router_config": {"mode": "head", "encoder": "bundled all-MiniLM-L6-v2",
                          "hidden_dim": PerceptivePredictor().hidden_dim, "layers": PerceptivePredictor().layers,
                          "objective": "auto (bce for 0/1 scores)",
                          "target_smoothing": args.target_smoothing if args.target_smoothing is not None
                          else "auto: min(20, n_train // 50) for 0/1 scores"},
        "mean_score": {**means, "best_single": single_value, "random": overall["random"], "oracle": oracle_value,
                       "task_label_reference": float(np.mean(table.scores[np.arange(len(table)), oof_task_best]))},
        "minus_knn_per_fold": diffs,
        "minus_knn_mean": {name: float(np.mean(v)) for name, v in diffs.items()},
        "knn_k_per_fold": [f["knn_k"] for f in fold_reports],
        "select_best_accuracy": {name: choice_metrics(np.argmin(pred, axis=1), table).select_best_accuracy
                                 for name, pred in oof.items()},
        "gap_closed": {name: (v - single_value) / (oracle_value - single_value) for name, v in means.items()},
        "per_task": overall["per_group"],
        "folds_detail": fold_reports,
        "cost_aware": {name: cost_report(pred, table, library, single_value, oracle_value, single_expert)
                       for name, pred in oof.items()},
        "seconds": {"encode_or_load": encode_s, "total": time.perf_counter() - started},
    }
    summary = {k: v for k, v in result.items() if k not in ("per_task", "folds_detail", "cost_aware")}
    summary["cost_aware"] = {name: {c: {k: v for k, v in r.items() if k != "curve"} for c, r in rep.items()}
                             for name, rep in result["cost_aware"].items()}
    print(json.dumps(summary, indent=2))
    out = Path(__file__).resolve().parent / "results" / "llmrouter_quality.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
