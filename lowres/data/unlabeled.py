"""Unlabeled audio for the self-supervised objectives (``lowres adapt``): the pieces of an
``unlabeled.jsonl`` (or a folder of audio indexed and cut like ``prepare --unlabeled``), randomly cropped.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from lowres import LowresError


class CropDataset(torch.utils.data.Dataset):
    """Unlabeled pieces, randomly cropped to at most ``crop_max_s`` (seeded by seed, epoch, index)."""

    def __init__(self, utts, crop_max_s: float, seed: int):
        self.utts, self.crop_max_s, self.seed = list(utts), crop_max_s, seed

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, key):
        from lowres.data import audio as audio_mod
        from lowres.data.batching import Key

        if isinstance(key, int):
            key = Key(key)
        u = self.utts[key.index]
        offset, duration = u.offset, u.duration
        if duration > self.crop_max_s:
            rng = random.Random((self.seed * 1_000_003 + key.epoch * 65_537 + key.index) % 2**32)
            offset += rng.uniform(0.0, duration - self.crop_max_s)
            duration = self.crop_max_s
        try:
            wave = audio_mod.load(u.audio_filepath, offset, duration)
        except audio_mod.AudioError as exc:
            return {"index": key.index, "error": f"{u.audio_filepath}: {exc.detail}"}
        return {"index": key.index, "wave": wave}


def check_unlabeled_source(source: Path) -> None:
    """``--unlabeled`` exists; an ``unlabeled.jsonl`` is read through (a bad line stops the run, naming it)."""
    from lowres.data.manifest import read_manifest

    if source.is_file():
        for _ in read_manifest(source):
            pass
    elif not source.is_dir():
        raise LowresError(f"--unlabeled {source}: no such file or folder. Give a folder of audio or the "
                          "unlabeled.jsonl written by `lowres prepare --unlabeled`.")


def unlabeled_manifest(source: Path, out: Path, console=None) -> Path:
    """``--unlabeled`` (checked by :func:`check_unlabeled_source`): an ``unlabeled.jsonl`` as is, or a folder
    indexed and cut like ``prepare --unlabeled``."""
    source = Path(source)
    if source.is_file():
        return source
    from lowres.config import PrepareConfig
    from lowres.data.prepare import prepare

    target = out / "data"
    if (target / "unlabeled.jsonl").is_file():
        return target / "unlabeled.jsonl"
    prepare(None, target, PrepareConfig(), unlabeled=source, console=console)
    return target / "unlabeled.jsonl"
