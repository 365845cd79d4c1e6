"""``tryage serve``: an OpenAI-compatible endpoint that routes, relays, learns from feedback (extra ``serve``)."""

from tryage.serve.config import ServeConfig

__all__ = ["ServeConfig"]
