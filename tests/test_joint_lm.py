"""tryage joint on a real (tiny, saved) causal LM: LoRA experts and their router, trained, resumed, routed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from paper_fixtures import passages, tiny_causal_lm
from tryage.cli import main
from tryage.research.joint_lm import balanced_choice, completed_rounds

pytest.importorskip("peft")


@pytest.fixture()
def passages_file(tmp_path: Path) -> Path:
    path = tmp_path / "passages.jsonl"
    path.write_text("".join(json.dumps({"id": p.id, "text": p.text, "domain": p.domain}) + "\n" for p in passages()),
                    encoding="utf-8")
    return path


def _joint(base: Path, passages_file: Path, out: Path, encoder: Path, *extra: str) -> int:
    return main(["joint", "--base", str(base), "--experts", "2", "--passages", str(passages_file), "--out", str(out),
                 "--steps-per-round", "3", "--batch-size", "4", "--learning-rate", "0.05", "--encoder", str(encoder),
                 "--router-epochs", "20",
                 "--json", *extra])


def test_balanced_choice_gives_every_expert_its_share() -> None:
    costs = np.array([[0.0, 1.0]] * 6 + [[0.5, 0.0]] * 2)  # everyone prefers expert 0
    choice = balanced_choice(costs)
    assert np.bincount(choice, minlength=2).tolist() == [4, 4]
    assert choice[6:].tolist() == [1, 1]  # those that lose least by moving, move
    assert np.bincount(balanced_choice(costs, capacity=2.0), minlength=2).tolist() == [6, 2]


def test_joint_trains_resumes_after_a_stop_and_routes(tmp_path: Path, passages_file: Path, tiny_encoder: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tryage.router import TryageRouter

    base = tiny_causal_lm(tmp_path / "lm")
    out = tmp_path / "joint"
    assert _joint(base, passages_file, out, tiny_encoder, "--rounds", "1") == 0  # stopped after round 1
    assert completed_rounds(out) == 2
    first = (out / "rounds" / "round-001" / "losses.jsonl").read_bytes()
    (out / "rounds" / ".round-002.tryage-staging-999999999-x").mkdir()  # a save killed mid-round 2
    capsys.readouterr()
    assert _joint(base, passages_file, out, tiny_encoder, "--rounds", "2") == 0  # resumes at round 2
    records = json.loads(capsys.readouterr().out)["rounds"]
    assert [r["round"] for r in records] == [0, 1, 2]
    assert (out / "rounds" / "round-001" / "losses.jsonl").read_bytes() == first  # not redone
    assert not list((out / "rounds").glob(".round-*staging*"))
    assert sum(records[2]["trained_on"].values()) == len(passages()) and min(records[2]["trained_on"].values()) > 0
    base_loss = records[0]["routed_loss"]
    assert records[2]["oracle_loss"] < base_loss  # the trained experts fit the passages better than the base

    router = TryageRouter.from_pretrained(out)
    assert router.experts == ("expert-0", "expert-1")
    expert = router.library["expert-0"]
    assert "adapter=experts/expert-0" in expert.tags and expert.library_name == "peft"
    net = AutoModelForCausalLM.from_pretrained(base)
    assert expert.parameters > sum(p.numel() for p in net.parameters())
    decisions = router.route_batch(["def function return python code", "the court and the plaintiff contract"])
    assert {d.expert for d in decisions} <= set(router.experts)

    ids = torch.tensor([[5, 6, 7, 8]])
    before = net(input_ids=ids).logits
    tuned = PeftModel.from_pretrained(net, str(out / "experts" / "expert-0"))
    assert not torch.allclose(tuned(input_ids=ids).logits, before)  # an ordinary, trained peft adapter folder


def test_joint_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, passages_file: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "joint"
    assert main(["joint", "--base", "no-such-model-folder", "--experts", "3", "--passages", str(passages_file),
                 "--rounds", "2", "--steps-per-round", "5", "--out", str(out), "--dry-run", "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)["cost"]
    n = len(passages())
    assert cost == {"passages": n, "optimiser_steps": 30, "passages_measured": n + 2 * 3 * n, "router_fits": 3,
                    "max_tokens_trained": 30 * 8 * 128, "max_tokens_measured": (n + 6 * n) * 128}
    assert not out.exists()


@pytest.mark.parametrize(("change", "message"), [
    (("--experts", "1"), "experts must be a whole number >= 2, got 1"),
    (("--passages", "EMPTY"), "no passages in"),
    (("--base", "ENCODER"), "is not a causal language model: its weights lack the LM head"),
])
def test_joint_bad_input_is_one_line(tmp_path: Path, passages_file: Path, tiny_encoder: Path,
                                     capsys: pytest.CaptureFixture[str], change: tuple[str, str], message: str) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    args = {"--base": str(tiny_causal_lm(tmp_path / "lm")), "--experts": "2", "--passages": str(passages_file),
            "--rounds": "1", "--out": str(tmp_path / "joint")}
    args[change[0]] = {"EMPTY": str(empty), "ENCODER": str(tiny_encoder)}.get(change[1], change[1])
    assert main(["joint", *[x for kv in args.items() for x in kv], "--encoder", str(tiny_encoder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "joint" / "rounds").exists()
