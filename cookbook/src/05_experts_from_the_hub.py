# %% [markdown]
# # Experts from the Hugging Face Hub
#
# Constraints need metadata: `[Flag: smallest model]` needs parameter counts, `[Flag: most recent]`
# needs dates, a licence filter needs licences. `tryage.hub.from_hub` and `discover_experts` read
# them from the Hub, so you name the models and Tryage fills in the rest: parameter count (from
# the Hub's safetensors summary, else the safetensors headers, else `config.json` built on PyTorch's
# meta device, never downloading weights), creation and last-modified dates, licence, downloads.
#
# **The Hub in this notebook is a local recording.** This machine cannot reach huggingface.co, so
# we start a small local server that replays recorded Hub API responses (`tests/hub_fake_server.py`
# serving `tests/fixtures/hub`), and point Tryage at it with `endpoint=`. The real
# `huggingface_hub` client talks to it over HTTP exactly as it would to the Hub. **With the real
# Hub, drop `endpoint=`;** everything else is the same. `HF_HUB_OFFLINE=1` in your environment makes
# `huggingface_hub` refuse every request, even to this local server, so the first cell lifts it while
# the notebook runs (and `resources.close()` at the end puts it back).
#
# **Needs:** `pip install 'tryage[hub]'`; run from the `cookbook/` folder of a checkout (for the
# recorded Hub). No network.
#
# **Takes:** about 10 seconds.

# %%
import math
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import huggingface_hub.constants

import numpy as np

from tryage import Expert, ExpertLibrary, Recency, TryageRouter
from tryage.errors import MissingMetadataError
from tryage.experts import format_size
from tryage.hub import HubClient, discover_experts, from_hub, is_legacy_created_at

sys.path.insert(0, str(Path.cwd().parent / "tests"))
from hub_fake_server import FakeHub  # the recorded Hub (test fixture)

resources = ExitStack()
# The recorded Hub is on 127.0.0.1, so it is reachable even where HF_HUB_OFFLINE=1 is set.
resources.enter_context(mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", False))
hub = resources.enter_context(FakeHub())
CACHE = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="tryage-hub-cache-")))
HUB = {"endpoint": hub.url, "cache_dir": CACHE, "token": False,  # real Hub: drop "endpoint"
       "offline": False}  # Tryage too would otherwise read HF_HUB_OFFLINE and use only its cache
print("recorded Hub listening at", hub.url)


def show(library, *extra):
    rows = [["name", "size", "created", "last modified", "licence", "downloads", *extra]]
    for e in library:
        rows.append([e.name, format_size(e.parameters), e.created_at and e.created_at.date(),
                     e.last_modified and e.last_modified.date(), e.license or "?", e.downloads or "?"])
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))

# %% [markdown]
# ## 1. A library from model ids
#
# Five masked-language models. `HubClient.fetch` returns one record per id, saying where the
# parameter count came from; `from_hub` turns the same
# metadata into a library. Metadata is cached on disk for a week, so building it again costs no
# request.

# %%
FILL_MASK = ["google-bert/bert-base-uncased", "google-bert/bert-large-uncased",
             "distilbert/distilbert-base-uncased", "FacebookAI/roberta-base", "microsoft/codebert-base"]
client = HubClient(**HUB)
for record in client.fetch(FILL_MASK):
    print(f"{record.expert.name:<36} {format_size(record.expert.parameters):>6}  counted from {record.parameters_source}")

before = len(hub.requests)
library = from_hub(FILL_MASK, **HUB)
print(f"\nbuilt the library again with {len(hub.requests) - before} requests (all from the cache):\n")
show(library)

# %% [markdown]
# ## 2. Route with size constraints
#
# A router needs a loss predictor for these experts. Training one is notebook 02; here a stand-in
# will do: any object with `experts` and `predict_losses(prompts)` is a predictor. This one predicts
# that larger models do a little better, on every prompt, so the constraints visibly decide.

# %%
class SizePrior:
    """Stand-in predictor: the predicted loss falls slowly with the parameter count."""

    def __init__(self, library):
        self.library = library

    @property
    def experts(self):
        return self.library.names

    def predict_losses(self, prompts):
        row = [2.0 - 0.1 * math.log10(e.parameters or 1e8) for e in self.library]
        return np.tile(row, (len(prompts), 1))


router = TryageRouter(SizePrior(library), library)
prompt = "The capital of France is [MASK]."
for flag in ("", " [Flag: smallest model]", " [Flag: max size 200M]",
             " [Flag: license mit]", " [Flag: largest model; license apache-2.0]"):
    d = router.route(prompt + flag)
    print(f"{flag.strip() or '(no flag)':<42} -> {d.expert:<36} {format_size(library[d.expert].parameters):>5}")

# %% [markdown]
# Filters explain themselves: every excluded expert says why.

# %%
d = router.route(prompt + " [Flag: license mit]")
for s in d.scores:
    print(f"{s.expert:<36} {'eligible' if s.eligible else 'excluded: ' + s.excluded_because}")

# %% [markdown]
# ## 3. Recency, and the Hub's 2022-03-02
#
# `[Flag: most recent]` weighs the `recency` constraint, which reads `created_at` by default. The Hub
# only started recording creation dates on 2022-03-02: every older model reports that same date, so
# these five tie and recency cannot tell them apart (the predicted loss decides). For such
# libraries, route on `last_modified` instead: `Recency(date_field="last_modified")`.

# %%
print("legacy creation date:", [e.name for e in library if is_legacy_created_at(e)])
by_created = router.route(prompt + " [Flag: most recent]")
by_modified = TryageRouter(SizePrior(library), library, constraints=[Recency(date_field="last_modified")])
d = by_modified.route(prompt + " [Flag: most recent]")
print(f"[Flag: most recent], created_at    -> {by_created.expert}  (all tie; the predicted loss decides)")
print(f"[Flag: most recent], last_modified -> {d.expert}  "
      f"(last modified {library[d.expert].last_modified.date()})")

# %% [markdown]
# ## 4. Discover models by search, fill the gaps yourself
#
# `discover_experts` runs a Hub search (by text, task, author, library or tag, sorted by downloads,
# likes or date) and builds the library from the results. Some repositories have no countable
# weights (a GGUF-only repository, say): their size stays unknown rather than guessed, and a size
# constraint then refuses to run until you say what you know.

# %%
generators = discover_experts(pipeline_tag="text-generation", sort="downloads", limit=10, **HUB)
show(generators)
text_router = TryageRouter(SizePrior(generators), generators)
try:
    text_router.route("Once upon a time [Flag: smallest model]")
except MissingMetadataError as error:
    print("\nMissingMetadataError:", error)

# %% [markdown]
# `overrides=` is what you know; it wins over the Hub, field by field.

# %%
known = [Expert("tryage-fixtures/gguf-only", parameters="1.1B")]
generators = discover_experts(pipeline_tag="text-generation", sort="downloads", limit=10, overrides=known, **HUB)
text_router = TryageRouter(SizePrior(generators), generators)
for flag in ("[Flag: smallest model]", "[Flag: most recent]", "[Flag: newer than 2024-09-01; largest model]"):
    d = text_router.route(f"Once upon a time {flag}")
    e = generators[d.expert]
    print(f"{flag:<46} -> {d.expert:<28} {format_size(e.parameters):>5}, created {e.created_at.date()}")

# %% [markdown]
# ## 5. Offline
#
# With `HF_HUB_OFFLINE=1` (or `offline=True`) nothing is requested: the cached metadata is used,
# whatever its age. A CLI does the same: `tryage discover --search bert --pipeline-tag fill-mask`.

# %%
before = len(hub.requests)
offline = from_hub(FILL_MASK, offline=True, cache_dir=CACHE, endpoint=hub.url)
print("same library offline:", offline == library, "| requests made:", len(hub.requests) - before)
resources.close()  # stop the recorded Hub, delete the cache
