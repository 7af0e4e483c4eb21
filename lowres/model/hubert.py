"""HuBERT's masked prediction of discovered units on torchaudio's models (``lowres adapt --objective hubert``).

Per batch (B utterances, T frames at 50 Hz, valid lengths, a unit per frame from lowres/units.py):

1. the masked encoder pass shared with wav2vec 2.0 (lowres/model/pretrain.py ``masked_encode``): conv
   features (gradient × ``feature_grad_mult``), feature penalty = mean squared conv features over valid
   frames, span masks (HuBERT: p = 0.8, span 10) replaced by the learned mask embedding, transformer;
2. ``p = final_proj(o_t)`` (D → F); each unit c has a learned embedding ``e_c`` (F);
3. logits = cos(p, e_c) / 0.1 over all C units;
4. loss = (Σ_masked CE + w_u · Σ_unmasked CE + β · N · penalty) / N, N = masked frames (w_u = 0 by default).

Names follow torchaudio's ``HuBERTPretrainModel`` (``logit_generator.final_proj``,
``logit_generator.label_embeddings``): tests/test_hubert.py copies its weights in and gets its logits and loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowres.config import AdaptModelConfig as _M
from lowres.config import HubertConfig as _H
from lowres.config import PretrainLossConfig as _L
from lowres.model.backbone import BackboneSpec
from lowres.model.pretrain import MaskedPretrainer, masked_encode

IGNORE = -100  # a frame without a unit (padding, or a crop longer than its units)


class HubertHeads(nn.Module):
    def __init__(self, embed_dim: int, num_units: int, final_dim: int):
        super().__init__()
        self.final_proj = nn.Linear(embed_dim, final_dim)
        self.label_embeddings = nn.Parameter(torch.empty(num_units, final_dim).uniform_())

    @property
    def num_units(self) -> int:
        return self.label_embeddings.shape[0]


def fresh_hubert_heads(spec: BackboneSpec, num_units: int, final_dim: int = 0) -> HubertHeads:
    """Heads for ``num_units`` units; ``final_dim`` 0 = 256 for models up to 768 wide, 768 above (HuBERT's)."""
    return HubertHeads(spec.embed_dim, num_units, final_dim or (256 if spec.embed_dim <= 768 else 768))


@dataclass
class HubertOutput:
    loss: Tensor  # normalised by the number of masked frames
    n_masked: int
    masked_ce: float  # per masked frame
    unmasked_ce: float  # per unmasked frame
    feature_penalty: float
    masked_accuracy: float  # argmax = the frame's unit, at masked frames
    unmasked_accuracy: float
    masked_fraction: float
    predicted: Tensor  # (C,) how often each unit was the argmax at masked frames (for perplexities)
    targets: Tensor  # (C,) how often each unit was the target at masked frames
    # for tests / parity checks
    mask: Tensor | None = None
    logits_m: Tensor | None = None
    logits_u: Tensor | None = None


class HubertPretrainer(MaskedPretrainer):
    """Backbone + mask embedding + HuBERT heads; ``forward(waves, lengths, units)`` returns the objective."""

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, heads: HubertHeads, mask_embedding: Tensor | None,
                 *, mask_prob: float, mask_length: int = _M.mask_length, min_spans: int = _M.min_spans,
                 layerdrop: float = _M.layerdrop, logit_temperature: float = _L.logit_temperature,
                 unmasked_weight: float = _H.unmasked_weight, feature_penalty: float = 10.0,
                 feature_grad_mult: float = 1.0):
        """Defaults are the configuration's (lowres/config.py), except ``mask_prob`` (no default: HuBERT's 0.8 is
        recipes/adapt_hubert.toml's delta over adapt's 0.65), ``feature_penalty`` (the value itself; the
        configuration resolves -1 by the conv encoder's norm) and ``feature_grad_mult`` (1 = the plain
        gradient)."""
        super().__init__(backbone, spec, heads, mask_embedding, mask_prob=mask_prob, mask_length=mask_length,
                         min_spans=min_spans, layerdrop=layerdrop, feature_penalty=feature_penalty,
                         feature_grad_mult=feature_grad_mult)
        self.logit_temperature, self.unmasked_weight = logit_temperature, unmasked_weight

    def logits(self, context: Tensor) -> Tensor:
        """(N, D) transformer outputs → (N, C) cosine logits over every unit / temperature."""
        p = self.heads.final_proj(context)
        return F.cosine_similarity(p.float()[:, None, :], self.heads.label_embeddings.float()[None, :, :],
                                   dim=-1) / self.logit_temperature

    def forward(self, waves: Tensor, lengths: Tensor, units: Tensor, generator: torch.Generator | None = None,
                mask: Tensor | None = None, keep: bool = False) -> HubertOutput:
        """``units``: (B, T') unit per frame (IGNORE where there is none); T' may differ from the model's T by
        rounding at the end of a clip: it is cut or padded with IGNORE."""
        enc = masked_encode(self, waves, lengths, generator, mask)
        b, t = enc.mask.shape
        units = units.to(enc.mask.device)
        if units.shape[1] < t:
            units = F.pad(units, (0, t - units.shape[1]), value=IGNORE)
        units = units[:, :t]
        has_unit = units != IGNORE
        mask_m = enc.mask & has_unit
        mask_u = enc.valid & ~enc.mask & has_unit
        logits_m = self.logits(enc.context[mask_m])
        target_m = units[mask_m]
        ce_m = F.cross_entropy(logits_m, target_m, reduction="sum")
        n = int(mask_m.sum())
        total = ce_m + self.feature_penalty * n * enc.penalty
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.unmasked_weight > 0):
            logits_u = self.logits(enc.context[mask_u])  # without a weight, only for the accuracy metric
            ce_u = F.cross_entropy(logits_u, units[mask_u], reduction="sum")
        if self.unmasked_weight > 0:
            total = total + self.unmasked_weight * ce_u
        loss = total / max(n, 1)
        c = self.heads.num_units
        with torch.no_grad():
            pred_m = logits_m.argmax(dim=-1)
            acc_m = float((pred_m == target_m).float().mean()) if n else 0.0
            acc_u = float((logits_u.argmax(dim=-1) == units[mask_u]).float().mean()) if len(logits_u) else float("nan")
            predicted = torch.bincount(pred_m.cpu(), minlength=c).float()
            targets = torch.bincount(target_m.cpu(), minlength=c).float()
        n_u = int(mask_u.sum())
        out = HubertOutput(loss=loss, n_masked=n, masked_ce=float(ce_m.detach()) / max(n, 1),
                           unmasked_ce=float(ce_u.detach()) / max(n_u, 1),
                           feature_penalty=float(enc.penalty.detach()), masked_accuracy=acc_m,
                           unmasked_accuracy=acc_u, masked_fraction=float(enc.mask.sum()) / max(float(enc.valid.sum()), 1.0),
                           predicted=predicted, targets=targets)
        if keep:
            out.mask, out.logits_m = enc.mask, logits_m.detach()
            out.logits_u = logits_u.detach()
        return out


def perplexity(counts: Tensor) -> float:
    """exp(entropy) of a histogram: how many units are in use (1 = one unit, C = all equally)."""
    total = float(counts.sum())
    if total <= 0:
        return 0.0
    p = counts / total
    return math.exp(-float((p * torch.log(p.clamp_min(1e-12))).sum()))


def collapse_signs(row: dict) -> list[str]:
    """What in a logged metrics row looks like collapsed predictions (empty = healthy): the predicted units at
    masked frames are essentially one or two while the targets use many."""
    signs = []
    pred, target = row.get("predicted_perplexity", math.inf), row.get("target_perplexity", 0.0)
    if pred <= 1.5 and target >= 8.0:
        signs.append(f"the model predicts essentially one unit at masked frames (perplexity of its predictions "
                     f"{pred:.2f}, of the targets {target:.1f})")
    if 0.0 <= row.get("grad_norm", 1.0) < 1e-7:
        signs.append(f"gradient norm {row['grad_norm']:.1e} vanished")
    return signs
