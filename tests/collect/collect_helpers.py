"""Helpers of the collect tests: experts-file entries for the local server, prompt rows, files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from openai_server import OpenAIServer


#: The key the local server wants (the ``server`` fixture puts it in ``OPENAI_API_KEY``).
API_KEY = "test-key"

def entry(server: OpenAIServer, model: str, **extra: Any) -> dict[str, Any]:
    """An experts-file entry for ``model`` on the local server (keys come from the environment)."""
    return {"name": model, "model": f"openai:{model}",
            "model_kwargs": {"base_url": server.base_url, "temperature": 0},
            "input_cost": 1.0, "output_cost": 2.0, **extra}


def sums(n: int) -> list[dict[str, Any]]:
    """``n`` prompts "What is i plus 3?" with their references."""
    return [{"id": f"p{i}", "prompt": f"What is {i} plus 3?", "reference": str(i + 3), "task": "sum"} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_experts(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path
