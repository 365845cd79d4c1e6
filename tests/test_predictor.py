from __future__ import annotations

import json

import numpy as np
import pytest

from tryage import ExpertLibrary, NotFittedError, QTable, TryageRouter
from tryage.errors import ConfigurationError, RouterFormatError
from tryage.predictors import PerceptivePredictor

UNSEEN = {"coder": "import class return code", "lawyer": "court statute of the contract",
          "biologist": "cell protein and gene"}


@pytest.fixture()
def trained(tiny_encoder, domain_qtable_path, small_library_path):
    q = QTable.from_file(domain_qtable_path)
    lib = ExpertLibrary.from_json(small_library_path)
    router = PerceptivePredictor(str(tiny_encoder), hidden_dim=32, learning_rate=1e-2, epochs=150,
                                 validation_fraction=0.0, seed=0, progress=False)
    return router.fit(q, lib), q


def test_head_router_predicts_each_domains_expert_on_unseen_prompts(trained):
    router, _ = trained
    predicted = router.predict_losses(list(UNSEEN.values()))
    chosen = [router.experts[i] for i in predicted.argmin(1)]
    assert chosen == list(UNSEEN)
    assert predicted.min(1) == pytest.approx([1.0, 1.0, 1.0], abs=0.35)  # in Q-table units


def test_router_is_reproducible_with_a_seed(tiny_encoder, domain_qtable_path):
    q = QTable.from_file(domain_qtable_path)
    a = PerceptivePredictor(str(tiny_encoder), epochs=5, seed=7, progress=False).fit(q)
    b = PerceptivePredictor(str(tiny_encoder), epochs=5, seed=7, progress=False).fit(q)
    np.testing.assert_allclose(a.predict_losses(["gene"]), b.predict_losses(["gene"]), rtol=1e-6)


def test_save_and_load_round_trip(trained, tmp_path):
    router, _ = trained
    folder = router.save_pretrained(tmp_path / "router")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "experts.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == 1 and config["experts"] == ["coder", "lawyer", "biologist"]
    again = PerceptivePredictor.from_pretrained(folder)
    prompts = list(UNSEEN.values())
    np.testing.assert_allclose(again.predict_losses(prompts), router.predict_losses(prompts), rtol=1e-5)
    assert again.library_["lawyer"].parameters == 7_000_000_000
    tr = TryageRouter.from_pretrained(folder)
    assert tr.route("court statute [Flag: smallest model]").expert == "coder"
    assert tr.route("court statute of the contract").expert == "lawyer"


def test_saving_over_an_existing_router_replaces_it_whole(trained, tmp_path):
    router, _ = trained
    target = tmp_path / "router"
    router.save_pretrained(target)
    (target / "stale.txt").write_text("from an older save")
    router.save_pretrained(target)
    assert not (target / "stale.txt").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left


def test_finetune_mode_trains_the_encoder_and_saves_it(tiny_encoder, domain_qtable_path, tmp_path):
    q = QTable.from_file(domain_qtable_path)
    router = PerceptivePredictor(str(tiny_encoder), mode="finetune", epochs=2, batch_size=8,
                                 validation_fraction=0.2, progress=False).fit(q)
    before = PerceptivePredictor(str(tiny_encoder), progress=False).encode(["gene protein"])
    after = router.encode(["gene protein"])
    assert not np.allclose(before, after)
    folder = router.save_pretrained(tmp_path / "ft")
    assert (folder / "encoder" / "config.json").exists()
    np.testing.assert_allclose(PerceptivePredictor.from_pretrained(folder).predict_losses(["gene"]),
                               router.predict_losses(["gene"]), rtol=1e-5)


def test_loading_rejects_foreign_or_broken_folders(trained, tmp_path):
    router, _ = trained
    with pytest.raises(FileNotFoundError, match="router folder not found"):
        PerceptivePredictor.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RouterFormatError, match="missing config.json, model.safetensors, experts.json"):
        PerceptivePredictor.from_pretrained(tmp_path / "empty")
    folder = router.save_pretrained(tmp_path / "r")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(RouterFormatError, match="format_version 99 is not supported"):
        PerceptivePredictor.from_pretrained(folder)


def test_router_for_another_expert_set_is_a_clear_error(trained, tmp_path):
    from tryage import Expert, RouterMismatchError

    router, _ = trained
    folder = router.save_pretrained(tmp_path / "r")
    other = ExpertLibrary([Expert("coder"), Expert("lawyer"), Expert("chemist")])
    with pytest.raises(RouterMismatchError, match="router-only experts: 'biologist'; library-only experts: 'chemist'"):
        TryageRouter.from_pretrained(folder, library=other)


def test_bad_parameters_and_unfitted_use_are_explained(tiny_encoder, domain_qtable_path):
    q = QTable.from_file(domain_qtable_path)
    with pytest.raises(ConfigurationError, match="mode must be one of \\('head', 'finetune'\\), got 'full'"):
        PerceptivePredictor(str(tiny_encoder), mode="full").fit(q)
    with pytest.raises(NotFittedError, match="call fit"):
        PerceptivePredictor(str(tiny_encoder)).predict_losses(["x"])
    with pytest.raises(FileNotFoundError, match="encoder folder not found"):
        PerceptivePredictor("./no/such/encoder").fit(q)


@pytest.mark.slow
def test_bundled_minilm_loads_offline_and_routes(domain_qtable_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    q = QTable.from_file(domain_qtable_path)
    router = PerceptivePredictor(epochs=100, hidden_dim=32, learning_rate=1e-2, validation_fraction=0.0,
                                 progress=False).fit(q)
    assert router.text_encoder_.dim == 6 * 384  # every MiniLM layer, pooled and concatenated
    assert router.experts[int(router.predict_losses(["protein folding in a cell"]).argmin())] == "biologist"


def test_all_layer_pooling_widens_the_embedding_and_survives_a_round_trip(tiny_encoder, domain_qtable_path, tmp_path):
    q = QTable.from_file(domain_qtable_path)
    router = PerceptivePredictor(str(tiny_encoder), layers="all", epochs=3, progress=False).fit(q)
    assert router.encode(["gene"]).shape == (1, 64)  # 2 layers x 32 hidden
    again = PerceptivePredictor.from_pretrained(router.save_pretrained(tmp_path / "r"))
    assert again.encoder_spec_.layers == "all"
    np.testing.assert_allclose(again.predict_losses(["gene cell"]), router.predict_losses(["gene cell"]), rtol=1e-5)
    with pytest.raises(ConfigurationError, match="layers must be 'last' or 'all', got 'middle'"):
        PerceptivePredictor(str(tiny_encoder), layers="middle").fit(q)


def test_neighbour_smoothing_of_0_1_outcomes_is_off_for_tiny_tables_and_on_for_large(tiny_encoder):
    rows = [{"prompt": f"gene protein {i}" if i % 2 else f"court statute {i}",
             "scores": {"a": float(i % 2), "b": float(1 - i % 2)}} for i in range(12)]
    small = PerceptivePredictor(str(tiny_encoder), epochs=2, validation_fraction=0.0, progress=False)
    small.fit(QTable.from_records(rows))
    assert small.objective_ == "bce" and small.smoothing_ == 0
    many = [dict(r, prompt=f"{r['prompt']} copy {j}") for j in range(20) for r in rows]  # 240 rows
    large = PerceptivePredictor(str(tiny_encoder), epochs=2, validation_fraction=0.0, progress=False)
    large.fit(QTable.from_records(many))
    assert large.smoothing_ == 4  # min(20, 240 // 50)


def test_knn_predictor_averages_the_k_most_cosine_similar_training_rows():
    from tryage.predictors import KNNPredictor, knn_leave_one_out

    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 5))
    losses = rng.uniform(size=(40, 3))
    table = QTable(tuple(f"p{i}" for i in range(40)), ("a", "b", "c"), losses)
    queries = rng.normal(size=(6, 5))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    nearest = np.argsort(-(unit(queries) @ unit(train).T), axis=1)[:, :7]
    knn = KNNPredictor(lambda prompts: None, k=7).fit(table, embeddings=train)
    np.testing.assert_allclose(knn.predict_from_embeddings(queries), losses[nearest].mean(axis=1))
    sims = unit(train) @ unit(train).T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_allclose(knn_leave_one_out(train, losses, k=5),
                               losses[np.argsort(-sims, axis=1)[:, :5]].mean(axis=1))
    with pytest.raises(ConfigurationError, match="k must be a positive integer, got 0"):
        KNNPredictor(lambda prompts: None, k=0).fit(table, embeddings=train)
    with pytest.raises(NotFittedError):
        KNNPredictor(lambda prompts: None).experts  # noqa: B018


def test_best_single_and_oracle_predictors_route_as_their_names_say():
    from tryage.errors import QTableError
    from tryage.predictors import BestSinglePredictor, OraclePredictor

    table = QTable(("x", "y", "z"), ("a", "b"), np.array([[0.9, 0.1], [0.2, 0.6], [0.3, 0.5]]))
    best = TryageRouter(BestSinglePredictor().fit(table))
    assert [d.expert for d in best.route_batch(["x", "y", "anything"])] == ["b", "b", "b"]
    oracle = TryageRouter(OraclePredictor(table))
    assert [d.expert for d in oracle.route_batch(["x", "y", "z"])] == ["b", "a", "a"]
    with pytest.raises(QTableError, match="only knows prompts of its Q-table"):
        oracle.route("not in the table")


def test_description_similarity_adds_experts_known_by_description_only(trained):
    from tryage.predictors import DescriptionSimilarityPredictor

    predictor, _ = trained
    extra = DescriptionSimilarityPredictor(predictor, ["chef"], ["recipe oven bake flour sugar"])
    assert extra.experts == (*predictor.experts, "chef")
    prompts = ["bake the flour and sugar in the oven", "court statute of the contract"]
    out = extra.predict_losses(prompts)
    np.testing.assert_allclose(out[:, :3], predictor.predict_losses(prompts), rtol=1e-5)
    assert out[0, 3] < out[1, 3]  # the cooking prompt is closer to the chef's description
    with pytest.raises(ConfigurationError, match="encode\\(\\) or embed\\(\\)"):
        DescriptionSimilarityPredictor(object(), ["chef"], ["recipes"])  # type: ignore[arg-type]


def test_perceptive_config_round_trips_and_names_what_is_missing(trained, tmp_path):
    from tryage.predictors import PerceptiveConfig

    predictor, _ = trained
    config = predictor.config()
    assert PerceptiveConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    saved = json.loads((predictor.save_pretrained(tmp_path / "r") / "config.json").read_text())
    assert saved == config.to_dict() and saved["kind"] == "tryage.PerceptiveRouter"  # format unchanged on disk
    broken = {k: v for k, v in config.to_dict().items() if k != "head"}
    with pytest.raises(RouterFormatError, match="lacks a required field: 'head'"):
        PerceptiveConfig.from_dict(broken)
