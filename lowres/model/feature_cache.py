"""Cached conv features for fine-tuning (``train.feature_cache``).

When the conv feature encoder is frozen (or its lowest ``model.frozen_conv_layers``) and no waveform
augmentation is on (or only speed perturbation in ``augment.speed_steps``, one copy per clip and speed), a
clip's frozen conv output is the same in every epoch: they are computed once, stored in fp16 and reused. Storage is bounded: the first
``train.feature_cache_mb`` megabytes stay in memory, the rest spill to ``RUN/feature_cache/`` (one ``.npy``
per clip, no pickle) and the folder is removed when the run ends.

Exactness: a clip is computed alone (unpadded: a batched group norm or GEMM rounds differently with other
clips beside it) and its features are rounded to fp16 on every visit, the first one included, so a clip gives
the same numbers whether they were just computed or read back, whatever the batch it is in, and a resumed run
(whose cache starts empty) takes the same steps as an uninterrupted one. The only change against running without the cache is that one
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
        self.memory: dict = {}  # key (a clip's index, or (index, version)) -> its features
        self.on_disk: set = set()
        self.samples: dict = {}  # key -> the clip's length in samples (its version's): a kept clip's audio need not
        #                          be decoded again (batching.StreamSampler's ``cached``)
        self.used = 0  # bytes held in memory
        self.hits = 0  # clips served from the cache
        self.misses = 0  # clips whose conv features were computed

    def __contains__(self, key) -> bool:
        return key in self.memory or key in self.on_disk

    def _file(self, key) -> Path:
        return self.spill_dir / f"{_name(key)}.npy"

    def get(self, key) -> Tensor:
        if key in self.memory:
            return self.memory[key]
        return torch.from_numpy(np.load(self._file(key), allow_pickle=False))

    def put(self, key, feats: Tensor, samples: int = 0) -> None:
        """``feats``: (frames, ...) of one clip, already fp16 and on the CPU; ``samples``: its audio's length."""
        size = feats.numel() * feats.element_size()
        if self.used + size <= self.budget or self.spill_dir is None:
            if self.used + size > self.budget:  # nowhere to spill: the clip is simply not kept
                return
            self.memory[key] = feats
            self.used += size
            self.samples[key] = samples
            return
        if not self.on_disk and self.spill_dir.exists():  # left by a run that stopped: the cache starts empty
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            parent = self.spill_dir.parent
            if parent.name == CACHE_DIR and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.spill_dir / f".{_name(key)}.tmp.npy"
        np.save(tmp, feats.numpy(), allow_pickle=False)
        tmp.replace(self._file(key))
        self.on_disk.add(key)
        self.samples[key] = samples

    def batch(self, keys: list, waves: Tensor, lengths: Tensor, frame_lengths, compute) -> tuple[Tensor, Tensor]:
        """(B, T', ...) float32 features and frame lengths (B,) of the padded batch ``waves`` (B, samples) whose
        clips are named by ``keys``: the models' one call. A clip in the cache is read back; one that is not is
        computed alone, unpadded (``compute(waves, lengths)`` runs the frozen part and returns (1, T', ...)), and
        stored. ``frame_lengths`` maps sample lengths to frame lengths. Rounded to fp16 either way, padded frames
        zero: a clip's numbers do not depend on the batch it is in or on whether it was just computed, so a
        resumed run, whose cache starts empty, takes the uninterrupted run's steps exactly. A clip the sampler
        knew to be kept arrives undecoded (zeros of its length): its waveform is never read."""
        frames = frame_lengths(lengths)
        total = int(frame_lengths(torch.tensor([waves.shape[1]]))[0])
        rows = []
        for i, k in enumerate(keys):
            if k in self:
                self.hits += 1
                rows.append(self.get(k))
                continue
            self.misses += 1
            n = int(lengths[i])
            feats = compute(waves[i : i + 1, :n], lengths[i : i + 1])[0, : int(frames[i])]
            row = feats.detach().to(torch.float16).cpu()
            self.put(k, row.clone(), n)
            rows.append(row)
        out = rows[0].new_zeros((len(rows), total, *rows[0].shape[1:]))
        for i, r in enumerate(rows):
            out[i, : r.shape[0]] = r
        return out.to(device=waves.device, dtype=torch.float32), frames

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


def _name(key) -> str:
    """A cache key as a file name: ``12`` or ``12_14880`` (clip 12 at its 14,880 Hz speed version)."""
    return "_".join(str(int(k)) for k in key) if isinstance(key, tuple) else str(int(key))
