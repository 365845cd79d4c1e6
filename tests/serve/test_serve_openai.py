"""``tryage serve`` through the real ``openai`` client: routing, bypass, streams, tools, structured output."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from serve_helpers import CLIENT_KEY, OPEN_LLMS, Served
from pydantic import BaseModel


def route(served: Served, **body: object) -> dict:
    response = httpx.post(f"{served.base_url}/route", json=body, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert response.status_code == 200, response.text
    return response.json()["data"][0]


def directive(behaviours: dict[str, str]) -> dict[str, str]:
    return {"role": "system", "content": "upstream-test:" + json.dumps(behaviours)}


def test_serve_routes_a_chat_and_names_the_expert(client: openai.OpenAI, served: Served) -> None:
    prompt = "What is the capital of France? [Flag: cheapest]"
    expected = route(served, prompt=prompt)["expert"]
    raw = client.chat.completions.with_raw_response.create(model="tryage", messages=[{"role": "user", "content": prompt}])
    answer = raw.parse()
    assert raw.headers["x-tryage-expert"] == expected == answer.model
    assert raw.headers["x-tryage-decision-id"].startswith("dec-")
    assert answer.choices[0].message.content == f"{expected} says: What is the capital of France?"  # no flag


def test_serve_bypass_forwards_every_field_unchanged_but_model_and_flags(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}]
    fields = {"temperature": 0.3, "max_tokens": 17, "stop": ["\n\n"], "seed": 7, "n": 1, "logprobs": True,
              "top_logprobs": 2, "user": "u-1", "tool_choice": "none", "tools": tools,
              "response_format": {"type": "text"}, "metadata": {"k": "v"}}
    expert = OPEN_LLMS[2]
    messages = [directive({expert: "echo"}), {"role": "user", "content": "hi [Flag: smallest model]"}]
    answer = client.chat.completions.create(model=expert, messages=messages, extra_body={"tryage": {"weights": {}}},
                                            **fields)
    received = json.loads(answer.choices[0].message.content)
    assert answer.model == expert
    assert received == {**fields, "model": expert, "messages": [messages[0], {"role": "user", "content": "hi"}]}


async def test_serve_streams_chunks_with_usage_and_done(served: Served) -> None:
    client = openai.AsyncOpenAI(base_url=served.base_url, api_key=CLIENT_KEY, max_retries=0)
    prompt = "Tell me about rivers"
    expert = route(served, prompt=prompt)["expert"]
    stream = await client.chat.completions.create(model="tryage", messages=[{"role": "user", "content": prompt}],
                                                  stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert {c.model for c in chunks} == {expert}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert text == f"{expert} says: {prompt}"
    async with httpx.AsyncClient() as raw:  # the wire: event by event, then [DONE]
        async with raw.stream("POST", f"{served.base_url}/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                              json={"model": "tryage", "stream": True, "messages": [{"role": "user", "content": prompt}]}) as r:
            assert r.headers["x-tryage-expert"] == expert
            lines = [line async for line in r.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]" and len(lines) >= 4


def test_serve_tool_calls_survive_the_round_trip(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "add", "description": "add numbers",
                                               "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}]
    messages = [{"role": "user", "content": "add two and two"}]
    first = client.chat.completions.create(model="tryage", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "add"
    assert json.loads(call.function.arguments) == {"x": 2}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "4"}]
    second = client.chat.completions.create(model="tryage", messages=messages, tools=tools)
    assert second.choices[0].message.content == "tool said: 4"


def test_serve_structured_output_parses_into_the_schema(client: openai.OpenAI) -> None:
    class City(BaseModel):
        name: str
        population: int

    answer = client.chat.completions.parse(model="tryage", messages=[{"role": "user", "content": "a city, please"}],
                                           response_format=City)
    assert answer.choices[0].message.parsed == City(name="ok", population=4)


def test_serve_lists_tryage_and_every_expert(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tryage", *OPEN_LLMS]


def test_serve_routing_options_from_extra_body_and_headers(client: openai.OpenAI, served: Served) -> None:
    prompt = "Summarise the history of Rome"
    ranking = [s["expert"] for s in sorted(route(served, prompt=prompt)["scores"], key=lambda s: s["total"])]
    second = ranking[1]
    raw = client.chat.completions.with_raw_response.create(
        model="tryage", messages=[{"role": "user", "content": prompt}], extra_body={"tryage": {"experts": [second]}})
    assert raw.headers["x-tryage-expert"] == second
    raw = client.chat.completions.with_raw_response.create(
        model="tryage", messages=[{"role": "user", "content": prompt}], extra_headers={"x-tryage-experts": ranking[2]})
    assert raw.headers["x-tryage-expert"] == ranking[2]
    with pytest.raises(openai.BadRequestError, match="unknown constraint 'speed'"):
        client.chat.completions.create(model="tryage", messages=[{"role": "user", "content": prompt}],
                                       extra_body={"tryage": {"weights": {"speed": 1}}})


def test_serve_takes_a_quality_floor_per_request_as_the_core_router_does(client: openai.OpenAI, served: Served) -> None:
    from tryage import TryageRouter

    prompt, weights = "Summarise the history of Rome", {"size": 1.0}
    core = TryageRouter.default("open-llms")
    cheap, floored = core.route(prompt, weights=weights).expert, core.route(prompt, weights=weights, min_quality=0.6)
    assert cheap != floored.expert  # the floor overrules the size weight on this prompt
    messages = [{"role": "user", "content": prompt}]
    for extra_body, extra_headers, expected in [
            ({"weights": weights}, {}, cheap),
            ({"weights": weights, "min_quality": 0.6}, {}, floored.expert),
            ({"weights": weights}, {"x-tryage-min-quality": "0.6"}, floored.expert)]:
        raw = client.chat.completions.with_raw_response.create(
            model="tryage", messages=messages, extra_body={"tryage": extra_body}, extra_headers=extra_headers)
        assert raw.headers["x-tryage-expert"] == expected, (extra_body, extra_headers)
    decision = route(served, prompt=prompt, tryage={"weights": weights, "min_quality": 0.6})
    assert (decision["expert"], decision["min_quality"]) == (floored.expert, 0.6)
    for extra_body, extra_headers, param in [({"min_quality": 1.5}, {}, "tryage.min_quality"),
                                             ({"min_quality": "high"}, {}, "tryage.min_quality"),
                                             ({}, {"x-tryage-min-quality": "high"}, "x-tryage-min-quality"),
                                             ({}, {"x-tryage-min-quality": "2"}, "x-tryage-min-quality")]:
        with pytest.raises(openai.BadRequestError, match="min.quality") as caught:
            client.chat.completions.create(model="tryage", messages=messages, extra_body={"tryage": extra_body},
                                           extra_headers=extra_headers)
        assert caught.value.body["param"] == param


def test_serve_falls_back_to_the_next_best_expert(client: openai.OpenAI, served: Served) -> None:
    prompt = "Explain photosynthesis"
    decision = route(served, prompt=prompt)
    first = decision["expert"]
    second = [s["expert"] for s in sorted(decision["scores"], key=lambda s: s["total"]) if s["expert"] != first][0]
    for behaviour in ("500", "429", "401"):
        raw = client.chat.completions.with_raw_response.create(
            model="tryage", messages=[directive({first: behaviour}),
                                      {"role": "user", "content": prompt}])
        assert (raw.headers["x-tryage-expert"], raw.headers["x-tryage-fallback-from"]) == (second, first), behaviour
    stream = client.chat.completions.create(model="tryage", stream=True, messages=[
        directive({first: "stall"}), {"role": "user", "content": prompt}])
    assert {c.model for c in stream} == {second}  # stalled before its first chunk: the next expert streamed
    with pytest.raises(openai.InternalServerError, match="upstream says 500"):
        client.chat.completions.create(model="tryage", extra_body={"tryage": {"fallback": False}}, messages=[
            directive({first: "500"}), {"role": "user", "content": prompt}])


def test_serve_stickiness_keeps_a_thread_on_its_expert(client: openai.OpenAI, served: Served) -> None:
    prompts = ["Write a python function to sort a list", "What is the capital of France?",
               "Prove that there are infinitely many primes", "Tell me a story about a dragon"]
    chosen = {p: route(served, prompt=p)["expert"] for p in prompts}
    a, b = next((p, q) for p in prompts for q in prompts if chosen[p] != chosen[q])
    first = client.chat.completions.with_raw_response.create(model="tryage", user="thread-7",
                                                             messages=[{"role": "user", "content": a}])
    again = client.chat.completions.with_raw_response.create(model="tryage", user="thread-7",
                                                             messages=[{"role": "user", "content": b}])
    other = client.chat.completions.with_raw_response.create(model="tryage", messages=[{"role": "user", "content": b}],
                                                             extra_headers={"x-tryage-thread": "thread-8"})
    assert first.headers["x-tryage-expert"] == again.headers["x-tryage-expert"] == chosen[a]
    assert other.headers["x-tryage-expert"] == chosen[b]
