"""What ``tryage serve`` adds to a request: the same upstream called directly and through Tryage, in one run.

    python benchmarks/serve_overhead.py [--clients 1 16 64] [--requests 2000] [--delay 0.05] [--out FILE]

A local OpenAI-compatible upstream (tests/serve/serve_upstream.py, its own process) answers every request
after a fixed ``delay`` (50 ms). ``tryage serve --router open-llms`` (its own process, read-only) sits in
front of it with every open-llms expert at that upstream. For each number of concurrent clients, the same
``requests`` chat completions are sent

* **direct**: to the upstream, ``model`` = an expert;
* **tryage**: to the server, ``model = "tryage"`` (routed: micro-batched routing, then the upstream call);

from one event loop over ``httpx.AsyncClient`` (one connection per client), prompts all different. It
reports p50/p99 latency of each, the added p50/p99, the throughput ratio tryage/direct, the server's RSS,
the router's own routing time at batch 1 (measured in this process, same router), and the time to the
first streamed event (stream: true), direct and through Tryage. Prints JSON and writes it to ``--out``
(default benchmarks/results/serve_overhead.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT / "tests" / "serve" / "serve_upstream.py"


def start(command: list[str], marker: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if marker in line:
            return process, line.strip().rsplit(" ", 1)[-1]
    raise RuntimeError(f"{command[:4]} did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def load(base_url: str, model: str, clients: int, requests: int, *, stream: bool = False) -> dict[str, float]:
    """``requests`` completions from ``clients`` concurrent clients; the upstream's key is sent (Tryage needs none)."""
    import httpx

    latencies: list[float] = []
    queue = list(range(requests))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=1),
                                     headers={"Authorization": "Bearer upstream-key"}) as http:
            while queue:
                i = queue.pop()
                body = {"model": model, "messages": [{"role": "user", "content": f"Question {i}: what is {i} plus 1?"}]}
                started = time.perf_counter()
                if stream:
                    async with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as r:
                        lines = r.aiter_lines()
                        async for line in lines:
                            if line.startswith("data:"):
                                latencies.append(time.perf_counter() - started)
                                break
                        async for _ in lines:
                            pass
                else:
                    response = await http.post("/chat/completions", json=body)
                    response.raise_for_status()
                    latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {"p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * percentile(latencies, 0.99),
            "requests_per_s": len(latencies) / wall}


def routing_time_ms(samples: int = 100) -> tuple[float, tuple[str, ...]]:
    import torch

    from tryage import TryageRouter

    torch.set_num_threads(1)
    router = TryageRouter.default("open-llms")
    router.route("warm up")
    times = []
    for i in range(samples):
        started = time.perf_counter()
        router.route(f"Question {i}: what is {i} plus 1?")
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times), router.experts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_overhead.json"))
    args = parser.parse_args()
    env = {**os.environ, "UPSTREAM_KEY": "upstream-key", "TRYAGE_API_KEYS": ""}
    upstream, upstream_url = start([sys.executable, str(UPSTREAM), str(args.delay)], "http://", env)
    work = Path(tempfile.mkdtemp(prefix="serve-overhead-"))
    routing_ms, names = routing_time_ms()
    expert = names[0]
    experts = work / "experts.json"
    experts.write_text(json.dumps([{"name": n, "model": f"openai:{n}", "api_key_env": "UPSTREAM_KEY",
                                    "model_kwargs": {"base_url": upstream_url}} for n in names]))
    server, server_url = start([sys.executable, "-m", "tryage.cli", "serve", "--router", "open-llms", "--experts",
                               str(experts), "--port", "0", "--read-only", "--state-dir", str(work / "state"),
                               "--max-concurrency", "1024"], "listening on", env)
    try:
        import psutil

        result: dict = {"requests": args.requests, "upstream_delay_s": args.delay, "routing_ms_batch1": routing_ms,
                        "cpus": os.cpu_count(), "runs": []}
        asyncio.run(load(server_url, "tryage", 4, 40))  # warm up both paths
        asyncio.run(load(upstream_url, expert, 4, 40))
        for clients in args.clients:
            direct = asyncio.run(load(upstream_url, expert, clients, args.requests))
            routed = asyncio.run(load(server_url, "tryage", clients, args.requests))
            result["runs"].append({"clients": clients, "direct": direct, "tryage": routed,
                                   "added_p50_ms": routed["p50_ms"] - direct["p50_ms"],
                                   "added_p99_ms": routed["p99_ms"] - direct["p99_ms"],
                                   "throughput_ratio": routed["requests_per_s"] / direct["requests_per_s"]})
        first_direct = asyncio.run(load(upstream_url, expert, 1, min(args.requests, 200), stream=True))
        first_routed = asyncio.run(load(server_url, "tryage", 1, min(args.requests, 200), stream=True))
        result["first_event_p50_ms"] = {"direct": first_direct["p50_ms"], "tryage": first_routed["p50_ms"],
                                        "added": first_routed["p50_ms"] - first_direct["p50_ms"]}
        result["server_rss_mb"] = psutil.Process(server.pid).memory_info().rss / 2**20
    finally:
        server.terminate()
        upstream.terminate()
        server.wait(timeout=60)
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
