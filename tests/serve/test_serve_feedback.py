"""Feedback closes the loop: rows are logged durably, the router learns as ``router.update`` would, and a
SIGKILL at any moment leaves the old or the new router and every acknowledged row."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_helpers import CLIENT_KEY, Served, start_serve, write_experts

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
PROMPT = "Translate this sentence into German"


def losses(served: Served, prompt: str) -> dict[str, float]:
    data = httpx.post(f"{served.base_url}/route", json={"prompt": prompt}, headers=AUTH).json()["data"][0]
    return {s["expert"]: s["predicted_loss"] for s in data["scores"]}


def wait_for_version(served: Served, version: int, limit: float = 90.0) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        state = httpx.get(f"{served.base_url}/router", headers=AUTH).json()
        if state["version"] >= version:
            return state
        time.sleep(0.2)
    raise AssertionError(f"no router version {version} within {limit} s:\n" + "\n".join(served.lines))


def test_serve_feedback_updates_the_router_and_survives_sigkill(upstream, tmp_path: Path) -> None:  # noqa: ANN001
    from tryage import TryageRouter

    experts = write_experts(tmp_path / "experts.json", upstream.base_url)
    args = ["--router", "open-llms", "--experts", str(experts), "--state-dir", str(tmp_path / "state"),
            "--update-every", "4", "--update-interval", "600"]
    served = start_serve(args)
    try:
        before = losses(served, PROMPT)
        expert = min(before, key=before.get)
        answer = httpx.post(f"{served.base_url}/chat/completions", headers=AUTH, json={
            "model": expert, "messages": [{"role": "user", "content": PROMPT}]})
        rows = [{"decision_id": answer.headers["x-tryage-decision-id"], "score": 0.0}]
        rows += [{"prompt": PROMPT, "expert": expert, "score": 0.0} for _ in range(3)]
        reply = httpx.post(f"{served.base_url}/feedback", json=rows, headers=AUTH)
        assert reply.status_code == 200 and reply.json()["logged"] == 4, reply.text
        wait_for_version(served, 1)
        after = losses(served, PROMPT)
        reference = TryageRouter.default("open-llms")  # what router.update does with the same rows
        reference.update([{"prompt": PROMPT, "expert": expert, "score": 0.0}] * 4)
        expected = reference.predict_losses([PROMPT])[0]
        # the head trains with dropout (torch's global stream), so two updates agree to ~0.01, not exactly
        assert np.allclose([after[e] for e in reference.experts], expected, atol=0.03)
        assert after[expert] > before[expert] + 0.05  # it answered badly: it is now expected to do worse
        more = [{"prompt": f"{PROMPT} {i}", "expert": expert, "score": 1.0} for i in range(4)]
        assert httpx.post(f"{served.base_url}/feedback", json=more, headers=AUTH).status_code == 200
        served.stop(signal.SIGKILL)  # during (or before, or after) the second update
    finally:
        served.stop(signal.SIGKILL)
    state = tmp_path / "state"
    assert len((state / "feedback.jsonl").read_text().splitlines()) == 8  # every acknowledged row
    pointer = json.loads((state / "current.json").read_text())
    assert pointer["version"] in (1, 2) and (state / "routers" / pointer["folder"] / "model.safetensors").is_file()
    restarted = start_serve(args)
    try:
        router = httpx.get(f"{restarted.base_url}/router", headers=AUTH).json()
        assert router["feedback_rows"] == 8 and router["pending"] == 8 - pointer["rows"]
        assert "learned from" in restarted.lines[1]
        if pointer["version"] == 1:  # the restart resumes: the pending rows are learned
            assert router["pending"] == 4
            wait_for_version(restarted, 2)
    finally:
        assert restarted.stop() == 0


def test_serve_read_only_takes_no_feedback(upstream, tmp_path: Path) -> None:  # noqa: ANN001
    from tryage.serve.config import ServeConfig
    from tryage.serve.learner import Learner
    from tryage.serve.service import Service

    pytest.importorskip("httpx")

    class Router:  # only what the service reads before a request
        experts = ("a",)

    config = ServeConfig(router="x", experts="y", read_only=True, state_dir=str(tmp_path / "s"))
    learner = Learner(config.state_dir, update_every=1, read_only=True)
    learner.load(lambda: Router())
    service = Service(config, Router(), {}, learner)

    async def run() -> None:
        from tryage.serve.app import create_app

        app = create_app(service)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post("/v1/feedback", json={"prompt": "p", "expert": "a", "score": 1})
        assert response.status_code == 403 and response.json()["error"]["code"] == "read_only"

    asyncio.run(run())
    assert not (tmp_path / "s" / "feedback.jsonl").exists()


def test_serve_sigterm_finishes_a_stream_in_flight(upstream, tmp_path: Path) -> None:  # noqa: ANN001
    import threading

    from test_serve_openai import directive

    experts = write_experts(tmp_path / "experts.json", upstream.base_url)
    served = start_serve(["--router", "open-llms", "--experts", str(experts), "--state-dir", str(tmp_path / "s"),
                          "--read-only", "--timeout", "10"])
    expert = "gemma-2-9b-it"
    lines: list[str] = []
    opened = threading.Event()

    def read() -> None:
        body = {"model": expert, "stream": True,
                "messages": [directive({expert: "slow-stream"}), {"role": "user", "content": "one two three"}]}
        with httpx.stream("POST", f"{served.base_url}/chat/completions", json=body, headers=AUTH, timeout=30) as r:
            for line in r.iter_lines():
                opened.set()
                if line:
                    lines.append(line)

    reader = threading.Thread(target=read)
    reader.start()
    assert opened.wait(60)
    served.process.send_signal(signal.SIGTERM)  # mid-stream: stop accepting, finish this one
    reader.join(60)
    assert served.process.wait(timeout=60) == 0
    assert lines[-1] == "data: [DONE]"
    text = "".join(json.loads(line[5:])["choices"][0]["delta"].get("content") or ""
                   for line in lines[:-1] if json.loads(line[5:])["choices"])
    assert text == f"{expert} says: one two three"
