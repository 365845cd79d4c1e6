"""ChatTryage over real ChatOpenAI experts: a server that is down is named with its URL, a live one on
127.0.0.1 answers (tests/serve/serve_upstream.py, a real OpenAI-compatible HTTP server)."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

pytest.importorskip("langchain_openai")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from langchain_fakes import make_router  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from serve_upstream import Upstream  # noqa: E402

from langchain_tryage import ChatTryage  # noqa: E402
from tryage.collect import build_chat_models  # noqa: E402
from tryage.errors import ExpertUnreachableError  # noqa: E402

KEY = "upstream-key"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def upstream():
    with Upstream(api_key=KEY) as running:
        yield running


def experts(live_url: str, down_url: str) -> dict[str, ChatOpenAI]:
    """'code' is down; 'legal' and 'general' answer."""
    return {"code": ChatOpenAI(model="code-model", base_url=down_url, api_key=KEY, max_retries=0),
            "legal": ChatOpenAI(model="legal-model", base_url=live_url, api_key=KEY, max_retries=0),
            "general": ChatOpenAI(model="general-model", base_url=live_url, api_key=KEY, max_retries=0)}


def test_chat_tryage_names_the_expert_and_url_of_a_server_that_is_down(upstream: Upstream) -> None:
    down = f"http://127.0.0.1:{closed_port()}/v1"
    router, _ = make_router()
    chat = ChatTryage(router=router, experts=experts(upstream.base_url, down))
    with pytest.raises(ExpertUnreachableError) as raised:
        chat.invoke("fix this python bug")
    assert str(raised.value) == (f"expert 'code' at {down} is unreachable: connection refused "
                                 "(is its server running?)")
    assert (raised.value.expert, raised.value.url) == ("code", down)
    with pytest.raises(ExpertUnreachableError, match=f"expert 'code' at {down} is unreachable"):
        asyncio.run(chat.ainvoke("fix this python bug"))
    with pytest.raises(ExpertUnreachableError, match=f"expert 'code' at {down} is unreachable"):
        list(chat.stream("fix this python bug"))
    assert chat.invoke("a court contract").content == "legal-model says: a court contract"   # the live server answers


def test_with_fallback_the_next_expert_on_the_live_server_answers(upstream: Upstream) -> None:
    router, _ = make_router()
    chat = ChatTryage(router=router, experts=experts(upstream.base_url, f"http://127.0.0.1:{closed_port()}/v1"),
                      fallback=True)
    answer = chat.invoke("fix this python bug")
    assert answer.content == "general-model says: fix this python bug"
    assert answer.response_metadata["tryage_fallback_from"] == ["code"]


def test_an_entry_for_a_local_server_needs_no_key_and_sends_its_limit_as_max_tokens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    models = build_chat_models([{"name": "m", "model": "openai:m",
                                 "model_kwargs": {"base_url": "http://localhost:8080/v1", "max_tokens": 7}}])
    assert models["m"].extra_body == {"max_tokens": 7} and models["m"].max_tokens == 7


def test_an_entry_with_a_system_prompt_sends_it_first_through_chat_tryage(upstream: Upstream,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", KEY)
    entries = [{"name": n, "model": f"openai:{n}-model", "system_prompt": f"You are the {n} expert.",
                "api_key_env": "UPSTREAM_KEY", "model_kwargs": {"base_url": upstream.base_url, "max_retries": 0}}
               for n in ("code", "legal", "general")]
    router, _ = make_router()
    chat = ChatTryage(router=router, experts=build_chat_models(entries))
    assert chat.invoke("a court contract").content == "legal-model says: a court contract"
    assert "".join(c.content for c in chat.stream("fix this python bug")) == "code-model says: fix this python bug"
    assert [b["messages"][0] for b in upstream.bodies] == [{"role": "system", "content": "You are the legal expert."},
                                                           {"role": "system", "content": "You are the code expert."}]
    assert [b["messages"][-1]["content"] for b in upstream.bodies] == ["a court contract", "fix this python bug"]


def test_a_system_prompt_entry_whose_server_is_down_is_named_with_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_chat_models wraps an entry with a system_prompt; the error still names the wrapped model's URL."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    down = f"http://127.0.0.1:{closed_port()}/v1"
    entries = [{"name": n, "model": f"openai:{n}-model", "system_prompt": f"You are the {n} expert.",
                "model_kwargs": {"base_url": down, "max_retries": 0}} for n in ("code", "legal", "general")]
    router, _ = make_router()
    with pytest.raises(ExpertUnreachableError) as raised:
        ChatTryage(router=router, experts=build_chat_models(entries)).invoke("fix this python bug")
    assert str(raised.value) == f"expert 'code' at {down} is unreachable: connection refused (is its server running?)"


def test_an_expert_that_does_not_answer_in_time_is_named_with_its_url() -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    with Upstream(api_key=KEY, stall_seconds=3.0) as up:
        models = {n: ChatOpenAI(model=f"{n}-model", base_url=up.base_url, api_key=KEY, max_retries=0, timeout=0.3)
                  for n in ("code", "legal", "general")}
        router, _ = make_router()
        stall = SystemMessage('upstream-test: {"code-model": "stall"}')
        with pytest.raises(ExpertUnreachableError) as raised:
            ChatTryage(router=router, experts=models).invoke([stall, HumanMessage("fix this python bug")])
    assert str(raised.value) == f"expert 'code' at {up.base_url} is unreachable: no answer in time (timeout)"
    assert raised.value.timed_out
