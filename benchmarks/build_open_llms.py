"""Build the embedded ``open-llms`` router: a head over the bundled MiniLM trained on all of LLMRouter.

    python benchmarks/build_open_llms.py [--embeddings PATH] [--threads 1]

Trains :class:`tryage.predictors.PerceptivePredictor` (the configuration measured best in
benchmarks/llmrouter_quality.py) on every prompt of ../shared/data/llmrouter/train.jsonl, with the
nine scored models as the library (sizes and prices from models.json), and writes it to
``shared/tryage/default/open-llms/``: config.json, model.safetensors (the head) and experts.json.
No prompt text is written. ``results.json`` beside them records the command, the training settings
and the cross-validated figures of the last benchmark run, if there is one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "llmrouter"
OUT = REPO / "shared" / "tryage" / "default" / "open-llms"
# The configuration measured best in benchmarks/llmrouter_quality.py --target-smoothing 50: training
# targets averaged over each prompt's 50 nearest training prompts (the auto rule caps it at 20).
CONFIG = {"hidden_dim": 256, "layers": "all", "objective": "bce", "target_smoothing": 50, "seed": 0}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--embeddings", type=Path, help="cached PerceptivePredictor().encode of train.jsonl (.npy)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--refresh-results", action="store_true",
                        help="only rewrite results.json from the last benchmark run (no training)")
    args = parser.parse_args(argv)
    if args.refresh_results:
        config = json.loads((args.out / "config.json").read_text())
        previous = args.out / "results.json"
        command = json.loads(previous.read_text())["command"] if previous.exists() else None
        return write_results(args.out, config["training"]["epochs_run"], argv, command=command)
    if not (args.data / "train.jsonl").exists():
        sys.exit(f"llmrouter data not found in {args.data}; pass --data")

    import torch

    from tryage import ExpertLibrary, QTable
    from tryage.predictors import PerceptivePredictor

    torch.set_num_threads(args.threads)
    table = QTable.from_file(args.data / "train.jsonl")
    library = ExpertLibrary.from_json(args.data / "models.json", names=table.experts)
    router = PerceptivePredictor(progress=True, **CONFIG)
    embeddings = None
    if args.embeddings is not None:
        embeddings = np.load(args.embeddings)
        router.encode(["warm-up"])
        if embeddings.shape != (len(table), router.text_encoder_.dim):
            sys.exit(f"--embeddings has shape {embeddings.shape}, expected {(len(table), router.text_encoder_.dim)}")
    router.fit(table, library, embeddings=embeddings)
    out = router.save_pretrained(args.out)
    return write_results(out, len(router.history_), argv)


def write_results(out: Path, epochs_run: int, argv: list[str] | None, *, command: str | None = None) -> Path:
    """``results.json``: how the router was built and the last cross-validated benchmark's figures."""
    bench = REPO / "benchmarks" / "results" / "llmrouter_quality.json"
    measured = json.loads(bench.read_text()) if bench.exists() else {}
    results = {
        "command": command or "python benchmarks/build_open_llms.py " + " ".join(argv if argv is not None
                                                                              else sys.argv[1:]),
        "trained_on": "all 4,799 prompts of LLMRouter train.jsonl (no prompt text stored)",
        "config": CONFIG, "epochs_run": epochs_run,
        "cross_validated": {k: measured[k] for k in ("command", "router_config", "mean_score", "minus_knn_mean")
                            if k in measured},
    }
    if "cost_aware" in measured:
        results["cross_validated"]["router_matches_best_single_at"] = {
            "price_share": measured["cost_aware"]["router"]["cost"]["share_of_best_single"],
            "mean_parameters": measured["cost_aware"]["router"]["size"]["smallest_mean_matching_best_single"]}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return out


if __name__ == "__main__":
    main()
