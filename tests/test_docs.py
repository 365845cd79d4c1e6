"""The documentation site builds with every warning treated as an error.

``mkdocs build --strict`` fails on a broken link between pages, a page missing from the navigation, an
API reference entry (mkdocstrings) naming an object that no longer exists, or a docstring griffe cannot
read. Needs the ``docs`` extra (``pip install -e '.[docs]'``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="building the docs needs mkdocs (pip install -e '.[docs]')")
pytest.importorskip("material", reason="building the docs needs mkdocs-material (pip install -e '.[docs]')")
pytest.importorskip("mkdocstrings_handlers.python",
                    reason="building the docs needs mkdocstrings[python] (pip install -e '.[docs]')")


def _build(site: Path, config: Path = REPO / "mkdocs.yml") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_docs_build_strict(tmp_path: Path) -> None:
    done = _build(tmp_path / "site")

    assert done.returncode == 0, done.stderr[-4000:]
    for page in ("index.html", "getting-started/index.html", "local-models/index.html", "langchain/index.html",
                 "llamaindex/index.html", "reference/router/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "reference" / "router" / "index.html").read_text(encoding="utf-8")
    assert "route_batch" in api and "from_pretrained" in api  # rendered from the docstrings


def test_docs_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    """--strict makes a warning fatal: a page linking to a page that does not exist fails the build."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the guide](no-such-page.md).\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text("site_name: t\ndocs_dir: docs\ntheme:\n  name: material\n")

    done = _build(tmp_path / "site", config)

    assert done.returncode != 0
    assert "no-such-page.md" in done.stderr
