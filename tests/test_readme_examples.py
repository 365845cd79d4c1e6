"""Every ```bash and ```python example of README.md and docs/*.md runs, offline, as a reader would run it.

Each fenced block is one test, run in page order; the blocks of one page share a working folder (a temporary
one, holding copies of ``tests/fixtures/docs/``: the ``train.jsonl``, ``models.json``, ... the README names)
and, for Python, one namespace, as a reader's shell and interpreter would. Running one block alone runs the
page's earlier blocks first.

* ```python blocks are ``exec``'d.
* ```bash blocks: each line is a ``tryage ...`` command, run through the CLI's ``main`` in this process (one
  interpreter, so the bundled encoder loads once), which must exit 0; ``export NAME=VALUE`` sets the
  variable for the page's later blocks; ``printf 'TEXT' | tryage ...`` runs the command with that text
  (``\\n``, ``\\t``, ``\\\\``, ``%%`` expanded as printf does) as its stdin. Optional arguments written as
  ``[--flag value]`` are left out, and ``# ...`` comments are ignored. Any other command (another pipe
  included) is an error: mark the block.
* A block right after ``<!-- file: NAME -->`` (``json``, ``toml``, any language) is written to ``NAME``.
* A block right after ``<!-- not-tested: REASON -->`` is skipped with that reason (``pytest -rs`` lists
  them; the summary counts them). A block in another language (``text``, ``toml``) is shown, not run.
* A block right after ``<!-- expected-to-fail: REASON -->`` is a known broken example: it runs, and must
  fail (reported as xfail); once it runs, the test fails until the marker goes. Later blocks still run.

The pages point their experts at local OpenAI-compatible servers, ``http://127.0.0.1:8080/v1`` (or
8081, 8082); here those addresses are replaced by one small local server from the collect tests
(``tests/collect/openai_server.py``), whose key is ``sk-local`` (the pages export it as
``OPENAI_API_KEY``). Nothing else is changed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "docs"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SERVER_KEY = "sk-local"
LOCAL_URL = re.compile(r"http://127\.0\.0\.1:808[0-9]/v1")
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARK = re.compile(r"<!--\s*(not-tested|expected-to-fail|file)\s*:\s*((?:(?!-->).)*?)\s*-->\s*\Z", re.DOTALL)
_OPTIONAL = re.compile(r"\s\[--[^\]]*\]")  # "[--json]", "[--out my-router-v2]": usage syntax, left out
RUN = ("bash", "sh", "shell", "console", "python", "py")


@dataclass(frozen=True)
class Example:
    """One fenced block of a page."""

    page: Path
    line: int
    lang: str
    code: str
    mark: str | None = None  # "not-tested", "expected-to-fail" or "file"
    value: str = ""  # the reason, or the file name

    @property
    def id(self) -> str:
        page = self.page.relative_to(REPO) if self.page.is_relative_to(REPO) else self.page.name
        return f"{page}:{self.line}"


def examples(page: Path) -> list[Example]:
    """The fenced blocks of ``page`` that run, are skipped, or are written to a file, in order."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        mark = _MARK.search(text[:match.start()])  # only white space between the marker and the fence
        lang = match.group(1).lower()
        kind, value = (mark.group(1), mark.group(2)) if mark else (None, "")
        if lang in RUN or kind is not None:
            found.append(Example(page, text.count("\n", 0, match.start()) + 1, lang, match.group(2), kind, value))
    return found


ALL = [example for page in PAGES for example in examples(page)]


def _params() -> list[Any]:
    params = []
    for example in ALL:
        marks = [pytest.mark.skip(reason=f"not tested: {example.value}")] if example.mark == "not-tested" else []
        params.append(pytest.param(example, id=example.id, marks=marks))
    return params


# -- running ---------------------------------------------------------------------------------------


@dataclass
class PageState:
    """What a reader of one page has built so far: a folder, a Python namespace, exported variables."""

    folder: Path
    namespace: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    failed: str | None = None


def _load_server_class() -> type:
    spec = importlib.util.spec_from_file_location("tryage_docs_openai_server", REPO / "tests" / "collect" / "openai_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OpenAIServer


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with _load_server_class()(api_key=SERVER_KEY) as running:
        yield running


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory, server: Any) -> Iterator[dict[Path, PageState]]:
    states: dict[Path, PageState] = {}
    for page in PAGES:
        folder = tmp_path_factory.mktemp(page.stem.lower())
        for fixture in FIXTURES.iterdir():
            (folder / fixture.name).write_text(_local(fixture.read_text(), server), encoding="utf-8")
        states[page] = PageState(folder)
    yield states


def _local(text: str, server: Any) -> str:
    return LOCAL_URL.sub(server.base_url, text)


def _shell_lines(code: str) -> list[str]:
    lines, current = [], ""
    for raw in code.splitlines():
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    return lines


_PRINTF = re.compile(r"\\(.)|%(.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def _printf(fmt: str, example: Example) -> str:
    """What ``printf FMT`` writes, for the escapes a page uses (``\\n``, ``\\t``, ``\\\\``, ``%%``); others fail."""
    def one(match: re.Match[str]) -> str:
        escape, directive = match.group(1), match.group(2)
        if escape is not None and escape in _ESCAPES:
            return _ESCAPES[escape]
        if directive == "%":
            return "%"
        raise AssertionError(f"{example.id}: printf {match.group(0)!r} is not an escape the examples harness knows")
    return _PRINTF.sub(one, fmt)


@contextlib.contextmanager
def _stdin(data: str | None) -> Iterator[None]:
    """``sys.stdin`` reading ``data`` (as text and through ``.buffer``), when a line pipes into the command."""
    if data is None:
        yield
        return
    import sys

    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data.encode("utf-8")), encoding="utf-8")
    try:
        yield
    finally:
        sys.stdin = saved


def _run_shell(example: Example, state: PageState, text: str) -> str:
    """Run a shell block's lines; what the last ``tryage`` command printed."""
    from tryage.cli import main

    printed = ""
    for line in _shell_lines(text):
        argv = shlex.split(_OPTIONAL.sub("", line), comments=True)
        if not argv:
            continue
        if argv[0] == "export" and len(argv) == 2 and "=" in argv[1]:
            name, value = argv[1].split("=", 1)
            state.env[name] = value
            os.environ[name] = value
            continue
        stdin = None
        if argv[0] == "printf" and len(argv) > 3 and argv[2] == "|":  # printf 'TEXT' | tryage ...
            stdin, argv = _printf(argv[1], example), argv[3:]
        assert argv[0] == "tryage" and "|" not in argv, (
            f"{example.id}: {line!r} is not a `tryage` command (or `printf 'TEXT' | tryage ...`); mark the block "
            "<!-- not-tested: REASON --> if it cannot run here")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _stdin(stdin):
            try:
                code = main(argv[1:])
            except SystemExit as stop:  # argparse: --help, or a usage error
                code = stop.code
        assert code in (0, None), f"{example.id}: `{line}` exited {code}: {err.getvalue().strip()[-800:]}"
        printed = out.getvalue()
    return printed


def _run(example: Example, state: PageState, server: Any) -> None:
    text = _local(example.code, server)
    if example.mark == "not-tested":
        return
    if example.mark == "file":
        (state.folder / example.value).write_text(text, encoding="utf-8")
        return
    if example.lang in ("python", "py"):
        exec(compile(text, f"{example.id}", "exec"), state.namespace)  # noqa: S102 - the docs' own examples
        return
    _run_shell(example, state, text)


@pytest.fixture()
def reader_env(monkeypatch: pytest.MonkeyPatch, server: Any) -> pytest.MonkeyPatch:
    """A reader's shell: the local server's key, no Hub, no progress bars; undone after each test."""
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_KEY)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    return monkeypatch


@pytest.mark.parametrize("example", _params())
def test_example_runs(example: Example, pages: dict[Path, PageState], server: Any,
                      reader_env: pytest.MonkeyPatch) -> None:
    state = pages[example.page]
    for name, value in state.env.items():
        reader_env.setenv(name, value)
    reader_env.chdir(state.folder)
    index = ALL.index(example)
    earlier = [e for e in ALL[:index] if e.page == example.page and ALL.index(e) not in state.done]
    for before in [*earlier, example]:
        if state.failed is not None:
            pytest.fail(f"an earlier example of this page failed: {state.failed}")
        state.done.add(ALL.index(before))
        if before.mark == "expected-to-fail":
            try:
                _run(before, state, server)
            except Exception as exc:  # noqa: BLE001 - the known failure, whatever it is
                if before is example:
                    pytest.xfail(f"{before.value}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            if before is example:
                pytest.fail(f"{before.id} is marked expected-to-fail ({before.value}) but runs now: remove the marker")
            continue
        try:
            _run(before, state, server)
        except BaseException:
            state.failed = before.id
            raise


def test_every_page_has_examples_and_skips_say_why() -> None:
    """The collector sees the pages' blocks; every skipped block gives a reason, and the skips are counted."""
    assert {e.page.name for e in ALL} >= {"README.md", "getting-started.md", "local-models.md"}
    skipped = [e for e in ALL if e.mark == "not-tested"]
    assert all(e.value for e in skipped), [e.id for e in skipped if not e.value]
    reasons: dict[str, int] = {}
    for e in skipped:
        reasons[e.value] = reasons.get(e.value, 0) + 1
    broken = [e.id for e in ALL if e.mark == "expected-to-fail"]
    print(f"\n{len(ALL) - len(skipped)} of {len(ALL)} examples run ({len(broken)} expected to fail: {broken}); "
          f"{len(skipped)} not tested:")
    for reason, count in sorted(reasons.items()):
        print(f"  {count} x {reason}")


def test_unmarked_shell_line_is_refused(tmp_path: Path) -> None:
    """A shell block that is neither a tryage command nor marked fails instead of passing silently."""
    page = tmp_path / "page.md"
    page.write_text("Install:\n\n```bash\npip install tryage\n```\n\n<!-- not-tested: needs a server -->\n"
                    "```bash\ntryage serve\n```\n")
    found = examples(page)
    assert [(e.lang, e.mark, e.value) for e in found] == [("bash", None, ""), ("bash", "not-tested", "needs a server")]
    with pytest.raises(AssertionError, match="is not a `tryage` command"):
        _run_shell(found[0], PageState(tmp_path), found[0].code)


def test_failing_tryage_command_fails_the_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    example = Example(tmp_path / "page.md", 1, "bash", "tryage route 'hi' --router no-such-router [--json]\n")
    with pytest.raises(AssertionError, match="exited 2: tryage: error: "):
        _run_shell(example, PageState(tmp_path), example.code)


def test_cheapest_flag_on_the_default_router_names_the_flags_it_supports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's route example as a newcomer may type it first, without ``--router open-llms``.

    The paper's experts (the default router) have no prices, so ``[Flag: cheapest]`` is one line and exit 2,
    and that line lists the flags this router does take and how to give prices, as the README says.
    """
    from tryage.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["route", "Prove that sqrt(2) is irrational [Flag: cheapest]"])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("tryage: error: constraint 'cost' needs"), err
    supported, _, remedy = err.partition("the flags it supports:")[2].partition("(or give")
    assert {"smallest model", "largest model", "most recent"} <= {f.strip() for f in supported.split(";")}
    assert "cheapest" not in supported
    assert "input_cost/output_cost" in remedy and "--experts FILE" in remedy


def test_printf_pipe_feeds_the_command_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's ``printf ... | tryage route -`` line: each printed line is one prompt routed."""
    import json

    monkeypatch.chdir(tmp_path)
    example = Example(tmp_path / "page.md", 1, "bash",
                      "printf 'def quicksort(xs):\\nThe court held that\\n' | tryage route - --json  # stdin\n")
    printed = json.loads(_run_shell(example, PageState(tmp_path), example.code))
    decisions = printed if isinstance(printed, list) else printed["decisions"]
    assert [d["prompt"] for d in decisions] == ["def quicksort(xs):", "The court held that"]
    refused = Example(tmp_path / "page.md", 1, "bash", "printf 'a\\n' | sort | tryage route -\n")
    with pytest.raises(AssertionError, match="is not a `tryage` command"):
        _run_shell(refused, PageState(tmp_path), refused.code)
