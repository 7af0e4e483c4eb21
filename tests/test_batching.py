"""lowres.data.batching: the duration-bucketed sampler, the endless positioned stream, and collation.

Contract: every epoch the sampler hands out every utterance exactly once, in batches whose padded audio
(longest × count) stays within batch_seconds (a single clip longer than the budget is a batch of its own);
the same seed gives the same batches; rank r of N takes batches r, r + N, ... with the same count on
every rank; the stream resumes at a saved (epoch, batch) position; collate pads to the longest and keeps
the lengths, drops undecodable items and counts them.
"""

from __future__ import annotations

import random
from itertools import islice

import numpy as np
import pytest
import torch

from lowres.data.batching import (
    BucketBatchSampler,
    Key,
    StreamSampler,
    collate,
    eval_batches,
    positioned_collate,
)


def durations(n: int = 200, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.5, 15.0) for _ in range(n)]


@pytest.mark.parametrize("budget", [16.0, 40.0, 200.0])
def test_every_item_once_per_epoch_within_the_budget(budget):
    d = durations()
    sampler = BucketBatchSampler(d, budget, seed=3)
    for epoch in range(3):
        batches = sampler.epoch_batches(epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(d)))  # each once
        for b in batches:
            assert b and max(d[i] for i in b) * len(b) <= budget + 1e-9
    assert len(sampler) == len(sampler.epoch_batches(0))


def test_a_clip_longer_than_the_budget_is_a_batch_of_its_own():
    d = [1.0, 30.0, 1.0, 2.0]
    batches = BucketBatchSampler(d, 10.0, shuffle=False).epoch_batches(0)
    assert [1] in batches and sorted(i for b in batches for i in b) == [0, 1, 2, 3]


def test_batches_are_of_similar_lengths_and_change_between_epochs():
    d = durations()
    sampler = BucketBatchSampler(d, 60.0, seed=1)
    padded = sum(max(d[i] for i in b) * len(b) for b in sampler.epoch_batches(0))
    assert padded < 1.1 * sum(d)  # sorting by duration keeps padding small
    assert sampler.epoch_batches(0) != sampler.epoch_batches(1)
    assert sampler.epoch_batches(0) == BucketBatchSampler(d, 60.0, seed=1).epoch_batches(0)  # seeded
    assert sampler.epoch_batches(0) != BucketBatchSampler(d, 60.0, seed=2).epoch_batches(0)


def test_no_shuffle_is_sorted_and_deterministic():
    d = durations(50)
    batches = BucketBatchSampler(d, 30.0, shuffle=False).epoch_batches(5)
    flat = [i for b in batches for i in b]
    assert [d[i] for i in flat] == sorted(d)
    assert BucketBatchSampler(d, 30.0, shuffle=False).epoch_batches(0) == batches


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_stride_over_the_single_process_batches(world):
    d = durations(101)
    whole = BucketBatchSampler(d, 25.0, seed=7).epoch_batches(2)
    usable = len(whole) - len(whole) % world
    shares = [BucketBatchSampler(d, 25.0, seed=7, rank=r, world_size=world).epoch_batches(2) for r in range(world)]
    for r, share in enumerate(shares):
        assert share == whole[r:usable:world]
    assert len({len(s) for s in shares}) == 1  # the same number of batches on every rank
    seen = [i for s in shares for b in s for i in b]
    assert len(seen) == len(set(seen))  # no utterance on two ranks
    # interleaving the ranks gives back the single process's batch order
    assert [b for group in zip(*shares, strict=True) for b in group] == whole[:usable]


def test_stream_sampler_goes_on_across_epochs_with_positions():
    d = durations(30)
    buckets = BucketBatchSampler(d, 20.0, seed=0)
    n0 = len(buckets.epoch_batches(0))
    entries = list(islice(iter(StreamSampler(buckets)), n0 + 2))
    for b, batch in enumerate(entries[:n0]):
        assert [key.index for key, _, _ in batch] == buckets.epoch_batches(0)[b]
        assert all(key == Key(key.index, 0) and (e, k) == (0, b) for key, e, k in batch)
    assert [(e, k) for _, e, k in (entries[n0][0], entries[n0 + 1][0])] == [(1, 0), (1, 1)]
    assert [key.index for key, _, _ in entries[n0]] == buckets.epoch_batches(1)[0]
    assert all(key.epoch == 1 for key, _, _ in entries[n0])


@pytest.mark.parametrize("done", [0, 3, 7, 12])
def test_stream_sampler_resumes_at_a_saved_position(done):
    buckets = BucketBatchSampler(durations(40), 20.0, seed=4)
    uninterrupted = list(islice(iter(StreamSampler(buckets)), 20))
    _, epoch, b = uninterrupted[done][0]
    resumed = list(islice(iter(StreamSampler(buckets, start=(epoch, b))), 20 - done))
    assert resumed == uninterrupted[done:]


def test_stream_sampler_of_nothing_ends():
    assert list(StreamSampler(BucketBatchSampler([], 10.0))) == []


def test_collate_pads_and_keeps_lengths_and_targets():
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (5, 9, 3)]
    labels = [[1, 2], [3], [4, 5, 6]]
    items = [{"index": 10 + i, "wave": w, "labels": lab} for i, (w, lab) in enumerate(zip(waves, labels, strict=True))]
    batch = collate(items)
    assert batch.waves.shape == (3, 9) and batch.waves.dtype == torch.float32
    assert batch.lengths.tolist() == [5, 9, 3] and batch.indices == [10, 11, 12] and batch.size == 3
    for i, w in enumerate(waves):
        assert torch.equal(batch.waves[i, : len(w)], torch.from_numpy(w))
        assert not batch.waves[i, len(w):].any()  # zeros in the padding
    assert batch.targets.tolist() == [1, 2, 3, 4, 5, 6] and batch.target_lengths.tolist() == [2, 1, 3]
    assert batch.errors == []


def test_collate_drops_and_counts_undecodable_items():
    items = [{"index": 0, "wave": np.ones(4, np.float32)}, {"index": 1, "error": "b.wav: truncated"},
             {"index": 2, "wave": np.ones(2, np.float32)}]
    batch = collate(items)
    assert batch.indices == [0, 2] and batch.lengths.tolist() == [4, 2] and batch.errors == ["b.wav: truncated"]
    assert batch.targets is None  # no labels: an unlabeled (adapt) batch
    nothing = collate([{"index": 1, "error": "x"}])
    assert nothing.size == 0 and nothing.waves.shape == (0, 0) and nothing.errors == ["x"]


def test_positioned_collate_stamps_the_batch_position():
    items = [{"index": 3, "wave": np.ones(4, np.float32), "position": (2, 9)}]
    assert positioned_collate(items).position == (2, 9)


def test_eval_batches_cover_everything_in_duration_order():
    class U:
        def __init__(self, d):
            self.duration = d

    d = durations(25)
    batches = eval_batches([U(x) for x in d], 30.0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(25)) and [d[i] for i in flat] == sorted(d)
    assert all(max(d[i] for i in b) * len(b) <= 30.0 for b in batches)
