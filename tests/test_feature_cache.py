"""train.feature_cache: with a frozen conv encoder (or, for --head weighted, the whole frozen backbone) each
clip's features are computed once and read back in later epochs; the cache changes nothing beyond one fp16
rounding, spills to the run folder past its memory, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from factory import FAST, assert_same_run, hf_base, invoke, invoke_stopped_after, prepared_corpus, read_jsonl

from lowres.bases import load_base
from lowres.config import FinetuneConfig, merge
from lowres.model.feature_cache import ConvFeatureCache


def _waves(seed: int = 1, lengths=(16000, 11000, 7000)):
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    waves = torch.randn(len(lengths), n, generator=g) * 0.1
    for i, length in enumerate(lengths):
        waves[i, length:] = 0.0
    return waves, torch.tensor(lengths)


def _count_calls(module) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_pre_hook(hook)
    return calls


def _ctc_model(tmp_path, **model):
    from lowres.model.build import build_ctc_model

    cfg = merge(FinetuneConfig(), {"model": {"mask_prob": 0.3, "layerdrop": 0.0, **model}})
    model, info = build_ctc_model(cfg, 12, load_base(str(hf_base(tmp_path / "hf"))))
    assert not info.feature_encoder_trained  # a pretrained base: the conv encoder is frozen
    return model


def _logits(model, waves, lengths, keys, seed: int = 3):
    torch.manual_seed(seed)
    logits, frames = model(waves, lengths, torch.Generator().manual_seed(seed), keys=keys)
    return logits, frames


@pytest.mark.parametrize("memory_mb", [64.0, 0.0])  # 0: every clip spills to disk
def test_ctc_features_are_reused_and_equal_the_uncached_ones_to_fp16(tmp_path, memory_mb):
    model = _ctc_model(tmp_path)
    model.train()
    conv = _count_calls(model.backbone.feature_extractor.conv_layers[0].conv)
    waves, lengths = _waves()
    plain, frames = _logits(model, waves, lengths, keys=None)
    assert conv[0] == 1

    cache = ConvFeatureCache(memory_mb, tmp_path / "run" / "feature_cache" / "rank0")
    model.feature_cache = cache
    first, _ = _logits(model, waves, lengths, keys=[0, 1, 2])
    assert conv[0] == 4 and cache.misses == 3 and cache.hits == 0  # each new clip is computed alone
    assert (cache.spill_dir.is_dir() and len(list(cache.spill_dir.glob("*.npy"))) == 3) == (memory_mb == 0)
    again, _ = _logits(model, waves, lengths, keys=[0, 1, 2])
    assert conv[0] == 4, "the conv encoder ran again on cached clips"
    assert cache.hits == 3
    torch.testing.assert_close(again, first, rtol=0, atol=0)  # computed or read back: the same numbers
    valid = torch.arange(first.shape[1])[None, :] < frames[:, None]
    diff = (first - plain).detach().abs()[valid]
    assert 0 < float(diff.max()) < 5e-2  # one fp16 rounding of the conv output, no more
    # the check is not vacuous: another mask seed gives other logits
    other, _ = _logits(model, waves, lengths, keys=[0, 1, 2], seed=4)
    assert not torch.allclose(other, first)
    cache.close()
    assert not (tmp_path / "run" / "feature_cache").exists()


def test_a_clip_gives_the_same_features_in_another_batch(tmp_path):
    """Batches are formed anew every epoch: a cached clip in a batch of other clips (other padding) gives
    the same valid frames as the same clip computed in that batch."""
    model = _ctc_model(tmp_path, mask_prob=0.0, mask_channel_prob=0.0)
    waves, lengths = _waves(lengths=(16000, 11000, 7000))
    model.train()
    model.backbone.eval()  # dropout off; the cache stays on (it follows the recogniser's own training flag)
    model.feature_cache = ConvFeatureCache(64.0, None)
    _logits(model, waves, lengths, keys=[0, 1, 2])  # fills the cache
    other_waves, other_lengths = _waves(seed=9, lengths=(9000, 14000))
    mixed = torch.zeros(2, 14000)
    mixed[0, :11000] = waves[1, :11000]  # clip 1, now padded to 14000 samples
    mixed[1] = other_waves[1]
    mixed_lengths = torch.tensor([11000, 14000])
    with_cache, frames = _logits(model, mixed, mixed_lengths, keys=[1, 7])  # clip 7 is not cached: computed
    model.feature_cache = ConvFeatureCache(64.0, None)
    fresh, _ = _logits(model, mixed, mixed_lengths, keys=[1, 7])
    n = int(frames[0])
    torch.testing.assert_close(with_cache[0, :n], fresh[0, :n], rtol=0, atol=0)


def test_weighted_head_caches_the_whole_frozen_upstream(tmp_path):
    from lowres.model.build import build_recogniser

    cfg = merge(FinetuneConfig(), {"head": {"kind": "weighted", "lstm_hidden": 16, "lstm_layers": 1}})
    model, _ = build_recogniser(cfg, 12, load_base(str(hf_base(tmp_path / "hf"))))
    model.train()
    layers = _count_calls(model.backbone.encoder.transformer.layers[0])
    waves, lengths = _waves()
    plain, frames = _logits(model, waves, lengths, keys=None)
    model.feature_cache = ConvFeatureCache(64.0, None)
    first, _ = _logits(model, waves, lengths, keys=[0, 1, 2])
    again, _ = _logits(model, waves, lengths, keys=[0, 1, 2])
    assert layers[0] == 4, "the frozen transformer ran on cached clips"
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    valid = torch.arange(first.shape[1])[None, :] < frames[:, None]
    assert float((first - plain).detach().abs()[valid].max()) < 5e-2


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_corpus(tmp_path_factory.mktemp("corpus"), n=12)


def test_finetune_uses_it_by_default_and_a_resumed_run_equals_an_uninterrupted_one(prepared, tmp_path):
    base = hf_base(tmp_path / "hf")
    args = ["--data", prepared, "--split", "full", "--base", base, "--max-steps", 6, "--eval-every", 3,
            "--set", "train.save_every=2", "--set", "train.head_only_steps=0", *FAST]
    res = invoke("finetune", *args, "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text(encoding="utf-8"))
    cache = summary["feature_cache"]
    assert cache["clips"] > 0 and cache["hits"] > 0, cache  # 6 updates are several epochs of 12 clips
    assert not (tmp_path / "a" / "feature_cache").exists()
    assert "feature cache on" in (tmp_path / "a" / "train.log").read_text(encoding="utf-8")

    # a resume starts with an empty cache, and still takes the uninterrupted run's steps exactly;
    # spilling everything to disk (memory 0) changes nothing either
    res = invoke_stopped_after(4, "finetune", *args, "--out", tmp_path / "b", "--set", "train.feature_cache_mb=0")
    assert res.exit_code == 130
    res = invoke("finetune", "--resume", "--out", tmp_path / "b", "--data", prepared, "--quiet")
    assert res.exit_code == 0, res.output
    assert_same_run(tmp_path / "a", tmp_path / "b")

    # off: the conv encoder runs every time, the results differ only by the rounding
    res = invoke("finetune", *args, "--out", tmp_path / "c", "--set", "train.feature_cache=false")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["feature_cache"] is None
    la = [r["loss"] for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if "loss" in r]
    lc = [r["loss"] for r in read_jsonl(tmp_path / "c" / "metrics.jsonl") if "loss" in r]
    assert la != lc and all(abs(x - y) < 2e-2 * max(abs(y), 1) for x, y in zip(la, lc, strict=True)), (la, lc)


def test_no_cache_where_features_change(prepared, tmp_path):
    """A trained conv encoder or waveform augmentation gives new features every epoch: no cache."""
    for extra in (["--base", "tiny"],  # random init: the conv encoder trains
                  ["--base", hf_base(tmp_path / "hf"), "--set", "augment.noise_prob=0.5"]):
        out = tmp_path / f"run{len(extra)}"
        res = invoke("finetune", "--data", prepared, "--split", "full", "--out", out, "--max-steps", 2,
                     "--eval-every", 0, *extra, *FAST)
        assert res.exit_code == 0, res.output
        assert json.loads((out / "summary.json").read_text())["feature_cache"] is None


def test_a_run_recorded_before_the_cache_resumes_without_it():
    """config.json of a run made before train.feature_cache existed: it trained without the cache (no fp16
    rounding), so its resume goes on without it and takes the steps it would have taken."""
    from lowres.config import to_dict
    from lowres.runs import RunRecord

    cfg = to_dict(FinetuneConfig())
    del cfg["train"]["feature_cache"], cfg["train"]["feature_cache_mb"]
    record = RunRecord(kind="finetune", config=cfg, backbone={}, base="tiny")
    typed = record.typed_config(FinetuneConfig)
    assert typed.train.feature_cache is False and typed.train.feature_cache_mb == 2048.0
    assert FinetuneConfig().train.feature_cache is True  # new runs use it


def test_partly_frozen_conv_caches_its_frozen_layers_and_trains_the_others(tmp_path):
    """model.frozen_conv_layers = 3 with a conv encoder that trains: the lowest three layers run once per clip
    and are read back after, the layers above run (and learn) every time, and the logits equal the uncached
    ones up to one fp16 rounding of layer 2's output."""
    from lowres.model.build import build_ctc_model

    cfg = merge(FinetuneConfig(), {"model": {"mask_prob": 0.0, "mask_channel_prob": 0.0, "layerdrop": 0.0,
                                             "freeze_feature_encoder": False, "frozen_conv_layers": 3}})
    model, info = build_ctc_model(cfg, 12, load_base(str(hf_base(tmp_path / "hf"))))
    assert info.feature_encoder_trained and model.fixed_conv_layers == 3
    conv = model.backbone.feature_extractor.conv_layers
    assert not any(p.requires_grad for layer in conv[:3] for p in layer.parameters())
    assert all(p.requires_grad for layer in conv[3:] for p in layer.parameters())
    model.train()
    model.backbone.eval()  # no dropout: the two paths are compared number for number
    low, high = _count_calls(conv[0].conv), _count_calls(conv[3].conv)
    waves, lengths = _waves()
    plain, frames = _logits(model, waves, lengths, keys=None)
    model.feature_cache = ConvFeatureCache(64.0, None)
    first, _ = _logits(model, waves, lengths, keys=[0, 1, 2])
    again, _ = _logits(model, waves, lengths, keys=[0, 1, 2])
    assert low[0] == 4 and high[0] == 3, "layer 0 ran on cached clips, or layer 3 did not run"
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    valid = torch.arange(first.shape[1])[None, :] < frames[:, None]
    assert 0 < float((first - plain).detach().abs()[valid].max()) < 5e-2
    again.sum().backward()
    assert conv[3].conv.weight.grad is not None and float(conv[3].conv.weight.grad.abs().sum()) > 0
    assert conv[0].conv.weight.grad is None


def test_speed_steps_and_frozen_conv_layers_cache_each_version_and_resume_exactly(prepared, tmp_path, monkeypatch):
    """A conv encoder that trains above 3 frozen layers, with speed perturbation in 3 steps: the cache keeps
    one copy per clip and version (more entries than clips), hits in later epochs, and a resumed run equals
    an uninterrupted one. Speed drawn anywhere in its range turns the cache off."""
    base = hf_base(tmp_path / "hf")
    args = ["--data", prepared, "--split", "full", "--base", base, "--max-steps", 8, "--eval-every", 0,
            "--set", "train.save_every=2", "--set", "train.head_only_steps=0",
            "--set", "model.freeze_feature_encoder=false", "--set", "model.frozen_conv_layers=3",
            "--set", "augment.speed_prob=1.0", "--set", "augment.speed=[0.9,1.1]", *FAST]
    from lowres.data import audio

    decoded = []
    load = audio.load
    monkeypatch.setattr(audio, "load", lambda *a, **k: decoded.append(a) or load(*a, **k))
    res = invoke("finetune", *args, "--set", "augment.speed_steps=3", "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    monkeypatch.setattr(audio, "load", load)
    cache = json.loads((tmp_path / "a" / "summary.json").read_text(encoding="utf-8"))["feature_cache"]
    assert cache["clips"] > 12 and cache["hits"] > 0, cache  # 12 clips, several versions each
    # a clip whose version is kept is not decoded (nor speed-perturbed) again: the audio read is the misses'
    # (the clips computed) and the dev set's, not the hits' (a batch or two prefetched may still read theirs)
    dev = len(read_jsonl(prepared / "manifests" / "dev.jsonl"))
    assert len(decoded) <= cache["misses"] + dev + 2 * 12 and len(decoded) < cache["misses"] + cache["hits"], (
        len(decoded), cache, dev)
    log = (tmp_path / "a" / "train.log").read_text(encoding="utf-8")
    assert "3 frozen lowest conv layers (one copy per speed version)" in log

    res = invoke_stopped_after(4, "finetune", *args, "--set", "augment.speed_steps=3", "--out", tmp_path / "b")
    assert res.exit_code == 130
    res = invoke("finetune", "--resume", "--out", tmp_path / "b", "--data", prepared, "--quiet")
    assert res.exit_code == 0, res.output
    assert_same_run(tmp_path / "a", tmp_path / "b")

    res = invoke("finetune", *args, "--out", tmp_path / "c")  # speed_steps = 0: a new rate per clip and epoch
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["feature_cache"] is None


@pytest.mark.parametrize("value, words", [(7, "every one of the base's 7 conv layers"), (-1, "frozen_conv_layers")])
def test_bad_frozen_conv_layers_is_a_clear_error(prepared, tmp_path, value, words):
    res = invoke("finetune", "--data", prepared, "--split", "full", "--base", hf_base(tmp_path / "hf"),
                 "--out", tmp_path / "run", "--max-steps", 2, "--set", "model.freeze_feature_encoder=false",
                 "--set", f"model.frozen_conv_layers={value}", *FAST)
    assert res.exit_code == 2, res.output
    assert words in res.output and "Traceback" not in res.output
