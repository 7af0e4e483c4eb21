"""lowres.fsutil: claiming a command's output folder, and the one atomic writer.

The contract for :func:`claim_folder`: a missing or empty folder is claimed ("new"); a file, a location that
cannot be created or written, a folder that already holds files (without ``--overwrite``), ``--overwrite`` on
a folder that is not ours, ``--resume`` with nothing to continue and ``--resume --overwrite`` are each one
:class:`LowresError` that names the folder, and nothing is removed; ``--overwrite`` removes only what
``clear`` says (by default the folder's contents, never through a link); ``check_only`` decides the same way
and touches nothing. An unwritable folder is said before "it already holds files" (--overwrite would not
help). Every command that writes (prepare, synth, lm and export are checked here, through the CLI) claims its
--out before it writes anything: a location that cannot be made or written is one paragraph naming the
folder, exit status 2, no traceback, and nothing made.

The contract for :func:`atomic_writer` (and the byte, text, line and JSON writers, ``torch.save`` and the
ARPA writer over it): the target holds the old content or the new, never part of one; no temp file is left
after an error; a full disk is one message that names the file; the file gets 0666 & ~umask as ``open()``
would give it; a generator is written as it comes.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

import lowres.fsutil as fsutil
from lowres import LowresError
from lowres.fsutil import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_lines,
    atomic_writer,
    claim_folder,
    empty_folder,
)


def one_line(exc: pytest.ExceptionInfo) -> str:
    return " ".join(str(exc.value).split())


def listing(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (p.read_text() if p.is_file() else "/")
            for p in sorted(folder.rglob("*"))}


def holding(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file()


# ---------------------------------------------------------------------------------------------------
# claim_folder: the cases every command shares


def test_a_new_or_empty_folder_is_claimed(tmp_path):
    out = tmp_path / "a" / "b"
    assert claim_folder(out, what="run", overwrite=False) == "new"
    assert out.is_dir() and not any(out.iterdir())  # the write probe leaves nothing behind
    assert claim_folder(out, what="run", overwrite=False) == "new"
    assert claim_folder(out, what="run", overwrite=True, is_ours=is_run) == "new"  # empty: nothing to refuse


def test_a_file_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    out.write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(LowresError) as exc:
            claim_folder(out, what="prepared data", overwrite=overwrite)
        assert one_line(exc) == f"--out {out} is a file; give a folder for the prepared data."
    assert out.read_text() == "mine"


def test_a_folder_that_holds_files_needs_overwrite(tmp_path):
    out = holding(tmp_path / "out", **{"notes.txt": "mine"})
    with pytest.raises(LowresError) as exc:
        claim_folder(out, what="language model", overwrite=False)
    assert one_line(exc) == (f"The output folder {out} already holds files. Pass --overwrite to replace the "
                             "language model in it, or choose another --out.")
    with pytest.raises(LowresError) as exc:
        claim_folder(out, what="run", overwrite=False, hint="Use --resume to continue that run.")
    assert one_line(exc).endswith("already holds files. Use --resume to continue that run.")
    assert listing(out) == {"notes.txt": "mine"}


def test_overwrite_without_is_ours_removes_only_what_clear_names(tmp_path):
    out = holding(tmp_path / "out", **{"notes.txt": "mine", "report.json": "old"})

    def clear(folder: Path) -> None:
        (folder / "report.json").unlink(missing_ok=True)

    assert claim_folder(out, what="prepared data", overwrite=True, clear=clear) == "replaced"
    assert listing(out) == {"notes.txt": "mine"}


def test_overwrite_refuses_a_folder_that_is_not_ours(tmp_path):
    out = holding(tmp_path / "out", **{"notes.txt": "mine"})
    with pytest.raises(LowresError) as exc:
        claim_folder(out, what="run", overwrite=True, is_ours=is_run, not_ours="no lowres config.json")
    assert one_line(exc) == (f"--overwrite refused: {out} is not a lowres run folder (no lowres config.json), "
                             "so it may hold your own files. Choose an empty or new --out.")
    assert listing(out) == {"notes.txt": "mine"}


def test_overwrite_of_ours_empties_it_without_following_links(tmp_path):
    elsewhere = holding(tmp_path / "elsewhere", **{"keep.txt": "keep"})
    out = holding(tmp_path / "out", **{"config.json": "{}"})
    holding(out / "checkpoints", **{"latest": "step-1"})
    (out / "link").symlink_to(elsewhere, target_is_directory=True)
    mode = os.stat(out).st_mode
    assert claim_folder(out, what="run", overwrite=True, is_ours=is_run) == "replaced"
    assert out.is_dir() and not any(out.iterdir()) and os.stat(out).st_mode == mode  # the folder itself stays
    assert listing(elsewhere) == {"keep.txt": "keep"}


def test_empty_folder_keeps_the_folder(tmp_path):
    out = holding(tmp_path / "out", **{"a": "1"})
    holding(out / "sub" / "deeper", **{"b": "2"})
    empty_folder(out)
    assert out.is_dir() and listing(out) == {}


# ---------------------------------------------------------------------------------------------------
# resume and continue


def test_resume_and_overwrite_contradict(tmp_path):
    with pytest.raises(LowresError) as exc:
        claim_folder(tmp_path / "out", what="run", overwrite=True, resume=True, is_ours=is_run)
    assert "--resume and --overwrite contradict each other" in one_line(exc) and "Pick one" in one_line(exc)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("files", [None, {}, {"notes.txt": "mine"}])
def test_resume_needs_ours_to_continue(tmp_path, files):
    out = tmp_path / "out"
    if files is not None:
        holding(out, **files)
    with pytest.raises(LowresError) as exc:
        claim_folder(out, what="run", overwrite=False, resume=True, is_ours=is_run, not_ours="no config.json")
    assert one_line(exc) == (f"--resume: {out} holds no run to continue (no config.json). Drop --resume to "
                             "start a new run there.")
    assert (listing(out) if out.exists() else None) == files  # nothing made, nothing removed


def test_resume_keeps_everything(tmp_path):
    out = holding(tmp_path / "out", **{"config.json": "{}", "train.log": "step 1"})
    before = listing(out)
    for check_only in (True, False):
        assert claim_folder(out, what="run", overwrite=False, resume=True, is_ours=is_run,
                            check_only=check_only) == "resume"
        assert listing(out) == before


def test_continue_ours_without_a_flag(tmp_path):
    def is_demo(folder):
        return (folder / "demo.json").is_file()

    ours = holding(tmp_path / "demo", **{"demo.json": "{}", "done": "1"})
    assert claim_folder(ours, what="demo", overwrite=False, is_ours=is_demo, continue_ours=True) == "resume"
    assert listing(ours) == {"demo.json": "{}", "done": "1"}
    assert claim_folder(ours, what="demo", overwrite=True, is_ours=is_demo, continue_ours=True) == "replaced"
    assert listing(ours) == {}
    theirs = holding(tmp_path / "theirs", **{"notes.txt": "mine"})
    with pytest.raises(LowresError, match="already holds files"):
        claim_folder(theirs, what="demo", overwrite=False, is_ours=is_demo, continue_ours=True)
    with pytest.raises(LowresError, match="--overwrite refused"):
        claim_folder(theirs, what="demo", overwrite=True, is_ours=is_demo, continue_ours=True)
    assert listing(theirs) == {"notes.txt": "mine"}


# ---------------------------------------------------------------------------------------------------
# check_only: the same decision, nothing touched


def test_check_only_touches_nothing(tmp_path):
    new = tmp_path / "new" / "run"
    assert claim_folder(new, what="run", overwrite=False, check_only=True) == "new"
    assert not (tmp_path / "new").exists()
    ours = holding(tmp_path / "ours", **{"config.json": "{}"})
    assert claim_folder(ours, what="run", overwrite=True, is_ours=is_run, check_only=True) == "replaced"
    assert listing(ours) == {"config.json": "{}"}
    theirs = holding(tmp_path / "theirs", **{"notes.txt": "mine"})
    with pytest.raises(LowresError, match="--overwrite refused"):
        claim_folder(theirs, what="run", overwrite=True, is_ours=is_run, check_only=True)
    with pytest.raises(LowresError, match="already holds files"):
        claim_folder(theirs, what="run", overwrite=False, check_only=True)


# ---------------------------------------------------------------------------------------------------
# locations that cannot be written: one message naming the folder


@pytest.mark.parametrize("check_only", [False, True])
def test_a_folder_under_a_file_is_one_message(tmp_path, check_only):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub" / "out"
    with pytest.raises(LowresError) as exc:
        claim_folder(out, what="run", overwrite=False, check_only=check_only)
    assert one_line(exc) == (f"--out {out} cannot be created: {tmp_path / 'file'} is a file, not a folder. "
                             "Choose another --out.")


@pytest.mark.parametrize("code, says", [(errno.EACCES, "Permission denied"),
                                        (errno.EROFS, "mounted read-only"),
                                        (errno.EPERM, "Operation not permitted")])
def test_mkdir_refused_is_one_message(tmp_path, monkeypatch, code, says):
    out = tmp_path / "out"

    def mkdir(path, *a, **k):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(LowresError) as exc:
        claim_folder(out, what="prepared data", overwrite=False)
    assert one_line(exc).startswith(f"--out {out} cannot be created or written: ") and says in one_line(exc)
    assert "Choose another --out" in one_line(exc)


def test_an_existing_folder_that_takes_no_file_is_one_message(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()

    def mkstemp(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(out / ".lowres-probe.x"))

    monkeypatch.setattr(fsutil.tempfile, "mkstemp", mkstemp)  # mkdir of an existing folder succeeds anyway
    with pytest.raises(LowresError) as exc:
        claim_folder(out, what="run", overwrite=False)
    assert one_line(exc).startswith(f"--out {out} cannot be created or written: Permission denied")


def test_a_folder_that_cannot_be_listed_is_one_message(tmp_path, monkeypatch):
    out = holding(tmp_path / "out", **{"a": "1"})

    def iterdir(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(LowresError, match="cannot be created or written: Permission denied"):
        claim_folder(out, what="run", overwrite=False)


def test_check_only_sees_an_unwritable_parent(tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil.os, "access", lambda path, mode: Path(path) != tmp_path)
    out = tmp_path / "out"
    with pytest.raises(LowresError) as exc:
        claim_folder(out, what="run", overwrite=False, check_only=True)
    assert one_line(exc).startswith(f"--out {out} cannot be created or written: ") and str(tmp_path) in one_line(exc)
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_a_folder_in_proc_is_one_message():
    with pytest.raises(LowresError, match="cannot be created or written"):
        claim_folder(Path("/proc/lowres-test/out"), what="run", overwrite=False)


def test_the_cli_says_it_in_one_paragraph(tmp_path):
    from factory import table
    from typer.testing import CliRunner

    from lowres.cli import app

    (tmp_path / "file").write_text("x")
    corpus = table(tmp_path / "corpus" / "data.csv", n=4)
    res = CliRunner().invoke(app, ["prepare", str(corpus), "--out", str(tmp_path / "file" / "out"), "-q"])
    assert res.exit_code == 2, res.output
    assert "cannot be created" in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------------------------------------------
# the atomic writer


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(path, b"old")
    with atomic_writer(path) as f:
        f.write(b"new")
        assert path.read_bytes() == b"old"  # the target changes only when the block ends
    assert path.read_bytes() == b"new" and temp_files(path.parent) == []


def test_text_mode_is_utf8_with_newlines(tmp_path):
    path = tmp_path / "t.txt"
    with atomic_writer(path, text=True) as f:
        f.write("ŋa\nb\n")
    assert path.read_bytes() == "ŋa\nb\n".encode()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_permissions_are_those_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        with open(tmp_path / "b.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode)


def test_an_error_in_the_block_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_bytes(path, b"old")
    with pytest.raises(ValueError, match="boom"), atomic_writer(path) as f:
        f.write(b"half")
        raise ValueError("boom")
    assert path.read_bytes() == b"old" and temp_files(tmp_path) == []


def test_a_generator_is_streamed_into_the_temp_file(tmp_path):
    path = tmp_path / "m.jsonl"
    seen = []

    def lines():
        for i in range(3):
            seen.append(len(temp_files(tmp_path)))  # the temp file exists while the items are produced
            yield json.dumps({"i": i})
        raise LowresError("bad record")

    with pytest.raises(LowresError, match="bad record"):
        atomic_write_lines(path, lines())
    assert seen == [1, 1, 1] and not path.exists() and temp_files(tmp_path) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_one_message_and_keeps_the_old_file(tmp_path, monkeypatch, code):
    path = tmp_path / "f.json"
    atomic_write_json(path, {"v": 1})

    def fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fsutil.os, "fsync", fsync)
    with pytest.raises(LowresError) as exc:
        atomic_write_json(path, {"v": 2})
    assert one_line(exc).startswith(f"Could not write {path}: {os.strerror(code)}.")
    assert "intact" in one_line(exc) and "--resume" in one_line(exc)
    assert json.loads(path.read_text()) == {"v": 1} and temp_files(tmp_path) == []


def test_other_os_errors_are_not_hidden(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fsutil.os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_write_bytes(tmp_path / "f", b"x")
    assert temp_files(tmp_path) == []


def test_torch_save_goes_through_the_writer(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from lowres.train.checkpoint import _torch_save_atomic

    path = tmp_path / "trainer.pt"
    _torch_save_atomic({"step": 3, "w": torch.arange(4)}, path)
    state = torch.load(path, weights_only=True)
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(4))
    monkeypatch.setattr(fsutil.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(LowresError, match="No space left"):
        _torch_save_atomic({"step": 4}, path)
    assert torch.load(path, weights_only=True)["step"] == 3 and temp_files(tmp_path) == []


def test_arpa_goes_through_the_writer(tmp_path, monkeypatch):
    from lowres.lm.ngram import estimate, read_arpa, write_arpa

    model = estimate([["a", "b"], ["a", "c"], ["b", "c"]], order=2)
    path = tmp_path / "lm.arpa"
    write_arpa(model, path)
    assert read_arpa(path).counts == model.counts
    before = path.read_bytes()
    monkeypatch.setattr(fsutil.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(LowresError, match="No space left"):
        write_arpa(model, path)
    assert path.read_bytes() == before and temp_files(tmp_path) == []


# ---------------------------------------------------------------------------------------------------
# every command that writes claims its --out before it writes anything: an unwritable location is one
# paragraph naming the folder, exit status 2, and nothing is made (tests run as root, for whom a chmod'd
# folder is still writable, so the refusals are raised by patching os.mkdir, the write probe and os.access)


def _command_lines(tmp_path: Path, monkeypatch) -> dict:
    """``lowres CMD ... --out OUT`` for each command that writes; export's run is a stand-in (the claim
    comes before the run is read, and again before the first file is written)."""
    from types import SimpleNamespace

    from factory import table

    import lowres.bases as bases
    import lowres.model.hf_convert as hf_convert

    corpus = table(tmp_path / "corpus" / "data.csv", n=6)
    text = tmp_path / "sentences.txt"
    text.write_text("habari yako leo\nmaji ya kunywa\n", encoding="utf-8")
    run = holding(tmp_path / "run", **{"config.json": "{}"})
    spec = SimpleNamespace(family="wav2vec2", arch={}, normalize_waveform=False)
    model = SimpleNamespace(spec=spec, backbone=None, head=None, mask_emb=SimpleNamespace(detach=lambda: None))
    monkeypatch.setattr(bases, "load_run", lambda *a, **k: SimpleNamespace(model=model, vocab=["a", "b"]))
    monkeypatch.setattr(hf_convert, "to_hf_ctc", lambda *a, **k: None)

    def save(out, *a, **k):  # reached only when the claim let the export through
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "config.json").write_text("{}")

    monkeypatch.setattr(hf_convert, "save_hf_directory", save)
    prepared = tmp_path / "prepared"
    from factory import invoke

    assert invoke("prepare", corpus, "--out", prepared, "-q").exit_code == 0
    return {
        "finetune": lambda out: ["finetune", "--data", prepared, "--split", "full", "--base", "tiny", "--out", out,
                                 "--max-steps", 1, "-q"],
        "adapt": lambda out: ["adapt", "--unlabeled", corpus.parent, "--base", "tiny", "--out", out, "--max-steps", 1,
                              "-q"],
        "prepare": lambda out: ["prepare", corpus, "--out", out, "-q"],
        "synth": lambda out: ["synth", "--out", out, "--hours", "0.002", "--unlabeled-hours", "0", "--dev-hours",
                              "0.001", "--test-hours", "0.001", "--speakers", "3", "--workers", "1", "-q"],
        "lm": lambda out: ["lm", "--text", text, "--order", "2", "--out", out, "-q"],
        "export": lambda out: ["export", "--model", run, "--out", out],
    }


COMMANDS = ("prepare", "synth", "lm", "export", "finetune", "adapt")  # eval: tests/test_evaluate.py


def _refused(res, out: Path, says: str) -> None:
    text = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and not (res.exception and not isinstance(res.exception, SystemExit))
    assert text.startswith(f"error: --out {out} cannot be created"), text
    assert says in text and "Choose another --out" in text, text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_folder_under_a_file(tmp_path, monkeypatch, command):
    from factory import invoke

    lines = _command_lines(tmp_path, monkeypatch)
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub" / "out"
    _refused(invoke(*lines[command](out)), out, f"{tmp_path / 'file'} is a file, not a folder")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("code, says", [(errno.EACCES, "Permission denied"),
                                        (errno.EROFS, "(the file system is mounted read-only)"),
                                        (errno.EPERM, "Operation not permitted")])
def test_every_command_refuses_a_folder_it_cannot_make(tmp_path, monkeypatch, command, code, says):
    from factory import invoke

    lines = _command_lines(tmp_path, monkeypatch)
    parent = tmp_path / "locked"
    parent.mkdir()
    out = parent / "out"
    real_mkdir = os.mkdir

    def mkdir(path, *a, **k):
        if Path(path) == out or out in Path(path).parents:
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    _refused(invoke(*lines[command](out)), out, says)
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_an_existing_folder_that_takes_no_file(tmp_path, monkeypatch, command):
    from factory import invoke

    lines = _command_lines(tmp_path, monkeypatch)
    out = tmp_path / "out"
    out.mkdir()

    def mkstemp(*a, dir=None, **k):
        if dir is not None and Path(dir) == out:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(out / ".lowres-probe.x"))
        return real_mkstemp(*a, dir=dir, **k)

    real_mkstemp = fsutil.tempfile.mkstemp
    monkeypatch.setattr(fsutil.tempfile, "mkstemp", mkstemp)  # an immutable folder (chattr +i)
    _refused(invoke(*lines[command](out)), out, "Operation not permitted")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_read_only_mount_before_anything_else(tmp_path, monkeypatch, command):
    """A read-only folder that holds files: the message says it cannot be written, not "pass --overwrite"
    (which would not help), with or without --overwrite."""
    from factory import invoke

    lines = _command_lines(tmp_path, monkeypatch)
    out = holding(tmp_path / "mnt" / "out", **{"old.txt": "mine"})
    real_access = fsutil.os.access
    monkeypatch.setattr(fsutil.os, "access",
                        lambda p, mode: not (Path(p) == out and mode & os.W_OK) and real_access(p, mode))
    monkeypatch.setattr(fsutil, "_read_only_fs", lambda p: Path(p) == out)
    for extra in ([], ["--overwrite"]):
        _refused(invoke(*lines[command](out), *extra), out, "(the file system is mounted read-only)")
        assert listing(out) == {"old.txt": "mine"}


def test_remove_outputs_removes_only_the_named_files_and_folders(tmp_path):
    from lowres.fsutil import remove_outputs

    (tmp_path / "out.jsonl").write_text("x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.wav").write_text("x")
    (tmp_path / "mine.txt").write_text("keep")
    remove_outputs("out.jsonl", "data", "absent.json")(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
