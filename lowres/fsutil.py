"""The file system, the one way: claiming a command's output folder, and atomic file writes.

Claiming (:func:`claim_folder`): every command that writes into ``--out`` decides in the same order whether
it may (a file there, a location it cannot create or write, a folder that already holds files, ``--overwrite``
on a folder lowres did not make, ``--resume``), and says no with one paragraph that names the folder and the
flag to use.

Writing (:func:`atomic_writer` and the helpers over it): a temp file in the same folder, fsync, then a rename
over the target. A reader (or a killed process) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from lowres import LowresError

# errors that mean "this location cannot take the write" (as opposed to a bug): said in one paragraph, not
# raised as a traceback. EPERM: an immutable file or folder (chattr +i).
_UNWRITABLE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


# ---------------------------------------------------------------------------------------------------
# claiming an output folder


def cache_root() -> Path:
    """Where lowres keeps what it fetched or made once (bases, real-speech packages, synthetic speech):
    ``$LOWRES_CACHE``, else ``~/.cache/lowres``."""
    return Path(os.environ.get("LOWRES_CACHE") or Path.home() / ".cache" / "lowres")


def claim_folder(
    out: str | os.PathLike,
    *,
    what: str,
    overwrite: bool,
    hint: str = "",
    is_ours: Callable[[Path], bool] | None = None,
    not_ours: str = "",
    clear: Callable[[Path], None] | None = None,
    resume: bool = False,
    continue_ours: bool = False,
    check_only: bool = False,
    ignore: tuple[str, ...] = (),
) -> str:
    """Claim ``out`` as the output folder of a command; returns ``"new"``, ``"replaced"`` or ``"resume"``.

    ``what``: what the folder holds, without an article ("prepared data", "run"); the messages read "give a
    folder for the {what}", "not a lowres {what} folder", "holds no {what} to continue".
    ``hint``: what to do when the folder already holds files and ``overwrite`` is off (default: pass
    --overwrite or choose another --out).
    ``is_ours``: whether a folder is one this command wrote. With it, ``--overwrite`` is refused for a folder
    that is not (``not_ours`` says why, e.g. "no lowres config.json") and ``resume`` needs one that is. Without
    it, ``--overwrite`` may clear any folder, so ``clear`` must then remove only the command's own outputs.
    ``clear``: removes the outputs ``--overwrite`` replaces (default: everything inside ``out``; the folder
    itself stays, with its permissions).
    ``resume``: the user asked to continue what is in ``out`` (contradicts ``overwrite``).
    ``continue_ours``: a folder that ``is_ours`` is continued without any flag (the demo skips done steps).
    ``ignore``: names inside ``out`` that do not count as files it holds (a run's lock file).
    ``check_only``: decide and raise, touching nothing (call it before the inputs are read, and again without
    it once they are); a ``"replaced"`` folder is then not cleared and a ``"new"`` one not created.

    ``"new"``: ``out`` did not exist or was empty; ``"replaced"``: it held files and ``clear`` removed them;
    ``"resume"``: it holds ours to continue. Unless ``check_only``, ``out`` exists and takes files on return.
    Every refusal is a :class:`LowresError`, including an ``out`` that cannot be created or written (a
    read-only file system, no permission, a file where a parent folder should be).
    """
    out = Path(out)
    if resume and overwrite:
        raise LowresError(f"--resume and --overwrite contradict each other: --resume continues the {what} in "
                          "--out, --overwrite starts it again from nothing. Pick one.")
    try:
        return _claim(out, what=what, overwrite=overwrite, hint=hint, is_ours=is_ours, not_ours=not_ours,
                      clear=clear, resume=resume, continue_ours=continue_ours, check_only=check_only,
                      ignore=ignore)
    except OSError as exc:
        raise _unwritable(out, exc) from None


def _claim(out: Path, *, what, overwrite, hint, is_ours, not_ours, clear, resume, continue_ours,
           check_only, ignore) -> str:
    if out.exists() and not out.is_dir():
        raise LowresError(f"--out {out} is a file; give a folder for the {what}.")
    if out.is_dir():  # an unwritable folder is said first: "pass --overwrite" would not help
        _check_creatable(out)
    held = out.is_dir() and any(p.name not in ignore for p in out.iterdir())
    why = f" ({not_ours})" if not_ours else ""
    mode = "new"
    if resume:
        if not held or (is_ours is not None and not is_ours(out)):
            raise LowresError(f"--resume: {out} holds no {what} to continue{why}. Drop --resume to start a new "
                              f"{what} there.")
        mode = "resume"
    elif held and continue_ours and not overwrite and is_ours is not None and is_ours(out):
        mode = "resume"
    elif held:
        if not overwrite:
            raise LowresError(f"The output folder {out} already holds files. "
                              f"{hint or f'Pass --overwrite to replace the {what} in it, or choose another --out.'}")
        if is_ours is not None and not is_ours(out):
            raise LowresError(f"--overwrite refused: {out} is not a lowres {what} folder{why}, so it may hold "
                              "your own files. Choose an empty or new --out.")
        mode = "replaced"
    if check_only:
        _check_creatable(out)
        return mode
    if mode == "replaced":
        (clear or empty_folder)(out)
    _check_creatable(out)
    out.mkdir(parents=True, exist_ok=True)
    _probe(out)
    return mode


def remove_outputs(*names: str) -> Callable[[Path], None]:
    """A ``clear`` for :func:`claim_folder` that removes only these files and folders of a command's output
    folder (``--overwrite`` replaces the command's outputs and leaves the rest alone)."""
    def clear(folder: Path) -> None:
        for name in names:
            target = Path(folder) / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)

    return clear


def empty_folder(folder: Path) -> None:
    """Remove everything inside ``folder`` (not following links), keeping the folder itself."""
    for child in list(folder.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _check_creatable(out: Path) -> None:
    """Refuse, touching nothing, a folder that cannot be made: its nearest existing ancestor is a file, or
    one this process may not write into (os.access also sees a read-only file system, even for root)."""
    here = out
    while not here.exists() and here.parent != here:
        here = here.parent
    if not here.is_dir():
        raise LowresError(f"--out {out} cannot be created: {here} is a file, not a folder. Choose another --out.")
    if not os.access(here, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only_fs(here) else errno.EACCES
        raise _unwritable(out, OSError(code, os.strerror(code), str(here)))


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _probe(out: Path) -> None:
    """Create and remove a temp file in ``out``: an existing folder can be unwritable though mkdir succeeds."""
    fd, tmp = tempfile.mkstemp(prefix=".lowres-probe.", dir=out)
    os.close(fd)
    os.unlink(tmp)


def _unwritable(out: Path, exc: OSError) -> LowresError:
    why = exc.strerror or str(exc)
    if exc.errno == errno.EROFS:
        why += " (the file system is mounted read-only)"
    elif exc.errno == errno.ENOTDIR:
        why += " (a file stands where a folder should be)"
    at = f" at {exc.filename}" if exc.filename and Path(exc.filename) != out else ""
    return LowresError(f"--out {out} cannot be created or written: {why}{at}. Choose another --out, or make that "
                       "location writable (its permissions, its mount, free space) and run the command again.")


# ---------------------------------------------------------------------------------------------------
# atomic writes


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


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, text: bool = False, buffering: int = -1) -> Iterator[IO]:
    """A file to stream into, swapped in for ``path`` when the block ends without an error.

    Binary by default (``torch.save`` and :func:`atomic_write_bytes` write into it); ``text=True`` gives UTF-8
    text with ``\\n`` line ends. The file gets the permissions ``open()`` would give (0666 & ~umask). On any
    error the temp file is removed and ``path`` keeps its previous content; a full disk, a quota, a read-only
    file system or a missing permission becomes a :class:`LowresError` naming ``path``.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file what open() would
            f = (os.fdopen(fd, "w", encoding="utf-8", newline="\n", buffering=buffering) if text
                 else os.fdopen(fd, "wb", buffering=buffering))
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _cleanup(tmp)
        if exc.errno in _UNWRITABLE:
            raise LowresError(_disk_full_message(path, exc)) from exc
        raise
    except BaseException:
        _cleanup(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or an iterable of byte chunks, written as they come) atomically to ``path``."""
    with atomic_writer(path) as f:
        if isinstance(data, bytes | bytearray | memoryview):
            f.write(data)
        else:
            for chunk in data:
                f.write(chunk)


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


def _cleanup(tmp: str | None) -> None:
    if tmp is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def save_safetensors(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    """Atomic safetensors write (temp file + rename) of ``tensors`` (moved to the CPU, made contiguous);
    ``metadata`` values are stored as strings."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                metadata={k: str(v) for k, v in (metadata or {}).items()})
    atomic_write_bytes(path, data)
