"""The only place that composes a backbone with heads and LoRA, for every task, and sets what trains.

A fine-tuning run saves only the weights it trained (LoRA + head, plus the mask embedding when it trains;
or the whole backbone when it trained fully; the layer weights and the downstream for ``--head weighted``):
everything else is rebuilt from the base the same way, so a LoRA or weighted-head run's deliverable stays
small. How runs are stored is lowres/runs.py's business, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from lowres import LowresError
from lowres.config import AdaptConfig, FinetuneConfig, LoraSettings, ModelConfig
from lowres.model.backbone import (
    WHISPER,
    LoadedBackbone,
    encoder_module,
    front_layers,
    front_module,
    set_gradient_checkpointing,
)
from lowres.model.ctc import CTCModel
from lowres.model.hubert import HubertHeads, HubertPretrainer
from lowres.model.lora import add_lora
from lowres.model.pretrain import PretrainHeads, Wav2Vec2Pretrainer
from lowres.model.weighted import WeightedLayerCTC


@dataclass
class BuildInfo:
    lora: bool  # LoRA adapters on the transformer (else the transformer trains fully)
    feature_encoder_trained: bool
    pretrained: bool
    notes: list[str]


def set_dropouts(backbone: nn.Module, family: str, cfg: ModelConfig) -> None:
    """Override the checkpoint's dropout rates where the configuration sets them (Whisper's layers have one
    dropout, on their residual branches: ``model.dropout``)."""
    if family == WHISPER:
        if cfg.dropout is not None:
            for layer in backbone.layers:
                layer.dropout.p = cfg.dropout
        return
    enc = backbone.encoder
    if cfg.projection_dropout is not None:
        enc.feature_projection.dropout.p = cfg.projection_dropout
    tr = enc.transformer
    for layer in tr.layers:
        if cfg.dropout is not None:
            layer.dropout.p = cfg.dropout
            layer.feed_forward.output_dropout.p = cfg.dropout
        if cfg.activation_dropout is not None:
            layer.feed_forward.intermediate_dropout.p = cfg.activation_dropout
        if cfg.attention_dropout is not None:
            layer.attention.dropout = cfg.attention_dropout
            if family == "wavlm":
                layer.attention.attention.dropout = cfg.attention_dropout
    if cfg.dropout is not None:
        tr.dropout.p = cfg.dropout


def build_recogniser(cfg: FinetuneConfig, vocab_size: int, loaded: LoadedBackbone
                     ) -> tuple[CTCModel | WeightedLayerCTC, BuildInfo]:
    """The recogniser ``cfg.head.kind`` names (fine-tuning, eval, transcribe and export all build it here)."""
    if cfg.head.kind == "weighted":
        return build_weighted_model(cfg, vocab_size, loaded)
    return build_ctc_model(cfg, vocab_size, loaded)


def build_weighted_model(cfg: FinetuneConfig, vocab_size: int, loaded: LoadedBackbone
                         ) -> tuple[WeightedLayerCTC, BuildInfo]:
    """Frozen backbone + learned layer weights + BiLSTM CTC downstream (``--head weighted``): only the layer
    weights and the downstream train. LoRA, the head-only phase, masking, layerdrop and the [model] dropout
    overrides act on a backbone that trains, so they do not apply; the notes say so."""
    h, spec = cfg.head, loaded.spec
    _whisper_window(cfg, loaded)
    model = WeightedLayerCTC(loaded.model, spec, vocab_size, lstm_layers=h.lstm_layers, lstm_hidden=h.lstm_hidden,
                             dropout=h.dropout)
    for p in model.parameters():
        p.requires_grad = False
    for part in (model.lstm, model.head):
        part.requires_grad_(True)
    model.layer_weights.requires_grad_(True)
    notes = [f"--head weighted: the whole backbone is frozen and runs without gradients (in eval mode, its dropout "
             f"off); a softmax-weighted sum of its {spec.num_layers + 1} hidden layers feeds a "
             f"{h.lstm_layers}-layer BiLSTM ({h.lstm_hidden} per direction) and a CTC layer, trained from scratch. "
             "LoRA, the head-only phase, time/channel masking and layerdrop do not apply"]
    if replace(cfg.lora, enabled=True) != LoraSettings():  # --lora-rank or lora.* given
        notes.append(f"the LoRA settings given (lora.rank {cfg.lora.rank}, alpha {cfg.lora.alpha:g}, dropout "
                     f"{cfg.lora.dropout:g}) are not used: --head weighted trains no adapters (use --head ctc for "
                     "LoRA)")
    if not spec.pretrained:
        notes.append(f"--base {spec.name} is randomly initialised: its frozen layers give random features. "
                     "--head weighted is meant for pretrained backbones")
    return model, BuildInfo(lora=False, feature_encoder_trained=False, pretrained=spec.pretrained, notes=notes)


def build_ctc_model(cfg: FinetuneConfig, vocab_size: int, loaded: LoadedBackbone) -> tuple[CTCModel, BuildInfo]:
    """Backbone + CTC head (+ LoRA), with ``requires_grad`` set to what this run trains."""
    m = cfg.model
    spec = loaded.spec
    _whisper_window(cfg, loaded)
    model = CTCModel(loaded.model, spec, vocab_size, mask_embedding=loaded.mask_embedding,
                     final_dropout=m.final_dropout, layerdrop=m.layerdrop, mask_prob=m.mask_prob,
                     mask_length=m.mask_length, mask_channel_prob=m.mask_channel_prob,
                     mask_channel_length=m.mask_channel_length)
    set_dropouts(model.backbone, spec.family, m)
    notes: list[str] = []
    pretrained = spec.pretrained
    use_lora = cfg.lora.enabled and pretrained
    if cfg.lora.enabled and not pretrained:
        notes.append(f"--base {spec.name} is randomly initialised: LoRA and the head-only phase make no sense, "
                     "so the whole model trains (conv feature encoder included)")
    freeze_fe = m.freeze_feature_encoder if m.freeze_feature_encoder is not None else pretrained
    conv_layers = len(front_layers(model.backbone, spec))
    if not freeze_fe and m.frozen_conv_layers >= conv_layers:
        raise LowresError(f"model.frozen_conv_layers={m.frozen_conv_layers} keeps every one of the base's {conv_layers} "
                          "conv layers frozen: give fewer (the lowest N stay frozen, the others train), or freeze the "
                          "whole conv encoder with model.freeze_feature_encoder=true.")
    for p in model.parameters():
        p.requires_grad = False
    model.head.requires_grad_(True)
    # Under LoRA a mask embedding learned in pretraining stays frozen like every other pretrained weight (as
    # peft leaves a Hugging Face model's masked_spec_embed): training it needs the gradient of the
    # transformer's input, i.e. a backward pass through the grouped positional convolution (kernel 128)
    # and the first layer's frozen projections, about 5% of a BASE LoRA step on CPU (benchmarks/README.md).
    # A fresh one (torchaudio bundles carry none) trains; full fine-tuning computes that gradient anyway.
    model.mask_emb.requires_grad_(not use_lora or loaded.mask_embedding is None)
    _train_encoder(model.backbone, spec, cfg.lora if use_lora else None, train_conv=not freeze_fe)
    set_gradient_checkpointing(encoder_module(model.backbone, spec), cfg.train.gradient_checkpointing)
    model.freeze_feature_encoder = freeze_fe
    # the lowest conv layers whose output does not change while training: all of them when the encoder is
    # frozen, the frozen lowest ones of an encoder that trains
    model.fixed_conv_layers = conv_layers if freeze_fe else m.frozen_conv_layers
    if not freeze_fe and m.frozen_conv_layers:
        for layer in front_layers(model.backbone, spec)[: m.frozen_conv_layers]:
            layer.requires_grad_(False)
        notes.append(f"conv encoder: the lowest {m.frozen_conv_layers} of its {conv_layers} layers stay frozen "
                     "(model.frozen_conv_layers), the others train")
    return model, BuildInfo(use_lora, not freeze_fe, pretrained, notes)


def _whisper_window(cfg: FinetuneConfig, loaded: LoadedBackbone) -> None:
    """A Whisper backbone encodes each clip at its own length, or padded to its 30-s window
    (``model.whisper_window``)."""
    if loaded.spec.family == WHISPER:
        loaded.model.pad_to_window = cfg.model.whisper_window


def build_wav2vec2_pretrainer(cfg: AdaptConfig, loaded: LoadedBackbone, heads: PretrainHeads,
                              feature_penalty: float) -> tuple[Wav2Vec2Pretrainer, BuildInfo]:
    """Backbone + mask embedding + wav2vec 2.0 pretraining heads (+ LoRA), with ``requires_grad`` set to what
    ``lowres adapt`` trains (see :func:`_pretrainer_trains`)."""
    m, loss, spec = cfg.model, cfg.loss, loaded.spec
    model = Wav2Vec2Pretrainer(loaded.model, spec, heads, loaded.mask_embedding, mask_prob=m.mask_prob,
                               mask_length=m.mask_length, min_spans=m.min_spans, layerdrop=m.layerdrop,
                               num_negatives=loss.num_negatives, logit_temperature=loss.logit_temperature,
                               diversity_weight=loss.diversity_weight, feature_penalty=feature_penalty,
                               feature_dropout=loss.feature_dropout, feature_grad_mult=m.feature_grad_mult)
    return model, _pretrainer_trains(model, cfg)


def build_hubert_pretrainer(cfg: AdaptConfig, loaded: LoadedBackbone, heads: HubertHeads,
                            feature_penalty: float) -> tuple[HubertPretrainer, BuildInfo]:
    """Backbone + mask embedding + HuBERT heads (+ LoRA), with ``requires_grad`` set as for wav2vec 2.0."""
    m, spec = cfg.model, loaded.spec
    model = HubertPretrainer(loaded.model, spec, heads, loaded.mask_embedding, mask_prob=m.mask_prob,
                             mask_length=m.mask_length, min_spans=m.min_spans, layerdrop=m.layerdrop,
                             logit_temperature=cfg.loss.logit_temperature, unmasked_weight=cfg.hubert.unmasked_weight,
                             feature_penalty=feature_penalty, feature_grad_mult=m.feature_grad_mult)
    return model, _pretrainer_trains(model, cfg)


def _pretrainer_trains(model: nn.Module, cfg: AdaptConfig) -> BuildInfo:
    """What ``lowres adapt`` trains: the heads, the mask embedding and the transformer (or its LoRA adapters);
    the conv encoder too when it is not frozen (default: frozen for a pretrained base)."""
    m, spec = cfg.model, model.spec
    freeze_fe = m.freeze_feature_encoder if m.freeze_feature_encoder is not None else spec.pretrained
    model.freeze_feature_encoder = freeze_fe
    for p in model.parameters():
        p.requires_grad = False
    model.heads.requires_grad_(True)
    model.mask_emb.requires_grad_(True)
    _train_encoder(model.backbone, spec, cfg.lora if cfg.lora.enabled else None, train_conv=not freeze_fe)
    set_gradient_checkpointing(encoder_module(model.backbone, spec), cfg.train.gradient_checkpointing)
    return BuildInfo(cfg.lora.enabled, not freeze_fe, spec.pretrained, [])


def _train_encoder(backbone: nn.Module, spec, lora, train_conv: bool) -> None:
    """The transformer trains through LoRA adapters (``lora``: LoraSettings) or fully (``lora`` None); the
    conv feature encoder trains when ``train_conv``."""
    if spec.family == WHISPER:
        layers = nn.ModuleList([*backbone.layers, backbone.layer_norm])
    else:
        layers = backbone.encoder  # its feature projection and transformer
    if lora is not None:
        transformer = encoder_module(backbone, spec)
        add_lora(transformer, spec.family, lora.rank, lora.alpha, lora.dropout)
        for name, p in transformer.named_parameters():
            p.requires_grad = "lora_" in name
    else:
        layers.requires_grad_(True)
    if train_conv:
        front_module(backbone, spec).requires_grad_(True)


def trainable_report(model: nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable": trained, "trainable_share": trained / max(total, 1)}


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights this run changes (its deliverable): every parameter that trains."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
