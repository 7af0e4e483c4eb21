"""Waveform augmentation (lowres/data/augment.py): seeded, length-true speed perturbation on a rate grid.

Contract: the same (seed, clip) gives the same audio; a speed factor f changes the length by 1/f (within the
1% grid); the rates used by speed perturbation are multiples of 160 Hz, so that every resampling kernel is
small and a run draws from a few dozen of them instead of building a new one per clip (a free rate such as
14,837 Hz took seconds per clip).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from lowres.config import AugmentConfig
from lowres.data.audio import TARGET_SAMPLE_RATE, _resampler
from lowres.data.augment import SPEED_STEP_HZ, make_augmenter, speed_rate


def test_off_is_none():
    assert make_augmenter(AugmentConfig()) is None


@pytest.mark.parametrize("factor", [0.85, 0.9137, 1.0, 1.0421, 1.15])
def test_speed_rate_on_grid(factor):
    rate = speed_rate(factor)
    assert rate % SPEED_STEP_HZ == 0
    assert abs(rate / TARGET_SAMPLE_RATE - factor) <= SPEED_STEP_HZ / 2 / TARGET_SAMPLE_RATE + 1e-9


def test_speed_perturbation_length_and_seed():
    aug = make_augmenter(AugmentConfig(speed_prob=1.0, speed=(0.85, 1.15)))
    wave = np.random.default_rng(0).standard_normal(TARGET_SAMPLE_RATE).astype(np.float32)
    lengths = set()
    for seed in range(5):
        out = aug(wave, seed)
        assert out.dtype == np.float32 and np.array_equal(out, aug(wave, seed))
        # the draw order: first the probability, then the factor
        expected = len(wave) * TARGET_SAMPLE_RATE / speed_rate(_second_draw(seed))
        assert abs(len(out) - expected) <= 2, (seed, len(out), expected)
        lengths.add(len(out))
    assert len(lengths) > 1  # the factor is drawn per clip


def _second_draw(seed: int) -> float:
    rng = random.Random(seed)
    rng.random()
    return rng.uniform(0.85, 1.15)


def test_speed_perturbation_uses_few_kernels():
    """Forty clips of speed perturbation build at most the 31 kernels of the 0.85-1.15 grid."""
    _resampler.cache_clear()
    aug = make_augmenter(AugmentConfig(speed_prob=1.0, speed=(0.85, 1.15)))
    wave = np.zeros(1600, dtype=np.float32)
    for seed in range(40):
        aug(wave, seed)
    info = _resampler.cache_info()
    assert info.currsize <= 31 and info.misses <= 31
