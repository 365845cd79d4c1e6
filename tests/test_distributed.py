"""tryage.scale.distributed on a real local Ray instance with 2 CPUs: same rows, lost workers, killed drivers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'tryage[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'tryage[ray]')")

from paper_fixtures import passages, tiny_causal_lm  # noqa: E402
from tryage.scale.distributed import MeasureWorker, PoolSpec, measure_pools, run_pools  # noqa: E402
from tryage.measure import LossRecorder, Passage, measure_losses  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> str:
    """One local Ray instance for the module; returns its address so subprocesses can join it."""
    # Ray runs workers at niceness 15 by default; on a busy CI machine they would starve behind the driver.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("gpt"))


def corpus(copies: int) -> list[Passage]:
    """The 18 fixture passages, repeated with distinct ids."""
    return [Passage(f"{p.id}#{c}", p.text, p.domain, p.split) for c in range(copies) for p in passages()]


def local_rows(gpt: Path, sample: list[Passage], folder: Path) -> list[dict]:
    out = folder / "local.jsonl"
    measure_losses(gpt, sample, out, name="gpt", dtype="float32", batch_size=4, progress=False)
    return LossRecorder(out).rows()


def assert_same_rows(got: list[dict], expected: list[dict]) -> None:
    assert [(r["id"], r["expert"]) for r in got] == [(r["id"], r["expert"]) for r in expected]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in expected], rel=1e-5)
    assert [(r["tokens"], r["domain"], r["split"], r["task"]) for r in got] == \
        [(r["tokens"], r["domain"], r["split"], r["task"]) for r in expected]


def test_measure_ray_backend_writes_the_local_rows(cluster: str, gpt: Path, tmp_path: Path) -> None:
    sample = corpus(2)
    out = tmp_path / "ray.jsonl"
    written = measure_pools({"gpt": gpt}, sample, out, dtype="float32", batch_size=4, progress=False, workers=2)
    assert written == len(sample)
    assert_same_rows(LossRecorder(out).rows(), local_rows(gpt, sample, tmp_path))
    # resume: nothing left to do, nothing appended
    assert measure_pools({"gpt": gpt}, sample, out, dtype="float32", progress=False) == 0
    assert len(LossRecorder(out).rows()) == len(sample)


def test_measure_ray_resumes_a_local_partial_run(cluster: str, gpt: Path, tmp_path: Path) -> None:
    sample = corpus(1)
    out = tmp_path / "rows.jsonl"
    measure_losses(gpt, sample[:7], out, name="gpt", dtype="float32", batch_size=4, progress=False)
    with out.open("a", encoding="utf-8") as handle:  # the local run died mid-line
        handle.write('{"id": "legal-1#0", "exp')
    written = measure_pools({"gpt": gpt}, sample, out, dtype="float32", batch_size=4, progress=False)
    assert written == len(sample) - 7
    rows = LossRecorder(out).rows()
    assert sorted(r["id"] for r in rows) == sorted(p.id for p in sample)
    expected = {r["id"]: r["loss"] for r in local_rows(gpt, sample, tmp_path)}
    assert [r["loss"] for r in rows] == pytest.approx([expected[r["id"]] for r in rows], rel=1e-5)


def _pool_actor_pids() -> list[int]:
    """Processes of this test's Ray instance running a measuring actor (children of this process)."""
    import psutil

    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "_PoolActor" in " ".join(proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


class KillingRecorder(LossRecorder):
    """A rows file whose first append SIGKILLs the (only) measuring actor: a worker lost mid-run."""

    killed: list[int]
    rows_at_kill: int

    def append(self, rows):  # noqa: ANN001, ANN201
        if not hasattr(self, "killed"):
            self.killed = _pool_actor_pids()
            for pid in self.killed:
                os.kill(pid, signal.SIGKILL)
            self.rows_at_kill = len(self.rows())
        return super().append(rows)


def test_killed_worker_loses_and_duplicates_no_row(cluster: str, gpt: Path, tmp_path: Path) -> None:
    sample = corpus(12)  # 216 passages in 108 batches: most are still to do when the first batch lands
    items = [{"id": p.id, "text": p.text, "domain": p.domain, "split": p.split} for p in sample]
    kwargs = {"model": str(gpt), "name": "gpt", "task": "causal", "gguf_file": None, "dtype": "float32",
              "max_length": 128, "seed": 0, "mask_fraction": 0.15}
    recorder = KillingRecorder(tmp_path / "rows.jsonl")
    written = run_pools([PoolSpec("gpt", items, MeasureWorker, kwargs, size=1, batch_size=2)], recorder,
                        progress=False)
    assert len(recorder.killed) == 1 and recorder.rows_at_kill < len(sample)  # killed mid-run
    assert written == len(sample)
    assert_same_rows(recorder.rows(), local_rows(gpt, sample, tmp_path))


def test_resume_after_killing_the_driver_gives_the_same_rows(cluster: str, gpt: Path, tmp_path: Path) -> None:
    sample = corpus(40)  # 720 passages, batch size 1: the driver is killed long before the end
    source = tmp_path / "passages.jsonl"
    source.write_text("".join(json.dumps({"id": p.id, "text": p.text, "domain": p.domain, "split": p.split}) + "\n"
                              for p in sample))
    out = tmp_path / "rows.jsonl"
    path = [str(REPO), str(REPO / "shared"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    driver = subprocess.Popen([sys.executable, "-m", "tryage.cli", "measure", "--passages", str(source),
                               "--model", f"gpt={gpt}", "--out", str(out), "--dtype", "float32", "--batch-size", "1",
                               "--ray", "--address", cluster, "--json"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and driver.poll() is None and len(LossRecorder(out).rows()) < 5:
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    partial = LossRecorder(out).rows()
    assert 5 <= len(partial) < len(sample), "the driver should die mid-run"
    written = measure_pools({"gpt": gpt}, sample, out, dtype="float32", batch_size=4, progress=False)
    assert written == len(sample) - len(partial)
    rows = LossRecorder(out).rows()
    assert sorted(r["id"] for r in rows) == sorted(p.id for p in sample)  # none lost, none twice
    expected = {r["id"]: r["loss"] for r in local_rows(gpt, sample, tmp_path)}
    assert [r["loss"] for r in rows] == pytest.approx([expected[r["id"]] for r in rows], rel=1e-5)


def test_route_dataset_decides_as_route_batch(cluster: str, tiny_encoder: Path, domain_qtable_path: Path,
                                              small_library_path: Path) -> None:
    from tryage import ExpertLibrary, QTable, TryageRouter
    from tryage.scale.distributed import iter_decisions, route_dataset
    from tryage.predictors import PerceptivePredictor

    table = QTable.from_file(domain_qtable_path)
    predictor = PerceptivePredictor(tiny_encoder, epochs=30, progress=False).fit(table)
    router = TryageRouter(predictor, ExpertLibrary.from_json(small_library_path), weights={"cost": 0.1})
    prompts = list(table.prompts) + ["def code [Flag: smallest]", "court of law [Flag: smallest]"]
    ds = ray.data.from_items([{"prompt": p, "id": i} for i, p in enumerate(prompts)])
    got = list(iter_decisions(route_dataset(router, ds, weights={"size": 0.2}, workers=2, batch_size=8)))
    expected = [d.to_dict() for d in router.route_batch(prompts, weights={"size": 0.2})]
    assert got[-1]["flags"] and got[-1]["expert"] == "coder"  # the flag and the router's own weights travelled
    assert [g["expert"] for g in got] == [e["expert"] for e in expected]
    assert [g["prompt"] for g in got] == [e["prompt"] for e in expected]
    assert [s["predicted_loss"] for g in got for s in g["scores"]] == pytest.approx(
        [s["predicted_loss"] for e in expected for s in e["scores"]], abs=1e-5)


def test_fit_router_on_ray_saves_the_local_artefact(cluster: str, tiny_encoder: Path, domain_qtable_path: Path,
                                                    tmp_path: Path) -> None:
    from tryage import QTable
    from tryage.scale.distributed import embed_dataset, fit_router
    from tryage.predictors import PerceptivePredictor

    table = QTable.from_file(domain_qtable_path)
    local = PerceptivePredictor(tiny_encoder, epochs=20, progress=False)
    assert np.allclose(embed_dataset(local, table.prompts, workers=2, batch_size=8), local.encode(table.prompts),
                       atol=1e-5)
    local.fit(table)
    dataset = ray.data.from_items([{"prompt": p, "losses": dict(zip(table.experts, map(float, row)))}
                                   for p, row in zip(table.prompts, table.losses)])
    on_ray = fit_router(PerceptivePredictor(tiny_encoder, epochs=20, progress=False), dataset, workers=2)
    a, b = local.save_pretrained(tmp_path / "local"), on_ray.save_pretrained(tmp_path / "ray")
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    reloaded = PerceptivePredictor.from_pretrained(b)
    assert np.allclose(reloaded.predict_losses(table.prompts), local.predict_losses(table.prompts), atol=1e-4)


def test_cli_train_on_ray_saves_the_local_router(cluster: str, tiny_encoder: Path, domain_qtable_path: Path,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tryage.cli import main
    from tryage.predictors import PerceptivePredictor

    common = ["train", "--qtable", str(domain_qtable_path), "--encoder", str(tiny_encoder), "--epochs", "20", "--json"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "ray"), "--ray", "--workers", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "ray"
    local, on_ray = (PerceptivePredictor.from_pretrained(tmp_path / name) for name in ("local", "ray"))
    prompts = ["Write a Python function to sort a list", "What is the capital of France?"]
    assert np.allclose(on_ray.predict_losses(prompts), local.predict_losses(prompts), atol=1e-4)
    # fine-tuning re-encodes every step: it trains where the command runs
    assert main([*common, "--out", str(tmp_path / "ft"), "--ray", "--mode", "finetune"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tryage: error: --ray encodes the prompts on a Ray actor pool for --mode head") and "\n" not in err
    assert not (tmp_path / "ft").exists()


def test_cli_route_input_on_ray_matches_local(cluster: str, tmp_path: Path) -> None:
    from tryage.cli import main

    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(
        ["Write a Python function to sort a list", "What is the capital of France?",
         "Summarise this contract clause [Flag: smallest]", "Explain the protein folding problem"] * 3)))
    assert main(["route", "--input", str(source), "--out", str(tmp_path / "local.jsonl")]) == 0
    assert main(["route", "--input", str(source), "--out", str(tmp_path / "ray.jsonl"), "--ray",
                 "--workers", "2"]) == 0
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    on_ray = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert [r["id"] for r in on_ray] == [f"q{i}" for i in range(12)]
    assert [r["expert"] for r in on_ray] == [r["expert"] for r in local]


def test_cli_ray_options_without_ray_are_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tryage.cli import main

    assert main(["measure", "--passages", "p.jsonl", "--model", "m", "--out", "o.jsonl", "--workers", "2"]) == 2
    assert capsys.readouterr().err.strip() == "tryage: error: --workers only apply with --ray"


def test_import_of_the_ray_modules_does_not_load_ray() -> None:
    code = ("import sys, tryage, tryage.scale.distributed, tryage.scale.bulk, tryage.cli; tryage.cli.build_parser(); "
            "print([m for m in ('ray', 'pyarrow', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"



def test_async_worker_caps_open_calls_and_paces_starts() -> None:
    import asyncio

    from tryage.scale.distributed import AsyncWorker

    starts: list[float] = []
    open_calls = [0, 0]  # now, most at once

    class EchoWorker(AsyncWorker):  # stands in for an API client
        async def call(self, item):  # noqa: ANN001, ANN202
            starts.append(time.monotonic())
            open_calls[0] += 1
            open_calls[1] = max(open_calls)
            await asyncio.sleep(0.2)  # long enough that pacing alone would let 10 overlap
            open_calls[0] -= 1
            return {"id": item["id"], "expert": "echo", "answer": item["text"].upper()}

    worker = EchoWorker(max_in_flight=3, requests_per_second=50.0)
    began = time.monotonic()
    rows = worker([{"id": str(i), "text": f"q{i}"} for i in range(10)])
    assert [r["answer"] for r in rows] == [f"Q{i}" for i in range(10)]  # one row per item, in order
    assert open_calls[1] == 3
    # the i-th call starts no earlier than i / rate after the batch began: never faster than the limit
    assert all(start >= began + i / 50.0 - 1e-4 for i, start in enumerate(sorted(starts)))


def test_worker_error_reaches_the_caller_as_the_tryage_error(cluster: str, tiny_encoder: Path,
                                                             domain_qtable_path: Path) -> None:
    from tryage import MissingMetadataError, QTable, TryageRouter
    from tryage.scale.distributed import iter_decisions, route_dataset
    from tryage.predictors import PerceptivePredictor

    router = TryageRouter(PerceptivePredictor(tiny_encoder, epochs=2, progress=False).fit(
        QTable.from_file(domain_qtable_path)))  # names only: no sizes
    with pytest.raises(MissingMetadataError) as local:
        router.route_batch(["def code"], weights={"size": 0.5})
    ds = ray.data.from_items([{"prompt": "def code"}])
    with pytest.raises(MissingMetadataError) as remote:
        list(iter_decisions(route_dataset(router, ds, weights={"size": 0.5})))
    assert str(remote.value).splitlines()[0] == str(local.value)  # Ray appends retry notes below it
