"""Every ``tryage`` sub-command on ordinary mistakes: exit code 2 and one ``tryage: error:`` line that names the
input, never a traceback (issue 14, item 6). Also: ``--out`` is never destroyed, saved JSON is strict JSON,
``--endpoint`` credentials stay out of cache folder names (items 4, 11, 12)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tryage.cli import main

ROWS = [{"prompt": f"def python code {i}", "losses": {"a": 0.1 * i, "b": 0.5}} for i in range(1, 5)]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("training router head")]
    assert len(lines) == 1, err
    assert lines[0].startswith("tryage: error: ") and "Traceback" not in err
    return lines[0]


def strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    """A folder with a trained tiny router, its Q-table, a plain file, an empty folder and damaged routers."""
    base = tmp_path_factory.mktemp("audit")
    write_jsonl(base / "t.jsonl", ROWS)
    assert main(["train", "--qtable", str(base / "t.jsonl"), "--encoder", str(tiny_encoder), "--out",
                 str(base / "router"), "--epochs", "2", "--json"]) == 0
    (base / "plain.txt").write_text("x", encoding="utf-8")
    (base / "folder").mkdir()
    (base / "lib.json").write_text(json.dumps({"experts": [{"name": "a", "parameters": "1B"},
                                                           {"name": "b", "parameters": "7B"}]}), encoding="utf-8")
    (base / "p.jsonl").write_text('{"prompt": "what", "reference": "1"}\n', encoding="utf-8")
    (base / "e.json").write_text(json.dumps([{"name": "x", "model": "openai:gpt-4o-mini"}]), encoding="utf-8")
    (base / "latin.jsonl").write_bytes('{"prompt": "café", "reference": "1"}\n'.encode("latin-1"))
    damage: dict[str, Callable[[Path], None]] = {
        "truncated": lambda r: (r / "model.safetensors").write_bytes((r / "model.safetensors").read_bytes()[:100]),
        "not-safetensors": lambda r: (r / "model.safetensors").write_text("garbage", encoding="utf-8"),
        "config-list": lambda r: (r / "config.json").write_text("[1, 2]", encoding="utf-8"),
        "config-not-json": lambda r: (r / "config.json").write_text("{bad", encoding="utf-8"),
        "config-latin-1": lambda r: (r / "config.json").write_bytes('{"a": "é"}'.encode("latin-1")),
        "config-version": lambda r: _edit(r, format_version=99),
        "config-version-str": lambda r: _edit(r, format_version="1"),
        "config-head-str": lambda r: _edit(r, head="x"),
        "config-targets-str": lambda r: _edit(r, targets={"mean": ["x", 1], "std": [1, 1]}),
        "experts-list-of-numbers": lambda r: (r / "experts.json").write_text("[1]", encoding="utf-8"),
        "no-weights": lambda r: (r / "model.safetensors").unlink(),
    }
    for name, spoil in damage.items():
        shutil.copytree(base / "router", base / name)
        spoil(base / name)
    return base


def _edit(router: Path, **changes: object) -> None:
    data = json.loads((router / "config.json").read_text(encoding="utf-8"))
    data.update(changes)
    (router / "config.json").write_text(json.dumps(data), encoding="utf-8")


DAMAGED = {
    "truncated": ("model.safetensors", "is not a complete safetensors file"),
    "not-safetensors": ("model.safetensors", "is not a complete safetensors file"),
    "config-list": ("config.json", "must hold a JSON object, got list"),
    "config-not-json": ("config.json", "is not valid JSON"),
    "config-latin-1": ("config.json", "is not UTF-8 text"),
    "config-version": ("config.json", "format_version 99 is not supported"),
    "config-version-str": ("config.json", "format_version '1' is not supported"),
    "config-head-str": ("config.json", "has a field of the wrong type"),
    "config-targets-str": ("config.json", "has a field of the wrong type"),
    "experts-list-of-numbers": ("experts.json", "an expert entry must be an object"),
    "no-weights": ("", "missing model.safetensors"),
}


@pytest.mark.parametrize("command", ["route", "evaluate", "pareto"])
@pytest.mark.parametrize("damage", list(DAMAGED))
def test_a_damaged_router_folder_is_one_line_naming_the_file(world: Path, capsys, command: str, damage: str) -> None:  # noqa: ANN001
    file, shown = DAMAGED[damage]
    argv = ["route", "def python"] if command == "route" else [command, "--qtable", world / "t.jsonl"]
    code, _, err = run(capsys, [*argv, "--router", world / damage])
    assert code == 2
    line = error_line(err)
    assert str(world / damage / file).rstrip("/") in line and shown in line


# (sub-command arguments with {w} for the world folder, text the error line must hold)
CASES: dict[str, tuple[list[str], list[str]]] = {
    # train
    "train qtable is a folder": (["train", "--qtable", "{w}/folder", "--out", "{w}/o"], ["{w}/folder", "is a folder"]),
    "train out is a file": (["train", "--qtable", "{w}/t.jsonl", "--out", "{w}/plain.txt"],
                            ["{w}/plain.txt", "it is a file", "--overwrite"]),
    "train out holds files": (["train", "--qtable", "{w}/t.jsonl", "--out", "{w}"],
                              ["{w}", "not a saved Tryage router", "--overwrite"]),
    "train out under a file": (["train", "--qtable", "{w}/t.jsonl", "--out", "{w}/plain.txt/router"], ["{w}/plain.txt"]),
    "train out unwritable": (["train", "--qtable", "{w}/t.jsonl", "--out", "/proc/tryage-nope/router"],
                             ["/proc/tryage-nope"]),
    "train experts is a folder": (["train", "--qtable", "{w}/t.jsonl", "--experts", "{w}/folder", "--out", "{w}/o"],
                                  ["{w}/folder", "is a folder"]),
    "train encoder is a file": (["train", "--qtable", "{w}/t.jsonl", "--encoder", "{w}/plain.txt", "--out", "{w}/o"],
                                ["{w}/plain.txt"]),
    "train epochs 0": (["train", "--qtable", "{w}/t.jsonl", "--out", "{w}/o", "--epochs", "0"], ["epochs", "got 0"]),
    # route
    "route router missing": (["route", "x", "--router", "{w}/nope"], ["{w}/nope", "not found"]),
    "route router is a file": (["route", "x", "--router", "{w}/plain.txt"], ["{w}/plain.txt"]),
    "route experts is a folder": (["route", "x", "--router", "{w}/router", "--experts", "{w}/folder"],
                                  ["{w}/folder", "is a folder"]),
    "route 400-digit weight": (["route", "x", "--router", "{w}/router", "--weight", "size=" + "9" * 400],
                               ["'size'", "finite"]),
    "route weight without =": (["route", "x", "--router", "{w}/router", "--weight", "size"], ["'size'", "NAME=NUMBER"]),
    "route min size 400 digits": (["route", "x [Flag: min size " + "9" * 400 + "]", "--router", "{w}/router"],
                                  ["cannot read size '9999"]),
    # evaluate
    "evaluate knn-k over rows": (["evaluate", "--router", "{w}/router", "--qtable", "{w}/t.jsonl", "--knn-k", "20"],
                                 ["--knn-k 20", "{w}/t.jsonl", "4 rows", "[1, 3]"]),
    "evaluate knn-k 0": (["evaluate", "--router", "{w}/router", "--qtable", "{w}/t.jsonl", "--knn-k", "0"],
                         ["--knn-k 0"]),
    "evaluate knn-k over train rows": (["evaluate", "--router", "{w}/router", "--qtable", "{w}/t.jsonl", "--train",
                                        "{w}/t.jsonl", "--knn-k", "9"], ["--knn-k 9", "--train table has 4 rows"]),
    "evaluate unknown group-by": (["evaluate", "--router", "{w}/router", "--qtable", "{w}/t.jsonl", "--knn-k", "2",
                                   "--group-by", "colour"], ["--group-by 'colour'", "{w}/t.jsonl", "fields"]),
    "evaluate train is a folder": (["evaluate", "--router", "{w}/router", "--qtable", "{w}/t.jsonl", "--train",
                                    "{w}/folder"], ["{w}/folder", "is a folder"]),
    # pareto
    "pareto unknown constraint": (["pareto", "--router", "{w}/router", "--qtable", "{w}/t.jsonl", "--constraint", "speed"],
                                  ["'speed'", "known constraints"]),
    "pareto png out is a folder": (["pareto", "--router", "{w}/router", "--qtable", "{w}/t.jsonl", "--experts",
                                    "{w}/lib.json", "--out", "{w}/folder"], ["cannot write {w}/folder", "directory"]),
    "pareto png out unwritable": (["pareto", "--router", "{w}/router", "--qtable", "{w}/t.jsonl", "--experts",
                                   "{w}/lib.json", "--out", "/proc/tryage-nope/f.png"], ["/proc/tryage-nope/f.png"]),
    "pareto png out under a file": (["pareto", "--router", "{w}/router", "--qtable", "{w}/t.jsonl", "--experts",
                                     "{w}/lib.json", "--out", "{w}/plain.txt/f.png"], ["{w}/plain.txt/f.png"]),
    "pareto qtable is a folder": (["pareto", "--router", "{w}/router", "--qtable", "{w}/folder"],
                                  ["{w}/folder", "is a folder"]),
    # discover
    "discover ttl nan": (["discover", "a/b", "--ttl", "nan", "--offline", "--cache-dir", "{w}/hub"], ["ttl", "nan"]),
    "discover ttl inf": (["discover", "a/b", "--ttl", "inf", "--offline", "--cache-dir", "{w}/hub"], ["ttl", "inf"]),
    "discover timeout nan": (["discover", "a/b", "--timeout", "nan", "--offline", "--cache-dir", "{w}/hub"],
                             ["timeout", "nan"]),
    "discover limit 0": (["discover", "--search", "x", "--limit", "0", "--offline", "--cache-dir", "{w}/hub"],
                         ["limit", "got 0"]),
    "discover bad repo id": (["discover", "../../etc", "--offline", "--cache-dir", "{w}/hub"], ["'../../etc'"]),
    "discover overrides is a folder": (["discover", "a/b", "--offline", "--cache-dir", "{w}/hub", "--overrides",
                                        "{w}/folder"], ["{w}/folder", "is a folder"]),
    "discover nothing to do": (["discover"], ["nothing to discover"]),
    # demo
    "demo out is a file": (["demo", "--out", "{w}/plain.txt"], ["{w}/plain.txt"]),
    "demo out unwritable": (["demo", "--out", "/proc/tryage-nope"], ["/proc/tryage-nope"]),
    # collect
    "collect prompts is a folder": (["collect", "--prompts", "{w}/folder", "--experts", "{w}/e.json", "--scorer",
                                     "exact", "--out", "{w}/c/q.jsonl"], ["{w}/folder", "is a folder"]),
    "collect prompts latin-1": (["collect", "--prompts", "{w}/latin.jsonl", "--experts", "{w}/e.json", "--scorer",
                                 "exact", "--out", "{w}/c/q.jsonl"], ["{w}/latin.jsonl", "not UTF-8"]),
    "collect experts is a folder": (["collect", "--prompts", "{w}/p.jsonl", "--experts", "{w}/folder", "--scorer",
                                     "exact", "--out", "{w}/c/q.jsonl"], ["{w}/folder", "is a folder"]),
    "collect unknown scorer": (["collect", "--prompts", "{w}/p.jsonl", "--experts", "{w}/e.json", "--scorer", "best",
                                "--out", "{w}/c/q.jsonl"], ["'best'", "exact"]),
    "collect budget nan": (["collect", "--prompts", "{w}/p.jsonl", "--experts", "{w}/e.json", "--scorer", "exact",
                            "--out", "{w}/c/q.jsonl", "--budget", "nan"], ["budget", "nan"]),
    "collect timeout inf": (["collect", "--prompts", "{w}/p.jsonl", "--experts", "{w}/e.json", "--scorer", "exact",
                             "--out", "{w}/c/q.jsonl", "--timeout", "inf"], ["timeout", "inf"]),
    "collect out is a folder": (["collect", "--prompts", "{w}/p.jsonl", "--experts", "{w}/e.json", "--scorer", "exact",
                                 "--out", "{w}/folder"], ["{w}/folder", "is a folder"]),
    "collect bad regex": (["collect", "--prompts", "{w}/p.jsonl", "--experts", "{w}/e.json", "--scorer", "regex",
                           "--pattern", "(", "--out", "{w}/c/q.jsonl"], ["'('"]),
    # score
    "score log is a folder": (["score", "--log", "{w}/folder", "--prompts", "{w}/p.jsonl", "--scorer", "exact",
                               "--out", "{w}/s.jsonl"], ["{w}/folder", "is a folder"]),
    "score log latin-1": (["score", "--log", "{w}/latin.jsonl", "--prompts", "{w}/p.jsonl", "--scorer", "exact",
                           "--out", "{w}/s.jsonl"], ["{w}/latin.jsonl", "not UTF-8"]),
    "score log missing": (["score", "--log", "{w}/nope.jsonl", "--prompts", "{w}/p.jsonl", "--scorer", "exact",
                           "--out", "{w}/s.jsonl"], ["{w}/nope.jsonl", "not found"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_subcommand_turns_a_mistake_into_one_line(world: Path, capsys, monkeypatch, case: str) -> None:  # noqa: ANN001
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")  # the mistakes are found before any call
    argv, shown = CASES[case]
    before = sorted(p.name for p in world.iterdir())
    code, _, err = run(capsys, [a.replace("{w}", str(world)) for a in argv])
    assert code == 2, err
    line = error_line(err)
    for part in shown:
        assert part.replace("{w}", str(world)) in line, line
    if case.startswith("train"):
        assert sorted(p.name for p in world.iterdir()) == before  # nothing written, nothing replaced
        assert (world / "plain.txt").read_text(encoding="utf-8") == "x"


def test_train_overwrite_replaces_a_non_router_target_only_when_asked(world: Path, tmp_path: Path, capsys,  # noqa: ANN001
                                                                     tiny_encoder: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("precious", encoding="utf-8")
    argv = ["train", "--qtable", world / "t.jsonl", "--encoder", tiny_encoder, "--out", target, "--epochs", "1", "--json"]
    assert run(capsys, argv)[0] == 2
    assert (target / "notes.txt").read_text(encoding="utf-8") == "precious"
    code, out, _ = run(capsys, [*argv, "--overwrite"])
    assert code == 0 and not (target / "notes.txt").exists()
    summary = strict_json(out)
    assert summary["best_val_loss"] is None  # 4 rows: no validation split; was Infinity (not JSON)
    strict_json((target / "config.json").read_text(encoding="utf-8"))
    assert run(capsys, argv)[0] == 0  # a saved router is replaced without --overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging or backup folder left


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "unreachable"])
def test_endpoint_credentials_never_reach_a_folder_name_or_the_message(tmp_path: Path, capsys, monkeypatch,  # noqa: ANN001
                                                                       offline: bool) -> None:
    pytest.importorskip("huggingface_hub")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if not offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    argv = ["discover", "a/b", "--endpoint", f"http://alice:s3cret@127.0.0.1:{port}", "--cache-dir", tmp_path,
            "--timeout", "2", *(["--offline"] if offline else [])]
    code, out, err = run(capsys, argv)
    assert code == 2
    line = error_line(err)
    assert "s3cret" not in line and "alice" not in line and "s3cret" not in out
    assert not [p for p in tmp_path.rglob("*") if "s3cret" in str(p) or "alice" in str(p)]
    assert "127.0.0.1" in line
