"""``tryage serve`` reads the same experts-file entries as collect: the body an expert receives."""

from __future__ import annotations

import pytest

from tryage.collect.entries import ExpertSpec
from tryage.serve.upstream import Upstream


def test_an_entry_s_system_prompt_limit_and_extra_body_reach_the_expert_s_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)   # a local server: no key needed, none sent
    spec = ExpertSpec("smol", model="openai:smol", system_prompt="Answer briefly.", input_cost=0.1,
                      model_kwargs={"base_url": "http://127.0.0.1:8080/v1", "max_tokens": 16, "temperature": 0,
                                    "extra_body": {"top_k": 5}})
    upstream = Upstream.from_spec(spec)
    body = upstream.body({"model": "tryage", "messages": [{"role": "user", "content": "hi"}], "temperature": 1})
    assert body == {"model": "smol", "max_tokens": 16, "temperature": 1, "top_k": 5,
                    "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "hi"}]}
    assert "Authorization" not in upstream.headers and upstream.input_cost == 0.1
