"""Other clients point at ``tryage serve`` unchanged: LangChain's ChatOpenAI in a LangGraph agent; and the
pieces that need no server: the micro-batcher and the config file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from serve_helpers import CLIENT_KEY, OPEN_LLMS, Served

from tryage.errors import ConfigurationError


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_serve_drives_a_langgraph_agent_through_chat_openai(served: Served) -> None:
    pytest.importorskip("langchain_openai")
    prebuilt = pytest.importorskip("langgraph.prebuilt")
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    calls = []

    @tool
    def double(x: int) -> int:
        """Double a number."""
        calls.append(x)
        return 2 * x

    model = ChatOpenAI(base_url=served.base_url, api_key=CLIENT_KEY, model="tryage", max_retries=0)
    agent = prebuilt.create_react_agent(model, [double])
    result = agent.invoke({"messages": [("user", "double two, please")]})
    assert calls == [2]
    assert result["messages"][-1].content == "tool said: 4"
    names = {m.response_metadata.get("model_name") for m in result["messages"] if m.type == "ai"}
    assert names and names <= set(OPEN_LLMS)  # each answer names the expert that gave it


def test_micro_batcher_routes_requests_arriving_together_in_one_pass() -> None:
    from tryage.serve.routing import MicroBatcher

    class Router:
        def __init__(self) -> None:
            self.batches: list[list[str]] = []

        def route_batch(self, texts, weights, filters, min_quality, return_exceptions):  # noqa: ANN001, ANN201
            self.batches.append((list(texts), min_quality))
            return [f"decision for {t}" for t in texts]

    router = Router()

    async def run() -> list:
        batcher = MicroBatcher(lambda: router, window=0.05, max_batch=32)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.route([f"p{i}"], {}, ()) for i in range(8)),
                                        batcher.route(["q"], {"size": 1.0}, ()), batcher.route(["r"], {}, (), 0.8))
        finally:
            await batcher.stop()

    results = asyncio.run(run())
    assert results == [[f"decision for p{i}"] for i in range(8)] + [["decision for q"], ["decision for r"]]
    # one pass per (weights, filters, quality floor)
    assert router.batches == [([f"p{i}" for i in range(8)], None), (["q"], None), (["r"], 0.8)]


def test_serve_config_file_keys_are_the_flags(tmp_path: Path) -> None:
    from tryage.serve.config import ServeConfig

    path = tmp_path / "serve.toml"
    path.write_text('router = "open-llms"\nexperts = "experts.json"\nport = 9000\nmax-body-bytes = 2048\n'
                    '[weights]\ncost = 0.5\n')
    config = ServeConfig.build({"port": 9100}, path)
    assert (config.port, config.max_body_bytes, dict(config.weights)) == (9100, 2048, {"cost": 0.5})
    assert config.experts == str(tmp_path / "experts.json")  # relative to the file
    path.write_text('router = "open-llms"\nexperts = "e.json"\ncolour = "red"\n')
    with pytest.raises(ConfigurationError, match=r"unknown key\(s\) \['colour'\]"):
        ServeConfig.build({}, path)
    with pytest.raises(ConfigurationError, match="timeout must be a finite number > 0, got -1"):
        ServeConfig.build({"router": "r", "experts": "e", "timeout": -1})
    with pytest.raises(ConfigurationError, match="refusing to serve on 0.0.0.0 without API keys"):
        ServeConfig(router="r", experts="e", host="0.0.0.0").check_exposure(frozenset())
    ServeConfig(router="r", experts="e", host="0.0.0.0", no_auth=True).check_exposure(frozenset())


def test_serve_leaves_import_tryage_and_the_cli_light() -> None:
    import subprocess
    import sys

    code = ("import sys, tryage, tryage.cli; tryage.cli.build_parser(); "
            "print([m for m in ('fastapi', 'uvicorn', 'httpx', 'prometheus_client', 'tryage.serve') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_serve_cli_refuses_bad_settings_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tryage.cli import main

    monkeypatch.delenv("TRYAGE_API_KEYS", raising=False)
    experts = tmp_path / "experts.json"
    experts.write_text('[{"name": "qwen2.5-7b-instruct", "model": "anthropic:claude"}]')
    cases = [
        (["serve", "--router", "open-llms"], "tryage serve needs --experts"),
        (["serve", "--router", "open-llms", "--experts", str(experts), "--host", "0.0.0.0"],
         "refusing to serve on 0.0.0.0 without API keys"),
        (["serve", "--router", "open-llms", "--experts", str(experts), "--port", "70000"],
         "port must be a whole number >= 0 and <= 65535, got 70000"),
        (["serve", "--router", "open-llms", "--experts", str(experts), "--state-dir", str(tmp_path / "s")],
         "tryage serve forwards to OpenAI-compatible endpoints"),
        (["serve", "--config", str(tmp_path / "missing.toml")], "config file not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tryage: error: ") and message in err and "\n" not in err, err
