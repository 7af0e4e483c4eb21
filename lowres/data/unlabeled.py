"""Unlabeled audio for the self-supervised objectives (``lowres adapt``): the pieces of an
``unlabeled.jsonl`` (or a folder of audio indexed and cut like ``prepare --unlabeled``), randomly cropped.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from lowres import LowresError
from lowres.audiotime import FRAME_S, frames


class CropDataset(torch.utils.data.Dataset):
    """Unlabeled pieces, randomly cropped to at most ``crop_max_s`` (seeded by seed, epoch, index).

    With ``units`` (lowres.units.Units, one row per piece), each item also carries the units of its crop as
    ``labels``: crops then start on a 20 ms frame boundary of the piece, so crop frame t is piece frame
    start + t."""

    def __init__(self, utts, crop_max_s: float, seed: int, units=None):
        self.utts, self.crop_max_s, self.seed, self.units = list(utts), crop_max_s, seed, units

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, key):
        from lowres.data import audio as audio_mod
        from lowres.data.batching import Key

        if isinstance(key, int):
            key = Key(key)
        u = self.utts[key.index]
        offset, duration = u.offset, u.duration
        start = 0.0
        if duration > self.crop_max_s:
            rng = random.Random((self.seed * 1_000_003 + key.epoch * 65_537 + key.index) % 2**32)
            start = rng.uniform(0.0, duration - self.crop_max_s)
            if self.units is not None:
                start = FRAME_S * int(start / FRAME_S)
            offset += start
            duration = self.crop_max_s
        try:
            wave = audio_mod.load(u.audio_filepath, offset, duration)
        except audio_mod.AudioError as exc:
            return {"index": key.index, "error": f"{u.audio_filepath}: {exc.detail}"}
        item = {"index": key.index, "wave": wave}
        if self.units is not None:
            first = int(round(start / FRAME_S))
            item["labels"] = self.units.of(key.index)[first: first + frames(len(wave))].tolist()
        return item


def check_unlabeled_source(source: Path) -> None:
    """``--unlabeled`` exists; an ``unlabeled.jsonl`` is read through (a bad line stops the run, naming it)."""
    from lowres.data.manifest import read_manifest

    if source.is_file():
        for _ in read_manifest(source):
            pass
    elif not source.is_dir():
        raise LowresError(f"--unlabeled {source}: no such file or folder. Give a folder of audio or the "
                          "unlabeled.jsonl written by `lowres prepare --unlabeled`.")


def unlabeled_manifest(source: Path, target: Path, console=None) -> Path:
    """``--unlabeled`` (checked by :func:`check_unlabeled_source`): an ``unlabeled.jsonl`` as is, or a folder
    indexed and cut like ``prepare --unlabeled`` into the prepared folder ``target`` (once)."""
    source = Path(source)
    if source.is_file():
        return source
    from lowres.config import PrepareConfig
    from lowres.data.prepare import prepare
    from lowres.data.prepared import UNLABELED

    if (target / UNLABELED).is_file():
        return target / UNLABELED
    prepare(None, target, PrepareConfig(), unlabeled=source, console=console)
    return target / UNLABELED
