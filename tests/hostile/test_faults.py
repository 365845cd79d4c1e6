"""Faults: a save killed with SIGKILL, a full disk, a failing and a hanging expert. Nothing lost or half-written.

Resuming ``tryage collect`` after SIGKILL is tested in tests/collect/test_cli_collect.py
(``test_killed_collection_resumes_with_no_call_lost_or_repeated``) and ``measure`` after a torn last line
in tests/test_measure.py; they are not repeated here (``measure`` killed between batches is).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tryage.errors import OutputWriteError, TargetExistsError

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "shared")]), "OMP_NUM_THREADS": "1"}

# A router folder whose config and weights carry the same generation number: a mix of two saves shows.
SAVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from tryage.encoders import EncoderSpec
    from tryage.experts import ExpertLibrary
    from tryage.predictors import _persistence as p

    def save(folder, generation, **kw):
        config = p.PerceptiveConfig(experts=("a", "b"), mode="head", objective="mse",
                                    encoder=EncoderSpec("path", "/nowhere", 16, False, "last"), input_dim=4,
                                    hidden_dim=8, dropout=0.0, target_mean=(0.0, 0.0), target_std=(1.0, 1.0),
                                    training={"generation": generation})
        state = {"w": torch.full((256, 256), float(generation))}
        return p.save_folder(folder, config, state, ExpertLibrary.from_names(["a", "b"]), **kw)

    if __name__ == "__main__":
        folder, mode = sys.argv[1], sys.argv[2]
        if mode == "block-in-staging":  # stop for good while the new weights are being written
            import safetensors.torch as st
            real = st.save_file
            def slow(state, path, metadata=None):
                real(state, path, metadata=metadata)
                print("writing", flush=True)
                time.sleep(600)
            st.save_file = slow
        elif mode == "block-between-renames":  # the swap of a file system without RENAME_EXCHANGE
            import os
            p._exchange = lambda a, b: False
            real_rename = os.rename
            def rename(src, dst):
                real_rename(src, dst)
                if str(dst).endswith(p._BACKUP):
                    print("swapping", flush=True)
                    time.sleep(600)
            p.os.rename = rename
        generation = 2
        while True:
            save(folder, generation)
            print("saved", generation, flush=True)
            generation += 1
""")


def saver(tmp_path: Path) -> Path:
    script = tmp_path / "saver.py"
    script.write_text(SAVER, encoding="utf-8")
    return script


def generation_of(folder: Path) -> int:
    """The generation of a whole router folder; fails on a half-written or mixed one."""
    from tryage.predictors._persistence import read_folder

    config, state, library = read_folder(folder)
    generation = config.training["generation"]
    assert bool((state["w"] == float(generation)).all()), "weights of one save, config of another"
    assert library.names == ("a", "b")
    return generation


def first_save(tmp_path: Path) -> Path:
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        module = importlib.import_module("saver")
        module = importlib.reload(module)
        folder = tmp_path / "router"
        module.save(folder, 1)
        return folder
    finally:
        sys.path.remove(str(tmp_path))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@pytest.mark.parametrize("mode", ["block-in-staging", "block-between-renames"])
def test_sigkill_during_save_leaves_the_old_router_and_the_next_save_cleans_up(tmp_path: Path, mode: str) -> None:
    saver(tmp_path)
    folder = first_save(tmp_path)
    process = subprocess.Popen([sys.executable, str(tmp_path / "saver.py"), str(folder), mode], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() in ("writing", "swapping"), (line, process.stderr.read())  # type: ignore[union-attr]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert leftovers(folder), "the kill came after the save, not during it"
    assert generation_of(folder) == 1  # the old router, whole (restored from its backup if it was swapped out)
    sys.path.insert(0, str(tmp_path))
    try:
        import saver as module  # noqa: PLC0415

        module.save(folder, 7)
    finally:
        sys.path.remove(str(tmp_path))
    assert generation_of(folder) == 7
    assert leftovers(folder) == []


def test_sigkill_at_random_moments_of_repeated_saves_never_leaves_a_broken_router(tmp_path: Path) -> None:
    saver(tmp_path)
    folder = first_save(tmp_path)
    for delay in (0.05, 0.3, 0.9):
        process = subprocess.Popen([sys.executable, str(tmp_path / "saver.py"), str(folder), "loop"], env=ENV,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        process.stdout.readline()  # type: ignore[union-attr]  # one save done: the loop is running
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert generation_of(folder) >= 1  # an old or a new router, always whole
    staging = [n for n in leftovers(folder) if ".tryage-staging-" in n]
    assert len(staging) <= 1  # at most the one the last kill interrupted, removed by the next save


# -- refusing to destroy a user's files ----------------------------------------------------------

@pytest.mark.parametrize("kind", ["file", "folder with files"])
def test_save_refuses_a_target_that_is_not_a_router_unless_overwrite(tmp_path: Path, kind: str) -> None:
    saver(tmp_path)
    folder = first_save(tmp_path)
    target = tmp_path / "mine"
    if kind == "file":
        target.write_text("precious", encoding="utf-8")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("precious", encoding="utf-8")
    from tryage.predictors._persistence import read_folder, save_folder

    config, state, library = read_folder(folder)
    with pytest.raises(TargetExistsError, match=f"refusing to save a router to {target}") as info:
        save_folder(target, config, state, library)
    assert isinstance(info.value, FileExistsError)
    assert (target.read_text() if kind == "file" else (target / "notes.txt").read_text()) == "precious"
    save_folder(target, config, state, library, overwrite=True)
    assert generation_of(target) == 1 and leftovers(target) == []


# -- a full disk ---------------------------------------------------------------------------------

def enospc_after(monkeypatch: pytest.MonkeyPatch, module: object, name_part: str, keep: int = 7) -> None:
    """Make ``os.write`` on files whose name holds ``name_part`` write ``keep`` bytes, then fail with ENOSPC."""
    real = os.write

    def write(fd: int, data: bytes) -> int:
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if name_part in name:
            real(fd, bytes(data[:keep]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(module.os, "write", write)  # type: ignore[attr-defined]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell files apart")
def test_full_disk_while_writing_a_qtable_leaves_the_old_table_and_names_it(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import tryage._io
    from tryage import QTable

    path = tmp_path / "q.jsonl"
    old = QTable.from_records([{"prompt": "x", "losses": {"a": 1.0}}])
    old.to_jsonl(path)
    before = path.read_bytes()
    enospc_after(monkeypatch, tryage._io, "q.jsonl")
    new = QTable.from_records([{"prompt": f"y{i}", "losses": {"a": 0.5}} for i in range(50)])
    with pytest.raises(OutputWriteError, match=f"cannot write {path}: No space left on device") as info:
        new.to_jsonl(path)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["q.jsonl"]  # no temp file left


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell files apart")
def test_full_disk_while_appending_to_the_call_log_keeps_whole_lines(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("filelock")
    from tryage.collect import calllog

    path = tmp_path / "q.calls.jsonl"
    with calllog.CallLog(path) as log:
        log.append(calllog.CallRecord("p1", "a", "s", answer="4"))
    with calllog.CallLog(path) as log, monkeypatch.context() as patch:
        enospc_after(patch, calllog, "q.calls.jsonl")
        with pytest.raises(OutputWriteError, match=f"cannot append to the call log {path}: No space left"):
            log.append(calllog.CallRecord("p2", "a", "s", answer="5" * 100))
    assert path.read_text(encoding="utf-8").endswith("}\n")
    assert [r.prompt_id for r in calllog.CallLog(path).records()] == ["p1"]
    with calllog.CallLog(path) as log:  # the disk has room again: the log goes on
        log.append(calllog.CallRecord("p2", "a", "s", answer="5"))
    assert [r.prompt_id for r in calllog.CallLog(path).records()] == ["p1", "p2"]


def test_full_disk_while_saving_a_router_keeps_the_old_one_and_names_the_target(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch as st

    saver(tmp_path)
    folder = first_save(tmp_path)
    from tryage.predictors._persistence import read_folder, save_folder

    config, state, library = read_folder(folder)

    def full(tensors, path, metadata=None):  # noqa: ANN001, ANN202
        Path(path).write_bytes(b"\0" * 10)  # a few bytes made it before the disk filled
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(st, "save_file", full)
    with pytest.raises(OutputWriteError, match=f"cannot save the router to {folder}: .*No space left") as info:
        save_folder(folder, config, state, library)
    assert info.value.errno == errno.ENOSPC
    assert generation_of(folder) == 1 and leftovers(folder) == []


# -- a failing and a hanging expert --------------------------------------------------------------

def test_chat_tryage_falls_back_from_a_failing_and_a_hanging_expert_within_the_timeout(router) -> None:  # noqa: ANN001
    pytest.importorskip("langchain_core")
    import asyncio

    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from langchain_tryage import ChatTryage

    class Failing(GenericFakeChatModel):
        def _generate(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise ConnectionError("expert a is down")

        async def _agenerate(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise ConnectionError("expert a is down")

    class Hanging(GenericFakeChatModel):
        """Never answers; gives up after the ``timeout`` it is sent, as provider clients do."""

        def _generate(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            time.sleep(kwargs.get("timeout") or 3600)
            raise TimeoutError("expert b did not answer")

        async def _agenerate(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            await asyncio.sleep(kwargs.get("timeout") or 3600)
            raise TimeoutError("expert b did not answer")

    experts = {"a": Failing(messages=iter([])), "b": Hanging(messages=iter([])),
               "c": GenericFakeChatModel(messages=iter([AIMessage("c answers")] * 4))}
    model = ChatTryage(router=router, experts=experts, fallback=True, timeout=0.5)

    async def call() -> AIMessage:
        return await asyncio.wait_for(model.ainvoke("hello"), timeout=30)

    reply = asyncio.run(call())
    assert reply.content == "c answers"
    assert reply.response_metadata["tryage_expert"] == "c"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_chat_tryage_gives_up_an_expert_that_ignores_its_timeout(router, mode: str) -> None:  # noqa: ANN001
    pytest.importorskip("langchain_core")
    import asyncio

    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from langchain_tryage import ChatTryage

    class Stubborn(GenericFakeChatModel):
        """Ignores the timeout it is sent: only ChatTryage's own limit can end the call."""

        def _generate(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            time.sleep(3600)

        async def _agenerate(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            await asyncio.sleep(3600)

    answering = GenericFakeChatModel(messages=iter([AIMessage("c answers")] * 4))
    experts = {"a": Stubborn(messages=iter([])), "b": Stubborn(messages=iter([])), "c": answering}
    model = ChatTryage(router=router, experts=experts, fallback=True, timeout=0.2)
    if mode == "invoke":
        reply = model.invoke("hello")
    else:
        reply = asyncio.run(asyncio.wait_for(model.ainvoke("hello"), timeout=30))
    assert reply.content == "c answers" and reply.response_metadata["tryage_expert"] == "c"
    assert reply.response_metadata["tryage_fallback_from"] == ["a", "b"]  # a was chosen; both gave up on time

    alone = ChatTryage(router=router, experts={"a": Stubborn(messages=iter([])), "b": Stubborn(messages=iter([])),
                                               "c": Stubborn(messages=iter([]))}, fallback=False, timeout=0.2)
    with pytest.raises(TimeoutError, match=r"did not answer within 1.2 s"):
        alone.invoke("hello") if mode == "invoke" else asyncio.run(alone.ainvoke("hello"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_chat_tryage_streams_are_held_to_the_timeout_chunk_by_chunk(router, mode: str) -> None:  # noqa: ANN001
    pytest.importorskip("langchain_core")
    import asyncio

    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.outputs import ChatGenerationChunk

    from langchain_tryage import ChatTryage

    class Stalling(GenericFakeChatModel):
        """Streams ``sent`` chunks, then nothing: only ChatTryage's own limit can end the stream."""

        sent: int = 0

        def _stream(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            for i in range(self.sent):
                yield ChatGenerationChunk(message=AIMessageChunk(content=f"part{i} "))
            time.sleep(3600)

        async def _astream(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            for i in range(self.sent):
                yield ChatGenerationChunk(message=AIMessageChunk(content=f"part{i} "))
            await asyncio.sleep(3600)

    def read(model: ChatTryage) -> tuple[list[str], BaseException | None]:
        got: list[str] = []

        async def areader() -> None:
            async for chunk in model.astream("hello"):
                got.append(chunk.content)
        try:
            if mode == "stream":
                for chunk in model.stream("hello"):
                    got.append(chunk.content)
            else:
                asyncio.run(asyncio.wait_for(areader(), timeout=60))
        except TimeoutError as exc:
            return got, exc
        return got, None

    answering = GenericFakeChatModel(messages=iter([AIMessage("c answers")] * 4))
    # a and b stall before their first chunk: each is given up on time and the next one streams
    model = ChatTryage(router=router, experts={"a": Stalling(messages=iter([])), "b": Stalling(messages=iter([])),
                                               "c": answering}, fallback=True, timeout=0.2)
    started = time.monotonic()
    got, error = read(model)
    assert error is None and "".join(got) == "c answers"
    assert time.monotonic() - started < 10
    # a stream that stalls after its first chunks: the reader keeps them, then gets a TimeoutError
    model = ChatTryage(router=router, experts={n: Stalling(messages=iter([]), sent=2) for n in "abc"},
                       fallback=True, timeout=0.2)
    got, error = read(model)
    assert got == ["part0 ", "part1 "]
    assert isinstance(error, TimeoutError) and "sent nothing for 1.2 s" in str(error) and "expert 'a'" in str(error)


# -- measure killed mid-run ----------------------------------------------------------------------

MEASURER = textwrap.dedent("""
    import sys, time
    from paper_fixtures import passages
    from tryage.measure import LossRecorder, measure_losses

    real = LossRecorder.append
    def slow(self, rows, **kw):  # a slow expert: the kill lands between batches
        written = real(self, rows, **kw)
        time.sleep(0.3)
        return written
    LossRecorder.append = slow
    measure_losses(sys.argv[1], passages(), sys.argv[2], name="gpt", dtype="float32", batch_size=1, progress=False)
""")


def test_measure_killed_with_sigkill_resumes_to_the_same_rows_without_duplicates(tmp_path: Path) -> None:
    from paper_fixtures import passages, tiny_causal_lm

    from tryage.measure import LossRecorder, measure_losses

    gpt = tiny_causal_lm(tmp_path / "gpt")
    script = tmp_path / "measurer.py"
    script.write_text(MEASURER, encoding="utf-8")
    killed, whole = tmp_path / "killed.jsonl", tmp_path / "whole.jsonl"
    env = {**ENV, "PYTHONPATH": os.pathsep.join([ENV["PYTHONPATH"], str(REPO / "tests")])}
    process = subprocess.Popen([sys.executable, str(script), str(gpt), str(killed)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and process.poll() is None:
            if killed.exists() and len(killed.read_bytes().splitlines()) >= 2:
                break
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    sample = passages()
    before = len(LossRecorder(killed).rows())
    assert 2 <= before < len(sample)
    assert measure_losses(gpt, sample, killed, name="gpt", dtype="float32", batch_size=1, progress=False) \
        == len(sample) - before
    measure_losses(gpt, sample, whole, name="gpt", dtype="float32", batch_size=1, progress=False)
    got = {r["id"]: r["loss"] for r in LossRecorder(killed).rows()}
    assert len(LossRecorder(killed).rows()) == len(got) == len(sample)  # each passage once
    assert got == pytest.approx({r["id"]: r["loss"] for r in LossRecorder(whole).rows()}, rel=1e-5)


def test_any_folder_of_user_files_is_refused_and_left_byte_for_byte(tmp_path: Path) -> None:
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    from tryage.predictors._persistence import read_folder, save_folder

    saver(tmp_path)
    config, state, library = read_folder(first_save(tmp_path))
    names = st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=20).filter(
        lambda n: n not in (".", ".."))

    @hypothesis.settings(max_examples=40, deadline=None, database=None)
    @hypothesis.given(files=st.dictionaries(names, st.binary(max_size=64), min_size=1, max_size=4))
    def check(files: dict[str, bytes]) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
            target = Path(scratch) / "out"
            target.mkdir()
            for name, data in files.items():
                (target / name).write_bytes(data)
            with pytest.raises(TargetExistsError, match="not a saved Tryage router"):
                save_folder(target, config, state, library)
            assert {p.name: p.read_bytes() for p in target.iterdir()} == files
            assert sorted(p.name for p in Path(scratch).iterdir()) == ["out"]

    check()


def test_chat_tryage_keeps_an_experts_own_timeout_error() -> None:
    """Only ChatTryage's own limit is told as 'did not answer within': the expert client's message stays."""
    import asyncio

    from langchain_tryage._timeouts import awithin as _awithin

    async def own() -> None:
        raise TimeoutError("the expert's client timed out after 30 s")

    with pytest.raises(TimeoutError, match="the expert's client timed out after 30 s"):
        asyncio.run(_awithin(5.0, "a", own()))
