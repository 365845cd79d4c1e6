"""Throughput of loss measurement and bulk routing on local Ray workers against the local backend, one run.

    python benchmarks/scale.py [--passages 24] [--prompts 1000] [--out benchmarks/results/scale.json]

* measure: one small causal LM (GPT-2 shape, 4 layers x 128 wide, the bundled MiniLM's 30k WordPiece
  vocabulary, random weights, built offline) on passages of ../shared/data/domains, batch 16, 128
  tokens: ``measure_losses`` in this process (1 torch thread, and 2), then ``backend="ray"`` with 1
  and 2 actors (1 CPU each) on a local Ray instance of 2 CPUs. Wall time includes loading the model
  (once per actor) and, for Ray, starting the actors, not ``ray.init``. Rows are checked equal.
* route: the embedded default router on prompts of ../shared/data/llmrouter/train.jsonl:
  ``route_batch`` in this process against ``route_dataset`` with 1 and 2 actors.

Prints JSON and writes it to ``--out``. Numbers depend on the machine and its load (recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def build_expert(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tryage.encoders import bundled_encoder_path

    tokenizer = AutoTokenizer.from_pretrained(bundled_encoder_path(), local_files_only=True)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=128, n_layer=4, n_head=4, n_positions=128,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def timed(fn):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=24, help="test passages per domain (8 domains)")
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scale.json"))
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import ray
    import torch

    from tryage import TryageRouter, distributed
    from tryage.measure import LossRecorder, load_passages, measure_losses

    passages = load_passages(SHARED / "domains" / "passages.jsonl", splits=["test"], per_domain=args.passages,
                              seed=0)
    prompts = []
    with (SHARED / "llmrouter" / "train.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            prompts.append(json.loads(line)["prompt"])
            if len(prompts) == args.prompts:
                break
    result: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": os.getloadavg()[0],
                                "torch": torch.__version__, "ray": ray.__version__},
                    "measure": {"passages": len(passages), "batch_size": 16, "max_length": 128}, "route": {}}
    settings = {"name": "expert", "dtype": "float32", "batch_size": 16, "max_length": 128, "progress": False}
    with tempfile.TemporaryDirectory() as tmp:
        expert = build_expert(Path(tmp) / "expert")
        result["measure"]["expert_parameters"] = sum(
            p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(expert).parameters())
        runs = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = Path(tmp) / f"local{threads}.jsonl"
            _, seconds = timed(lambda: measure_losses(expert, passages, out, **settings))
            runs[f"local_{threads}_thread"] = seconds
        torch.set_num_threads(1)
        reference = [r["loss"] for r in LossRecorder(Path(tmp) / "local1.jsonl").rows()]
        os.environ.setdefault("RAY_worker_niceness", "0")  # compete with the local baseline on equal terms
        _, init_seconds = timed(lambda: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False))
        ray.data.DataContext.get_current().enable_progress_bars = False
        result["ray_init_seconds"] = init_seconds
        worst = 0.0
        for workers in (1, 2):
            out = Path(tmp) / f"ray{workers}.jsonl"
            _, seconds = timed(lambda: measure_losses(expert, passages, out, backend="ray", workers=workers,
                                                      **settings))
            runs[f"ray_{workers}_worker"] = seconds
            rows = LossRecorder(out).rows()
            worst = max(worst, float(np.max(np.abs(np.array([r["loss"] for r in rows]) - reference))))
        result["measure"]["seconds"] = runs
        result["measure"]["passages_per_second"] = {k: len(passages) / v for k, v in runs.items()}
        result["measure"]["speedup_vs_local_1_thread"] = {k: runs["local_1_thread"] / v for k, v in runs.items()}
        result["measure"]["max_abs_loss_difference_vs_local"] = worst

        router = TryageRouter.default()
        router.route_batch(prompts[:32])  # warm-up
        routes = {}
        local, routes["local_route_batch"] = timed(lambda: router.route_batch(prompts))
        for workers in (1, 2):
            ds = ray.data.from_items([{"prompt": p} for p in prompts])
            got, routes[f"ray_route_dataset_{workers}_worker"] = timed(lambda: list(distributed.iter_decisions(
                router.route_dataset(ds, workers=workers, batch_size=128))))
            agree = float(np.mean([g["expert"] == d.expert for g, d in zip(got, local)]))
            result["route"][f"agreement_{workers}_worker"] = agree
        result["route"]["prompts"] = len(prompts)
        result["route"]["seconds"] = routes
        result["route"]["prompts_per_second"] = {k: len(prompts) / v for k, v in routes.items()}
        result["route"]["speedup_vs_local"] = {k: routes["local_route_batch"] / v for k, v in routes.items()}
    ray.shutdown()
    result["machine"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    json.dump(result, sys.stdout, indent=2)
    print()
    return result


if __name__ == "__main__":
    main()
