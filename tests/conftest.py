"""Shared fixtures: a tiny real encoder, small Q-tables, the ../shared data location."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LLMROUTER = SHARED / "data" / "llmrouter"
DOMAINS = SHARED / "data" / "domains"


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def llmrouter_dir() -> Path:
    if not (LLMROUTER / "train.jsonl").exists():
        pytest.skip(f"../shared/data/llmrouter is not beside the checkout (looked in {LLMROUTER})")
    return LLMROUTER


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (randomly initialised) BERT encoder folder with a word-level tokenizer, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(
        "def return class import python code function the of a to and is in law court contract "
        "statute plaintiff gene protein cell disease theorem prime integer proof novel she her "
        "love marriage what capital city california france paris sacramento model flag smallest".split()))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(folder)
    import torch

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    return folder


DOMAIN_PROMPTS = {
    "code": ["def function return python code", "import python class def", "python code function import",
             "class def return import code"],
    "legal": ["the court and the plaintiff contract", "statute of law court", "contract law plaintiff statute",
              "the plaintiff in court of law"],
    "bio": ["gene protein cell disease", "protein in the cell gene", "disease of the cell protein",
            "gene and disease protein"],
}


@pytest.fixture()
def domain_qtable_path(tmp_path: Path) -> Path:
    """A JSONL Q-table where each domain's expert has the lowest loss on that domain's prompts."""
    experts = {"code": "coder", "legal": "lawyer", "bio": "biologist"}
    path = tmp_path / "qtable.jsonl"
    lines = []
    for domain, prompts in DOMAIN_PROMPTS.items():
        for i, prompt in enumerate(prompts * 3):
            losses = {e: 3.0 for e in experts.values()}
            losses[experts[domain]] = 1.0
            losses["coder"] += 0.01 * (i % 3)
            lines.append(json.dumps({"prompt": f"{prompt} {i}", "losses": losses, "domain": domain}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def small_library_path(tmp_path: Path) -> Path:
    path = tmp_path / "experts.json"
    path.write_text(json.dumps({"format_version": 1, "experts": [
        {"name": "coder", "parameters": "1B", "created_at": "2024-01-01", "license": "mit", "input_cost": 0.2},
        {"name": "lawyer", "parameters": "7B", "created_at": "2023-01-01", "license": "apache-2.0", "input_cost": 0.5},
        {"name": "biologist", "parameters": "70B", "created_at": "2022-01-01", "license": "mit", "input_cost": 0.9},
    ]}))
    return path
