"""Audio time, in one place: the sample rate every model reads, the conv feature encoder's frame arithmetic and
the frame rate it gives.

The bottom of lowres's layers: it imports nothing of lowres (and torch only inside the tensor function), so data/,
model/, units and train all count samples and frames the same way. A frame of wav2vec 2.0's conv stack is a
400-sample window every 320 samples: 20 ms, 50 frames a second at 16 kHz.
"""

from __future__ import annotations

SAMPLE_RATE = 16_000  # Hz: what every waveform a model reads is resampled to (lowres.data.audio.load)

# wav2vec 2.0's conv feature encoder, (kernel, stride) per layer: the stack of every backbone lowres builds
STANDARD_CONV: tuple[tuple[int, int], ...] = ((10, 5),) + ((3, 2),) * 4 + ((2, 2),) * 2
FRAME_SAMPLES = 320  # the product of the standard strides: one frame's hop
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE  # 0.02 s
FRAME_RATE = SAMPLE_RATE // FRAME_SAMPLES  # 50 frames a second


def samples(seconds: float) -> int:
    """Samples at :data:`SAMPLE_RATE` in ``seconds``, rounded to the nearest."""
    return int(round(seconds * SAMPLE_RATE))


def frames(num_samples: int, conv_stack: tuple[tuple[int, int], ...] = STANDARD_CONV) -> int:
    """Frames the conv stack ((kernel, stride) per layer) gives for ``num_samples`` samples: each layer gives
    ``(n - kernel) // stride + 1`` frames of its input's ``n``, none when ``n`` is shorter than its kernel."""
    n = int(num_samples)
    for kernel, stride in conv_stack:
        n = (n - kernel) // stride + 1 if n >= kernel else 0
    return n


def frame_lengths(lengths, conv_stack: tuple[tuple[int, int], ...] = STANDARD_CONV):
    """:func:`frames` of a tensor of sample lengths (any shape, integer dtype): the same arithmetic, elementwise."""
    import torch

    for kernel, stride in conv_stack:
        lengths = (torch.div(lengths - kernel, stride, rounding_mode="floor") + 1).clamp(min=0)
    return lengths
