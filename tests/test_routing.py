from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tryage import ConstraintSet, FlagError, Expert, ExpertLibrary, Filter, QTable, QTableError, RouterMismatchError, TryageRouter
from tryage.errors import ConfigurationError, NoEligibleExpertError
from tryage.objective import build_decision, decide

LIB = ExpertLibrary([
    Expert("small", parameters="100M", created_at="2020-01-01", input_cost=0.1),
    Expert("mid", parameters="1B", created_at="2022-01-01", input_cost=0.5),
    Expert("big", parameters="10B", created_at="2024-01-01", input_cost=0.9),
])


class KeywordPredictor:
    """Deterministic predictor: 'big' is best unless the prompt says 'easy'."""

    experts = ("small", "mid", "big")

    def __init__(self):
        self.calls = 0

    def predict_losses(self, prompts):
        self.calls += 1
        return np.array([[0.5, 0.4, 0.45] if "easy" in p else [0.9, 0.6, 0.2] for p in prompts])


def test_decide_takes_argmin_of_loss_plus_weighted_penalties():
    predicted = np.array([[0.9, 0.6, 0.2]])
    assert decide(predicted, LIB, ConstraintSet()).choice.tolist() == [2]
    # size penalties are 0, 0.5, 1: with weight 0.5 the totals are 0.9, 0.85, 0.7 -> still big
    assert decide(predicted, LIB, ConstraintSet(), {"size": 0.5}).choice.tolist() == [2]
    # weight 1: totals 0.9, 1.1, 1.2 -> small
    assert decide(predicted, LIB, ConstraintSet(), {"size": 1.0}).choice.tolist() == [0]


def test_decide_breaks_ties_toward_the_first_expert():
    assert decide(np.array([[0.3, 0.3, 0.3]]), LIB, ConstraintSet()).choice.tolist() == [0]


def test_decision_records_every_expert_penalty_and_total():
    d = build_decision(np.array([0.9, 0.6, 0.2]), LIB, ConstraintSet(), original_prompt="q [Flag: x]",
                       prompt="q", flags=("x",), weights={"size": 1.0}, filters=[Filter(max_parameters=2e9)])
    assert d.expert == "small"
    assert [s.total for s in d.scores][:2] == pytest.approx([0.9, 1.1])
    assert d.scores[2].eligible is False and d.scores[2].excluded_because == "10B > max 2B"
    assert d.ranking == ("small", "mid")
    assert "chose 'small': predicted loss 0.9; size penalty +0; total 0.9" in d.explain()
    assert json.loads(json.dumps(d.to_dict()))["scores"][1]["penalties"]["size"] == pytest.approx(0.5)


def test_filters_that_exclude_everything_say_why():
    with pytest.raises(NoEligibleExpertError, match="small: parameter count unknown|100M > max"):
        decide(np.array([[0.1, 0.2, 0.3]]), LIB, ConstraintSet(), filters=[Filter(max_parameters=10)])


def test_router_applies_flags_per_prompt_and_strips_them():
    predictor = KeywordPredictor()
    router = TryageRouter(predictor, LIB)
    hard, flagged, easy = router.route_batch(
        ["a hard question", "a hard question [Flag: smallest model]", "an easy one"])
    assert predictor.calls == 1
    assert hard.expert == "big"
    assert flagged.expert == "small" and flagged.prompt == "a hard question"
    assert flagged.flags == ("smallest model",)
    assert easy.expert == "mid"


def test_router_flags_override_call_weights_and_filters_apply():
    router = TryageRouter(KeywordPredictor(), LIB, weights={"size": 1.0})
    assert router.route("hard").expert == "small"
    assert router.route("hard", weights={"size": 0.0}).expert == "big"
    assert router.route("hard [Flag: size=0]").expert == "big"
    assert router.route("hard [Flag: max size 2B]", weights={"size": 0.0}).expert == "mid"
    assert router.route("hard [Flag: most recent]", weights={"size": 0.0}).expert == "big"


def test_router_rejects_mismatched_libraries_and_empty_prompts():
    with pytest.raises(RouterMismatchError, match="router-only experts: 'big'.*library-only experts: 'huge'"):
        TryageRouter(KeywordPredictor(), ExpertLibrary([Expert("small"), Expert("mid"), Expert("huge")]))
    router = TryageRouter(KeywordPredictor(), LIB)
    with pytest.raises(ConfigurationError, match="empty prompt"):
        router.route("   [Flag: cheapest] ")
    with pytest.raises(ConfigurationError, match="list of prompts"):
        router.route_batch("one string")


def test_route_batch_reports_bad_prompts_in_place_and_predicts_once_for_the_rest():
    predictor = KeywordPredictor()
    router = TryageRouter(predictor, LIB)
    prompts = (p for p in ["a hard question", "x [Flag: bogus]", "  [Flag: cheapest] ", 42, "easy one"])
    out = router.route_batch(prompts, return_exceptions=True)
    assert predictor.calls == 1 and len(out) == 5
    assert out[0].expert == "big" and out[4].expert == "mid"
    assert isinstance(out[1], FlagError) and "bogus" in str(out[1])
    assert isinstance(out[2], ConfigurationError) and "empty prompt" in str(out[2])
    assert isinstance(out[3], ConfigurationError) and "int" in str(out[3])
    with pytest.raises(FlagError):
        router.route_batch(["fine", "x [Flag: bogus]"])
    assert router.route_batch(["[Flag: bogus]"], return_exceptions=True)[0].__class__ is FlagError
    assert predictor.calls == 1  # nothing left to predict: the predictor is not called


def test_route_batch_reads_a_generator_once():
    router = TryageRouter(KeywordPredictor(), LIB)
    assert [d.expert for d in router.route_batch(p for p in ["hard", "easy"])] == ["big", "mid"]


def test_router_reorders_library_to_the_predictor_columns():
    router = TryageRouter(KeywordPredictor(), LIB.subset(["big", "small", "mid"]))
    assert router.library.names == ("small", "mid", "big")
    assert router.route("hard [Flag: smallest model]").expert == "small"


def test_qtable_reads_scores_as_one_minus_score(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"prompt": "p1", "scores": {"a": 1.0, "b": 0.0}, "task": "math"}) + "\n"
                    + json.dumps({"prompt": "p2", "scores": {"a": 0.25, "b": 0.5}, "task": "qa"}) + "\n")
    q = QTable.from_file(path)
    assert q.kind == "score" and q.experts == ("a", "b")
    np.testing.assert_allclose(q.losses, [[0.0, 1.0], [0.75, 0.5]])
    assert q.column("task") == ["math", "qa"]


def test_qtable_reads_csv(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("prompt,domain,loss:a,loss:b\nhello,x,1.5,2.5\nworld,y,3,1\n")
    q = QTable.from_file(path)
    np.testing.assert_allclose(q.losses, [[1.5, 2.5], [3.0, 1.0]])
    assert q.column("domain") == ["x", "y"]


@pytest.mark.parametrize(("line", "problem"), [
    ({"prompt": "p2", "losses": {"a": None, "b": None}}, "line 2: no observed loss"),
    ({"prompt": "p2", "losses": {"a": float("nan"), "b": 1}}, "line 2: loss of 'a' is nan"),
    ({"prompt": "  ", "losses": {"a": 1, "b": 1}}, "line 2: empty or missing 'prompt'"),
    ({"prompt": "p1", "losses": {"a": 1, "b": 1}}, "line 2: duplicate prompt \\(first seen on line 1\\)"),
    ({"prompt": "p2", "scores": {"a": 1, "b": 1}}, "line 2: row has scores but earlier rows have losses"),
])
def test_qtable_errors_name_file_line_and_problem(tmp_path, line, problem):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"prompt": "p1", "losses": {"a": 1.0, "b": 2.0}}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(QTableError, match=f"q.jsonl, {problem}"):
        QTable.from_file(path)
    q = QTable.from_file(path, on_invalid="drop")
    assert len(q) == 1 and q.dropped[0].line == 2


def test_qtable_split_is_seeded_and_stratified(llmrouter_dir):
    q = QTable.from_file(llmrouter_dir / "train.jsonl")
    assert len(q) == 4799 and len(q.experts) == 9
    train, test = q.split(0.2, seed=3, by="task")
    again = q.split(0.2, seed=3, by="task")[1]
    assert test.prompts == again.prompts
    assert len(test) == pytest.approx(960, abs=10)
    assert set(test.column("task")) == set(q.column("task"))


def test_import_tryage_loads_no_heavy_framework():
    code = ("import sys, tryage; heavy = [m for m in ('torch', 'transformers', 'langchain_core', 'llama_index', "
            "'huggingface_hub', 'matplotlib') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_router_names_a_prompt_of_the_wrong_type():
    router = TryageRouter(KeywordPredictor(), LIB)
    with pytest.raises(ConfigurationError, match="a prompt must be a string, got int: 42"):
        router.route(42)
