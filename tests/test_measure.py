"""tryage.measure: per-passage losses of real (tiny) models, resumable rows, the Q-table they form."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from paper_fixtures import passages, tiny_causal_lm, tiny_masked_lm
from tryage.errors import ConfigurationError, TryageError
from tryage.measure import (
    ExpertModelNotFoundError,
    LossRecorder,
    MeasureError,
    assemble_qtable,
    load_passages,
    mask_positions,
    measure_losses,
    passage_id,
)


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("gpt"))


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_masked_lm(tmp_path_factory.mktemp("bert"))


def test_measure_causal_loss_matches_mean_token_nll(gpt: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sample = passages()[:3]
    out = tmp_path / "rows.jsonl"
    assert measure_losses(gpt, sample, out, name="gpt", dtype="float32", progress=False) == 3
    rows = LossRecorder(out).rows()
    model = AutoModelForCausalLM.from_pretrained(gpt)
    tok = AutoTokenizer.from_pretrained(gpt)
    ids = tok(sample[0].text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = float(model(input_ids=ids, labels=ids).loss)  # HF's own mean shifted NLL
    assert [r["id"] for r in rows] == [p.id for p in sample]
    assert rows[0]["loss"] == pytest.approx(expected, rel=1e-4)
    assert rows[0]["tokens"] == ids.shape[1] - 1
    assert rows[0]["domain"] == "code" and rows[0]["task"] == "causal"


def test_measure_masked_loss_is_seeded_and_finite(bert: Path, tmp_path: Path) -> None:
    sample = passages()
    first, second, other = (tmp_path / n for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    measure_losses(bert, sample, first, task="masked", dtype="float32", seed=1, batch_size=4, progress=False)
    measure_losses(bert, sample, second, task="masked", dtype="float32", seed=1, batch_size=7, progress=False)
    measure_losses(bert, sample, other, task="masked", dtype="float32", seed=2, batch_size=4, progress=False)
    a, b, c = ([r["loss"] for r in LossRecorder(p).rows()] for p in (first, second, other))
    assert a == pytest.approx(b, rel=1e-5)  # masks depend on seed and passage id, not on batching
    assert a != pytest.approx(c, rel=1e-5)
    assert all(math.isfinite(v) and v > 0 for v in a)
    assert all(r["tokens"] >= 1 for r in LossRecorder(first).rows())


def test_mask_positions_take_fifteen_percent_at_least_one() -> None:
    assert len(mask_positions("p", list(range(40)), seed=0)) == 6
    assert len(mask_positions("p", [3, 4], seed=0)) == 1
    assert mask_positions("p", list(range(40)), seed=0) == mask_positions("p", list(range(40)), seed=0)


def test_measure_resume_after_interruption_has_no_duplicates(gpt: Path, tmp_path: Path) -> None:
    sample = passages()
    out = tmp_path / "rows.jsonl"
    measure_losses(gpt, sample[:5], out, name="gpt", dtype="float32", batch_size=2, progress=False)
    with out.open("a", encoding="utf-8") as handle:  # the process died in the middle of a line
        handle.write('{"id": "code-5", "expert": "gp')
    written = measure_losses(gpt, sample, out, name="gpt", dtype="float32", batch_size=2, progress=False)
    rows = LossRecorder(out).rows()
    assert written == len(sample) - 5
    assert sorted(r["id"] for r in rows) == sorted(p.id for p in sample)
    assert all(line.startswith("{") and line.endswith("}") for line in out.read_text().splitlines())
    assert measure_losses(gpt, sample, out, name="gpt", dtype="float32", progress=False) == 0


def test_assemble_qtable_is_wide_with_ids_domains_and_text(gpt: Path, bert: Path, tmp_path: Path) -> None:
    sample = passages()
    out = tmp_path / "rows.jsonl"
    measure_losses(gpt, sample, out, name="gpt", dtype="float32", progress=False)
    measure_losses(tiny_causal_lm(tmp_path / "gpt2", seed=3), sample[:-2], out, name="gpt-b", dtype="float32",
                   progress=False)
    table = assemble_qtable(out, sample)
    assert table.experts == ("gpt", "gpt-b")
    assert len(table) == len(sample) - 2  # passages not measured by every expert are left out
    assert table.prompts[0] == sample[0].text
    assert table.extras[0] == {"id": sample[0].id, "domain": "code", "split": "validation"}
    assert assemble_qtable(out, sample, splits=["test"]).column("split") == ["test"] * 4


def test_measure_unknown_model_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ExpertModelNotFoundError, match="expert model not found") as info:
        measure_losses(tmp_path / "nope", passages(), tmp_path / "rows.jsonl", progress=False)
    assert isinstance(info.value, TryageError) and isinstance(info.value, FileNotFoundError)


def test_measure_empty_corpus_and_bad_task_raise(gpt: Path, tmp_path: Path) -> None:
    with pytest.raises(MeasureError, match="corpus is empty"):
        measure_losses(gpt, [], tmp_path / "rows.jsonl")
    with pytest.raises(MeasureError, match="unknown task 'seq2seq'; allowed: 'causal', 'masked'"):
        measure_losses(gpt, passages(), tmp_path / "rows.jsonl", task="seq2seq")
    with pytest.raises(ConfigurationError, match="dtype must be one of"):
        measure_losses(gpt, passages(), tmp_path / "rows.jsonl", dtype="float8", progress=False)


def test_load_passages_samples_per_domain_and_hashes_ids(tmp_path: Path) -> None:
    source = tmp_path / "p.jsonl"
    rows = [{"text": f"text {d} {i}", "domain": d, "split": "train"} for d in "ab" for i in range(5)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = load_passages(source, per_domain=2, seed=0)
    assert [p.domain for p in got].count("a") == 2 and len(got) == 4
    assert got == load_passages(source, per_domain=2, seed=0)
    assert got[0].id == passage_id(got[0].text) and len(got[0].id) == 16
    with pytest.raises(MeasureError, match="no passages"):
        load_passages(source, splits=["test"])
