"""Save folders of the predictors, written atomically (:func:`write_folder`: a reader, or a process killed
mid-save, sees the old folder or the whole new one).

The perceptive predictor's folder holds ``config.json`` (with ``format_version``), ``model.safetensors``
(the head), ``experts.json`` (the expert library) and, for fine-tuned encoders, ``encoder/``; the
output-length predictor's, ``config.json`` and ``model.safetensors``. No pickle."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tryage.encoders import EncoderSpec
from tryage._io import dumps_strict
from tryage.errors import (ConfigurationError, OutputWriteError, RouterFormatError, TargetExistsError,
                           TrainingDivergedError, TryageError, TryageFileNotFoundError)
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
    calibration: Mapping[str, Any] | None = None  # ScoreCalibration.to_dict(); absent in older folders

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
            **({"calibration": dict(self.calibration)} if self.calibration is not None else {}),
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
                training=dict(data.get("training", {})), calibration=data.get("calibration"))
        except KeyError as exc:
            raise RouterFormatError(f"{source} lacks a required field: {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise RouterFormatError(f"{source} has a field of the wrong type ({exc}); re-save the router") from None
        if config.objective not in ("mse", "bce"):
            raise RouterFormatError(f"{source}: unknown objective {config.objective!r}")
        return config

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.target_mean, dtype=np.float32), np.asarray(self.target_std, dtype=np.float32)


_STAGING = ".tryage-staging-"  # <parent>/.<name>.tryage-staging-<pid>-<random>: a save in progress
_BACKUP = ".tryage-old"  # <parent>/.<name>.tryage-old: the replaced router, only while it is swapped out


def is_router_folder(path: str | os.PathLike[str], *, kind: str = _KIND) -> bool:
    """Whether ``path`` is a folder written by :func:`save_folder` (its ``config.json`` names the format),
    or by another saver of :func:`write_folder` whose format is ``kind``."""
    try:
        data = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == kind


def check_save_target(folder: str | os.PathLike[str], *, overwrite: bool = False, kind: str = _KIND,
                      what: str = "a router") -> None:
    """Raise :class:`~tryage.errors.TargetExistsError` unless ``folder`` is free, an empty folder or a saved
    folder of this ``kind`` (or ``overwrite``): what :func:`write_folder` checks, for callers that check
    before long work."""
    target = check_folder_path(folder, what)
    if overwrite or not (target.exists() or target.is_symlink()):
        return
    if target.is_dir() and not target.is_symlink():
        if is_router_folder(target, kind=kind):
            return
        try:
            empty = next(target.iterdir(), None) is None
        except OSError:
            empty = False
        if empty:
            return
        found = f"a folder that is not a saved Tryage {what.split(' ', 1)[-1]} (it holds other files)"
    else:
        found = ("a symbolic link" if target.is_symlink() else "a file" if target.is_file()
                 else "not a folder")
    raise TargetExistsError(f"refusing to save {what} to {target}: it is {found}; choose another path, "
                            "or pass overwrite=True (tryage train --overwrite) to replace it")


def check_folder_path(folder: object, what: str = "a router") -> Path:
    """``folder`` as a :class:`~pathlib.Path` if it can name a save folder: a ``str`` or ``os.PathLike`` with no
    NUL byte, whose last name leaves room for the staging folder beside it; else a one-line
    :class:`~tryage.errors.ConfigurationError`."""
    if not isinstance(folder, (str, os.PathLike)):
        raise ConfigurationError(f"the folder to save {what} to must be a path (str or os.PathLike), got "
                                 f"{type(folder).__name__}: {folder!r:.60}")
    text = os.fsdecode(os.fspath(folder))
    if "\0" in text:
        raise ConfigurationError(f"the folder to save {what} to holds a NUL byte, which no file name may: {text!r:.80}")
    target = Path(text)
    name_max = 255  # NAME_MAX of Linux, macOS and Windows file systems; the parent's file system says where it can
    with contextlib.suppress(OSError, ValueError, AttributeError):
        name_max = os.pathconf(target.absolute().parent, "PC_NAME_MAX")
    room = name_max - len(f".{_STAGING}{2**22}-xxxxxxxx")  # the staging folder's name adds to the target's
    for part in target.parts:
        size = len(os.fsencode(part))
        if size > (room if part == target.name else name_max):
            raise ConfigurationError(
                f"the folder to save {what} to has a name of {size} bytes ({part[:40]!r}...); a name may have at "
                f"most {room if part == target.name else name_max} bytes here (the file system allows {name_max}, "
                "and a save writes beside it under a longer name first)")
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def _clean_stale(target: Path) -> None:
    """Remove what a killed save of ``target`` left: staging folders of dead processes; restore a router
    that was swapped out when the process died between the two renames of the fallback swap."""
    backup = target.with_name(f".{target.name}{_BACKUP}")
    if backup.is_dir() and not backup.is_symlink():
        if target.exists():  # killed after the swap, before the old router was removed
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(backup, target)
    prefix = f".{target.name}{_STAGING}"
    for entry in target.parent.glob(f"{glob.escape(prefix)}*"):
        pid = entry.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` (and ``root``) to disk before it is renamed into place."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # file system or kernel without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``: a reader sees the old router or the new one, never none."""
    if not (target.exists() or target.is_symlink()):
        os.rename(staging, target)
        return
    if target.is_dir() and not target.is_symlink() and _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old router
        return
    backup = target.with_name(f".{target.name}{_BACKUP}")
    if backup.is_dir() and not backup.is_symlink():
        shutil.rmtree(backup)
    else:
        backup.unlink(missing_ok=True)
    os.rename(target, backup)  # a kill between these two renames is repaired by the next save
    os.rename(staging, target)
    if backup.is_dir() and not backup.is_symlink():
        shutil.rmtree(backup, ignore_errors=True)
    else:
        backup.unlink(missing_ok=True)


def write_folder(folder: str | os.PathLike[str], write: Callable[[Path], None], *, kind: str = _KIND,
                 what: str = "a router", overwrite: bool = False) -> Path:
    """Write a save folder atomically: ``write(staging)`` fills a sibling staging folder, which is flushed
    to disk and swapped in with one rename, so readers (and a process killed mid-save) see the old folder
    or the whole new one.

    A target that exists and is neither a saved folder of this ``kind`` nor an empty folder raises
    :class:`~tryage.errors.TargetExistsError` unless ``overwrite``. Staging folders left by a killed save
    are removed by the next save to the same target. An ``OSError`` while writing (no permission, a full
    disk) is raised as :class:`~tryage.errors.OutputWriteError`, with nothing half-written left behind.
    """
    target = Path(folder)
    check_save_target(target, overwrite=overwrite, kind=kind, what=what)
    staging: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{_STAGING}{os.getpid()}-", dir=target.parent))
        write(staging)
        _fsync_tree(staging)
        _replace(staging, target)
        staging = None
        _fsync_dir(target.parent)
    except OSError as exc:
        if isinstance(exc, TryageError):
            raise
        where = exc.filename or target
        noun = what.split(" ", 1)[-1]  # "a router" -> "router"
        raise OutputWriteError(f"cannot save the {noun} to {target}: {where}: {exc.strerror or exc}",
                               errno=exc.errno, filename=str(where)) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def save_folder(folder: str | os.PathLike[str], config: PerceptiveConfig, state: Mapping[str, Any],
                library: ExpertLibrary, *, encoder: Any = None, overwrite: bool = False) -> Path:
    """Write a perceptive predictor's folder through :func:`write_folder` (atomic, refusals as there).

    ``encoder`` (a fine-tuned :class:`~tryage.encoders.TextEncoder`) is saved under ``encoder/``.
    """
    from safetensors.torch import save_file

    target = check_folder_path(folder)
    if bad := [name for name, value in state.items() if value.is_floating_point() and not bool(value.isfinite().all())]:
        raise TrainingDivergedError(f"refusing to save the router to {target}: weights {', '.join(bad[:4])} hold NaN or "
                                    "infinite values (training diverged); nothing was written")

    def write(staging: Path) -> None:
        config_text = dumps_strict(config.to_dict(), what=f"router config {target}") + "\n"
        if encoder is not None:
            encoder.model.save_pretrained(staging / "encoder")
            encoder.tokenizer.save_pretrained(staging / "encoder")
        (staging / "config.json").write_text(config_text, encoding="utf-8")
        save_file(dict(state), str(staging / "model.safetensors"), metadata={"format": "pt"})
        library.to_json(staging / "experts.json")

    return write_folder(target, write, overwrite=overwrite)


def saved_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` to read, restored first if a save was killed between the two renames of its swap."""
    source = Path(folder)
    backup = source.with_name(f".{source.name}{_BACKUP}")
    if not source.exists() and backup.is_dir():
        try:
            os.replace(backup, source)
        except OSError:
            return backup
    return source


def read_folder(folder: str | os.PathLike[str]) -> tuple[PerceptiveConfig, dict[str, Any], ExpertLibrary]:
    """Read a folder written by :func:`save_folder`: its config, head weights and library (in config order)."""
    from safetensors.torch import load_file

    source = saved_folder(folder)
    if not source.is_dir():
        raise TryageFileNotFoundError(f"router folder not found: {source}")
    missing = [n for n in _FILES if not (source / n).exists()]
    if missing:
        raise RouterFormatError(f"{source} is not a saved Tryage router: missing {', '.join(missing)}")
    try:
        data = json.loads((source / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RouterFormatError(f"{source / 'config.json'} is not valid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise RouterFormatError(f"{source / 'config.json'} is not UTF-8 text (byte "
                                f"{exc.object[exc.start:exc.start + 1]!r} at offset {exc.start})") from None
    except RecursionError:
        raise RouterFormatError(f"{source / 'config.json'} is JSON nested too deeply") from None
    except OSError as exc:
        raise RouterFormatError(f"{source / 'config.json'} cannot be read: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise RouterFormatError(f"{source / 'config.json'} must hold a JSON object, got {type(data).__name__}")
    config = PerceptiveConfig.from_dict(data, source=str(source / "config.json"))
    library = ExpertLibrary.from_json(source / "experts.json")
    if set(library.names) != set(config.experts):
        raise RouterFormatError(f"{source}: experts.json names {list(library.names)} but the router predicts "
                                f"{list(config.experts)}")
    weights = source / "model.safetensors"
    try:
        state = load_file(str(weights))
    except OSError as exc:
        raise RouterFormatError(f"{weights} cannot be read: {exc.strerror or exc}") from None
    except Exception as exc:  # safetensors' SafetensorError: truncated or not a safetensors file
        if type(exc).__name__ != "SafetensorError":
            raise
        raise RouterFormatError(f"{weights} is not a complete safetensors file ({exc}); save the router "
                                "again") from None
    if bad := [name for name, value in state.items() if value.is_floating_point() and not bool(value.isfinite().all())]:
        raise RouterFormatError(f"{weights}: weights {', '.join(bad[:4])} hold NaN or infinite values (a diverged "
                                "training); train or update the router again")
    return config, state, library.reorder(config.experts)
