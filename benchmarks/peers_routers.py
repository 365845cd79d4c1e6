"""The routers of benchmarks/peers.py: Tryage, its kNN and IRT baselines, and the peers through their own classes.

Each ``fit_*(fold, ctx, **params)`` trains one router on a fold's training prompts and returns a ``Fitted``;
``params`` override the published hyper-parameters (the inner-CV grid of ``GRIDS``). The peers' code is not
changed: what differs from their own setup is written in each router's notes and in peers.py's deviations.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from peers_stats import first_best, label_groups

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


def fit_knn(fold: Fold, ctx: dict, k: int | None = None) -> Fitted:
    from tryage.predictors import KNNPredictor
    table, emb = ctx["table"], ctx["emb"]
    k = k or ctx["args"].knn_k
    knn = KNNPredictor(ctx["encoder"].encode, k=k).fit(table.subset(fold.train_idx),
                                                                       embeddings=emb[fold.train_idx])

    def route(x: np.ndarray) -> np.ndarray:
        return knn.predict_from_embeddings(x).argmin(1)

    return Fitted(route, lambda j: route(emb[j:j + 1]), knn.predict_from_embeddings, "losses",
                  notes={"config": {"k": k, "metric": "cosine",
                                    "predicts": "mean loss of the k nearest"}})


def fit_irt(fold: Fold, ctx: dict, dim: int = 16) -> Fitted:
    """The IRT baseline (benchmarks/peers_irt.py): ability = linear map of the embedding, per-model a_m, b_m."""
    from peers_irt import IRTRouter
    table, emb = ctx["table"], ctx["emb"]
    irt = IRTRouter(dim=dim, seed=ctx["args"].seed + fold.index).fit(emb[fold.train_idx],
                                                                       table.scores[fold.train_idx])

    def route(x: np.ndarray) -> np.ndarray:
        return irt.predict_losses(x).argmin(1)

    return Fitted(route, lambda j: route(emb[j:j + 1]), irt.predict_losses, "losses",
                  notes={"config": irt.get_params() | {"objective": "binary cross-entropy, scores as soft targets"}})


# -- LLMRouter (llmrouter-lib) ---------------------------------------------------------------------

def _llmrouter_config(fold: Fold, ctx: dict, name: str, hparam: dict | None, *, models: list[str] | None = None,
                      nudge: bool = False, **extra: Any) -> str:
    """Write one fold's training data in LLMRouter's own file formats and a YAML config pointing at it.

    One group of rows per (query, model), models in models.json order as in LLMRouter's own routing data,
    unless the tie order (``ctx["tie_order"]``, see peers_stats.label_groups) reorders or copies the groups:
    their routers label a query with the first row holding its best performance (pandas' idxmax).
    ``models`` restricts the file and llm_data to those models; ``nudge`` raises the chosen winner's
    performance by 1e-6 (GraphRouter labels by column order, not row order).
    """
    import torch
    import yaml
    table, emb, models_json = ctx["table"], ctx["emb"], ctx["models_json"]
    tie = ctx.get("tie_order", "file")
    order = [m for m in models_json if m in table.experts and (models is None or m in models)]
    data = fold.work / f"data-{tie}-{len(order)}{'-nudged' if nudge and tie != 'file' else ''}"
    emb_path, routing_path, llm_path = data / "query_embeddings.pt", data / "routing_train.jsonl", data / "llm.json"
    if not routing_path.exists():
        data.mkdir(parents=True, exist_ok=True)
        torch.save(torch.from_numpy(emb[fold.train_idx]), emb_path)
        sub = table.scores[np.ix_(fold.train_idx, [table.experts.index(m) for m in order])]
        copies: dict[int, int] = {}
        with routing_path.open("w") as f:
            for local, cols in label_groups(sub, tie, seed=ctx["args"].seed + fold.index):
                copy = copies[local] = copies.get(local, -1) + 1
                query = table.prompts[fold.train_idx[local]] + (f"\n[copy {copy}]" if copy else "")
                label = first_best(sub[local], cols)
                for c in cols:
                    perf = float(sub[local, c]) + (1e-6 if nudge and tie != "file" and c == label else 0.0)
                    f.write(json.dumps({"query": query, "model_name": order[c], "performance": perf,
                                        "embedding_id": local}) + "\n")
        llm_path.write_text(json.dumps({m: models_json[m] for m in order}))
    saved = fold.work / f"{name}-{data.name}.{'pt' if name.startswith('graph') else 'pkl'}"
    cfg = {"data_path": {"query_embedding_data": str(emb_path), "routing_data_train": str(routing_path),
                         "llm_data": str(llm_path)},
           "model_path": {"ini_model_path": "", "save_model_path": str(saved), "load_model_path": str(saved)},
           "metric": {"weights": {"performance": 1, "cost": 0, "llm_judge": 0}}, **extra}
    if hparam is not None:
        cfg["hparam"] = hparam
    path = fold.work / f"{name}-{data.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _names_to_idx(names: Any, experts: tuple[str, ...]) -> np.ndarray:
    return np.array([experts.index(str(n)) for n in names], dtype=int)


def fit_llmrouter_knn(fold: Fold, ctx: dict, **params: Any) -> Fitted:
    from llmrouter.models import KNNRouter, KNNRouterTrainer
    hparam = LLMROUTER_HPARAMS["knn"] | params
    router = KNNRouter(_llmrouter_config(fold, ctx, "knn", hparam))
    KNNRouterTrainer(router, device="cpu").train()
    return _classifier(router.knn_model.predict, ctx, hparam)


def fit_llmrouter_svm(fold: Fold, ctx: dict, **params: Any) -> Fitted:
    from llmrouter.models import SVMRouter, SVMRouterTrainer
    hparam = LLMROUTER_HPARAMS["svm"] | ({"probability": False} if ctx["args"].svm_without_probability else {}) \
        | params
    router = SVMRouter(_llmrouter_config(fold, ctx, "svm", hparam))
    SVMRouterTrainer(router, device="cpu").train()
    return _classifier(router.svm_model.predict, ctx, hparam)


def _classifier(predict: Callable, ctx: dict, hparam: dict) -> Fitted:
    emb, experts = ctx["emb"], ctx["table"].experts

    def route(x: np.ndarray) -> np.ndarray:
        return _names_to_idx(predict(x), experts)

    return Fitted(route, lambda j: route(emb[j:j + 1]), notes={"config": hparam})


def fit_llmrouter_mlp(fold: Fold, ctx: dict, **params: Any) -> Fitted:
    import torch
    from llmrouter.models import MLPRouter, MLPTrainer
    hparam = LLMROUTER_HPARAMS["mlp"] | ({"max_iter": ctx["args"].llmrouter_mlp_epochs}
                                         if ctx["args"].llmrouter_mlp_epochs else {}) | params
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


def fit_llmrouter_mf(fold: Fold, ctx: dict, **params: Any) -> Fitted:
    import torch
    from llmrouter.models import MFRouter, MFRouterTrainer
    hparam = LLMROUTER_HPARAMS["mf"] | {"text_dim": int(ctx["emb"].shape[1])} | params
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


def fit_llmrouter_hybrid(fold: Fold, ctx: dict, *, pair_only: bool = False, **params: Any) -> Fitted:
    from llmrouter.models import HybridLLMRouter, HybridLLMTrainer
    hparam = LLMROUTER_HPARAMS["hybrid"] | params
    models = [ctx["table"].experts[fold.weak], ctx["table"].experts[fold.strong]] if pair_only else None
    router = HybridLLMRouter(_llmrouter_config(fold, ctx, "hybrid", hparam, models=models, **HYBRID_MODE))
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
                  notes={"config": hparam | HYBRID_MODE,
                         "pair": {"weak": router.small_model_name, "strong": router.large_model_name,
                                  "chosen_by": "their code: smallest and largest size in llm_data"
                                  + (" (given only the weak/strong pair)" if pair_only else "")}})


def fit_llmrouter_hybrid_pair(fold: Fold, ctx: dict, **params: Any) -> Fitted:
    """HybridLLMRouter on RouteLLM's terms: llm_data and routing file hold only the weak/strong pair."""
    return fit_llmrouter_hybrid(fold, ctx, pair_only=True, **params)


def fit_llmrouter_graph(fold: Fold, ctx: dict, *, scaler: str = "theirs", **params: Any) -> Fitted:
    """GraphRouter; ``scaler="train"``: the query scaler fitted on the training embeddings only (see README)."""
    import llmrouter.models.graphrouter.router as graph_module
    import torch
    from llmrouter.models import GraphRouter, GraphTrainer
    table, emb, encoder, models_json = ctx["table"], ctx["emb"], ctx["encoder"], ctx["models_json"]
    # LLM nodes carry an embedding of each model's description, as their config's llm_data does
    # (their code falls back to random vectors without one); same encoder as the prompts.
    order = [m for m in models_json if m in table.experts]
    if "llm_embeddings" not in ctx:
        ctx["llm_embeddings"] = encoder.encode([models_json[m]["feature"] for m in order])
    llm_data = {m: {"embedding": [float(v) for v in ctx["llm_embeddings"][k]]} for k, m in enumerate(order)}
    hparam = LLMROUTER_HPARAMS["graph"] | params
    name = "graph" if scaler == "theirs" else "graph_trainscaler"
    router = GraphRouter(_llmrouter_config(fold, ctx, name, hparam, nudge=True, llm_data=llm_data,
                                           api_endpoint="unused: the answer is never requested"))
    GraphTrainer(router, device="cpu").train()
    patch = contextlib.nullcontext()
    if scaler == "train":
        from unittest import mock

        from sklearn.preprocessing import MinMaxScaler
        ids = router.routing_data_train["embedding_id"].unique()
        fitted = MinMaxScaler().fit(router.query_embedding_data[ids].numpy())  # = their training-time scaler
        fitted.fit = lambda x, y=None: fitted     # their route code's refit becomes a no-op
        patch = mock.patch.object(graph_module, "MinMaxScaler", lambda: fitted)
    lookup = _EmbeddingLookup(table.prompts, emb)
    # Their route_single/route_batch embed the query with Longformer: they get the shared embedding
    # instead. route_batch then calls the chosen model's API; that call is cut (the scores are known).
    graph_module.get_longformer_embedding = lambda text: torch.from_numpy(lookup.embedding_of(text))
    graph_module.call_api = lambda request, **kwargs: {"response": ""}

    def route_one(j: int) -> str:
        with patch:
            return router.route_single({"query": table.prompts[j]})["model_name"]

    def route(x: np.ndarray) -> np.ndarray:
        with patch:
            out = router.route_batch([{"query": lookup.prompt_of(v)} for v in x])
        return _names_to_idx([o["model_name"] for o in out], table.experts)

    return Fitted(route, route_one, notes={
        "config": hparam, "query_scaler": {
            "theirs": "their code: MinMaxScaler refit at routing time on the scaled training embeddings plus "
                      "the raw test embeddings (the defect in the README)",
            "train": "deviation: the MinMaxScaler fitted on the training embeddings at training time, reused "
                     "unchanged for the test queries"}[scaler],
        "route": "their route_batch (the fold's test queries join the training graph together); the one-at-a-time "
                 "latency is their route_single (one query joins the graph)",
        "llm_node_features": "MiniLM embedding of each model's models.json 'feature'"})


def fit_llmrouter_graph_trainscaler(fold: Fold, ctx: dict, **params: Any) -> Fitted:
    return fit_llmrouter_graph(fold, ctx, scaler="train", **params)


# -- RouteLLM (routellm) ---------------------------------------------------------------------------

def _battles(scores: np.ndarray, models: list[int]) -> list[tuple[int, int, int, str]]:
    """(prompt, model_a, model_b, winner) for every pair of ``models`` on every prompt."""
    out = []
    for i, row in enumerate(scores):
        for a, b in itertools.combinations(models, 2):
            out.append((i, a, b, "model_a" if row[a] > row[b] else "model_b" if row[b] > row[a] else "tie"))
    return out


def fit_routellm_mf(fold: Fold, ctx: dict, **params: Any) -> Fitted:
    import torch
    from routellm.routers.matrix_factorization.train_matrix_factorization import (
        MFModel_Train,
        train_loops,
    )
    table, emb = ctx["table"], ctx["emb"]
    config = ROUTELLM_MF | params
    k = len(table.experts)
    # RouteLLM's MF learns from pairwise battles with a winner (ties dropped, as their training script does).
    battles = [(i, a, b, w) for i, a, b, w in _battles(table.scores[fold.train_idx], list(range(k))) if w != "tie"]
    random.shuffle(battles)
    cut = int(len(battles) * config["train_share"])

    def loader(rows: list, batch: int, shuffle: bool) -> torch.utils.data.DataLoader:
        win = torch.tensor([a if w == "model_a" else b for _, a, b, w in rows])
        lose = torch.tensor([b if w == "model_a" else a for _, a, b, w in rows])
        prompt = torch.tensor([i for i, *_ in rows])
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(win, lose, prompt), batch, shuffle=shuffle)

    npy = fold.work / "routellm_train_emb.npy"
    np.save(npy, emb[fold.train_idx])
    net = MFModel_Train(dim=config["dim"], num_models=k, num_prompts=len(fold.train_idx),
                        text_dim=emb.shape[1], use_proj=config["use_proj"], npy_path=str(npy))
    train_loops(net, loader(battles[:cut], config["batch_size"], True), loader(battles[cut:], 1024, False),
                lr=config["lr"], weight_decay=config["weight_decay"], alpha=config["alpha"],
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

    config |= {"num_epochs": ctx["args"].routellm_mf_epochs, "battles": len(battles),
               "their_script_num_epochs": ROUTELLM_MF["num_epochs"]}
    return _binary(p_strong, fold, ctx, {"config": config})


def fit_routellm_sw(fold: Fold, ctx: dict) -> Fitted:
    import pandas as pd
    import routellm.routers.routers as rr
    from routellm.routers.similarity_weighted.utils import (
        compute_elo_mle_with_tie,
        compute_tiers,
    )
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
    "llmrouter_graph_trainscaler": fit_llmrouter_graph_trainscaler,
    "llmrouter_hybrid_pair": fit_llmrouter_hybrid_pair,
    "routellm_mf": fit_routellm_mf,
    "routellm_sw_ranking": fit_routellm_sw,
}
PEERS_ALL: dict[str, Callable[[Fold, dict], Fitted]] = {"tryage": fit_tryage, "tryage_shipped": fit_tryage_shipped,
                                                         "knn": fit_knn, "irt": fit_irt, **PEERS}
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
    "llmrouter_graph_trainscaler": "llmrouter-lib: GraphRouter + GraphTrainer, the query scaler fitted on training "
                                   "embeddings only (our deviation)",
    "llmrouter_hybrid_pair": "llmrouter-lib: HybridLLMRouter + HybridLLMTrainer given only the weak/strong pair",
    "irt": "benchmarks/peers_irt.py: multidimensional IRT, ability = linear map of the embedding",
    "routellm_mf": "routellm: matrix_factorization MFModel_Train + train_loops, scored as MFModel.pred_win_rate",
    "routellm_sw_ranking": "routellm: routers.SWRankingRouter.calculate_strong_win_rate",
}


LABEL_BASED = {"llmrouter_knn", "llmrouter_svm", "llmrouter_mlp", "llmrouter_mf", "llmrouter_elo", "llmrouter_graph",
               "llmrouter_graph_trainscaler"}
# The same small grid size for every router with hyper-parameters: one knob, three values around its default,
# chosen by inner CV on the outer training folds only (--tune).
GRIDS: dict[str, dict[str, list[Any]]] = {
    "tryage": {"target_smoothing": [0, 20, 50]},   # 0: off; 20 is the default (None = min(20, n // 50))
    "knn": {"k": [25, 100, 400]},
    "irt": {"dim": [4, 16, 64]},
    "llmrouter_knn": {"n_neighbors": [5, 25, 100]},
    "llmrouter_svm": {"C": [0.1, 1.0, 10.0]},
    "llmrouter_mf": {"latent_dim": [32, 128, 512]},
    "llmrouter_hybrid_pair": {"hidden_layer_sizes": [[64], [128, 64], [256, 128]]},
    "routellm_mf": {"alpha": [0.01, 0.1, 1.0]},
    "llmrouter_mlp": {"hidden_layer_sizes": [[64], [128, 64], [256, 128]]},
}
# The grid written for the router this run could not afford to tune on a shared 2-core machine (see NOT_TUNED):
# --tune picks it up once added to GRIDS.
GRIDS_NOT_RUN: dict[str, dict[str, list[Any]]] = {
    "llmrouter_graph": {"hidden_dim": [32, 64, 128]},
}
NOT_TUNED = {
    "tryage_shipped": "the configuration the embedded open-llms router ships (target smoothing 50), as is",
    "llmrouter_elo": "no hyper-parameters (query-independent ratings)",
    "routellm_sw_ranking": "no hyper-parameters besides the tier count (2 for a pair)",
    "llmrouter_graph": "not tuned in this run: CPU (10 GraphRouter trainings per fold per tie order)",
    "llmrouter_graph_trainscaler": "not tuned in this run: CPU (10 GraphRouter trainings per fold per tie order)",
    "llmrouter_hybrid": "not tuned: its own 9-model pair (smallest/largest size), as published",
}
LABELS = {
    "tryage": "Tryage router (defaults, target_smoothing tuned)", "tryage_shipped": "Tryage router as open-llms ships it",
    "knn": "kNN (tryage.evaluation)", "irt": "IRT router (MIRT head, ours)", "llmrouter_knn": "LLMRouter KNNRouter",
    "llmrouter_svm": "LLMRouter SVMRouter", "llmrouter_mlp": "LLMRouter MLPRouter", "llmrouter_mf": "LLMRouter MFRouter",
    "llmrouter_elo": "LLMRouter EloRouter", "llmrouter_hybrid": "LLMRouter HybridLLMRouter (its own pair)",
    "llmrouter_hybrid_pair": "LLMRouter HybridLLMRouter (weak/strong pair)", "llmrouter_graph": "LLMRouter GraphRouter",
    "llmrouter_graph_trainscaler": "LLMRouter GraphRouter, scaler fitted on training data (fixed)",
    "routellm_mf": "RouteLLM matrix factorisation", "routellm_sw_ranking": "RouteLLM similarity-weighted ranking",
}


