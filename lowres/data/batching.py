"""Datasets, collation and duration-bucketed batching.

- :class:`UtteranceDataset` decodes one utterance (via ``data/audio.py``), optionally augments it (seeded by
  (seed, epoch, index), so a resumed run sees the same audio) and encodes its transcript.
- :func:`collate` pads a batch: waveforms (B, T) float32, lengths (B,), concatenated targets and their
  lengths. Items whose audio cannot be decoded arrive as ``None`` and are dropped and counted.
- :class:`BucketBatchSampler` packs utterances of similar length so that ``longest × count`` stays under a
  budget of audio seconds (padding included), reshuffled every epoch, identical for the same seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from lowres import audiotime
from lowres.data import audio as audio_mod
from lowres.data.manifest import Utterance
from lowres.data.vocab import Vocab, ctc_frames_needed


@dataclass(frozen=True, slots=True)
class Key:
    """What the sampler hands the dataset: which utterance, in which epoch (for augmentation seeds), and
    ``cached``: the length in samples of its version when the feature cache already holds it (its audio is then
    not decoded: zeros of that length stand in, the model reads the cache), else 0."""

    index: int
    epoch: int = 0
    cached: int = 0


class UtteranceDataset(torch.utils.data.Dataset):
    def __init__(self, utts: Sequence[Utterance], vocab: Vocab | None = None, augment=None, seed: int = 0):
        self.utts = list(utts)
        self.vocab = vocab
        self.augment = augment  # callable(wave, seed) -> wave, or None
        self.seed = seed
        self.labels = [vocab.encode(u.text) for u in self.utts] if vocab is not None else None

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, key: Key | int):
        if isinstance(key, int):
            key = Key(key)
        u = self.utts[key.index]
        if key.cached:
            item = {"index": key.index, "samples": key.cached}
            if self.augment is not None and self.augment.cacheable:
                item["version"] = self.augment.version(_item_seed(self.seed, key.epoch, key.index))
            if self.labels is not None:
                item["labels"] = self.labels[key.index]
            return item
        try:
            wave = audio_mod.load(u.audio_filepath, u.offset, u.duration)
        except audio_mod.AudioError as exc:
            return {"index": key.index, "error": f"{u.audio_filepath}: {exc.detail}"}
        item = {"index": key.index}
        if self.augment is not None:
            seed = _item_seed(self.seed, key.epoch, key.index)
            wave = self.augment(wave, seed)
            if self.augment.cacheable:
                item["version"] = self.augment.version(seed)
        item["wave"] = wave
        if self.labels is not None:
            item["labels"] = self.labels[key.index]
        return item


    def cache_key(self, key: Key):
        """The feature cache's name for the clip ``key`` brings: its index, with its version (the sample rate
        of its speed perturbation) when the augmentation makes a few fixed versions (:attr:`Batch.cache_keys`)."""
        if self.augment is not None and self.augment.cacheable:
            return key.index, self.augment.version(_item_seed(self.seed, key.epoch, key.index))
        return key.index


def _item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 65_537 + index) % (2**32)


@dataclass
class Batch:
    waves: torch.Tensor  # (B, T) float32
    lengths: torch.Tensor  # (B,) samples
    indices: list[int]
    targets: torch.Tensor | None = None  # (sum of target_lengths,)
    target_lengths: torch.Tensor | None = None  # (B,)
    errors: list[str] | None = None  # items dropped because their audio could not be decoded
    position: tuple[int, int] = (0, 0)  # (epoch, batch number within the epoch) of this batch
    versions: list[int] | None = None  # which of its few fixed versions each clip is (augmentation in steps)

    @property
    def size(self) -> int:
        return len(self.indices)

    @property
    def cache_keys(self) -> list:
        """What names each clip's features in the feature cache: its index, with its version when the
        augmentation makes a few fixed versions of every clip."""
        if self.versions is None:
            return list(self.indices)
        return list(zip(self.indices, self.versions, strict=True))

    def to(self, device) -> Batch:
        self.waves = self.waves.to(device, non_blocking=True)
        self.lengths = self.lengths.to(device)
        return self


def placeholder_batch(seconds: float = 2.0) -> Batch:
    """A batch of quiet noise that stands in for a micro-batch whose every clip failed to decode, under
    torchrun: every rank must run forward and backward for DDP to synchronise. Its loss is weighted by 0.
    It carries a one-symbol transcript for CTC; adapt ignores it."""
    gen = torch.Generator().manual_seed(0)
    n = int(seconds * audiotime.SAMPLE_RATE)
    return Batch(0.01 * torch.randn(1, n, generator=gen), torch.tensor([n]), [-1],
                 targets=torch.tensor([1], dtype=torch.long), target_lengths=torch.tensor([1], dtype=torch.long))


def collate(items: list[dict]) -> Batch:
    errors = [it["error"] for it in items if "error" in it]
    good = [it for it in items if "error" not in it]
    n = len(good)
    longest = max((len(it["wave"]) if "wave" in it else it["samples"] for it in good), default=0)
    waves = torch.zeros(n, longest, dtype=torch.float32)
    lengths = torch.zeros(n, dtype=torch.long)
    for i, it in enumerate(good):
        if "wave" not in it:  # its features are in the cache: zeros of its length stand in
            lengths[i] = it["samples"]
            continue
        w = torch.from_numpy(it["wave"])
        waves[i, : len(w)] = w
        lengths[i] = len(w)
    batch = Batch(waves, lengths, [it["index"] for it in good], errors=errors)
    if good and "version" in good[0]:
        batch.versions = [it["version"] for it in good]
    if good and "labels" in good[0]:
        batch.targets = torch.tensor([t for it in good for t in it["labels"]], dtype=torch.long)
        batch.target_lengths = torch.tensor([len(it["labels"]) for it in good], dtype=torch.long)
    return batch


class BucketBatchSampler:
    """Batches of similar-length utterances under a padded-seconds budget.

    Each epoch the durations get a small random jitter (±5%) before sorting, so batch composition changes
    between epochs while padding stays small; the batch order is then shuffled. With ``world_size > 1``
    rank r takes batches r, r + world_size, r + 2·world_size, ... and every rank gets the same number (the
    remainder is dropped): the micro-batches of one update over N ranks are the ones a single process
    takes with N times the gradient accumulation, so the two train the same model.
    """

    def __init__(self, durations: Sequence[float], batch_seconds: float, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1):
        self.durations = [float(d) for d in durations]
        self.batch_seconds = batch_seconds
        self.seed, self.shuffle = seed, shuffle
        self.rank, self.world_size = rank, world_size

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 7_919 + epoch)
        order = list(range(len(self.durations)))
        if self.shuffle:
            keys = [d * (1.0 + rng.uniform(-0.05, 0.05)) for d in self.durations]
            order.sort(key=lambda i: (keys[i], i))
        else:
            order.sort(key=lambda i: (self.durations[i], i))
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0.0
        for i in order:
            d = self.durations[i]
            if current and max(longest, d) * (len(current) + 1) > self.batch_seconds:
                batches.append(current)
                current, longest = [], 0.0
            current.append(i)
            longest = max(longest, d)
        if current:
            batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        if self.world_size > 1:
            usable = len(batches) - len(batches) % self.world_size
            batches = batches[self.rank:usable:self.world_size]
        return batches

    def __len__(self) -> int:
        return len(self.epoch_batches(0))


class StreamSampler:
    """Endless batches of :class:`Key` over epochs, starting at a saved position (epoch, batch number).

    Given to a DataLoader as ``batch_sampler``; the loader's collate stamps each batch with its position
    through :func:`positioned_collate` so the trainer always knows how far the data has gone. It runs in the
    training process, so ``cached(key)`` (the samples of the clip's cached version, or 0) can ask the feature
    cache: the workers then skip decoding and speed-perturbing clips whose features are kept.
    """

    def __init__(self, buckets: BucketBatchSampler, start: tuple[int, int] = (0, 0),
                 cached: Callable[[Key], int] | None = None):
        self.buckets = buckets
        self.start = start
        self.cached = cached

    def __iter__(self) -> Iterator[list[tuple[Key, int, int]]]:
        epoch, pos = self.start
        while True:
            batches = self.buckets.epoch_batches(epoch)
            if not batches:
                return
            for b in range(pos, len(batches)):
                keys = [Key(i, epoch) for i in batches[b]]
                if self.cached is not None:
                    keys = [Key(k.index, k.epoch, self.cached(k)) for k in keys]
                yield [(k, epoch, b) for k in keys]
            epoch, pos = epoch + 1, 0


class PositionedDataset(torch.utils.data.Dataset):
    """Wraps a dataset so sampler entries (Key, epoch, batch) keep their position through the loader."""

    def __init__(self, inner: UtteranceDataset):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, entry):
        key, epoch, b = entry
        item = self.inner[key]
        item["position"] = (epoch, b)
        return item


def positioned_collate(items: list[dict]) -> Batch:
    batch = collate(items)
    batch.position = items[0]["position"] if items else (0, 0)
    return batch


def filter_trainable(utts: Sequence[Utterance], vocab: Vocab, conv_stack, max_seconds: float,
                     backbone_max_s: float = math.inf) -> tuple[list[Utterance], dict[str, int]]:
    """Drop clips that cannot train: transcripts longer than their frames, clips longer than a batch, or longer
    than the backbone reads at once (``backbone_max_s``: Whisper's 30 s)."""
    kept, dropped = [], {"transcript_too_long": 0, "longer_than_batch": 0, "empty_transcript": 0}
    if math.isfinite(backbone_max_s):
        dropped["longer_than_backbone"] = 0
    for u in utts:
        ids = vocab.encode(u.text)
        if not ids:
            dropped["empty_transcript"] += 1
            continue
        if u.duration > backbone_max_s:
            dropped["longer_than_backbone"] += 1
            continue
        if u.duration > max_seconds:
            dropped["longer_than_batch"] += 1
            continue
        frames = audiotime.frames(audiotime.samples(u.duration), conv_stack)
        if ctc_frames_needed(ids) > frames:
            dropped["transcript_too_long"] += 1
            continue
        kept.append(u)
    return kept, dropped


def eval_batches(utts: Sequence[Utterance], batch_seconds: float) -> list[list[int]]:
    """Deterministic batches for evaluation: sorted by duration, packed under the budget."""
    return BucketBatchSampler([u.duration for u in utts], batch_seconds, shuffle=False).epoch_batches(0)


def num_workers(requested: int) -> int:
    if requested >= 0:
        return requested
    import os

    cores = os.cpu_count() or 1
    return max(1, min(4, cores - 1)) if cores > 1 else 0


def loader(dataset, batch_sampler, workers: int, positioned: bool = False):
    from lowres.runtime import worker_init

    workers = num_workers(workers)
    data = PositionedDataset(dataset) if positioned else dataset
    return torch.utils.data.DataLoader(
        data, batch_sampler=batch_sampler, collate_fn=positioned_collate if positioned else collate,
        num_workers=workers, worker_init_fn=worker_init if workers else None,
        prefetch_factor=4 if workers else None, persistent_workers=False,
    )


def audio_seconds(batch: Batch) -> float:
    return float(batch.lengths.sum()) / audiotime.SAMPLE_RATE

