"""The CLI on hostile input: exit code 2 and one ``tryage: error:`` line naming the input, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tryage.cli import main

GOOD_ROWS = [{"prompt": f"def python code {i}", "losses": {"a": 0.1 * i, "b": 0.5}} for i in range(1, 5)]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("tryage: error: ")
    assert "Traceback" not in err[0]
    return err[0]


QTABLES = {
    "latin-1": (lambda p: p.write_bytes('{"prompt": "café", "losses": {"a": 1}}\n'.encode("latin-1")), "not UTF-8"),
    "utf-16": (lambda p: p.write_bytes('{"prompt": "x", "losses": {"a": 1}}\n'.encode("utf-16")), "UTF-16"),
    "binary": (lambda p: p.write_bytes(bytes(range(256)) * 8), "not UTF-8"),
    "folder": (lambda p: p.mkdir(), "is a folder"),
    "row with no value": (lambda p: write_jsonl(p, [GOOD_ROWS[0], {"prompt": "y", "losses": {"a": None}}]),
                          "no observed loss"),
    "nan loss": (lambda p: p.write_text('{"prompt": "x", "losses": {"a": NaN}}\n', encoding="utf-8"), "finite"),
    "400 digits": (lambda p: p.write_text('{"prompt": "x", "losses": {"a": ' + "9" * 400 + "}}\n",
                                          encoding="utf-8"), "not a finite number"),
}


@pytest.mark.parametrize("case", list(QTABLES))
def test_train_with_a_bad_qtable_exits_2_naming_the_file(tmp_path: Path, capsys, case: str) -> None:  # noqa: ANN001
    write, shown = QTABLES[case]
    path = tmp_path / "table.jsonl"
    write(path)
    assert main(["train", "--qtable", str(path), "--out", str(tmp_path / "router")]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and shown in line
    assert not (tmp_path / "router").exists()


LIBRARIES = {
    "license 5": ({"experts": [{"name": "a", "license": 5}, {"name": "b"}]}, "license must be a string"),
    "tags 5": ({"experts": [{"name": "a", "tags": 5}, {"name": "b"}]}, "tags must be"),
    "parameters 0.001": ({"experts": [{"name": "a", "parameters": 0.001}, {"name": "b"}]}, "0.001"),
    "400-digit size": ({"experts": [{"name": "a", "parameters": "9" * 400}, {"name": "b"}]}, "'99999"),
    "bad date": ({"experts": [{"name": "a", "created_at": "last year"}, {"name": "b"}]}, "'last year'"),
    "a string": ("just text", "expected an object"),
}


@pytest.mark.parametrize("case", list(LIBRARIES))
def test_train_with_bad_expert_metadata_exits_2_naming_file_expert_and_value(tmp_path: Path, capsys,  # noqa: ANN001
                                                                             case: str) -> None:
    data, shown = LIBRARIES[case]
    experts = tmp_path / "experts.json"
    experts.write_text(json.dumps(data), encoding="utf-8")
    qtable = write_jsonl(tmp_path / "table.jsonl", GOOD_ROWS)
    assert main(["train", "--qtable", str(qtable), "--experts", str(experts), "--out", str(tmp_path / "r")]) == 2
    line = one_error_line(capsys)
    assert str(experts) in line and shown in line


@pytest.mark.parametrize(("case", "write", "shown"), [
    ("latin-1", lambda p: p.write_bytes('[{"name": "é"}]'.encode("latin-1")), "is not UTF-8 text"),
    ("folder", lambda p: p.mkdir(), "is a folder"),
    ("deep", lambda p: p.write_text("[" * 100_000, encoding="utf-8"), "nested too deeply"),
], ids=["latin-1", "folder", "deep"])
def test_train_with_an_unreadable_expert_file_exits_2_naming_it(tmp_path: Path, capsys, case, write, shown) -> None:  # noqa: ANN001
    experts = tmp_path / "experts.json"
    write(experts)
    qtable = write_jsonl(tmp_path / "table.jsonl", GOOD_ROWS)
    assert main(["train", "--qtable", str(qtable), "--experts", str(experts), "--out", str(tmp_path / "r")]) == 2
    line = one_error_line(capsys)
    assert str(experts) in line and shown in line


def test_train_with_a_pickle_only_encoder_exits_2_without_unpickling(tmp_path: Path, capsys, tiny_encoder: Path) -> None:  # noqa: ANN001
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_encoder, folder)
    # The same weights as a pickle, the old transformers format (this test writes it; nothing reads it).
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    qtable = write_jsonl(tmp_path / "table.jsonl", GOOD_ROWS)
    assert main(["train", "--qtable", str(qtable), "--encoder", str(folder), "--out", str(tmp_path / "r")]) == 2
    line = one_error_line(capsys)
    assert str(folder) in line and "safetensors" in line


@pytest.fixture(scope="module")
def tiny_router(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    qtable = write_jsonl(folder / "table.jsonl", GOOD_ROWS)
    out = folder / "router"
    assert main(["train", "--qtable", str(qtable), "--encoder", str(tiny_encoder), "--out", str(out),
                 "--epochs", "2", "--json"]) == 0
    return out


@pytest.mark.parametrize(("argv", "shown"), [
    (["x [Flag: max size " + "9" * 400 + "]"], "cannot read size '99999"),
    (["x [Flag: size=1e999]"], "weight must be finite"),
    (["x [Flag: smallest model"], "unclosed flag bracket"),
    (["x [flag:" + " " * 100_000 + "y"], "unclosed flag bracket"),
    (["x \udc80 y"], "lone surrogate"),
    (["[Flag: cheapest]"], "empty prompt"),
    (["x", "--weight", "size=nan"], "must be finite"),
    (["x", "--weight", "speed=1"], "unknown constraint 'speed'"),
    (["x [Flag: expert zzz]"], "exclude every expert"),
], ids=["400-digit size", "inf weight flag", "unclosed", "100k spaces", "surrogate", "flags only", "nan weight",
        "unknown constraint", "no eligible expert"])
def test_route_with_bad_input_exits_2_naming_it(tiny_router: Path, capsys, argv: list[str], shown: str) -> None:  # noqa: ANN001
    capsys.readouterr()
    assert main(["route", *argv, "--router", str(tiny_router)]) == 2
    line = one_error_line(capsys)
    assert shown in line
    assert len(line) < 2000


def test_route_with_a_router_predicting_nan_exits_2_naming_experts_and_prompt(tiny_router: Path, tmp_path: Path,
                                                                              capsys) -> None:  # noqa: ANN001
    """Issue 14: NaN in a saved router's head weights routed to the first expert with exit code 0. Since issue 25
    such a folder is refused when it loads, naming the file and the weights, before any prompt is routed."""
    import shutil

    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_router, damaged)
    state = load_file(damaged / "model.safetensors")
    last_bias = sorted(k for k in state if k.endswith("bias"))[-1]
    state[last_bias][0] = float("nan")  # the first expert's output
    save_file(state, str(damaged / "model.safetensors"), metadata={"format": "pt"})
    capsys.readouterr()
    assert main(["route", "def python code", "--router", str(damaged)]) == 2
    line = one_error_line(capsys)
    assert "NaN or infinite" in line and "model.safetensors" in line and last_bias.split(".", 1)[-1] in line


def test_route_input_file_without_prompts_exits_2_and_writes_nothing(tiny_router: Path, tmp_path: Path,
                                                                     capsys) -> None:  # noqa: ANN001
    source, out = tmp_path / "empty.jsonl", tmp_path / "decisions.jsonl"
    source.write_text("\n", encoding="utf-8")
    assert main(["route", "--router", str(tiny_router), "--input", str(source), "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert str(source) in line and "no prompts" in line
    assert not out.exists() and list(tmp_path.glob(".decisions.jsonl.*")) == []
