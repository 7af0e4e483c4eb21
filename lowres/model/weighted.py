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
each BiLSTM direction reads only valid frames before padding (:class:`PaddedBiLSTM`), so a padded batch
equals one utterance at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lowres.model.backbone import BackboneSpec, encoder_input, encoder_states, front_end, front_lengths


class WeightedLayerCTC(nn.Module):
    def __init__(self, backbone: nn.Module, spec: BackboneSpec, vocab_size: int, *, lstm_layers: int,
                 lstm_hidden: int, dropout: float):
        """The downstream's sizes have no defaults here: they are the configuration's (lowres/config.py
        HeadConfig), passed by model/build.py."""
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        num_states = spec.num_layers + 1
        self.layer_weights = nn.Parameter(torch.zeros(num_states))  # logits: softmax gives equal weights
        self.lstm = PaddedBiLSTM(spec.embed_dim, lstm_hidden, lstm_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * lstm_hidden, vocab_size)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.feature_cache = None  # a model/feature_cache.ConvFeatureCache (of the whole upstream) while training

    def train(self, mode: bool = True):
        """The downstream follows ``mode``; the frozen backbone stays in eval mode (its dropout off)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def layer_distribution(self) -> Tensor:
        """The layer weights after softmax, (L + 1,), summing to 1."""
        return torch.softmax(self.layer_weights.float(), dim=0)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return front_lengths(self.spec, lengths)

    @torch.no_grad()
    def upstream(self, waves: Tensor, lengths: Tensor, keys: list[int] | None = None) -> tuple[Tensor, Tensor]:
        """The frozen backbone's hidden layers, stacked: (L + 1, B, T', D), and frame lengths (B,). In training,
        with the feature cache on and the clips named by ``keys``, each clip's layers are computed once (in its
        first epoch) and read back, in fp16, afterwards: the backbone is frozen and in eval mode, so they
        never change."""
        if self.feature_cache is not None and keys is not None and self.training:
            cached, frames = self.feature_cache.batch(  # per clip (T', L + 1, D)
                keys, waves, lengths, self.frame_lengths,
                lambda w, lens: self._upstream(w, lens)[0].permute(1, 2, 0, 3))
            return cached.permute(2, 0, 1, 3), frames
        return self._upstream(waves, lengths)

    def _upstream(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        feats, frames = front_end(self.backbone, self.spec, waves, lengths)
        x, pad = encoder_input(self.backbone, self.spec, feats, frames)
        states = torch.stack(encoder_states(self.backbone, self.spec, x, pad, keep_all=True))
        if torch.jit.is_tracing():  # the ONNX export traces one unpadded clip: its states end at its last frame, and
            return states, frames  # int(frames.max()) would freeze the example's length into the graph
        return states[:, :, : int(frames.max())], frames

    def forward(self, waves: Tensor, lengths: Tensor | None, generator: torch.Generator | None = None,
                keys: list[int] | None = None) -> tuple[Tensor, Tensor]:
        """(B, T) samples → logits (B, T', V) and frame lengths (B,). ``generator`` is accepted for the
        recognisers' common signature; the downstream's dropout draws from torch's seeded global generator
        (lowres/train/loop.py seeds it per micro-batch)."""
        del generator
        if lengths is None:
            lengths = torch.full((waves.shape[0],), waves.shape[1], dtype=torch.long, device=waves.device)
        states, frames = self.upstream(waves, lengths, keys)  # (L + 1, B, T', D), no graph behind it
        # the downstream is small: it runs in float32 outside any autocast (bf16 on CUDA would hand the LSTM
        # reduced-precision inputs against its float32 weights), the frozen upstream under it
        with torch.autocast(device_type=waves.device.type, enabled=False):
            weights = self.layer_distribution()
            x = (weights[:, None, None, None] * states.float()).sum(dim=0)  # (B, T', D)
            y = self.lstm(x, frames)  # (B, T', 2H)
            return self.head(self.dropout(y)), frames


class PaddedBiLSTM(nn.Module):
    """Bidirectional LSTM layers over a padded batch, exact without packing: the forward direction reads each
    sequence's valid frames before its padding, and the backward direction reads each sequence reversed
    within its own length (padding still last), so no valid output ever saw a padded frame. The outputs at
    padded frames are zeros, as ``pad_packed_sequence`` gives. It equals a packed ``nn.LSTM(bidirectional=True,
    num_layers=layers, dropout=dropout)`` with the same weights (tested), and is several times faster than
    it on CPU, where the packed backward pass is slow (benchmarks/README.md, "Cached conv features")."""

    def __init__(self, dim: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        sizes = [dim] + [2 * hidden] * (layers - 1)
        self.forward_layers = nn.ModuleList(nn.LSTM(n, hidden, batch_first=True) for n in sizes)
        self.backward_layers = nn.ModuleList(nn.LSTM(n, hidden, batch_first=True) for n in sizes)
        self.dropout = nn.Dropout(dropout)  # between layers, as nn.LSTM's ``dropout``

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, dim), lengths (B,) → (B, T, 2 · hidden)."""
        b, t, _ = x.shape
        steps = torch.arange(t, device=x.device)[None, :]
        lengths = lengths.to(x.device)[:, None]
        valid = steps < lengths
        # within its length, frame i of a sequence swaps with frame length - 1 - i; padding stays in place
        order = torch.where(valid, lengths - 1 - steps, steps)

        def flip(y: Tensor) -> Tensor:
            return y.gather(1, order[..., None].expand(-1, -1, y.shape[-1]))

        for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers, strict=True)):
            if i:
                x = self.dropout(x)
            ahead, _ = fwd(x)
            behind, _ = bwd(flip(x))
            x = torch.cat([ahead, flip(behind)], dim=-1)
        return x.masked_fill(~valid[..., None], 0.0)
