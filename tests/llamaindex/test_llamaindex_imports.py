"""What ``llamaindex_tryage`` exports, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

import llamaindex_tryage


def test_llamaindex_imports_all_is_pinned():
    assert llamaindex_tryage.__all__ == ["TryageSelector", "TryageSelectorResult", "UnknownChoiceError"]


def test_llamaindex_imports_do_not_load_torch():
    code = ("import sys, llamaindex_tryage; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert out.strip() == "[]"
