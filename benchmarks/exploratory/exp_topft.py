"""Fine-tuning MiniLM's top layers over a cached trunk, one fold: does it lift the shipped router?

    TRYAGE_EMB=minilm_all_layers.npy [FOLD=0] [EPOCHS=3] [LR=3e-5] [TOP=1] python benchmarks/exploratory/exp_topft.py

The router is first trained as open-llms ships it (head only, targets smoothed over 50 neighbours) on
the fold's training prompts; then the top ``TOP`` of MiniLM's six layers (6: the whole transformer
over cached token embeddings) and that head are trained together on the same smoothed targets (BCE),
the layers below cached once (about 2 minutes), 10% of the training prompts held for validation.
Prints the fold's test score after each epoch (about 70 s each on one CPU core for TOP=1) beside the
head-only score.
"""
import os, sys, time, copy
os.environ["HF_HUB_OFFLINE"] = "1"
import numpy as np, torch
torch.set_num_threads(int(os.environ.get("THREADS", "1"))); torch.manual_seed(0)
from tryage import QTable
from tryage.predictors import PerceptivePredictor
from tryage.predictors._base import neighbour_mean
from pathlib import Path
T = QTable.from_file(Path(__file__).resolve().parents[3] / "shared" / "data" / "llmrouter" / "train.jsonl"); S, L, n = T.scores, T.losses, len(T)
E = np.load(os.environ["TRYAGE_EMB"]).astype(np.float32)
parts = np.array_split(np.random.default_rng(0).permutation(n), 5)
FOLD = int(os.environ.get("FOLD", "0"))
te = np.sort(parts[FOLD]); tr_all = np.sort(np.concatenate(parts[:FOLD] + parts[FOLD + 1:]))
rng = np.random.default_rng(1); perm = rng.permutation(tr_all); nval = len(tr_all) // 10
val, tr = np.sort(perm[:nval]), np.sort(perm[nval:])
# 1. the shipped recipe, head only, on this fold
base = PerceptivePredictor(seed=FOLD, progress=False, target_smoothing=50).fit(T.subset(tr_all), embeddings=E[tr_all])
p0 = base.predict_from_embeddings(E[te]); print("head only (shipped recipe)", round(float(S[te, p0.argmin(1)].mean()), 4), flush=True)
enc = base.text_encoder_; model = enc.model; tok = enc.tokenizer
TOP = int(os.environ.get("TOP", "1")); FIRST = 6 - TOP   # layers FIRST..5 are trained
# 2. cache the trunk: input of layer FIRST (tokens) and the pooled, normalised layers 1..FIRST
order = np.argsort([len(p) for p in T.prompts]); batches = {}
t = time.time()
with torch.inference_mode():
    for s in range(0, n, 32):
        idx = order[s:s + 32]
        b = tok([T.prompts[i] for i in idx], padding=True, truncation=True, max_length=256, return_tensors="pt")
        h = model(**b, output_hidden_states=True).hidden_states
        m = b["attention_mask"].unsqueeze(-1).float()
        fixed = torch.cat([torch.nn.functional.normalize((h[l] * m).sum(1) / m.sum(1), dim=-1)
                           for l in range(1, FIRST + 1)] or [torch.zeros(len(idx), 0)], -1)
        for j, i in enumerate(idx):
            k = int(b["attention_mask"][j].sum())
            batches[int(i)] = (h[FIRST][j, :k].clone(), fixed[j].clone())
print("trunk cached", round(time.time() - t), "s", flush=True)
top = torch.nn.ModuleList([copy.deepcopy(model.encoder.layer[l]) for l in range(FIRST, 6)]).train()
head = copy.deepcopy(base.head_).train()
y = torch.from_numpy(L.astype(np.float32))
sm = neighbour_mean(E[tr_all], L[tr_all], 50, queries=E[tr_all]); Y = y.clone(); Y[tr_all] = torch.from_numpy(sm.astype(np.float32))
def forward(ids):
    ks = [batches[i][0].shape[0] for i in ids]; K = max(ks)
    hs = torch.zeros(len(ids), K, 384); mask = torch.zeros(len(ids), K)
    for j, i in enumerate(ids):
        hs[j, :ks[j]] = batches[i][0]; mask[j, :ks[j]] = 1
    ext = (1.0 - mask[:, None, None, :]) * -1e9
    pooled = []
    for layer in top:
        hs = layer(hs, attention_mask=ext); hs = hs[0] if isinstance(hs, tuple) else hs
        pooled.append(torch.nn.functional.normalize((hs * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1))
    x = torch.cat([torch.stack([batches[i][1] for i in ids]), *pooled], -1) / 6 ** 0.5
    return head(x)
def evaluate(rows):
    top.eval(); head.eval(); outs = []
    with torch.no_grad():
        srt = sorted(rows, key=lambda i: batches[i][0].shape[0])
        for s in range(0, len(srt), 64):
            outs.append(torch.sigmoid(forward(srt[s:s + 64])).numpy())
    top.train(); head.train()
    pred = np.zeros((len(rows), L.shape[1])); pos = {i: k for k, i in enumerate(rows)}
    for k, i in enumerate(srt): pred[pos[i]] = np.concatenate(outs)[k]
    return pred
opt = torch.optim.AdamW([{"params": top.parameters(), "lr": float(os.environ.get("LR", "3e-5"))},
                         {"params": head.parameters(), "lr": 1e-4}], weight_decay=1e-2)
lossf = torch.nn.BCEWithLogitsLoss()
trs = sorted(tr.tolist(), key=lambda i: batches[i][0].shape[0]); chunks = [trs[s:s + 32] for s in range(0, len(trs), 32)]
for epoch in range(int(os.environ.get("EPOCHS", "3"))):
    t = time.time(); rng.shuffle(chunks)
    for ids in chunks:
        opt.zero_grad(); loss = lossf(forward(ids), Y[ids]); loss.backward(); opt.step()
    pv = evaluate(val.tolist()); vloss = float(np.mean(-(L[val] * np.log(pv + 1e-7) + (1 - L[val]) * np.log(1 - pv + 1e-7))))
    pt = evaluate(te.tolist())
    print(f"epoch {epoch + 1}: val bce {vloss:.4f} val score {S[val, pv.argmin(1)].mean():.4f} test score {S[te, pt.argmin(1)].mean():.4f} ({time.time() - t:.0f}s)", flush=True)
