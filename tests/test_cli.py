from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tryage.cli import main


@pytest.fixture()
def trained_dir(tmp_path, tiny_encoder, domain_qtable_path, small_library_path, capsys):
    out = tmp_path / "router"
    code = main(["train", "--qtable", str(domain_qtable_path), "--experts", str(small_library_path),
                 "--out", str(out), "--encoder", str(tiny_encoder), "--epochs", "60", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["experts"] == ["coder", "lawyer", "biologist"] and summary["rows"] == 36
    return out


def test_cli_route_prints_decision_json_and_honours_flags(trained_dir, capsys):
    assert main(["route", "the court statute [Flag: smallest model]", "--router", str(trained_dir), "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["expert"] == "coder"
    assert decision["prompt"] == "the court statute"
    assert decision["flags"] == ["smallest model"]
    assert {s["expert"] for s in decision["scores"]} == {"coder", "lawyer", "biologist"}


def test_cli_route_table_marks_the_choice(trained_dir, capsys):
    assert main(["route", "gene protein cell", "--router", str(trained_dir), "--weight", "cost=0.1"]) == 0
    out = capsys.readouterr().out
    assert "expert:  biologist" in out and "biologist *" in out and "cost penalty" in out


def test_cli_evaluate_reports_the_documented_keys(trained_dir, domain_qtable_path, capsys):
    assert main(["evaluate", "--router", str(trained_dir), "--qtable", str(domain_qtable_path), "--json",
                 "--knn-k", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("n", "router", "oracle", "best_single", "random", "knn", "select_best_accuracy", "gap_closed", "per_group"):
        assert key in report
    assert report["n"] == 36 and report["units"] == "loss"
    assert report["oracle"] == pytest.approx(1.0, abs=0.01)
    assert report["select_best_accuracy"] > 0.9
    assert set(report["per_group"]) == {"code", "legal", "bio"}
    assert report["knn"]["fit_on"].startswith("leave-one-out")


def test_cli_pareto_writes_png_and_json(trained_dir, domain_qtable_path, small_library_path, tmp_path, capsys):
    png = tmp_path / "front.png"
    assert main(["pareto", "--router", str(trained_dir), "--qtable", str(domain_qtable_path), "--experts",
                 str(small_library_path), "--constraint", "size", "--out", str(png), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first, last = result["router"][0], result["router"][-1]
    assert first["weight"] == 0.0 and last["mean_constraint"] <= first["mean_constraint"]
    assert last["usage"] == {"coder": 1.0}  # at the largest weight only the smallest model is used


@pytest.mark.parametrize(("argv", "message"), [
    (["route", "hi [Flag: tiniest]"], "unknown flag: [Flag: tiniest]"),
    (["route", "hi", "--weight", "size"], "--weight takes NAME=NUMBER"),
    (["route", "hi", "--weight", "speed=1"], "unknown constraint 'speed'"),
    (["train", "--qtable", "missing.jsonl", "--out", "x"], "Q-table file not found: missing.jsonl"),
])
def test_cli_bad_input_is_one_line_and_exit_2(trained_dir, argv, message, capsys):
    if argv[0] == "route":
        argv = [*argv, "--router", str(trained_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tryage: error: ") and message in err and err.count("\n") == 1


def test_cli_missing_router_folder_is_reported(tmp_path, capsys):
    assert main(["route", "hi", "--router", str(tmp_path / "none")]) == 2
    assert "router folder not found" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "tryage.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("train", "route", "evaluate", "pareto", "demo", "discover"):
        assert command in out.stdout
