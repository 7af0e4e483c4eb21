"""lowres adapt: the wav2vec 2.0 objective (parity with transformers), masking, negatives, training, resume."""

from __future__ import annotations

import json
from pathlib import Path

import factory
import pytest
import torch
from factory import FAST, hf_base, invoke, read_jsonl
from safetensors.torch import load_file

from lowres.model.masking import span_mask
from lowres.model.pretrain import (
    PretrainHeads,
    Wav2Vec2Pretrainer,
    collapse_signs,
    sample_negatives,
    temperature_at,
)

ADAPT_FAST = ["--objective", "wav2vec2", "--set", "train.batch_seconds=30", "--set", "train.num_workers=0", "--set", "train.log_every=5",
              "--set", "loss.num_negatives=20", "--quiet"]


@pytest.fixture(scope="module")
def tone_audio(tmp_path_factory) -> Path:
    return factory.tone_recordings(tmp_path_factory.mktemp("tones") / "audio")


def test_span_mask_statistics():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([500] * 200 + [300] * 100)
    mask = span_mask(lengths, 500, 0.65, 10, 2, g)
    frac = mask[:200].float().mean().item()
    assert 0.45 < frac < 0.53  # ≈49% at p=0.65, span 10
    assert not mask[200:, 300:].any()  # never in padding
    short = span_mask(torch.tensor([25] * 50), 25, 0.65, 10, 2, g)
    # at least two spans: ≥ 11 frames masked (two different starts) in every short row
    assert (short.sum(dim=1) >= 11).all()
    # spans are runs of 10: every masked run has length >= 10
    row = mask[0].tolist()
    runs, n = [], 0
    for v in row + [False]:
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    assert min(runs) >= 10


def test_negatives_are_other_masked_frames_of_the_same_utterance():
    g = torch.Generator().manual_seed(1)
    mask = span_mask(torch.tensor([120, 80, 40]), 120, 0.65, 10, 2, g)
    neg = sample_negatives(mask, 50, g)
    pos = mask.nonzero()
    utt = pos[:, 0]
    assert neg.shape == (len(pos), 50)
    rows = torch.arange(len(pos))[:, None].expand_as(neg)
    assert not (neg == rows).any()  # never the frame itself
    assert (utt[neg] == utt[:, None]).all()  # same utterance, and only masked frames (indices into them)


def hf_parity_setup(tmp_path):
    from lowres.bases import load_base

    folder = hf_base(tmp_path / "hf")
    loaded = load_base(str(folder))
    conv_dim = loaded.spec.arch["extractor_conv_layer_config"][-1][0]
    heads = PretrainHeads.from_state(loaded.pretrain_heads, conv_dim, loaded.spec.embed_dim, 2)
    ours = Wav2Vec2Pretrainer(loaded.model, loaded.spec, heads, loaded.mask_embedding, num_negatives=10,
                              feature_penalty=0.0).eval()
    return folder, loaded, ours


def test_objective_matches_transformers(tmp_path):
    import transformers

    from lowres.model.backbone import normalize_waveform

    folder, loaded, ours = hf_parity_setup(tmp_path)
    hf = transformers.Wav2Vec2ForPreTraining.from_pretrained(folder).eval()
    torch.manual_seed(0)
    waves = torch.randn(2, 24000) * 0.1
    lengths = torch.tensor([24000, 24000])
    with torch.no_grad():
        out = ours(waves, lengths, generator=torch.Generator().manual_seed(0), keep=True)
        mask, neg = out.mask, out.negatives
        b, t = mask.shape
        pos = mask.nonzero()
        flat = pos[:, 0] * t + pos[:, 1]
        sampled = torch.zeros(b, t, neg.shape[1], dtype=torch.long)
        sampled[pos[:, 0], pos[:, 1]] = flat[neg]
        x = normalize_waveform(waves, lengths) if loaded.spec.normalize_waveform else waves
        theirs = hf(x, mask_time_indices=mask, sampled_negative_indices=sampled)
    torch.testing.assert_close(out.quantized, theirs.projected_quantized_states[mask], atol=1e-5, rtol=1e-5)
    assert out.code_perplexity == pytest.approx(float(theirs.codevector_perplexity), rel=1e-5)
    assert out.contrastive * out.n_masked == pytest.approx(float(theirs.contrastive_loss), rel=1e-5)
    gv = 2 * ours.heads.quantizer.entries
    hf_div = float(theirs.diversity_loss) / out.n_masked
    assert (gv - out.code_perplexity) / gv == pytest.approx(hf_div, rel=1e-5)


def test_feature_grad_mult_scales_only_the_conv_encoder_gradient():
    from lowres.bases import load_base
    from lowres.model.pretrain import fresh_heads

    grads = {}
    for mult in (1.0, 0.1):
        loaded = load_base("tiny", seed=0)
        torch.manual_seed(1)
        heads = fresh_heads(loaded.spec, 2, 16, 0, 32)
        model = Wav2Vec2Pretrainer(loaded.model, loaded.spec, heads, None, num_negatives=5, layerdrop=0.0,
                                   feature_dropout=0.0, feature_penalty=1.0, feature_grad_mult=mult)
        model.freeze_feature_encoder = False
        model.eval()  # no dropout: the two passes compute the same thing
        waves = torch.randn(2, 16000, generator=torch.Generator().manual_seed(2))
        out = model(waves, torch.tensor([16000, 12000]), generator=torch.Generator().manual_seed(3))
        out.loss.backward()
        grads[mult] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    conv = [n for n in grads[1.0] if ".feature_extractor." in n]
    assert conv and set(grads[1.0]) == set(grads[0.1])
    for n, g in grads[1.0].items():
        expected = g * 0.1 if n in conv else g
        torch.testing.assert_close(grads[0.1][n], expected, rtol=1e-4, atol=1e-7)


def test_temperature_schedule():
    assert temperature_at(0, 2.0, 0.5, 0.0, 100) == 2.0
    assert temperature_at(100, 2.0, 0.5, 0.0, 100) == pytest.approx(0.5)
    assert temperature_at(50, 2.0, 0.5, 0.0, 100) == pytest.approx(1.0)
    assert temperature_at(10**6, 2.0, 0.5, 0.999995, 100) == 0.5


def test_adapt_loss_falls_then_finetune_uses_it(tone_audio, tmp_path):
    run = tmp_path / "adapt"
    res = invoke("adapt", "--unlabeled", tone_audio, "--base", "tiny", "--out", run, "--max-steps", 40, "--lr", 5e-4,
                 "--set", "train.heads_warmup_steps=0", *ADAPT_FAST)
    assert res.exit_code == 0, res.output
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.05
    assert rows[-1]["accuracy"] > rows[0]["accuracy"]
    for key in ("contrastive", "diversity", "feature_penalty", "accuracy", "code_perplexity", "prob_perplexity",
                "temperature", "masked_fraction", "grad_norm"):
        assert key in rows[-1]
    assert 0.4 < rows[-1]["masked_fraction"] < 0.6
    assert (run / "data" / "unlabeled.jsonl").is_file() and (run / "learning_curve.png").is_file()
    assert "tiny is a random initialisation" in (run / "train.log").read_text()  # what to expect from it
    state = load_file(str(run / "model.safetensors"))
    assert any(k.startswith("heads.quantizer") for k in state) and "mask_emb" in state

    prep = tmp_path / "prep"
    factory.tone_table(tmp_path / "lab" / "c.csv", n=10, seed=3)
    assert invoke("prepare", tmp_path / "lab" / "c.csv", "--out", prep, "-q").exit_code == 0
    ft = tmp_path / "ft"
    res = invoke("finetune", "--data", prep, "--split", "full", "--base", run, "--out", ft, "--max-steps", 2,
                 "--eval-every", 0, *FAST)
    assert res.exit_code == 0, res.output
    meta = json.loads((ft / "config.json").read_text())
    assert meta["backbone"]["pretrained"] and meta["build"]["lora"]
    # the adapted encoder, not a fresh one, is what fine-tuning started from
    from lowres.bases import load_run

    enc = load_run(ft, merge=False).model.backbone.feature_extractor.state_dict()
    for k, v in enc.items():
        torch.testing.assert_close(v, state[f"backbone.feature_extractor.{k}"])

    # a finetune run (say, a recogniser of another language) is a base for adapt too: its encoder is kept, its
    # CTC head dropped, the pretraining heads start fresh, and its trained conv encoder stays frozen
    again = tmp_path / "adapt-ft"
    res = invoke("adapt", "--unlabeled", tone_audio, "--base", ft, "--out", again, "--max-steps", 3, *ADAPT_FAST)
    assert res.exit_code == 0, res.output
    meta = json.loads((again / "config.json").read_text())
    assert meta["backbone"]["pretrained"] and not meta["heads_imported"]
    log = (again / "train.log").read_text()
    assert "initialised fresh" in log and "random initialisation" not in log
    adapted = load_file(str(again / "model.safetensors"))
    for k, v in enc.items():
        torch.testing.assert_close(adapted[f"backbone.feature_extractor.{k}"], v, rtol=0, atol=0)
    assert not any(k.startswith("backbone.aux") or "ctc" in k for k in adapted)


def test_adapt_imports_huggingface_heads_and_resumes_exactly(tone_audio, tmp_path, monkeypatch):
    base = hf_base(tmp_path / "hf")
    args = ["--unlabeled", tone_audio, "--base", base, "--max-steps", 6, "--set", "train.save_every=2",
            *ADAPT_FAST]
    assert invoke("adapt", *args, "--out", tmp_path / "a").exit_code == 0
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    assert meta["heads_imported"] and meta["heads_warmup_steps"] == 0
    assert "random initialisation" not in (tmp_path / "a" / "train.log").read_text()
    assert meta["temperature_start"] == pytest.approx(0.75)  # near the floor, not 2

    assert factory.invoke_stopped_after(4, "adapt", *args, "--out", tmp_path / "b").exit_code == 130
    res = invoke("adapt", "--resume", "--out", tmp_path / "b", "--quiet")
    assert res.exit_code == 0, res.output
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_collapse_detector_stops_the_run(tone_audio, tmp_path, monkeypatch):
    import lowres.model.pretrain as pretrain

    real = pretrain.fresh_heads

    def collapsed(*args, **kwargs):
        heads = real(*args, **kwargs)
        with torch.no_grad():  # every frame picks entry 0 of each group, whatever it hears
            heads.quantizer.weight_proj.weight.zero_()
            heads.quantizer.weight_proj.bias.fill_(-50.0)
            heads.quantizer.weight_proj.bias[0] = 50.0
            heads.quantizer.weight_proj.bias[heads.quantizer.entries] = 50.0
        return heads

    monkeypatch.setattr(pretrain, "fresh_heads", collapsed)
    res = invoke("adapt", "--objective", "wav2vec2", "--unlabeled", tone_audio, "--base", "tiny", "--out",
                 tmp_path / "c", "--max-steps", 40, "--lr", 1e-9, "--set", "train.log_every=2", "--set", "train.num_workers=0",
                 "--set", "train.batch_seconds=30", "--set", "loss.num_negatives=10", "--quiet")
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "codebook collapsed" in text and "diversity_weight" in text
    assert collapse_signs({"prob_perplexity": 50.0, "code_perplexity": 40.0, "contrastive": 2.0}, 2) == []


def test_adapt_errors(tmp_path):
    res = invoke("adapt", "--base", "tiny", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "--unlabeled" in res.output
    res = invoke("adapt", "--unlabeled", tmp_path / "nope", "--base", "tiny", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "no such file or folder" in " ".join(res.output.split())
    res = invoke("adapt", "--unlabeled", tmp_path, "--base", "tiny", "--out", tmp_path / "r2", "--set", "gumbel.mn=1")
    assert res.exit_code == 2 and "gumbel.min" in res.output
    # a mistake in the inputs leaves --out untouched: nothing is created, nothing is replaced
    bad = tmp_path / "unlabeled.jsonl"
    bad.write_text('{"id": "a", "audio_filepath": "a.wav", "duration": 3.0}\nnot json\n', encoding="utf-8")
    res = invoke("adapt", "--unlabeled", bad, "--base", "tiny", "--out", tmp_path / "r3")
    assert res.exit_code == 2 and "unlabeled.jsonl:2" in " ".join(res.output.split()), res.output
    assert not (tmp_path / "r3").exists()
    res = invoke("adapt", "--unlabeled", tmp_path / "nope", "--base", "tiny", "--out", tmp_path / "r4")
    assert not (tmp_path / "r4").exists()
    res = invoke("adapt", "--unlabeled", tmp_path, "--base", "no-such-model", "--out", tmp_path / "r5")
    assert res.exit_code == 2 and not (tmp_path / "r5").exists(), res.output


@pytest.mark.parametrize("objective", ["wav2vec2", "hubert"])
def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_same_start(tone_audio, tmp_path, monkeypatch,
                                                                               objective):
    """--resume of a run with no checkpoint yet starts it again from update 0, from the very weights a new run
    starts from (the random-init base and fresh heads are seeded as in a new run), so it ends where an
    uninterrupted run ends."""
    import lowres.train.loop as loop

    args = ["adapt", "--unlabeled", tone_audio, "--base", "tiny", "--max-steps", 3, "--set", "train.save_every=2",
            *[a for a in ADAPT_FAST if a not in ("--objective", "wav2vec2")], "--objective", objective,
            "--set", "units.max_frames=2000", *(["--clusters", "8"] if objective == "hubert" else [])]
    assert invoke(*args, "--out", tmp_path / "a").exit_code == 0

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", interrupted)
    assert invoke(*args, "--out", tmp_path / "b").exit_code == 130
    monkeypatch.undo()
    assert not (tmp_path / "b" / "checkpoints").exists()
    res = invoke("adapt", "--resume", "--out", tmp_path / "b", "--quiet")
    assert res.exit_code == 0, res.output
    assert "no checkpoint yet: starting the run again from update 0" in (tmp_path / "b" / "train.log").read_text()
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
