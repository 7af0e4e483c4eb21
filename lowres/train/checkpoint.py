"""Crash-safe checkpoints: everything needed to resume exactly, and nothing that needs unpickling.

Layout inside a run folder::

    checkpoints/step-00000500/model.safetensors   the trained weights (safetensors)
    checkpoints/step-00000500/trainer.pt          optimizer state, step, data position (torch.load weights_only)
    checkpoints/step-00000500/meta.json           step and counters (JSON); written last = complete
    checkpoints/latest                            name of the newest complete checkpoint (atomic rename)

A checkpoint folder is filled first and only then named in ``latest``; a process killed at any point leaves
the previous checkpoint loadable. Older checkpoints beyond ``keep`` are removed after the pointer moves.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from lowres import LowresError
from lowres.fsutil import (
    atomic_write_json,
    atomic_write_text,
    atomic_writer,
    save_safetensors,
)
from lowres.runs import RUN_CHECKPOINTS

LATEST = "latest"


def _torch_save_atomic(obj, path: Path) -> None:
    """``torch.save`` streamed into fsutil's atomic writer (no second copy of the state in memory)."""
    try:
        with atomic_writer(path) as f:
            torch.save(obj, f)
    except OSError as exc:  # beyond the writer's full-disk cases (an I/O error, a file too big): still one message
        raise LowresError(f"Could not write {path}: {exc.strerror or exc}. The disk may be full; the previous "
                          "checkpoint is intact. Free some space and continue with --resume.") from None


def save_checkpoint(run: str | os.PathLike, step: int, weights: dict, trainer_state: dict, meta: dict,
                    keep: int = 2) -> Path:
    folder = Path(run) / RUN_CHECKPOINTS / f"step-{step:08d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_safetensors(folder / "model.safetensors", weights)
    _torch_save_atomic(trainer_state, folder / "trainer.pt")
    atomic_write_json(folder / "meta.json", {"step": step, **meta})
    atomic_write_text(Path(run) / RUN_CHECKPOINTS / LATEST, folder.name + "\n")
    _prune(Path(run) / RUN_CHECKPOINTS, keep, current=folder.name)
    return folder


def _prune(folder: Path, keep: int, current: str) -> None:
    done = sorted(p for p in folder.glob("step-*") if (p / "meta.json").is_file())
    for old in done[:-keep] if keep > 0 else []:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)
    for partial in folder.glob("step-*"):  # left by a killed writer
        if not (partial / "meta.json").is_file() and partial.name != current:
            shutil.rmtree(partial, ignore_errors=True)


def latest_checkpoint(run: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint: the one ``latest`` names, else the newest folder with its meta.json."""
    folder = Path(run) / RUN_CHECKPOINTS
    pointer = folder / LATEST
    if pointer.is_file():
        name = pointer.read_text().strip()
        if name and (folder / name / "meta.json").is_file():
            return folder / name
    done = sorted(p for p in folder.glob("step-*") if (p / "meta.json").is_file())
    return done[-1] if done else None


def load_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """(weights, trainer state, meta) of a checkpoint folder. No arbitrary unpickling: safetensors, JSON and
    ``torch.load(weights_only=True)``."""
    from safetensors.torch import load_file

    try:
        weights = load_file(str(path / "model.safetensors"))
        state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
        meta = json.loads((path / "meta.json").read_text())
    except Exception as exc:
        if type(exc).__name__ == "UnpicklingError":  # torch's own text advises weights_only=False: never that
            why = ("trainer.pt holds Python objects besides tensors and plain data; lowres never unpickles "
                   "arbitrary objects, so a checkpoint it did not write, or one that was altered, is refused")
        else:
            why = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        raise LowresError(f"Checkpoint {path} cannot be read ({why}). Delete that folder to fall back to the "
                          "previous checkpoint.") from None
    return weights, state, meta
