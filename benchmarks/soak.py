"""Soak: many concurrent routes and ``ainvoke`` calls give the serial answers, with memory flat.

    python benchmarks/soak.py [--routes 100000] [--threads 64] [--ainvoke 2000] [--fail-rate 0.05]
                              [--perceptive-routes 2000] [--out benchmarks/results/soak.json]

Three phases, each checked against a serial baseline computed in the same run:

1. **Routing core.** ``--routes`` routes from ``--threads`` threads through one shared
   :class:`tryage.TryageRouter` whose predictor is the oracle of LLMRouter's Q-table (9 LLMs with
   real sizes and prices, ../shared/data/llmrouter; read, never copied). Prompts carry a mix of
   flags and weights (including unclosed flags and unknown experts, whose errors must match too).
   Every decision (``to_dict()``) or error must equal the serial one. The threaded pass runs three
   times; RSS after each (results dropped, ``gc.collect()``) shows whether memory grows.
2. **Perceptive router.** ``--perceptive-routes`` routes through the embedded default router
   (MiniLM + head) from the same threads against serial: torch under contention.
3. **LangChain.** ``--ainvoke`` concurrent ``ChatTryage.ainvoke`` calls (``fallback=True``) over chat
   experts that fail ``--fail-rate`` of their calls (deterministically, by prompt and expert). Each
   answer must come from the first expert of the serial ranking that does not fail; any exception
   reaching the caller is an unexpected error.

Prints JSON and writes it to ``--out``. RSS is read from /proc/self/statm (current) and
``resource.getrusage`` (peak).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LLMROUTER = REPO.parent / "shared" / "data" / "llmrouter"

FLAGS = ["", "", "", " [Flag: cheapest]", " [Flag: smallest model]", " [Flag: largest model]",
         " [Flag: size=0.3]", " [Flag: cost=-0.2; max size 9B]", " [Flag: min size 40B]",
         " [Flag: expert gemma-2-9b-it]", " [Flag: expert nobody]", " [Flag: cheapest",
         " [Flag: size=1e308, cost=1e308; expert codegemma-7b]"]
WEIGHTS: list[dict[str, float] | None] = [None, None, {"size": 0.1}, {"cost": 0.5}, {"size": -0.2, "cost": 0.1}]


def rss_mb() -> float:
    """Current resident set size in MiB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def outcome(router: Any, prompt: str, weights: dict[str, float] | None) -> tuple[str, Any]:
    """A decision as a dict, or the error's class and message: what serial and threaded must agree on."""
    try:
        return "ok", router.route(prompt, weights=weights).to_dict()
    except Exception as exc:  # noqa: BLE001 - every error is compared, expected or not
        return type(exc).__name__, str(exc)


def concurrent_outcomes(router: Any, jobs: list[tuple[str, Any]], threads: int) -> tuple[list, float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda job: outcome(router, *job), jobs, chunksize=64))
    return results, time.perf_counter() - start


def routing_core(args: argparse.Namespace) -> dict[str, Any]:
    from tryage import ExpertLibrary, QTable, TryageRouter
    from tryage.predictors import OraclePredictor

    table = QTable.from_file(LLMROUTER / "train.jsonl")
    library = ExpertLibrary.from_json(LLMROUTER / "models.json").subset(table.experts)
    # The oracle keys on the exact prompt, so flags go where they are stripped without a trace.
    router = TryageRouter(_FlagAwareOracle(OraclePredictor(table)), library)
    rng = random.Random(0)
    jobs = [(rng.choice(table.prompts) + rng.choice(FLAGS), rng.choice(WEIGHTS)) for _ in range(args.routes)]
    rss_start = rss_mb()
    start = time.perf_counter()
    serial = [outcome(router, *job) for job in jobs]
    serial_s = time.perf_counter() - start
    rss_serial = rss_mb()
    passes = []
    for _ in range(3):
        threaded, seconds = concurrent_outcomes(router, jobs, args.threads)
        mismatches = sum(a != b for a, b in zip(serial, threaded))
        del threaded
        gc.collect()
        passes.append({"seconds": round(seconds, 2), "routes_per_s": round(len(jobs) / seconds),
                       "mismatches": mismatches, "rss_mb_after": round(rss_mb(), 1)})
    kinds: dict[str, int] = {}
    for kind, _ in serial:
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"routes": len(jobs), "threads": args.threads, "serial_seconds": round(serial_s, 2),
            "serial_routes_per_s": round(len(jobs) / serial_s), "outcomes": kinds,
            "rss_mb_before": round(rss_start, 1), "rss_mb_after_serial": round(rss_serial, 1),
            "threaded_passes": passes}


class _FlagAwareOracle:
    """The oracle over the table, looked up by the prompt the router passes (flags already stripped)."""

    def __init__(self, oracle: Any) -> None:
        self.oracle = oracle
        self.experts = oracle.experts
        self._index = {p.strip(): i for i, p in enumerate(oracle.qtable.prompts)}

    def predict_losses(self, prompts: list[str]) -> Any:
        return self.oracle.qtable.losses[[self._index[p.strip()] for p in prompts]]


def perceptive(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tryage import TryageRouter

    torch.set_num_threads(1)
    router = TryageRouter.default()
    rng = random.Random(1)
    base = ["What is the capital of California?", "Write a Python function that reverses a list.",
            "Summarise the plaintiff's claim in one sentence.", "Which protein binds oxygen?",
            "Prove that there are infinitely many primes.", "Translate 'good morning' into French."]
    flags = ["", "", " [Flag: smallest model]", " [Flag: largest model]", " [Flag: size=0.3]",
             " [Flag: max size 10M]", " [Flag: expert smollm2-135m-legal]", " [Flag: cheapest]"]  # no costs: an error
    weights = [None, None, {"size": 0.1}, {"size": -0.2}]
    jobs = [(f"{rng.choice(base)} ({i % 97})" + rng.choice(flags), rng.choice(weights))
            for i in range(args.perceptive_routes)]
    rss_start = rss_mb()
    start = time.perf_counter()
    serial = [outcome(router, *job) for job in jobs]
    serial_s = time.perf_counter() - start
    threaded, seconds = concurrent_outcomes(router, jobs, args.threads)
    kinds: dict[str, int] = {}
    for kind, _ in serial:
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"routes": len(jobs), "threads": args.threads, "experts": len(router.experts),
            "serial_seconds": round(serial_s, 2), "threaded_seconds": round(seconds, 2),
            "mismatches": sum(a != b for a, b in zip(serial, threaded)), "outcomes": kinds,
            "rss_mb_before": round(rss_start, 1), "rss_mb_after": round(rss_mb(), 1)}


def fails(expert: str, text: str, rate: float) -> bool:
    """Whether ``expert`` fails on ``text``: a fixed draw per pair, so serial and concurrent agree."""
    return zlib.crc32(f"{expert}|{text.strip()}".encode()) % 10_000 < rate * 10_000


def langchain_phase(args: argparse.Namespace) -> dict[str, Any]:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    from langchain_tryage import ChatTryage
    from tryage import ExpertLibrary, QTable, TryageRouter
    from tryage.predictors import OraclePredictor

    calls = {"total": 0, "failed": 0}

    class FlakyChat(BaseChatModel):
        """Answers with its own name; fails on a fixed ``rate`` of prompts, as a flaky API would."""

        expert: str
        rate: float

        @property
        def _llm_type(self) -> str:
            return "flaky"

        def _answer(self, messages: list[BaseMessage]) -> ChatResult:
            text = str(messages[-1].content)
            calls["total"] += 1
            if fails(self.expert, text, self.rate):
                calls["failed"] += 1
                raise ConnectionError(f"{self.expert}: simulated outage")
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.expert))])

        def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                      run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
            return self._answer(messages)

        async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                             run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
            await asyncio.sleep(0.001)  # let the other calls interleave
            return self._answer(messages)

    table = QTable.from_file(LLMROUTER / "train.jsonl")
    library = ExpertLibrary.from_json(LLMROUTER / "models.json").subset(table.experts)
    router = TryageRouter(_FlagAwareOracle(OraclePredictor(table)), library)
    experts = {name: FlakyChat(expert=name, rate=args.fail_rate) for name in router.experts}
    chat = ChatTryage(router=router, experts=experts, fallback=True)
    prompts = list(dict.fromkeys(p.strip() for p in table.prompts))[:args.ainvoke]
    weights = [WEIGHTS[i % len(WEIGHTS)] for i in range(len(prompts))]
    expected = []
    for prompt, w in zip(prompts, weights):
        ranking = router.route(prompt, weights=w).ranking
        expected.append(next((e for e in ranking if not fails(e, prompt, args.fail_rate)), None))

    async def one(prompt: str, w: dict[str, float] | None) -> Any:
        try:
            kwargs = {} if w is None else {"tryage_weights": w}
            return (await chat.ainvoke(prompt, **kwargs)).content
        except Exception as exc:  # noqa: BLE001 - counted as unexpected
            return exc

    async def run_all() -> list[Any]:
        return await asyncio.gather(*(one(p, w) for p, w in zip(prompts, weights)))

    rss_start = rss_mb()
    start = time.perf_counter()
    answers = asyncio.run(run_all())
    seconds = time.perf_counter() - start
    errors = [a for a in answers if isinstance(a, BaseException)]
    unexpected = [a for a, e in zip(answers, expected) if isinstance(a, BaseException) and e is not None]
    wrong = sum(1 for a, e in zip(answers, expected) if not isinstance(a, BaseException) and a != e)
    return {"calls": len(prompts), "fail_rate": args.fail_rate, "seconds": round(seconds, 2),
            "expert_calls": calls["total"], "expert_failures": calls["failed"],
            "fell_back": sum(1 for p, w, e in zip(prompts, weights, expected) if e is not None
                             and e != router.route(p, weights=w).expert),
            "errors": len(errors), "unexpected_errors": len(unexpected),
            "unexpected_examples": [f"{type(e).__name__}: {str(e)[:200]}" for e in unexpected[:3]],
            "answers_not_from_expected_expert": wrong, "rss_mb_before": round(rss_start, 1),
            "rss_mb_after": round(rss_mb(), 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--perceptive-routes", type=int, default=2000)
    parser.add_argument("--ainvoke", type=int, default=2000)
    parser.add_argument("--fail-rate", type=float, default=0.05)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "soak.json"))
    args = parser.parse_args(argv)
    if not (LLMROUTER / "train.jsonl").exists():
        sys.exit(f"soak needs ../shared/data/llmrouter beside the checkout (looked in {LLMROUTER})")
    result: dict[str, Any] = {"command": "python benchmarks/soak.py " + " ".join(argv or sys.argv[1:]),
                              "cpu_count": os.cpu_count()}
    result["routing_core"] = routing_core(args)
    if args.perceptive_routes:
        result["perceptive_router"] = perceptive(args)
    if args.ainvoke:
        result["langchain_ainvoke"] = langchain_phase(args)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    from tryage.evaluation import write_json

    print(json.dumps(result, indent=2))
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
