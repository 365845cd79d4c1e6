"""The public names of langchain_tryage; adding or removing one is a deliberate API change."""

import pytest

pytest.importorskip("langchain_core", reason="the LangChain adapter needs the 'langchain' extra")

EXPECTED_ALL = ["ChatTryage", "TryageRouteDecider", "TryageRouterChain"]


def test_imports_all_is_pinned() -> None:
    import langchain_tryage

    assert sorted(langchain_tryage.__all__) == sorted(EXPECTED_ALL)
    for name in EXPECTED_ALL:
        assert getattr(langchain_tryage, name).__name__ == name
