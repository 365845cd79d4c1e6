"""Tryage beside its peers: LLMRouter's and RouteLLM's own routers on the same folds, in the same run.

    python benchmarks/peers.py [--embeddings PATH.npy] [--routers NAME,...] [--folds 5] [--seed 0]

On the LLMRouter score matrix (../shared/data/llmrouter: 4,799 prompts x 9 LLMs), with the five folds
of benchmarks/llmrouter_quality.py and one set of prompt embeddings for everyone (the bundled MiniLM,
all layers, as Tryage's router reads them), this trains and scores, fold by fold:

* Tryage's perceptive router, the kNN router of tryage.evaluation and an IRT router (benchmarks/peers_irt.py:
  ability = linear map of the embedding), beside the best single model (chosen on the training folds),
  random choice (exact expectation) and the per-prompt oracle;
* the peers, through the router classes their packages release, each with the hyper-parameters of its
  own published training config: LLMRouter (``llmrouter-lib``) KNNRouter, SVMRouter, MLPRouter,
  MFRouter, EloRouter, HybridLLMRouter, GraphRouter; RouteLLM (``routellm``) matrix factorisation
  (trained with its own ``MFModel_Train``/``train_loops``) and similarity-weighted ranking.
  Where a peer's code would call an encoder (Longformer, OpenAI embeddings), it is handed the same
  precomputed embedding instead; nothing is downloaded.

Fairness (issue 27): ``--tie-order file,shuffled,all-winners`` runs every label-based LLMRouter peer once per
order of tied best models (their label is the first tied row of a query; see peers_stats.label_groups);
``llmrouter_graph_trainscaler`` is GraphRouter with its query scaler fitted on training data only;
``--tune`` picks each router's hyper-parameter from ``GRIDS`` by inner CV on the training folds only
(Tryage's included; chosen values per fold in the JSON); the two-model table restricts Tryage, kNN and IRT
to RouteLLM's weak/strong pair (strong = best single model on the training folds, weak = the cheapest)
beside RouteLLM MF / SW and HybridLLMRouter given that pair, each with its threshold calibrated on the
training folds, and reports APGR and CPT(50%), CPT(80%) beside the mean score; every mean and every
difference against Tryage carries a paired bootstrap 95% interval (peers_report.finalize). The per-prompt
out-of-fold choices are kept in the JSON, so ``--combine`` draws the intervals over all parts together and
``--markdown FILE`` rewrites the table between FILE's peers-table markers from the JSON alone.
benchmarks/peers_fair.sh regenerates everything.

Reported per router: mean score and select-best accuracy (out of fold), the mean price of the chosen
models as a share of the best single model's price, and for routers with a cost knob the smallest
price share at which they still match the best single model's score (Tryage and kNN: the cost weight
swept over their out-of-fold predictions; binary routers: their threshold swept); training seconds per
fold; routing milliseconds per prompt with the embedding given (one prompt at a time, and batched).
Prints JSON and writes benchmarks/results/peers.json.

The peers are benchmark-only dependencies, kept out of tryage and CI. Install them in a separate
environment (they pull gradio, litellm, torch-geometric, ...); torch first so no CUDA build comes in:

    python -m venv peers-venv
    peers-venv/bin/pip install torch==2.13.0          # the CPU build
    peers-venv/bin/pip install -e ".[bench]"          # tryage + llmrouter-lib==0.4.0 + routellm==0.2.0
    HF_HUB_OFFLINE=1 peers-venv/bin/python benchmarks/peers.py --embeddings /tmp/llmrouter_minilm.npy

On this project's 2-core machine (shared by two to four such jobs) one fold of every router took about
16 minutes of one core, most of it LLMRouter's MLP at 100 epochs (~7.5 min) and RouteLLM's MF at its
100 epochs (~6 min); LLMRouter's MLP at its configured 500 epochs takes ~30 min a fold
(``--llmrouter-mlp-epochs``; ``--routellm-mf-epochs`` likewise). ``--routers`` splits the routers over
processes and ``--combine`` merges their JSON (checking that data, folds and seed agree); ``--run-folds N``
scores only the first N folds.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))   # peers_stats, peers_irt, peers_report beside this file

from peers_stats import (
    TIE_ORDERS,
    calibrate_threshold,
    choose,
    inner_splits,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter"

from peers_routers import (
    GRIDS,
    GRIDS_NOT_RUN,
    LABEL_BASED,
    LABELS,
    NOT_RUN,
    NOT_TUNED,
    PEERS_ALL,
    ROUTELLM_MF,
    SOURCES,
    Fitted,
    Fold,
)


def main(argv: list[str] | None = None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.markdown:
        return _write_markdown(args.out, args.markdown)
    if args.combine:
        return _combine(args.combine, args.out, parser)
    keys = _router_keys(args, parser)
    if args.fixed is not None:
        try:
            args.fixed = json.loads(args.fixed)
        except json.JSONDecodeError:
            args.fixed = None
        if not isinstance(args.fixed, dict) or not args.fixed:
            parser.error("--fixed takes a non-empty JSON object of hyper-parameters, e.g. '{\"C\": 1.0}'")
        for key in keys:   # a name the router does not read would run its default under the label "fixed"
            allowed = set((GRIDS | GRIDS_NOT_RUN).get(key.partition("@")[0], {}))
            if set(args.fixed) - allowed:
                parser.error(f"--fixed: {key} takes {sorted(allowed) or 'no hyper-parameters'}, "
                             f"got {sorted(args.fixed)}")
    if not (args.data / "train.jsonl").exists():
        parser.error(f"llmrouter data not found in {args.data}; put ../shared beside the checkout or pass --data")
    # The peers read API keys and price maps at import time; nothing here calls out.
    os.environ.setdefault("OPENAI_API_KEY", "unused-offline")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from tryage import ExpertLibrary, QTable
    from tryage.evaluation import choice_metrics
    from tryage.predictors import PerceptivePredictor

    torch.set_num_threads(args.threads)
    table = QTable.from_file(args.data / "train.jsonl")
    library = ExpertLibrary.from_json(args.data / "models.json", names=table.experts)
    models_json = json.loads((args.data / "models.json").read_text())
    encoder = PerceptivePredictor(progress=False)
    emb = _embeddings(args.embeddings, table, encoder, parser)
    cost = np.array([e.cost for e in library], dtype=float)

    order = np.random.default_rng(args.seed).permutation(len(table))
    parts = np.array_split(order, args.folds)
    ctx = {"table": table, "library": library, "emb": emb, "encoder": encoder, "models_json": models_json,
           "args": args, "cost": cost}
    # Import the peers before any clock starts: LLMRouter's import alone takes seconds (litellm, gradio).
    with contextlib.redirect_stdout(sys.stderr):
        if any(r.startswith("llmrouter") for r in keys):
            import llmrouter.models  # noqa: F401
        if any(r.startswith("routellm") for r in keys):
            import routellm.routers.routers  # noqa: F401
    fixed = (f"fixed {', '.join(f'{k}={v}' for k, v in args.fixed.items())}: {args.fixed_why}".rstrip(": ")
             if args.fixed else None)
    runs = {r: _Run(len(table), fixed=fixed) for r in keys}
    fold_of = np.full(len(table), -1, dtype=int)
    pair_by_fold: list[list[str]] = []
    oof_single = np.zeros(len(table), dtype=int)
    with tempfile.TemporaryDirectory(prefix="tryage-peers-") as tmp:
        for i, test_idx in enumerate(parts[:args.run_folds]):
            train_idx = np.sort(np.concatenate(parts[:i] + parts[i + 1:]))
            test_idx = np.sort(test_idx)
            fold = Fold(i, train_idx, test_idx, _strong(table, train_idx), int(np.argmin(cost)), Path(tmp) / f"fold{i}")
            fold.work.mkdir()
            fold_of[test_idx], oof_single[test_idx] = i, fold.strong
            pair_by_fold.append([table.experts[fold.weak], table.experts[fold.strong]])
            for r in keys:
                _run_one(r, runs[r], fold, ctx)

    rows = np.flatnonzero(fold_of >= 0)    # every prompt, unless --run-folds
    tab, single = table.subset(rows), oof_single[rows]
    single_value = choice_metrics(single, tab).value
    single_price = float(cost[single].mean())
    result_routers = {r: _entry(r, runs[r], rows, tab, library, cost, single_value, single_price) for r in keys}
    result_routers |= _baselines(tab, single, cost, single_price, oof_single)
    result = {
        "command": "python benchmarks/peers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": str(args.data), "n": len(rows), "folds": args.folds, "folds_run": args.run_folds or args.folds,
        "seed": args.seed,
        "embeddings": {"encoder": "bundled all-MiniLM-L6-v2, all layers (Tryage's default input)",
                       "shape": list(emb.shape)},
        "versions": {p: _version(p) for p in ("tryage", "llmrouter-lib", "routellm", "torch", "scikit-learn")},
        "threads": args.threads,
        "best_single_price_per_1m_tokens": single_price,
        "price": "mean of input and output USD per 1M tokens (models.json); a share is the mean over prompts "
                 "of the chosen model's price divided by the best single model's",
        "reference": "tryage",
        "experts": list(table.experts),
        "n_boot": args.bootstrap,
        "fold_of": fold_of.tolist(),
        "pair_by_fold": pair_by_fold,
        "tuning": {"inner_folds": args.inner_folds, "grids": {k: v for k, v in GRIDS.items()},
                   "criterion": "mean score on the inner validation folds (inside the outer training folds only)",
                   "enabled": args.tune},
        "deviations": _deviations(args),
        "routers": result_routers,
        "not_run": NOT_RUN,
    }
    return _finish(result, table, args.out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="the prompts' embeddings (.npy, rows in train.jsonl order); computed with tryage "
                             "and saved there when the file does not exist")
    parser.add_argument("--routers", default="all",
                        help=f"comma-separated subset of {', '.join(PEERS_ALL)} (a label-based peer may carry its "
                             "tie order: llmrouter_knn@shuffled)")
    parser.add_argument("--tie-order", default="file",
                        help=f"comma-separated tie orders for every label-based LLMRouter peer, of {TIE_ORDERS}: "
                             "file = first tied winner in the data's model order (their rule on our file), "
                             "shuffled = model rows shuffled per prompt, all-winners = one copy per tied winner")
    parser.add_argument("--tune", action="store_true",
                        help="choose each router's hyper-parameters from GRIDS by inner CV on the training folds")
    parser.add_argument("--fixed", default=None, metavar="PARAMS",
                        help="a JSON object of hyper-parameters every router of --routers runs with instead of "
                             "--tune's inner CV (a part too costly to tune); the table says so: "
                             "'{\"C\": 1.0}'")
    parser.add_argument("--fixed-why", default="", help="why --fixed: written beside the values in the table")
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap draws over prompts")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--knn-k", type=int, default=100)
    parser.add_argument("--run-folds", type=int, default=None,
                        help="train and score only the first N folds (a quick check; the report needs all)")
    parser.add_argument("--latency-prompts", type=int, default=100)
    parser.add_argument("--routellm-mf-epochs", type=int, default=ROUTELLM_MF["num_epochs"],
                        help="epochs of RouteLLM's MF training (their script: 100; about 15 s each on one CPU core)")
    parser.add_argument("--llmrouter-mlp-epochs", type=int, default=None,
                        help="epochs of LLMRouter's MLP trainer (their config: max_iter 500, read as 500 epochs)")
    parser.add_argument("--svm-without-probability", action="store_true",
                        help="LLMRouter's SVM config sets probability=True, which adds a 5-fold Platt calibration "
                             "that routing (SVC.predict) never reads: same choices, about 5x less training")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "peers.json")
    parser.add_argument("--combine", type=Path, nargs="+", default=None,
                        help="merge the JSON of runs over disjoint --routers subsets (same data, folds, seed) "
                             "into --out, instead of running")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="write the tables of --out (a finished JSON) between the peers-table markers of this "
                             "Markdown file, instead of running")
    return parser


def _router_keys(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    ties = [t.strip() for t in args.tie_order.split(",") if t.strip()]
    bad = [t for t in ties if t not in TIE_ORDERS]
    if bad or not ties:
        parser.error(f"--tie-order: {bad or 'nothing'}; choose from {TIE_ORDERS}")
    names = list(PEERS_ALL) if args.routers == "all" else [r.strip() for r in args.routers.split(",") if r.strip()]
    keys: list[str] = []
    for name in names:
        base, _, tie = name.partition("@")
        if base not in PEERS_ALL or (tie and (tie not in TIE_ORDERS or base not in LABEL_BASED)):
            parser.error(f"--routers: unknown {name!r}; choose from {list(PEERS_ALL)}, a label-based one "
                         f"({sorted(LABEL_BASED)}) optionally with @{'|@'.join(TIE_ORDERS)}")
        for t in [tie] if tie else (ties if base in LABEL_BASED else ["file"]):
            keys.append(base if t == "file" else f"{base}@{t}")
    return list(dict.fromkeys(keys))


@dataclass
class _Run:
    """What one router leaves behind over the folds."""

    n: int
    choice: np.ndarray = None
    signal: np.ndarray | None = None
    pairs: np.ndarray | None = None
    kind: str | None = None
    pair_signal: np.ndarray | None = None
    pair_threshold: list[float] = field(default_factory=list)
    train_s: list[float] = field(default_factory=list)
    fold_scores: list[float] = field(default_factory=list)
    batch_ms: list[float] = field(default_factory=list)
    one_ms: float = float("nan")
    notes: dict[str, Any] = field(default_factory=dict)
    tuning: list[dict[str, Any]] = field(default_factory=list)
    fixed: str | None = None   # "fixed C=1.0: why" when --fixed replaced tuning

    def __post_init__(self) -> None:
        self.choice = np.zeros(self.n, dtype=int)


def _run_one(key: str, run: _Run, fold: Fold, ctx: dict) -> None:
    from tryage.evaluation import choice_metrics
    table, emb, args = ctx["table"], ctx["emb"], ctx["args"]
    base, _, tie = key.partition("@")
    ctx["tie_order"] = tie or "file"
    test_idx = fold.test_idx
    _seed(args.seed + fold.index)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):   # the peers print progress; stdout is the JSON
        fitted, tuning = _fit(base, fold, ctx)
        run.train_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        run.choice[test_idx] = fitted.route(emb[test_idx])
        run.batch_ms.append(1e3 * (time.perf_counter() - started) / len(test_idx))
        if fitted.signal is not None:
            sig = fitted.signal(emb[test_idx])
            if run.signal is None:
                run.signal = np.zeros((run.n,) + sig.shape[1:])
                run.pairs = np.zeros((run.n, 2), dtype=int)
            run.signal[test_idx] = sig
            run.pairs[test_idx] = fitted.pair or (-1, -1)
        pair_signal = _pair_signal(fitted, fold)
        if pair_signal is not None:
            # The operating point is calibrated on the training folds: the threshold of best training score.
            s, tr = table.scores, fold.train_idx
            run.pair_threshold.append(calibrate_threshold(pair_signal(emb[tr]), s[tr, fold.weak], s[tr, fold.strong]))
            if run.pair_signal is None:
                run.pair_signal = np.zeros(run.n)
            run.pair_signal[test_idx] = pair_signal(emb[test_idx])
        run.kind, run.notes = fitted.signal_kind, fitted.notes
        if tuning is not None:
            run.tuning.append(tuning)
        if fold.index == 0:
            run.one_ms = _latency(fitted.route_one, test_idx[:args.latency_prompts])
    run.fold_scores.append(choice_metrics(run.choice[test_idx], table.subset(test_idx)).value)
    print(json.dumps({"fold": fold.index, "router": key, "score": round(run.fold_scores[-1], 4),
                      "train_s": round(run.train_s[-1], 2)} | ({"chosen": tuning["chosen"]} if tuning else {})),
          file=sys.stderr)


def _strong(table: Any, rows: np.ndarray) -> int:
    return int(np.argmin(table.losses[rows].mean(0)))


def _fit(base: str, fold: Fold, ctx: dict) -> tuple[Fitted, dict | None]:
    """Fit one router on the fold; with --tune, its grid point chosen first by inner CV on the training folds."""
    from tryage.evaluation import choice_metrics
    fit, args, table, emb = PEERS_ALL[base], ctx["args"], ctx["table"], ctx["emb"]
    if args.fixed:
        return fit(fold, ctx, **args.fixed), None
    grid = GRIDS.get(base) if args.tune else None
    if not grid:
        return fit(fold, ctx), None

    def evaluate(params: dict[str, Any]) -> float:
        values = []
        for j, (tr, va) in enumerate(inner_splits(fold.train_idx, args.inner_folds, seed=args.seed + fold.index)):
            inner = Fold(fold.index, tr, va, _strong(table, tr), fold.weak, fold.work / f"inner{j}")
            inner.work.mkdir(exist_ok=True)
            _seed(args.seed + fold.index)
            values.append(choice_metrics(fit(inner, ctx, **params).route(emb[va]), table.subset(va)).value)
        return float(np.mean(values))

    best, trials = choose(grid, evaluate)
    _seed(args.seed + fold.index)
    return fit(fold, ctx, **best), {"chosen": best, "trials": trials}


def _pair_signal(fitted: Fitted, fold: Fold) -> Callable[[np.ndarray], np.ndarray] | None:
    """The router's "needs the strong model" signal on the fold's weak/strong pair, or None if it has none."""
    if fitted.signal is None:
        return None
    if fitted.signal_kind == "losses":   # an N-model router restricted to the pair: weak's loss minus strong's
        def weak_minus_strong(x: np.ndarray) -> np.ndarray:
            losses = fitted.signal(x)
            return losses[:, fold.weak] - losses[:, fold.strong]
        return weak_minus_strong
    if fitted.pair == (fold.weak, fold.strong):
        return fitted.signal
    return None


def _entry(r: str, run: _Run, rows: np.ndarray, tab: Any, library: Any, cost: np.ndarray, single_value: float,
           single_price: float) -> dict[str, Any]:
    from tryage.evaluation import choice_metrics
    base, _, tie = r.partition("@")
    choice = run.choice[rows]
    m = choice_metrics(choice, tab)
    entry: dict[str, Any] = {
        "source": SOURCES[base], "label": LABELS.get(base, base) + (f" ({tie} ties)" if tie else ""),
        "tie_order": (tie or "file") if base in LABEL_BASED else None,
        "mean_score": m.value, "select_best_accuracy": m.select_best_accuracy, "fold_scores": run.fold_scores,
        "price_share": float(cost[choice].mean()) / single_price, "matches_best_single": bool(m.value >= single_value),
        "train_seconds_per_fold": float(np.mean(run.train_s)), "train_seconds": run.train_s,
        "route_ms_per_prompt": {"one_at_a_time_median": run.one_ms, "batched": float(np.mean(run.batch_ms)),
                                "one_at_a_time_prompts": int(min(100, len(rows)))},
        "usage": _usage(choice, tab.experts), **run.notes,
        "tuning": None if not run.tuning else {
            "chosen_per_fold": {k: [t["chosen"][k] for t in run.tuning] for k in run.tuning[0]["chosen"]},
            "trials_per_fold": [t["trials"] for t in run.tuning]},
        "not_tuned": run.fixed or (None if run.tuning or base not in NOT_TUNED else NOT_TUNED[base]),
        "oof_choice": _digits(run.choice),
    }
    if run.pair_signal is not None:
        entry["pair_oof"] = {"signal": [round(float(v), 6) for v in run.pair_signal],
                             "threshold_per_fold": run.pair_threshold,
                             "threshold": "the best mean score on the fold's training prompts (in-sample signal)"}
    if run.signal is not None:
        front = _front(run.kind, run.signal[rows], run.pairs[rows], tab, library, cost, single_price)
        ok = [p for p in front if p["mean_score"] >= single_value]
        best = min(ok, key=lambda p: p["price_share"]) if ok else None
        entry["cost_knob"] = KNOBS[run.kind]
        entry["smallest_price_share_matching_best_single"] = None if best is None else best["price_share"]
        entry["score_there"] = None if best is None else best["mean_score"]
        entry["front"] = front
    else:
        entry["cost_knob"] = None
        entry["smallest_price_share_matching_best_single"] = entry["price_share"] if m.value >= single_value else None
    return entry


def _baselines(tab: Any, single: np.ndarray, cost: np.ndarray, single_price: float,
               oof_single: np.ndarray) -> dict[str, Any]:
    from tryage.evaluation import choice_metrics
    oracle = tab.losses.argmin(1)
    return {
        "best_single": {"source": "the model with the best mean score on the training folds",
                        "label": "best single model", "mean_score": choice_metrics(single, tab).value,
                        "select_best_accuracy": choice_metrics(single, tab).select_best_accuracy, "price_share": 1.0,
                        "usage": _usage(single, tab.experts), "oof_choice": _digits(oof_single)},
        "random": {"source": "uniform choice, exact expectation", "label": "random",
                   "mean_score": float(tab.scores.mean()), "price_share": float(cost.mean()) / single_price},
        "oracle": {"source": "per prompt, a model with the best true score (cheapest among ties)", "label": "oracle",
                   "mean_score": float(tab.scores.max(1).mean()),
                   "price_share": float(_cheapest_best(tab, cost).mean()) / single_price,
                   "price_share_first_best": float(cost[oracle].mean()) / single_price},
    }


def _deviations(args: argparse.Namespace) -> list[str]:
    out = [
        "every router reads the same MiniLM embedding (all layers) in place of its own encoder",
        ("tie order 'all-winners': one training copy per tied best model (the copy's query text gets a "
         "'[copy N]' suffix so LLMRouter's groupby keeps it apart); prompts where every model ties are left out"),
        ("GraphRouter labels ties by np.argmax over its model columns, not by row order: for the shuffled and "
         "all-winners orders the chosen winner's performance is raised by 1e-6 in its file"),
        ("llmrouter_graph_trainscaler: GraphRouter with the query scaler fitted on the training embeddings only "
         "(their route_batch/route_single refit it on scaled training + raw test embeddings)"),
        "llmrouter_hybrid_pair: HybridLLMRouter given only the weak/strong pair in llm_data and its routing file",
        "two-model rows: threshold calibrated per fold on the training prompts' in-sample signal",
        ("RouteLLM similarity-weighted ranking: battles are weak vs strong on the training prompts (theirs: "
         "Chatbot Arena), 2 tiers"),
    ]
    if args.llmrouter_mlp_epochs:
        out.append(f"LLMRouter MLP: {args.llmrouter_mlp_epochs} epochs (their config: 500)")
    if args.routellm_mf_epochs != ROUTELLM_MF["num_epochs"]:
        out.append(f"RouteLLM MF: {args.routellm_mf_epochs} epochs (their script: {ROUTELLM_MF['num_epochs']})")
    if args.svm_without_probability:
        out.append("LLMRouter SVM: probability=False (a Platt calibration that SVC.predict never reads)")
    return out


def _finish(result: dict, table: Any, out: Path) -> dict:
    """Bootstrap intervals and the pair table from the per-prompt choices; print a summary, write --out."""
    from peers_report import finalize
    finalize(result, table.scores, n_boot=result.get("n_boot", 2000))
    short = {k: v for k, v in result.items() if k not in ("routers", "fold_of", "pair")} | {"routers": {
        r: {k: e.get(k) for k in ("mean_score", "bootstrap", "tie_order", "tuning") if k in e}
        for r, e in result["routers"].items()}}
    print(json.dumps(short, indent=1, default=str)[:20000])
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1)
    # numbers lists on one line each: the per-prompt arrays would otherwise take a line per prompt
    text = re.sub(r"\[\s+([-+0-9.eE,\s]+?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(text + "\n")
    os.replace(tmp, out)            # whole or absent: a launcher's --combine may read it meanwhile
    return result


def _digits(choice: np.ndarray) -> str:
    """Out-of-fold choices as one string of model indices (fewer than 10 models): compact in the JSON."""
    if choice.max(initial=0) > 9:
        raise ValueError("per-prompt choices are stored as digits: at most 10 models")
    return "".join(str(int(c)) for c in choice)


def _combine(paths: list[Path], out: Path, parser: argparse.ArgumentParser) -> dict:
    """One report from runs that split the routers between processes (the baselines come from the first)."""
    from tryage import QTable
    parts = [json.loads(p.read_text()) for p in paths]
    same = ("data", "n", "folds", "folds_run", "seed", "embeddings", "versions", "threads",
            "best_single_price_per_1m_tokens", "fold_of", "pair_by_fold")
    for p, part in zip(paths[1:], parts[1:]):
        differ = [k for k in same if part.get(k) != parts[0].get(k)]
        if differ:
            parser.error(f"--combine: {p} differs from {paths[0]} in {differ}; runs must share data, folds and seed")
    result = dict(parts[0])
    result["command"] = [part["command"] for part in parts]
    result["deviations"] = list(dict.fromkeys(d for part in parts for d in part.get("deviations", [])))
    result["tuning"] = dict(result.get("tuning") or {})   # every part's grids (a part may have run a newer GRIDS)
    result["tuning"]["grids"] = {k: v for part in parts for k, v in (part.get("tuning") or {}).get("grids", {}).items()}
    for part in parts[1:]:
        result["routers"] = part["routers"] | result["routers"]
    result["routers"] = dict(sorted(result["routers"].items(), key=lambda kv: -kv[1]["mean_score"]))
    return _finish(result, QTable.from_file(Path(result["data"]) / "train.jsonl"), out)


def _write_markdown(json_path: Path, markdown: Path) -> dict:
    from peers_stats import markdown_table, replace_between
    result = json.loads(json_path.read_text())
    markdown.write_text(replace_between(markdown.read_text(), markdown_table(result)))
    print(markdown_table(result))
    return result


# -- shared helpers --------------------------------------------------------------------------------

def _embeddings(path: Path | None, table: Any, encoder: Any, parser: argparse.ArgumentParser) -> np.ndarray:
    if path is not None and path.exists():
        emb = np.load(path, allow_pickle=False)
        if emb.ndim != 2 or emb.shape[0] != len(table):
            parser.error(f"--embeddings: {path} has shape {emb.shape}; expected ({len(table)}, dim), one row per "
                         f"prompt of train.jsonl in file order")
        # The cache must come from this encoder: re-encode two prompts and compare.
        fresh = encoder.encode(list(table.prompts[:2]))
        if not np.allclose(fresh, emb[:2], atol=1e-4):
            parser.error(f"--embeddings: {path} does not match tryage's encoder on the first prompts; "
                         f"delete it to recompute")
        return emb.astype(np.float32)
    print(f"encoding {len(table)} prompts with tryage's encoder ...", file=sys.stderr)
    emb = encoder.encode(table.prompts).astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, emb)
    return emb


def _seed(seed: int) -> None:
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _latency(route_one: Callable[[int], Any], rows: np.ndarray) -> float:
    times = []
    for j in rows:
        started = time.perf_counter()
        route_one(int(j))
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


def _usage(choice: np.ndarray, experts: tuple[str, ...]) -> dict[str, float]:
    counts = np.bincount(choice, minlength=len(experts)) / len(choice)
    return {e: round(float(c), 4) for e, c in zip(experts, counts) if c > 0}


def _cheapest_best(table: Any, cost: np.ndarray) -> np.ndarray:
    best = table.scores >= table.scores.max(1, keepdims=True) - 1e-9
    return np.where(best, cost[None, :], np.inf).min(1)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


KNOBS = {
    "losses": "Tryage's cost weight, swept over the out-of-fold predicted losses (tryage.evaluation.pareto_sweep)",
    "strong_probability": "the router's own threshold on its probability of needing the strong model, swept "
                          "over the quantiles of its out-of-fold outputs",
}


def _front(kind: str | None, signal: np.ndarray, pair: np.ndarray, table: Any, library: Any, cost: np.ndarray,
           single_price: float) -> list[dict[str, Any]]:
    from tryage.evaluation import choice_metrics, pareto_sweep
    if kind == "losses":
        return [{"weight": p.weight, "mean_score": p.value, "select_best_accuracy": p.select_best_accuracy,
                 "price_share": p.mean_constraint / single_price}
                for p in pareto_sweep(signal, table, library, constraint="cost")]
    thresholds = np.unique(np.concatenate([np.quantile(signal, np.linspace(0, 1, 101)), [np.inf]]))
    front = []
    for t in thresholds:
        choice = np.where(signal >= t, pair[:, 1], pair[:, 0])
        m = choice_metrics(choice, table)
        front.append({"threshold": float(t), "mean_score": m.value, "select_best_accuracy": m.select_best_accuracy,
                      "strong_share": float(np.mean(signal >= t)),
                      "price_share": float(cost[choice].mean()) / single_price})
    return front



if __name__ == "__main__":
    main()
