"""Small file helpers shared by the modules that write files: strict JSON, JSONL, atomic files, PNGs."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: equal once resolved (``..``, symlinks, even dangling ones), or
    the same inode when both exist (a hard link, a bind mount)."""
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    except OSError:   # unreadable: fall back on the resolved names
        pass
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def check_distinct_files(written: Mapping[str, Any], read: Mapping[str, Any] | None = None, *,
                         folders: Iterable[str] = ()) -> None:
    """Refuse, before anything is written, a file argument that names the same file as another one.

    ``written`` maps each argument's name (``"--out"``, ``"log"``) to the file it writes (``None``: not
    given); ``read`` to the files it only reads. Each written file is compared with every other
    argument by :func:`same_file` (same path, symlink, hard link); two read files may be one. A written
    argument named in ``folders`` is a folder that is replaced whole: no other argument may lie inside it.

    Raises:
        ConfigurationError: In one line naming both arguments and the file.
    """
    from tryage.errors import ConfigurationError

    given = [(name, os.fspath(path), name in written) for name, path in [*written.items(), *(read or {}).items()]
             if path is not None]
    whole = set(folders)
    for i, (name, path, writes) in enumerate(given):
        for other, other_path, other_writes in given[i + 1:]:
            if not (writes or other_writes):
                continue
            target, kept = (name, other) if writes else (other, name)
            if same_file(path, other_path):
                shown = path if path == other_path else f"{path} and {other_path}"
                raise ConfigurationError(f"{name} and {other} name the same file ({shown}): writing {target} would "
                                         f"destroy {kept}; give each its own file")
            for folder, folder_path, inner, inner_path in ((name, path, other, other_path),
                                                           (other, other_path, name, path)):
                if folder in whole and _inside(inner_path, folder_path):
                    raise ConfigurationError(f"{inner} ({inner_path}) lies inside {folder} ({folder_path}), a folder "
                                             f"that is replaced whole: writing {folder} would destroy {inner}; give "
                                             f"{folder} a folder of its own")


def _inside(path: str, folder: str) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real.startswith(top.rstrip(os.sep) + os.sep)


def truncate_torn_tail(path: str | os.PathLike[str]) -> None:
    """Cut a last line without its newline (the append of a killed writer) off an append-only file."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def iter_jsonl(path: str | os.PathLike[str], *, torn_tail: bool = False,
               encoding: str = "utf-8") -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, value, problem)`` for each non-blank line of a JSONL file.

    ``problem`` is ``None`` or why the line is no JSON value (invalid JSON, NUL bytes, nested too
    deeply); each reader turns it into its own error, or skips the line. With ``torn_tail=True`` a
    last line without its newline (the append of a killed writer) ends the iteration silently.
    """
    with Path(path).open(encoding=encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if torn_tail and not line.endswith("\n"):
                return
            if not line.strip():
                continue
            if "\x00" in line:
                yield number, None, "holds NUL bytes (a binary file?)"
                continue
            try:
                yield number, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield number, None, f"not valid JSON ({exc.msg})"
            except RecursionError:
                yield number, None, "JSON nested too deeply"


class AppendLog:
    """The one writer of an append-only JSONL log: single writer, whole lines, torn tail repaired.

    Opening takes ``<path>.lock`` (``filelock``; a second writer gets ``locked(path)`` raised) and cuts a
    last line without its newline (the append of a killed writer). :meth:`append` writes whole lines
    with one ``write`` loop; a failed write (a full disk) is cut off again, so the file stays whole
    lines. Each append reaches the OS at once (it survives the process being killed); with
    ``fsync=True`` it also reaches the disk before :meth:`append` returns (it survives a power cut).

    Args:
        path: The JSONL file (created with its folder when missing).
        what: The log's name in error messages (``"call log"``, ``"feedback log"``).
        locked: Builds the error raised when another process holds the lock.
        fsync: ``os.fsync`` after every append.
    """

    def __init__(self, path: str | os.PathLike[str], *, what: str, locked: Any, fsync: bool = False) -> None:
        self.path = Path(path)
        self.what = what
        self.locked = locked
        self.fsync = fsync
        self._lock: Any = None
        self._handle: Any = None

    @property
    def is_open(self) -> bool:
        return self._handle is not None

    def open(self) -> AppendLog:
        from tryage.errors import OutputWriteError, require

        filelock = require("filelock", "collect")
        lock_path = str(self.path) + ".lock"
        try:   # a folder no one can write (/proc, read-only) is its own error, not "locked by another run"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError as exc:
            raise OutputWriteError(f"cannot write the {self.what} {self.path}: {exc.strerror or exc}",
                                   errno=exc.errno, filename=str(exc.filename or self.path)) from None
        lock = filelock.FileLock(lock_path)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise self.locked(str(self.path)) from None
        self._lock = lock
        try:
            truncate_torn_tail(self.path)
            self._handle = self.path.open("ab", buffering=0)  # unbuffered: a failed write is undone below
        except OSError as exc:
            lock.release()
            raise OutputWriteError(f"cannot write the {self.what} {self.path}: {exc.strerror or exc}",
                                   errno=exc.errno, filename=str(self.path)) from None
        except BaseException:
            lock.release()
            raise
        return self

    def close(self) -> None:
        try:
            if self._handle is not None:
                os.fsync(self._handle.fileno())
                self._handle.close()
        finally:
            self._handle = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def append(self, records: list[Any], *, hint: str = "") -> None:
        """Write ``records`` (JSON values), one line each; an ``OSError`` leaves the file as it was and
        is raised as :class:`~tryage.errors.OutputWriteError` naming the log and ``hint``."""
        from tryage.errors import OutputWriteError

        if self._handle is None:
            raise OutputWriteError(f"{self.what} {self.path} is not open for writing", filename=str(self.path))
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        fd = self._handle.fileno()
        end = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:  # a full disk: cut the torn line so the log stays whole lines
            try:
                os.ftruncate(fd, end)
            except OSError:
                pass  # the next open's repair cuts it
            raise OutputWriteError(f"cannot append to the {self.what} {self.path}: {exc.strerror or exc}"
                                   + (f"; {hint}" if hint else ""), errno=exc.errno, filename=str(self.path)) from None


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Like :func:`atomic_write_text`; an ``OSError`` (a full disk, a read-only folder) is raised as
    :class:`~tryage.errors.OutputWriteError` naming ``path``, and ``path`` is left as it was."""
    target = Path(path)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb", buffering=0) as handle:
            view = memoryview(data)
            while view:
                view = view[os.write(handle.fileno(), view):]
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        from tryage.errors import OutputWriteError, TryageError

        if isinstance(exc, TryageError):
            raise
        raise OutputWriteError(f"cannot write {target}: {exc.strerror or exc}; it is left as it was",
                               errno=exc.errno, filename=str(target)) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def dumps_strict(data: object, *, what: str, indent: int | None = 2) -> str:
    """``json.dumps`` that refuses NaN and infinities (JSON has neither; ``Infinity`` breaks readers).

    Raises :class:`~tryage.errors.ConfigurationError` naming ``what`` is being written and the key
    path of the first non-finite number.
    """
    import json
    import math

    def find(value: object, path: str) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return f"{path or '<top>'} = {value!r}"
        if isinstance(value, dict):
            items = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
        else:
            return None
        for sub_path, sub in items:
            found = find(sub, sub_path)
            if found:
                return found
        return None

    try:
        return json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError:
        from tryage.errors import ConfigurationError

        raise ConfigurationError(
            f"cannot write {what}: {find(data, '') or 'a value'} is not a finite number, and JSON allows "
            "only finite numbers") from None


def progress_bar(total: int, desc: str, *, enabled: bool | None = True, unit: str = "it") -> Any:
    """The one progress bar (tqdm: a rate and an ETA); ``enabled=None`` shows it only on a terminal."""
    terminal = sys.stderr.isatty()
    if enabled is None:
        enabled = terminal
    from tqdm.auto import tqdm

    if not terminal:  # a log file: the first and the last state on one line, no line per update
        return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, mininterval=float("inf"),
                    maxinterval=float("inf"), ncols=80)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level table of a TOML (:mod:`tomllib`) or YAML (PyYAML) settings file; errors as one line."""
    from tryage.errors import ConfigurationError, TryageFileNotFoundError

    source = Path(path)
    if not source.is_file():
        raise TryageFileNotFoundError(f"config file not found: {source}")
    suffix = source.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(source.read_text(encoding="utf-8"))
        elif suffix in (".yaml", ".yml"):
            from tryage.errors import require

            data = require("yaml", "serve", "pyyaml").safe_load(source.read_text(encoding="utf-8")) or {}
        else:
            raise ConfigurationError(f"{source}: a config file is .toml, .yaml or .yml, got {suffix or 'no suffix'!r}")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{source}: is not UTF-8 text") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(f"{source}: not valid {suffix[1:].upper()} ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # yaml.YAMLError
        if type(exc).__module__.startswith("yaml"):
            raise ConfigurationError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
        raise
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source}: expected a table of settings at the top, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (extra ``plot``)."""
    from tryage.errors import require

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
