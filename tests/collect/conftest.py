"""Fixtures of the collect tests: a running OpenAI-compatible server and files that point at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from collect_helpers import API_KEY
from openai_server import OpenAIServer


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    with OpenAIServer(api_key=API_KEY, slow_seconds=1.5) as running:
        yield running
