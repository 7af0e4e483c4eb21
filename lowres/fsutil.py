"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A reader (or a killed process) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from lowres import LowresError


def _disk_full_message(path: Path, exc: OSError) -> str:
    return (
        f"Could not write {path}: {exc.strerror or exc}. The disk is full or the folder is not writable; "
        "the previous version of the file (if any) is intact. Free some space and run the command again "
        "(training runs continue with --resume)."
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or an iterable of byte chunks, written as they come) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes | bytearray | memoryview):
                f.write(data)
            else:
                for chunk in data:
                    f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _cleanup(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise LowresError(_disk_full_message(path, exc)) from exc
        raise
    except BaseException:
        _cleanup(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """One line per item, UTF-8, written as the items come (a generator is never held in memory whole)."""
    atomic_write_bytes(path, ((line + "\n").encode("utf-8") for line in lines))


def dumps_json(obj) -> str:
    """Deterministic, human-readable JSON (keys in insertion order, UTF-8 kept as is)."""
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, dumps_json(obj))


def _cleanup(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass
