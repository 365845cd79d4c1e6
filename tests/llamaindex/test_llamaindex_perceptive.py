"""TryageSelector with a real PerceptivePredictor (head over the bundled MiniLM, trained in seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RouterQueryEngine
from llama_index.core.tools import QueryEngineTool
from llama_index.core.tools.types import ToolMetadata

from llamaindex_tryage import TryageSelector
from tryage import Expert, ExpertLibrary, QTable, TryageRouter

pytestmark = pytest.mark.slow

TRAIN = {
    "legal": ["Is this contract clause enforceable?", "Can my landlord evict me without notice?",
              "What does the court decide on breach of lease?", "How do I sue for unpaid wages?",
              "Is a verbal agreement legally binding?", "What rights does a tenant have?"],
    "medical": ["What dose of ibuprofen is safe for a child?", "What are the symptoms of the flu?",
                "Should I see a doctor for chest pain?", "How is diabetes treated?",
                "Is a fever of 39 degrees dangerous?", "What causes migraines?"],
    "code": ["Why does my Python loop never end?", "How do I reverse a list in JavaScript?",
             "What does a segmentation fault mean?", "How do I fix a null pointer exception in Java?",
             "Write a function that sorts a dictionary by value", "Why won't my C++ code compile?"],
}
HELD_OUT = {"legal": "Can a court void this contract?", "medical": "My patient has a high fever",
            "code": "My Python function raises an exception"}
LIBRARY = ExpertLibrary([Expert("legal", parameters="7B"), Expert("medical", parameters="1B"),
                         Expert("code", parameters="13B")])


@pytest.fixture(scope="module")
def perceptive_router():
    torch = pytest.importorskip("torch")
    predictor_module = pytest.importorskip("tryage.predictors", reason="tryage.predictors is not available")
    torch.set_num_threads(2)
    records = [{"prompt": p, "losses": {e: float(e != domain) for e in TRAIN}}
               for domain, prompts in TRAIN.items() for p in prompts]
    predictor = predictor_module.PerceptivePredictor(mode="head", epochs=150, validation_fraction=0.0,
                                                     seed=0, progress=False)
    predictor.fit(QTable.from_records(records), LIBRARY)
    return TryageRouter(predictor, LIBRARY)


@pytest.fixture(scope="module")
def tools(embed_model):
    docs = {"legal": "A court may void an unconscionable contract clause.",
            "medical": "A high fever in a patient can be treated with paracetamol.",
            "code": "A Python function raises an exception on an empty list."}
    return [QueryEngineTool.from_defaults(
        query_engine=VectorStoreIndex.from_documents([Document(text=text)], embed_model=embed_model)
        .as_query_engine(llm=MockLLM()),
        name=name, description=f"{name} documents") for name, text in docs.items()]


@pytest.mark.parametrize("domain", list(HELD_OUT))
def test_perceptive_selector_routes_held_out_queries(perceptive_router, tools, domain):
    engine = RouterQueryEngine(selector=TryageSelector(perceptive_router), query_engine_tools=tools,
                               llm=MockLLM())

    response = engine.query(HELD_OUT[domain])

    assert response.metadata["selector_result"].experts == [domain]


async def test_perceptive_selector_async_with_flags(perceptive_router, tools):
    engine = RouterQueryEngine(selector=TryageSelector(perceptive_router), query_engine_tools=tools,
                               llm=MockLLM())

    response = await engine.aquery(f"{HELD_OUT['code']} [Flag: smallest model]")

    assert response.metadata["selector_result"].experts == ["medical"]
    assert f"Query: {HELD_OUT['code']}\n" in str(response)


def test_perceptive_selector_fallback_uses_the_router_encoder(perceptive_router):
    choices = [ToolMetadata(name="legal", description="legal"),
               ToolMetadata(name="cooking", description="Recipes: soups, bread and baking")]
    selector = TryageSelector(perceptive_router, fallback="description_similarity", max_outputs=2)
    query = "How long should I bake sourdough bread?"

    result = selector.select(choices, query)

    losses = result.decision.predicted_losses
    vectors = perceptive_router.predictor.encode([query, choices[1].description])
    cosine = vectors[0] @ vectors[1] / np.linalg.norm(vectors[0]) / np.linalg.norm(vectors[1])
    assert losses["cooking"] == pytest.approx(1.0 - cosine, abs=1e-5)
    assert losses["legal"] == pytest.approx(perceptive_router.predict_losses([query])[0, 0], abs=1e-5)
    other = selector.select(choices, HELD_OUT["legal"]).decision.predicted_losses["cooking"]
    assert losses["cooking"] < other  # the description matches the baking query better


def test_selector_from_defaults_loads_the_shipped_router():
    defaults = pytest.importorskip("tryage.defaults")
    try:
        defaults.default_router_path()
    except FileNotFoundError as exc:
        pytest.skip(f"no default router in this installation: {exc}")

    selector = TryageSelector.from_defaults()

    tools = [ToolMetadata(name=name, description=name) for name in selector.router.experts[:2]]
    result = selector.select(tools, "What is 12 times 7?")

    assert result.experts[0] == tools[result.ind].name
    assert result.reason == result.decision.explain()
