"""matplotlib, loaded only when a picture is drawn, and PNGs written whole."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from tryage._io import atomic_write_bytes
from tryage.errors import require


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (extra ``plot``)."""
    require("matplotlib", "plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG atomically (never half a file) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    pyplot().close(fig)
    target = Path(path)
    atomic_write_bytes(target, buffer.getvalue())
    return target
