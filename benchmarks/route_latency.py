"""Routing latency and throughput beside the bare encoder forward pass (the floor), in one run.

    python benchmarks/route_latency.py [--router DIR] [--repeats 200] [--threads 2] [--int8] [--onnx]

Prints JSON: p50/p95 latency at batch 1 and throughput at batch 32 for short prompts, for
``TryageRouter.route`` / ``route_batch`` (flags parsed, head applied, objective solved, decision
built) and for the encoder alone (``TextEncoder.embed``: tokenise + forward + mean-pool, no gradients).
``--onnx`` adds the same router loaded with ``runtime="onnx"`` (the encoder in ONNX Runtime) and the
share of LLMRouter prompts on which it chooses as PyTorch does; ``--int8`` adds dynamic int8 quantisation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

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


def quantised(router):  # noqa: ANN001, ANN201
    """A copy of ``router`` whose encoder's Linear layers run in int8 (dynamic quantisation)."""
    import copy

    import torch

    from tryage import TryageRouter

    predictor = copy.copy(router.predictor)
    encoder = copy.copy(predictor.text_encoder_)
    encoder.model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(encoder.model), {torch.nn.Linear},
                                                           dtype=torch.qint8)
    predictor.text_encoder_ = encoder
    return TryageRouter(predictor, router.library, constraints=router.constraints, weights=router.weights)


def variant_quality(n: int, variant) -> dict | None:  # noqa: ANN001
    """The open-llms router with its own encoder against ``variant(router)`` on ``n`` LLMRouter prompts.

    The router was trained on these prompts, so the mean scores are in-sample: read them side by side
    (the change the variant makes), not as the router's quality.
    """
    from tryage import QTable, TryageRouter

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter" / "train.jsonl"
    if not data.exists():
        return None
    table = QTable.from_file(data)
    rows = np.sort(np.random.default_rng(0).choice(len(table), size=min(n, len(table)), replace=False))
    prompts = [table.prompts[i] for i in rows]
    base = TryageRouter.default("open-llms")
    other = variant(base)
    e0, e1 = base.predictor.encode(prompts), other.predictor.encode(prompts)
    cos = np.sum(e0 * e1, 1) / (np.linalg.norm(e0, axis=1) * np.linalg.norm(e1, axis=1))
    columns = [table.experts.index(e) for e in base.experts]
    scores = table.scores[rows][:, columns]
    c0 = np.argmin(base.predictor.predict_from_embeddings(e0), 1)
    c1 = np.argmin(other.predictor.predict_from_embeddings(e1), 1)
    return {"prompts": len(rows), "embedding_cosine_mean": float(cos.mean()), "embedding_cosine_min": float(cos.min()),
            "embedding_max_abs_difference": float(np.abs(e0 - e1).max()), "same_expert_share": float(np.mean(c0 == c1)),
            "mean_score_in_sample": {"fp32": float(scores[np.arange(len(rows)), c0].mean()),
                                     "variant": float(scores[np.arange(len(rows)), c1].mean())}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", help="saved router folder or embedded router name (default: paper-domains)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--int8", action="store_true",
                        help="also measure the encoder with int8 dynamic quantisation of its Linear layers, "
                             "and its routing agreement with fp32 on LLMRouter prompts (open-llms router)")
    parser.add_argument("--onnx", action="store_true",
                        help="also measure the encoder exported to ONNX and run by ONNX Runtime (needs onnxruntime, "
                             "onnx), and its routing agreement with PyTorch on LLMRouter prompts")
    parser.add_argument("--quality-prompts", type=int, default=500)
    args = parser.parse_args(argv)

    import torch

    from tryage import TryageRouter

    torch.set_num_threads(args.threads)
    from tryage.defaults import EMBEDDED_ROUTERS

    def load(**kwargs):  # noqa: ANN003, ANN202
        if args.router is None or args.router in EMBEDDED_ROUTERS:
            return TryageRouter.default(args.router, **kwargs)
        return TryageRouter.from_pretrained(args.router, **kwargs)

    def pair(suffix: str, r) -> dict:  # noqa: ANN001
        """The bare encoder pass and the whole route of router ``r``, as two timed variants."""
        def bare(batch: list[str]) -> None:
            r.predictor.text_encoder_.embed(batch)

        def routed(batch: list[str]) -> None:
            if len(batch) == 1:
                r.route(batch[0])
            else:
                r.route_batch(batch)

        return {"bare" + suffix: bare, "routed" + suffix: routed}

    router = load()
    variants = pair("", router)
    if args.int8:
        variants |= pair("_int8", quantised(router))
    if args.onnx:
        variants |= pair("_onnx", load(runtime="onnx"))
    for fn in variants.values():  # warm-up
        for p in PROMPTS:
            fn([p])
    single: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(args.repeats):  # interleaved so both see the same machine load
        prompt = [PROMPTS[i % len(PROMPTS)]]
        for name, fn in variants.items():
            start = time.perf_counter()
            fn(prompt)
            single[name].append(time.perf_counter() - start)
    batch = [PROMPTS[i % len(PROMPTS)] + f" ({i})" for i in range(32)]
    throughput: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(max(5, args.repeats // 20)):
        for name, fn in variants.items():
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
    if args.int8:
        result["int8_over_fp32_bare_p50"] = result["batch1_ms"]["bare_int8"]["p50"] / result["batch1_ms"]["bare"]["p50"]
        result["int8_routing_over_int8_bare_p50"] = (result["batch1_ms"]["routed_int8"]["p50"]
                                                     / result["batch1_ms"]["bare_int8"]["p50"])
        result["int8_quality"] = variant_quality(args.quality_prompts, quantised)
    if args.onnx:
        result["onnx_over_torch_bare_p50"] = result["batch1_ms"]["bare_onnx"]["p50"] / result["batch1_ms"]["bare"]["p50"]
        result["onnx_routing_over_onnx_bare_p50"] = (result["batch1_ms"]["routed_onnx"]["p50"]
                                                     / result["batch1_ms"]["bare_onnx"]["p50"])
        result["onnx_over_torch_batch32"] = (result["batch32_prompts_per_s"]["bare"]
                                             / result["batch32_prompts_per_s"]["bare_onnx"])
        result["onnx_quality"] = variant_quality(args.quality_prompts, lambda _: TryageRouter.default("open-llms", runtime="onnx"))
    print(json.dumps(result, indent=2))
    name = "route_latency" + ("_int8" if args.int8 else "") + ("_onnx" if args.onnx else "") + ".json"
    out = Path(__file__).resolve().parent / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
