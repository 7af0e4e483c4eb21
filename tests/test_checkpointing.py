"""train.gradient_checkpointing: each transformer layer is recomputed in the backward pass, and the loss and
every gradient equal those without it (dropout, LoRA dropout, layerdrop and masks on)."""

from __future__ import annotations

import json

import pytest
import torch
from factory import FAST, hf_base, invoke, prepared_corpus

from lowres.bases import load_base
from lowres.config import AdaptConfig, FinetuneConfig, merge
from lowres.model.backbone import set_gradient_checkpointing

DROPOUTS = {"dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.1, "layerdrop": 0.3}


def _layer_calls(model) -> list[int]:
    """Counts the forward calls of every transformer layer (a recomputation calls it again)."""
    calls = [0]

    def hook(*_):
        calls[0] += 1

    for layer in model.backbone.encoder.transformer.layers:
        layer.register_forward_pre_hook(hook)  # (a recomputation stops early, before forward hooks)
    return calls


def _loss_and_grads(model, step, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward and backward with every random draw seeded (the global RNG for dropout, a generator for
    masks and layerdrop)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = step(torch.Generator().manual_seed(seed))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _assert_exact(model, step):
    """With and without checkpointing: the same loss and gradients; and the layers really are recomputed."""
    transformer = model.backbone.encoder.transformer
    assert transformer.gradient_checkpointing  # build.py set it from the configuration
    model.train()
    calls = _layer_calls(model)
    loss_on, grads_on = _loss_and_grads(model, step, seed=5)
    recomputed = calls[0]
    set_gradient_checkpointing(transformer, False)
    calls[0] = 0
    loss_off, grads_off = _loss_and_grads(model, step, seed=5)
    assert recomputed == 2 * calls[0] > 0  # every layer that ran was run again in the backward pass
    assert grads_on and set(grads_on) == set(grads_off)
    torch.testing.assert_close(loss_on, loss_off, rtol=0, atol=1e-6)
    for name, g in grads_off.items():
        assert torch.allclose(grads_on[name], g, rtol=0, atol=1e-6), name
    # the check is not vacuous: another seed draws other masks and dropouts, and gives another loss
    other, _ = _loss_and_grads(model, step, seed=6)
    assert not torch.allclose(other, loss_off)
    # an evaluation pass never checkpoints
    set_gradient_checkpointing(transformer, True)
    model.eval()
    calls[0] = 0
    step(torch.Generator().manual_seed(5)).backward()
    assert calls[0] == len(transformer.layers)


def _waves():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 16000, generator=g) * 0.1, torch.tensor([16000, 11000])


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm"])
def test_ctc_with_lora_is_exact(tmp_path, family):
    from lowres.model.build import build_ctc_model
    from lowres.model.ctc import ctc_loss

    cfg = merge(FinetuneConfig(), {"model": dict(DROPOUTS, mask_prob=0.3), "lora": {"dropout": 0.1},
                                   "train": {"gradient_checkpointing": True}})
    loaded = load_base(str(hf_base(tmp_path / family, family)))
    model, info = build_ctc_model(cfg, 12, loaded)
    assert info.lora
    with torch.no_grad():  # peft starts lora_B at zero, which would leave lora_A without a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    waves, lengths = _waves()
    targets = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8])

    def step(generator):
        logits, frames = model(waves, lengths, generator)
        return ctc_loss(logits, frames, targets, torch.tensor([5, 3])).mean()

    _assert_exact(model, step)
    assert any("lora_A" in n for n, p in model.named_parameters() if p.requires_grad)


def test_ctc_full_finetuning_from_random_init_is_exact():
    from lowres.model.build import build_ctc_model
    from lowres.model.ctc import ctc_loss

    cfg = merge(FinetuneConfig(), {"model": DROPOUTS, "train": {"gradient_checkpointing": True}})
    model, info = build_ctc_model(cfg, 12, load_base("tiny", seed=0))
    assert not info.lora and info.feature_encoder_trained
    waves, lengths = _waves()

    def step(generator):
        logits, frames = model(waves, lengths, generator)
        return ctc_loss(logits, frames, torch.tensor([1, 2, 3, 4]), torch.tensor([2, 2])).mean()

    _assert_exact(model, step)


@pytest.mark.parametrize("objective", ["wav2vec2", "hubert"])
def test_adapt_pretrainers_are_exact(objective):
    from lowres.model.build import build_hubert_pretrainer, build_wav2vec2_pretrainer
    from lowres.model.hubert import HubertHeads
    from lowres.model.pretrain import fresh_heads

    cfg = merge(AdaptConfig(), {"model": {"layerdrop": 0.3}, "train": {"gradient_checkpointing": True}})
    loaded = load_base("tiny", seed=0)  # its transformer dropout is 0.1
    torch.manual_seed(1)
    waves, lengths = _waves()
    if objective == "wav2vec2":
        model, _ = build_wav2vec2_pretrainer(cfg, loaded, fresh_heads(loaded.spec, 2, 16, 0, 32), 1.0)

        def step(generator):
            return model(waves, lengths, 2.0, generator).loss
    else:
        model, _ = build_hubert_pretrainer(cfg, loaded, HubertHeads(loaded.spec.embed_dim, 16, 32), 1.0)
        units = torch.randint(0, 16, (2, 49), generator=torch.Generator().manual_seed(2))

        def step(generator):
            return model(waves, lengths, units, generator).loss

    _assert_exact(model, step)


def test_setting_travels_from_set_to_the_run_and_a_resume_may_change_it(tmp_path):
    prep = prepared_corpus(tmp_path)
    out = tmp_path / "run"
    res = invoke("finetune", "--data", prep, "--split", "full", "--base", "tiny", "--out", out, "--max-steps", 1,
                 "--eval-every", 1, *FAST, "--set", "train.gradient_checkpointing=true")
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["config"]["train"]["gradient_checkpointing"] is True
    # it changes memory and time, not the result: a resume on another machine may turn it off
    res = invoke("finetune", "--resume", "--out", out, "--max-steps", 2, "--eval-every", 1, *FAST,
                 "--set", "train.gradient_checkpointing=false")
    assert res.exit_code == 0, res.output
    assert FinetuneConfig().train.gradient_checkpointing is False
    assert AdaptConfig().train.gradient_checkpointing is False
