"""The frozen-upstream recogniser (``--head weighted``), as ML-SUPERB evaluates self-supervised models.

    waves → [frozen backbone, no autograd, eval mode] → hidden layers h_0 … h_L
          → Σ softmax(w)_l · h_l  (w: L + 1 learned layer weights, equal at the start)
          → BiLSTM × lstm_layers (dropout between them) → dropout → linear CTC layer over the vocabulary

h_0 is the input of the first transformer layer (the projected conv features plus the positional
convolution) and h_l the output of layer l, as s3prl and Hugging Face's ``output_hidden_states`` count them
(lowres/model/backbone.py ``hidden_states``). The backbone never trains: it runs under ``torch.no_grad()``
and stays in eval mode (no dropout) even while the module trains; only ``layer_weights``, ``lstm`` and
``head`` learn.

Shapes: waveforms (B, T) float32 at 16 kHz with lengths (B,); logits (B, T', V) with frame lengths (B,).
Padding never changes a valid frame: the conv encoder is exact under padding (backbone.conv_features) and
the BiLSTM runs on packed sequences, so a padded batch equals one utterance at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lowres.model.backbone import (
    BackboneSpec,
    conv_features,
    frame_lengths,
    hidden_states,
    normalize_waveform,
    padding_mask,
)


class WeightedLayerCTC(nn.Module):
    def __init__(self, backbone: nn.Module, spec: BackboneSpec, vocab_size: int, *, lstm_layers: int,
                 lstm_hidden: int, dropout: float):
        """The downstream's sizes have no defaults here: they are the configuration's (lowres/config.py
        HeadConfig), passed by model/build.py."""
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        num_states = int(spec.arch["encoder_num_layers"]) + 1
        self.layer_weights = nn.Parameter(torch.zeros(num_states))  # logits: softmax gives equal weights
        self.lstm = nn.LSTM(spec.embed_dim, lstm_hidden, num_layers=lstm_layers, batch_first=True,
                            bidirectional=True, dropout=dropout if lstm_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * lstm_hidden, vocab_size)
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True):
        """The downstream follows ``mode``; the frozen backbone stays in eval mode (its dropout off)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def layer_distribution(self) -> Tensor:
        """The layer weights after softmax, (L + 1,), summing to 1."""
        return torch.softmax(self.layer_weights.float(), dim=0)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return frame_lengths(lengths, self.spec.conv_stack)

    @torch.no_grad()
    def upstream(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The frozen backbone's hidden layers, stacked: (L + 1, B, T', D), and frame lengths (B,)."""
        if self.spec.normalize_waveform:
            waves = normalize_waveform(waves, lengths)
        feats, frames = conv_features(self.backbone.feature_extractor, waves, lengths)
        x = self.backbone.encoder.feature_projection(feats)
        pad = padding_mask(frames, x.shape[1])
        if pad is not None:
            x = x.masked_fill(pad[..., None], 0.0)
        states = hidden_states(self.backbone.encoder.transformer, x, pad, self.spec.family)
        return torch.stack(states), frames

    def forward(self, waves: Tensor, lengths: Tensor | None, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
        """(B, T) samples → logits (B, T', V) and frame lengths (B,). ``generator`` is accepted for the
        recognisers' common signature; the downstream's dropout draws from torch's seeded global generator
        (lowres/train/loop.py seeds it per micro-batch)."""
        del generator
        if lengths is None:
            lengths = torch.full((waves.shape[0],), waves.shape[1], dtype=torch.long, device=waves.device)
        states, frames = self.upstream(waves, lengths)  # (L + 1, B, T', D), no graph behind it
        # the downstream is small: it runs in float32 outside any autocast (bf16 on CUDA would hand the LSTM
        # reduced-precision inputs against its float32 weights), the frozen upstream under it
        with torch.autocast(device_type=waves.device.type, enabled=False):
            weights = self.layer_distribution()
            x = (weights[:, None, None, None] * states.float()).sum(dim=0)  # (B, T', D)
            t = x.shape[1]
            # pack_padded_sequence refuses empty sequences; an empty one's (all-padding) frames are ignored anyway
            packed = pack_padded_sequence(x, frames.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
            y, _ = self.lstm(packed)
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=t)  # (B, T', 2H)
            return self.head(self.dropout(y)), frames
