"""lowres/units.py: HuBERT's targets.

Contract: MFCC features are 39-dim at 100 Hz and map two to one onto the model's 50 Hz frames; the same seed
gives the same centroids and units; k-means is fit on at most ``max_frames`` sampled frames; every frame
gets its nearest centroid; units round-trip through safetensors + JSON; --targets is checked against the base.
"""

from __future__ import annotations

import factory
import numpy as np
import pytest
import soundfile as sf
import torch

from lowres import LowresError
from lowres.audiotime import STANDARD_CONV
from lowres.audiotime import frames as frames_of
from lowres.data import audio
from lowres.data.manifest import Utterance
from lowres.units import FeatureSource, Units, assign, make_units, mfcc_features, parse_targets


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    root = tmp_path_factory.mktemp("units")
    utts = []
    for i in range(6):
        path = root / f"p{i}.wav"
        sf.write(path, factory.tone_speech("abc dog ego bad cab dog", seed=i), 16000)
        utts.append(Utterance(id=f"p{i}", audio_filepath=str(path), duration=sf.info(path).duration))
    return utts


def test_mfcc_features_and_the_frame_mapping():
    wave = torch.from_numpy(factory.signal(2.0, seed=1).astype(np.float32))
    feats = mfcc_features(wave)
    assert feats.shape == (198, 39)  # Kaldi: (32000 - 400) // 160 + 1 frames at 100 Hz
    source = FeatureSource("mfcc", STANDARD_CONV)
    framed = source(wave.numpy())
    assert framed.shape == (frames_of(32000), 39) == (99, 39)
    torch.testing.assert_close(framed[5], feats[10])  # model frame t takes MFCC frame 2t
    assert frames_of(399) == 0 and frames_of(400) == 1 and frames_of(720) == 2


def test_units_are_deterministic_bounded_and_nearest(pieces):
    source = FeatureSource("mfcc", STANDARD_CONV)
    kw = dict(max_frames=500, passes=2, batch_frames=256, seed=7)
    a, ca = make_units(pieces, source, 8, **kw)
    b, cb = make_units(pieces, source, 8, **kw)
    assert torch.equal(ca, cb) and torch.equal(a.flat, b.flat) and torch.equal(a.offsets, b.offsets)
    c, cc = make_units(pieces, source, 8, **{**kw, "seed": 8})
    assert not torch.equal(ca, cc)
    assert a.info["frames_sampled"] <= 600 and a.info["frames"] == int(a.offsets[-1]) > 500  # a sample, not all
    assert 2 <= a.info["clusters_used"] <= 8 and a.info["inertia_per_frame"] > 0
    # each frame's unit is its nearest centroid
    feats = source(audio.load(pieces[0].audio_filepath))
    d = torch.cdist(feats, ca)
    assert torch.equal(a.of(0), d.argmin(dim=1))
    assert len(a.of(0)) == frames_of(int(round(pieces[0].duration * 16000)))


def test_features_kept_in_memory_are_computed_once_and_change_nothing(pieces):
    """Labelling reads the features computed while sampling, up to units.memory_mb; beyond it a piece is
    computed again. Either way the units are the same."""
    calls = []

    class Counting(FeatureSource):
        def __call__(self, wave):
            calls.append(len(wave))
            return super().__call__(wave)

    source = Counting("mfcc", STANDARD_CONV)
    kw = dict(max_frames=500, passes=1, batch_frames=256, seed=3)
    per_piece_mb = source(audio.load(pieces[0].audio_filepath)).numel() * 4 / 2**20
    results = {}
    for mb in (0.0, 2.5 * per_piece_mb, 1024.0):  # none kept, the first two pieces, all
        calls.clear()
        results[mb] = make_units(pieces, source, 6, memory_mb=mb, **kw)
        results[mb] = (*results[mb], len(calls))
    none, some, every = results.values()
    assert (none[2], some[2], every[2]) == (2 * len(pieces), 2 * len(pieces) - 2, len(pieces))
    assert [r[0].info["pieces_computed_twice"] for r in (none, some, every)] == [len(pieces), len(pieces) - 2, 0]
    for units, centroids, _ in (some, every):
        assert torch.equal(units.flat, none[0].flat) and torch.equal(centroids, none[1])


def test_assign_in_batches_equals_one_go():
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(1000, 5, generator=g), torch.randn(7, 5, generator=g)
    labels, dists = assign(x, c, batch=64)
    assert torch.equal(labels, torch.cdist(x, c).argmin(dim=1))
    torch.testing.assert_close(dists, torch.cdist(x, c).min(dim=1).values ** 2, atol=1e-4, rtol=1e-4)


def test_units_round_trip_without_pickle(pieces, tmp_path):
    units, centroids = make_units(pieces, FeatureSource("mfcc", STANDARD_CONV), 4, max_frames=400, passes=1,
                                  batch_frames=128, seed=0)
    units.save(tmp_path / "u", centroids)
    back = Units.load(tmp_path / "u")
    assert back.ids == units.ids and back.clusters == 4 and torch.equal(back.flat, units.flat)
    assert sorted(p.suffix for p in (tmp_path / "u").iterdir()) == [".json", ".safetensors", ".safetensors"]
    with pytest.raises(LowresError, match="holds no units"):
        Units.load(tmp_path)


def test_targets_and_too_little_audio(pieces):
    assert parse_targets("auto", 12, pretrained=True) == ("layer", 6)
    assert parse_targets("auto", 4, pretrained=False) == ("mfcc", 0)
    assert parse_targets("layer:3", 4, pretrained=True) == ("layer", 3)
    for bad in ("layer:0", "layer:99", "layer:x"):
        with pytest.raises(LowresError, match="layers 1 to 4"):
            parse_targets(bad, 4, pretrained=True)
    with pytest.raises(LowresError, match="fewer than --clusters"):
        make_units(pieces[:1], FeatureSource("mfcc", STANDARD_CONV), 10_000, max_frames=1000, passes=1,
                   batch_frames=100, seed=0)
    with pytest.raises(LowresError, match="standard 20 ms frames"):
        FeatureSource("mfcc", ((10, 5), (3, 2)))
