"""Span masks for the transformer input (wav2vec 2.0 / SpecAugment-style). Pure, seeded by a generator.

Per utterance of valid length T: the number of spans is ``int(prob * T / span + U(0, 1))`` and at least
``min_spans``; span starts are drawn without replacement from ``[0, T - span)``; each span covers
``span`` frames; overlapping spans merge (≈ 49% of frames masked at prob 0.65, span 10). Nothing is ever
masked in padding.
"""

from __future__ import annotations

import torch
from torch import Tensor


def span_mask(lengths: Tensor, max_len: int, prob: float, span: int, min_spans: int = 0,
              generator: torch.Generator | None = None) -> Tensor:
    """Boolean mask (B, max_len), True where masked. ``lengths``: (B,) valid frames per row (CPU ints)."""
    lengths = lengths.detach().to("cpu", torch.long)
    out = torch.zeros(len(lengths), max_len, dtype=torch.bool)
    if prob <= 0 or span <= 0:
        return out
    for b, length in enumerate(lengths.tolist()):
        starts_available = length - span
        if starts_available <= 0:
            continue
        n = int(prob * length / span + float(torch.rand(1, generator=generator)))
        n = min(max(n, min_spans), starts_available)
        if n <= 0:
            continue
        starts = torch.randperm(starts_available, generator=generator)[:n]
        idx = (starts[:, None] + torch.arange(span)[None, :]).reshape(-1)
        out[b, idx] = True
    return out


def apply_masks(x: Tensor, lengths: Tensor, mask_embedding: Tensor | None, time_prob: float, time_span: int,
                channel_prob: float, channel_span: int, generator: torch.Generator | None,
                min_time_spans: int = 2) -> tuple[Tensor, Tensor | None]:
    """Time masking (frames replaced by the learned mask embedding) and channel masking (channels zeroed).

    x: (B, T, D) projected features. Returns the masked copy and the time mask (B, T) (None if none)."""
    b, t, d = x.shape
    time_mask = None
    if time_prob > 0 and mask_embedding is not None:
        time_mask = span_mask(lengths, t, time_prob, time_span, min_time_spans, generator).to(x.device)
        x = torch.where(time_mask[..., None], mask_embedding.to(x.dtype)[None, None, :], x)
    if channel_prob > 0:
        channels = span_mask(torch.full((b,), d), d, channel_prob, channel_span, 0, generator).to(x.device)
        x = x.masked_fill(channels[:, None, :], 0.0)
    return x, time_mask
