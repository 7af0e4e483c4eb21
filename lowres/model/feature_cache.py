"""Cached conv features for fine-tuning (``train.feature_cache``).

When the conv feature encoder is frozen and no waveform augmentation is on, a clip's conv features are the
same in every epoch: they are computed once, stored in fp16 and reused. Storage is bounded: the first
``train.feature_cache_mb`` megabytes stay in memory, the rest spill to ``RUN/feature_cache/`` (one ``.npy``
per clip, no pickle) and the folder is removed when the run ends.

Exactness: the features a batch uses are rounded to fp16 on every visit, the first one included, so a clip
gives the same numbers whether they were just computed or read back, whatever the batch it is in (the conv
encoder is exact under padding: backbone.conv_features), and a resumed run (whose cache starts empty) takes
the same steps as an uninterrupted one. The only change against running without the cache is that one
rounding of the conv output to fp16.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

CACHE_DIR = "feature_cache"


class ConvFeatureCache:
    def __init__(self, memory_mb: float, spill_dir: Path | None):
        self.budget = int(memory_mb * 2**20)
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.memory: dict[int, Tensor] = {}
        self.on_disk: set[int] = set()
        self.used = 0  # bytes held in memory
        self.hits = 0  # clips served from the cache
        self.misses = 0  # clips whose conv features were computed

    def __contains__(self, key: int) -> bool:
        return key in self.memory or key in self.on_disk

    def _file(self, key: int) -> Path:
        return self.spill_dir / f"{key}.npy"

    def get(self, key: int) -> Tensor:
        if key in self.memory:
            return self.memory[key]
        return torch.from_numpy(np.load(self._file(key), allow_pickle=False))

    def put(self, key: int, feats: Tensor) -> None:
        """``feats``: (frames, ...) of one clip, already fp16 and on the CPU."""
        size = feats.numel() * feats.element_size()
        if self.used + size <= self.budget or self.spill_dir is None:
            if self.used + size > self.budget:  # nowhere to spill: the clip is simply not kept
                return
            self.memory[key] = feats
            self.used += size
            return
        if not self.on_disk and self.spill_dir.exists():  # left by a run that stopped: the cache starts empty
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            parent = self.spill_dir.parent
            if parent.name == CACHE_DIR and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.spill_dir / f".{key}.tmp.npy"
        np.save(tmp, feats.numpy(), allow_pickle=False)
        tmp.replace(self._file(key))
        self.on_disk.add(key)

    def features(self, keys: list[int], frames: Tensor, total: int, compute) -> Tensor:
        """(B, total, ...) float32 features of the clips ``keys`` (``frames`` valid frames each, ``total`` the
        padded batch's frames), from the cache when every clip is in it, else from ``compute()`` (which runs
        the frozen part on the whole batch and returns (B, total, ...)), rounded to fp16 either way. Padded
        frames read back as zeros: the models mask them frame by frame before anything mixes frames, so their
        values never matter."""
        if all(k in self for k in keys):
            self.hits += len(keys)
            rows = [self.get(k) for k in keys]
            out = rows[0].new_zeros((len(rows), total, *rows[0].shape[1:]))
            for i, r in enumerate(rows):
                out[i, : r.shape[0]] = r
            return out.to(device=frames.device, dtype=torch.float32)
        rounded = compute().detach().to(torch.float16)
        cpu = rounded.cpu()
        for i, k in enumerate(keys):
            if k in self:
                self.hits += 1
            else:
                self.misses += 1
                self.put(k, cpu[i, : int(frames[i])].clone())
        return rounded.float()

    def batch(self, keys: list[int], lengths: Tensor, samples: int, frame_lengths, compute) -> tuple[Tensor, Tensor]:
        """(features, frame lengths) of a padded batch of ``samples`` samples per row: the models' one call.
        ``frame_lengths`` maps sample lengths to frame lengths; ``compute`` is as for :meth:`features`."""
        frames = frame_lengths(lengths)
        total = int(frame_lengths(torch.tensor([samples]))[0])
        return self.features(keys, frames, total, compute), frames

    def report(self) -> dict:
        return {"clips": len(self.memory) + len(self.on_disk), "in_memory_mb": round(self.used / 2**20, 1),
                "spilled_clips": len(self.on_disk), "hits": self.hits, "misses": self.misses}

    def close(self) -> None:
        """Remove the spilled files (the cache is only for this run's epochs)."""
        if self.spill_dir is not None and self.spill_dir.is_dir():
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            parent = self.spill_dir.parent
            if parent.name == CACHE_DIR and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
