"""Fixtures of the collect tests: a running OpenAI-compatible server and files that point at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from openai_server import OpenAIServer

API_KEY = "test-key"


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with OpenAIServer(api_key=API_KEY, slow_seconds=1.5) as running:
        yield running
