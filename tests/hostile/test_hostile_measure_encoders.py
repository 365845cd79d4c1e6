"""measure (resume per task, concurrent runs, duplicate passages), encoders (safetensors only), strict JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from paper_fixtures import passages, tiny_causal_lm, tiny_masked_lm
from tryage.errors import ConfigurationError, EncoderLoadError
from tryage.measure import LossRecorder, MeasureError, Passage, load_passages, measure_losses, wide_rows

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("gpt"))


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_masked_lm(tmp_path_factory.mktemp("bert"))


def _keys(path: Path) -> list[tuple[str, str, str]]:
    return [(r["id"], r["expert"], r["task"]) for r in LossRecorder(path).rows()]


def test_resume_honours_the_task(bert: Path, tmp_path: Path) -> None:
    """Issue 14: a masked run on a file of causal rows for the same expert skipped every passage."""
    sample = passages()[:4]
    out = tmp_path / "rows.jsonl"
    LossRecorder(out).append({"id": p.id, "expert": "bert", "task": "causal", "loss": 1.0} for p in sample)
    assert measure_losses(bert, sample, out, name="bert", task="masked", dtype="float32", progress=False) == 4
    assert measure_losses(bert, sample, out, name="bert", task="masked", dtype="float32", progress=False) == 0
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == 8
    assert sorted(t for _, _, t in keys) == ["causal"] * 4 + ["masked"] * 4


def test_rows_of_two_tasks_for_one_expert_are_not_mixed_into_one_table(tmp_path: Path) -> None:
    rows = [{"id": "p", "expert": "e", "task": "causal", "loss": 1.0},
            {"id": "p", "expert": "e", "task": "masked", "loss": 5.0},
            {"id": "p", "expert": "f", "task": "masked", "loss": 2.0}]
    with pytest.raises(MeasureError, match=r"expert 'e' has rows of several tasks \['causal', 'masked'\]; pass task="):
        wide_rows(rows)
    assert wide_rows(rows, task="masked")[0]["losses"] == {"e": 5.0, "f": 2.0}
    assert wide_rows(rows[1:])[0]["losses"] == {"e": 5.0, "f": 2.0}  # experts of different tasks: the paper's mix


def test_duplicate_passages_without_ids_give_one_row(gpt: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "passages.jsonl"
    text = "def python code return"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in (text, "class import", text)), encoding="utf-8")
    loaded = load_passages(corpus)
    assert [p.text for p in loaded] == [text, "class import"]
    out = tmp_path / "rows.jsonl"
    twice = [Passage("same", text), Passage("same", text)]  # built by hand, not through load_passages
    assert measure_losses(gpt, twice, out, name="gpt", dtype="float32", progress=False) == 1
    assert len(LossRecorder(out).rows()) == 1


def test_one_id_for_two_different_texts_is_refused_naming_both_lines(tmp_path: Path) -> None:
    corpus = tmp_path / "passages.jsonl"
    corpus.write_text(json.dumps({"id": "x", "text": "one"}) + "\n" + json.dumps({"id": "x", "text": "two"}) + "\n",
                      encoding="utf-8")
    with pytest.raises(MeasureError, match=f"{corpus}, line 2: id 'x' was already used on line 1"):
        load_passages(corpus)


def test_threads_appending_overlapping_rows_never_duplicate_one(tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    rows = [{"id": str(i), "expert": "e", "task": "causal", "loss": float(i)} for i in range(40)]
    start = threading.Barrier(8)

    def worker(offset: int) -> None:
        start.wait()
        for k in range(0, 40, 5):
            LossRecorder(out).append(rows[(k + offset) % 40:(k + offset) % 40 + 5], skip_done=True)

    threads = [threading.Thread(target=worker, args=(o,)) for o in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = _keys(out)
    assert sorted(keys) == sorted({(r["id"], "e", "causal") for r in rows})


RUN = """
import sys
from paper_fixtures import passages
from tryage.measure import measure_losses
measure_losses(sys.argv[1], passages(), sys.argv[2], name="gpt", dtype="float32", batch_size=2, progress=False)
"""


@pytest.mark.timeout(240)
def test_two_processes_measuring_into_one_file_write_each_row_once(gpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    env_path = f"{REPO}{':'}{REPO / 'shared'}{':'}{REPO / 'tests'}"
    env = {"PYTHONPATH": env_path, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", RUN, str(gpt), str(out)], env=env) for _ in range(2)]
    assert [p.wait(timeout=200) for p in procs] == [0, 0]
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == len(passages())


@pytest.mark.parametrize(("write", "shown"), [
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.write_bytes(b'{"id": "\xe9", "expert": "e", "loss": 1}\n'), "is not UTF-8 text"),
    (lambda p: p.write_text('{"id": "x"}\n', encoding="utf-8"), "line 1: a row needs 'id', 'expert' and 'loss'"),
], ids=["folder", "latin-1", "missing keys"])
def test_a_bad_rows_file_is_a_measure_error_naming_it(tmp_path: Path, write, shown: str) -> None:  # noqa: ANN001
    path = tmp_path / "rows.jsonl"
    write(path)
    with pytest.raises(MeasureError, match=shown) as info:
        LossRecorder(path).done("causal")
    assert str(path) in str(info.value)


# -- encoders -------------------------------------------------------------------------------------------
def _encoder(folder: Path):  # noqa: ANN202
    from tryage.encoders import EncoderSpec, TextEncoder

    return TextEncoder(EncoderSpec.resolve(folder))


def test_an_encoder_with_pickled_weights_beside_another_safetensors_file_is_not_unpickled(tmp_path: Path,
                                                                                         tiny_encoder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "enc"
    shutil.copytree(tiny_encoder, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").rename(folder / "adapter.safetensors")  # not the model's weights file
    with pytest.raises(EncoderLoadError) as info:
        _encoder(folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)


def test_a_truncated_safetensors_file_is_an_encoder_load_error(tmp_path: Path, tiny_encoder: Path) -> None:
    folder = tmp_path / "enc"
    shutil.copytree(tiny_encoder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(EncoderLoadError) as info:
        _encoder(folder)
    assert str(folder) in str(info.value)


@pytest.mark.parametrize(("data", "shown"), [
    (["bundled"], "must be an object"),
    ({"source": "ftp"}, "unknown encoder source 'ftp'"),
    ({"source": "path", "location": 5}, "location must be"),
    ({"source": "bundled", "max_length": "long"}, "'long'"),
    ({"source": "bundled", "max_length": 10**400}, "max_length"),
    ({"source": "bundled", "layers": "some"}, "'some'"),
], ids=["list", "source", "location", "max_length text", "max_length huge", "layers"])
def test_a_bad_encoder_entry_in_a_router_config_is_a_configuration_error(data: object, shown: str) -> None:
    from tryage.encoders import EncoderSpec

    with pytest.raises(ConfigurationError, match=shown):
        EncoderSpec.from_dict(data)  # type: ignore[arg-type]


# -- strict JSON ------------------------------------------------------------------------------------------
def test_json_written_by_tryage_refuses_non_finite_numbers_naming_the_key(tmp_path: Path) -> None:
    from tryage._io import dumps_strict

    with pytest.raises(ConfigurationError, match=r"router config: training\.best_val_loss = inf"):
        dumps_strict({"training": {"best_val_loss": float("inf")}}, what="router config")
    with pytest.raises(ConfigurationError, match=r"targets\.std\[1\] = nan"):
        dumps_strict({"targets": {"std": [1.0, float("nan")]}}, what="router config")
    assert json.loads(dumps_strict({"a": [1.5]}, what="x")) == {"a": [1.5]}
