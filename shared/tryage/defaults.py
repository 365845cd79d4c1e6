"""The embedded default: a router and expert library built by this project and shipped in the package."""

from __future__ import annotations

from pathlib import Path

from tryage.errors import TryageFileNotFoundError

DEFAULT_DIR = Path(__file__).resolve().parent / "default"


def default_router_path() -> Path:
    """Folder of the router shipped with Tryage (a head over the bundled MiniLM encoder)."""
    path = DEFAULT_DIR / "router"
    if not (path / "config.json").exists():
        raise TryageFileNotFoundError(
            f"the embedded default router is missing from this installation ({path}); "
            "reinstall tryage, or pass --router DIR / TryageRouter.from_pretrained(DIR)")
    return path


__all__ = ["DEFAULT_DIR", "default_router_path"]
