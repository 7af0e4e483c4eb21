"""Run folders: the one module that knows how a training run is stored.

A run folder (``--out`` of ``lowres finetune`` / ``lowres adapt``)::

    config.json        the run's record (:class:`RunRecord`): kind, resolved configuration, backbone spec,
                       base + fingerprint, text normalisation, vocabulary units, task extras (written first)
    vocab.json         (finetune) the prepared vocabulary, copied so the run is self-contained
    model.safetensors  the deliverable
    metrics.jsonl, train.log, learning_curve.png, summary.json, checkpoints/

Everything that reads or writes a run goes through here: the trainers (claim, record, resume), evaluation
and inference (:func:`load_run`), and ``--base RUN`` (:func:`load_base`). Models never read run folders.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from lowres import LowresError, __version__

RUN_CONFIG = "config.json"
RUN_WEIGHTS = "model.safetensors"
RUN_VOCAB = "vocab.json"
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
    def _describe(path: Path) -> str:
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
                              f"({cls._describe(path)}). Wait for it to end (then --resume continues the run), or "
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
                              f"({cls._describe(path)}). Wait for it to end (then --resume continues the run), or "
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
                   "feature_cache_mb")
# the run's inputs, named by their flags: a resume must not point the run at other ones
_INPUT_FLAGS = {"data": "--data", "split": "--split", "base": "--base", "unlabeled": "--unlabeled"}


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _same_input(saved: str, given: str, run: Path) -> bool:
    if saved == given:
        return True
    a, b = _recorded_path(saved, run), Path(given)
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


def _recorded_path(base: str, run: Path) -> Path:
    """A recorded folder: relative ones are relative to the run folder."""
    path = Path(base)
    return path if path.is_absolute() or not _path_like(base) else Path(os.path.normpath(Path(run).resolve() / path))


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


def locate_base(record: RunRecord, run: Path) -> str:
    """Where the run's base is now: a name as is; a recorded folder if it is still there (relative ones
    resolved against the run), else a folder beside the run whose weights have the recorded fingerprint
    (the base was moved or renamed with the run); otherwise a message saying which base is missing."""
    base = record.base
    if not base or not _path_like(base):
        return base
    path = _recorded_path(base, run)
    if path.is_dir():
        return str(path)
    found = _base_by_fingerprint(record, Path(run), path.name)
    if found is not None:
        return str(found)
    recorded = f" (recorded as {base})" if str(path) != base else ""
    raise LowresError(
        f"{run} was trained from the base {path}{recorded}, which is not there any more. Put that folder back, or "
        f"copy it next to the run (into {Path(run).resolve().parent}/): lowres finds a moved base there by its "
        f"fingerprint ({record.base_fingerprint or 'none recorded'}).")


def _base_by_fingerprint(record: RunRecord, run: Path, name: str) -> Path | None:
    """A folder next to ``run`` (the one with the base's old name first) whose weights have the recorded
    fingerprint. Lowres runs with another architecture are skipped unread; other folders are loaded."""
    if not record.base_fingerprint:
        return None
    here = run.resolve()
    candidates = [p for p in sorted(here.parent.iterdir()) if p.is_dir() and p != here and (p / RUN_CONFIG).is_file()]
    candidates.sort(key=lambda p: p.name != name)
    for folder in candidates:
        if is_run(folder):
            try:
                if read_run(folder).backbone.get("arch") != record.backbone.get("arch"):
                    continue
            except LowresError:
                continue
        try:
            if load_base(str(folder)).fingerprint == record.base_fingerprint:
                return folder
        except Exception:  # noqa: BLE001 - a folder that does not load is simply not the base
            continue
    return None


# ---------------------------------------------------------------------------------------------------
# bases and recognisers


def load_base(base: str, seed: int = 0):
    """Resolve ``--base``: a lowres run folder (its encoder), else whatever model/backbone.py knows (a
    random-init config name, a torchaudio bundle name, a local Hugging Face folder)."""
    from lowres.model.backbone import load_backbone

    if base and Path(base).is_dir() and is_run(Path(base)):
        return load_encoder(Path(base))
    return load_backbone(base, seed=seed)


def default_objective(base: str) -> str:
    """``--objective auto``: HuBERT's masked prediction for HuBERT and WavLM bases (their own objective) and for
    a random initialisation (the contrastive objective does not learn from scratch at lowres's scale:
    benchmarks/README.md); wav2vec 2.0's for wav2vec 2.0 / XLS-R / MMS bases. Read from names and config
    files only, without loading weights."""
    from lowres.bases import describe, shipped_names
    from lowres.model.backbone import NAMED_BUNDLES, RANDOM_CONFIGS

    if base in RANDOM_CONFIGS:
        return "hubert"
    if base in shipped_names():  # the objective it was trained with
        return describe(base).get("objective", "hubert")
    if base in NAMED_BUNDLES:
        return "wav2vec2" if NAMED_BUNDLES[base][1] == "wav2vec2" else "hubert"
    folder = Path(base) if base else None
    if folder is None or not (folder / RUN_CONFIG).is_file():
        return "wav2vec2"
    try:
        data = json.loads((folder / RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "wav2vec2"
    if "lowres_run" in data:
        if data.get("config", {}).get("objective"):
            return data["config"]["objective"]
        return "wav2vec2" if data.get("backbone", {}).get("family", "wav2vec2") == "wav2vec2" else "hubert"
    return "hubert" if data.get("model_type") in ("hubert", "wavlm") else "wav2vec2"


def rebuild_base(record: RunRecord, seed: int, run: Path):
    """The base of the run in ``run``, rebuilt: random-init architectures from the saved spec (their weights are
    all in the run), everything else from where the base is now (:func:`locate_base`), checked against its
    fingerprint."""
    import torch

    from lowres.model.backbone import RANDOM_CONFIGS, LoadedBackbone, build_model

    spec = record.spec()
    if not spec.pretrained:
        if spec.name in RANDOM_CONFIGS and RANDOM_CONFIGS[spec.name] == spec:
            return load_base(spec.name, seed=seed)  # the initial weights a new run had (a restart from update 0)
        torch.manual_seed(seed)
        return LoadedBackbone(build_model(spec), spec, source=f"architecture of {spec.name}")
    where = locate_base(record, run)
    loaded = load_base(where, seed=seed)
    want = record.base_fingerprint
    if want and loaded.fingerprint and loaded.fingerprint != want:
        raise LowresError(
            f"The base {where} is not the one the run {run} was trained on (its weights changed since). "
            "Use the same base checkpoint, or fine-tune again."
        )
    return loaded


def _read_weights(run: Path, path: Path, kind: str) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise LowresError(f"{run} has no {path.name}: the {kind} run has not saved a model yet (did it finish? "
                          f"`lowres {kind} --resume` continues it).")
    return load_file(str(path))


@dataclass
class LoadedRun:
    model: object  # model.ctc.CTCModel (or model.weighted.WeightedLayerCTC), in eval mode, on the device
    vocab: object  # data.vocab.Vocab
    config: object  # config.FinetuneConfig
    record: RunRecord

    @property
    def meta(self) -> dict:
        """The run's config.json as a dict."""
        return self.record.to_json()


def load_run(run: str | Path, device="cpu", merge: bool = True, weights: Path | None = None) -> LoadedRun:
    """A fine-tuned recogniser from its run folder (LoRA merged into the base for fast inference). The
    recogniser is the one its recorded ``head.kind`` names; the base is rebuilt and the saved weights (what the
    run trained) loaded over it."""
    from lowres.config import FinetuneConfig
    from lowres.data.vocab import Vocab
    from lowres.model.build import build_recogniser
    from lowres.model.lora import has_lora, merge_lora

    run = Path(run)
    record = read_run(run)
    if record.kind != "finetune":
        raise LowresError(f"{run} is a lowres {record.kind} run, not a fine-tuned recogniser. Fine-tune it "
                          f"first: lowres finetune --base {run} ...")
    cfg = record.typed_config(FinetuneConfig)
    vocab = Vocab.load(run / RUN_VOCAB, units=record.vocab_units or "grapheme")
    loaded = rebuild_base(record, cfg.train.seed, run)
    model, _ = build_recogniser(cfg, len(vocab), loaded)
    path = weights or run / RUN_WEIGHTS
    missing, unexpected = model.load_state_dict(_read_weights(run, path, "finetune"), strict=False)
    if unexpected:
        raise LowresError(f"{path} does not fit the model rebuilt from {run / RUN_CONFIG}: unexpected weights "
                          f"{unexpected[:3]}...")
    del missing  # everything not saved comes from the base
    if merge and has_lora(model):
        merge_lora(model.backbone.encoder.transformer)
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad = False
    return LoadedRun(model, vocab, cfg, record)


def load_encoder(run: Path):
    """The encoder of a run folder, as a base for another run (``--base RUN``): a finetune run's backbone
    (LoRA merged, CTC head dropped), or an adapt run's adapted backbone with its mask embedding and
    pretraining heads."""
    from lowres.model.backbone import BackboneSpec, LoadedBackbone, build_model, fingerprint

    run = Path(run)
    record = read_run(run)
    heads: dict = {}
    if record.kind == "finetune":
        recogniser = load_run(run, merge=True)
        backbone = recogniser.model.backbone
        mask = getattr(recogniser.model, "mask_emb", None)  # a weighted head's run has none (its base is unchanged)
        mask = mask.detach().clone() if mask is not None else None
    elif record.kind != "adapt":
        raise LowresError(f"{run}: a lowres {record.kind!r} run holds no encoder lowres can continue from.")
    else:
        path = run / RUN_WEIGHTS
        state = _read_weights(run, path, "adapt")
        backbone = build_model(record.spec())
        missing, _ = backbone.load_state_dict(
            {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, strict=False)
        if missing:
            raise LowresError(f"{path} lacks backbone weights {missing[:3]}...: not a complete adapt deliverable.")
        if record.config.get("objective", "wav2vec2") == "wav2vec2":  # a codebook the next adapt can import
            heads = {k.removeprefix("heads."): v for k, v in state.items() if k.startswith("heads.")}
        mask = state["mask_emb"]
    spec = record.spec()
    spec = BackboneSpec(spec.family, spec.arch, spec.normalize_waveform, True, str(run.resolve()))
    for p in backbone.parameters():
        p.requires_grad = True
    backbone.train()
    return LoadedBackbone(backbone, spec, mask, heads, fingerprint(backbone), source=f"lowres {record.kind} run {run}")


def encoder_state(backbone, mask_emb, heads) -> dict:
    """An adapt run's deliverable (model.safetensors): ``backbone.*`` (LoRA merged), ``heads.*`` (the
    pretraining heads) and ``mask_emb``; :func:`load_encoder` reads it back."""
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"heads.{k}": v for k, v in heads.state_dict().items()})
    state["mask_emb"] = mask_emb.detach()
    return state
