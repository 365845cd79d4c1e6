"""The embedded routers: heads over the bundled MiniLM, built by this project and shipped in the package.

* ``"paper-domains"`` (the default): the paper's domain experiment — 11 small language models
  (SmolLM2-135M and its domain fine-tunes), causal-LM loss per passage.
* ``"open-llms"``: the nine open instruction-tuned LLMs (7B-70B) of the LLMRouter score matrix, with
  their sizes and prices; it predicts each model's chance of failing a prompt.
"""

from __future__ import annotations

from pathlib import Path

from tryage.errors import ConfigurationError, TryageFileNotFoundError

DEFAULT_DIR = Path(__file__).resolve().parent / "default"
DEFAULT_ROUTER = "paper-domains"
EMBEDDED_ROUTERS = {"paper-domains": "router", "open-llms": "open-llms"}


def default_router_path(name: str | None = None) -> Path:
    """Folder of an embedded router: ``name`` is one of :data:`EMBEDDED_ROUTERS` (default: the paper's)."""
    name = DEFAULT_ROUTER if name is None else name
    if not isinstance(name, str) or name not in EMBEDDED_ROUTERS:
        raise ConfigurationError(f"unknown embedded router {name!r:.60}; the embedded routers are "
                                 f"{', '.join(EMBEDDED_ROUTERS)} (or pass a saved router folder)")
    path = DEFAULT_DIR / EMBEDDED_ROUTERS[name]
    if not (path / "config.json").exists():
        raise TryageFileNotFoundError(
            f"the embedded router {name!r} is missing from this installation ({path}); "
            "reinstall tryage, or pass --router DIR / TryageRouter.from_pretrained(DIR)")
    return path


__all__ = ["DEFAULT_DIR", "DEFAULT_ROUTER", "EMBEDDED_ROUTERS", "default_router_path"]
