"""TryageRouterChain over a real local Hugging Face text-generation pipeline (a tiny GPT-2 created
and saved here, no download) beside LangChain fake chat models."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="the LangChain adapter needs the 'langchain' extra")
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from langchain_core.language_models import FakeListChatModel  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from langchain_fakes import make_router  # noqa: E402

from langchain_tryage import TryageRouterChain  # noqa: E402

WORDS = ["[UNK]", "[PAD]", "<eos>", "fix", "this", "python", "bug", "def", "return", "print", "list", "sort"]


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                                     pad_token="[PAD]", eos_token="<eos>")
    config = transformers.GPT2Config(vocab_size=len(WORDS), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=2, eos_token_id=2, pad_token_id=1)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return transformers.pipeline("text-generation", model=str(folder), device="cpu")


@pytest.mark.slow
def test_hf_pipeline_expert_gets_the_routed_prompt_without_flags(tiny_pipeline):
    received = []

    def generate(prompt: str) -> str:
        received.append(prompt)
        out = tiny_pipeline(prompt, max_new_tokens=3, do_sample=False, return_full_text=False)
        return prompt + " ->" + out[0]["generated_text"]

    router, predictor = make_router()
    chain = TryageRouterChain(router, {"code": RunnableLambda(generate),
                                       "legal": FakeListChatModel(responses=["legal"]),
                                       "general": FakeListChatModel(responses=["general"])})
    answer = chain.invoke("fix this python bug [Flag: size=0.01]")
    assert received == ["fix this python bug"]
    assert answer.startswith("fix this python bug ->") and len(answer) > len("fix this python bug ->")

    outs = chain.batch(["sort this python list", "a contract", "print this python bug"])
    assert predictor.passes == [1, 3]
    assert received[1:] == ["sort this python list", "print this python bug"]
    assert outs[1].content == "legal"
