"""Throughput of ``tryage collect`` beside a bare asyncio loop of the same requests, in one run.

    python benchmarks/collect_overhead.py [--prompts 200] [--concurrency 8] [--delay 0.0 0.05] [--repeats 3]

A local OpenAI-compatible server (tests/collect/openai_server.py, in its own process) answers
``good`` and ``sloppy``. For each server delay, the same ``prompts × 2`` chat requests are made

* **bare**: ``openai.AsyncOpenAI`` with one semaphore of ``concurrency`` per model, nothing else;
* **langchain_bare**: the same loop over LangChain's ``ChatOpenAI.ainvoke`` (what collect calls);
* **collect**: :func:`tryage.collect.collect` (LangChain ``ChatOpenAI``, per-expert concurrency,
  budget accounting, the call log written and flushed per call, ``numeric`` scoring, the Q-table
  and expert library written), into a fresh folder each time so nothing is cached.

Runs alternate (bare, collect, bare, ...) after one warm-up of each; the median wall time is kept.
Prints JSON (calls/s, the time ratio collect/bare) and writes it to benchmarks/results/collect_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "collect" / "openai_server.py"
MODELS = ("good", "sloppy")
SSL = ssl.create_default_context()


def prompts(n: int) -> list[dict]:
    return [{"id": f"p{i}", "prompt": f"What is {i} plus 3?", "reference": str(i + 3)} for i in range(n)]


class Bare:
    """A baseline: the same requests from one event loop, each run with fresh clients (as each collect run has).

    ``langchain=False``: ``openai.AsyncOpenAI`` (the floor); ``True``: LangChain's ``ChatOpenAI.ainvoke``,
    the client collect drives, to split collect's own overhead from LangChain's.
    """

    def __init__(self, base_url: str, *, langchain: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.base_url = base_url
        self.langchain = langchain

    async def calls(self, rows: list[dict], concurrency: int) -> int:
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        gates = {m: asyncio.Semaphore(concurrency) for m in MODELS}
        http = DefaultAsyncHttpxClient(verify=SSL)  # one TLS context per process, as collect shares one
        if self.langchain:
            from langchain_openai import ChatOpenAI

            models = {m: ChatOpenAI(model=m, base_url=self.base_url, temperature=0, max_retries=0,
                                    http_async_client=http) for m in MODELS}
        else:
            client = AsyncOpenAI(base_url=self.base_url, api_key=os.environ["OPENAI_API_KEY"], max_retries=0,
                                 http_client=http)

        async def one(model: str, prompt: str) -> str:
            async with gates[model]:
                if self.langchain:
                    return str((await models[model].ainvoke(prompt)).content)
                reply = await client.chat.completions.create(model=model, temperature=0,
                                                             messages=[{"role": "user", "content": prompt}])
                return reply.choices[0].message.content or ""

        try:
            return len(await asyncio.gather(*(one(m, r["prompt"]) for r in rows for m in MODELS)))
        finally:
            await http.aclose()

    def run(self, rows: list[dict], concurrency: int) -> float:
        start = time.perf_counter()
        made = self.loop.run_until_complete(self.calls(rows, concurrency))
        elapsed = time.perf_counter() - start
        assert made == len(rows) * len(MODELS)
        return elapsed

    def close(self) -> None:
        self.loop.close()


def run_collect(base_url: str, rows: list[dict], concurrency: int) -> float:
    from tryage.collect import collect

    experts = [{"name": m, "model": f"openai:{m}", "model_kwargs": {"base_url": base_url, "temperature": 0},
                "input_cost": 0.15, "output_cost": 0.6} for m in MODELS]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = collect(rows, experts, scorer="numeric", out=Path(folder) / "q.jsonl", concurrency=concurrency,
                         progress=False)
        elapsed = time.perf_counter() - start
    assert result.made == len(rows) * len(MODELS) and result.errors == 0
    return elapsed


def measure(delay: float, rows: list[dict], concurrency: int, repeats: int) -> dict:
    server = subprocess.Popen([sys.executable, str(SERVER), str(delay)], stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()  # type: ignore[union-attr]
        baseline, langchain = Bare(base_url), Bare(base_url, langchain=True)
        baseline.run(rows[:20], concurrency)  # warm-up: imports, connections
        langchain.run(rows[:20], concurrency)
        run_collect(base_url, rows[:20], concurrency)
        times: dict[str, list[float]] = {"bare": [], "langchain_bare": [], "collect": []}
        for _ in range(repeats):
            times["bare"].append(baseline.run(rows, concurrency))
            times["langchain_bare"].append(langchain.run(rows, concurrency))
            times["collect"].append(run_collect(base_url, rows, concurrency))
        baseline.close()
        langchain.close()
    finally:
        server.terminate()
        server.wait()
    calls = len(rows) * len(MODELS)
    median = {k: statistics.median(v) for k, v in times.items()}
    return {"server_delay_s": delay, "calls": calls,
            "bare_calls_per_s": calls / median["bare"], "langchain_bare_calls_per_s": calls / median["langchain_bare"],
            "collect_calls_per_s": calls / median["collect"],
            "time_ratio_collect_over_bare": median["collect"] / median["bare"],
            "time_ratio_collect_over_langchain_bare": median["collect"] / median["langchain_bare"],
            "seconds": times}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per model")
    parser.add_argument("--delay", type=float, nargs="+", default=[0.0, 0.05],
                        help="server seconds per answer (0: pure client overhead)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "collect_overhead.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENAI_API_KEY", "test-key")
    rows = prompts(args.prompts)
    result = {"benchmark": "collect_overhead", "prompts": args.prompts, "models": list(MODELS),
              "concurrency_per_model": args.concurrency, "repeats": args.repeats, "cpu_count": os.cpu_count(),
              "runs": [measure(d, rows, args.concurrency, args.repeats) for d in args.delay]}
    from tryage.evaluation import write_json

    print(json.dumps(result, indent=2))
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
