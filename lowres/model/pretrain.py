"""The wav2vec 2.0 pretraining objective on torchaudio's ``Wav2Vec2Model`` (used by ``lowres adapt``).

Per batch (B utterances, T frames, valid lengths):

1. conv features ``f`` (B, T, C); feature penalty = mean of ``f²`` over valid frames (before the LayerNorm);
   (a trained conv encoder gets its gradient scaled by ``feature_grad_mult``, 0.1 in BASE);
2. ``n = LayerNorm(f)``; quantizer input = dropout(n); transformer input = dropout(projection(n));
3. span masks (p=0.65, span 10, ≥ 2 spans, never in padding); masked frames ← the learned mask embedding;
4. context ``c`` = transformer(masked input) (layerdrop in training);
5. targets ``q`` = project_q(GumbelQuantizer(dropout(n)))  at masked frames only (straight-through hard
   Gumbel-softmax at temperature τ in training, argmax at evaluation);
6. for each masked frame, K negatives drawn uniformly with replacement from the *other* masked frames of the
   same utterance;
7. logits = cos(final_proj(c), [q, q_neg]) / 0.1, a negative equal to its positive → −∞;
8. loss = (Σ CE(logits, 0) + α·N·(GV − prob_perplexity)/GV + β·N·penalty) / N, N = masked frames.

Names follow Hugging Face ``Wav2Vec2ForPreTraining`` (``quantizer.codevectors``, ``quantizer.weight_proj``,
``project_q``, ``project_hid``), so its heads import directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowres.config import AdaptModelConfig as _M
from lowres.config import PretrainLossConfig as _L
from lowres.model.backbone import (
    WHISPER,
    BackboneSpec,
    encoder_input,
    encoder_states,
    front_end,
    padding_mask,
)
from lowres.model.masking import span_mask


class GumbelQuantizer(nn.Module):
    """Product quantizer: G groups × V entries; ``codevectors`` (1, G·V, dim/G), ``weight_proj`` C → G·V."""

    def __init__(self, in_dim: int, groups: int, entries: int, dim: int):
        super().__init__()
        if dim % groups:
            raise ValueError(f"quantizer dim {dim} must be divisible by groups {groups}")
        self.groups, self.entries = groups, entries
        self.codevectors = nn.Parameter(torch.empty(1, groups * entries, dim // groups).uniform_())
        self.weight_proj = nn.Linear(in_dim, groups * entries)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)

    @property
    def dim(self) -> int:
        return self.codevectors.shape[-1] * self.groups

    def forward(self, x: Tensor, temperature: float, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """x (N, C) → quantized (N, dim), code perplexity, probability perplexity (summed over groups)."""
        n = x.shape[0]
        logits = self.weight_proj(x).float().view(n, self.groups, self.entries)
        idx = logits.argmax(dim=-1)  # (N, G)
        hard = torch.zeros_like(logits).scatter_(-1, idx[..., None], 1.0)
        code_ppl = _perplexity(hard.mean(dim=0))
        soft = torch.softmax(logits, dim=-1)
        prob_ppl = _perplexity(soft.mean(dim=0))
        if self.training:
            u = torch.rand(logits.shape, generator=generator, device="cpu").to(logits.device)
            gumbels = -torch.log((-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10))
            y = torch.softmax((logits + gumbels) / temperature, dim=-1)
            pick = y.argmax(dim=-1)
            one_hot = torch.zeros_like(y).scatter_(-1, pick[..., None], 1.0)
            probs = one_hot - y.detach() + y  # straight-through
        else:
            probs = hard
        books = self.codevectors.view(self.groups, self.entries, -1).to(probs.dtype)
        q = torch.einsum("ngv,gvd->ngd", probs, books).reshape(n, -1)
        return q, code_ppl, prob_ppl


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def scale_grad(x: Tensor, factor: float) -> Tensor:
    """``x`` unchanged in the forward pass; its gradient times ``factor`` in the backward pass (fairseq's
    GradMultiply)."""
    return _ScaleGrad.apply(x, factor)


def _perplexity(marginal: Tensor) -> Tensor:
    """Σ over groups of exp(entropy) of the (G, V) marginal distribution."""
    return torch.exp(-(marginal * torch.log(marginal.clamp_min(1e-9))).sum(dim=-1)).sum()


class PretrainHeads(nn.Module):
    def __init__(self, conv_dim: int, embed_dim: int, groups: int, entries: int, dim: int, final_dim: int):
        super().__init__()
        self.quantizer = GumbelQuantizer(conv_dim, groups, entries, dim)
        self.project_q = nn.Linear(dim, final_dim)
        self.project_hid = nn.Linear(embed_dim, final_dim)  # fairseq's final_proj

    @classmethod
    def from_state(cls, state: dict, conv_dim: int, embed_dim: int, groups: int) -> PretrainHeads:
        """Heads with the shapes of a Hugging Face ``*ForPreTraining`` state (keys quantizer.*, project_*)."""
        code = state["quantizer.codevectors"]
        entries = code.shape[1] // groups
        dim = code.shape[2] * groups
        final_dim = state["project_q.weight"].shape[0]
        heads = cls(conv_dim, embed_dim, groups, entries, dim, final_dim)
        heads.load_state_dict({k: v for k, v in state.items() if k.split(".")[0] in
                               ("quantizer", "project_q", "project_hid")}, strict=True)
        return heads


@dataclass
class PretrainOutput:
    loss: Tensor  # normalised by the number of masked frames
    n_masked: int
    contrastive: float  # per masked frame
    diversity: float  # (GV - prob_ppl) / GV
    feature_penalty: float
    accuracy: float  # positive ranked first
    code_perplexity: float
    prob_perplexity: float
    masked_fraction: float
    # for tests / parity checks
    mask: Tensor | None = None
    negatives: Tensor | None = None
    logits: Tensor | None = None
    quantized: Tensor | None = None


def sample_negatives(mask: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """(N, K) indices into the N masked frames (row-major over the batch): for each masked frame, K draws
    with replacement from the other masked frames of its own utterance. Rows with a single masked frame
    point at themselves (their logits are then −∞ and the frame is dropped by the caller)."""
    counts = mask.sum(dim=1).cpu()
    offsets = torch.cumsum(counts, 0) - counts
    row = torch.repeat_interleave(torch.arange(mask.shape[0]), counts)
    local = torch.arange(int(counts.sum())) - offsets[row]
    m = counts[row]
    u = torch.rand(len(row), k, generator=generator)
    r = (u * (m - 1).clamp_min(1)[:, None]).long()
    r = r + (r >= local[:, None]).long()
    r = torch.where((m > 1)[:, None], r, local[:, None])
    return (offsets[row][:, None] + r).to(mask.device)


class MaskedPretrainer(nn.Module):
    """What the masked-prediction objectives share (wav2vec 2.0 here, HuBERT in hubert.py): backbone, heads,
    the learned mask embedding, the masking and regularisation settings, and the flags the heads warm-up and
    a frozen conv encoder set. Their encoder pass is :func:`masked_encode`."""

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, heads: nn.Module, mask_embedding: Tensor | None, *,
                 mask_prob: float, mask_length: int, min_spans: int, layerdrop: float, feature_penalty: float,
                 feature_grad_mult: float):
        super().__init__()
        self.backbone, self.spec, self.heads = backbone, spec, heads
        dim = spec.embed_dim
        emb = mask_embedding.detach().clone().float() if mask_embedding is not None else torch.empty(dim).uniform_()
        self.mask_emb = nn.Parameter(emb)
        self.mask_prob, self.mask_length, self.min_spans = mask_prob, mask_length, min_spans
        self.layerdrop = layerdrop
        self.feature_penalty, self.feature_grad_mult = feature_penalty, feature_grad_mult
        self.freeze_feature_encoder = True
        self.encoder_frozen = False  # the heads warm-up


class Wav2Vec2Pretrainer(MaskedPretrainer):
    """Backbone + mask embedding + pretraining heads; ``forward`` returns the objective."""

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, heads: PretrainHeads, mask_embedding: Tensor | None,
                 *, mask_prob: float = _M.mask_prob, mask_length: int = _M.mask_length,
                 min_spans: int = _M.min_spans, layerdrop: float = _M.layerdrop,
                 num_negatives: int = _L.num_negatives, logit_temperature: float = _L.logit_temperature,
                 diversity_weight: float = _L.diversity_weight, feature_penalty: float = 10.0,
                 feature_dropout: float = _L.feature_dropout, feature_grad_mult: float = 1.0):
        """Defaults are the configuration's (lowres/config.py), except ``feature_penalty`` (the configuration
        resolves -1 to 10 or 0 by the conv encoder's norm; here the value itself) and ``feature_grad_mult``
        (1 = the plain gradient; adapt passes its configured 0.1)."""
        super().__init__(backbone, spec, heads, mask_embedding, mask_prob=mask_prob, mask_length=mask_length,
                         min_spans=min_spans, layerdrop=layerdrop, feature_penalty=feature_penalty,
                         feature_grad_mult=feature_grad_mult)
        self.num_negatives, self.logit_temperature = num_negatives, logit_temperature
        self.diversity_weight = diversity_weight
        self.feature_dropout = nn.Dropout(feature_dropout)

    def forward(self, waves: Tensor, lengths: Tensor, temperature: float = 2.0,
                generator: torch.Generator | None = None, mask: Tensor | None = None,
                negatives: Tensor | None = None, keep: bool = False) -> PretrainOutput:
        enc = masked_encode(self, waves, lengths, generator, mask)
        normed, mask, valid, penalty, ctx = enc.normed, enc.mask, enc.valid, enc.penalty, enc.context
        # targets: quantize the masked frames only
        q_in = self.feature_dropout(normed)[mask]
        q, code_ppl, prob_ppl = self.heads.quantizer(q_in, temperature, generator)
        y = self.heads.project_q(q.to(self.heads.project_q.weight.dtype))
        c = self.heads.project_hid(ctx[mask])
        n = y.shape[0]
        if negatives is None:
            negatives = sample_negatives(mask, self.num_negatives, generator)
        # index_select: its backward (index_add) is deterministic on CPU, unlike advanced indexing's
        y_neg = torch.index_select(y, 0, negatives.reshape(-1)).view(n, negatives.shape[1], -1)  # (N, K, F)
        targets = torch.cat([y[:, None, :], y_neg], dim=1)
        logits = F.cosine_similarity(c.float()[:, None, :], targets.float(), dim=-1) / self.logit_temperature
        neg_is_pos = (y_neg == y[:, None, :]).all(dim=-1)
        logits[:, 1:] = logits[:, 1:].masked_fill(neg_is_pos, float("-inf"))
        ce = F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=logits.device), reduction="sum")
        gv = self.heads.quantizer.groups * self.heads.quantizer.entries
        diversity = (gv - prob_ppl) / gv
        total = ce + self.diversity_weight * n * diversity + self.feature_penalty * n * penalty
        loss = total / max(n, 1)
        with torch.no_grad():
            acc = float((logits.argmax(dim=-1) == 0).float().mean()) if n else 0.0
        out = PretrainOutput(loss=loss, n_masked=n, contrastive=float(ce.detach()) / max(n, 1),
                             diversity=float(diversity.detach()), feature_penalty=float(penalty.detach()),
                             accuracy=acc, code_perplexity=float(code_ppl.detach()), prob_perplexity=float(prob_ppl.detach()),
                             masked_fraction=float(mask.sum()) / max(float(valid.sum()), 1.0))
        if keep:
            out.mask, out.negatives, out.logits, out.quantized = mask, negatives, logits.detach(), y.detach()
        return out


@dataclass
class MaskedEncoding:
    """What the masked-prediction objectives share: the encoder's pass over masked input."""

    context: Tensor  # (B, T, D) transformer output
    normed: Tensor  # (B, T, C) conv features after the feature projection's LayerNorm (wav2vec 2.0's quantizer input)
    mask: Tensor  # (B, T) True at masked valid frames
    valid: Tensor  # (B, T) True at valid (unpadded) frames
    penalty: Tensor  # mean of the squared conv features over valid frames (the feature penalty)


def masked_encode(model: nn.Module, waves: Tensor, lengths: Tensor, generator: torch.Generator | None,
                  mask: Tensor | None = None) -> MaskedEncoding:
    """conv features (trained when not frozen, their gradient scaled by ``feature_grad_mult``) → penalty →
    LayerNorm → projection → span masks (``mask_prob``, ``mask_length``, at least ``min_spans``, never in
    padding; or ``mask`` as given) replaced by the learned mask embedding → transformer (layerdrop in
    training). ``model``: a pretrainer with ``backbone``, ``spec``, ``mask_emb`` and those settings, and the
    flags ``freeze_feature_encoder`` / ``encoder_frozen`` (the heads warm-up)."""
    spec, backbone = model.spec, model.backbone
    grad = torch.is_grad_enabled()
    with torch.set_grad_enabled(grad and not model.freeze_feature_encoder and not model.encoder_frozen):
        feats, frames = front_end(backbone, spec, waves, lengths)
    if feats.requires_grad and model.feature_grad_mult != 1.0:
        feats = scale_grad(feats, model.feature_grad_mult)
    b, t, _ = feats.shape
    pad = padding_mask(frames, t)
    valid = ~pad if pad is not None else torch.ones(b, t, dtype=torch.bool, device=feats.device)
    penalty = feats.float().pow(2)[valid].mean()
    with torch.set_grad_enabled(grad and not model.encoder_frozen):
        if spec.family == WHISPER:  # its frames get positions, no normalised projection (HuBERT's targets are units)
            normed = feats
            x, _ = encoder_input(backbone, spec, feats, frames)
        else:
            proj = backbone.encoder.feature_projection
            normed = proj.layer_norm(feats)
            x = proj.dropout(proj.projection(normed))
    if mask is None:
        mask = span_mask(frames if frames is not None else torch.full((b,), t), t, model.mask_prob,
                         model.mask_length, model.min_spans, generator).to(x.device)
    mask = mask & valid
    x = torch.where(mask[..., None], model.mask_emb.to(x.dtype)[None, None, :], x)
    if pad is not None:
        x = x.masked_fill(pad[..., None], 0.0)
    with torch.set_grad_enabled(grad and not model.encoder_frozen):
        ctx = encoder_states(backbone, spec, x, pad, keep_all=False,
                             layer_drop=model.layerdrop if model.training else 0.0, generator=generator)[-1]
    return MaskedEncoding(ctx, normed, mask, valid, penalty)


def temperature_at(step: int, start: float, floor: float, decay: float, max_steps: int) -> float:
    """τ = max(start · decay^step, floor); decay 0 = compressed so the floor is reached at ``max_steps``."""
    if decay <= 0:
        decay = (floor / start) ** (1.0 / max(max_steps, 1)) if start > floor else 1.0
    return max(start * decay**step, floor)


def fresh_heads(spec: BackboneSpec, groups: int, entries: int, dim: int, final_dim: int) -> PretrainHeads:
    conv_dim = spec.arch["extractor_conv_layer_config"][-1][0]
    embed = spec.embed_dim
    final_dim = final_dim or (256 if embed <= 768 else 768)
    dim = dim or final_dim
    return PretrainHeads(conv_dim, embed, groups, entries, dim, final_dim)


def collapse_signs(row: dict, groups: int) -> list[str]:
    """What in a logged metrics row looks like codebook collapse (empty = healthy)."""
    signs = []
    if row.get("prob_perplexity", math.inf) <= groups * 1.05:
        signs.append(f"probability perplexity {row['prob_perplexity']:.2f} is at its minimum ({groups}: one code "
                     "per group)")
    if row.get("code_perplexity", math.inf) <= groups * 1.05:
        signs.append(f"code perplexity {row['code_perplexity']:.2f} is at its minimum")
    if row.get("contrastive", 1.0) == 0.0:
        signs.append("contrastive loss is exactly 0")
    if 0.0 <= row.get("grad_norm", 1.0) < 1e-7:
        signs.append(f"gradient norm {row['grad_norm']:.1e} vanished")
    return signs

