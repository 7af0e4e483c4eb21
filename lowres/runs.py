"""Run folders: the one module that knows how a training run is stored.

A run folder (``--out`` of ``lowres finetune`` / ``lowres adapt``)::

    config.json        the run's record (:class:`RunRecord`): kind, resolved configuration, backbone spec,
                       base + fingerprint, text normalisation, vocabulary units, task extras (written first)
    vocab.json         (finetune) the prepared vocabulary, copied so the run is self-contained
    model.safetensors  the deliverable
    metrics.jsonl, train.log, learning_curve.png, summary.json, checkpoints/

Everything that reads or writes a run's files goes through here: the trainers (claim, record, resume) and
lowres/bases/resolve.py, which loads the weights a run trained (a recogniser for eval, transcribe and export; an
encoder for ``--base RUN``). Models never read run folders.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from lowres import LowresError, __version__

# the files and folders of a run, named here only
RUN_CONFIG = "config.json"  # the record (RunRecord), written first
RUN_WEIGHTS = "model.safetensors"  # the deliverable
RUN_VOCAB = "vocab.json"  # (finetune) the prepared vocabulary, copied
RUN_METRICS = "metrics.jsonl"  # one JSON row per logged update and per evaluation
RUN_LOG = "train.log"  # the same in words, with the plan and the notes
RUN_CURVE = "learning_curve.png"
RUN_SUMMARY = "summary.json"  # written when the run finishes
RUN_CHECKPOINTS = "checkpoints"  # lowres.train.checkpoint's folder (its layout is that module's)
RUN_DATA = "data"  # (adapt) the indexed, segmented audio when --unlabeled was a folder
RUN_UNITS = "units"  # (adapt --objective hubert) the k-means units and centroids
RUN_LAYER_WEIGHTS = "layer_weights.png"  # (finetune --head weighted)
LOCK_NAME = ".lowres.lock"  # held (flock) by the process training in the folder; says who that is

# config.json keys of the record itself; every other key is a task extra (kept as is, in order)
_CORE = ("lowres_run", "lowres_version", "config", "backbone", "base", "base_fingerprint", "vocab_units", "text",
         "created")


@dataclass(frozen=True)
class RunRecord:
    """What ``config.json`` says about a run. Written once when the run starts; read by resume, eval,
    transcribe, export and by runs that use this one as their base."""

    kind: str  # the command that made it: finetune | adapt
    config: dict  # the resolved configuration (config.to_dict of FinetuneConfig / AdaptConfig)
    backbone: dict  # BackboneSpec.to_dict(): rebuilds the architecture
    base: str  # what --base was (a name, or an absolute path)
    base_fingerprint: str = ""  # of the base weights, to detect a base that changed on disk
    text: dict | None = None  # (finetune) the prepared folder's text normalisation
    vocab_units: str | None = None  # (finetune) grapheme | codepoint
    extras: dict = field(default_factory=dict)  # task extras (manifests, build info, heads shapes, ...)
    version: str = __version__  # lowres version that started the run
    created: str = ""

    def to_json(self) -> dict:
        """The config.json layout (unchanged since the first lowres runs)."""
        out = {"lowres_run": self.kind, "lowres_version": self.version, "config": self.config,
               "backbone": self.backbone, "base": self.base, "base_fingerprint": self.base_fingerprint}
        if self.vocab_units is not None:
            out["vocab_units"] = self.vocab_units
        if self.text is not None:
            out["text"] = self.text
        out.update(self.extras)
        out["created"] = self.created or time.strftime("%Y-%m-%d %H:%M:%S")
        return out

    @classmethod
    def from_json(cls, data: dict) -> RunRecord:
        return cls(kind=data["lowres_run"], config=data.get("config", {}), backbone=data.get("backbone", {}),
                   base=data.get("base", ""), base_fingerprint=data.get("base_fingerprint") or "",
                   text=data.get("text"), vocab_units=data.get("vocab_units"),
                   extras={k: v for k, v in data.items() if k not in _CORE},
                   version=data.get("lowres_version", ""), created=data.get("created", ""))

    def typed_config(self, config_class):
        """The configuration as its dataclass (strict: an unknown key is an error)."""
        from lowres.config import from_dict

        config = self.config
        train = config.get("train")
        if self.kind == "finetune" and isinstance(train, dict) and "feature_cache" not in train:
            # recorded before the feature cache existed: the run trained without it, and resumes so
            config = {**config, "train": {**train, "feature_cache": False}}
        return from_dict(config_class, config)

    def spec(self):
        from lowres.model.backbone import BackboneSpec

        return BackboneSpec.from_dict(self.backbone)


def is_run(folder: Path) -> bool:
    """Whether ``folder`` holds a lowres run (a config.json with its 'lowres_run' key)."""
    meta = Path(folder) / RUN_CONFIG
    if not meta.is_file():
        return False
    try:
        return "lowres_run" in json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False


def read_run(run: Path) -> RunRecord:
    path = Path(run) / RUN_CONFIG
    if not path.is_file():
        raise LowresError(f"{run} is not a lowres run folder (no {RUN_CONFIG}). Pass the --out folder of "
                          "`lowres finetune` or `lowres adapt`.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LowresError(f"{path} is not valid JSON ({exc}); the run folder is damaged.") from None
    if not isinstance(data, dict) or "lowres_run" not in data:
        raise LowresError(f"{path} was not written by lowres (no 'lowres_run' key).")
    return RunRecord.from_json(data)


def write_run(run: Path, record: RunRecord) -> None:
    from lowres.fsutil import atomic_write_json

    atomic_write_json(Path(run) / RUN_CONFIG, record.to_json())


# ---------------------------------------------------------------------------------------------------
# claiming a folder, resuming


def claim_run_folder(out: Path, *, resume: bool, overwrite: bool, check_only: bool = False) -> str:
    """'new' | 'resume'. Never deletes anything that does not look like a lowres run unless it is empty, and
    never touches a folder another lowres process is training in (its lock names that process).
    ``check_only``: say whether the folder could be claimed, touching nothing (before the inputs are read)."""
    from lowres.fsutil import claim_folder

    RunLock.refuse_if_held(Path(out))
    mode = claim_folder(out, what="run", overwrite=overwrite, resume=resume, check_only=check_only, is_ours=is_run,
                        not_ours="no lowres config.json", ignore=(LOCK_NAME,),
                        hint="Use --resume to continue that run, --overwrite to replace it, or another --out.")
    return "resume" if mode == "resume" else "new"


class RunLock:
    """An exclusive lock on a run folder for the life of the process that trains in it: ``flock`` on
    ``OUT/.lowres.lock``, which also records who holds it (pid, host, start, command) for the message a second
    process gets. The kernel releases the lock when the process ends, however it ends (a SIGKILL included),
    so a stale lock file never blocks a later run."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    @staticmethod
    def _holder(path: Path) -> str:
        try:
            who = json.loads(path.read_text(encoding="utf-8"))
            return (f"pid {who.get('pid')} on {who.get('host')}, started {who.get('started')}: "
                    f"`{who.get('command')}`")
        except (OSError, ValueError):
            return "a process whose details could not be read"

    @classmethod
    def refuse_if_held(cls, folder: Path) -> None:
        """LowresError naming the holder when another process holds ``folder``'s lock."""
        import fcntl

        path = folder / LOCK_NAME
        if not path.is_file():
            return
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            raise LowresError(f"{folder} is in use: another lowres process is training there "
                              f"({cls._holder(path)}). Wait for it to end (then --resume continues the run), or "
                              "give another --out.") from None
        finally:
            os.close(fd)

    @classmethod
    def take(cls, folder: Path) -> RunLock:
        import fcntl
        import socket
        import sys

        path = Path(folder) / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise LowresError(f"Could not create the run's lock file {path}: {exc.strerror or exc}. Check that the "
                              "folder is writable.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LowresError(f"{folder} is in use: another lowres process is training there "
                              f"({cls._holder(path)}). Wait for it to end (then --resume continues the run), or "
                              "give another --out.") from None
        who = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "command": " ".join(["lowres", *sys.argv[1:]]) if sys.argv else "lowres"}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(who) + "\n").encode())
        return cls(fd, path)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = -1


# what --resume may change: the length of the run and how the global batch is laid out on the machine
# (another world size under torchrun wants another accumulate to keep the same global batch; gradient
# checkpointing trades memory for time and gives the same gradients)
RESUME_SETTINGS = ("max_steps", "accumulate", "device", "num_workers", "threads", "gradient_checkpointing",
                   "feature_cache_mb", "save_every", "save_minutes")
# the run's inputs, named by their flags: a resume must not point the run at other ones
_INPUT_FLAGS = {"data": "--data", "split": "--split", "base": "--base", "unlabeled": "--unlabeled"}


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _same_input(saved: str, given: str, run: Path) -> bool:
    if saved == given:
        return True
    a, b = recorded_base_path(saved, run) or Path(saved), Path(given)
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def resume_config(out: Path, kind: str, config_class, changes: dict | None = None,
                  max_steps_override: int | None = None):
    """(record, the run's own configuration, as resumed) of the run in ``out``.

    ``changes`` is what the resuming command line asked for, nested like the configuration: the values of
    its --recipe, --set and explicit flags (``data``/``split``/``base``/``unlabeled`` at the top when given).
    The train settings in RESUME_SETTINGS are applied; any other setting, and every input, must equal the
    run's (so the original command line with --resume added works), else the resume is refused."""
    from lowres.config import flat_keys, merge, to_dict

    record = read_run(out)
    if record.kind != kind:
        raise LowresError(f"--resume: {out} is not {_article(kind)} {kind} run (it is a lowres {record.kind} run).")
    saved = record.typed_config(config_class)
    changes = {k: dict(v) if isinstance(v, dict) else v for k, v in (changes or {}).items()}
    for key, flag in _INPUT_FLAGS.items():
        given = changes.pop(key, None)
        if given is None:
            continue
        own = str(getattr(saved, key, ""))
        if not _same_input(own, str(given), Path(out)):
            raise LowresError(f"--resume continues the run in {out} with its own {flag} ({own}); this command gives "
                              f"{flag} {given}. Drop {flag} to continue the run, or start a new run (another --out) "
                              f"with {flag} {given}.")
    train = changes.pop("train", {})
    allowed = {k: train.pop(k) for k in list(train) if k in RESUME_SETTINGS and train[k] is not None}
    if max_steps_override is not None:
        allowed["max_steps"] = max_steps_override
    if train:
        changes["train"] = train
    if changes:
        before, after = flat_keys(to_dict(saved)), flat_keys(to_dict(merge(saved, changes)))
        differ = [k for k in after if after[k] != before.get(k)]
        if differ:
            raise LowresError(f"--resume continues the run with its own settings; {', '.join(differ)} cannot change "
                              f"(only train.{', train.'.join(RESUME_SETTINGS)} can). Start a new run (another "
                              "--out) to change the others.")
    cfg = merge(saved, {"train": allowed}) if allowed else saved
    return record, cfg


def _path_like(base: str) -> bool:
    """A recorded --base that names a folder (base names such as tiny or xls-r-300m have no slash)."""
    return "/" in base or os.sep in base or base.startswith(".")


def recorded_base_path(base: str, run: Path) -> Path | None:
    """The folder a run recorded as its base (relative ones are relative to the run folder), or None where it
    recorded a name."""
    if not base or not _path_like(base):
        return None
    path = Path(base)
    return path if path.is_absolute() else Path(os.path.normpath(Path(run).resolve() / path))


def stored_base(base: str, run: Path) -> str:
    """How a run records its --base: a name as is; a folder relative to the run when it lies beside it (inside
    the run folder's parent, as runs/sw-adapt beside runs/sw-1h), so that the two can be copied or moved
    together; any other folder by its absolute path."""
    if not base or not Path(base).is_dir():
        return base
    target, home = Path(base).resolve(), Path(run).resolve()
    if home.parent in target.parents or target == home.parent:
        return os.path.relpath(target, home)
    return str(target)
