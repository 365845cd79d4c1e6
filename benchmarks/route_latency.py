"""Routing latency and throughput beside the bare encoder forward pass (the floor), in one run.

    python benchmarks/route_latency.py [--router DIR] [--repeats 200] [--threads 2]

Prints JSON: p50/p95 latency at batch 1 and throughput at batch 32 for short prompts, for
``TryageRouter.route`` / ``route_batch`` (flags parsed, head applied, objective solved, decision
built) and for the encoder alone (tokenise + forward + mean-pool under ``torch.inference_mode``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

PROMPTS = [
    "What is the capital of California?", "Write a Python function that reverses a list.",
    "Summarise the plaintiff's claim in one sentence.", "Which protein binds oxygen in red blood cells?",
    "Prove that there are infinitely many primes.", "Who wrote Pride and Prejudice?",
    "Explain what a hash table is.", "Translate 'good morning' into French.",
    "What does the GPL say about linking?", "How many moons does Mars have?",
    "Define recursion in one line.", "What is 17 times 23?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", help="saved router folder (default: the embedded default)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from tryage import TryageRouter

    torch.set_num_threads(args.threads)
    router = TryageRouter.from_pretrained(args.router) if args.router else TryageRouter.default()
    encoder = router.predictor.text_encoder_

    def bare(batch: list[str]) -> None:
        with torch.inference_mode():
            encoder.forward(batch)

    def routed(batch: list[str]) -> None:
        if len(batch) == 1:
            router.route(batch[0])
        else:
            router.route_batch(batch)

    for fn in (bare, routed):  # warm-up
        for p in PROMPTS:
            fn([p])
    single: dict[str, list[float]] = {"bare": [], "routed": []}
    for i in range(args.repeats):  # interleaved so both see the same machine load
        prompt = [PROMPTS[i % len(PROMPTS)]]
        for name, fn in (("bare", bare), ("routed", routed)):
            start = time.perf_counter()
            fn(prompt)
            single[name].append(time.perf_counter() - start)
    batch = [PROMPTS[i % len(PROMPTS)] + f" ({i})" for i in range(32)]
    throughput: dict[str, list[float]] = {"bare": [], "routed": []}
    for _ in range(max(5, args.repeats // 20)):
        for name, fn in (("bare", bare), ("routed", routed)):
            start = time.perf_counter()
            fn(batch)
            throughput[name].append(len(batch) / (time.perf_counter() - start))
    result = {
        "command": "python benchmarks/route_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "router": str(args.router or "embedded default"), "experts": len(router.experts), "threads": args.threads,
        "batch1_ms": {name: {"p50": 1e3 * statistics.median(v), "p95": 1e3 * percentile(v, 0.95)}
                      for name, v in single.items()},
        "batch32_prompts_per_s": {name: statistics.median(v) for name, v in throughput.items()},
    }
    result["routing_over_bare_p50"] = result["batch1_ms"]["routed"]["p50"] / result["batch1_ms"]["bare"]["p50"]
    result["routing_over_bare_batch32"] = (result["batch32_prompts_per_s"]["bare"]
                                           / result["batch32_prompts_per_s"]["routed"])
    print(json.dumps(result, indent=2))
    out = Path(__file__).resolve().parent / "results" / "route_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
