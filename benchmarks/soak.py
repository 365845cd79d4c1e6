"""Soak: many concurrent routes and ``ainvoke`` calls give the serial answers, with memory flat.

    python benchmarks/soak.py [--routes 100000] [--threads 64] [--ainvoke 2000] [--fail-rate 0.05]
                              [--perceptive-routes 2000] [--collect-calls 5000] [--out benchmarks/results/soak.json]

Four phases (a phase given 0 is skipped); the first three are checked against a serial baseline
computed in the same run:

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

4. **Collect.** ``--collect-calls`` calls of ``tryage collect`` (two experts) against a local
   OpenAI-compatible server (tests/hostile/faulty_server.py, its own process) that injects 429s,
   500s, truncated bodies and stalls. The collect process is SIGKILLed twice (at a third and at two
   thirds of the calls logged) and resumed until every prompt is answered. Checked: nothing lost (the
   final Q-table holds every prompt), no logged call paid twice (the server's count of answers for a
   call logged before a run never grows in it), spend within the budget (each finished run's spend,
   and a last run on a fresh log whose budget is 40 % of what the answers cost stops with its
   log's spend under that budget). The baseline is the server's own bill.

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


def _collect_run(folder: Path, base_args: list[str], *, budget: float, kill_at: int | None = None,
                 log: Path | None = None) -> dict[str, Any]:
    """One ``tryage collect`` process; SIGKILLed once ``kill_at`` calls are in its log."""
    import signal
    import subprocess

    log = log or folder / "q.calls.jsonl"
    argv = [sys.executable, "-m", "tryage.cli", "collect", *base_args, "--log", str(log), "--budget", str(budget),
            "--json"]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    while proc.poll() is None:
        if kill_at is not None and log.exists() and log.read_bytes().count(b"\n") >= kill_at:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    summary = json.loads(out) if proc.returncode == 0 and out.strip() else None
    return {"rc": proc.returncode, "killed": killed, "seconds": round(time.perf_counter() - start, 2),
            "summary": summary, "error": err.strip().splitlines()[-1] if err.strip() and not summary else None}


def _logged(log: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The last record of each (prompt id, expert) in a call log (answers win over errors)."""
    last: dict[tuple[str, str], dict[str, Any]] = {}
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            key = (record["prompt_id"], record["expert"])
            if record.get("error") is None or key not in last or last[key].get("error") is not None:
                last[key] = record
    return last


def collect_phase(args: argparse.Namespace) -> dict[str, Any]:
    """Phase 4: see the module doc."""
    import subprocess
    import tempfile
    import urllib.request

    experts_n = 2
    prompts_n = max(1, args.collect_calls // experts_n)
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "hostile" / "faulty_server.py"), "--seed", "7",
                               "--stall-s", "4"], stdout=subprocess.PIPE, text=True)
    base_url = server.stdout.readline().strip()  # type: ignore[union-attr]

    def billed() -> dict[str, int]:
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=30) as response:
            return json.loads(response.read())["billed"]

    os.environ.setdefault("OPENAI_API_KEY", "soak-key")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "p.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Soak prompt number {i}."})
                                                    + "\n" for i in range(prompts_n)), encoding="utf-8")
            (folder / "e.json").write_text(json.dumps([
                {"name": f"faulty-{k}", "model": f"openai:faulty-{k}", "model_kwargs": {"base_url": base_url},
                 "input_cost": 1.0, "output_cost": 1.0, "expected_output_tokens": 16, "concurrency": 8}
                for k in range(experts_n)]), encoding="utf-8")
            base = ["--prompts", str(folder / "p.jsonl"), "--experts", str(folder / "e.json"), "--scorer",
                    "regex", "--pattern", "^ok: ", "--out", str(folder / "q.jsonl"), "--timeout", "2", "--retries", "4"]
            budget = 1.0   # USD: far above the run's cost, which the checks below hold it to
            runs, paid_twice_after_log = [], 0
            total = prompts_n * experts_n
            for kill_at in (total // 3, 2 * total // 3, None, None, None):
                before, bill_before = _logged(folder / "q.calls.jsonl"), billed()
                run = _collect_run(folder, base, budget=budget, kill_at=kill_at)
                bill_after = billed()
                answered_before = [f"{e}|Soak prompt number {p[1:]}." for (p, e), r in before.items()
                                   if r.get("error") is None]
                paid_twice_after_log += sum(bill_after.get(k, 0) > bill_before.get(k, 0) for k in answered_before)
                runs.append(run)
                if kill_at is None and run["rc"] == 0 and not run["summary"]["incomplete"]:
                    break
            final = _logged(folder / "q.calls.jsonl")
            table_rows = sum(1 for _ in (folder / "q.jsonl").open()) if (folder / "q.jsonl").exists() else 0
            bill = billed()
            again = [k for k, n in bill.items() if n > 1]
            attempts = {f"{e}|Soak prompt number {p[1:]}.": r.get("attempts", 1) for (p, e), r in final.items()}
            retried = sum(attempts.get(k, 1) > 1 for k in again)
            # a fresh log whose budget is 40 % of what the answers cost: it must stop within it
            tight = round(0.4 * sum(r.get("cost", 0.0) for r in final.values() if r.get("error") is None), 6)
            tight_run = _collect_run(folder, base, budget=tight, log=folder / "tight.calls.jsonl")
            tight_spent = sum(r.get("cost", 0.0) for r in _logged(folder / "tight.calls.jsonl").values())
    finally:
        server.kill()
        server.wait()
    return {"calls": total, "prompts": prompts_n, "experts": experts_n, "runs": [
                {k: v for k, v in r.items() if k != "summary"} | ({"spent": r["summary"]["spent"], "errors":
                 r["summary"]["errors"], "calls_made": r["summary"]["calls_made"]} if r["summary"] else {})
                for r in runs],
            "sigkills": sum(r["killed"] for r in runs), "qtable_rows": table_rows,
            "nothing_lost": table_rows == prompts_n and len(final) == total,
            "logged_calls_paid_again": paid_twice_after_log,
            "server_answers": sum(bill.values()), "calls_the_server_answered_more_than_once": len(again),
            "of_which_retried_after_a_client_timeout": retried,   # the server answered late; the ledger charged the
            "of_which_in_flight_at_a_sigkill": len(again) - retried,  # timed-out attempt its estimate
            "spend_within_budget": all(r["summary"]["spent"] <= budget for r in runs if r["summary"]),
            "tight_budget": {"budget": tight, "rc": tight_run["rc"], "error": tight_run["error"],
                             "logged_spend": round(tight_spent, 9), "within": tight_spent <= tight + 1e-12}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--perceptive-routes", type=int, default=2000)
    parser.add_argument("--ainvoke", type=int, default=2000)
    parser.add_argument("--fail-rate", type=float, default=0.05)
    parser.add_argument("--collect-calls", type=int, default=5000, help="calls of the collect soak (0: skip it)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "soak.json"))
    args = parser.parse_args(argv)
    if (args.routes or args.perceptive_routes or args.ainvoke) and not (LLMROUTER / "train.jsonl").exists():
        sys.exit(f"soak needs ../shared/data/llmrouter beside the checkout (looked in {LLMROUTER})")
    result: dict[str, Any] = {"command": "python benchmarks/soak.py " + " ".join(argv or sys.argv[1:]),
                              "cpu_count": os.cpu_count()}
    if args.routes:
        result["routing_core"] = routing_core(args)
    if args.perceptive_routes:
        result["perceptive_router"] = perceptive(args)
    if args.ainvoke:
        result["langchain_ainvoke"] = langchain_phase(args)
    if args.collect_calls:
        result["collect"] = collect_phase(args)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    from tryage.evaluation import write_json

    print(json.dumps(result, indent=2))
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
