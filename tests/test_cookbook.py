"""The cookbook notebooks run from top to bottom and show what their text promises.

Each notebook is executed with nbclient in a fresh kernel of this interpreter (a kernel spec
registered in a temporary ``JUPYTER_PATH``, so whatever ``python3`` kernel the machine has is never
used), with ``cookbook/`` as working directory. After the last cell, a probe cell runs in the same
kernel and prints a JSON summary of the notebook's variables; the tests assert on that summary and on
the outputs a reader sees. Run them with::

    .venv/bin/python -m pytest tests/test_cookbook.py -v
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient", reason="running the cookbook needs nbclient and ipykernel (dev extra)")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
COOKBOOK = REPO / "cookbook"
_spec = importlib.util.spec_from_file_location("tryage_cookbook_build", COOKBOOK / "build.py")
build = importlib.util.module_from_spec(_spec)  # cookbook/build.py, under a name no package uses
_spec.loader.exec_module(build)

pytestmark = pytest.mark.slow
KERNEL = "tryage-cookbook"
TIMEOUT = 600  # per cell, seconds
PROBE_MARK = "COOKBOOK-PROBE "


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for the kernels: a kernel spec of this interpreter, no Hub access (05 opts out to
    reach its local recorded Hub), no progress bars."""
    spec_dir = tmp_path_factory.mktemp("jupyter") / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tryage cookbook", "language": "python"}))
    return {**build.KERNEL_ENV, "JUPYTER_PATH": str(spec_dir.parent.parent), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


def run_notebook(name: str, env: dict[str, str], probe: str, extra_env: dict[str, str] | None = None,
                 drop_env: tuple[str, ...] = ()) -> tuple[nbformat.NotebookNode, dict]:
    """Execute ``cookbook/<name>.ipynb`` then ``probe`` in the same kernel; return the notebook and
    the JSON the probe printed after :data:`PROBE_MARK`."""
    nb = nbformat.read(COOKBOOK / f"{name}.ipynb", as_version=4)
    saved = dict(os.environ)
    os.environ.update({**env, **(extra_env or {})})
    for key in drop_env:
        os.environ.pop(key, None)
    try:
        client = nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name=KERNEL, record_timing=False,
                                         resources={"metadata": {"path": str(COOKBOOK)}})
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
            probe_cell = nbformat.v4.new_code_cell(
                "import json as _json\nprint(" + repr(PROBE_MARK) + " + _json.dumps(" + probe + ", default=str))")
            nb.cells.append(probe_cell)
            client.execute_cell(probe_cell, len(nb.cells) - 1)
            nb.cells.pop()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    printed = "".join(o.get("text", "") for o in probe_cell.outputs if o.output_type == "stream")
    assert PROBE_MARK in printed, f"the probe printed nothing usable: {probe_cell.outputs}"
    return nb, json.loads(printed.split(PROBE_MARK, 1)[1])


def text_of(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed or displayed as text, in order."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def has_image(nb: nbformat.NotebookNode) -> bool:
    return any("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def assert_no_errors(nb: nbformat.NotebookNode) -> None:
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, errors


# -- the notebooks as committed ----------------------------------------------------------------------
def test_cookbook_notebooks_match_their_sources():
    stale = [s.stem for s in build.sources()
             if not build.same_cells(build.build(s), nbformat.read(build.notebook_path(s), as_version=4))]
    assert not stale, f"regenerate with: .venv/bin/python cookbook/build.py  (stale: {stale})"


def test_cookbook_readme_lists_every_notebook():
    readme = (COOKBOOK / "README.md").read_text(encoding="utf-8")
    missing = [s.stem for s in build.sources() if f"{s.stem}.ipynb" not in readme]
    assert not missing


def test_cookbook_notebooks_state_needs_and_time_at_the_top():
    for source in build.sources():
        kind, first = build.parse_cells(source.read_text(encoding="utf-8"))[0]
        assert kind == "markdown" and "**Needs:**" in first and "**Takes:**" in first, source.name


# -- 02 ----------------------------------------------------------------------------------------------
LLMROUTER = REPO.parent / "shared" / "data" / "llmrouter"


def test_cookbook_02_trains_and_beats_random_on_the_llmrouter_table(kernel_env):
    if not (LLMROUTER / "train.jsonl").exists():
        pytest.skip(f"../shared/data/llmrouter is not beside the checkout (looked in {LLMROUTER})")
    nb, state = run_notebook("02_train_your_own_router", kernel_env, probe=(
        "{'source': SOURCE, 'n_train': len(train), 'n_test': len(test), 'report': report.to_dict(), "
        "'same': bool(same), 'flagged': router.route(question + ' [Flag: smallest model]').expert}"))
    assert_no_errors(nb)
    assert state["source"] == "LLMRouter score matrix"
    assert state["n_train"] + state["n_test"] == 800
    report = state["report"]
    assert report["random"] < report["router"] <= report["oracle"]
    assert report["router"] > report["best_single"]["value"] - 0.05  # at least close to the best single model
    assert state["same"] is True
    assert state["flagged"] in ("qwen2.5-7b-instruct", "mistral-7b-instruct-v0.3", "codegemma-7b")  # the 7B ones
    assert has_image(nb)
    assert "Tryage (perceptive router)" in text_of(nb)


def test_cookbook_02_falls_back_to_a_synthetic_table_without_the_data(kernel_env, tmp_path):
    nb, state = run_notebook("02_train_your_own_router", kernel_env,
                             probe="{'source': SOURCE, 'report': report.to_dict()}",
                             extra_env={"TRYAGE_LLMROUTER_DIR": str(tmp_path / "absent")})
    assert_no_errors(nb)
    assert state["source"] == "synthetic Q-table"
    assert "The LLMRouter data is not at" in text_of(nb)
    assert state["report"]["router"] > state["report"]["best_single"]["value"]  # specialists pay off


# -- 01 ----------------------------------------------------------------------------------------------
def _default_router_available() -> bool:
    from tryage.defaults import DEFAULT_DIR

    return (DEFAULT_DIR / "router" / "config.json").exists()


def test_cookbook_01_routes_with_the_default_router_and_its_flags(kernel_env):
    if not _default_router_available():
        pytest.skip("the embedded default router (shared/tryage/default/router) is not in this checkout yet")
    nb, state = run_notebook("01_quickstart", kernel_env, probe=(
        "{'experts': list(router.experts), 'smallest': smallest, "
        "'sizes': {e.name: e.parameters for e in router.library}, "
        "'flagged': router.route(prompt + ' [Flag: smallest model]').expert, "
        "'largest': router.route(prompt + ' [Flag: largest model]').expert, "
        "'cleaned': router.route(prompt + ' [Flag: smallest model]').prompt, 'prompt': prompt, "
        "'lease': decision.expert, 'lease_totals': {s.expert: s.total for s in decision.scores}, "
        "'sweep': [r[1] for r in sweep], 'batch': [d.expert for d in decisions], 'n_samples': len(samples)}"))
    assert_no_errors(nb)
    sizes = state["sizes"]
    assert state["flagged"] == state["smallest"] == min(sizes, key=sizes.get)
    assert sizes[state["largest"]] == max(sizes.values())
    assert state["cleaned"] == state["prompt"]  # the flag never reaches the expert
    totals = state["lease_totals"]
    assert state["lease"] == min(totals, key=totals.get)  # the decision is the lowest total, as shown
    assert sizes[state["lease"]] == max(sizes.values())  # no flag: a full-size expert, not a tiny one
    text = text_of(nb)
    assert f"expert : {state['lease']}" in text and f"->  {state['lease']}" in text
    assert "FlagError: unknown flag" in text and "UnknownConstraintError" in text
    assert len(state["batch"]) == state["n_samples"] == 8
    # As the size weight grows the choice only moves to smaller models, ending at the smallest.
    chosen_sizes = [sizes[name] for name in state["sweep"]]
    assert chosen_sizes == sorted(chosen_sizes, reverse=True) and chosen_sizes[-1] == min(sizes.values())


# -- 03 ----------------------------------------------------------------------------------------------
def test_cookbook_03_langchain_chain_agent_and_stream_show_the_expert(kernel_env):
    nb, state = run_notebook("03_langchain_agent_pipeline", kernel_env, probe=(
        "{'answered_by': answered_by, 'routes': [r.outputs['expert'] for r in routes], "
        "'tool': [m.content for m in state['messages'] if m.type == 'tool'], "
        "'stream_expert': chunks[0].response_metadata['tryage_expert'], 'n_chunks': len(chunks), "
        "'streamed': ''.join(c.content for c in chunks), "
        "'chain': [chain.invoke({'question': q}) for q in ('How do I merge two dicts in Python?', "
        "'Is a non-compete clause valid in my contract?', "
        "'Is a non-compete clause valid in my contract? [Flag: smallest model]')], 'table': table}"))
    assert_no_errors(nb)
    assert [c.split("]")[0] for c in state["chain"]] == ["[code model", "[legal model", "[general model"]
    assert state["tool"] == ["84"]
    assert state["routes"] == [state["answered_by"]] * 2  # both agent steps routed, to the same expert
    assert state["stream_expert"] == "code" and state["n_chunks"] > 3
    assert state["streamed"].startswith("Use sorted(")
    text = text_of(nb)
    assert "TryageRoute (chain)  tags=['tryage:route']  -> chose 'code'" in text
    assert "tags=['tryage:expert=code']" in text
    table = state["table"]  # section 5: context and sticky threads, one column per setting
    assert table["last turn only"][1] != "legal" and table["with context"][1] == "legal"
    assert table["with context"][3] != "legal"
    assert table["context + sticky"] == ["legal (new)", "legal (kept)", "legal (kept)", "legal (kept)",
                                         "code (switched)"]


# -- 04 ----------------------------------------------------------------------------------------------
def test_cookbook_04_llamaindex_selector_routes_held_out_questions(kernel_env):
    nb, state = run_notebook("04_llamaindex_rag_router", kernel_env, probe=(
        "{'correct': correct, 'n': len(HELD_OUT), 'first': result.experts, 'reason': result.reason, "
        "'pinned': engine.query(question + ' [Flag: expert handbook]').metadata['selector_result'].experts, "
        "'received': engine.query(question + ' [Flag: expert handbook]').metadata['selector_result'].decision.prompt, "
        "'question': question, 'both': answer.metadata['selector_result'].experts}"))
    assert_no_errors(nb)
    assert len(state["first"]) == 1 and state["reason"].startswith(f"chose {state['first'][0]!r}")
    assert state["correct"]["TryageSelector"] >= state["n"] - 2
    assert set(state["correct"]) == {"TryageSelector", "EmbeddingSingleSelector"}
    assert state["pinned"] == ["handbook"] and state["received"] == state["question"]
    assert len(state["both"]) == 2
    assert "TryageSelector           " in text_of(nb)


# -- 05 ----------------------------------------------------------------------------------------------
def test_cookbook_05_builds_a_library_from_the_recorded_hub(kernel_env):
    pytest.importorskip("huggingface_hub")
    # kernel_env sets HF_HUB_OFFLINE=1, as a user offline would: the local recorded Hub still works.
    nb, state = run_notebook("05_experts_from_the_hub", kernel_env, probe=(
        "{'sizes': {e.name: e.parameters for e in library}, "
        "'smallest': router.route(prompt + ' [Flag: smallest model]').expert, "
        "'recent_modified': by_modified.route(prompt + ' [Flag: most recent]').expert, "
        "'recent_text': text_router.route('x [Flag: most recent]').expert, "
        "'gguf': generators['tryage-fixtures/gguf-only'].parameters, 'offline_same': offline == library}"))
    assert_no_errors(nb)
    assert state["sizes"]["distilbert/distilbert-base-uncased"] == 66_985_530
    assert state["sizes"]["microsoft/codebert-base"] == 124_645_632  # counted from config.json
    assert state["smallest"] == "distilbert/distilbert-base-uncased"
    assert state["recent_modified"] == "distilbert/distilbert-base-uncased"
    assert state["recent_text"] == "HuggingFaceTB/SmolLM2-135M"
    assert state["gguf"] == 1_100_000_000
    assert state["offline_same"] is True
    text = text_of(nb)
    assert "MissingMetadataError: constraint 'size' needs 'parameters'" in text
    assert "excluded: licence unknown" in text


# -- 06 ----------------------------------------------------------------------------------------------
def test_cookbook_06_reads_the_paper_results_or_says_how_to_make_them(kernel_env):
    nb, state = run_notebook("06_the_paper_reproduced", kernel_env, probe="{'has': results is not None}")
    assert_no_errors(nb)
    text = text_of(nb)
    results_file = REPO / "benchmarks" / "results" / "paper_domains.json"
    assert state["has"] == results_file.exists()
    if not results_file.exists():
        assert "is not there yet" in text and "domain_experiment.py --export-default" in text
        return
    results = json.loads(results_file.read_text())
    assert f"select-best accuracy: {results['select_best_accuracy']:.1%}" in text
    figures = [REPO / path for path in results["figures"].values()]
    assert figures and all(path.exists() for path in figures)  # the notebook's Markdown shows them
    markdown = "".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert all(f"../{path.relative_to(REPO)}" in markdown for path in figures)


# -- 07 ----------------------------------------------------------------------------------------------
def test_cookbook_07_collects_trains_and_routes_on_the_local_server(kernel_env):
    pytest.importorskip("langchain_openai", reason="07 drives ChatOpenAI (extra 'collect')")
    nb, state = run_notebook("07_collect_train_route", kernel_env, probe=(
        "{'calls': len(plan.calls), 'made': result.made, 'cached': result.cached, 'rows': len(result.qtable), "
        "'flaky_requests': flaky_requests, 'judge_calls': judge_calls, 'judge_spent': judged.judge_spent, "
        "'judge_agrees': bool((judged.qtable.scores == result.qtable.scores).all()), 'again': again.judge_spent, "
        "'cheap': [router.route(q, weights={'cost': 0.5}).expert for q in questions], "
        "'plain': [router.route(q).expert for q in questions]}"))
    assert_no_errors(nb)
    assert state["calls"] == 120 and state["rows"] == 40
    assert state["made"] + state["cached"] == 120 and state["cached"] >= 1  # the budget-stopped run's calls were kept
    assert state["flaky_requests"] == 80  # one 429 and one retry per prompt, nothing repeated
    # the judge grades 120 answers with one call per distinct answer, within its budget, and never twice
    assert 0 < state["judge_calls"] < 120 and 0 < state["judge_spent"] <= 0.05 and state["again"] == 0
    assert state["judge_agrees"]
    assert state["cheap"] == ["flaky", "sloppy", "flaky", "sloppy"]
    assert state["plain"][1] in ("sloppy", "flaky") and state["plain"][0] in ("good", "flaky")
    text = text_of(nb)
    assert "budget reached: spent $" in text and "-> flaky   The answer is 44." in text


# -- 08 ----------------------------------------------------------------------------------------------
def test_cookbook_08_feedback_from_a_chain_updates_the_router(kernel_env):
    nb, state = run_notebook("08_feedback_loop", kernel_env, probe=(
        "{'ids': list(thumbs), 'logged': list(decision_log), 'rows': rows, 'experts': list(router.experts), "
        "'before': sum(before[q] == wanted[q] for q in wanted), 'after': sum(after[q] == wanted[q] for q in wanted), "
        "'n': len(wanted), 'kept': training_kept, 'n_training': sum(map(len, TRAINING.values()))}"))
    assert_no_errors(nb)
    assert len(set(state["ids"])) == state["n"] and set(state["ids"]) <= set(state["logged"])  # one id per answer
    assert len(state["rows"]) == state["n"]
    assert all(set(r) == {"prompt", "expert", "score"} and r["expert"] in state["experts"]
               and r["score"] in (0.0, 1.0) for r in state["rows"])
    assert any(r["score"] == 0.0 for r in state["rows"])  # there was something to learn
    assert state["after"] > state["before"]  # the thumbs moved the rated questions to the right expert
    assert state["kept"] == state["n_training"]  # without forgetting the training questions
    assert "rated questions on the right expert" in text_of(nb)


# -- 09 ----------------------------------------------------------------------------------------------
def test_cookbook_09_serves_clients_learns_and_counts(kernel_env):
    for module in ("fastapi", "uvicorn", "prometheus_client", "openai", "langchain_openai"):
        pytest.importorskip(module, reason="09 runs tryage serve (extra 'serve') and its clients")
    nb, state = run_notebook("09_serve", kernel_env, probe=(
        "{'expert': expert, 'names': list(names), 'streamed': streamed, 'agent': agent_answer, 'before': before, "
        "'after': after, 'metrics': shown, 'exit': exit_code}"))
    assert_no_errors(nb)
    expert = state["expert"]
    assert expert in state["names"] and state["streamed"].endswith("says: Write a haiku about rivers")
    assert state["agent"] == "tool said: 4"
    assert state["after"][expert] > state["before"][expert]  # told it answered badly: expected to do worse
    assert any(line.startswith(f'tryage_spend_usd_total{{expert="{expert}"}}') for line in state["metrics"])
    assert state["exit"] == 0
    assert f"expert: {expert}" in text_of(nb)
