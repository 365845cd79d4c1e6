"""The paper's pipeline in miniature, every stage for real: measure → Q-table → router → evaluate → Pareto → latent.

Two tiny experts are created here with save_pretrained (a GPT-2 measured with the causal-LM loss and
a BERT measured with the masked-LM loss, so both measurement paths run), over 18 short passages of
three domains. The embedded default shipped in the package is checked too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from paper_fixtures import passages, tiny_causal_lm, tiny_masked_lm
from tryage import Expert, ExpertLibrary, TryageRouter
from tryage.defaults import DEFAULT_DIR
from tryage.errors import ConfigurationError
from tryage.research.latent import silhouette
from tryage.measure import LossRecorder, assemble_qtable, measure_losses


def test_paper_pipeline_runs_every_stage(tmp_path: Path, tiny_encoder: Path) -> None:
    from tryage.evaluation import evaluate_router, pareto_sweep, plot_pareto
    from tryage.predictors import PerceptivePredictor

    gpt = tiny_causal_lm(tmp_path / "gpt")
    bert = tiny_masked_lm(tmp_path / "bert")
    corpus = passages()
    rows = tmp_path / "rows.jsonl"

    # measure, interrupted after 7 passages of the first expert, then resumed
    measure_losses(gpt, corpus[:7], rows, name="tiny-gpt", dtype="float32", batch_size=4, progress=False)
    with rows.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "code-0", "exp')  # killed mid-line
    assert measure_losses(gpt, corpus, rows, name="tiny-gpt", dtype="float32", progress=False) == len(corpus) - 7
    measure_losses(bert, corpus, rows, name="tiny-bert", task="masked", dtype="float32", progress=False)
    recorded = LossRecorder(rows).rows()
    assert len(recorded) == 2 * len(corpus)
    assert len({(r["id"], r["expert"]) for r in recorded}) == 2 * len(corpus)
    assert {r["task"] for r in recorded} == {"causal", "masked"}

    # Q-table
    train = assemble_qtable(rows, corpus, splits=["validation"])
    test = assemble_qtable(rows, corpus, splits=["test"])
    assert (len(train), len(test)) == (12, 6) and train.experts == ("tiny-gpt", "tiny-bert")

    # router on a tiny real encoder, evaluation against the oracle
    library = ExpertLibrary([Expert("tiny-gpt", parameters=20_000, license="apache-2.0"),
                             Expert("tiny-bert", parameters=9_000, license="apache-2.0")])
    predictor = PerceptivePredictor(str(tiny_encoder), mode="head", epochs=20, validation_fraction=0.0,
                                    hidden_dim=16, progress=False).fit(train, library)
    router = TryageRouter(predictor, library)
    report = evaluate_router(router, test, train=train, group_by="domain").to_dict()
    assert 0.0 <= report["select_best_accuracy"] <= 1.0
    assert report["oracle"] <= report["router"] + 1e-12 and report["oracle"] <= report["random"]
    assert set(report["per_group"]) == {"code", "legal", "biomed"}
    assert sum(report["choices"].values()) == len(test)

    # Pareto front: as the size weight grows the router moves to the smaller expert
    predicted = predictor.predict_losses(list(test.prompts))
    points = pareto_sweep(predicted, test, library, weights=[0.0, 1e3])
    assert points[-1].mean_constraint == 9_000
    assert points[0].mean_constraint >= points[-1].mean_constraint
    png = plot_pareto({"router": points}, tmp_path / "pareto.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # latent space
    emb = predictor.embed(list(test.prompts))
    assert emb.shape == (len(test), 16)
    score = silhouette(emb, test.column("domain"))
    assert -1.0 <= score <= 1.0


def test_silhouette_separated_clusters_near_one_mixed_near_zero() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal([10, 0, 0], 0.1, size=(20, 3))
    b = rng.normal([0, 10, 0], 0.1, size=(20, 3))
    labels = ["a"] * 20 + ["b"] * 20
    assert silhouette(np.vstack([a, b]), labels) > 0.95
    mixed = rng.normal(0, 1, size=(40, 3))
    assert abs(silhouette(mixed, labels)) < 0.15
    with pytest.raises(ConfigurationError, match="distinct labels"):
        silhouette(mixed, ["a"] * 40)


default_missing = pytest.mark.skipif(not (DEFAULT_DIR / "router" / "config.json").exists(),
                                     reason=f"the embedded default is not built ({DEFAULT_DIR})")


@default_missing
def test_default_holds_losses_by_id_without_passage_text() -> None:
    lines = (DEFAULT_DIR / "measured_losses.jsonl").read_text(encoding="utf-8").splitlines()
    library = ExpertLibrary.from_json(DEFAULT_DIR / "experts.json")
    for line in lines:
        row = json.loads(line)
        assert set(row) == {"id", "domain", "split", "losses", "predicted"}
        assert re.fullmatch(r"[0-9a-f]{16}", row["id"])
        assert tuple(row["losses"]) == library.names
    size = sum(p.stat().st_size for p in DEFAULT_DIR.rglob("*") if p.is_file())
    assert size < 5_000_000  # a head over the bundled encoder, not encoder weights


@default_missing
def test_demo_routes_samples_and_smallest_flag_picks_smallest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tryage.cli.demo import SAMPLE_PROMPTS, run_demo

    result = run_demo(tmp_path, json_output=False)
    library = ExpertLibrary.from_json(DEFAULT_DIR / "experts.json")
    smallest = min(library, key=lambda e: e.parameters or 0).name
    assert len(result["prompts"]) == len(SAMPLE_PROMPTS)
    assert all(r["with_flag"]["expert"] == smallest for r in result["prompts"])
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "demo.json").read_text())["test_passages"] == result["test_passages"]
    assert "[Flag: smallest model]" in capsys.readouterr().out
