"""The CUDA paths (#17 item 5): bf16 autocast in fine-tuning, evaluation and gradient checkpointing.

Every test runs twice: on the CPU (always, so that its checks are known to work) and on CUDA (marked ``gpu``:
skipped where torch sees no CUDA device, as in CI). On the CPU ``train.precision=bf16`` is torch's CPU
autocast; on CUDA ``auto`` and ``bf16`` are both bf16 autocast (lowres/runtime.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from factory import FAST, invoke, prepared_corpus, read_jsonl
from safetensors.torch import load_file
from test_checkpointing import DROPOUTS, _loss_and_grads

from lowres.bases import load_base
from lowres.config import FinetuneConfig, merge
from lowres.model.backbone import set_gradient_checkpointing
from lowres.runtime import autocast

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]


def _tiny_ctc(device: str, model_overrides: dict | None = None, checkpointing: bool = False):
    from lowres.model.build import build_ctc_model

    cfg = merge(FinetuneConfig(), {"model": model_overrides or {},
                                   "train": {"gradient_checkpointing": checkpointing}})
    model, _ = build_ctc_model(cfg, 12, load_base("tiny", seed=0))
    return model.to(device)


def _batch(device: str):
    g = torch.Generator().manual_seed(1)
    waves = torch.randn(2, 16000, generator=g) * 0.1
    return waves.to(device), torch.tensor([16000, 11000], device=device)


@pytest.mark.parametrize("device", DEVICES)
def test_finetune_and_eval_under_bf16_autocast(tmp_path, device):
    """A run trained under bf16 autocast: finite losses, float32 weights in its deliverable, and an eval on the
    same device that scores every test clip."""
    prep = prepared_corpus(tmp_path / "corpus", n=20, speakers=4)
    run = tmp_path / "run"
    res = invoke("finetune", "--data", prep, "--split", "full", "--base", "tiny", "--out", run, "--max-steps", 4,
                 "--eval-every", 2, "--device", device, *FAST, "--set", "train.precision=bf16")
    assert res.exit_code == 0, res.output
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["config"]["train"]["precision"] == "bf16"
    rows = read_jsonl(run / "metrics.jsonl")
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert [r["step"] for r in rows if "dev_cer" in r] == [2, 4]
    weights = load_file(str(run / "model.safetensors"))
    assert weights and all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    res = invoke("eval", "--model", run, "--data", prep, "--split", "test", "--device", device)
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["num_utterances"] == len(read_jsonl(prep / "manifests" / "test.jsonl"))


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_logits_are_close_to_float32(device):
    """Autocast really runs in bf16 (the logits differ from float32's), and stays close to float32."""
    model = _tiny_ctc(device).eval()
    waves, lengths = _batch(device)
    with torch.no_grad():
        full, frames = model(waves, lengths)
        with autocast(torch.device(device), "bf16"):
            half, frames_half = model(waves, lengths)
    assert torch.equal(frames, frames_half)
    half = half.float()
    assert not torch.equal(half, full)  # not vacuous: something ran in bf16
    scale = full.abs().max()
    assert (half - full).abs().max() < 0.05 * scale
    # the recogniser's decision per frame is the same almost everywhere
    valid = torch.arange(full.shape[1], device=device)[None, :] < frames[:, None]
    agree = (half.argmax(-1) == full.argmax(-1))[valid].float().mean()
    assert agree > 0.9


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("device", DEVICES)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(device, precision):
    """train.gradient_checkpointing on this device, in float32 and under bf16 autocast: the layers are
    recomputed in the backward pass (torch's checkpoint restores the RNG and the autocast state), and the loss and
    every gradient equal those without it. Float32 on the CPU is bit-exact up to 1e-6
    (tests/test_checkpointing.py); on CUDA some backward kernels accumulate in a nondeterministic order, and
    bf16 rounds, hence the tolerances."""
    from lowres.model.ctc import ctc_loss

    model = _tiny_ctc(device, dict(DROPOUTS, mask_prob=0.3), checkpointing=True).train()
    transformer = model.backbone.encoder.transformer
    assert transformer.gradient_checkpointing
    waves, lengths = _batch(device)
    targets = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8], device=device)

    def step(generator):
        with autocast(torch.device(device), precision):
            logits, frames = model(waves, lengths, generator)
        return ctc_loss(logits.float(), frames, targets, torch.tensor([5, 3], device=device)).mean()

    calls = [0]

    def count(*_):
        calls[0] += 1

    for layer in transformer.layers:
        layer.register_forward_pre_hook(count)
    loss_on, grads_on = _loss_and_grads(model, step, seed=5)
    recomputed = calls[0]
    set_gradient_checkpointing(transformer, False)
    calls[0] = 0
    loss_off, grads_off = _loss_and_grads(model, step, seed=5)
    assert recomputed == 2 * calls[0] > 0
    assert grads_on and set(grads_on) == set(grads_off)
    exact = device == "cpu" and precision == "fp32"
    atol, rtol = (1e-6, 0.0) if exact else ((1e-5, 1e-4) if precision == "fp32" else (1e-3, 1e-2))
    torch.testing.assert_close(loss_on, loss_off, rtol=rtol, atol=atol)
    for name, g in grads_off.items():
        torch.testing.assert_close(grads_on[name], g, rtol=rtol, atol=atol * max(1.0, float(g.abs().max())),
                                   msg=name)
    other, _ = _loss_and_grads(model, step, seed=6)  # another seed: other masks and dropouts, another loss
    assert not torch.allclose(other, loss_off)
