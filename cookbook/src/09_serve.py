# %% [markdown]
# # One endpoint for every client: `tryage serve`
#
# `tryage serve` puts a router in front of your models as one OpenAI-compatible endpoint: clients keep
# their code and change `base_url`. `model="tryage"` routes each conversation to the best expert;
# `model="<expert>"` calls that one. Here it runs the embedded `open-llms` router in front of a small
# local OpenAI-compatible server (from the test suite: `tests/serve/serve_upstream.py`, standing in for vLLM,
# Ollama or a provider), and we point the `openai` client and a LangChain agent at it, send feedback,
# and watch the router learn and the metrics count.
#
# **Needs:** `pip install 'tryage[serve,collect,langchain]' openai`, a checkout (for the local upstream). Offline.
#
# **Takes:** about 30–60 seconds on 2 CPU cores (most of it loading the router in the server process).

# %%
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path("..") / "tests" / "serve"))  # the local OpenAI-compatible upstream
from serve_upstream import Upstream  # noqa: E402

upstream = Upstream().__enter__()  # runs in a thread until the kernel stops
work = Path(tempfile.mkdtemp(prefix="tryage-serve-"))
print("upstream:", upstream.base_url)

# %% [markdown]
# ## 1. The experts file and the server
#
# The experts file is the one `tryage collect` reads. Each entry is named after an expert of the router
# and says where that model answers; its key comes from the environment (`api_key_env`), never from the
# file, and the server never shows it. Clients authenticate with their own keys (`TRYAGE_API_KEYS`).

# %%
from tryage import TryageRouter  # noqa: E402

names = TryageRouter.default("open-llms").experts
experts = work / "experts.json"
experts.write_text(json.dumps([{"name": n, "model": f"openai:{n}", "api_key_env": "UPSTREAM_KEY",
                                "model_kwargs": {"base_url": upstream.base_url},
                                "input_cost": 0.2, "output_cost": 0.6} for n in names], indent=1))
env = {**os.environ, "UPSTREAM_KEY": "upstream-key", "TRYAGE_API_KEYS": "my-client-key"}
server = subprocess.Popen([sys.executable, "-m", "tryage.cli", "serve", "--router", "open-llms",
                           "--experts", str(experts), "--port", "0", "--state-dir", str(work / "state"),
                           "--update-every", "4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
log_lines = []
threading.Thread(target=lambda: log_lines.extend(line.rstrip() for line in server.stdout), daemon=True).start()
while not any("listening on" in line for line in log_lines) and server.poll() is None:  # loading the router
    time.sleep(0.2)
base_url = next(line for line in log_lines if "listening on" in line).rsplit(" ", 1)[-1]
print("\n".join(log_lines[:4]))

# %% [markdown]
# ## 2. The `openai` client, unchanged
#
# Flags still work (and are cut from what the expert receives); the chosen expert comes back in the
# `x-tryage-expert` header and as the body's `model`; the decision id is what feedback refers to.

# %%
from openai import OpenAI  # noqa: E402

client = OpenAI(base_url=base_url, api_key="my-client-key")
raw = client.chat.completions.with_raw_response.create(
    model="tryage", messages=[{"role": "user", "content": "Translate 'good morning' into French [Flag: cheapest]"}])
answer = raw.parse()
expert, decision_id = raw.headers["x-tryage-expert"], raw.headers["x-tryage-decision-id"]
print(f"expert: {expert}\nanswer: {answer.choices[0].message.content}\ndecision: {decision_id}")

stream = client.chat.completions.create(model="tryage", stream=True,
                                        messages=[{"role": "user", "content": "Write a haiku about rivers"}])
streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
print("streamed:", streamed)

# %% [markdown]
# ## 3. A LangChain agent with a tool
#
# `ChatOpenAI(base_url=...)` is all LangChain needs; tool calls pass through the server untouched.

# %%
from langchain.agents import create_agent  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402


@tool
def double(x: int) -> int:
    """Double a number."""
    return 2 * x


agent = create_agent(ChatOpenAI(base_url=base_url, api_key="my-client-key", model="tryage"), [double])
result = agent.invoke({"messages": [("user", "double two, please")]})
for message in result["messages"]:
    print(f"{message.type:>6}: {message.content or message.tool_calls}")
agent_answer = result["messages"][-1].content

# %% [markdown]
# ## 4. Feedback teaches the router
#
# Feedback names a decision (`{"decision_id", "score"}`) or says it in full (`{"prompt", "expert",
# "score"}`). Rows are fsync'd to the state folder's log before the reply; every `--update-every` rows
# the server trains a copy of its router on them, saves it and swaps it in. Here users say the chosen
# expert answered a translation badly.

# %%
auth = {"Authorization": "Bearer my-client-key"}
prompt = "Translate 'good morning' into French"


def predicted(prompt):
    decision = httpx.post(f"{base_url}/route", json={"prompt": prompt}, headers=auth).json()["data"][0]
    return {s["expert"]: round(s["predicted_loss"], 3) for s in decision["scores"]}


before = predicted(prompt)
rows = [{"decision_id": decision_id, "score": 0.0}] + [{"prompt": prompt, "expert": expert, "score": 0.0}] * 3
print(httpx.post(f"{base_url}/feedback", json=rows, headers=auth).json())
deadline = time.monotonic() + 120
while httpx.get(f"{base_url}/router", headers=auth).json()["version"] < 1 and time.monotonic() < deadline:
    time.sleep(0.2)
after = predicted(prompt)
print(f"{expert}: predicted failure {before[expert]} -> {after[expert]}")

# %% [markdown]
# ## 5. Metrics, and a graceful stop
#
# `/metrics` is Prometheus text: requests by endpoint, expert and status, routing and upstream latency,
# tokens and spend by expert, fallbacks, rejections, requests in flight. SIGTERM stops accepting, lets
# requests in flight finish, and exits 0.

# %%
metrics = httpx.get(base_url.removesuffix("/v1") + "/metrics").text
shown = [line for line in metrics.splitlines() if line.startswith(("tryage_requests_total", "tryage_spend_usd_total"))]
print("\n".join(shown))
server.terminate()
exit_code = server.wait(timeout=60)
print("server exit code:", exit_code)
