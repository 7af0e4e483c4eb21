"""Waveform augmentation behind one function, configured by ``AugmentConfig`` (recipe ``[augment]``).

Noise, gain, pitch and band-pass filtering come from audiomentations; speed perturbation (tempo and pitch
together, as in Kaldi recipes) is resampling. Every draw is seeded per (seed, epoch, utterance), so the same
run sees the same augmented audio, also after a resume.
"""

from __future__ import annotations

import random

import numpy as np

from lowres.audiotime import SAMPLE_RATE
from lowres.data.audio import resample

SPEED_STEP_HZ = 160  # speed factors are drawn on a 1% grid (160 Hz of 16 kHz)


def speed_rate(factor: float) -> int:
    """The sample rate that the audio is taken to have for speed perturbation by ``factor`` (resampled from it to
    16 kHz: a factor above 1 is faster and higher). Rounded to a multiple of 160 Hz, so that the resampling ratio
    reduces to at most 100 phases: a free rate such as 14,837 Hz has no common divisor with 16,000, and
    building its sinc kernel took 6 s per clip (measured), against milliseconds on the grid."""
    return max(SPEED_STEP_HZ, int(round(SAMPLE_RATE * factor / SPEED_STEP_HZ)) * SPEED_STEP_HZ)


def make_augmenter(cfg):
    """A picklable callable ``(wave, seed) -> wave`` for ``cfg`` (an AugmentConfig), or None when off."""
    return Augmenter(cfg) if cfg is not None and cfg.enabled else None


class Augmenter:
    def __init__(self, cfg):
        self.cfg = cfg
        self._transforms = None

    def _build(self):
        import audiomentations as A

        c = self.cfg
        steps = []
        if c.noise_prob > 0:
            steps.append(A.AddGaussianSNR(min_snr_db=c.noise_snr_db[0], max_snr_db=c.noise_snr_db[1], p=c.noise_prob))
        if c.gain_prob > 0:
            steps.append(A.Gain(min_gain_db=c.gain_db[0], max_gain_db=c.gain_db[1], p=c.gain_prob))
        if c.pitch_prob > 0:
            steps.append(A.PitchShift(min_semitones=c.pitch_semitones[0], max_semitones=c.pitch_semitones[1],
                                      p=c.pitch_prob))
        if c.band_prob > 0:
            steps.append(A.BandPassFilter(min_center_freq=300.0, max_center_freq=3400.0, p=c.band_prob))
        return A.Compose(steps) if steps else None

    @property
    def cacheable(self) -> bool:
        """Each clip comes out as one of a few fixed versions, named by :meth:`version`."""
        return self.cfg.cacheable

    def version(self, seed: int) -> int:
        """The sample rate the clip is taken to have for speed perturbation (16000: not perturbed). With
        ``speed_steps`` it names the clip's version among a few: the feature cache keeps one per version."""
        rng = random.Random(seed)
        c = self.cfg
        if c.speed_prob > 0 and rng.random() < c.speed_prob:
            if c.speed_steps >= 2:
                factor = c.speed[0] + (c.speed[1] - c.speed[0]) * rng.randrange(c.speed_steps) / (c.speed_steps - 1)
            else:
                factor = rng.uniform(*c.speed)
            return speed_rate(factor)
        return SAMPLE_RATE

    def __call__(self, wave: np.ndarray, seed: int) -> np.ndarray:
        rate = self.version(seed)
        if rate != SAMPLE_RATE:
            wave = resample(wave, rate, SAMPLE_RATE)
        if self._transforms is None:
            self._transforms = self._build() or False
        if self._transforms:
            # audiomentations draws from the global generators: seed them for this utterance
            random.seed(seed)
            np.random.seed(seed % (2**32))
            wave = self._transforms(samples=wave.astype(np.float32), sample_rate=SAMPLE_RATE)
        return np.ascontiguousarray(wave, dtype=np.float32)
