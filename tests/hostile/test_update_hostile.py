"""Learning after fit on hostile input: ``router.update`` / ``partial_fit``, ``tryage update``, saves and loads.

An update either trains to finite weights or raises a one-line Tryage error and leaves the router as it was;
a diverging update (a learning rate far too large) is caught, not saved; non-finite weights are never saved
and never loaded; a bad path to save to, a bad device or router name is one line, not a traceback.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tryage import QTable, TryageRouter
from tryage.cli import main
from tryage.errors import ConfigurationError, RouterFormatError, TrainingDivergedError
from tryage.predictors import PerceptivePredictor

CODE, LAW = "import class return code", "court statute of the contract"
FEEDBACK = [{"prompt": f"{CODE} {i}", "expert": "coder", "loss": 3.0} for i in range(4)] + [
    {"prompt": f"{LAW} {i}", "expert": "lawyer", "loss": 1.0} for i in range(4)]


@pytest.fixture(scope="module")
def trained(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> PerceptivePredictor:
    """A tiny head-mode predictor over coder / lawyer / biologist (mse objective: losses 1 to 3)."""
    rows = [(f"{CODE} {i}", {"coder": 1.0, "lawyer": 3.0, "biologist": 3.0}) for i in range(6)]
    rows += [(f"{LAW} {i}", {"coder": 3.0, "lawyer": 1.0, "biologist": 3.0}) for i in range(6)]
    path = tmp_path_factory.mktemp("q") / "q.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "losses": l}) + "\n" for p, l in rows), encoding="utf-8")
    return PerceptivePredictor(str(tiny_encoder), hidden_dim=16, epochs=20, validation_fraction=0.0,
                               progress=False).fit(QTable.from_file(path))


@pytest.fixture(scope="module")
def embedded(trained: PerceptivePredictor) -> np.ndarray:
    """The feedback prompts encoded once (feedback_table keeps their order: every prompt is distinct)."""
    return trained.encode([row["prompt"] for row in FEEDBACK])


def _weights(predictor: PerceptivePredictor) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in predictor.head_.state_dict().items()}


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


# -- update hyperparameters: every value of a hostile space ---------------------------------------------
HOSTILE_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.text(max_size=3),
    st.sampled_from([2**70, -(2**70), 10**400, -1, 0, 1e6, 1e300, float("nan"), float("inf")]))
SMALL_COUNTS = st.one_of(st.integers(min_value=-3, max_value=4), st.floats(allow_nan=True, allow_infinity=True),
                         st.booleans(), st.text(max_size=3), st.sampled_from([2**70 * -1, 10**400 * -1]))
OPTIONS = st.one_of(
    *(st.tuples(st.just(name), HOSTILE_NUMBERS) for name in ("l2", "learning_rate", "replay_weight", "seed")),
    *(st.tuples(st.just(name), SMALL_COUNTS) for name in ("epochs", "batch_size")))


@pytest.mark.timeout(240)  # 40 updates of a tiny head on a loaded machine
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=OPTIONS, regularization=st.sampled_from(["l2", "replay", "none"]))
def test_update_trains_to_finite_weights_or_refuses_and_keeps_the_router(trained, embedded, option,
                                                                          regularization) -> None:
    name, value = option
    predictor = copy.deepcopy(trained)
    before = _weights(predictor)
    try:
        TryageRouter(predictor).update(FEEDBACK, regularization=regularization, embeddings=embedded, **{name: value})
    except ConfigurationError as exc:
        assert name in _one_line(exc)  # names the input and what is allowed
    except TrainingDivergedError as exc:
        assert "learning_rate" in _one_line(exc)
    else:
        assert all(np.isfinite(w).all() for w in _weights(predictor).values()), (name, value)
        assert math.isfinite(predictor.last_update_.loss_after)
        return
    for key, weights in _weights(predictor).items():  # a refused update changed nothing
        np.testing.assert_array_equal(weights, before[key])


@pytest.mark.parametrize(("name", "value", "shown"), [
    ("l2", float("nan"), "l2 must be a finite number >= 0, got nan"),
    ("l2", float("inf"), "l2 must be a finite number >= 0, got inf"),
    ("epochs", True, "epochs must be a whole number >= 1, got True"),
    ("replay_weight", float("nan"), "replay_weight must be a finite number >= 0, got nan"),
    ("learning_rate", float("nan"), "learning_rate must be a finite number > 0, got nan"),
    ("learning_rate", -1, "learning_rate must be a finite number > 0, got -1"),
    ("seed", "x", "seed must be a whole number >= 0 and <= 4294967295, got 'x'"),
    ("seed", 2**70, "seed must be a whole number >= 0 and <= 4294967295, got 1180591620717411303424"),
])
def test_update_refuses_each_reported_hyperparameter_before_training(trained, name, value, shown) -> None:
    predictor = copy.deepcopy(trained)
    with pytest.raises(ConfigurationError) as info:
        predictor.partial_fit(FEEDBACK, regularization="replay" if name == "replay_weight" else "l2", **{name: value})
    assert str(info.value) == shown
    assert not hasattr(predictor, "last_update_")


def test_a_diverging_update_is_refused_and_the_router_routes_as_before(trained) -> None:
    router = TryageRouter(copy.deepcopy(trained))
    before = router.predict_losses([CODE, LAW])
    with pytest.raises(TrainingDivergedError, match=r"diverged.*keeps its weights.*learning_rate=1e\+06") as info:
        router.update(FEEDBACK, learning_rate=1e6)
    _one_line(info.value)
    np.testing.assert_array_equal(router.predict_losses([CODE, LAW]), before)
    report = router.update(FEEDBACK)  # a sound update still works on the same router
    assert report.loss_after < report.loss_before


def test_fit_refuses_bad_hyperparameters_in_one_line(tiny_encoder: Path, domain_qtable_path: Path) -> None:
    table = QTable.from_file(domain_qtable_path)
    for options, shown in [({"epochs": True}, "epochs"), ({"learning_rate": float("nan")}, "learning_rate"),
                           ({"weight_decay": float("inf")}, "weight_decay"), ({"dropout": 1.5}, "dropout"),
                           ({"seed": 2**70}, "seed"), ({"hidden_dim": -1}, "hidden_dim")]:
        with pytest.raises(ConfigurationError, match=shown):
            PerceptivePredictor(str(tiny_encoder), progress=False, **options).fit(table)


# -- non-finite weights are never saved nor loaded -----------------------------------------------------
def test_save_refuses_non_finite_weights_and_load_refuses_a_file_holding_them(trained, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    predictor = copy.deepcopy(trained)
    import torch

    with torch.no_grad():
        predictor.head_[-1].weight[0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="NaN or infinite") as info:
        TryageRouter(predictor).save_pretrained(tmp_path / "nan-router")
    _one_line(info.value)
    assert not (tmp_path / "nan-router").exists()
    good = trained.save_pretrained(tmp_path / "router")
    state = load_file(str(good / "model.safetensors"))
    state[next(iter(state))][0] = float("inf")
    save_file(state, str(good / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(RouterFormatError, match="NaN or infinite"):
        TryageRouter.from_pretrained(good)


@pytest.mark.parametrize("folder", ["x" * 300, None, 5, "a\0b", b"a\0b"])
def test_save_to_an_impossible_folder_is_one_line_and_writes_nothing(trained, tmp_path: Path, monkeypatch,
                                                                     folder: object) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="the folder to save a router to") as info:
        TryageRouter(trained).save_pretrained(folder)
    _one_line(info.value)
    assert list(tmp_path.iterdir()) == []


# -- router construction -------------------------------------------------------------------------------
def test_default_router_refuses_a_device_or_name_it_cannot_use() -> None:
    import torch

    missing = f"cuda:{torch.cuda.device_count()}"  # one more GPU than this machine has (cuda:0 on a CPU machine)
    for kwargs, shown in [({"device": missing}, f"device={missing!r}: torch sees"),
                          ({"device": "nosuch"}, "device must be a torch device"),
                          ({"device": 3}, "device must be a torch device"),
                          ({"name": ["x"]}, "unknown embedded router ['x']")]:
        with pytest.raises(ConfigurationError, match=re.escape(shown)) as info:
            TryageRouter.default(**kwargs)
        _one_line(info.value)


# -- tryage update on files that are not what they claim -------------------------------------------------
@pytest.fixture()
def saved(trained, tmp_path: Path) -> Path:
    trained.save_pretrained(tmp_path / "router")
    (tmp_path / "feedback.jsonl").write_text("".join(json.dumps(r) + "\n" for r in FEEDBACK), encoding="utf-8")
    (tmp_path / "binary.jsonl").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    (tmp_path / "nul.txt").write_bytes(b"a prompt\x00with a NUL\n")
    return tmp_path


@pytest.mark.parametrize(("extra", "shown"), [
    (["--feedback", "binary.jsonl"], "binary.jsonl: is not UTF-8 text"),
    (["--feedback", "feedback.jsonl", "--reference", "binary.txt"], "binary.txt: is not UTF-8 text"),
    (["--feedback", "feedback.jsonl", "--reference", "nul.txt"], "nul.txt: holds NUL bytes"),
    (["--feedback", "feedback.jsonl", "--reference", "."], "(it is a folder)"),
    (["--feedback", "feedback.jsonl", "--seed", str(2**70)], "seed must be a whole number >= 0 and <= 4294967295"),
    (["--feedback", "feedback.jsonl", "--epochs", "0"], "epochs must be a whole number >= 1, got 0"),
])
def test_cli_update_on_a_bad_file_or_seed_is_one_line_and_leaves_the_router(saved: Path, capsys, monkeypatch,
                                                                            extra: list[str], shown: str) -> None:
    monkeypatch.chdir(saved)
    weights = (saved / "router" / "model.safetensors").read_bytes()
    assert main(["update", "--router", "router", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tryage: error: ") and "\n" not in err and shown in err, err
    assert (saved / "router" / "model.safetensors").read_bytes() == weights


def test_cli_update_of_sound_feedback_saves_a_loadable_router(saved: Path, capsys) -> None:
    assert main(["update", "--router", str(saved / "router"), "--feedback", str(saved / "feedback.jsonl"),
                 "--out", str(saved / "v2"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["loss_after"] < report["loss_before"]
    TryageRouter.from_pretrained(saved / "v2")  # finite weights, loadable

