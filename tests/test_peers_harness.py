"""benchmarks/peers.py's arithmetic: tie-order labels, RouteLLM's pair metrics, paired bootstrap, inner CV, IRT.

Fast and peer-free: the peer packages (llmrouter-lib, routellm) are not needed; the one test that reads
their code skips when they are absent.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import peers_stats as ps

# Three prompts x four models: a clear winner, a three-way tie, nothing right.
SCORES = np.array([[0.0, 1.0, 0.0, 0.0],
                   [1.0, 0.0, 1.0, 1.0],
                   [0.0, 0.0, 0.0, 0.0]])


def test_label_groups_file_order_labels_the_first_tied_winner() -> None:
    groups = ps.label_groups(SCORES, "file")
    assert [ps.first_best(SCORES[i], order) for i, order in groups] == [1, 0, 0]


def test_label_groups_shuffled_spreads_ties_over_the_winners() -> None:
    tied = np.tile(SCORES[1], (3000, 1))
    labels = [ps.first_best(tied[i], order) for i, order in ps.label_groups(tied, "shuffled", seed=1)]
    counts = np.bincount(labels, minlength=4) / len(labels)
    assert counts[1] == 0                                   # never a loser
    np.testing.assert_allclose(counts[[0, 2, 3]], 1 / 3, atol=0.03)
    clear = [ps.first_best(SCORES[0], order) for _, order in ps.label_groups(np.tile(SCORES[0], (50, 1)),
                                                                               "shuffled")]
    assert set(clear) == {1}                                 # a clear winner stays the label


def test_label_groups_all_winners_gives_each_tied_winner_once_and_drops_all_ties() -> None:
    groups = ps.label_groups(SCORES, "all-winners")
    labels = [(i, ps.first_best(SCORES[i], order)) for i, order in groups]
    assert labels == [(0, 1), (1, 0), (1, 2), (1, 3)]        # prompt 2 (every model ties) carries no label
    assert all(sorted(order) == [0, 1, 2, 3] for _, order in groups)


def test_label_groups_rejects_an_unknown_order() -> None:
    with pytest.raises(ValueError, match="tie_order='first'"):
        ps.label_groups(SCORES, "first")


def test_pair_curve_apgr_and_cpt_by_hand() -> None:
    weak = np.array([0.0, 0.0, 1.0, 0.0])
    strong = np.array([1.0, 1.0, 1.0, 0.0])
    perfect = np.array([0.9, 0.8, 0.1, 0.0])                  # the two prompts the strong model fixes first
    curve = ps.pair_curve(perfect, weak, strong)
    np.testing.assert_allclose(curve, [0.25, 0.5, 0.75, 0.75, 0.75])
    # PGR 0, .5, 1, 1, 1 over shares 0, .25, .5, .75, 1: trapezoid area = (.25+.75+1+1)/4 = 0.75
    assert ps.apgr(curve) == pytest.approx(0.75)
    assert ps.cpt(curve, 0.5) == pytest.approx(0.25)
    assert ps.cpt(curve, 0.8) == pytest.approx(0.5)
    worst = ps.pair_curve(-perfect, weak, strong)
    assert ps.apgr(worst) < 0.5 < ps.apgr(curve)
    assert ps.cpt(worst, 0.8) == pytest.approx(1.0)


def test_pgr_refuses_a_pair_without_a_gap() -> None:
    with pytest.raises(ValueError, match="no quality gap"):
        ps.pgr(ps.pair_curve(np.zeros(3), np.ones(3), np.ones(3)))


def test_calibrate_threshold_picks_the_best_training_cut() -> None:
    weak = np.array([0.0, 0.0, 1.0, 1.0])
    strong = np.array([1.0, 1.0, 0.0, 1.0])
    signal = np.array([0.9, 0.7, 0.2, 0.5])
    t = ps.calibrate_threshold(signal, weak, strong)
    assert t == pytest.approx(0.7)                            # strong on the first two, weak where weak wins
    assert ps.calibrate_threshold(signal, np.ones(4), np.zeros(4)) == float("inf")


def test_paired_bootstrap_intervals_cover_the_mean_and_pair_the_draws() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random(2000)
    same_plus = ref + 0.01                                    # always 0.01 better: a paired difference is exact
    noisy = rng.random(2000)
    out = ps.paired_bootstrap({"tryage": ref, "better": same_plus, "other": noisy}, "tryage", n_boot=300)
    lo, hi = out["tryage"]["ci95"]
    assert lo < ref.mean() < hi and hi - lo < 0.05
    np.testing.assert_allclose(out["better"]["minus_tryage_ci95"], [0.01, 0.01], atol=1e-9)
    assert out["better"]["share_of_draws_above_reference"] == 1.0
    d_lo, d_hi = out["other"]["minus_tryage_ci95"]
    assert d_lo < out["other"]["minus_tryage"] < d_hi and d_hi - d_lo > 0.01


def test_inner_splits_stay_inside_the_training_fold() -> None:
    train = np.arange(10, 40)
    splits = list(ps.inner_splits(train, 3))
    assert len(splits) == 3
    seen = np.concatenate([val for _, val in splits])
    np.testing.assert_array_equal(np.sort(seen), train)       # each training prompt validated once
    for tr, val in splits:
        assert not set(tr) & set(val) and set(tr) | set(val) == set(train)


def test_choose_takes_the_best_grid_point_and_the_first_on_a_tie() -> None:
    best, trials = ps.choose({"k": [5, 50, 500]}, lambda p: {5: 0.1, 50: 0.3, 500: 0.3}[p["k"]])
    assert best == {"k": 50} and len(trials) == 3


def test_markdown_table_lists_intervals_tie_order_and_tuning() -> None:
    result = {"reference": "tryage", "routers": {
        "tryage": {"mean_score": 0.66, "bootstrap": {"ci95": [0.65, 0.67]}, "tuning": {
            "chosen_per_fold": {"target_smoothing": [0, 50, 0, 0, 0]}}, "price_share": 0.8,
            "select_best_accuracy": 0.85, "train_seconds_per_fold": 12.0},
        "llmrouter_knn": {"mean_score": 0.57, "tie_order": "shuffled", "price_share": 0.3,
                          "bootstrap": {"ci95": [0.56, 0.58], "minus_tryage": -0.09,
                                        "minus_tryage_ci95": [-0.1, -0.08]}}}}
    table = ps.markdown_table(result)
    assert "| tryage | — | inner CV: target_smoothing=0/50/0/0/0 | 0.660 [0.650, 0.670] |" in table
    assert "| llmrouter_knn | shuffled | — | 0.570 [0.560, 0.580] | -0.090 [-0.100, -0.080] |" in table
    text = "a\n<!-- peers-table:begin -->\nold\n<!-- peers-table:end -->\nb"
    replaced = ps.replace_between(text, table)
    assert replaced.startswith("a\n<!-- peers-table:begin -->\n| router |") and replaced.endswith("end -->\nb")
    assert "\nold\n" not in replaced and replaced.count("0.660") == 1


def test_irt_router_recovers_who_answers_a_synthetic_matrix() -> None:
    pytest.importorskip("torch")
    from peers_irt import IRTRouter

    rng = np.random.default_rng(0)
    n, f, k, d = 600, 12, 4, 2
    x = rng.normal(size=(n, f)).astype(np.float32)
    w = rng.normal(size=(f, d))
    a = rng.normal(size=(k, d)) * 2
    b = rng.normal(size=k)
    truth = 1 / (1 + np.exp(-((x @ w) @ a.T - b)))
    y = (rng.random((n, k)) < truth).astype(float)
    irt = IRTRouter(dim=2, epochs=400, learning_rate=0.05).fit(x[:500], y[:500])
    p = irt.predict_proba(x[500:])
    assert p.shape == (100, k) and np.all((p >= 0) & (p <= 1))
    assert np.corrcoef(p.ravel(), truth[500:].ravel())[0, 1] > 0.8
    routed = truth[500:][np.arange(100), p.argmax(1)].mean()
    assert routed > truth[500:].mean(0).max() + 0.05          # beats the best single model on unseen prompts


@pytest.mark.skipif(importlib.util.find_spec("llmrouter") is None,
                    reason="llmrouter-lib (a peers-only dependency, pip install -e '.[bench]') is not installed")
def test_llmrouter_reads_the_first_row_of_a_tie() -> None:  # pragma: no cover - peers environment only
    import pandas as pd
    df = pd.DataFrame({"query": ["q", "q", "q"], "model_name": ["m1", "m2", "m3"], "performance": [0.0, 1.0, 1.0]})
    assert df.loc[df.groupby("query")["performance"].idxmax(), "model_name"].tolist() == ["m2"]


def test_llmrouter_routing_file_gives_their_idxmax_rule_the_asked_tie_order(tmp_path: Path) -> None:
    """The file peers.py writes, read with LLMRouter's own label rule (groupby query, idxmax of performance)."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("torch")
    pytest.importorskip("yaml")
    from types import SimpleNamespace

    import peers_routers as pr

    experts = ("m0", "m1", "m2", "m3")
    table = SimpleNamespace(experts=experts, prompts=("p0", "p1", "p2"), scores=SCORES)
    ctx = {"table": table, "emb": np.eye(3, dtype=np.float32), "args": SimpleNamespace(seed=0),
           "models_json": {m: {"size": "7B"} for m in experts}}
    fold = pr.Fold(0, np.arange(3), np.arange(0), 0, 1, tmp_path)

    def labels(tie: str, nudge: bool = False) -> list[tuple[str, str]]:
        ctx["tie_order"] = tie
        import yaml
        cfg = yaml.safe_load(Path(pr._llmrouter_config(fold, ctx, "knn", None, nudge=nudge)).read_text())
        df = pd.read_json(cfg["data_path"]["routing_data_train"], lines=True)
        best = df.loc[df.groupby("query", sort=False)["performance"].idxmax()]
        return list(zip(best["query"], best["model_name"]))

    assert labels("file") == [("p0", "m1"), ("p1", "m0"), ("p2", "m0")]
    assert labels("all-winners") == [("p0", "m1"), ("p1", "m0"), ("p1\n[copy 1]", "m2"), ("p1\n[copy 2]", "m3")]
    # GraphRouter reads ties by column (np.argmax), not row: the nudge makes the chosen winner strictly best
    ctx["tie_order"] = "all-winners"
    cfg = pr._llmrouter_config(fold, ctx, "graph", None, nudge=True)
    import yaml
    df = pd.read_json(yaml.safe_load(Path(cfg).read_text())["data_path"]["routing_data_train"], lines=True)
    wide = df.pivot(index="query", columns="model_name", values="performance")
    assert [experts[int(np.argmax(wide.loc[q].to_numpy()))] for q in ("p1", "p1\n[copy 1]", "p1\n[copy 2]")] \
        == ["m0", "m2", "m3"]


def test_finalize_adds_paired_intervals_and_the_pair_table_from_stored_choices() -> None:
    from peers_report import finalize

    rng = np.random.default_rng(0)
    n = 400
    scores = (rng.random((n, 3)) < [0.3, 0.5, 0.7]).astype(float)     # model 2 strong, model 0 weak
    fold_of = np.repeat([0, 1], n // 2)
    oracle_signal = scores[:, 2] - scores[:, 0]                       # knows when the strong model helps
    result = {
        "experts": ["weak", "mid", "strong"], "fold_of": fold_of.tolist(), "pair_by_fold": [["weak", "strong"]] * 2,
        "reference": "tryage", "n_boot": 200, "deviations": ["x"], "tuning": {"inner_folds": 2, "grids": {}},
        "routers": {
            "tryage": {"mean_score": 0.0, "oof_choice": "2" * n,
                       "pair_oof": {"signal": oracle_signal.tolist(), "threshold_per_fold": [0.5, 0.5]}},
            "knn": {"mean_score": 0.0, "oof_choice": "0" * n,
                    "pair_oof": {"signal": rng.random(n).tolist(), "threshold_per_fold": [2.0, 2.0]}},
            "random": {"mean_score": 0.5}, "oracle": {"mean_score": 0.9}}}
    finalize(result, scores, n_boot=200)
    knn = result["routers"]["knn"]["bootstrap"]
    assert knn["mean"] == pytest.approx(scores[:, 0].mean())
    assert knn["minus_tryage"] == pytest.approx(scores[:, 0].mean() - scores[:, 2].mean())
    assert knn["minus_tryage_ci95"][1] < 0                              # the weak model is surely worse
    pair = result["pair"]
    assert pair["all_weak"] == pytest.approx(scores[:, 0].mean())
    assert pair["oracle"] == pytest.approx(np.maximum(scores[:, 0], scores[:, 2]).mean())
    t = pair["routers"]["tryage"]
    assert t["mean_score"] == pytest.approx(pair["oracle"]) and t["apgr"] > 0.8 and t["cpt80"] < 0.5
    k = pair["routers"]["knn"]
    assert k["strong_share"] == 0.0 and k["mean_score"] == pytest.approx(pair["all_weak"])
    assert 0.3 < k["apgr"] < 0.7                                       # a random signal recovers about half
    table = ps.markdown_table(result)
    assert "Two-model comparison (weak weak, strong strong" in table and "- x" in table
