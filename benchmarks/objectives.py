"""The quality floor and calibrated probabilities on the LLMRouter score matrix (../shared/data/llmrouter).

    python benchmarks/objectives.py [--folds 5] [--seed 0] [--embeddings /work/cache/llmrouter_minilm.npy]

Cross-validated as benchmarks/llmrouter_quality.py: the perceptive router (its defaults, head mode over the
bundled MiniLM) is trained on k-1 folds and predicts the held-out fold, so every prompt is predicted by a
router that never saw it. On those out-of-fold predictions, in one run:

* **calibration**: expected calibration error (10 equal-width bins, over every prompt × expert, and per
  expert) of the predicted score ``1 − loss`` before calibration and of the calibrated P(correct) after
  (Platt per expert, fitted by ``fit`` on its validation rows; and isotonic on the same rows), with the
  reliability tables;
* **the quality floor** (``[Flag: min quality F; cheapest]``: the cheapest expert whose P(correct) ≥ F,
  else the best predicted) swept over F, as price share (mean price per token of the chosen experts over
  the best single expert's) against mean score;
* beside it, ``[Flag: cheapest]`` with weights: the cost weight swept (:func:`tryage.evaluation.pareto_sweep`);
* and RouteLLM's threshold rule on the same predictions: two models, the best single (strong) and the
  cheapest (weak); a prompt goes to the weak one when its P(correct) ≥ the threshold.

For each curve: the best mean score reachable at price shares 0.25 / 0.5 / 0.75 (upper envelope) and the
smallest share that still matches the best single model. Prints JSON and writes
benchmarks/results/objectives.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter"
SHARES = (0.25, 0.5, 0.75)


def envelope(curve: list[dict], single_value: float) -> dict:
    """Best score at each price share in :data:`SHARES`, and the smallest share matching the best single model."""
    out = {f"best_score_at_share_{s}": max((c["score"] for c in curve if c["share"] <= s + 1e-12), default=None)
           for s in SHARES}
    matching = [c["share"] for c in curve if c["score"] >= single_value - 1e-12]
    out["smallest_share_matching_best_single"] = min(matching) if matching else None
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embeddings", type=Path, help="cached encoder embeddings of train.jsonl (.npy)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "objectives.json")
    args = parser.parse_args(argv)
    if not (args.data / "train.jsonl").exists():
        sys.exit(f"llmrouter data not found in {args.data}; put ../shared beside the checkout or pass --data")

    import torch

    from tryage import ExpertLibrary, QTable
    from tryage.constraints import ConstraintSet
    from tryage.evaluation import choice_metrics, pareto_sweep
    from tryage.flags import STRONG_WEIGHT
    from tryage.objective import decide
    from tryage.predictors import PerceptivePredictor
    from tryage.predictors.calibration import ScoreCalibration, expected_calibration_error, reliability

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    table = QTable.from_file(args.data / "train.jsonl")
    library = ExpertLibrary.from_json(args.data / "models.json", names=table.experts)
    encoder = PerceptivePredictor(progress=False)
    encoder.encode(["warm-up"])
    embeddings = np.load(args.embeddings) if args.embeddings else encoder.encode(table.prompts)
    if embeddings.shape != (len(table), encoder.text_encoder_.dim):
        sys.exit(f"embeddings have shape {embeddings.shape}; expected {(len(table), encoder.text_encoder_.dim)}")

    parts = np.array_split(np.random.default_rng(args.seed).permutation(len(table)), args.folds)
    predicted = np.zeros_like(table.losses)
    quality = np.zeros_like(table.losses)
    isotonic = np.zeros_like(table.losses)
    calibration_rows = []
    for i, test_idx in enumerate(parts):
        train_idx = np.sort(np.concatenate(parts[:i] + parts[i + 1:]))
        test_idx = np.sort(test_idx)
        router = PerceptivePredictor(seed=args.seed + i, progress=False)
        router.text_encoder_, router.encoder_spec_ = encoder.text_encoder_, encoder.encoder_spec_
        router.fit(table.subset(train_idx), library, embeddings=embeddings[train_idx])
        predicted[test_idx] = router.predict_from_embeddings(embeddings[test_idx])
        quality[test_idx] = router.calibration_.probabilities(router.experts_, predicted[test_idx])
        # The same held-out rows fit() calibrated on (its validation split, drawn as fit draws it), fitted isotonic.
        val = train_idx[np.random.default_rng(args.seed + i).permutation(len(train_idx))[
            :int(round(len(train_idx) * router.validation_fraction))]]
        iso = ScoreCalibration.fit(router.experts_, router.predict_from_embeddings(embeddings[val]), table.losses[val],
                                   method="isotonic")
        isotonic[test_idx] = iso.probabilities(router.experts_, predicted[test_idx])
        calibration_rows.append(dict(router.calibration_.rows))
        print(json.dumps({"fold": i, "calibration_rows": calibration_rows[-1]}), file=sys.stderr)

    observed = table.scores
    raw = np.clip(1.0 - predicted, 0.0, 1.0)
    calibration = {
        "method": "platt (the default of PerceptivePredictor.fit)",
        "ece_before": expected_calibration_error(raw, observed),
        "ece_after": expected_calibration_error(quality, observed),
        "ece_after_isotonic": expected_calibration_error(isotonic, observed),
        "ece_per_expert": {e: {"before": expected_calibration_error(raw[:, j], observed[:, j]),
                               "after": expected_calibration_error(quality[:, j], observed[:, j]),
                               "after_isotonic": expected_calibration_error(isotonic[:, j], observed[:, j])}
                           for j, e in enumerate(table.experts)},
        "reliability_before": reliability(raw, observed),
        "reliability_after": reliability(quality, observed),
        "held_out_rows_per_fold": calibration_rows,
    }

    prices = np.array([e.cost for e in library], dtype=np.float64)
    single = int(np.argmin(table.losses.mean(0)))
    single_value = float(observed[:, single].mean())
    oracle_value = float(observed.max(1).mean())

    def point(choice: np.ndarray, **extra: float) -> dict:
        return {"share": float(prices[choice].mean() / prices[single]), "score": choice_metrics(choice, table).value,
                **extra}

    constraints = ConstraintSet()
    floor_curve = []
    for floor in np.round(np.linspace(0.0, 1.0, 41), 3):
        batch = decide(predicted, library, constraints, {"cost": STRONG_WEIGHT}, quality=quality,
                       min_quality=float(floor))
        floor_curve.append(point(batch.choice, min_quality=float(floor),
                                 floor_met_share=float(batch.floor_met.mean())))
    uncalibrated_curve = []
    for floor in np.round(np.linspace(0.0, 1.0, 41), 3):
        batch = decide(predicted, library, constraints, {"cost": STRONG_WEIGHT}, quality=raw, min_quality=float(floor))
        uncalibrated_curve.append(point(batch.choice, min_quality=float(floor)))
    weights_curve = [{"share": p.mean_constraint / prices[single], "score": p.value, "cost_weight": p.weight}
                     for p in pareto_sweep(predicted, table, library, constraint="cost")]
    weak = int(np.argmin(prices))  # the cheapest model; ties: the first
    routellm_curve = []
    for threshold in np.round(np.linspace(0.0, 1.0, 41), 3):
        choice = np.where(quality[:, weak] >= threshold, weak, single)
        routellm_curve.append(point(choice, threshold=float(threshold)))
    curves = {"quality_floor": floor_curve, "quality_floor_uncalibrated": uncalibrated_curve,
              "cheapest_with_weights": weights_curve, "routellm_threshold": routellm_curve}
    floor_08 = next(c for c in floor_curve if abs(c["min_quality"] - 0.8) < 1e-9)
    cheapest_only = point(decide(predicted, library, constraints, {"cost": STRONG_WEIGHT}).choice)
    result = {
        "command": "python benchmarks/objectives.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": str(args.data), "n": len(table), "folds": args.folds, "seed": args.seed,
        "experts": {"best_single": table.experts[single], "cheapest": table.experts[weak],
                    "price_of_best_single": float(prices[single])},
        "calibration": calibration,
        "reference": {"best_single": single_value, "oracle": oracle_value,
                      "router_no_constraint": choice_metrics(np.argmin(predicted, axis=1), table).value,
                      "flag_cheapest": cheapest_only, "flag_cheapest_that_answers_0.8": floor_08},
        "summary": {name: envelope(curve, single_value) for name, curve in curves.items()},
        "curves": curves,
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    shown = {k: v for k, v in result.items() if k != "curves"}
    shown["calibration"] = {k: v for k, v in calibration.items() if not k.startswith("reliability")}
    print(json.dumps(shown, indent=1))
    return result


if __name__ == "__main__":
    main()
