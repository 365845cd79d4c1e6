"""Tiny real experts and passages for the measurement and paper-pipeline tests (built offline, seeded)."""

from __future__ import annotations

from pathlib import Path

DOMAIN_TEXTS = {
    "code": ["def function return python code", "import python class def return", "python code function import def",
             "class def return import code python", "return the function of python code", "import code def class"],
    "legal": ["the court and the plaintiff contract", "statute of law court plaintiff", "contract law plaintiff statute",
              "the plaintiff is in court of law", "law and statute of the contract", "court contract the law"],
    "biomed": ["gene protein cell disease", "the protein of a cell gene", "disease of the cell and gene",
               "cell protein gene is disease", "a gene to protein in cell", "protein and disease of gene"],
}

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w for texts in DOMAIN_TEXTS.values()
                                                                   for t in texts for w in t.split()})


def passages():  # noqa: ANN201 - list[tryage.measure.Passage]
    from tryage.measure import Passage

    out = []
    for domain, texts in DOMAIN_TEXTS.items():
        for i, text in enumerate(texts):
            out.append(Passage(f"{domain}-{i}", text, domain, "validation" if i < 4 else "test"))
    return out


def _tokenizer():  # noqa: ANN202
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_causal_lm(folder: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 (a few thousand parameters) saved with save_pretrained."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(WORDS), n_embd=16, n_layer=2, n_head=2, n_positions=32,
                        pad_token_id=0, bos_token_id=2, eos_token_id=3)
    GPT2LMHeadModel(config).save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


def tiny_masked_lm(folder: Path, seed: int = 0) -> Path:
    """A 2-layer BERT for masked LM saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertForMaskedLM(config).save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder
