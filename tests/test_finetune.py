"""prepare → finetune → eval / transcribe / export on tiny models and a tiny synthetic corpus."""

from __future__ import annotations

import json
from pathlib import Path

import factory
import numpy as np
import pytest
import torch
from factory import FAST, hf_base, invoke, read_jsonl
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return factory.prepared_corpus(tmp_path_factory.mktemp("corpus"), n=30, speakers=6)


# --------------------------------------------------------------------------------------------------


def test_end_to_end_prepare_finetune_eval(prepared, tmp_path):
    run = tmp_path / "run"
    res = invoke("finetune", "--data", prepared, "--split", "full", "--base", "tiny", "--out", run,
                 "--max-steps", 6, "--eval-every", 3, *FAST)
    assert res.exit_code == 0, res.output
    meta = json.loads((run / "config.json").read_text())
    assert meta["lowres_run"] == "finetune" and meta["config"]["train"]["max_steps"] == 6
    assert meta["build"]["lora"] is False  # random base: the whole model trains, and the run says so
    assert "randomly initialised" in (run / "train.log").read_text()
    rows = read_jsonl(run / "metrics.jsonl")
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert all(r["audio_s_per_s"] > 0 for r in rows if "loss" in r)
    assert [r["step"] for r in rows if "dev_wer" in r] == [3, 6]
    assert (run / "model.safetensors").is_file() and (run / "learning_curve.png").stat().st_size > 1000
    assert (run / "checkpoints" / "latest").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["best_by"] == "dev_cer"  # low-resource users report CER (#14)
    # the best dev CER picks the deliverable, but an all-blank evaluation never does
    n_dev = len(read_jsonl(prepared / "manifests" / "dev.jsonl"))
    real = [r for r in rows if "dev_cer" in r and r["dev_empty_hypotheses"] < n_dev]
    if real:
        assert summary["best_step"] == min(real, key=lambda r: r["dev_cer"])["step"]
    else:
        assert summary["best_step"] == -1 and "every dev evaluation was all blank" in (run / "train.log").read_text()

    res = invoke("eval", "--model", run, "--data", prepared, "--split", "test")
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    for key in ("wer", "cer", "num_utterances", "rtf"):
        assert key in metrics
    n_test = len(read_jsonl(prepared / "manifests" / "test.jsonl"))
    hyps = read_jsonl(run / "eval-test" / "hyps.jsonl")
    assert metrics["num_utterances"] == n_test == len(hyps)
    assert {"reference", "hypothesis", "word_errors", "char_errors"} <= set(hyps[0])
    # the corpus rates are the error counts of hyps.jsonl over the reference lengths (not a mean of rates)
    words, chars = sum(h["words"] for h in hyps), sum(h["chars"] for h in hyps)
    assert words > 0 and chars > 0
    assert metrics["wer"] == pytest.approx(sum(h["word_errors"] for h in hyps) / words, abs=1e-6)
    assert metrics["cer"] == pytest.approx(sum(h["char_errors"] for h in hyps) / chars, abs=1e-6)
    assert metrics["wer"] > 0  # six updates of a random tiny model cannot transcribe the test set


def test_tiny_model_learns_to_read_tones(tmp_path):
    """Training must really fit: on clips where every letter is a tone of its own pitch, the loss falls far
    below the all-blank plateau and the (train = dev) CER drops from ~100% to a few percent."""
    factory.tone_table(tmp_path / "c.csv", n=16)
    assert invoke("prepare", tmp_path / "c.csv", "--out", tmp_path / "prep", "-q", "--dev-fraction", 0,
                  "--test-fraction", 0).exit_code == 0
    full = tmp_path / "prep" / "manifests" / "full.jsonl"
    run = tmp_path / "run"
    res = invoke("finetune", "--data", tmp_path / "prep", "--split", "full", "--base", "tiny", "--out", run,
                 "--max-steps", 45, *factory.TONE_LEARNER, "--set", f"dev_manifest={full}", "--eval-every", 45,
                 "--set", "train.best_metric=cer", "--quiet")
    assert res.exit_code == 0, res.output
    rows = read_jsonl(run / "metrics.jsonl")
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.3 * losses[0]
    dev = [r for r in rows if "dev_cer" in r][-1]
    assert dev["dev_cer"] < 0.3, dev
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_by"] == "dev_cer" and summary["best_step"] == 45 and summary["best_value"] == dev["dev_cer"]


def test_resume_after_a_kill_gives_the_same_run(prepared, tmp_path, monkeypatch):
    args = ["--data", prepared, "--split", "full", "--base", "tiny", "--max-steps", 6, "--eval-every", 3,
            "--set", "train.save_every=2", *FAST]
    assert invoke("finetune", *args, "--out", tmp_path / "a").exit_code == 0

    res = factory.invoke_stopped_after(4, "finetune", *args, "--out", tmp_path / "b")
    assert res.exit_code == 130  # the process dies right after the step-4 checkpoint
    res = invoke("finetune", "--resume", "--out", tmp_path / "b", "--data", prepared, "--quiet")
    assert res.exit_code == 0, res.output

    factory.assert_same_run(tmp_path / "a", tmp_path / "b")


def test_lora_trains_only_adapters_and_head(prepared, tmp_path):
    base = hf_base(tmp_path / "hf")
    from lowres.bases import load_base

    before = {k: v.clone() for k, v in load_base(str(base)).model.state_dict().items()}
    run = tmp_path / "run"
    res = invoke("finetune", "--data", prepared, "--split", "full", "--base", base, "--out", run, "--max-steps", 4,
                 "--set", "train.head_only_steps=2", "--eval-every", 0, *FAST)
    assert res.exit_code == 0, res.output
    saved = load_file(str(run / "model.safetensors"))
    assert saved, "nothing saved"
    for name in saved:
        assert "lora_" in name or name.startswith("head.") or name == "mask_emb", name
    assert any("lora_" in n for n in saved) and "head.weight" in saved
    # the deliverable is small: adapters + head, not the backbone
    assert sum(v.numel() for v in saved.values()) < 0.2 * sum(v.numel() for v in before.values())
    # LoRA B matrices moved away from zero after the head-only phase (the adapters trained)
    assert any(float(v.abs().sum()) > 0 for n, v in saved.items() if "lora_B" in n)
    log = (run / "train.log").read_text()
    assert "head-only phase" in log and "phase over" in log

    from lowres.bases import load_run

    loaded = load_run(run, merge=False)
    backbone = {k: v for k, v in loaded.model.backbone.state_dict().items() if "lora_" not in k}
    for k, v in before.items():
        key = k if k in backbone else k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        torch.testing.assert_close(backbone[key], v, msg=f"{k} changed but should be frozen")


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm"])
def test_padded_batch_equals_one_at_a_time(tmp_path, family):
    from lowres.bases import load_base
    from lowres.config import FinetuneConfig
    from lowres.model.build import build_ctc_model

    loaded = load_base(str(hf_base(tmp_path / family, family)))
    model, _ = build_ctc_model(FinetuneConfig(), 12, loaded)
    model.eval()
    rng = np.random.default_rng(0)
    lens = [16000, 9000, 23456]
    waves = [torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.1) for n in lens]
    batch = torch.zeros(3, max(lens))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    with torch.no_grad():
        logits, frames = model(batch, torch.tensor(lens))
        for i, w in enumerate(waves):
            single, f1 = model(w[None], torch.tensor([len(w)]))
            assert int(frames[i]) == int(f1[0]) == single.shape[1]
            torch.testing.assert_close(logits[i, : single.shape[1]], single[0], atol=2e-4, rtol=1e-4)


def test_group_norm_features_of_a_padded_batch_equal_one_at_a_time():
    """BASE-style encoders (group norm on the first conv layer): statistics over valid frames only, and the
    padded path stays differentiable (the feature encoder trains from scratch)."""
    from lowres.model.backbone import RANDOM_CONFIGS, BackboneSpec, build_model, conv_features

    tiny = RANDOM_CONFIGS["tiny"]
    spec = BackboneSpec("wav2vec2", dict(tiny.arch, extractor_mode="group_norm", extractor_conv_bias=False),
                        False, False, "tiny-group-norm")
    torch.manual_seed(0)
    extractor = build_model(spec).feature_extractor
    torch.nn.init.normal_(extractor.conv_layers[0].layer_norm.weight)
    torch.nn.init.normal_(extractor.conv_layers[0].layer_norm.bias)
    rng = np.random.default_rng(0)
    lens = [16000, 9000, 23456, 400]
    waves = [torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.1 + 0.05) for n in lens]
    batch = torch.zeros(len(lens), max(lens))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    batch.requires_grad_(True)
    feats, frames = conv_features(extractor, batch, torch.tensor(lens))
    for i, w in enumerate(waves):
        single, f1 = conv_features(extractor, w[None], torch.tensor([len(w)]))
        assert int(frames[i]) == int(f1[0]) == single.shape[1]
        torch.testing.assert_close(feats[i, : single.shape[1]], single[0], atol=1e-5, rtol=1e-5)
    feats.sum().backward()
    assert batch.grad is not None and bool(torch.isfinite(batch.grad).all())
    assert extractor.conv_layers[0].layer_norm.weight.grad is not None


def test_huggingface_folder_loads_as_backbone_with_same_features(tmp_path):
    import transformers

    from lowres.bases import load_base

    folder = hf_base(tmp_path / "hf")
    loaded = load_base(str(folder))
    assert loaded.spec.pretrained and loaded.spec.family == "wav2vec2" and loaded.mask_embedding is not None
    hf = transformers.Wav2Vec2Model.from_pretrained(folder).eval()
    wave = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        ours, _ = loaded.model.eval()(wave)
        theirs = hf(wave).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_export_round_trip_through_transformers(prepared, tmp_path):
    import soundfile as sf
    import transformers

    base = hf_base(tmp_path / "hf")
    run = tmp_path / "run"
    assert invoke("finetune", "--data", prepared, "--split", "full", "--base", base, "--out", run, "--max-steps", 3,
                  "--lr", 5e-2, "--set", "train.head_only_steps=1", "--eval-every", 0, *FAST).exit_code == 0
    assert invoke("eval", "--model", run, "--data", prepared, "--split", "test", "-q").exit_code == 0
    res = invoke("export", "--model", run, "--out", tmp_path / "export")
    assert res.exit_code == 0, res.output
    model = transformers.AutoModelForCTC.from_pretrained(tmp_path / "export").eval()
    assert type(model).__name__ == "Wav2Vec2ForCTC"
    processor = transformers.Wav2Vec2Processor.from_pretrained(tmp_path / "export")
    hyps = {r["id"]: r["hypothesis"] for r in read_jsonl(run / "eval-test" / "hyps.jsonl")}

    from lowres.bases import load_run

    ours = load_run(run).model
    manifest = prepared / "manifests" / "test.jsonl"
    for row in read_jsonl(manifest):
        wave, _ = sf.read(manifest.parent / row["audio_filepath"], dtype="float32")
        inputs = processor(wave, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
            mine, _ = ours(torch.from_numpy(wave)[None], None)
        torch.testing.assert_close(logits, mine, atol=2e-4, rtol=1e-4)
        text = processor.batch_decode(logits.argmax(-1))[0]
        assert " ".join(text.split()) == hyps[row["id"]]
    # refuses to overwrite
    assert invoke("export", "--model", run, "--out", tmp_path / "export").exit_code == 2


def test_transcribe_long_file_in_chunks(prepared, tmp_path):
    run = tmp_path / "run"
    assert invoke("finetune", "--data", prepared, "--split", "full", "--base", "tiny", "--out", run,
                  "--max-steps", 1, "--eval-every", 0, *FAST).exit_code == 0
    factory.write_audio(tmp_path / "long.wav", 70.0, seed=4)
    from lowres.inference import plan_chunks

    pieces = plan_chunks(tmp_path / "long.wav", 20.0)
    assert len(pieces) >= 4 and all(d <= 20.0 + 1e-6 for _, d in pieces)
    assert abs(sum(d for _, d in pieces) - 70.0) < 1e-3
    res = invoke("transcribe", "--model", run, "--chunk", 20, "--json", tmp_path / "long.wav",
                 prepared / "manifests" / json.loads((prepared / "manifests" / "test.jsonl").read_text()
                                                     .splitlines()[0])["audio_filepath"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.output.splitlines() if x.startswith("{")]
    assert [Path(x["audio"]).name for x in lines][0] == "long.wav" and len(lines) == 2


# --------------------------------------------------------------------------------------------------
# user mistakes: one clear message, exit status 2, nothing lost


def test_finetune_errors(prepared, tmp_path):
    cases = [
        (["--data", prepared, "--split", "2h", "--base", "tiny", "--out", tmp_path / "r"], "--split must be one of"),
        (["--data", tmp_path / "nope", "--base", "tiny", "--out", tmp_path / "r"], "no such folder"),
        (["--data", prepared, "--out", tmp_path / "r"], "--base is required"),
        (["--data", prepared, "--base", "wav2vec2-bsae", "--out", tmp_path / "r"], "Did you mean wav2vec2-base"),
        (["--data", prepared, "--base", "tiny", "--out", tmp_path / "r", "--set", "optim.lrr=1"], "optim.lrr"),
        (["--data", prepared, "--base", "tiny", "--out", tmp_path / "r", "--set", "model.mask_prob=1.5"], "mask_prob"),
        (["--resume", "--out", tmp_path / "r2", "--data", prepared], "no run to continue"),
    ]
    for args, message in cases:
        res = invoke("finetune", *args)
        assert res.exit_code == 2, (args, res.output)
        assert message in " ".join(res.output.split()), (message, res.output)
        assert "Traceback" not in res.output
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    res = invoke("finetune", "--data", prepared, "--base", "tiny", "--out", mine)
    assert res.exit_code == 2 and "already holds files" in " ".join(res.output.split())
    res = invoke("finetune", "--data", prepared, "--base", "tiny", "--out", mine, "--overwrite")
    assert res.exit_code == 2 and "not a lowres run folder" in " ".join(res.output.split())
    assert (mine / "notes.txt").read_text() == "precious"


def test_eval_errors(prepared, tmp_path):
    res = invoke("eval", "--model", tmp_path, "--data", prepared)
    assert res.exit_code == 2 and "not a lowres run folder" in " ".join(res.output.split())
    res = invoke("eval", "--model", tmp_path)
    assert res.exit_code == 2 and "--manifest" in res.output
    res = invoke("eval", "--model", tmp_path, "--data", prepared, "--split", "nosuch")
    assert res.exit_code == 2 and "Available:" in res.output
    res = invoke("transcribe", "--model", tmp_path, tmp_path / "missing.wav")
    assert res.exit_code == 2 and "missing.wav" in res.output


def test_a_short_run_from_a_pretrained_base_still_trains_lora(prepared, tmp_path):
    """#14: the recipes' 2,000-update head-only phase used to cover any shorter run, so LoRA never trained."""
    run = tmp_path / "run"
    res = invoke("finetune", "--data", prepared, "--split", "full", "--base", hf_base(tmp_path / "hf"), "--out", run,
                 "--max-steps", 4, "--eval-every", 0, *FAST)
    assert res.exit_code == 0, res.output
    log = (run / "train.log").read_text()
    assert "head-only phase of 2000 updates would cover the whole run: shortened to 2 updates" in log
    assert "updates 1-2: head-only phase" in log and "update 3: head-only phase over" in log
    saved = load_file(str(run / "model.safetensors"))
    assert any(float(v.abs().sum()) > 0 for n, v in saved.items() if "lora_B" in n)  # the adapters trained
    assert json.loads((run / "config.json").read_text())["build"]["head_only_steps"] == 2


def test_a_run_moved_with_its_base_keeps_working(prepared, tmp_path):
    """#14: a run stored its base as an absolute path, so copying runs/ elsewhere broke eval with an error
    about --base, which the user never passed."""
    import shutil

    runs = tmp_path / "runs"
    hf_base(runs / "hf")
    assert invoke("finetune", "--data", prepared, "--split", "full", "--base", runs / "hf", "--out", runs / "ft",
                  "--max-steps", 2, "--eval-every", 0, *FAST).exit_code == 0
    meta = json.loads((runs / "ft" / "config.json").read_text())
    assert meta["base"] == meta["config"]["base"] == "../hf"  # beside the run: stored relative to it
    moved = tmp_path / "elsewhere" / "runs"
    shutil.move(str(runs), str(moved))
    ok = invoke("eval", "--model", moved / "ft", "--data", prepared, "--split", "test", "-q")
    assert ok.exit_code == 0, ok.output
    (moved / "hf").rename(moved / "hf-renamed")  # found again by its fingerprint, next to the run
    again = invoke("eval", "--model", moved / "ft", "--data", prepared, "--split", "test", "-q", "--out",
                   tmp_path / "e2")
    assert again.exit_code == 0, again.output
    shutil.rmtree(moved / "hf-renamed")
    gone = invoke("eval", "--model", moved / "ft", "--data", prepared, "--split", "test", "-q", "--out",
                  tmp_path / "e3")
    text = " ".join(gone.output.split())
    assert gone.exit_code == 2 and "Traceback" not in gone.output
    assert f"trained from the base {moved / 'hf'} (recorded as ../hf), which is not there any more" in text
    assert "copy it next to the run" in text and "--base" not in text


def test_layer_norm_conv_features_equal_torchaudio_forward_and_backward():
    """The conv encoder of a layer-norm model (tiny, XLS-R, ...) normalises each frame's channels in the
    (B, C, T) layout instead of torchaudio's transpose-normalise-transpose (2x faster backward on a CPU):
    the features and every gradient equal torchaudio's own forward."""
    from lowres.model.backbone import RANDOM_CONFIGS, BackboneSpec, build_model, conv_features

    tiny = RANDOM_CONFIGS["tiny"]
    spec = BackboneSpec("wav2vec2", dict(tiny.arch), False, False, "tiny")
    torch.manual_seed(0)
    extractor = build_model(spec).feature_extractor
    for layer in extractor.conv_layers:  # non-trivial affine parameters
        torch.nn.init.normal_(layer.layer_norm.weight)
        torch.nn.init.normal_(layer.layer_norm.bias)
    waves = torch.randn(3, 12000) * 0.1
    ours, _ = conv_features(extractor, waves, None)
    ours_grads = torch.autograd.grad((ours * ours).sum(), list(extractor.parameters()))
    theirs, _ = extractor(waves, None)  # torchaudio's FeatureExtractor: (B, T', C)
    theirs_grads = torch.autograd.grad((theirs * theirs).sum(), list(extractor.parameters()))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for a, b in zip(ours_grads, theirs_grads, strict=True):  # float sums in another order: relative to the scale
        torch.testing.assert_close(a, b, atol=1e-4 * float(b.abs().max()), rtol=1e-3)
