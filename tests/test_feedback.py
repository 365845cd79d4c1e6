"""Production: partial Q-tables, feedback updates, exploration, adding and removing experts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tryage import ExpertLibrary, QTable, TryageRouter
from tryage.cli import main
from tryage.constraints import Filter
from tryage.errors import ConfigurationError, ExpertLibraryError, ExpertNotFoundError, QTableError
from tryage.evaluation import evaluate_predictions
from tryage.feedback import Feedback, feedback_table, read_feedback
from tryage.objective import Exploration
from tryage.predictors import PerceptivePredictor

CODE, LAW, BIO = "import class return code", "court statute of the contract", "cell protein and gene"


def _router(tiny_encoder, **options):
    defaults = {"hidden_dim": 32, "learning_rate": 1e-2, "epochs": 150, "validation_fraction": 0.0, "seed": 0,
                "progress": False}
    return PerceptivePredictor(str(tiny_encoder), **{**defaults, **options})


@pytest.fixture()
def trained(tiny_encoder, domain_qtable_path, small_library_path):
    q = QTable.from_file(domain_qtable_path)
    return _router(tiny_encoder).fit(q, ExpertLibrary.from_json(small_library_path)), q


# -- partial rows ------------------------------------------------------------------------------------

def test_qtable_reads_missing_and_null_entries_as_unobserved(tmp_path):
    path = tmp_path / "partial.jsonl"
    rows = [{"prompt": "p1", "scores": {"a": 1.0}}, {"prompt": "p2", "scores": {"a": None, "b": 0.25}},
            {"prompt": "p3", "scores": {"b": 0.5, "c": 1}}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    q = QTable.from_file(path)
    assert q.experts == ("a", "b", "c")  # the union, in first-seen order
    assert q.observed.tolist() == [[True, False, False], [False, True, False], [False, True, True]]
    assert q.n_missing == 5
    np.testing.assert_allclose(q.losses[q.observed], [0.0, 0.75, 0.5, 0.0])
    again = QTable.from_file(q.to_jsonl(tmp_path / "again.jsonl"))
    np.testing.assert_array_equal(again.observed, q.observed)


def test_partial_table_csv_empty_cells_are_unobserved(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("prompt,loss:a,loss:b\nhello,1.5,\nworld,,2\n")
    q = QTable.from_file(path)
    assert q.observed.tolist() == [[True, False], [False, True]]


def test_masked_loss_counts_only_observed_entries():
    import torch

    from tryage.predictors._training import loss_function

    output = torch.tensor([[0.0, 5.0], [1.0, 1.0]])
    target = torch.tensor([[1.0, float("nan")], [3.0, 1.0]])
    assert float(loss_function("mse")(output, target)) == pytest.approx((1.0 + 4.0 + 0.0) / 3)
    full = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert float(loss_function("bce")(torch.tensor([[0.0, 9.0], [1.0, -9.0]]),
                                      torch.tensor([[1.0, float("nan")], [0.0, float("nan")]]))) == pytest.approx(float(full))


def test_router_trains_on_partial_rows_and_routes_each_domain(tiny_encoder, domain_qtable_path):
    full = QTable.from_file(domain_qtable_path)
    losses = full.losses.copy()
    # Every row loses one expert that is not its domain's best, in turn.
    for i, row in enumerate(losses):
        others = [j for j in range(3) if j != int(np.argmin(row))]
        row[others[i % 2]] = np.nan
    partial = QTable(full.prompts, full.experts, losses, full.extras)
    assert partial.n_missing == len(partial)
    router = _router(tiny_encoder).fit(partial)
    predicted = router.predict_losses([CODE, LAW, BIO])
    assert np.isfinite(predicted).all()
    assert [router.experts[i] for i in predicted.argmin(1)] == ["coder", "lawyer", "biologist"]
    np.testing.assert_allclose(router.target_mean_, np.nanmean(losses, axis=0), rtol=1e-5)


def test_training_needs_every_expert_observed_somewhere(tiny_encoder):
    q = QTable(("a b", "c d"), ("x", "y"), np.array([[1.0, np.nan], [2.0, np.nan]]))
    with pytest.raises(ConfigurationError, match=r"expert\(s\) \['y'\] have no observed value"):
        _router(tiny_encoder).fit(q)


def test_evaluation_scores_observed_entries_and_counts_missing():
    test = QTable(("p1", "p2", "p3"), ("a", "b"), np.array([[0.0, np.nan], [np.nan, 1.0], [1.0, 0.0]]))
    predicted = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # chooses a, a, b
    report = evaluate_predictions(predicted, test)
    assert report.missing_entries == 2 and report.unscored_choices == 1  # p2's choice (a) is unobserved
    assert report.router.value == pytest.approx(0.0)  # p1 -> 0.0, p3 -> 0.0 (p2 left out)
    assert report.oracle == pytest.approx(1 / 3)  # best observed: 0, 1 (only b), 0
    assert report.to_dict()["missing_entries"] == 2


# -- feedback updates ----------------------------------------------------------------------------------

def test_feedback_rows_become_a_partial_table_and_repeats_average():
    table = feedback_table([{"prompt": "p", "expert": "b", "score": 1.0}, Feedback("p", "b", 0.5),
                            {"prompt": "q", "expert": "a", "loss": 2.0}], ("a", "b"))
    assert table.prompts == ("p", "q")
    np.testing.assert_allclose(table.losses, [[np.nan, 0.25], [2.0, np.nan]])
    with pytest.raises(ExpertNotFoundError, match="unknown expert 'zz'"):
        feedback_table([{"prompt": "p", "expert": "zz", "score": 1}], ("a", "b"))


def test_update_moves_the_observed_expert_toward_feedback_and_replay_keeps_the_rest(trained):
    import copy

    base, q = trained
    bio = ["gene protein cell disease", "protein in the cell gene", "disease of the cell protein"]
    probe = bio + [CODE, LAW, "court of law statute", "python code function"]
    before = base.predict_losses(probe)
    feedback = [{"prompt": p, "expert": "lawyer", "loss": 0.0} for p in bio]  # the router predicts ~3
    reference = [p for p, d in zip(q.prompts, q.column("domain")) if d != "bio"]
    lawyer = base.experts.index("lawyer")
    others = [j for j in range(3) if j != lawyer]
    drift = {}
    for regularization in ("replay", "none"):
        router = copy.deepcopy(base)
        report = TryageRouter(router).update(feedback, epochs=30, regularization=regularization,
                                             reference_prompts=reference)
        after = router.predict_losses(probe)
        assert report.observed == {"lawyer": 3} and report.loss_after < report.loss_before
        assert (after[:3, lawyer] < before[:3, lawyer] - 2.0).all()  # moved toward the feedback
        drift[regularization] = (np.abs(after[:3, others] - before[:3, others]).max(),  # same prompts, other experts
                                 np.abs(after[3:] - before[3:]).max())  # other prompts
    assert drift["replay"][0] < 0.5 * drift["none"][0]
    assert drift["replay"][1] < 0.5 * drift["none"][1]


def test_update_rejects_bad_options_and_unknown_experts(trained):
    router, _ = trained
    rows = [{"prompt": BIO, "expert": "lawyer", "loss": 0.0}]
    with pytest.raises(ConfigurationError, match="regularization must be one of"):
        TryageRouter(router).update(rows, regularization="forget")
    with pytest.raises(ExpertNotFoundError, match="unknown expert 'poet'"):
        TryageRouter(router).update([{"prompt": BIO, "expert": "poet", "loss": 0.0}])


def test_partial_fit_returns_the_predictor_and_keeps_its_report(trained):
    import copy

    import torch

    base, _ = trained
    rows = [{"prompt": BIO, "expert": "lawyer", "loss": 0.0}, Feedback(LAW, "coder", 0.5)]
    predictor = copy.deepcopy(base)
    torch.manual_seed(0)  # the head's dropout draws from torch's global stream; seed= orders the rows
    assert predictor.partial_fit(rows, epochs=5) is predictor
    report = predictor.last_update_
    assert report.observed == {"coder": 1, "lawyer": 1} and report.epochs == 5 and report.regularization == "l2"
    twin = copy.deepcopy(base)
    torch.manual_seed(0)
    assert TryageRouter(twin).update(rows, epochs=5) is twin.last_update_  # the router hands back the same report
    assert twin.last_update_ == report
    np.testing.assert_allclose(twin.predict_losses([BIO, LAW]), predictor.predict_losses([BIO, LAW]))


@pytest.mark.parametrize(("options", "message"), [
    ({"l2": float("nan")}, "l2 must be a finite number >= 0, got nan"),
    ({"l2": float("inf")}, "l2 must be a finite number >= 0, got inf"),
    ({"replay_weight": float("nan")}, "replay_weight must be a finite number >= 0, got nan"),
    ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0, got 0.0"),
    ({"learning_rate": float("inf")}, "learning_rate must be a finite number > 0, got inf"),
    ({"epochs": True}, "epochs must be a whole number >= 1, got True"),
    ({"epochs": 0}, "epochs must be a whole number >= 1, got 0"),
    ({"batch_size": 2.5}, "batch_size must be a whole number >= 1, got 2.5"),
    ({"seed": "1"}, "seed must be a whole number >= 0 and <= 4294967295, got '1'"),
])
def test_partial_fit_refuses_bad_scalars_in_one_line_and_changes_nothing(trained, options, message):
    router, _ = trained
    before = router.predict_losses([BIO])
    with pytest.raises(ConfigurationError) as caught:
        router.partial_fit([{"prompt": BIO, "expert": "lawyer", "loss": 0.0}], **options)
    assert str(caught.value) == message
    np.testing.assert_array_equal(router.predict_losses([BIO]), before)
    assert not hasattr(router, "last_update_")


def test_update_predictor_is_a_deprecated_path_to_partial_fit(trained):
    import copy

    from tryage.feedback import update_predictor

    base, _ = trained
    rows = [{"prompt": BIO, "expert": "lawyer", "loss": 0.0}]
    import torch

    old, new = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="use PerceptivePredictor.partial_fit"):
        report = update_predictor(old, rows, epochs=4)
    torch.manual_seed(0)
    assert report == new.partial_fit(rows, epochs=4).last_update_
    np.testing.assert_array_equal(old.predict_losses([BIO]), new.predict_losses([BIO]))


def test_cli_update_end_to_end(trained, tmp_path, capsys):
    router, _ = trained
    folder = router.save_pretrained(tmp_path / "router")
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text("\n".join(json.dumps({"prompt": p, "expert": "lawyer", "score": 1.0, "decision_id": i})
                                  for i, p in enumerate(["gene protein cell", "protein cell gene disease"])) + "\n")
    before = PerceptivePredictor.from_pretrained(folder).predict_losses([BIO])
    code = main(["update", "--router", str(folder), "--feedback", str(feedback), "--out", str(tmp_path / "v2"),
                 "--epochs", "30", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["observed"] == {"lawyer": 2} and summary["prompts"] == 2
    updated = PerceptivePredictor.from_pretrained(tmp_path / "v2")
    lawyer = updated.experts.index("lawyer")
    assert updated.predict_losses([BIO])[0, lawyer] < before[0, lawyer] - 0.5
    np.testing.assert_allclose(PerceptivePredictor.from_pretrained(folder).predict_losses([BIO]), before)  # untouched


def test_cli_update_bad_feedback_is_one_line_and_exit_2(trained, tmp_path, capsys):
    router, _ = trained
    folder = router.save_pretrained(tmp_path / "router")
    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text(json.dumps({"prompt": "a", "expert": "lawyer", "score": 1}) + "\n"
                        + json.dumps({"prompt": "b", "expert": "lawyer"}) + "\n")
    assert main(["update", "--router", str(folder), "--feedback", str(feedback)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tryage: error: ") and "feedback.jsonl, line 2: a feedback row needs exactly one of" in err
    assert len(err.strip().splitlines()) == 1


def test_read_feedback_reads_csv(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("prompt,expert,score\nhello,a,0.75\n")
    assert read_feedback(path) == [Feedback("hello", "a", 0.25)]


# -- exploration -----------------------------------------------------------------------------------------

def test_exploration_is_off_by_default(trained):
    router, _ = trained
    decisions = TryageRouter(router).route_batch([CODE, LAW, BIO] * 5)
    assert [d.expert for d in decisions] == ["coder", "lawyer", "biologist"] * 5
    assert not any(d.explored for d in decisions) and {d.exploration for d in decisions} == {None}


def test_epsilon_exploration_is_seeded_recorded_and_respects_filters(trained):
    router, _ = trained
    policy = Exploration(kind="epsilon", epsilon=1.0, seed=3)
    only = Filter(experts=("coder", "lawyer"))
    run = [d for d in TryageRouter(router, exploration=policy, filters=[only]).route_batch([BIO] * 40)]
    again = TryageRouter(router, exploration=policy, filters=[only]).route_batch([BIO] * 40)
    assert [d.expert for d in run] == [d.expert for d in again]
    assert {d.expert for d in run} == {"coder", "lawyer"}  # never the filtered-out biologist
    greedy = TryageRouter(router, filters=[only]).route(BIO).expert
    assert all(d.explored == (d.expert != greedy) for d in run) and any(d.explored for d in run)
    assert run[0].exploration == "epsilon=1" and run[0].to_dict()["exploration"] == "epsilon=1"
    explored = next(d for d in run if d.explored)
    assert "explored (epsilon=1)" in explored.explain()


def test_thompson_exploration_without_noise_is_greedy(trained):
    router, _ = trained
    decisions = TryageRouter(router, exploration=Exploration(kind="thompson", noise=0.0)).route_batch([CODE, LAW, BIO])
    assert [d.expert for d in decisions] == ["coder", "lawyer", "biologist"]
    assert not any(d.explored for d in decisions) and decisions[0].exploration == "thompson noise=0"


def test_exploration_settings_are_checked():
    with pytest.raises(ConfigurationError, match="exploration kind must be one of"):
        Exploration(kind="ucb")
    with pytest.raises(ConfigurationError, match=r"epsilon must be a finite number >= 0 and <= 1, got 1.5"):
        Exploration(epsilon=1.5)
    with pytest.raises(ConfigurationError, match="noise must be a finite number >= 0, got nan"):
        Exploration(kind="thompson", noise=float("nan"))
    with pytest.raises(ConfigurationError, match="seed must be a whole number, got True"):
        Exploration(seed=True)
    assert Exploration(seed=3.0).seed == 3 and isinstance(Exploration(seed=3.0).seed, int)


def test_exploration_old_import_path_warns_and_gives_the_same_class():
    import tryage.feedback

    with pytest.warns(DeprecationWarning, match="moved to tryage.objective.Exploration"):
        assert tryage.feedback.Exploration is Exploration


# -- adding and removing experts ---------------------------------------------------------------------

def test_add_expert_fits_a_new_column_from_calibration_rows(tiny_encoder, domain_qtable_path, small_library_path,
                                                            tmp_path):
    q = QTable.from_file(domain_qtable_path)
    library = ExpertLibrary.from_json(small_library_path)
    predictor = _router(tiny_encoder).fit(q.select_experts(["coder", "lawyer"]), library)
    tryage_router = TryageRouter(predictor, predictor.library_)
    column = q.experts.index("biologist")
    calibration = [{"prompt": p, "loss": float(row[column])} for p, row in zip(q.prompts, q.losses)]
    added = tryage_router.add_expert("biologist", calibration, library["biologist"].to_dict())
    assert added.parameters == 70_000_000_000 and tryage_router.experts == ("coder", "lawyer", "biologist")
    assert [d.expert for d in tryage_router.route_batch([CODE, LAW, BIO])] == ["coder", "lawyer", "biologist"]
    assert tryage_router.route(f"{BIO} [Flag: smallest model]").expert == "coder"  # metadata in use
    assert predictor.expert_fits_["biologist"].rows == len(q)
    folder = tryage_router.save_pretrained(tmp_path / "grown")
    loaded = TryageRouter.from_pretrained(folder)
    assert loaded.experts == ("coder", "lawyer", "biologist")
    np.testing.assert_allclose(loaded.predict_losses([BIO, CODE]), tryage_router.predict_losses([BIO, CODE]), rtol=1e-5)


def test_add_expert_rejects_known_names_and_too_few_rows(trained):
    router, _ = trained
    with pytest.raises(ExpertLibraryError, match="expert 'lawyer' is already routed to"):
        TryageRouter(router).add_expert("lawyer", [{"prompt": BIO, "loss": 1.0}] * 5)
    with pytest.raises(ConfigurationError, match="at least 5 calibration rows for 'poet', got 2"):
        TryageRouter(router).add_expert("poet", [{"prompt": BIO, "loss": 1.0}, {"prompt": LAW, "loss": 2.0}])


def test_remove_expert_is_immediate_and_leaves_the_others_unchanged(trained):
    router, _ = trained
    tryage_router = TryageRouter(router)
    before = tryage_router.predict_losses([CODE, LAW, BIO])
    tryage_router.remove_expert("lawyer")
    assert tryage_router.experts == ("coder", "biologist") and router.library_.names == ("coder", "biologist")
    assert tryage_router.route(LAW).expert != "lawyer"
    np.testing.assert_allclose(tryage_router.predict_losses([CODE, LAW, BIO]), before[:, [0, 2]], rtol=1e-6)
    with pytest.raises(ExpertNotFoundError, match="unknown expert 'lawyer'"):
        tryage_router.remove_expert("lawyer")


def test_add_output_and_remove_output_are_the_predictors_own(trained):
    import copy

    base, q = trained
    predictor = copy.deepcopy(base).remove_output("biologist")
    assert predictor.experts == ("coder", "lawyer") and predictor.library_.names == ("coder", "lawyer")
    column = q.experts.index("biologist")
    rows = [Feedback(p, "biologist", float(row[column])) for p, row in zip(q.prompts, q.losses)]
    assert predictor.add_output("biologist", rows, {"parameters": "70B"}) is predictor
    assert predictor.experts == ("coder", "lawyer", "biologist") and predictor.library_["biologist"].parameters
    assert [predictor.experts[i] for i in predictor.predict_losses([CODE, LAW, BIO]).argmin(1)] == \
        ["coder", "lawyer", "biologist"]
    assert predictor.expert_fits_["biologist"].rows == len(q)
    with pytest.raises(ConfigurationError, match="folds must be a whole number >= 2, got 1"):
        copy.deepcopy(base).remove_output("lawyer").add_output("lawyer", rows[:6], folds=1)
    assert predictor.remove_output("biologist").expert_fits_ == {}


def test_shipped_default_router_still_loads_and_takes_a_new_expert():
    router = TryageRouter.default()
    names = router.experts
    calibration = [{"prompt": f"question number {i} about topic {i % 7}", "score": float(i % 2)} for i in range(12)]
    router.add_expert("newcomer", calibration, {"parameters": "1B"})
    assert router.experts == (*names, "newcomer")
    router.remove_expert("newcomer")
    assert router.experts == names


def test_feedback_errors_name_the_problem():
    with pytest.raises(QTableError, match="needs exactly one of 'score' or 'loss'"):
        Feedback.from_dict({"prompt": "p", "expert": "a"})
    with pytest.raises(QTableError, match="empty or missing 'expert'"):
        Feedback.from_dict({"prompt": "p", "score": 1})
