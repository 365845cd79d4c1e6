"""``runtime="onnx"``: the encoder exported to ONNX and run by ONNX Runtime must route exactly as PyTorch does."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="runtime='onnx' needs the onnx extra: pip install 'tryage[onnx]'")

from tryage import QTable, TryageRouter  # noqa: E402
from tryage.cli import main  # noqa: E402
from tryage.encoders import EncoderSpec, TextEncoder  # noqa: E402
from tryage.errors import ConfigurationError, MissingDependencyError  # noqa: E402
from tryage.predictors import PerceptivePredictor  # noqa: E402

PROMPTS = [
    "Prove that there are infinitely many primes.",
    "Summarise the plaintiff's claim in one sentence. [Flag: smallest model]",
    "Which protein binds oxygen in red blood cells?",
    "def reverse(xs): return xs[::-1]  # explain this",
    "a" * 5000,                      # past max_length: truncated the same way
    "Ünïcödé — 日本語のテキスト 🙂",
]


@pytest.mark.parametrize("layers", ["all", "last"])
def test_onnx_embeddings_match_pytorch(layers):
    spec = EncoderSpec.resolve(None, layers=layers)
    torch_encoder, onnx_encoder = TextEncoder(spec), TextEncoder(spec, runtime="onnx")
    expected, got = torch_encoder.encode(PROMPTS, batch_size=4), onnx_encoder.encode(PROMPTS, batch_size=4)
    assert got.shape == expected.shape == (len(PROMPTS), torch_encoder.dim)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["paper-domains", "open-llms"])
def test_an_embedded_router_on_onnx_makes_the_same_decisions(name):
    torch_router, onnx_router = TryageRouter.default(name), TryageRouter.default(name, runtime="onnx")
    for a, b in zip(torch_router.route_batch(PROMPTS), onnx_router.route_batch(PROMPTS)):
        assert (a.expert, a.prompt, a.flags) == (b.expert, b.prompt, b.flags)
        np.testing.assert_allclose([s.predicted_loss for s in a.scores], [s.predicted_loss for s in b.scores],
                                   atol=1e-5)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_a_router_that_has_routed_still_pickles_and_routes_identically(runtime):
    # A transformers model that has run once carries hooks that do not pickle; Ray ships routers by pickle.
    router = TryageRouter.default(runtime=runtime)
    first = router.route_batch(PROMPTS[:3])
    again = pickle.loads(pickle.dumps(router))
    assert again.predictor.text_encoder_.runtime == runtime
    for a, b in zip(first, again.route_batch(PROMPTS[:3])):
        assert a.expert == b.expert
        np.testing.assert_allclose([s.predicted_loss for s in a.scores], [s.predicted_loss for s in b.scores],
                                   atol=1e-6)


def test_fine_tuning_with_the_onnx_runtime_routes_with_the_new_weights(tiny_encoder, domain_qtable_path):
    q = QTable.from_file(domain_qtable_path)
    predictor = PerceptivePredictor(str(tiny_encoder), mode="finetune", epochs=2, batch_size=8,
                                    validation_fraction=0.2, runtime="onnx", progress=False)
    before = predictor.encode(["gene protein"])      # exports the untrained weights
    predictor.fit(q)
    after = predictor.encode(["gene protein"])
    assert not np.allclose(before, after)              # the stale graph was dropped and re-exported
    predictor.text_encoder_.runtime = "torch"
    np.testing.assert_allclose(after, predictor.encode(["gene protein"]), atol=1e-5)


def test_bad_runtimes_are_one_line_errors_naming_what_is_allowed(monkeypatch):
    with pytest.raises(ConfigurationError, match=r"runtime must be one of 'torch', 'onnx', got 'tensorrt'"):
        TryageRouter.default(runtime="tensorrt")
    with pytest.raises(ConfigurationError, match="runtime='onnx' runs on the CPU; got device='cuda'"):
        PerceptivePredictor(runtime="onnx", device="cuda").encode(["x"])
    import tryage.encoders as encoders

    real = encoders.importlib.util.find_spec
    monkeypatch.setattr(encoders.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'tryage\[onnx\]'"):
        TextEncoder(EncoderSpec.resolve(None), runtime="onnx")


def test_cli_route_with_the_onnx_runtime_gives_the_same_decision(capsys):
    prompt = "Prove that sqrt(2) is irrational [Flag: cheapest]"
    decisions = []
    for runtime in ("torch", "onnx"):
        assert main(["route", prompt, "--router", "open-llms", "--runtime", runtime, "--json"]) == 0
        decisions.append(json.loads(capsys.readouterr().out))
    assert decisions[0]["expert"] == decisions[1]["expert"]
    assert decisions[0]["prompt"] == decisions[1]["prompt"] == "Prove that sqrt(2) is irrational"
    with pytest.raises(SystemExit) as exit_info:
        main(["route", prompt, "--runtime", "cuda-graphs"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'cuda-graphs'" in capsys.readouterr().err
