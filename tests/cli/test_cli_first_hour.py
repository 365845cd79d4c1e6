"""The first hour on the command line: checks before loading, stdin, --version, help, one config file,
split and cv, small tables."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import tryage
from tryage.cli import _commands, build_parser, main

NO_TORCH = ("import sys\nfrom tryage.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
            "except SystemExit as exc:\n    code = exc.code\nprint('torch' in sys.modules, code)")


def _run(*argv: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *argv], input=stdin, capture_output=True, text=True,
                          cwd=cwd)


def test_every_option_of_every_command_has_help():
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in _commands(build_parser()).items()
               for a in p._actions if not a.help and not isinstance(a, argparse._HelpAction)]
    assert missing == []


def test_every_command_takes_config():
    for name, parser in _commands(build_parser()).items():
        assert any("--config" in a.option_strings for a in parser._actions), name


def test_version_prints_the_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tryage {tryage.__version__}"


@pytest.mark.parametrize(("argv", "message"), [
    (["route", "hi [Flag: tiniest]"], "unknown flag: [Flag: tiniest]"),
    (["route", "hi", "--weight", "speed=1"], "unknown constraint 'speed'"),
    (["route", "hi", "--experts", "missing.json"], "expert library not found: missing.json"),
    (["route", "--input", "missing.jsonl", "--out", "d.jsonl"], "prompts file not found: missing.jsonl"),
    (["evaluate", "--qtable", "missing.jsonl"], "Q-table file not found: missing.jsonl"),
    (["train", "--qtable", "missing.jsonl", "--out", "r"], "Q-table file not found: missing.jsonl"),
    (["cv", "--qtable", "missing.jsonl"], "Q-table file not found: missing.jsonl"),
    (["update", "--router", "no-router", "--feedback", "f.jsonl"], "router folder not found: no-router"),
])
def test_bad_input_is_reported_before_any_model_loads(argv, message, tmp_path):
    result = _run(*argv, cwd=tmp_path)
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout.split() == ["False", "2"]  # torch never imported: nothing was loaded


def test_a_flag_the_router_has_no_metadata_for_names_the_flags_it_supports(tmp_path):
    result = _run("route", "Prove that sqrt(2) is irrational [Flag: cheapest]", cwd=tmp_path)
    assert result.stdout.split() == ["False", "2"]
    err = result.stderr
    assert "constraint 'cost' needs 'input_cost/output_cost'" in err and "all 11 experts of this router" in err
    assert "the flags it supports: " in err and "smallest model" in err and "cheapest" not in err.split("supports")[1]


@pytest.mark.slow
def test_readme_route_examples_run_on_the_embedded_routers(capsys):
    assert main(["route", "Prove that sqrt(2) is irrational [Flag: smallest model]", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["flags"] == ["smallest model"]
    assert main(["route", "Prove that sqrt(2) is irrational [Flag: cheapest]", "--router", "open-llms", "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    from tryage import TryageRouter

    library = TryageRouter.default("open-llms").library
    assert decision["flags"] == ["cheapest"] and decision["expert"] == min(library, key=lambda e: e.cost).name


@pytest.fixture()
def router_dir(tmp_path, tiny_encoder, domain_qtable_path, small_library_path):
    out = tmp_path / "router"
    assert main(["train", "--qtable", str(domain_qtable_path), "--experts", str(small_library_path), "--out",
                 str(out), "--encoder", str(tiny_encoder), "--epochs", "60", "--json"]) == 0
    return out


def test_route_dash_reads_one_prompt_a_line_from_stdin(router_dir, monkeypatch, capsys):
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", _Stdin("gene protein cell\n\nthe court statute [Flag: smallest model]\n"))
    assert main(["route", "-", "--router", str(router_dir), "--json"]) == 0
    decisions = json.loads(capsys.readouterr().out)
    assert [d["prompt"] for d in decisions] == ["gene protein cell", "the court statute"]
    assert decisions[1]["expert"] == "coder"


def test_route_and_a_score_router_show_predicted_loss_and_p_correct(router_dir, capsys):
    capsys.readouterr()
    assert main(["route", "gene protein cell", "--router", str(router_dir)]) == 0
    out = capsys.readouterr().out
    assert "predicted loss" in out and "P(correct)" not in out  # trained on losses, not scores


class _Stdin:
    def __init__(self, text: str) -> None:
        import io

        self._text = io.StringIO(text)
        self.buffer = io.BytesIO(text.encode())

    def __iter__(self):
        return iter(self._text)


def test_evaluate_knn_k_defaults_within_a_small_table(router_dir, tmp_path, domain_qtable_path, capsys):
    small = tmp_path / "small.jsonl"
    small.write_text("\n".join(domain_qtable_path.read_text().splitlines()[:8]) + "\n")
    capsys.readouterr()
    assert main(["evaluate", "--router", str(router_dir), "--qtable", str(small), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 8 and report["knn"]["k"] == 7  # leave-one-out: at most rows - 1


def test_config_file_settings_reach_the_command_and_flags_win(tmp_path, domain_qtable_path, capsys):
    config = tmp_path / "tryage.toml"
    config.write_text(f'qtable = "{domain_qtable_path}"\n[split]\ntest = 0.5\nseed = 3\nout-dir = "parts"\n')
    assert main(["split", "--config", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["seed"] == 3 and summary["files"]["test"]["rows"] == 18
    assert Path(summary["files"]["test"]["path"]) == tmp_path / "parts" / "test.jsonl"  # relative to the file
    assert main(["split", "--config", str(config), "--test", "0.25", "--seed", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["seed"] == 4 and summary["files"]["test"]["rows"] == 9


@pytest.mark.parametrize(("text", "message"), [
    ("[split]\ntest-share = 0.5\n", "unknown key(s) ['test_share'] in [split]; allowed: "),
    ("colour = 1\n", "unknown key(s) ['colour']; allowed at the top"),
    ("[route]\nweight = {speed = 1}\n", "unknown constraint 'speed'"),
    ("[train]\nepochs = 'many'\n", "argument --epochs: invalid int value: 'many'"),
    ("[route\n", "not valid TOML"),
])
def test_config_file_errors_are_one_line(tmp_path, text, message):
    config = tmp_path / "tryage.toml"
    config.write_text(text)
    command = "train" if "train" in text else "route"
    argv = [command, "--config", str(config)] + (["hi"] if command == "route" else ["--qtable", "q", "--out", "o"])
    result = _run(*argv, cwd=tmp_path)
    assert message in result.stderr, result.stderr
    assert result.stdout.split() == ["False", "2"]  # checked before any model loads


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--qtable", "q"], "tryage train: error: the following arguments are required: --out"),
    (["cv", "--qtable", "q", "--folds", "x"], "tryage cv: error: argument --folds: invalid int value: 'x'"),
    (["route", "--bogus", "hi"], "tryage route: error: unrecognized arguments: --bogus"),
    (["frob"], "tryage: error: argument COMMAND: invalid choice: 'frob'"),
])
def test_a_bad_command_line_is_one_line_naming_the_argument_and_where_help_is(argv, message):
    result = _run(*argv)
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr  # no usage block before it
    assert message in result.stderr and "--help)" in result.stderr, result.stderr
    assert result.stdout.split() == ["False", "2"]


def test_serve_reads_its_table_of_the_shared_config_file(tmp_path):
    from tryage.serve.config import ServeConfig

    config = tmp_path / "tryage.toml"
    config.write_text('router = "open-llms"\nexperts = "experts.json"\nqtable = "q.jsonl"\n'
                      '[train]\nepochs = 5\n[serve]\nport = 9001\n')
    commands = _commands(build_parser())
    from tryage.cli._common import apply_config

    argv, elsewhere = apply_config(commands, ["serve", "--config", str(config)])
    built = ServeConfig.build({}, config, elsewhere=elsewhere)
    assert (built.port, built.router, built.experts) == (9001, "open-llms", str(tmp_path / "experts.json"))


def test_split_is_stratified_by_the_task_field(tmp_path, domain_qtable_path, capsys):
    assert main(["split", "--qtable", str(domain_qtable_path), "--out-dir", str(tmp_path / "s"), "--test", "0.25",
                 "--validation", "0.25", "--by", "domain", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stratified_by"] == "domain"
    for part, per_domain in (("train", 6), ("validation", 3), ("test", 3)):
        rows = [json.loads(line) for line in (tmp_path / "s" / f"{part}.jsonl").read_text().splitlines()]
        assert sorted(r["domain"] for r in rows) == sorted(["bio", "code", "legal"] * per_domain)
    everything = {json.loads(line)["prompt"] for part in ("train", "validation", "test")
                  for line in (tmp_path / "s" / f"{part}.jsonl").read_text().splitlines()}
    assert len(everything) == 36


@pytest.mark.parametrize(("argv", "message"), [
    (["--test", "1.5"], "test fraction must be a finite number > 0 and < 1, got 1.5"),
    (["--test", "0.5", "--validation", "0.5"], "the test (0.5) and validation (0.5) fractions leave no training rows"),
    (["--folds", "1"], "folds must be a whole number >= 2, got 1"),
])
def test_split_checks_its_shares_before_reading_the_table(argv, message, tmp_path, domain_qtable_path):
    code = NO_TORCH.replace("'torch' in sys.modules", "'sklearn' in sys.modules")
    result = subprocess.run([sys.executable, "-c", code, "split", "--qtable", str(domain_qtable_path), "--out-dir",
                             "s", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert result.stderr == f"tryage: error: {message}\n"
    assert result.stdout.split() == ["False", "2"] and not (tmp_path / "s").exists()  # nothing read or written


def test_split_folds_cover_every_row_once(tmp_path, domain_qtable_path, capsys):
    assert main(["split", "--qtable", str(domain_qtable_path), "--out-dir", str(tmp_path / "f"), "--folds", "3",
                 "--json"]) == 0
    tests = [json.loads(line)["prompt"] for i in (1, 2, 3)
             for line in (tmp_path / "f" / f"fold-{i}" / "test.jsonl").read_text().splitlines()]
    assert len(tests) == len(set(tests)) == 36


def test_cv_reports_evaluates_keys_and_beats_best_single_on_a_separable_table(tmp_path, tiny_encoder,
                                                                             domain_qtable_path, capsys):
    assert main(["cv", "--qtable", str(domain_qtable_path), "--encoder", str(tiny_encoder), "--folds", "3",
                 "--epochs", "60", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("n", "router", "oracle", "best_single", "random", "knn", "select_best_accuracy", "gap_closed",
                "per_group", "units"):
        assert key in report
    assert report["n"] == 36 and report["folds"] == 3 and report["stratified_by"] == "domain"
    assert report["best_single"]["chosen_on"] == "training folds"
    assert report["router"] < report["best_single"]["value"]  # losses: lower is better


@pytest.mark.parametrize(("units", "router", "single", "beats"), [
    ("loss", 0.528, 0.528, False), ("loss", 0.50, 0.528, True), ("loss", 0.56, 0.528, False),
    ("score", 0.479, 0.479, False), ("score", 0.50, 0.479, True), ("score", 0.40, 0.479, False)])
def test_a_tie_with_the_best_single_expert_is_not_a_win(units, router, single, beats):
    # the walk's 36-row check printed "router 0.528, best single 0.528 ... The router beats the best single expert"
    from tryage.cli.cv import beats_best_single

    assert beats_best_single({"units": units, "router": router, "best_single": {"value": single}}) is beats


def test_progress_bar_writes_no_line_per_update_off_a_terminal(capsys):
    from tryage._io import progress_bar

    with progress_bar(50, "working") as bar:
        for _ in range(50):
            bar.update(1)
    err = capsys.readouterr().err
    assert err.count("\n") <= 1 and err.count("\r") <= 2 and "50/50" in err


def test_demo_writes_nothing_into_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--router", "open-llms"]) == 0
    out = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    where = Path(out.strip().splitlines()[-1].rpartition(" in ")[2])
    assert (where / "demo.json").exists() and "predicted loss" in out and "P(correct)" in out


def test_small_tables_train_the_small_head_unless_told_otherwise(tiny_encoder, domain_qtable_path):
    from tryage import QTable
    from tryage.predictors import PerceptivePredictor
    from tryage.predictors._training import SMALL_TABLE

    table = QTable.from_file(domain_qtable_path)
    small = PerceptivePredictor(tiny_encoder, progress=False).fit(table)
    assert small.settings_ == SMALL_TABLE and len(small.history_) == SMALL_TABLE["epochs"]
    assert "val_loss" not in small.history_[0]
    mine = PerceptivePredictor(tiny_encoder, hidden_dim=32, progress=False).fit(table)
    assert mine.settings_["hidden_dim"] == 32 and mine.settings_["dropout"] == SMALL_TABLE["dropout"]
    large = PerceptivePredictor(tiny_encoder, small_table=False, epochs=5, progress=False).fit(table)
    assert large.settings_["hidden_dim"] == 256 and large.settings_["validation_fraction"] == 0.1


def test_train_on_a_small_table_says_whether_the_router_beats_the_best_single_expert(tmp_path, tiny_encoder,
                                                                                   domain_qtable_path, capsys):
    assert main(["train", "--qtable", str(domain_qtable_path), "--out", str(tmp_path / "r"), "--encoder",
                 str(tiny_encoder), "--epochs", "60"]) == 0
    out = capsys.readouterr().out
    assert "small table: 5-fold mean loss on these 36 rows: router " in out and ", best single (" in out
    assert "The router beats the best single expert." in out  # each domain has its own expert
    assert main(["train", "--qtable", str(domain_qtable_path), "--out", str(tmp_path / "r2"), "--encoder",
                 str(tiny_encoder), "--epochs", "60", "--no-check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["small_table_check"] is None


def test_a_serve_only_config_file_still_works_for_serve_and_other_commands(tmp_path, domain_qtable_path, capsys):
    from tryage.cli._common import apply_config
    from tryage.serve.config import ServeConfig

    config = tmp_path / "serve.yaml"
    config.write_text("router: open-llms\nexperts: experts.json\nweights: {cost: 0.5}\nport: 9002\n")
    argv, elsewhere = apply_config(_commands(build_parser()), ["serve", "--config", str(config)])
    assert dict(ServeConfig.build({}, config, elsewhere=elsewhere).weights) == {"cost": 0.5}
    argv, _ = apply_config(_commands(build_parser()), ["split", "--config", str(config), "--qtable", "q"])
    assert argv == ["split", "--config", str(config), "--qtable", "q"]  # serve's keys are left to serve
