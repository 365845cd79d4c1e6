"""``tryage serve`` started as a subprocess (as a user starts it) in front of a local upstream."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("openai")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_helpers import CLIENT_KEY, Served, start_serve, write_experts  # noqa: E402,F401
from serve_upstream import Upstream  # noqa: E402



@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    with Upstream(stall_seconds=4.0) as running:
        yield running


@pytest.fixture(scope="session")
def served(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("serve")
    experts = write_experts(folder / "experts.json", upstream.base_url)
    server = start_serve(["--router", "open-llms", "--experts", str(experts), "--state-dir", str(folder / "state"),
                          "--timeout", "1.5", "--retries", "1", "--backoff", "0", "--max-body-bytes", "65536",
                          "--stickiness-margin", "10", "--max-concurrency", "6", "--access-log",
                          str(folder / "access.jsonl")])
    yield server
    import httpx

    metrics = httpx.get(f"{server.root}/metrics").text  # every request and stream of the session has left
    assert "tryage_in_flight_requests 0.0" in metrics
    assert server.stop() == 0, "\n".join(server.lines)
    assert any("stopped" in line for line in server.lines)


@pytest.fixture()
def client(served: Served):  # noqa: ANN201
    import openai

    return openai.OpenAI(base_url=served.base_url, api_key=CLIENT_KEY, max_retries=0)
