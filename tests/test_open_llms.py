"""The embedded ``open-llms`` router: nine open LLMs of the LLMRouter table, routable with zero training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tryage import TryageRouter
from tryage.cli import main
from tryage.defaults import DEFAULT_DIR, default_router_path
from tryage.errors import ConfigurationError

# Written for this test in the style of gsm8k and mbpp, not taken from the table the router learned from.
MATH = ("Tomas bakes 36 muffins on Monday and twice as many on Tuesday. He sells 70 of them. "
        "How many muffins does he have left?")
CODE = ("Write a python function to count the vowels in a given string.\n"
        "assert count_vowels('routing') == 3")
SMALL_PRICE = 0.2  # USD per 1M tokens: the 7-9B models; the 49-70B ones cost 0.9

pytestmark = pytest.mark.skipif(not (DEFAULT_DIR / "open-llms" / "config.json").exists(),
                                reason="the open-llms router is not built (benchmarks/build_open_llms.py)")


@pytest.fixture(scope="module")
def router() -> TryageRouter:
    return TryageRouter.default("open-llms")


def test_open_llms_holds_the_nine_models_with_sizes_and_prices(router: TryageRouter) -> None:
    assert len(router.experts) == 9
    assert all(e.parameters and e.input_cost and e.output_cost for e in router.library)
    assert router.library["llama3-chatqa-1.5-70b"].parameters == 70_000_000_000
    assert TryageRouter.default().experts != router.experts  # the default stays the paper's library


def test_open_llms_ships_head_weights_and_no_prompt_text() -> None:
    folder = default_router_path("open-llms")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "experts.json", "model.safetensors",
                                                         "results.json"]
    text = "".join(p.read_text(encoding="utf-8") for p in folder.glob("*.json"))
    assert "Tomas" not in text and "assert" not in text


@pytest.mark.slow
def test_open_llms_routes_maths_and_code_to_models_that_solve_them(router: TryageRouter) -> None:
    maths, code = router.route_batch([MATH, CODE])
    # On the table, gsm8k is solved ~0.86 by the best models and ~0.2 by llama3-chatqa-1.5-8b /
    # mistral; code (mbpp) ~0.75 by the best and ~0.06 by mistral.
    assert maths.expert not in ("llama3-chatqa-1.5-8b", "mistral-7b-instruct-v0.3", "codegemma-7b")
    assert code.expert not in ("llama3-chatqa-1.5-8b", "mistral-7b-instruct-v0.3")
    assert maths.chosen.predicted_loss < 0.35 and code.chosen.predicted_loss < 0.45


@pytest.mark.slow
@pytest.mark.parametrize("flag, field", [("[Flag: smallest model]", "parameters"), ("[Flag: cheapest]", "cost")])
def test_open_llms_flags_pick_smaller_cheaper_models_that_still_answer(router: TryageRouter, flag: str,
                                                                        field: str) -> None:
    for prompt in (MATH, CODE):
        plain, flagged = router.route(prompt), router.route(f"{prompt} {flag}")
        value = lambda name: getattr(router.library[name], field)  # noqa: E731
        assert value(flagged.expert) <= value(plain.expert)
        assert value(flagged.expert) == min(value(e) for e in router.experts)
    # Among the small models the flag keeps the one predicted to answer: qwen-7B (0.82 on gsm8k), not
    # the chat-QA 8B model (0.17).
    assert router.route(f"{MATH} [Flag: smallest model]").expert == "qwen2.5-7b-instruct"


def test_unknown_embedded_router_is_one_line_listing_the_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigurationError, match="'gpt-9'.*paper-domains, open-llms"):
        TryageRouter.default("gpt-9")
    assert main(["route", "hi", "--router", "gpt-9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tryage: error: ") and "paper-domains, open-llms" in err and err.count("\n") == 1


@pytest.mark.slow
def test_cli_route_and_demo_with_open_llms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", MATH, "--router", "open-llms", "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    decision = decision[0] if isinstance(decision, list) else decision
    assert decision["expert"] in TryageRouter.default("open-llms").experts
    assert main(["demo", "--router", "open-llms", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-7b-instruct" in out and "[Flag: cheapest]" in out
    demo = json.loads((tmp_path / "demo.json").read_text())
    for row in demo["prompts"]:
        assert row["[Flag: cheapest]"]["price_per_1m_tokens"] <= row["plain"]["price_per_1m_tokens"]
        assert row["[Flag: smallest model]"]["parameters"] <= row["plain"]["parameters"]


@pytest.mark.slow
def test_cli_evaluate_with_open_llms_on_llmrouter_rows(llmrouter_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rows = (llmrouter_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    table = tmp_path / "rows.jsonl"
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["evaluate", "--router", "open-llms", "--qtable", str(table), "--knn-k", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 40 and report["oracle"] >= report["router"] >= report["random"]
