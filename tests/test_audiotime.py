"""lowres/audiotime.py: the one place that counts samples and frames.

Contract: the integer and the tensor frame arithmetic agree everywhere, and both equal the frames a real conv
feature encoder produces (torchaudio's, through lowres's padding-aware forward); the standard stack is 20 ms
frames, 50 a second at 16 kHz.
"""

from __future__ import annotations

import torch

from lowres import audiotime
from lowres.audiotime import FRAME_RATE, FRAME_S, SAMPLE_RATE, STANDARD_CONV, frame_lengths, frames


def test_constants_agree():
    hop = 1
    for _, stride in STANDARD_CONV:
        hop *= stride
    assert hop == audiotime.FRAME_SAMPLES == 320 and FRAME_S == 0.02 and FRAME_RATE == 50 and SAMPLE_RATE == 16000
    assert audiotime.samples(1.5) == 24000 and audiotime.samples(0.00003) == 0


def test_integer_and_tensor_arithmetic_agree():
    lengths = torch.arange(0, 5000)
    assert frame_lengths(lengths).tolist() == [frames(n) for n in range(5000)]
    assert frames(399) == 0 and frames(400) == 1 and frames(720) == 2 and frames(SAMPLE_RATE) == 49
    stack = ((4, 2), (3, 3))
    assert frame_lengths(torch.tensor([0, 3, 4, 9, 100]), stack).tolist() == [frames(n, stack) for n in (0, 3, 4, 9, 100)]


def test_frames_are_what_the_conv_encoder_gives():
    from lowres.model.backbone import RANDOM_CONFIGS, build_model, conv_features

    spec = RANDOM_CONFIGS["tiny"]
    assert spec.conv_stack == STANDARD_CONV
    model = build_model(spec).eval()
    lengths = torch.tensor([400, 3201, 16000, 12345])
    waves = torch.randn(len(lengths), int(lengths.max()))
    with torch.no_grad():
        feats, out = conv_features(model.feature_extractor, waves, lengths)
    assert out.tolist() == [frames(int(n)) for n in lengths] and feats.shape[1] == frames(int(lengths.max()))
