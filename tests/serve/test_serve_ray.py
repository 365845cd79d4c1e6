"""``tryage serve --ray`` on a local Ray instance: 2 replicas in front of the local upstream decide as one
process does; feedback reaches the one learner once, and its new router reaches both replicas."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_helpers import CLIENT_KEY, write_experts

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'tryage[ray]')")
serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'tryage[ray]')")

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
PROMPTS = ["Write a Python function that sorts a list of tuples by their second item",
           "Translate this sentence into German: the weather is lovely today",
           "What is the capital of Australia?",
           "Prove that the square root of 2 is irrational",
           "Summarise the causes of the First World War in three sentences",
           "Give me a haiku about autumn leaves"]
FEEDBACK_PROMPT = "Translate this sentence into German"


def test_serve_ray_settings_map_to_ray_serve_options() -> None:
    from tryage.errors import ConfigurationError
    from tryage.serve.config import ServeConfig
    from tryage.serve.on_ray import deployment_options

    fixed = deployment_options(ServeConfig(router="r", experts="e", ray=True, replicas=3, replica_cpus=0.5,
                                           max_concurrency=64))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 0.5} and fixed["max_ongoing_requests"] == 64
    scaled = deployment_options(ServeConfig(router="r", experts="e", ray=True, autoscale="1:4"))
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4} and "num_replicas" not in scaled
    table = ServeConfig(router="r", experts="e", autoscale={"min_replicas": 2, "max_replicas": 8,
                                                            "target_ongoing_requests": 16})
    assert table.autoscaling_config() == {"min_replicas": 2, "max_replicas": 8, "target_ongoing_requests": 16}
    cases = [({"autoscale": "4"}, "autoscale must be MIN:MAX replicas (e.g. 1:4)"),
             ({"autoscale": "a:b"}, "autoscale must be MIN:MAX replicas"),
             ({"autoscale": "4:2"}, "autoscale max_replicas must be a whole number >= 4"),
             ({"autoscale": "1:4", "replicas": 2}, "give replicas (2) or autoscale"),
             ({"replica_cpus": -1}, "replica_cpus must be a finite number >= 0"),
             ({"replicas": 0}, "replicas must be a whole number >= 1")]
    for given, message in cases:
        with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            ServeConfig(router="r", experts="e", ray=True, **given)


def test_serve_ray_cli_refuses_a_bad_expert_before_starting_ray(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from tryage.cli import main

    experts = tmp_path / "experts.json"
    experts.write_text('[{"name": "qwen2.5-7b-instruct", "model": "anthropic:claude"}]')
    assert main(["serve", "--router", "open-llms", "--experts", str(experts), "--ray", "--autoscale", "1:2",
                 "--state-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tryage: error: ") and "forwards to OpenAI-compatible endpoints" in err and "\n" not in err
    assert not ray.is_initialized()  # these run before the module's Ray instance starts



def test_serve_ray_router_bytes_stay_inside_their_folder(tmp_path: Path) -> None:
    from tryage.errors import ConfigurationError
    from tryage.serve.on_ray import folder_files
    from tryage.serve.replica import router_from_files

    (tmp_path / "sub").mkdir()
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub" / "a.txt").write_text("a")
    assert folder_files(tmp_path) == {"config.json": b"{}", "sub/a.txt": b"a"}
    for name in ("../escape.json", "/etc/escape.json"):
        with pytest.raises(ConfigurationError, match="is not inside the router folder"):
            router_from_files({name: b"{}"})

@pytest.fixture(scope="module")
def on_ray(upstream, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module) -> Iterator:
    from tryage.cli.serve import _Loader
    from tryage.serve.config import ServeConfig
    from tryage.serve.on_ray import deploy

    folder = tmp_path_factory.mktemp("serve-ray")
    experts = write_experts(folder / "experts.json", upstream.base_url)
    monkeypatch_module.setenv("UPSTREAM_KEY", "upstream-key")  # the replicas read it from their environment
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    config = ServeConfig(router="open-llms", experts=str(experts), state_dir=str(folder / "state"), port=0,
                         ray=True, replicas=2, replica_cpus=0, update_every=4, update_interval=600.0,
                         stickiness_margin=10.0)
    try:
        served = deploy(config, _Loader("open-llms"), keys=frozenset({CLIENT_KEY}))
        yield served, folder / "state"
        served.stop()
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _replicas_seen(url: str, path: str, want: int = 2, tries: int = 40, **kwargs) -> dict[str, list]:
    """Answers of repeated calls by the replica that gave them, until ``want`` replicas have answered."""
    seen: dict[str, list] = {}
    for _ in range(tries):
        reply = httpx.request("POST" if "json" in kwargs else "GET", url + path, headers=AUTH, timeout=30, **kwargs)
        assert reply.status_code == 200, reply.text
        seen.setdefault(reply.headers["x-tryage-replica"], []).append(reply.json())
        if len(seen) >= want and sum(map(len, seen.values())) >= 8:
            break
    assert len(seen) == want, f"only replicas {list(seen)} answered {tries} calls"
    return seen


def test_serve_ray_two_replicas_route_as_one_process(on_ray) -> None:
    import openai
    from tryage import TryageRouter

    served, _ = on_ray
    client = openai.OpenAI(base_url=served.url, api_key=CLIENT_KEY, max_retries=0)
    expected = [d.expert for d in TryageRouter.default("open-llms").route_batch(PROMPTS)]
    replicas, got = set(), []
    for _ in range(3):  # each prompt several times: the calls spread over both replicas
        for prompt in PROMPTS:
            raw = client.chat.completions.with_raw_response.create(
                model="tryage", messages=[{"role": "user", "content": prompt}])
            answer = raw.parse()
            assert answer.model == raw.headers["x-tryage-expert"]
            assert answer.choices[0].message.content == f"{answer.model} says: {prompt}"
            got.append(raw.headers["x-tryage-expert"])
            replicas.add(raw.headers["x-tryage-replica"])
    assert got == expected * 3
    assert len(replicas) == 2
    stream = client.chat.completions.create(model="tryage", stream=True,
                                            messages=[{"role": "user", "content": PROMPTS[0]}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == f"{expected[0]} says: {PROMPTS[0]}"


def test_serve_ray_feedback_reaches_one_learner_and_every_replica(on_ray) -> None:
    from tryage import TryageRouter

    served, state = on_ray
    before = _replicas_seen(served.url, "/route", json={"prompt": FEEDBACK_PROMPT})
    first = [{s["expert"]: s["predicted_loss"] for s in r["data"][0]["scores"]} for rs in before.values() for r in rs]
    assert all(losses == first[0] for losses in first)  # both replicas: the same router
    expert = min(first[0], key=first[0].get)
    ids = []
    for _ in range(4):  # decisions made on whichever replica; feedback posted to whichever replica
        answer = httpx.post(f"{served.url}/chat/completions", headers=AUTH, timeout=30, json={
            "model": expert, "messages": [{"role": "user", "content": FEEDBACK_PROMPT}]})
        ids.append(answer.headers["x-tryage-decision-id"])
    for decision_id in ids:
        reply = httpx.post(f"{served.url}/feedback", headers=AUTH, json={"decision_id": decision_id, "score": 0.0})
        assert reply.status_code == 200 and reply.json()["logged"] == 1, reply.text
    rows = [json.loads(line) for line in (state / "feedback.jsonl").read_text().splitlines()]
    assert sorted(r["decision_id"] for r in rows) == sorted(ids)  # each row logged once, by the one learner

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the learner updates; each replica swaps the new router in
        versions = _replicas_seen(served.url, "/router")
        if all(r["version"] == 1 for rs in versions.values() for r in rs):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"not every replica serves version 1: {versions}")
    after = _replicas_seen(served.url, "/route", json={"prompt": FEEDBACK_PROMPT})
    learned = [{s["expert"]: s["predicted_loss"] for s in r["data"][0]["scores"]} for rs in after.values() for r in rs]
    assert all(losses == learned[0] for losses in learned)  # both replicas: the same new router
    reference = TryageRouter.default("open-llms")  # what router.update does with the same rows
    reference.update([{"prompt": FEEDBACK_PROMPT, "expert": expert, "score": 0.0}] * 4)
    expected = reference.predict_losses([FEEDBACK_PROMPT])[0]
    # the head trains with dropout (torch's global stream), so two updates agree to ~0.01, not exactly
    assert np.allclose([learned[0][e] for e in reference.experts], expected, atol=0.03)
    assert learned[0][expert] > first[0][expert] + 0.05
    assert json.loads((state / "current.json").read_text())["version"] == 1
