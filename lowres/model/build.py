"""The only place that composes a backbone with heads and LoRA, and rebuilds models from run folders.

A run folder holds ``config.json`` (the resolved configuration, the backbone spec and what ``--base`` was),
``vocab.json`` and ``model.safetensors`` with the weights the run trained (LoRA + head, plus the mask
embedding when it trains; or the whole backbone when it was trained fully). Everything else comes from the
base, rebuilt the same way, so a LoRA run's deliverable stays small and loads on its own with its base.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lowres import LowresError
from lowres.config import FinetuneConfig, ModelConfig, from_dict
from lowres.data.vocab import Vocab
from lowres.model.backbone import BackboneSpec, LoadedBackbone, build_model, fingerprint, load_backbone
from lowres.model.ctc import CTCModel
from lowres.model.lora import add_lora, has_lora, merge_lora

RUN_CONFIG = "config.json"
RUN_WEIGHTS = "model.safetensors"


@dataclass
class BuildInfo:
    lora: bool  # LoRA adapters on the transformer (else the transformer trains fully)
    feature_encoder_trained: bool
    pretrained: bool
    notes: list[str]


def set_dropouts(backbone: nn.Module, family: str, cfg: ModelConfig) -> None:
    """Override the checkpoint's dropout rates where the configuration sets them."""
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


def build_ctc_model(cfg: FinetuneConfig, vocab_size: int, loaded: LoadedBackbone) -> tuple[CTCModel, BuildInfo]:
    """Backbone + CTC head (+ LoRA), with ``requires_grad`` set to what this run trains."""
    m = cfg.model
    spec = loaded.spec
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
    for p in model.parameters():
        p.requires_grad = False
    model.head.requires_grad_(True)
    # Under LoRA a mask embedding learned in pretraining stays frozen like every other pretrained weight (as
    # peft leaves a Hugging Face model's masked_spec_embed): training it needs the gradient of the
    # transformer's input, i.e. a backward pass through the grouped positional convolution (kernel 128)
    # and the first layer's frozen projections, about 5% of a BASE LoRA step on CPU (benchmarks/README.md).
    # A fresh one (torchaudio bundles carry none) trains; full fine-tuning computes that gradient anyway.
    model.mask_emb.requires_grad_(not use_lora or loaded.mask_embedding is None)
    if use_lora:
        add_lora(model.backbone.encoder.transformer, spec.family, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout)
        for name, p in model.backbone.encoder.transformer.named_parameters():
            p.requires_grad = "lora_" in name
    else:
        model.backbone.encoder.requires_grad_(True)
    if not freeze_fe:
        model.backbone.feature_extractor.requires_grad_(True)
    model.freeze_feature_encoder = freeze_fe
    return model, BuildInfo(use_lora, not freeze_fe, pretrained, notes)


def trainable_report(model: nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable": trained, "trainable_share": trained / max(total, 1)}


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights this run changes (its deliverable): every parameter that trains."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------------
# run folders


def read_run_config(run: Path) -> dict:
    path = Path(run) / RUN_CONFIG
    if not path.is_file():
        raise LowresError(f"{run} is not a lowres run folder (no {RUN_CONFIG}). Pass the --out folder of "
                          "`lowres finetune` or `lowres adapt`.")
    data = json.loads(path.read_text(encoding="utf-8"))
    if "lowres_run" not in data:
        raise LowresError(f"{path} was not written by lowres (no 'lowres_run' key).")
    return data


def _base_backbone(meta: dict, seed: int) -> LoadedBackbone:
    """The run's base, rebuilt: random-init architectures from the saved spec (their weights are all in the
    run), everything else from what --base named, checked against its fingerprint."""
    spec = BackboneSpec.from_dict(meta["backbone"])
    if not spec.pretrained:
        torch.manual_seed(seed)
        return LoadedBackbone(build_model(spec), spec, source=f"architecture of {spec.name}")
    loaded = load_backbone(meta["base"], seed=seed)
    want = meta.get("base_fingerprint")
    if want and loaded.fingerprint and loaded.fingerprint != want:
        raise LowresError(
            f"The base {meta['base']} is not the one this run was trained on (its weights changed since). "
            "Use the same base checkpoint, or fine-tune again."
        )
    return loaded


def _load_weights(model: nn.Module, run: Path, weights: Path | None = None) -> None:
    from safetensors.torch import load_file

    path = weights or Path(run) / RUN_WEIGHTS
    if not path.is_file():
        raise LowresError(f"{run} has no {path.name}: the run has not saved a model yet (did it finish? "
                          "`lowres finetune --resume` continues it).")
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise LowresError(f"{path} does not fit the model rebuilt from {run / RUN_CONFIG}: unexpected weights "
                          f"{unexpected[:3]}...")
    del missing  # everything not saved comes from the base


@dataclass
class LoadedRun:
    model: CTCModel
    vocab: Vocab
    config: FinetuneConfig
    meta: dict


def load_run(run: str | Path, device="cpu", merge: bool = True, weights: Path | None = None) -> LoadedRun:
    """A fine-tuned recogniser from its run folder (LoRA merged into the base for fast inference)."""
    run = Path(run)
    meta = read_run_config(run)
    if meta["lowres_run"] != "finetune":
        raise LowresError(f"{run} is a lowres {meta['lowres_run']} run, not a fine-tuned recogniser. Fine-tune it "
                          f"first: lowres finetune --base {run} ...")
    cfg = from_dict(FinetuneConfig, meta["config"])
    vocab = Vocab.load(run / "vocab.json", units=meta.get("vocab_units", "grapheme"))
    loaded = _base_backbone(meta, cfg.train.seed)
    model, _ = build_ctc_model(cfg, len(vocab), loaded)
    _load_weights(model, run, weights)
    if merge and has_lora(model):
        merge_lora(model.backbone.encoder.transformer)
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad = False
    return LoadedRun(model, vocab, cfg, meta)


def load_run_backbone(run: Path) -> LoadedBackbone:
    """The encoder of a run folder, as a base for another run (``--base RUN``)."""
    meta = read_run_config(run)
    kind = meta["lowres_run"]
    if kind == "finetune":
        loaded = load_run(run, merge=True)
        backbone, mask = loaded.model.backbone, loaded.model.mask_emb.detach().clone()
        heads: dict = {}
    elif kind == "adapt":
        from lowres.model.pretrain import load_adapt_run

        backbone, mask, heads = load_adapt_run(run)
    else:
        raise LowresError(f"{run}: unknown run kind {kind!r}.")
    spec = BackboneSpec.from_dict(meta["backbone"])
    spec = BackboneSpec(spec.family, spec.arch, spec.normalize_waveform, True, str(Path(run).resolve()))
    for p in backbone.parameters():
        p.requires_grad = True
    backbone.train()
    return LoadedBackbone(backbone, spec, mask, heads, fingerprint(backbone), source=f"lowres {kind} run {run}")
