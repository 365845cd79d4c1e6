"""Build the cookbook notebooks from their sources in ``cookbook/src/``.

Each source is a Python file in the "percent" format: ``# %%`` starts a code cell and
``# %% [markdown]`` a Markdown cell whose lines are written as comments (``# text``). The
notebooks are generated from them so that reviews read plain Python diffs; the ``.ipynb`` files
are committed too, so a reader can open them directly.

    .venv/bin/python cookbook/build.py            # write every notebook (no outputs)
    .venv/bin/python cookbook/build.py --execute  # write and run them, keeping the outputs
    .venv/bin/python cookbook/build.py --check    # exit 1 when a notebook differs from its source

``tests/test_cookbook.py`` runs the notebooks and checks that they match their sources.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat

COOKBOOK = Path(__file__).resolve().parent
SOURCES = COOKBOOK / "src"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
#: Set in the kernels' environment when executing: no progress bars or widget warnings in the
#: saved outputs, no tokenizer fork warnings.
KERNEL_ENV = {"TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
              "PYTHONWARNINGS": "ignore:IProgress not found"}
LANGUAGE_INFO = {"name": "python", "pygments_lexer": "ipython3",
                 "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                 "mimetype": "text/x-python", "nbconvert_exporter": "python"}


def sources() -> list[Path]:
    """Every notebook source, in reading order."""
    return sorted(SOURCES.glob("[0-9][0-9]_*.py"))


def notebook_path(source: Path) -> Path:
    return COOKBOOK / f"{source.stem}.ipynb"


def parse_cells(text: str) -> list[tuple[str, str]]:
    """``(kind, source)`` for each cell of a percent-format file; ``kind`` is ``code`` or ``markdown``."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"code before the first '# %%' marker: {line!r}")
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines]
        body = "\n".join(lines).strip("\n")
        if body:
            out.append((kind, body))
    return out


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook of ``source``, without outputs. Cell ids are stable so rebuilding changes nothing."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": dict(LANGUAGE_INFO)}
    for i, (kind, body) in enumerate(parse_cells(source.read_text(encoding="utf-8"))):
        cell = nbformat.v4.new_markdown_cell(body) if kind == "markdown" else nbformat.v4.new_code_cell(body)
        cell.id = f"{source.stem[:2]}-{i:02d}"
        nb.cells.append(cell)
    return nb


def same_cells(a: nbformat.NotebookNode, b: nbformat.NotebookNode) -> bool:
    """Whether two notebooks have the same cells (kind and source), whatever their outputs."""
    return [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells]


def execute(nb: nbformat.NotebookNode, *, timeout: int = 600, kernel_name: str = "python3") -> float:
    """Run ``nb`` in place with its folder (``cookbook/``) as working directory; returns seconds."""
    from nbclient import NotebookClient

    started = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, record_timing=False,
                   resources={"metadata": {"path": str(COOKBOOK)}}).execute()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.metadata.pop("execution", None)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execute", action="store_true", help="run the notebooks and keep their outputs")
    parser.add_argument("--check", action="store_true", help="only check that notebooks match their sources")
    parser.add_argument("names", nargs="*", help="notebook numbers or names to build (default: all)")
    args = parser.parse_args(argv)
    chosen = [s for s in sources() if not args.names or any(s.stem.startswith(n) for n in args.names)]
    if not chosen:
        parser.error(f"no notebook source matches {args.names}; have {[s.stem for s in sources()]}")
    stale = []
    for source in chosen:
        target = notebook_path(source)
        nb = build(source)
        if args.check:
            if not target.exists() or not same_cells(nb, nbformat.read(target, as_version=4)):
                stale.append(target.name)
            continue
        if args.execute:
            for key, value in KERNEL_ENV.items():
                os.environ.setdefault(key, value)
            seconds = execute(nb)
            print(f"{target.name}: ran in {seconds:.0f} s", file=sys.stderr)
        nbformat.write(nb, target)
    if stale:
        print("out of date (run cookbook/build.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
