"""Backbones: the networks every --base becomes (a torchaudio ``Wav2Vec2Model`` described by a
:class:`BackboneSpec`: family, the keyword arguments of torchaudio's factory, and the waveform normalisation the
checkpoint was trained with, so a run folder can always rebuild its model), the random-init architectures by
name (``RANDOM_CONFIGS``: data, not code), and the forward pieces that fine-tuning and pretraining share. Where
weights come from (shipped bases, bundles, Hugging Face folders, runs) is lowres/bases/'s business: nothing here
reads files.

- :func:`normalize_waveform` normalises each utterance over its valid samples (never over padding);
- :func:`conv_features` runs the conv feature encoder so that padding never changes a valid frame: the
  group-norm layer of BASE-style encoders takes its statistics over valid frames only, which is what the
  model saw in pretraining (equal-length crops). A padded batch therefore equals one-at-a-time.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lowres import LowresError
from lowres.audiotime import FRAME_S, STANDARD_CONV, WHISPER_STACK, frame_lengths

FAMILIES = ("wav2vec2", "hubert", "wavlm")  # torchaudio's Wav2Vec2Model (WavLM's variant for wavlm)
WHISPER = "whisper"  # OpenAI Whisper's audio encoder (lowres/model/whisper.py)


@dataclass(frozen=True)
class BackboneSpec:
    family: str  # wav2vec2 | hubert | wavlm | whisper
    arch: dict  # keyword arguments of torchaudio.models.wav2vec2_model / wavlm_model (no aux_num_out), or the
    #             sizes of a Whisper encoder (lowres.model.whisper.WhisperEncoder)
    normalize_waveform: bool  # zero mean, unit variance per utterance (LARGE, XLS-R); BASE models: raw
    pretrained: bool = True  # False for random-init configurations (training from scratch)
    name: str = ""  # what --base said

    def to_dict(self) -> dict:
        arch = dict(self.arch)
        if "extractor_conv_layer_config" in arch:
            arch["extractor_conv_layer_config"] = [list(c) for c in arch["extractor_conv_layer_config"]]
        return {"family": self.family, "arch": arch, "normalize_waveform": self.normalize_waveform,
                "pretrained": self.pretrained, "name": self.name}

    @classmethod
    def from_dict(cls, d: dict) -> BackboneSpec:
        arch = dict(d["arch"])
        if "extractor_conv_layer_config" in arch:
            arch["extractor_conv_layer_config"] = [tuple(c) for c in arch["extractor_conv_layer_config"]]
        return cls(d["family"], arch, bool(d["normalize_waveform"]), bool(d.get("pretrained", True)),
                   d.get("name", ""))

    @property
    def embed_dim(self) -> int:
        return int(self.arch["encoder_embed_dim"])

    @property
    def max_seconds(self) -> float:
        """The longest clip the backbone reads at once: Whisper's 30-s window, else no limit."""
        return float(self.arch["max_source_positions"]) * FRAME_S if self.family == WHISPER else math.inf

    @property
    def num_layers(self) -> int:
        return int(self.arch["encoder_num_layers"])

    @property
    def conv_stack(self) -> tuple[tuple[int, ...], ...]:
        """The front end's layers as audiotime counts frames: (kernel, stride) per conv layer, or for Whisper
        (kernel, stride, padding) of its log-mel framing and its two convolutions."""
        if self.family == WHISPER:
            return WHISPER_STACK
        return tuple((int(k), int(s)) for _, k, s in self.arch["extractor_conv_layer_config"])


@dataclass
class LoadedBackbone:
    model: nn.Module  # torchaudio Wav2Vec2Model
    spec: BackboneSpec
    mask_embedding: Tensor | None = None  # learned mask embedding when the checkpoint has one (HF, lowres runs)
    pretrain_heads: dict = field(default_factory=dict)  # quantizer/project_q/final_proj weights, when present
    fingerprint: str = ""  # of the base weights, to detect a changed base when a run is reloaded
    source: str = ""  # human-readable origin


# ---------------------------------------------------------------------------------------------------
# registries: data, not code



def _conv(channels: int) -> list[tuple[int, int, int]]:
    """torchaudio's conv layer config: (channels, kernel, stride) per layer of the standard stack."""
    return [(channels, kernel, stride) for kernel, stride in STANDARD_CONV]



def _arch(conv, dim, layers, heads, ff, pos_kernel, pos_groups, *, mode="layer_norm", conv_bias=True,
          norm_first=True, dropout=0.1, attention_dropout=0.1, ff_dropout=0.0, projection_dropout=0.1,
          layer_drop=0.05) -> dict:
    return {
        "extractor_mode": mode, "extractor_conv_layer_config": [tuple(c) for c in conv],
        "extractor_conv_bias": conv_bias, "encoder_embed_dim": dim, "encoder_projection_dropout": projection_dropout,
        "encoder_pos_conv_kernel": pos_kernel, "encoder_pos_conv_groups": pos_groups, "encoder_num_layers": layers,
        "encoder_num_heads": heads, "encoder_attention_dropout": attention_dropout,
        "encoder_ff_interm_features": ff, "encoder_ff_interm_dropout": ff_dropout, "encoder_dropout": dropout,
        "encoder_layer_norm_first": norm_first, "encoder_layer_drop": layer_drop,
    }


# Random-init architectures for training from scratch. `tiny` runs on a laptop CPU (tests, demo); the
# others are the standard sizes. All keep the standard 320-sample (20 ms) frame stride.
RANDOM_CONFIGS: dict[str, BackboneSpec] = {
    "tiny": BackboneSpec("wav2vec2", _arch(
        _conv(64), 144, 4, 4, 576, 32, 8,
        dropout=0.1, attention_dropout=0.0, projection_dropout=0.0, layer_drop=0.0), True, False, "tiny"),
    "small": BackboneSpec("wav2vec2", _arch(
        _conv(256), 384, 8, 6, 1536, 64, 16), True, False, "small"),
    "base-scratch": BackboneSpec("wav2vec2", _arch(
        _conv(512), 768, 12, 12, 3072, 128, 16, mode="group_norm", conv_bias=False, norm_first=False),
        False, False, "base-scratch"),
    "large-scratch": BackboneSpec("wav2vec2", _arch(
        _conv(512), 1024, 24, 16, 4096, 128, 16), True, False, "large-scratch"),
}


# ---------------------------------------------------------------------------------------------------
# building and loading


def build_model(spec: BackboneSpec) -> nn.Module:
    """A randomly initialised model of ``spec``'s architecture: torchaudio's, or lowres's Whisper encoder."""
    if spec.family == WHISPER:
        from lowres.model.whisper import WhisperEncoder

        return WhisperEncoder(spec.arch)
    from torchaudio.models import wav2vec2_model, wavlm_model

    arch = dict(spec.arch)
    arch["extractor_conv_layer_config"] = [tuple(c) for c in arch["extractor_conv_layer_config"]]
    factory = wavlm_model if spec.family == "wavlm" else wav2vec2_model
    try:
        return factory(**arch, aux_num_out=None)
    except TypeError as exc:
        raise LowresError(f"Backbone architecture does not fit torchaudio's {factory.__name__}: {exc}") from None


def reference_init(model: nn.Module) -> None:
    """Initialise a randomly built torchaudio wav2vec 2.0 model as fairseq and transformers do for training
    from scratch (torchaudio leaves PyTorch's layer defaults): transformer linears N(0, 0.02) with zero bias
    (BERT's init), conv encoder kaiming-normal, positional conv N(0, sqrt(4 / (kernel · dim))) under its
    weight norm with zero bias. LayerNorms stay 1 / 0 and the feature projection keeps its default."""
    with torch.no_grad():
        for layer in model.feature_extractor.conv_layers:
            nn.init.kaiming_normal_(layer.conv.weight)
        transformer = model.encoder.transformer
        for module in transformer.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.02)
                if module.bias is not None:
                    module.bias.zero_()
        pos = transformer.pos_conv_embed.conv
        std = math.sqrt(4.0 / (pos.kernel_size[0] * pos.in_channels))
        pos.weight = torch.randn(pos.weight.shape) * std  # weight norm: sets g and v
        pos.bias.zero_()


def fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights (names, shapes and sums): detects a base that changed on disk."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(f"{float(t.double().sum()):.6e}".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# forward pieces


def normalize_waveform(waves: Tensor, lengths: Tensor | None, eps: float = 1e-7) -> Tensor:
    """Zero mean, unit variance per utterance over its valid samples; padding stays zero. (B, T) → (B, T)."""
    if lengths is None:
        mean = waves.mean(dim=1, keepdim=True)
        var = waves.var(dim=1, unbiased=False, keepdim=True)
        return (waves - mean) / torch.sqrt(var + eps)
    valid = (torch.arange(waves.shape[1], device=waves.device)[None, :] < lengths[:, None]).to(waves.dtype)
    n = lengths.clamp(min=1).to(waves.dtype)[:, None]
    mean = (waves * valid).sum(dim=1, keepdim=True) / n
    var = (((waves - mean) * valid) ** 2).sum(dim=1, keepdim=True) / n
    return (waves - mean) / torch.sqrt(var + eps) * valid


def _masked_group_norm(x: Tensor, lengths: Tensor, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm over (channels in group, valid frames) only; padded frames come out as zeros. x: (B, C, T).

    PyTorch's own group norm runs on each utterance's valid frames: the first conv layer's output is the
    largest tensor of the model (512 channels at 3.2 kHz), and a masked mean/variance written in tensor ops
    takes ~10 passes over it where the native kernel takes ~2 (4x faster for a BASE batch on CPU)."""
    t = x.shape[-1]
    y = torch.empty_like(x)
    for i, n in enumerate(lengths.tolist()):
        n = min(int(n), t)
        if n > 0:
            y[i, :, :n] = F.group_norm(x[i: i + 1, :, :n], norm.num_groups, norm.weight, norm.bias, norm.eps)[0]
        if n < t:
            y[i, :, n:] = 0.0
    return y


def conv_features(feature_extractor: nn.Module, waves: Tensor, lengths: Tensor | None, *, start: int = 0,
                  stop: int | None = None) -> tuple[Tensor, Tensor | None]:
    """torchaudio's conv feature encoder, padding-aware. (B, T) samples → (B, T', C) frames, lengths.

    A padded clip's valid frames equal those of the clip run alone up to float rounding (about 1e-6: the group
    norm's statistics are summed in another order), not bit for bit; the feature cache therefore computes each
    clip it stores on its own, so that a resumed run repeats an uninterrupted one exactly.

    ``start``/``stop`` run only layers ``start`` to ``stop - 1``: from ``start > 0`` the input is the output of
    layer ``start - 1``, (B, T_start, C) with its frame lengths (a valid output frame reads valid input frames
    only, so whatever fills the padding does not matter)."""
    if start == 0 and waves.ndim != 2:
        raise ValueError(f"expected waveforms of shape (batch, time), got {tuple(waves.shape)}")
    if start > 0 and waves.ndim != 3:
        raise ValueError(f"expected conv features of shape (batch, frames, channels), got {tuple(waves.shape)}")
    x = waves.unsqueeze(1) if start == 0 else waves.transpose(1, 2)
    for layer in feature_extractor.conv_layers[start:stop]:
        x = layer.conv(x)
        if lengths is not None:
            lengths = frame_lengths(lengths, ((layer.kernel_size, layer.stride),))
        norm = layer.layer_norm
        if isinstance(norm, nn.GroupNorm) and lengths is not None and bool((lengths < x.shape[-1]).any()):
            x = _masked_group_norm(x, lengths, norm)
        elif _transposed_layer_norm(norm) and x.device.type == "cpu":
            x = _channel_layer_norm(x, norm)
        elif norm is not None:
            x = norm(x)
        x = F.gelu(x)
    return x.transpose(1, 2), lengths


def _transposed_layer_norm(norm) -> bool:
    """torchaudio's conv-encoder LayerNorm (``components.LayerNorm``: over the channels of a (B, C, T) input)."""
    from torchaudio.models.wav2vec2.components import LayerNorm

    return isinstance(norm, LayerNorm) and norm.weight is not None and norm.bias is not None


def _channel_layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """torchaudio's conv-encoder LayerNorm (over the channels of each frame) computed in place on (B, C, T).

    torchaudio transposes to (B, T, C), normalises and transposes back, which leaves the tensor that GELU and
    the next convolution read in transposed memory: on a CPU their backward passes then copy it element by
    element (measured on tiny's 7 layers, 4 × 5 s, one thread: 0.46 s forward + backward, 0.22 s with this,
    the outputs equal within 2e-6)."""
    mean = x.mean(dim=1, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=1, keepdim=True)
    return centred * torch.rsqrt(var + norm.eps) * norm.weight[:, None] + norm.bias[:, None]


def padding_mask(lengths: Tensor | None, max_len: int) -> Tensor | None:
    """(B, T) True at padded frames, or None when nothing is padded."""
    if lengths is None:
        return None
    mask = torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]
    return mask if bool(mask.any()) else None


def attention_mask(pad: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """torchaudio's additive attention mask (B, 1, T, T) from a padding mask; None keeps fast kernels."""
    if pad is None:
        return None
    b, t = pad.shape
    mask = torch.zeros(b, 1, 1, t, dtype=dtype, device=pad.device).masked_fill(pad[:, None, None, :], -10000.0)
    return mask.expand(b, 1, t, t)


def set_gradient_checkpointing(transformer: nn.Module, enabled: bool) -> None:
    """Make :func:`run_transformer` recompute each layer's activations in the backward pass instead of keeping
    them (``torch.utils.checkpoint``, non-reentrant) whenever it runs in training with gradients on. The
    result is exact: the recomputation replays the same dropout draws (the checkpoint restores the RNG
    state), and layerdrop is drawn before the layers run. The flag lives on the transformer module, as in
    Hugging Face's encoders, so every forward that runs this transformer obeys it."""
    transformer.gradient_checkpointing = bool(enabled)


def _layer_call(layer: nn.Module, checkpointed: bool):
    """The layer, or the layer under a non-reentrant checkpoint (which keeps ``preserve_rng_state=True``)."""
    return functools.partial(checkpoint, layer, use_reentrant=False) if checkpointed else layer


def run_transformer(transformer: nn.Module, x: Tensor, pad: Tensor | None, family: str,
                    layer_drop: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """torchaudio's transformer stack with padding handled for every family (its own forward cannot pass
    a padding mask to WavLM layers) and layerdrop drawn from ``generator``: the same seed drops the same
    layers on every distributed rank and again after a resume. Each layer runs under a gradient checkpoint
    when :func:`set_gradient_checkpointing` turned it on, the transformer trains and gradients are on.
    x: (B, T, D) → (B, T, D)."""
    return _transformer_states(transformer, x, pad, family, layer_drop, generator, keep_all=False)[-1]


def hidden_states(transformer: nn.Module, x: Tensor, pad: Tensor | None, family: str) -> list[Tensor]:
    """Every hidden layer of the transformer stack, as s3prl and Hugging Face's ``output_hidden_states`` count
    them: [the input of the first layer (the projected conv features plus the positional convolution), the
    output of layer 1, ..., of layer L] (L + 1 tensors (B, T, D)); the last one is :func:`run_transformer`'s
    output (with the stack's final layer norm where the architecture has one there). No layerdrop."""
    return _transformer_states(transformer, x, pad, family, 0.0, None, keep_all=True)


def _transformer_states(transformer: nn.Module, x: Tensor, pad: Tensor | None, family: str, layer_drop: float,
                        generator: torch.Generator | None, keep_all: bool) -> list[Tensor]:
    """The one loop over the layers behind :func:`run_transformer` (``keep_all`` False: only the output) and
    :func:`hidden_states` (every layer's output)."""
    x = x + transformer.pos_conv_embed(x)
    if transformer.layer_norm_first:
        x = transformer.layer_norm(x)
    x = transformer.dropout(x)
    states = [x] if keep_all else []
    wavlm = family == "wavlm"
    mask = None if wavlm else attention_mask(pad, x.dtype)
    drops = None
    if layer_drop > 0 and transformer.training:
        drops = torch.rand(len(transformer.layers), generator=generator) < layer_drop
    checkpointed = getattr(transformer, "gradient_checkpointing", False) and transformer.training \
        and torch.is_grad_enabled()
    position_bias = None
    for i, layer in enumerate(transformer.layers):
        if drops is not None and bool(drops[i]):
            continue
        call = _layer_call(layer, checkpointed)
        if wavlm:
            x, position_bias = call(x, None, position_bias=position_bias, key_padding_mask=pad)
        else:
            x, _ = call(x, mask)
        if keep_all:
            states.append(x)
    if not transformer.layer_norm_first:
        x = transformer.layer_norm(x)
    if keep_all:
        states[-1] = x
    else:
        states.append(x)
    return states


# ---------------------------------------------------------------------------------------------------
# the same pieces for every family: the recognisers and objectives call these, never a family's modules


def front_layers(model: nn.Module, spec: BackboneSpec) -> list[nn.Module]:
    """The front end's layers that hold weights, lowest first (what ``model.frozen_conv_layers`` counts)."""
    return list(model.conv_layers if spec.family == WHISPER else model.feature_extractor.conv_layers)


def front_module(model: nn.Module, spec: BackboneSpec) -> nn.Module:
    """The module holding the front end's weights (frozen or trained as a whole)."""
    if spec.family == WHISPER:
        return nn.ModuleList(model.conv_layers)
    return model.feature_extractor


def encoder_module(model: nn.Module, spec: BackboneSpec) -> nn.Module:
    """The module holding the transformer layers (LoRA, gradient checkpointing and the trained weights)."""
    return model if spec.family == WHISPER else model.encoder.transformer


def front_end(model: nn.Module, spec: BackboneSpec, waves: Tensor, lengths: Tensor, *, start: int = 0,
              stop: int | None = None, mel_mask=None) -> tuple[Tensor, Tensor]:
    """The front end's layers ``start`` to ``stop - 1`` (of :func:`front_layers`), padding-aware: (B, T)
    samples, or from ``start > 0`` the output of layer ``start - 1``, -> (B, T', C) frames with lengths.
    ``mel_mask(mel (B, M, n_mels), mel lengths) -> mel``: Whisper's SpecAugment on the log-mel."""
    if spec.family == WHISPER:
        x = waves if start == 0 else waves.transpose(1, 2)
        x, lengths = model.features(x, lengths, start=start + 1 if start else 0,
                                    stop=None if stop is None else stop + 1, mel_mask=mel_mask)
        return x.transpose(1, 2), lengths
    if start == 0 and spec.normalize_waveform:
        waves = normalize_waveform(waves, lengths)
    return conv_features(model.feature_extractor, waves, lengths, start=start, stop=stop)


def front_lengths(spec: BackboneSpec, lengths: Tensor, layers: int | None = None) -> Tensor:
    """Frames out of the front end's lowest ``layers`` layers (all with None) for ``lengths`` samples."""
    stack = spec.conv_stack
    if layers is not None:
        stack = stack[: layers + 1] if spec.family == WHISPER else stack[:layers]  # Whisper: log-mel first
    return frame_lengths(lengths, stack)


def encoder_input(model: nn.Module, spec: BackboneSpec, feats: Tensor, frames: Tensor
                  ) -> tuple[Tensor, Tensor | None]:
    """The front end's frames (B, T', C) -> the first transformer layer's input (B, T', D) and its padding mask
    (True at padding; None when nothing is padded). Padded frames are zero."""
    if spec.family == WHISPER:
        return model.encoder_input(feats.transpose(1, 2), frames)
    x = model.encoder.feature_projection(feats)
    pad = padding_mask(frames, x.shape[1])
    return (x if pad is None else x.masked_fill(pad[..., None], 0.0)), pad


def encoder_states(model: nn.Module, spec: BackboneSpec, x: Tensor, pad: Tensor | None, *, keep_all: bool,
                   layer_drop: float = 0.0, generator: torch.Generator | None = None) -> list[Tensor]:
    """:func:`hidden_states` (``keep_all``) or ``[``:func:`run_transformer```]`` for any family."""
    if spec.family == WHISPER:
        return model.states(x, pad, keep_all=keep_all, layer_drop=layer_drop, generator=generator)
    transformer = model.encoder.transformer
    if keep_all:
        return hidden_states(transformer, x, pad, spec.family)
    return [run_transformer(transformer, x, pad, spec.family, layer_drop, generator)]
