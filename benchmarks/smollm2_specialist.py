"""A specialist expert for the first-hour walk: a LoRA adapter that teaches SmolLM2-135M-Instruct to add.

A newcomer's local server often serves a base model and fine-tuned adapters of it (vLLM's
``--lora-modules name=path``; ``benchmarks/smollm2_server.py --lora name=path`` here). This trains one such
adapter with :class:`tryage.research.lora.LoraExperts` on chats ``What is a plus b?`` -> ``a + b``, for
pairs drawn from 1-49 that exclude every pair ``benchmarks/first_hour.py`` asks (either order), and saves
it as an ordinary ``peft`` folder. The walk then has a generalist and a specialist, the paper's premise.

    python benchmarks/smollm2_specialist.py --out /tmp/tryage-first-hour/math-lora [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def training_chats(tokenizer, seed: int, count: int) -> list:
    from first_hour import SUMS, SUMS_MORE
    from tryage.measure import Passage

    held = {tuple(sorted(p)) for p in SUMS + SUMS_MORE}
    rng = np.random.default_rng(seed)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < count:
        a, b = (int(v) for v in rng.integers(1, 50, size=2))
        if tuple(sorted((a, b))) not in held:
            pairs.append((a, b))
    chats = []
    for i, (a, b) in enumerate(pairs):
        text = tokenizer.apply_chat_template([{"role": "user", "content": f"What is {a} plus {b}?"},
                                              {"role": "assistant", "content": str(a + b)}], tokenize=False)
        chats.append(Passage(id=f"train{i}", text=text))
    return chats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the peft adapter")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("steps", "examples", "batch_size", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    import torch
    from tryage.research.lora import SMOLLM2, LoraExperts

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    experts = LoraExperts(SMOLLM2, ["math"], batch_size=args.batch_size, max_length=64, seed=args.seed).load()
    chats = training_chats(experts.tokenizer_, args.seed, args.examples)
    from tqdm.auto import tqdm

    with tqdm(total=args.steps, desc="LoRA steps", mininterval=10) as bar:
        history = experts.fit("math", chats, args.steps, progress=bar)
    args.out.mkdir(parents=True, exist_ok=True)
    experts.save_adapter("math", args.out)
    print(json.dumps({"adapter": str(args.out), "steps": args.steps, "examples": len(chats),
                      "loss_first": round(float(np.mean(history[:10])), 4),
                      "loss_last": round(float(np.mean(history[-10:])), 4),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
