"""The peer table's derived figures, from the per-prompt choices a peers.py run keeps in its JSON.

``finalize`` adds, in place: each router's paired bootstrap (95% intervals on its mean and on its difference
from Tryage, the same prompt draws for every router) and the two-model comparison (mean score at the threshold
calibrated on the training folds, the strong-model share there, APGR and CPT(50%/80%), with intervals).
It runs at the end of a run and again after ``--combine``, so merged runs get intervals drawn together.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from peers_stats import apgr, bootstrap_statistic, cpt, pair_curve, paired_bootstrap


def finalize(result: dict[str, Any], scores: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    routers = result["routers"]
    # Tryage tuned by inner CV is the reference; a partial run without it falls back to the shipped Tryage,
    # then to the best single model.
    ref = next((r for r in ("tryage", "tryage_shipped", "best_single") if r in routers), "tryage")
    result["reference"] = ref
    fold_of = np.asarray(result["fold_of"])
    rows = np.flatnonzero(fold_of >= 0)
    s = np.asarray(scores, dtype=float)[rows]
    per_prompt = {name: s[np.arange(len(rows)), choices(e["oof_choice"])[rows]]
                  for name, e in routers.items() if "oof_choice" in e}
    if "random" in routers:
        per_prompt["random"] = s.mean(1)
    if "oracle" in routers:
        per_prompt["oracle"] = s.max(1)
    if ref in per_prompt:
        for name, b in paired_bootstrap(per_prompt, ref, n_boot=n_boot, seed=seed).items():
            routers[name]["bootstrap"] = b
    result["pair"] = _pair(result, np.asarray(scores, dtype=float), fold_of, rows, ref, n_boot, seed)
    return result


def choices(stored: str | list[int]) -> np.ndarray:
    """A router's out-of-fold choices as peers.py stores them (a string of digits, or a list)."""
    return np.array([int(c) for c in stored] if isinstance(stored, str) else stored, dtype=int)


def _pair(result: dict, scores: np.ndarray, fold_of: np.ndarray, rows: np.ndarray, ref: str, n_boot: int,
          seed: int) -> dict[str, Any] | None:
    names = result.get("experts")
    pairs = result["pair_by_fold"]
    with_pair = {n: e for n, e in result["routers"].items() if "pair_oof" in e}
    if not with_pair or names is None:
        return None
    folds = fold_of[rows]
    weak = np.array([names.index(pairs[f][0]) for f in folds])
    strong = np.array([names.index(pairs[f][1]) for f in folds])
    w, st = scores[rows, weak], scores[rows, strong]
    out: dict[str, Any] = {"weak": sorted({p[0] for p in pairs}), "strong": sorted({p[1] for p in pairs}),
                           "all_weak": float(w.mean()), "all_strong": float(st.mean()),
                           "oracle": float(np.maximum(w, st).mean()), "routers": {},
                           "apgr": "mean PGR over the strong-call share 0..1 (trapezoid over every prompt count)",
                           "cpt": "smallest strong-call share whose PGR reaches 50% / 80%"}
    per_prompt = {}
    for name, e in with_pair.items():
        sig = np.asarray(e["pair_oof"]["signal"], dtype=float)[rows]
        thr = np.asarray(e["pair_oof"]["threshold_per_fold"], dtype=float)[folds]
        go_strong = sig >= thr
        per_prompt[name] = np.where(go_strong, st, w)
        curve = pair_curve(sig, w, st, seed=seed)
        out["routers"][name] = {
            "label": e.get("label", name), "mean_score": float(per_prompt[name].mean()),
            "strong_share": float(go_strong.mean()), "apgr": apgr(curve), "cpt50": cpt(curve, 0.5),
            "cpt80": cpt(curve, 0.8),
            "apgr_ci95": bootstrap_statistic(lambda i, sig=sig: apgr(pair_curve(sig[i], w[i], st[i], seed=seed)),
                                             len(sig), n_boot=min(n_boot, 300), seed=seed)}
    if ref in per_prompt:
        for name, b in paired_bootstrap(per_prompt, ref, n_boot=n_boot, seed=seed).items():
            out["routers"][name] |= {"ci95": b["ci95"], f"minus_{ref}": b[f"minus_{ref}"],
                                     f"minus_{ref}_ci95": b[f"minus_{ref}_ci95"]}
    return out
