"""The perceptive predictor's save folder: ``config.json`` (with ``format_version``), ``model.safetensors``
(the head), ``experts.json`` (the expert library) and, for fine-tuned encoders, ``encoder/``. No pickle."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tryage.encoders import EncoderSpec
from tryage._io import dumps_strict
from tryage.errors import RouterFormatError, TryageFileNotFoundError
from tryage.experts import ExpertLibrary

FORMAT_VERSION = 1
_KIND = "tryage.PerceptiveRouter"  # the on-disk name, kept so old folders and new ones are the same format
_FILES = ("config.json", "model.safetensors", "experts.json")


@dataclass(frozen=True)
class PerceptiveConfig:
    """What ``config.json`` of a saved perceptive predictor holds (see :meth:`to_dict`)."""

    experts: tuple[str, ...]
    mode: str
    objective: str
    encoder: EncoderSpec
    input_dim: int
    hidden_dim: int
    dropout: float
    target_mean: tuple[float, ...]
    target_std: tuple[float, ...]
    training: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "kind": _KIND,
            "experts": list(self.experts),
            "mode": self.mode,
            "objective": self.objective,
            "encoder": self.encoder.to_dict(),
            "head": {"input_dim": self.input_dim, "hidden_dim": self.hidden_dim,
                     "output_dim": len(self.experts), "dropout": self.dropout},
            "targets": {"mean": list(self.target_mean), "std": list(self.target_std)},
            "training": dict(self.training),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config.json") -> PerceptiveConfig:
        """Read :meth:`to_dict` output; ``source`` names the file in error messages."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise RouterFormatError(f"{source}: router format_version {version!r} is not supported; "
                                    f"this Tryage reads version {FORMAT_VERSION}")
        try:
            head = data["head"]
            config = cls(
                experts=tuple(data["experts"]), mode=data.get("mode", "head"),
                objective=data.get("objective", "mse"), encoder=EncoderSpec.from_dict(data["encoder"]),
                input_dim=int(head["input_dim"]), hidden_dim=int(head["hidden_dim"]),
                dropout=float(head.get("dropout", 0.0)),
                target_mean=tuple(float(v) for v in data["targets"]["mean"]),
                target_std=tuple(float(v) for v in data["targets"]["std"]),
                training=dict(data.get("training", {})))
        except (KeyError, TypeError) as exc:
            raise RouterFormatError(f"{source} lacks a required field: {exc}") from None
        if config.objective not in ("mse", "bce"):
            raise RouterFormatError(f"{source}: unknown objective {config.objective!r}")
        return config

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.target_mean, dtype=np.float32), np.asarray(self.target_std, dtype=np.float32)


def save_folder(folder: str | os.PathLike[str], config: PerceptiveConfig, state: Mapping[str, Any],
                library: ExpertLibrary, *, encoder: Any = None) -> Path:
    """Write a predictor folder atomically (replaced whole if it exists, never half-written).

    ``encoder`` (a fine-tuned :class:`~tryage.encoders.TextEncoder`) is saved under ``encoder/``.
    """
    from safetensors.torch import save_file

    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if encoder is not None:
            encoder.model.save_pretrained(staging / "encoder")
            encoder.tokenizer.save_pretrained(staging / "encoder")
        (staging / "config.json").write_text(dumps_strict(config.to_dict(), what=f"router config {target}") + "\n",
                                             encoding="utf-8")
        save_file(dict(state), str(staging / "model.safetensors"), metadata={"format": "pt"})
        library.to_json(staging / "experts.json")
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            target.rename(backup)
            staging.rename(target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_folder(folder: str | os.PathLike[str]) -> tuple[PerceptiveConfig, dict[str, Any], ExpertLibrary]:
    """Read a folder written by :func:`save_folder`: its config, head weights and library (in config order)."""
    from safetensors.torch import load_file

    source = Path(folder)
    if not source.is_dir():
        raise TryageFileNotFoundError(f"router folder not found: {source}")
    missing = [n for n in _FILES if not (source / n).exists()]
    if missing:
        raise RouterFormatError(f"{source} is not a saved Tryage router: missing {', '.join(missing)}")
    try:
        data = json.loads((source / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RouterFormatError(f"{source / 'config.json'} is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise RouterFormatError(f"{source / 'config.json'} must hold a JSON object, got {type(data).__name__}")
    config = PerceptiveConfig.from_dict(data, source=str(source / "config.json"))
    library = ExpertLibrary.from_json(source / "experts.json")
    if set(library.names) != set(config.experts):
        raise RouterFormatError(f"{source}: experts.json names {list(library.names)} but the router predicts "
                                f"{list(config.experts)}")
    return config, load_file(str(source / "model.safetensors")), library.reorder(config.experts)
