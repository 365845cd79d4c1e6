"""The quality floor over calibrated P(correct), and answer metrics (verbosity, readability, safety,
hallucination) measured from a call log into the library the constraints read (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tryage import ExpertLibrary, TryageRouter
from tryage.collect.calllog import CallLog, CallRecord
from tryage.constraints import ConstraintSet, Filter
from tryage.errors import ConfigurationError, FlagError, MissingMetadataError, TryageError
from tryage.experts import Expert, MetricSummary
from tryage.flags import DEFAULT_MIN_QUALITY, STRONG_WEIGHT, FlagParser
from tryage.objective import decide
from tryage.predictors.calibration import ScoreCalibration, expected_calibration_error


class FixedLosses:
    """A loss predictor (the LossPredictor protocol) that predicts the same losses for every prompt."""

    def __init__(self, losses: dict[str, float]) -> None:
        self.experts = tuple(losses)
        self.row = np.array(list(losses.values()))

    def predict_losses(self, prompts):
        return np.tile(self.row, (len(prompts), 1))


PRICED = ExpertLibrary([Expert("cheap", input_cost=0.1, output_cost=0.1), Expert("mid", input_cost=1, output_cost=1),
                        Expert("dear", input_cost=10, output_cost=10)])


# -- the quality floor -------------------------------------------------------------------------------------
def test_floor_picks_cheapest_expert_reaching_it():
    predicted = np.array([[0.5, 0.15, 0.05], [0.05, 0.1, 0.0]])  # P(correct) = 1 - loss
    batch = decide(predicted, PRICED, ConstraintSet(), {"cost": STRONG_WEIGHT}, quality=1 - predicted, min_quality=0.8)
    assert batch.choice.tolist() == [1, 0]
    assert batch.floor_met.tolist() == [True, True]
    plain = decide(predicted, PRICED, ConstraintSet(), {"cost": STRONG_WEIGHT})  # [Flag: cheapest] keeps its meaning
    assert plain.choice.tolist() == [0, 0]


def test_floor_none_reached_chooses_best_predicted_and_says_so():
    router = TryageRouter(FixedLosses({"cheap": 0.6, "mid": 0.4, "dear": 0.3}), PRICED)
    decision = router.route("What is 2+2? [Flag: cheapest that answers]")
    assert decision.expert == "dear"
    assert decision.floor_met is False and decision.min_quality == DEFAULT_MIN_QUALITY
    assert decision.calibrated is False  # this predictor has no calibration: 1 - loss
    assert "no expert reaches the quality floor 0.8" in decision.explain()
    assert decision.to_dict()["floor_met"] is False
    assert [s.quality for s in decision.scores] == pytest.approx([0.4, 0.6, 0.7])


def test_floor_levels_flag_over_call_over_router():
    router = TryageRouter(FixedLosses({"cheap": 0.3, "mid": 0.15, "dear": 0.05}), PRICED,
                          weights={"cost": STRONG_WEIGHT}, min_quality=0.9)
    assert router.route("q").expert == "dear"
    assert router.route("q", min_quality=0.8).expert == "mid"
    assert router.route("q [Flag: min quality 60%]", min_quality=0.8).expert == "cheap"
    assert router.route("q [Flag: cheapest]").expert == "dear"  # the router's floor still holds


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), "high"])
def test_floor_outside_unit_interval_is_one_line_error(bad):
    with pytest.raises(ConfigurationError, match="min_quality") as info:
        TryageRouter(FixedLosses({"a": 0.1, "b": 0.2}), min_quality=bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("flag", ["min quality 1.5", "min quality 120%", "min quality -1", "min quality lots"])
def test_floor_flag_outside_unit_interval_is_flag_error(flag):
    with pytest.raises(FlagError, match="min quality"):
        FlagParser().parse(f"q [Flag: {flag}]")


def test_floor_flags_parse():
    parser = FlagParser()
    assert parser.parse("q [Flag: min quality 80%]").min_quality == pytest.approx(0.8)
    parsed = parser.parse("q [Flag: cheapest that answers]")
    assert parsed.min_quality == DEFAULT_MIN_QUALITY and parsed.weights == {"cost": STRONG_WEIGHT}
    assert parser.parse("q [Flag: cheapest]").min_quality is None


def test_floor_on_loss_units_is_refused():
    router = TryageRouter(FixedLosses({"a": 2.5, "b": 3.0}))
    with pytest.raises(ConfigurationError, match="scores in \\[0, 1\\]"):
        router.route("q", min_quality=0.5)


# -- calibration -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_lowers_expected_calibration_error(method):
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, size=(4000, 2))
    outcomes = (rng.uniform(size=truth.shape) < truth).astype(float)
    predicted_loss = 1 - truth ** 3  # overconfident the wrong way: scores far below the truth
    fit = ScoreCalibration.fit(["a", "b"], predicted_loss[:2000], 1 - outcomes[:2000], method=method)
    before = expected_calibration_error(1 - predicted_loss[2000:], outcomes[2000:])
    after = expected_calibration_error(fit.probabilities(["a", "b"], predicted_loss[2000:]), outcomes[2000:])
    assert before > 0.15 and after < 0.04


def test_calibration_round_trips_and_malformed_is_router_format_error():
    fit = ScoreCalibration.fit(["a"], np.linspace(0, 1, 40)[:, None], (np.arange(40) % 2)[:, None].astype(float))
    again = ScoreCalibration.from_dict(json.loads(json.dumps(fit.to_dict())))
    grid = np.linspace(0, 1, 11)[:, None]
    assert np.allclose(again.probabilities(["a"], grid), fit.probabilities(["a"], grid))
    with pytest.raises(TryageError, match="calibration is malformed"):
        ScoreCalibration.from_dict({"method": "isotonic", "experts": {"a": {"x": [0, 1], "y": [0, 2]}}})


@pytest.fixture(scope="module")
def calibrated_router(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tryage.predictors import PerceptivePredictor
    from tryage.qtable import QTable

    rng = np.random.default_rng(0)
    words = ["python code function", "court law contract", "gene protein cell"]
    records = []
    for i in range(150):
        domain = i % 3
        scores = {"a": float(domain == 0 or rng.uniform() < 0.3), "b": float(domain != 0 or rng.uniform() < 0.2)}
        records.append({"prompt": f"{words[domain]} {i}", "scores": scores})
    table = QTable.from_records(records)
    predictor = PerceptivePredictor(str(tiny_encoder), hidden_dim=0, epochs=30, validation_fraction=0.4,
                                    progress=False).fit(table)
    folder = tmp_path_factory.mktemp("calibrated") / "router"
    predictor.save_pretrained(folder)
    return folder


def test_calibration_saved_in_router_folder_and_loaded(calibrated_router: Path):
    config = json.loads((calibrated_router / "config.json").read_text())
    assert config["calibration"]["method"] == "platt"
    assert config["calibration"]["experts"]["a"]["rows"] == 60  # 40% of 150 held out
    router = TryageRouter.from_pretrained(calibrated_router, min_quality=0.5)
    decision = router.route("python code function")
    assert decision.calibrated is True and decision.floor_met is not None
    loaded = router.predictor.calibration_.probabilities(router.experts, router.predict_losses(["gene protein cell"]))
    assert ((0 <= loaded) & (loaded <= 1)).all()


def test_router_folder_without_calibration_still_loads(calibrated_router: Path, tmp_path: Path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(calibrated_router, old)
    config = json.loads((old / "config.json").read_text())
    del config["calibration"]
    (old / "config.json").write_text(json.dumps(config))
    router = TryageRouter.from_pretrained(old)
    assert router.predictor.calibration_ is None
    assert router.route("court law", min_quality=0.5).calibrated is False


# -- answer metrics ----------------------------------------------------------------------------------------
ANSWERS = {
    "terse": "Paris.",
    "wordy": ("The capital city of the French Republic, considered historically, administratively and culturally, "
              "is unquestionably Paris, which has served as the governmental headquarters for many centuries."),
    "risky": "Bomb.",
}


def _log(path: Path, experts=ANSWERS, n: int = 6) -> Path:
    with CallLog(path) as log:
        for expert, answer in experts.items():
            for i in range(n):
                log.append(CallRecord(f"p{i}", expert, "s", answer=answer,
                                      output_tokens=len(answer.split()) * 2 if expert != "risky" else None))
    return path


def _cli(*argv: str) -> int:
    from tryage.cli import main

    return main(list(argv))


def test_metrics_command_writes_library_constraints_read(tmp_path: Path, capsys):
    log = _log(tmp_path / "q.calls.jsonl")
    out = tmp_path / "q.experts.json"
    assert _cli("metrics", "--log", str(log), "--out", str(out), "--metric", "verbosity", "--metric", "readability",
                "--metric", "safety", "--unsafe-words", "bomb,poison") == 0
    library = ExpertLibrary.from_json(out)
    wordy = library["wordy"].metrics
    assert wordy["verbosity"].count == 6 and wordy["verbosity"].mean == 2 * len(ANSWERS["wordy"].split())
    assert wordy["verbosity"].stderr == 0.0
    assert library["risky"].metrics["verbosity"].mean == len(ANSWERS["risky"].split())  # no usage: words
    assert wordy["readability"].mean > library["terse"].metrics["readability"].mean
    assert library["risky"].metrics["safety"].mean == 1.0 and library["terse"].metrics["safety"].mean == 0.0
    router = TryageRouter(FixedLosses({"terse": 0.3, "wordy": 0.1, "risky": 0.2}), library)
    assert router.route("Capital of France?").expert == "wordy"
    assert router.route("Capital of France? [Flag: shortest answer]").expert == "risky"
    assert router.route("Capital of France? [Flag: shortest answer; max unsafe 1%]").expert == "terse"
    assert router.route("Capital of France? [Flag: safest]").expert == "wordy"
    assert router.route("Capital of France? [Flag: most readable]").expert != "wordy"
    assert router.route("Capital of France? [Flag: verbosity=0.3]").expert == "risky"  # 0.2 + 0 < 0.1 + 0.3


def test_metrics_with_too_few_answers_are_missing(tmp_path: Path):
    log = _log(tmp_path / "q.calls.jsonl", n=3)
    out = tmp_path / "lib.json"
    assert _cli("metrics", "--log", str(log), "--out", str(out)) == 0
    library = ExpertLibrary.from_json(out)
    assert library["terse"].metrics["verbosity"].count == 3
    assert library["terse"].metric("verbosity") is None
    router = TryageRouter(FixedLosses({"terse": 0.3, "wordy": 0.1, "risky": 0.2}), library)
    with pytest.raises(MissingMetadataError, match="verbosity"):
        router.route("q [Flag: shortest answer]")
    assert "not measured" in Filter(max_metrics={"safety": 0.01}).reason_excluded(library["terse"])


@pytest.mark.parametrize("argv, message", [
    (["--metric", "politeness"], "unknown metric 'politeness'"),
    (["--metric", "safety"], "metric 'safety' needs a check"),
    (["--metric", "hallucination", "--unsafe-words", "x"], "metric 'hallucination' needs a check"),
])
def test_metrics_bad_input_is_one_line(tmp_path: Path, capsys, argv, message):
    log = _log(tmp_path / "q.calls.jsonl")
    assert _cli("metrics", "--log", str(log), "--out", str(tmp_path / "lib.json"), *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "lib.json").exists()


def test_metric_never_measured_is_one_line_error(tmp_path: Path, capsys):
    library = tmp_path / "lib.json"
    ExpertLibrary([Expert("a", metrics={"verbosity": {"mean": 3, "count": 9}}), Expert("b")]).to_json(library)
    router = TryageRouter(FixedLosses({"a": 0.2, "b": 0.1}), ExpertLibrary.from_json(library))
    with pytest.raises(MissingMetadataError, match="'b'"):  # measured for some experts: names the others
        router.route("q [Flag: shortest answer]")
    with pytest.raises(MissingMetadataError) as info:  # measured for none: says which flags do work
        router.route("q [Flag: fewest hallucinations]")
    message = str(info.value)
    assert "\n" not in message and "all 2 experts" in message and "min quality" in message
    assert "fewest hallucinations" not in message and "hallucinations <" not in message


def test_hallucination_measured_on_rows_with_context(tmp_path: Path):
    from tryage.collect.metrics import measure_metrics

    log = _log(tmp_path / "q.calls.jsonl")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Capital of France? ({i})",
                                           **({"reference": "Paris"} if i < 5 else {})}) + "\n" for i in range(6)))

    def unsupported(answer, row):
        return "bomb" in answer or "French Republic" in answer

    library = measure_metrics(log, prompts=prompts, metrics=["hallucination"], hallucination=unsupported)
    assert library["wordy"].metrics["hallucination"] == MetricSummary(1.0, 5, 0.0)
    assert library["terse"].metric("hallucination") == 0.0


def test_expert_metrics_round_trip_and_merge():
    expert = Expert("a", metrics={"verbosity": {"mean": 12.5, "count": 8, "stderr": 0.5}})
    again = Expert.from_dict(json.loads(json.dumps(expert.to_dict())))
    assert again == expert and hash(again) == hash(expert)
    assert "metrics" not in Expert("b").to_dict()
    merged = ExpertLibrary([expert]).merge([Expert("a", metrics={"safety": {"mean": 0.0, "count": 9}})])
    assert set(merged["a"].metrics) == {"verbosity", "safety"}
    with pytest.raises(TryageError, match="metrics"):
        Expert("c", metrics={"verbosity": {"mean": "long"}})


def _test_table(tmp_path: Path) -> Path:
    table = tmp_path / "test.jsonl"
    words = ["python code function", "court law contract", "gene protein cell"]
    table.write_text("".join(json.dumps({"prompt": f"{words[i % 3]} t{i}", "scores": {"a": float(i % 3 == 0),
                                                                                       "b": float(i % 3 != 0)}}) + "\n"
                             for i in range(30)))
    return table


def test_pareto_traces_an_answer_metric(calibrated_router: Path, tmp_path: Path, capsys):
    library = tmp_path / "lib.json"
    ExpertLibrary([Expert("a", metrics={"verbosity": {"mean": 40, "count": 9}}),
                   Expert("b", metrics={"verbosity": {"mean": 400, "count": 9}})]).to_json(library)
    assert _cli("pareto", "--router", str(calibrated_router), "--experts", str(library), "--qtable",
                str(_test_table(tmp_path)), "--constraint", "verbosity", "--json") == 0
    front = json.loads(capsys.readouterr().out)["router"]
    assert front[-1]["mean_constraint"] == 40.0  # the strongest weight sends every prompt to the shortest
    assert max(p["mean_constraint"] for p in front) > 40.0


def test_evaluate_reports_calibration_error_and_plots_reliability(calibrated_router: Path, tmp_path: Path, capsys):
    table = _test_table(tmp_path)
    png = tmp_path / "reliability.png"
    assert _cli("evaluate", "--router", str(calibrated_router), "--qtable", str(table), "--knn-k", "5",
                "--plot", str(png), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    calibration = report["calibration"]
    assert calibration["calibrated"] is True and 0.0 <= calibration["ece"] <= 1.0
    assert sum(b["count"] for b in calibration["reliability"]) == 60
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("edit", "why"), [
    ("empty", "no expert had enough held-out rows to fit it, as a table under 300 rows trains on every row"),
    ("absent", "a router folder from before calibration")])
def test_evaluate_says_why_a_router_is_not_calibrated(calibrated_router: Path, tmp_path: Path, capsys, edit, why):
    """A router trained on a small table (no held-out rows) is not "from before calibration"."""
    import shutil

    folder = tmp_path / "router"
    shutil.copytree(calibrated_router, folder)
    config = json.loads((folder / "config.json").read_text())
    if edit == "empty":
        config["calibration"]["experts"] = {}  # what a small table's training writes: nothing held out
    else:
        del config["calibration"]
    (folder / "config.json").write_text(json.dumps(config))
    table = str(_test_table(tmp_path))
    assert _cli("evaluate", "--router", str(folder), "--qtable", table, "--knn-k", "5", "--json") == 0
    assert json.loads(capsys.readouterr().out)["calibration"]["why_not"] == why
    assert _cli("evaluate", "--router", str(folder), "--qtable", table, "--knn-k", "5") == 0
    assert f"not calibrated ({why}); 1 - loss:" in capsys.readouterr().out


def test_score_measures_metrics_when_asked(tmp_path: Path, capsys):
    log = _log(tmp_path / "q.calls.jsonl")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Capital of France? ({i})", "reference": "Paris"})
                               + "\n" for i in range(6)))
    out = tmp_path / "q.jsonl"
    assert _cli("score", "--log", str(log), "--prompts", str(prompts), "--scorer", "contains", "--out", str(out),
                "--metrics", "politeness") == 2
    assert "unknown metric 'politeness'" in capsys.readouterr().err and not out.exists()
    assert _cli("score", "--log", str(log), "--prompts", str(prompts), "--scorer", "contains", "--out", str(out),
                "--metrics", "verbosity,readability", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert {r["expert"] for r in summary["metrics"]} == set(ANSWERS)
    library = ExpertLibrary.from_json(tmp_path / "q.experts.json")
    assert library["terse"].metric("verbosity") == 2.0 and library["terse"].metrics["readability"].count == 6


def test_safety_by_judge_with_a_safety_rubric_logs_its_replies(tmp_path: Path):
    from tryage.collect.judge import Judge, judge_log_path
    from tryage.collect.metrics import SAFETY_RUBRIC, measure_metrics

    log = _log(tmp_path / "q.calls.jsonl")
    asked = []

    def guard(question: str) -> str:  # a local guard model: any callable that returns text
        asked.append(question)
        return "SCORE: 0" if "Bomb." in question.split("Answer to grade:")[-1] else "fine. SCORE: 1"

    judge = Judge(guard, rubric=SAFETY_RUBRIC, log=judge_log_path(log))
    library = measure_metrics(log, metrics=["safety"], safety=judge)
    assert library["risky"].metric("safety") == 1.0 and library["wordy"].metric("safety") == 0.0
    assert SAFETY_RUBRIC in asked[0] and len(asked) == 3  # equal answers are judged once
    again = measure_metrics(log, metrics=["safety"], safety=Judge(guard, rubric=SAFETY_RUBRIC, log=judge_log_path(log)))
    assert len(asked) == 3 and again["risky"].metric("safety") == 1.0  # replies reused from the judge's log
