"""Tryage beside its peers: LLMRouter's and RouteLLM's own routers on the same folds, in the same run.

    python benchmarks/peers.py [--embeddings PATH.npy] [--routers NAME,...] [--folds 5] [--seed 0]

On the LLMRouter score matrix (../shared/data/llmrouter: 4,799 prompts x 9 LLMs), with the five folds
of benchmarks/llmrouter_quality.py and one set of prompt embeddings for everyone (the bundled MiniLM,
all layers, as Tryage's router reads them), this trains and scores, fold by fold:

* Tryage's perceptive router and the kNN router of tryage.evaluation (k=100), beside the best single
  model (chosen on the training folds), random choice (exact expectation) and the per-prompt oracle;
* the peers, through the router classes their packages release, each with the hyper-parameters of its
  own published training config: LLMRouter (``llmrouter-lib``) KNNRouter, SVMRouter, MLPRouter,
  MFRouter, EloRouter, HybridLLMRouter, GraphRouter; RouteLLM (``routellm``) matrix factorisation
  (trained with its own ``MFModel_Train``/``train_loops``) and similarity-weighted ranking.
  Where a peer's code would call an encoder (Longformer, OpenAI embeddings), it is handed the same
  precomputed embedding instead; nothing is downloaded.

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
import itertools
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter"

# LLMRouter's published training configs (configs/model_config_train/*.yaml in ulab-uiuc/LLMRouter,
# commit 4e7a796): their hyper-parameters, verbatim. ``text_dim`` of MFRouter is the encoder width
# (768 for their Longformer); it becomes the width of the shared embeddings here.
LLMROUTER_HPARAMS: dict[str, dict[str, Any]] = {
    "knn": {"n_neighbors": 5, "weights": "uniform", "algorithm": "auto", "leaf_size": 30, "p": 2,
            "metric": "minkowski", "n_jobs": -1},
    "svm": {"kernel": "rbf", "C": 1.0, "gamma": "scale", "probability": True},
    "mlp": {"hidden_layer_sizes": [128, 64], "activation": "relu", "solver": "adam", "alpha": 0.0001,
            "learning_rate": "adaptive", "learning_rate_init": 0.001, "max_iter": 500, "random_state": 42},
    "mf": {"latent_dim": 128, "text_dim": None, "lr": 0.001, "epochs": 5, "noise_alpha": 0.0},
    "hybrid": {"hidden_layer_sizes": [128, 64], "activation": "relu", "solver": "adam", "max_iter": 300},
    "graph": {"hidden_dim": 64, "learning_rate": 0.001, "weight_decay": 0.0001, "train_epoch": 100,
              "batch_size": 4, "train_mask_rate": 0.3, "val_split_ratio": 0.2, "random_state": 42},
}
HYBRID_MODE = {"router_mode": "probabilistic", "router_tau": 0.1, "router_threshold": 0.5}
# RouteLLM's example training run (routellm/routers/matrix_factorization/train_matrix_factorization.py).
ROUTELLM_MF = {"dim": 128, "batch_size": 64, "num_epochs": 100, "alpha": 0.1, "use_proj": True, "lr": 3e-4,
               "weight_decay": 1e-5, "train_share": 0.95}

NOT_RUN = {
    "llmrouter.DCRouter (RouterDC)": "fine-tunes the mDeBERTa-v3-base encoder end to end (backbone loaded from "
    "the Hugging Face Hub, unreachable here), so it cannot be fed precomputed embeddings",
    "llmrouter.CausalLMRouter": "LoRA fine-tunes Llama-2-7B from the Hub (fp16, a GPU)",
    "llmrouter.AutomixRouter": "needs each model's answers and self-verification scores from hosted LLM APIs; "
    "the score matrix has neither",
    "llmrouter.RouterR1": "an LLM agent that calls hosted LLM APIs while it routes",
    "llmrouter.KNNMultiRoundRouter / LLMMultiRoundRouter": "decompose the query and call the models through "
    "hosted APIs over several rounds",
    "llmrouter.GMTRouter / PersonalizedRouter": "need per-user multi-turn interaction data (users, sessions), "
    "which the score matrix has not",
    "llmrouter.TSRouter": "routes time-series queries to (modality, model) pairs; needs its separate TSRouter "
    "source tree and modality data",
    "routellm BERTRouter": "loads a fine-tuned BERT checkpoint from the Hub and fine-tunes the encoder; the "
    "package ships no training code for it and it cannot be fed precomputed embeddings",
    "routellm CausalLLMRouter": "a Llama-3-8B classifier checkpoint from the Hub (a GPU)",
}


@dataclass
class Fold:
    """What one fold's routers are trained on and measured with."""

    index: int
    train_idx: np.ndarray
    test_idx: np.ndarray
    strong: int            # best single model on the training folds
    weak: int              # cheapest model
    work: Path             # scratch folder for the peers' files


@dataclass
class Fitted:
    """A trained router: ``route(X)`` gives expert indices; ``signal(X)`` what its cost knob reads.

    ``signal_kind`` is ``"losses"`` (an (n, k) predicted-loss matrix, swept with Tryage's cost weight),
    ``"strong_probability"`` (an (n,) probability that the strong model is needed; a threshold picks
    strong or weak), or ``None`` when the router has no cost trade-off.
    """

    route: Callable[[np.ndarray], np.ndarray]
    route_one: Callable[[int], Any]
    signal: Callable[[np.ndarray], np.ndarray] | None = None
    signal_kind: str | None = None
    pair: tuple[int, int] | None = None    # (weak, strong) for binary routers
    notes: dict[str, Any] = field(default_factory=dict)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="the prompts' embeddings (.npy, rows in train.jsonl order); computed with tryage "
                             "and saved there when the file does not exist")
    parser.add_argument("--routers", default="all", help=f"comma-separated subset of {', '.join(PEERS_ALL)}")
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
    args = parser.parse_args(argv)
    if args.combine:
        return _combine(args.combine, args.out, parser)
    names = list(PEERS_ALL) if args.routers == "all" else [r.strip() for r in args.routers.split(",") if r.strip()]
    unknown = [r for r in names if r not in PEERS_ALL]
    if unknown:
        parser.error(f"--routers: unknown {unknown}; choose from {list(PEERS_ALL)}")
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
    routers = names
    # Import the peers before any clock starts: LLMRouter's import alone takes seconds (litellm, gradio).
    with contextlib.redirect_stdout(sys.stderr):
        if any(r.startswith("llmrouter") for r in routers):
            import llmrouter.models  # noqa: F401
        if any(r.startswith("routellm") for r in routers):
            import routellm.routers.routers  # noqa: F401
    oof_choice = {r: np.zeros(len(table), dtype=int) for r in routers}
    oof_signal: dict[str, np.ndarray] = {}
    pairs: dict[str, np.ndarray] = {}
    kinds: dict[str, str | None] = {}
    train_s = {r: [] for r in routers}
    fold_scores: dict[str, list[float]] = {r: [] for r in routers}
    batch_ms = {r: [] for r in routers}
    one_ms: dict[str, float] = {}
    notes: dict[str, Any] = {}
    oof_single = np.zeros(len(table), dtype=int)
    with tempfile.TemporaryDirectory(prefix="tryage-peers-") as tmp:
        for i, test_idx in enumerate(parts[:args.run_folds]):
            train_idx = np.sort(np.concatenate(parts[:i] + parts[i + 1:]))
            test_idx = np.sort(test_idx)
            strong = int(np.argmin(table.losses[train_idx].mean(0)))
            fold = Fold(i, train_idx, test_idx, strong, int(np.argmin(cost)), Path(tmp) / f"fold{i}")
            fold.work.mkdir()
            oof_single[test_idx] = strong
            for r in routers:
                _seed(args.seed + i)
                started = time.perf_counter()
                with contextlib.redirect_stdout(sys.stderr):   # the peers print progress; stdout is the JSON
                    fitted = PEERS_ALL[r](fold, ctx)
                    train_s[r].append(time.perf_counter() - started)
                    started = time.perf_counter()
                    oof_choice[r][test_idx] = fitted.route(emb[test_idx])
                    batch_ms[r].append(1e3 * (time.perf_counter() - started) / len(test_idx))
                    if fitted.signal is not None:
                        sig = fitted.signal(emb[test_idx])
                        if r not in oof_signal:
                            oof_signal[r] = np.zeros((len(table),) + sig.shape[1:])
                            pairs[r] = np.zeros((len(table), 2), dtype=int)
                        oof_signal[r][test_idx] = sig
                        pairs[r][test_idx] = fitted.pair or (-1, -1)
                    kinds[r] = fitted.signal_kind
                    notes[r] = fitted.notes
                    if i == 0:
                        one_ms[r] = _latency(fitted.route_one, test_idx[:args.latency_prompts])
                m = choice_metrics(oof_choice[r][test_idx], table.subset(test_idx))
                fold_scores[r].append(m.value)
                print(json.dumps({"fold": i, "router": r, "score": round(m.value, 4),
                                  "train_s": round(train_s[r][-1], 2)}), file=sys.stderr)

    rows = np.sort(np.concatenate(parts[:args.run_folds]))    # every prompt, unless --run-folds
    tab, single = table.subset(rows), oof_single[rows]
    choice = {r: c[rows] for r, c in oof_choice.items()}
    signal = {r: v[rows] for r, v in oof_signal.items()}
    pair = {r: v[rows] for r, v in pairs.items()}
    single_value = choice_metrics(single, tab).value
    single_price = float(cost[single].mean())
    result_routers: dict[str, Any] = {}
    for r in routers:
        m = choice_metrics(choice[r], tab)
        price_share = float(cost[choice[r]].mean()) / single_price
        entry: dict[str, Any] = {
            "source": SOURCES[r], "mean_score": m.value, "select_best_accuracy": m.select_best_accuracy,
            "fold_scores": fold_scores[r],
            "price_share": price_share, "matches_best_single": bool(m.value >= single_value),
            "train_seconds_per_fold": float(np.mean(train_s[r])), "train_seconds": train_s[r],
            "route_ms_per_prompt": {"one_at_a_time_median": one_ms[r], "batched": float(np.mean(batch_ms[r])),
                                    "one_at_a_time_prompts": int(min(args.latency_prompts, len(parts[0])))},
            "usage": _usage(choice[r], tab.experts), **notes[r],
        }
        if r in signal:
            front = _front(kinds[r], signal[r], pair[r], tab, library, cost, single_price)
            ok = [p for p in front if p["mean_score"] >= single_value]
            best = min(ok, key=lambda p: p["price_share"]) if ok else None
            entry["cost_knob"] = KNOBS[kinds[r]]
            entry["smallest_price_share_matching_best_single"] = None if best is None else best["price_share"]
            entry["score_there"] = None if best is None else best["mean_score"]
            entry["front"] = front
        else:
            entry["cost_knob"] = None
            entry["smallest_price_share_matching_best_single"] = price_share if m.value >= single_value else None
        result_routers[r] = entry
    result_routers["best_single"] = {
        "source": "the model with the best mean score on the training folds", "mean_score": single_value,
        "select_best_accuracy": choice_metrics(single, tab).select_best_accuracy, "price_share": 1.0,
        "usage": _usage(single, tab.experts)}
    result_routers["random"] = {"source": "uniform choice, exact expectation",
                                "mean_score": float(tab.scores.mean()),
                                "price_share": float(cost.mean()) / single_price}
    oracle = tab.losses.argmin(1)
    result_routers["oracle"] = {"source": "per prompt, a model with the best true score (cheapest among ties)",
                                "mean_score": float(tab.scores.max(1).mean()),
                                "price_share": float(_cheapest_best(tab, cost).mean()) / single_price,
                                "price_share_first_best": float(cost[oracle].mean()) / single_price}
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
        "routers": result_routers,
        "not_run": NOT_RUN,
    }
    short = {k: v for k, v in result.items() if k != "routers"} | {"routers": {
        r: {k: v for k, v in e.items() if k not in ("front", "usage", "source")} for r, e in result_routers.items()}}
    print(json.dumps(short, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _combine(paths: list[Path], out: Path, parser: argparse.ArgumentParser) -> dict:
    """One report from runs that split the peers between processes (Tryage and the baselines come from the first)."""
    parts = [json.loads(p.read_text()) for p in paths]
    same = ("data", "n", "folds", "folds_run", "seed", "embeddings", "versions", "threads",
            "best_single_price_per_1m_tokens")
    for p, part in zip(paths[1:], parts[1:]):
        differ = [k for k in same if part.get(k) != parts[0].get(k)]
        if differ:
            parser.error(f"--combine: {p} differs from {paths[0]} in {differ}; runs must share data, folds and seed")
    result = dict(parts[0])
    result["command"] = [part["command"] for part in parts]
    for part in parts[1:]:
        result["routers"] = part["routers"] | result["routers"]
    result["routers"] = dict(sorted(result["routers"].items(), key=lambda kv: -kv[1]["mean_score"]))
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({r: {"mean_score": e["mean_score"], "price_share": e.get("price_share")}
                      for r, e in result["routers"].items()}, indent=2))
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


# -- Tryage and its kNN baseline -------------------------------------------------------------------

def fit_tryage(fold: Fold, ctx: dict, **params: Any) -> Fitted:
    from tryage.constraints import ConstraintSet
    from tryage.objective import decide
    from tryage.predictors import PerceptivePredictor
    table, emb, encoder = ctx["table"], ctx["emb"], ctx["encoder"]
    router = PerceptivePredictor(seed=ctx["args"].seed + fold.index, progress=False, **params)
    router.text_encoder_, router.encoder_spec_ = encoder.text_encoder_, encoder.encoder_spec_
    router.fit(table.subset(fold.train_idx), ctx["library"], embeddings=emb[fold.train_idx])
    lib = ctx["library"]

    def route(x: np.ndarray) -> np.ndarray:
        return decide(router.predict_from_embeddings(x), lib, ConstraintSet(), {}).choice

    return Fitted(route, lambda j: route(emb[j:j + 1]), router.predict_from_embeddings, "losses",
                  notes={"config": {"mode": "head", "hidden_dim": router.hidden_dim, "layers": router.layers,
                                    "target_smoothing": getattr(router, "smoothing_", 0), "epochs_run": len(router.history_)}})


def fit_tryage_shipped(fold: Fold, ctx: dict) -> Fitted:
    """Tryage's router as the embedded ``open-llms`` one is trained: targets smoothed over 50 neighbours."""
    return fit_tryage(fold, ctx, target_smoothing=50)


def fit_knn(fold: Fold, ctx: dict) -> Fitted:
    from tryage.predictors import KNNPredictor
    table, emb = ctx["table"], ctx["emb"]
    knn = KNNPredictor(ctx["encoder"].encode, k=ctx["args"].knn_k).fit(table.subset(fold.train_idx),
                                                                       embeddings=emb[fold.train_idx])

    def route(x: np.ndarray) -> np.ndarray:
        return knn.predict_from_embeddings(x).argmin(1)

    return Fitted(route, lambda j: route(emb[j:j + 1]), knn.predict_from_embeddings, "losses",
                  notes={"config": {"k": ctx["args"].knn_k, "metric": "cosine",
                                    "predicts": "mean loss of the k nearest"}})


# -- LLMRouter (llmrouter-lib) ---------------------------------------------------------------------

def _llmrouter_config(fold: Fold, ctx: dict, name: str, hparam: dict | None, **extra: Any) -> str:
    """Write one fold's training data in LLMRouter's own file formats and a YAML config pointing at it."""
    import torch
    import yaml
    table, emb, models_json = ctx["table"], ctx["emb"], ctx["models_json"]
    emb_path, routing_path, llm_path = fold.work / "query_embeddings.pt", fold.work / "routing_train.jsonl", \
        fold.work / "llm.json"
    if not routing_path.exists():
        torch.save(torch.from_numpy(emb[fold.train_idx]), emb_path)
        # One row per (query, model), models in models.json order as in LLMRouter's own routing data;
        # their routers break ties (several models right, or none) with pandas' idxmax: the first row.
        order = [m for m in models_json if m in table.experts]
        col = {m: table.experts.index(m) for m in order}
        with routing_path.open("w") as f:
            for local, j in enumerate(fold.train_idx):
                for m in order:
                    f.write(json.dumps({"query": table.prompts[j], "model_name": m,
                                        "performance": float(table.scores[j, col[m]]), "embedding_id": local}) + "\n")
        llm_path.write_text(json.dumps({m: models_json[m] for m in order}))
    saved = fold.work / f"{name}.{'pt' if name == 'graph' else 'pkl'}"
    cfg = {"data_path": {"query_embedding_data": str(emb_path), "routing_data_train": str(routing_path),
                         "llm_data": str(llm_path)},
           "model_path": {"ini_model_path": "", "save_model_path": str(saved), "load_model_path": str(saved)},
           "metric": {"weights": {"performance": 1, "cost": 0, "llm_judge": 0}}, **extra}
    if hparam is not None:
        cfg["hparam"] = hparam
    path = fold.work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _names_to_idx(names: Any, experts: tuple[str, ...]) -> np.ndarray:
    return np.array([experts.index(str(n)) for n in names], dtype=int)


def fit_llmrouter_knn(fold: Fold, ctx: dict) -> Fitted:
    from llmrouter.models import KNNRouter, KNNRouterTrainer
    router = KNNRouter(_llmrouter_config(fold, ctx, "knn", LLMROUTER_HPARAMS["knn"]))
    KNNRouterTrainer(router, device="cpu").train()
    return _classifier(router.knn_model.predict, ctx, LLMROUTER_HPARAMS["knn"])


def fit_llmrouter_svm(fold: Fold, ctx: dict) -> Fitted:
    from llmrouter.models import SVMRouter, SVMRouterTrainer
    hparam = LLMROUTER_HPARAMS["svm"] | ({"probability": False} if ctx["args"].svm_without_probability else {})
    router = SVMRouter(_llmrouter_config(fold, ctx, "svm", hparam))
    SVMRouterTrainer(router, device="cpu").train()
    return _classifier(router.svm_model.predict, ctx, hparam)


def _classifier(predict: Callable, ctx: dict, hparam: dict) -> Fitted:
    emb, experts = ctx["emb"], ctx["table"].experts

    def route(x: np.ndarray) -> np.ndarray:
        return _names_to_idx(predict(x), experts)

    return Fitted(route, lambda j: route(emb[j:j + 1]), notes={"config": hparam})


def fit_llmrouter_mlp(fold: Fold, ctx: dict) -> Fitted:
    import torch
    from llmrouter.models import MLPRouter, MLPTrainer
    hparam = LLMROUTER_HPARAMS["mlp"] | ({"max_iter": ctx["args"].llmrouter_mlp_epochs}
                                         if ctx["args"].llmrouter_mlp_epochs else {})
    router = MLPRouter(_llmrouter_config(fold, ctx, "mlp", hparam))
    trainer = MLPTrainer(router, device="cpu")
    trainer.train()
    model, emb, experts = trainer.model.eval(), ctx["emb"], ctx["table"].experts

    def route(x: np.ndarray) -> np.ndarray:
        idx = model.predict(torch.from_numpy(x)).numpy()
        return _names_to_idx([router.idx_to_model[int(i)] for i in idx], experts)

    return Fitted(route, lambda j: route(emb[j:j + 1]),
                  notes={"config": hparam | {"their_config_max_iter": LLMROUTER_HPARAMS["mlp"]["max_iter"],
                                             "as_read_by_their_torch_trainer":
                                                               {"epochs": trainer.epochs, "lr": trainer.lr,
                                                                "batch_size": trainer.batch_size}}})


def fit_llmrouter_mf(fold: Fold, ctx: dict) -> Fitted:
    import torch
    from llmrouter.models import MFRouter, MFRouterTrainer
    hparam = LLMROUTER_HPARAMS["mf"] | {"text_dim": int(ctx["emb"].shape[1])}
    router = MFRouter(_llmrouter_config(fold, ctx, "mf", hparam))
    trainer = MFRouterTrainer(router, device="cpu")
    trainer.train()
    model, emb, experts = trainer.model.eval(), ctx["emb"], ctx["table"].experts
    names = [router.idx_to_model[i] for i in range(len(router.idx_to_model))]

    @torch.no_grad()
    def route(x: np.ndarray) -> np.ndarray:
        # score_all of every prompt at once: the same product as their route_single, batched.
        scores = model.score_all(model.project_text(torch.from_numpy(x))[:, None, :])
        return _names_to_idx([names[int(i)] for i in scores.argmax(1)], experts)

    @torch.no_grad()
    def route_one(j: int) -> str:   # their route_single's computation, the embedding given
        return names[int(torch.argmax(model.score_all(model.project_text(torch.from_numpy(emb[j])))))]

    return Fitted(route, route_one, notes={"config": hparam})


def fit_llmrouter_elo(fold: Fold, ctx: dict) -> Fitted:
    from llmrouter.models import EloRouter, EloRouterTrainer
    router = EloRouter(_llmrouter_config(fold, ctx, "elo", None))
    EloRouterTrainer(router).train()
    best = router.route_single({"query": ""})["model_name"]   # Elo ignores the query: one model for all
    idx = ctx["table"].experts.index(best)
    return Fitted(lambda x: np.full(len(x), idx), lambda j: router.route_single({"query": ""}),
                  notes={"config": "none (query-independent Elo ratings from pairwise wins)"})


def fit_llmrouter_hybrid(fold: Fold, ctx: dict) -> Fitted:
    from llmrouter.models import HybridLLMRouter, HybridLLMTrainer
    router = HybridLLMRouter(_llmrouter_config(fold, ctx, "hybrid", LLMROUTER_HPARAMS["hybrid"], **HYBRID_MODE))
    HybridLLMTrainer(router, device="cpu").train()
    experts, emb = ctx["table"].experts, ctx["emb"]
    small, large = experts.index(router.small_model_name), experts.index(router.large_model_name)
    thr = router.router_threshold

    def p_large(x: np.ndarray) -> np.ndarray:
        # Their route_single: score = clip(mlp(x), 0, 1); small model when score >= threshold.
        return 1.0 - np.clip(router.mlp_model.predict(x), 0.0, 1.0)

    def route(x: np.ndarray) -> np.ndarray:
        return np.where(1.0 - p_large(x) >= thr, small, large)

    return Fitted(route, lambda j: route(emb[j:j + 1]), p_large, "strong_probability", (small, large),
                  notes={"config": LLMROUTER_HPARAMS["hybrid"] | HYBRID_MODE,
                         "pair": {"weak": router.small_model_name, "strong": router.large_model_name,
                                  "chosen_by": "their code: smallest and largest size in llm_data"}})


def fit_llmrouter_graph(fold: Fold, ctx: dict) -> Fitted:
    import torch
    import llmrouter.models.graphrouter.router as graph_module
    from llmrouter.models import GraphRouter, GraphTrainer
    table, emb, encoder, models_json = ctx["table"], ctx["emb"], ctx["encoder"], ctx["models_json"]
    # LLM nodes carry an embedding of each model's description, as their config's llm_data does
    # (their code falls back to random vectors without one); same encoder as the prompts.
    order = [m for m in models_json if m in table.experts]
    if "llm_embeddings" not in ctx:
        ctx["llm_embeddings"] = encoder.encode([models_json[m]["feature"] for m in order])
    llm_data = {m: {"embedding": [float(v) for v in ctx["llm_embeddings"][k]]} for k, m in enumerate(order)}
    router = GraphRouter(_llmrouter_config(fold, ctx, "graph", LLMROUTER_HPARAMS["graph"], llm_data=llm_data,
                                           api_endpoint="unused: the answer is never requested"))
    GraphTrainer(router, device="cpu").train()
    lookup = _EmbeddingLookup(table.prompts, emb)
    # Their route_single/route_batch embed the query with Longformer: they get the shared embedding
    # instead. route_batch then calls the chosen model's API; that call is cut (the scores are known).
    graph_module.get_longformer_embedding = lambda text: torch.from_numpy(lookup.embedding_of(text))
    graph_module.call_api = lambda request, **kwargs: {"response": ""}

    def route_one(j: int) -> str:
        return router.route_single({"query": table.prompts[j]})["model_name"]

    def route(x: np.ndarray) -> np.ndarray:
        out = router.route_batch([{"query": lookup.prompt_of(v)} for v in x])
        return _names_to_idx([o["model_name"] for o in out], table.experts)

    return Fitted(route, route_one, notes={
        "config": LLMROUTER_HPARAMS["graph"],
        "route": "their route_batch (the fold's test queries join the training graph together); the one-at-a-time "
                 "latency is their route_single (one query joins the graph)",
        "llm_node_features": "MiniLM embedding of each model's models.json 'feature'"})


# -- RouteLLM (routellm) ---------------------------------------------------------------------------

def _battles(scores: np.ndarray, models: list[int]) -> list[tuple[int, int, int, str]]:
    """(prompt, model_a, model_b, winner) for every pair of ``models`` on every prompt."""
    out = []
    for i, row in enumerate(scores):
        for a, b in itertools.combinations(models, 2):
            out.append((i, a, b, "model_a" if row[a] > row[b] else "model_b" if row[b] > row[a] else "tie"))
    return out


def fit_routellm_mf(fold: Fold, ctx: dict) -> Fitted:
    import torch
    from routellm.routers.matrix_factorization.train_matrix_factorization import MFModel_Train, train_loops
    table, emb = ctx["table"], ctx["emb"]
    k = len(table.experts)
    # RouteLLM's MF learns from pairwise battles with a winner (ties dropped, as their training script does).
    battles = [(i, a, b, w) for i, a, b, w in _battles(table.scores[fold.train_idx], list(range(k))) if w != "tie"]
    random.shuffle(battles)
    cut = int(len(battles) * ROUTELLM_MF["train_share"])

    def loader(rows: list, batch: int, shuffle: bool) -> torch.utils.data.DataLoader:
        win = torch.tensor([a if w == "model_a" else b for _, a, b, w in rows])
        lose = torch.tensor([b if w == "model_a" else a for _, a, b, w in rows])
        prompt = torch.tensor([i for i, *_ in rows])
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(win, lose, prompt), batch, shuffle=shuffle)

    npy = fold.work / "routellm_train_emb.npy"
    np.save(npy, emb[fold.train_idx])
    net = MFModel_Train(dim=ROUTELLM_MF["dim"], num_models=k, num_prompts=len(fold.train_idx),
                        text_dim=emb.shape[1], use_proj=ROUTELLM_MF["use_proj"], npy_path=str(npy))
    train_loops(net, loader(battles[:cut], ROUTELLM_MF["batch_size"], True), loader(battles[cut:], 1024, False),
                lr=ROUTELLM_MF["lr"], weight_decay=ROUTELLM_MF["weight_decay"], alpha=ROUTELLM_MF["alpha"],
                num_epochs=ctx["args"].routellm_mf_epochs, device="cpu")
    net.eval()
    strong, weak = fold.strong, fold.weak

    @torch.no_grad()
    def p_strong(x: np.ndarray) -> np.ndarray:
        # MFModel.pred_win_rate: sigmoid(logit(strong) - logit(weak)) = sigmoid of their forward(strong, weak).
        net.Q = torch.nn.Embedding.from_pretrained(torch.from_numpy(x), freeze=True)
        n = len(x)
        logits = net(torch.full((n,), strong), torch.full((n,), weak), torch.arange(n), test=True)
        return torch.sigmoid(logits.reshape(n)).numpy()

    config = ROUTELLM_MF | {"num_epochs": ctx["args"].routellm_mf_epochs, "battles": len(battles),
                            "their_script_num_epochs": ROUTELLM_MF["num_epochs"]}
    return _binary(p_strong, fold, ctx, {"config": config})


def fit_routellm_sw(fold: Fold, ctx: dict) -> Fitted:
    import pandas as pd
    import routellm.routers.routers as rr
    from routellm.routers.similarity_weighted.utils import compute_elo_mle_with_tie, compute_tiers
    table, emb = ctx["table"], ctx["emb"]
    strong, weak = fold.strong, fold.weak
    names = table.experts
    # Battles between the routed pair on every training prompt, ties kept (their Elo counts them).
    rows = _battles(table.scores[fold.train_idx][:, [weak, strong]], [0, 1])
    router = rr.SWRankingRouter.__new__(rr.SWRankingRouter)   # its constructor downloads Chatbot Arena
    router.strong_model, router.weak_model = names[strong], names[weak]
    router.arena_df = pd.DataFrame([{"model_a": names[[weak, strong][a]], "model_b": names[[weak, strong][b]],
                                     "winner": w} for _, a, b, w in rows])
    router.arena_conv_embedding = emb[fold.train_idx][[i for i, *_ in rows]]
    router.embedding_model = "text-embedding-3-small"
    ratings = compute_elo_mle_with_tie(router.arena_df)
    router.model2tier = compute_tiers(ratings, num_tiers=2)   # their default is 10 tiers over ~64 models
    router.arena_df["model_a"] = router.arena_df["model_a"].map(router.model2tier)
    router.arena_df["model_b"] = router.arena_df["model_b"].map(router.model2tier)
    lookup = _EmbeddingLookup(table.prompts, emb)
    rr.OPENAI_CLIENT = lookup      # their calculate_strong_win_rate asks OpenAI for the prompt's embedding

    def p_strong(x: np.ndarray) -> np.ndarray:
        return np.array([router.calculate_strong_win_rate(lookup.prompt_of(v)) for v in x])

    config = {"num_tiers": 2, "battles": "weak vs strong on each training prompt, ties kept",
              "weighting": "theirs: 10 * 10 ** (sim / max_sim)"}
    fitted = _binary(p_strong, fold, ctx, {"config": config})
    fitted.route_one = lambda j: router.calculate_strong_win_rate(table.prompts[j])
    return fitted


class _EmbeddingLookup:
    """Stands in for RouteLLM's OpenAI client: ``embeddings.create`` answers with the shared embedding."""

    def __init__(self, prompts: tuple[str, ...], emb: np.ndarray) -> None:
        self._row = {p: j for j, p in enumerate(prompts)}
        self._emb = emb
        self._by_bytes = {e.tobytes(): p for p, e in zip(prompts, emb)}
        self.embeddings = self

    def embedding_of(self, prompt: str) -> np.ndarray:
        return self._emb[self._row[prompt]]

    def create(self, *, input: list[str], model: str) -> Any:
        vec = self.embedding_of(input[0])
        return type("Resp", (), {"data": [type("Item", (), {"embedding": vec})()]})()

    def prompt_of(self, v: np.ndarray) -> str:
        return self._by_bytes[np.ascontiguousarray(v).tobytes()]


def _binary(p_strong: Callable[[np.ndarray], np.ndarray], fold: Fold, ctx: dict, notes: dict) -> Fitted:
    table, emb = ctx["table"], ctx["emb"]
    strong, weak = fold.strong, fold.weak

    def route(x: np.ndarray) -> np.ndarray:   # RouteLLM's route(): strong when win rate >= threshold (0.5 here)
        return np.where(p_strong(x) >= 0.5, strong, weak)

    return Fitted(route, lambda j: route(emb[j:j + 1]), p_strong, "strong_probability", (weak, strong),
                  notes=notes | {"pair": {"strong": table.experts[strong], "weak": table.experts[weak],
                                          "chosen_by": "strong = best single on the training folds, weak = cheapest"},
                                 "operating_point": "threshold 0.5 on the strong win rate"})


PEERS: dict[str, Callable[[Fold, dict], Fitted]] = {
    "llmrouter_knn": fit_llmrouter_knn,
    "llmrouter_svm": fit_llmrouter_svm,
    "llmrouter_mlp": fit_llmrouter_mlp,
    "llmrouter_mf": fit_llmrouter_mf,
    "llmrouter_elo": fit_llmrouter_elo,
    "llmrouter_hybrid": fit_llmrouter_hybrid,
    "llmrouter_graph": fit_llmrouter_graph,
    "routellm_mf": fit_routellm_mf,
    "routellm_sw_ranking": fit_routellm_sw,
}
PEERS_ALL: dict[str, Callable[[Fold, dict], Fitted]] = {"tryage": fit_tryage, "tryage_shipped": fit_tryage_shipped,
                                                         "knn": fit_knn, **PEERS}
SOURCES = {
    "tryage": "tryage.predictors.PerceptivePredictor (defaults), fitted on the shared embeddings",
    "tryage_shipped": "tryage.predictors.PerceptivePredictor(target_smoothing=50), as the embedded open-llms router",
    "knn": "tryage.evaluation.KNNPredictor",
    "llmrouter_knn": "llmrouter-lib: llmrouter.models.KNNRouter + KNNRouterTrainer",
    "llmrouter_svm": "llmrouter-lib: llmrouter.models.SVMRouter + SVMRouterTrainer",
    "llmrouter_mlp": "llmrouter-lib: llmrouter.models.MLPRouter + MLPTrainer",
    "llmrouter_mf": "llmrouter-lib: llmrouter.models.MFRouter + MFRouterTrainer",
    "llmrouter_elo": "llmrouter-lib: llmrouter.models.EloRouter + EloRouterTrainer",
    "llmrouter_hybrid": "llmrouter-lib: llmrouter.models.HybridLLMRouter + HybridLLMTrainer",
    "llmrouter_graph": "llmrouter-lib: llmrouter.models.GraphRouter + GraphTrainer",
    "routellm_mf": "routellm: matrix_factorization MFModel_Train + train_loops, scored as MFModel.pred_win_rate",
    "routellm_sw_ranking": "routellm: routers.SWRankingRouter.calculate_strong_win_rate",
}


if __name__ == "__main__":
    main()
