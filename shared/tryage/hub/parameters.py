"""Counting a model's parameters from its ``config.json`` without downloading weights."""

from __future__ import annotations

import threading
from typing import Any

_META_LOCK = threading.Lock()


def count_parameters_from_config(config: dict[str, Any]) -> int | None:
    """Parameters of the ``transformers`` architecture a ``config.json`` names, or ``None``.

    The model is built on PyTorch's ``meta`` device (no memory, no weights), so the count is
    exact for that architecture and configuration. ``None`` when transformers or torch is not
    installed, when ``architectures`` names no ``transformers`` model class (custom code is never
    run), or when the configuration cannot be built.
    """
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if not architectures or not isinstance(architectures[0], str) or not isinstance(model_type, str):
        return None
    try:
        import torch
        import transformers
    except ImportError:
        return None
    arch = architectures[0]
    cls = getattr(transformers, arch, None) if arch.isidentifier() else None
    if not isinstance(cls, type) or not issubclass(cls, transformers.PreTrainedModel):
        return None
    settings = {k: v for k, v in config.items() if k not in ("model_type", "auto_map")}
    with _META_LOCK:
        try:
            model_config = transformers.AutoConfig.for_model(model_type, **settings)
            with torch.device("meta"):
                model = cls(model_config)
        except Exception:  # noqa: BLE001 - any failure means "cannot count honestly"
            return None
        return int(sum(p.numel() for p in model.parameters())) or None


__all__ = ["count_parameters_from_config"]
