"""adapt --objective hubert: HuBERT's masked prediction of discovered units.

Contract:
- the objective equals torchaudio's ``HuBERTPretrainModel`` on the same weights, audio, masks and labels:
  the same logits over the units and the same loss (torchaudio's example: masked CE + 10 x feature penalty
  x masked frames, over the masked frames), to 1e-5;
- masks follow HuBERT's p = 0.8 / span 10 and never fall in padding;
- a run from random-init tiny makes its units (RUN/units, no pickle), logs the masked / unmasked accuracy
  and the perplexities of predictions and targets, resumes exactly, and its encoder fine-tunes;
- a second iteration (units from a layer of the first run) and a HuBERT / WavLM Hugging Face base work;
- the collapse detector stops a run whose predictions are one unit while the targets are many;
- bad input (--targets layer:99, --clusters 1, fewer frames than clusters) ends in one message and leaves
  --out untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import factory
import pytest
import torch
from factory import FAST, hf_base, invoke, read_jsonl
from safetensors.torch import load_file

from lowres.model.hubert import IGNORE, HubertHeads, HubertPretrainer, collapse_signs, perplexity

HUBERT_FAST = ["--objective", "hubert", "--set", "train.batch_seconds=30", "--set", "train.num_workers=0",
               "--set", "train.log_every=5", "--clusters", 12, "--quiet"]


@pytest.fixture(scope="module")
def tone_audio(tmp_path_factory) -> Path:
    return factory.tone_recordings(tmp_path_factory.mktemp("tones") / "audio")


def torchaudio_pair(num_classes: int = 16, final_dim: int = 24):
    """torchaudio's HuBERTPretrainModel (small) and lowres's objective holding the very same weights."""
    from torchaudio.models import hubert_pretrain_model

    from lowres.model.backbone import BackboneSpec

    conv = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
    torch.manual_seed(0)
    theirs = hubert_pretrain_model(
        extractor_mode="group_norm", extractor_conv_layer_config=conv, extractor_conv_bias=False,
        encoder_embed_dim=48, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4,
        encoder_num_layers=2, encoder_num_heads=4, encoder_attention_dropout=0.0, encoder_ff_interm_features=96,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0,
        mask_prob=0.8, mask_selection="static", mask_other=0.0, mask_length=10, no_mask_overlap=False,
        mask_min_space=1, mask_channel_prob=0.0, mask_channel_selection="static", mask_channel_other=0.0,
        mask_channel_length=10, no_mask_channel_overlap=False, mask_channel_min_space=1, skip_masked=False,
        skip_nomask=False, num_classes=num_classes, final_dim=final_dim, feature_grad_mult=None).eval()
    arch = {"extractor_mode": "group_norm", "extractor_conv_layer_config": conv, "extractor_conv_bias": False,
            "encoder_embed_dim": 48, "encoder_num_layers": 2}
    spec = BackboneSpec("hubert", arch, False, True, "torchaudio-hubert")
    heads = HubertHeads(48, num_classes, final_dim)
    heads.final_proj.load_state_dict(theirs.logit_generator.final_proj.state_dict())
    heads.label_embeddings.data.copy_(theirs.logit_generator.label_embeddings.data)
    ours = HubertPretrainer(theirs.wav2vec2, spec, heads, theirs.mask_generator.mask_embedding.data, mask_prob=0.8,
                            layerdrop=0.0, feature_penalty=10.0).eval()
    return theirs, ours


def test_objective_matches_torchaudio_hubert_pretrain_model():
    theirs, ours = torchaudio_pair()
    torch.manual_seed(1)
    waves = torch.randn(2, 16000) * 0.1  # equal lengths: torchaudio's penalty also averages padded frames
    frames = ours.backbone.feature_extractor(waves, None)[0].shape[1]
    g = torch.Generator().manual_seed(3)
    from lowres.model.masking import span_mask

    mask = span_mask(torch.tensor([frames, frames]), frames, 0.8, 10, 2, g)
    units = torch.randint(0, 16, (2, frames), generator=g)

    def same_mask(x, padding_mask):
        x = x.clone()
        x[mask] = theirs.mask_generator.mask_embedding.to(x.dtype)
        return x, mask

    theirs.mask_generator.forward = same_mask
    with torch.no_grad():
        logit_m, logit_u, penalty = theirs(waves, units)
        out = ours(waves, torch.tensor([16000, 16000]), units, mask=mask, keep=True)
    # torchaudio: column 0 is the target's own logit and the target's column is -inf; ours: all C units
    target_m = units[mask]
    want = logit_m[:, 1:].clone()
    want[torch.arange(len(target_m)), target_m] = logit_m[:, 0]
    torch.testing.assert_close(out.logits_m, want, atol=1e-5, rtol=1e-5)
    want_u = logit_u[:, 1:].clone()
    target_u = units[~mask]
    want_u[torch.arange(len(target_u)), target_u] = logit_u[:, 0]
    torch.testing.assert_close(out.logits_u, want_u, atol=1e-5, rtol=1e-5)
    # torchaudio's examples/hubert loss: CE(logit, 0) summed over masked frames + 10 x penalty x masked frames
    n = len(target_m)
    loss = (torch.nn.functional.cross_entropy(logit_m, torch.zeros(n, dtype=torch.long), reduction="sum")
            + 10.0 * penalty * n) / n
    torch.testing.assert_close(out.loss, loss, atol=1e-5, rtol=1e-5)
    assert out.n_masked == n and out.feature_penalty == pytest.approx(float(penalty), rel=1e-6)


def test_masks_follow_hubert_and_spare_padding():
    theirs, ours = torchaudio_pair()
    ours.train()
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(4, 48000) * 0.1
    lengths = torch.tensor([48000, 40000, 30000, 20000])
    units = torch.zeros(4, 149, dtype=torch.long)
    fractions = []
    for _ in range(5):
        out = ours(waves, lengths, units, g, keep=True)
        frames = out.mask.shape[1]
        valid = torch.arange(frames)[None, :] < torch.tensor([149, 124, 93, 62])[:, None]
        assert not (out.mask & ~valid).any()  # never in padding
        fractions.append(out.masked_fraction)
    # p = 0.8, span 10, overlaps merged: about 1 - exp(-0.8) = 55% of the frames are masked
    assert 0.45 < sum(fractions) / len(fractions) < 0.65


def test_frames_without_units_are_ignored():
    _, ours = torchaudio_pair()
    waves = torch.randn(1, 16000) * 0.1
    units = torch.full((1, 10), 3, dtype=torch.long)  # shorter than the clip's 49 frames: the rest has no unit
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = ours(waves, torch.tensor([16000]), units, g, keep=True)
    assert out.n_masked == int(out.mask[:, :10].sum()) and int(out.targets.sum()) == out.n_masked
    assert IGNORE < 0


def test_perplexity_and_collapse_signs():
    assert perplexity(torch.tensor([5.0, 0, 0, 0])) == pytest.approx(1.0)
    assert perplexity(torch.ones(8)) == pytest.approx(8.0)
    assert collapse_signs({"predicted_perplexity": 1.1, "target_perplexity": 40.0})
    assert not collapse_signs({"predicted_perplexity": 12.0, "target_perplexity": 40.0})
    assert not collapse_signs({"predicted_perplexity": 1.1, "target_perplexity": 2.0})  # the targets are few too


def test_hubert_from_random_init_then_resume_finetune_and_a_second_iteration(tone_audio, tmp_path, monkeypatch):
    run = tmp_path / "h1"
    args = ["adapt", "--unlabeled", tone_audio, "--base", "tiny", "--max-steps", 8, "--set", "train.save_every=4",
            *HUBERT_FAST]
    res = invoke(*args, "--out", run)
    assert res.exit_code == 0, res.output
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["objective"] == "hubert" and meta["config"]["model"]["mask_prob"] == 0.8
    assert meta["units"] == {"kind": "mfcc", "layer": 0, "clusters": 12, "reused_from": None}
    report = json.loads((run / "units" / "units.json").read_text())
    assert report["clusters_used"] <= 12 and report["frames_sampled"] <= report["frames"]
    assert set(p.name for p in (run / "units").iterdir()) == {"centroids.safetensors", "units.safetensors",
                                                              "units.json"}
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    for key in ("masked_accuracy", "unmasked_accuracy", "predicted_perplexity", "target_perplexity",
                "masked_fraction", "lr", "grad_norm", "feature_penalty"):
        assert key in rows[-1], key
    assert 0.45 < rows[-1]["masked_fraction"] < 0.65
    state = load_file(str(run / "model.safetensors"))
    assert {"heads.final_proj.weight", "heads.label_embeddings", "mask_emb"} <= set(state)

    # an exact resume: stopped after update 4, resumed to 8, the same weights and metrics
    assert factory.invoke_stopped_after(4, *args, "--out", tmp_path / "b").exit_code == 130
    res = invoke("adapt", "--resume", "--out", tmp_path / "b", "--quiet")
    assert res.exit_code == 0, res.output
    resumed = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(state[k], resumed[k]) for k in state)
    assert [r["loss"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if "loss" in r] == [r["loss"] for r in rows]

    # the encoder fine-tunes (finetune --base RUN), and HuBERT heads are not taken for a codebook
    prep = tmp_path / "prep"
    factory.tone_table(tmp_path / "lab" / "c.csv", n=10, seed=3)
    assert invoke("prepare", tmp_path / "lab" / "c.csv", "--out", prep, "-q").exit_code == 0
    res = invoke("finetune", "--data", prep, "--split", "full", "--base", run, "--out", tmp_path / "ft",
                 "--max-steps", 2, "--eval-every", 0, *FAST)
    assert res.exit_code == 0, res.output

    # the second iteration: units from layer 2 of the first run, reusing nothing else
    res = invoke("adapt", "--unlabeled", tone_audio, "--base", run, "--max-steps", 2, "--out", tmp_path / "h2",
                 "--targets", "layer:2", *HUBERT_FAST)
    assert res.exit_code == 0, res.output
    meta2 = json.loads((tmp_path / "h2" / "config.json").read_text())
    assert meta2["units"]["kind"] == "layer" and meta2["units"]["layer"] == 2 and meta2["backbone"]["pretrained"]
    assert json.loads((tmp_path / "h2" / "units" / "units.json").read_text())["targets"] == "layer 2 of the base"

    # --units reuses a run's units (the same pieces), copying them into the new run; --clusters or --targets
    # beside it would be ignored (the units are the run's): refused, nothing written
    fast = [a for a in HUBERT_FAST if a not in ("--clusters", 12)]
    for extra in (["--clusters", 100], ["--targets", "mfcc"]):
        res = invoke("adapt", "--unlabeled", tone_audio, "--base", "tiny", "--max-steps", 1, "--out",
                     tmp_path / "h3", "--units", run, *fast, *extra)
        assert res.exit_code == 2 and "trains on that run's units as they are" in " ".join(res.output.split())
        assert extra[0] in res.output and not (tmp_path / "h3").exists()
    res = invoke("adapt", "--unlabeled", tone_audio, "--base", "tiny", "--max-steps", 1, "--out", tmp_path / "h3",
                 "--units", run, *fast)
    assert res.exit_code == 0, res.output
    assert load_file(str(tmp_path / "h3" / "units" / "units.safetensors"))["units"].equal(
        load_file(str(run / "units" / "units.safetensors"))["units"])


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_hubert_and_wavlm_bases_continue_with_their_own_objective(tone_audio, tmp_path, family):
    base = hf_base(tmp_path / family, family)
    run = tmp_path / "run"
    res = invoke("adapt", "--unlabeled", tone_audio, "--base", base, "--max-steps", 2, "--out", run,
                 "--set", "train.batch_seconds=30", "--set", "train.num_workers=0", "--clusters", 10, "--quiet")
    assert res.exit_code == 0, res.output  # --objective auto: hubert for these bases
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["objective"] == "hubert" and meta["units"]["kind"] == "layer"
    assert meta["units"]["layer"] == 1  # the middle of the base's 2 layers


def test_collapse_stops_the_run(tone_audio, tmp_path, monkeypatch):
    import lowres.model.hubert as hubert

    def one_unit(self, context):
        logits = torch.zeros(len(context), self.heads.num_units, device=context.device)
        logits[:, 0] = 10.0
        return logits + 0 * self.heads.final_proj(context).sum()  # keeps a gradient path

    monkeypatch.setattr(hubert.HubertPretrainer, "logits", one_unit)
    res = invoke("adapt", "--unlabeled", tone_audio, "--base", "tiny", "--out", tmp_path / "c", "--max-steps", 40,
                 "--set", "train.log_every=2", "--set", "train.heads_warmup_steps=0", *HUBERT_FAST)
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "predictions collapsed onto one unit" in text and "checkpoints/" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--targets", "layer:99"], "the base has transformer layers 1 to 4"),
    (["--clusters", "1"], "--clusters 1: k-means needs 2 clusters or more"),
    (["--clusters", "0"], "Leave --clusters out for HuBERT's number"),  # was: HuBERT's default, silently
    (["--clusters", "5000"], "fewer than --clusters 5000"),
])
def test_bad_hubert_input_is_one_message_and_leaves_out_untouched(tone_audio, tmp_path, args, message):
    out = tmp_path / "run"
    fast = [a for a in HUBERT_FAST if a not in ("--clusters", 12)]
    res = invoke("adapt", "--unlabeled", tone_audio, "--base", "tiny", "--out", out, "--max-steps", 2, *fast, *args)
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()) and "Traceback" not in res.output
    assert not out.exists()
