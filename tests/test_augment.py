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

from lowres.audiotime import SAMPLE_RATE as TARGET_SAMPLE_RATE
from lowres.config import AugmentConfig
from lowres.data.audio import _resampler
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


def test_speed_steps_give_a_few_fixed_versions():
    """speed_steps = 3 over [0.9, 1.1] is Kaldi's three-way perturbation: every clip comes out as one of three
    versions (the rate names it), and the same seed names the same version as the audio it produces."""
    cfg = AugmentConfig(speed_prob=1.0, speed=(0.9, 1.1), speed_steps=3)
    aug = make_augmenter(cfg)
    assert aug.cacheable and cfg.cacheable
    wave = np.random.default_rng(1).standard_normal(8000).astype(np.float32)
    versions = {aug.version(seed) for seed in range(60)}
    assert versions == {speed_rate(0.9), TARGET_SAMPLE_RATE, speed_rate(1.1)}
    for seed in range(6):
        rate = aug.version(seed)
        assert abs(len(aug(wave, seed)) - len(wave) * TARGET_SAMPLE_RATE / rate) <= 2
    half = make_augmenter(AugmentConfig(speed_prob=0.5, speed=(0.9, 1.1), speed_steps=3))
    assert {half.version(s) for s in range(60)} == versions  # unperturbed clips are version 16000 too
    # a continuous factor is not a few versions, nor is speed in steps mixed with noise
    assert not make_augmenter(AugmentConfig(speed_prob=1.0)).cacheable
    assert not AugmentConfig(speed_prob=1.0, speed_steps=3, noise_prob=0.5).cacheable


def test_speed_steps_of_one_is_refused():
    with pytest.raises(ValueError, match="speed_steps"):
        AugmentConfig(speed_prob=1.0, speed_steps=1)
    with pytest.raises(ValueError, match="speed_steps"):
        AugmentConfig(speed_prob=1.0, speed_steps=-2)
