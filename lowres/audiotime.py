"""Audio time, in one place: the sample rate every model reads, the conv feature encoder's frame arithmetic and
the frame rate it gives.

The bottom of lowres's layers: it imports nothing of lowres (and torch only inside the tensor function), so data/,
model/, units and train all count samples and frames the same way. A frame of wav2vec 2.0's conv stack is a
400-sample window every 320 samples: 20 ms, 50 frames a second at 16 kHz.
"""

from __future__ import annotations

SAMPLE_RATE = 16_000  # Hz: what every waveform a model reads is resampled to (lowres.data.audio.load)

# wav2vec 2.0's conv feature encoder, (kernel, stride) per layer: the stack of every wav2vec 2.0 / HuBERT / WavLM
# backbone lowres builds
STANDARD_CONV: tuple[tuple[int, int], ...] = ((10, 5),) + ((3, 2),) * 4 + ((2, 2),) * 2
# Whisper's front end as (kernel, stride, padding): one log-mel frame per 160 samples (its centred STFT with the
# last frame dropped), then conv1 (kernel 3, padding 1) and conv2 (kernel 3, stride 2, padding 1)
WHISPER_STACK: tuple[tuple[int, int, int], ...] = ((160, 160, 0), (3, 1, 1), (3, 2, 1))
FRAME_SAMPLES = 320  # the product of the strides of either stack: one frame's hop
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE  # 0.02 s
FRAME_RATE = SAMPLE_RATE // FRAME_SAMPLES  # 50 frames a second


def samples(seconds: float) -> int:
    """Samples at :data:`SAMPLE_RATE` in ``seconds``, rounded to the nearest."""
    return int(round(seconds * SAMPLE_RATE))


def frames(num_samples: int, conv_stack: tuple[tuple[int, ...], ...] = STANDARD_CONV) -> int:
    """Frames a stack of layers ((kernel, stride) or (kernel, stride, padding) each) gives for ``num_samples``
    samples: each layer gives ``(n + 2·padding - kernel) // stride + 1`` frames of its input's ``n``, none when
    that input, padded, is shorter than its kernel."""
    n = int(num_samples)
    for kernel, stride, *padding in conv_stack:
        n += 2 * padding[0] if padding else 0
        n = (n - kernel) // stride + 1 if n >= kernel else 0
    return n


def frame_lengths(lengths, conv_stack: tuple[tuple[int, ...], ...] = STANDARD_CONV):
    """:func:`frames` of a tensor of sample lengths (any shape, integer dtype): the same arithmetic, elementwise."""
    import torch

    for kernel, stride, *padding in conv_stack:
        lengths = lengths + 2 * padding[0] if padding else lengths
        lengths = (torch.div(lengths - kernel, stride, rounding_mode="floor") + 1).clamp(min=0)
    return lengths
