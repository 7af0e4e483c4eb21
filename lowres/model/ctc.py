"""The CTC recogniser: backbone → (masking) → transformer → dropout → linear head over the vocabulary.

Masking, in training: a wav2vec 2.0 / HuBERT / WavLM backbone's transformer input is masked in time spans (with
the learned mask embedding) and in channel spans; a Whisper backbone's log-mel is (SpecAugment: time spans and
mel-bin bands zeroed, the spans in mel frames twice as long, as its frames are twice as dense).

Shapes: waveforms (B, T) float32 at 16 kHz with lengths (B,); logits (B, T', V) with frame lengths (B,).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowres.data.vocab import BLANK_ID
from lowres.model.backbone import (
    WHISPER,
    BackboneSpec,
    encoder_input,
    encoder_states,
    front_end,
    front_layers,
    front_lengths,
)
from lowres.model.masking import apply_masks


class CTCModel(nn.Module):
    def __init__(self, backbone: nn.Module, spec: BackboneSpec, vocab_size: int, *, mask_embedding: Tensor | None,
                 final_dropout: float, layerdrop: float, mask_prob: float, mask_length: int,
                 mask_channel_prob: float, mask_channel_length: int):
        """The regularisers have no defaults here: they are the configuration's (lowres/config.py ModelConfig),
        passed by model/build.py."""
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        dim = spec.embed_dim
        emb = mask_embedding.detach().clone().float() if mask_embedding is not None else torch.empty(dim).uniform_()
        self.mask_emb = nn.Parameter(emb)
        self.final_dropout = nn.Dropout(final_dropout)
        self.head = nn.Linear(dim, vocab_size)
        self.layerdrop = layerdrop
        self.mask_prob, self.mask_length = mask_prob, mask_length
        self.mask_channel_prob, self.mask_channel_length = mask_channel_prob, mask_channel_length
        self.freeze_feature_encoder = True
        self.fixed_conv_layers = len(front_layers(backbone, spec))  # lowest front-end layers that do not train
        self.transformer_frozen = False  # the head-only phase
        self.feature_cache = None  # a model/feature_cache.ConvFeatureCache while a run trains with it

    @property
    def cacheable(self) -> bool:
        """Whether the output of the front-end layers that do not train is the same in every epoch: there are such
        layers, and no SpecAugment changes their input (Whisper's log-mel masking)."""
        return self.fixed_conv_layers > 0 and not self._masks_mel()

    def uses_cache(self, keys) -> bool:
        """The output of the conv layers that do not train (the whole encoder when it is frozen) comes from (and
        goes into) the feature cache: training, and the batch's clips named by ``keys``."""
        return self.feature_cache is not None and keys is not None and self.training and self.cacheable

    def _masks_mel(self) -> bool:
        """Whisper's log-mel is masked in training (SpecAugment), before its convolutions."""
        return self.spec.family == WHISPER and (self.mask_prob > 0 or self.mask_channel_prob > 0)

    def forward(self, waves: Tensor, lengths: Tensor | None, generator: torch.Generator | None = None,
                keys: list[int] | None = None) -> tuple[Tensor, Tensor]:
        """(B, T) samples → logits (B, T', V) and frame lengths (B,). Masks and layerdrop in training only.
        ``keys``: the clips' ids for the feature cache (training batches only)."""
        if lengths is None:
            lengths = torch.full((waves.shape[0],), waves.shape[1], dtype=torch.long, device=waves.device)
        x = self.encode(waves, lengths, generator, keys)
        frames = self.frame_lengths(lengths)
        return self.head(self.final_dropout(x)), frames

    def frame_lengths(self, lengths: Tensor, layers: int | None = None) -> Tensor:
        """Frames out of the front end (``layers``: out of its lowest ``layers`` layers) for ``lengths``
        samples."""
        return front_lengths(self.spec, lengths, layers)

    def encode(self, waves: Tensor, lengths: Tensor, generator: torch.Generator | None = None,
               keys: list[int] | None = None) -> Tensor:
        grad = torch.is_grad_enabled()
        spec, backbone = self.spec, self.backbone
        with _grad(grad and not self.freeze_feature_encoder):
            if self.uses_cache(keys):
                n = self.fixed_conv_layers
                with torch.no_grad():
                    feats, frames = self.feature_cache.batch(
                        keys, waves, lengths, lambda lens: self.frame_lengths(lens, n),
                        lambda w, lens: front_end(backbone, spec, w, lens, stop=n)[0])
                if n < len(front_layers(backbone, spec)):  # the layers above train
                    feats, frames = front_end(backbone, spec, feats, frames, start=n)
            else:
                mel_mask = self._mel_mask(generator) if self.training and self._masks_mel() else None
                feats, frames = front_end(backbone, spec, waves, lengths, mel_mask=mel_mask)
        with _grad(grad and not self.transformer_frozen):
            x, pad = encoder_input(backbone, spec, feats, frames)
            if self.training and (self.mask_prob > 0 or self.mask_channel_prob > 0) and spec.family != WHISPER:
                x, _ = apply_masks(x, frames, self.mask_emb, self.mask_prob, self.mask_length,
                                   self.mask_channel_prob, self.mask_channel_length, generator)
            x = encoder_states(backbone, spec, x, pad, keep_all=False,
                               layer_drop=self.layerdrop if self.training else 0.0, generator=generator)[-1]
        return x

    def _mel_mask(self, generator: torch.Generator | None):
        """SpecAugment on Whisper's log-mel (B, M, n_mels): time spans of ``2 · mask_length`` mel frames (the
        configured span in 20 ms frames) and bands of at most a third of the mel bins, both set to zero."""
        def mask(mel: Tensor, lengths: Tensor) -> Tensor:
            zero = torch.zeros(mel.shape[-1], dtype=mel.dtype, device=mel.device)
            band = max(1, min(self.mask_channel_length, mel.shape[-1] // 3))
            return apply_masks(mel, lengths, zero, self.mask_prob, 2 * self.mask_length, self.mask_channel_prob,
                               band, generator)[0]

        return mask


def _grad(enabled: bool):
    return contextlib.nullcontext() if enabled else torch.no_grad()


def ctc_loss(logits: Tensor, frame_lengths: Tensor, targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Per-utterance CTC loss (B,) in float32, blank 0, ``zero_infinity`` (an impossible alignment gives 0,
    not inf). ``targets``: concatenated label ids (sum of target_lengths,)."""
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
    return F.ctc_loss(log_probs, targets, frame_lengths, target_lengths, blank=BLANK_ID, reduction="none",
                      zero_infinity=True)

