"""TryageSelector inside LlamaIndex's RouterQueryEngine and RouterRetriever over real vector indexes.

Three ``VectorStoreIndex``es embed small documents with the bundled all-MiniLM-L6-v2; ``MockLLM``
echoes its prompt, so a response shows the context retrieved and the query the engine received.
"""

from __future__ import annotations

from typing import List

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RouterQueryEngine
from llama_index.core.retrievers import RouterRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.tools import QueryEngineTool, RetrieverTool

from llamaindex_tryage import TryageSelector, UnknownChoiceError
from tryage.errors import ConfigurationError

pytestmark = pytest.mark.slow

DOCUMENTS = {
    "legal": ["A contract clause that is unconscionable can be voided by a court.",
              "A tenant may end a lease early when the landlord breaches it."],
    "medical": ["Aspirin is a common dose for fever in adult patients.",
                "A patient with a persistent symptom should see a doctor."],
    "code": ["A Python function raises an exception when the list is empty.",
             "Compile errors point to the line of the bug."],
}
DESCRIPTIONS = {"legal": "Legal questions: contracts, courts, leases",
                "medical": "Medical questions: patients, doses, symptoms",
                "code": "Programming questions: Python bugs and exceptions"}
LEGAL_QUERY = "Can a court void this contract clause?"


@pytest.fixture(scope="module")
def indexes(embed_model):
    return {name: VectorStoreIndex.from_documents([Document(text=t, metadata={"domain": name}) for t in texts],
                                                 embed_model=embed_model)
            for name, texts in DOCUMENTS.items()}


@pytest.fixture(scope="module")
def engine_tools(indexes):
    return [QueryEngineTool.from_defaults(
        query_engine=index.as_query_engine(llm=MockLLM(), similarity_top_k=1),
        name=name, description=DESCRIPTIONS[name]) for name, index in indexes.items()]


class RecordingRetriever(BaseRetriever):
    """Delegates to a retriever and remembers the query strings it received."""

    def __init__(self, inner: BaseRetriever) -> None:
        super().__init__()
        self.inner = inner
        self.queries: list[str] = []

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        self.queries.append(query_bundle.query_str)
        return self.inner.retrieve(query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        self.queries.append(query_bundle.query_str)
        return await self.inner.aretrieve(query_bundle)


@pytest.fixture
def retriever_tools(indexes):
    return [RetrieverTool.from_defaults(
        retriever=RecordingRetriever(index.as_retriever(similarity_top_k=1)),
        name=name, description=DESCRIPTIONS[name]) for name, index in indexes.items()]


def _domains(nodes) -> set[str]:
    return {n.node.metadata["domain"] for n in nodes}


def test_router_query_engine_answers_from_the_chosen_engine(router, engine_tools):
    engine = RouterQueryEngine(selector=TryageSelector(router), query_engine_tools=engine_tools, llm=MockLLM())

    response = engine.query(LEGAL_QUERY)

    assert _domains(response.source_nodes) == {"legal"}
    assert "unconscionable" in str(response)
    assert response.metadata["selector_result"].decision.expert == "legal"


def test_router_query_engine_flags_route_and_never_reach_the_engine(router, engine_tools):
    engine = RouterQueryEngine(selector=TryageSelector(router), query_engine_tools=engine_tools, llm=MockLLM())

    response = engine.query(f"{LEGAL_QUERY} [Flag: smallest model]")

    assert _domains(response.source_nodes) == {"medical"}  # the 1B expert
    assert f"Query: {LEGAL_QUERY}\n" in str(response)  # MockLLM echoes the query it got
    assert "[Flag" not in str(response)


async def test_router_query_engine_async_strips_flags(router, engine_tools):
    engine = RouterQueryEngine(selector=TryageSelector(router), query_engine_tools=engine_tools, llm=MockLLM())

    response = await engine.aquery(f"{LEGAL_QUERY} [Flag: largest model]")

    assert _domains(response.source_nodes) == {"code"}  # the 13B expert
    assert f"Query: {LEGAL_QUERY}\n" in str(response)
    assert response.metadata["selector_result"].decision.flags == ("largest model",)


async def test_router_query_engine_async_matches_sync(router, engine_tools):
    engine = RouterQueryEngine(selector=TryageSelector(router), query_engine_tools=engine_tools, llm=MockLLM())
    query = "My Python function raises an exception"

    response = await engine.aquery(query)

    assert _domains(response.source_nodes) == _domains(engine.query(query).source_nodes) == {"code"}


def test_router_query_engine_top_k_queries_each_selected_engine(router, engine_tools):
    selector = TryageSelector(router, max_outputs=2)
    engine = RouterQueryEngine(selector=selector, query_engine_tools=engine_tools, llm=MockLLM())

    response = engine.query("A patient's lease contract")

    result = response.metadata["selector_result"]
    assert result.experts == ["legal", "medical"]  # legal 0.5, medical 0.71
    assert _domains(response.source_nodes) == {"legal", "medical"}


def test_router_query_engine_per_query_weights(router, engine_tools):
    selector = TryageSelector(router)
    engine = RouterQueryEngine(selector=selector, query_engine_tools=engine_tools, llm=MockLLM())

    with selector.using(weights={"size": 1.0}):
        weighted = engine.query(LEGAL_QUERY)
    plain = engine.query(LEGAL_QUERY)

    assert _domains(weighted.source_nodes) == {"medical"}
    assert _domains(plain.source_nodes) == {"legal"}


def test_router_query_engine_unknown_tool_is_a_clear_error(router, engine_tools, indexes):
    extra = QueryEngineTool.from_defaults(query_engine=indexes["legal"].as_query_engine(llm=MockLLM()),
                                          name="finance", description="Stock markets")
    engine = RouterQueryEngine(selector=TryageSelector(router), query_engine_tools=[*engine_tools, extra],
                               llm=MockLLM())

    with pytest.raises(UnknownChoiceError, match=r"choice 3 \('finance'\) is not an expert of the router"):
        engine.query(LEGAL_QUERY)


def test_router_query_engine_empty_query_is_a_clear_error(router, engine_tools):
    engine = RouterQueryEngine(selector=TryageSelector(router), query_engine_tools=engine_tools, llm=MockLLM())

    with pytest.raises(ConfigurationError, match="routes on the query text"):
        engine.query("")


def test_router_retriever_retrieves_from_the_chosen_retriever(router, retriever_tools):
    retriever = RouterRetriever(selector=TryageSelector(router), retriever_tools=retriever_tools, llm=MockLLM())

    nodes = retriever.retrieve(f"{LEGAL_QUERY} [Flag: cheapest; cost=0]")

    assert _domains(nodes) == {"legal"}
    received = {t.metadata.name: t.retriever.queries for t in retriever_tools}
    assert received == {"legal": [LEGAL_QUERY], "medical": [], "code": []}


async def test_router_retriever_async_top_k(router, retriever_tools):
    selector = TryageSelector(router, max_outputs=2)
    retriever = RouterRetriever(selector=selector, retriever_tools=retriever_tools, llm=MockLLM())

    nodes = await retriever.aretrieve("Python bug in the patient dose function [Flag: size=0]")

    assert _domains(nodes) == {"code", "medical"}
    received = {t.metadata.name: t.retriever.queries for t in retriever_tools}
    assert received["code"] == received["medical"] == ["Python bug in the patient dose function"]
    assert received["legal"] == []
