"""Helpers of the ``tryage serve`` tests: the experts file, and ``tryage serve`` started as a subprocess."""


from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_upstream import Upstream  # noqa: E402,F401

OPEN_LLMS = ("llama3-chatqa-1.5-8b", "qwen2.5-7b-instruct", "llama3-chatqa-1.5-70b", "llama-3.1-nemotron-51b-instruct",
             "mistral-7b-instruct-v0.3", "gemma-2-9b-it", "llama-3.1-8b-instruct", "codegemma-7b",
             "llama-3.3-nemotron-super-49b-v1")
CLIENT_KEY = "client-key"


def write_experts(path: Path, base_url: str) -> Path:
    """Every expert of the embedded ``open-llms`` router at the local upstream (model id = its name)."""
    path.write_text(json.dumps([{"name": n, "model": f"openai:{n}",
                                 "model_kwargs": {"base_url": base_url}, "api_key_env": "UPSTREAM_KEY",
                                 "input_cost": 0.2, "output_cost": 0.6} for n in OPEN_LLMS]))
    return path


@dataclass
class Served:
    """A running ``tryage serve``: its process, its ``/v1`` URL and what it printed."""

    process: subprocess.Popen
    base_url: str
    lines: list[str] = field(default_factory=list)

    @property
    def root(self) -> str:
        return self.base_url[: -len("/v1")]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=60)


def start_serve(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 120.0) -> Served:
    """``python -m tryage.cli serve ARGS`` until it prints where it listens."""
    environ = {**os.environ, "UPSTREAM_KEY": "upstream-key", "TRYAGE_API_KEYS": CLIENT_KEY, **(env or {})}
    process = subprocess.Popen([sys.executable, "-m", "tryage.cli", "serve", "--port", "0", *args], env=environ,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if "listening on" in line and not url:
                url.append(line.rsplit(" ", 1)[-1].strip())
                found.set()
        found.set()

    threading.Thread(target=read, daemon=True).start()
    found.wait(timeout)
    if not url:
        process.kill()
        raise RuntimeError("tryage serve did not start:\n" + "\n".join(lines))
    return Served(process, url[0], lines)
