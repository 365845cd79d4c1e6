"""Hostile input and production behaviour: every refusal is an OpenAI-shaped error, the server keeps serving."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import httpx
import openai
import pytest
from serve_helpers import CLIENT_KEY, OPEN_LLMS, Served
from test_serve_openai import directive

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def post(served: Served, path: str, content: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{served.base_url}{path}", content=content,
                      headers={"Content-Type": "application/json", **AUTH, **(headers or {})}, timeout=30)


def assert_openai_error(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and fragment in error["message"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"model": 3, "messages": []}), 400, "'model' is required"),
    (json.dumps({"model": "tryage"}), 400, "'messages' must be a non-empty list"),
    (json.dumps({"model": "tryage", "messages": ["hi"]}), 400, "messages[0] must be an object"),
    (json.dumps({"model": "tryage", "messages": [{"role": "system", "content": "x"}]}), 400, "no user message"),
    (json.dumps({"model": "tryage", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}), 400, "'stream'"),
    (json.dumps({"model": "tryage", "messages": [{"role": "user", "content": "x [Flag: fastest]"}]}), 400, "unknown flag"),
    (json.dumps({"model": "tryage", "tryage": {"experts": ["gpt-9"]}, "messages": [{"role": "user", "content": "x"}]}),
     400, "unknown expert(s) ['gpt-9']"),
    (json.dumps({"model": "tryage", "tryage": {"colour": 1}, "messages": [{"role": "user", "content": "x"}]}),
     400, "unknown tryage option"),
    (json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}), 404, "does not exist"),
    (b"x" * 70_000, 413, "over this server's limit"),
])
def test_serve_hostile_chat_bodies_get_openai_errors(served: Served, body: bytes | str, status: int,
                                                    fragment: str) -> None:
    assert_openai_error(post(served, "/chat/completions", body), status, fragment)


def test_serve_errors_reach_the_openai_client_as_its_own_classes(served: Served, client: openai.OpenAI) -> None:
    stranger = openai.OpenAI(base_url=served.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model="tryage", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="upstream says 400"):  # the expert's own 400, no fallback
        client.chat.completions.create(model=OPEN_LLMS[0], messages=[directive({OPEN_LLMS[0]: "400"}),
                                                                     {"role": "user", "content": "hi"}])
    with pytest.raises(openai.APIStatusError) as info:  # every expert's credentials refused: 502, no key shown
        client.chat.completions.create(model=OPEN_LLMS[0], messages=[directive({OPEN_LLMS[0]: "401"}),
                                                                     {"role": "user", "content": "hi"}])
    assert info.value.status_code == 502 and "upstream-key" not in str(info.value.body)
    assert "bad***" not in json.dumps(info.value.body)


def test_serve_other_endpoints_refuse_cleanly(served: Served) -> None:
    assert_openai_error(httpx.get(f"{served.base_url}/nowhere", headers=AUTH), 404, "no endpoint")
    assert_openai_error(httpx.get(f"{served.base_url}/chat/completions", headers=AUTH), 405, "no endpoint")
    assert_openai_error(post(served, "/route", json.dumps({"prompt": 5})), 400, "must be a string")
    assert_openai_error(post(served, "/route", json.dumps({"prompt": "a", "prompts": ["b"]})), 400, "exactly one")
    assert_openai_error(post(served, "/feedback", json.dumps({"decision_id": "dec-nope", "score": 1})), 404,
                        "unknown or expired decision_id")
    assert_openai_error(post(served, "/feedback", json.dumps({"prompt": "p", "expert": "gpt-9", "score": 1})), 400,
                        "unknown expert 'gpt-9'")
    assert_openai_error(post(served, "/feedback", json.dumps({"prompt": "p", "expert": OPEN_LLMS[0]})), 400,
                        "exactly one of 'score' or 'loss'")
    assert httpx.get(f"{served.root}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{served.root}/readyz").status_code == 200


def test_serve_half_closed_connections_leave_the_server_serving(served: Served, client: openai.OpenAI) -> None:
    host, port = served.root.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\nContent-Length: 500\r\n\r\n{\"model\"")
            sock.shutdown(socket.SHUT_WR)
    answer = client.chat.completions.create(model="tryage", messages=[{"role": "user", "content": "still there?"}])
    assert answer.choices[0].message.content.endswith("says: still there?")


def test_serve_refuses_past_its_concurrency_with_retry_after(served: Served, client: openai.OpenAI) -> None:
    expert = OPEN_LLMS[1]
    stalls = [threading.Thread(target=lambda: post(served, "/chat/completions", json.dumps(
        {"model": expert, "messages": [directive({expert: "stall"}), {"role": "user", "content": "wait"}]})))
        for _ in range(6)]
    for thread in stalls:
        thread.start()
    try:
        for _ in range(50):  # until the six are in flight
            text = httpx.get(f"{served.root}/metrics").text
            if "tryage_in_flight_requests 6.0" in text:
                break
            threading.Event().wait(0.05)
        response = post(served, "/chat/completions", json.dumps({"model": "tryage", "messages": [
            {"role": "user", "content": "hi"}]}))
        assert_openai_error(response, 429, "requests in flight")
        assert response.headers["retry-after"] == "1"
    finally:
        for thread in stalls:
            thread.join()


def test_serve_metrics_and_access_log(served: Served, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=OPEN_LLMS[3], messages=[{"role": "user", "content": "count me secretword"}])
    text = httpx.get(f"{served.root}/metrics").text
    for name in ("tryage_requests_total", "tryage_routing_seconds_bucket", "tryage_upstream_seconds_bucket",
                 f'tryage_tokens_total{{expert="{OPEN_LLMS[3]}",kind="output"}}', f'tryage_spend_usd_total{{expert="{OPEN_LLMS[3]}"}}',
                 "tryage_fallbacks_total", "tryage_rejections_total", "tryage_in_flight_requests"):
        assert name in text, name
    log = Path(served.lines[1].split("state in ")[1].rstrip(")")).parent / "access.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(line.get("expert") == OPEN_LLMS[3] and line["status"] == 200 for line in lines)
    assert "secretword" not in log.read_text()  # no prompt text unless --log-prompts
