"""Backbone registry: named torchaudio bundles (no download), random configs, clear errors offline."""

from __future__ import annotations

import urllib.error

import pytest
import torchaudio.pipelines as pipelines

from lowres import LowresError
from lowres.bases import load_base
from lowres.bases.bundles import NAMED_BUNDLES
from lowres.model.backbone import RANDOM_CONFIGS, build_model


def test_bundle_registry_reads_torchaudio_parameters():
    for name, (attr, family) in NAMED_BUNDLES.items():
        bundle = getattr(pipelines, attr)
        params = bundle._params
        assert {"encoder_embed_dim", "encoder_num_layers", "extractor_mode"} <= set(params), name
        assert isinstance(bundle._normalize_waveform, bool), name
        assert family in ("wav2vec2", "hubert", "wavlm")
    # BASE models were trained on raw waveforms, LARGE LV-60k / XLS-R normalise each utterance
    assert pipelines.WAV2VEC2_BASE._normalize_waveform is False
    assert pipelines.WAV2VEC2_XLSR_300M._normalize_waveform is True


def test_bundle_offline_error_says_how_to_pass_a_local_checkpoint(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(pipelines.WAV2VEC2_BASE), "get_model", offline)
    with pytest.raises(LowresError, match="--base /path/to/hf-model-folder"):
        load_base("wav2vec2-base")


def test_random_configs_build_and_keep_20ms_frames():
    import torch

    model = build_model(RANDOM_CONFIGS["tiny"])
    feats, _ = model.eval()(torch.zeros(1, 16000))
    assert feats.shape[1] == 49  # 1 s of 16 kHz audio → 49 frames of 20 ms
    # the same seed gives the same random weights
    a, b = load_base("tiny", seed=3).model, load_base("tiny", seed=3).model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_random_configs_get_the_fairseq_initialisation():
    import math

    import torch

    model = load_base("small", seed=0).model
    transformer = model.encoder.transformer
    linears = [m for m in transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 8 * 6  # q, k, v, out, 2 feed-forward per layer
    for lin in linears:
        assert abs(float(lin.weight.detach().std()) - 0.02) < 0.002 and not lin.bias.any()
    pos = transformer.pos_conv_embed.conv
    expected = math.sqrt(4.0 / (pos.kernel_size[0] * pos.in_channels))
    assert abs(float(pos.weight.detach().std()) / expected - 1) < 0.05 and not pos.bias.any()
    conv = model.feature_extractor.conv_layers[1].conv.weight  # kaiming-normal: std sqrt(2 / fan_in)
    assert abs(float(conv.detach().std()) / math.sqrt(2.0 / (conv.shape[1] * conv.shape[2])) - 1) < 0.05


def test_unknown_base_suggests_names(tmp_path):
    with pytest.raises(LowresError, match="Did you mean xls-r-300m"):
        load_base("xls-r-300")
    with pytest.raises(LowresError, match="no such folder"):
        load_base(str(tmp_path / "missing" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LowresError, match="no config.json"):
        load_base(str(tmp_path / "empty"))


# Loading a Hugging Face folder says nothing that reads like an error. A ``*ForPreTraining`` checkpoint is
# loaded once, with its own class (the backbone and the quantizer/projection heads come from one load),
# and whatever the checkpoint holds that lowres leaves out (a ``*ForCTC``'s lm_head) is named in one short
# note in the base's description (which the run's log prints), not in transformers' LOAD REPORT table, its
# "Loading weights" bar or torchaudio's "lm_head is not imported" warning. Checked in a fresh process, as a
# user sees it (transformers binds its log handler to the stderr it first sees).

_LOAD = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import factory, transformers
from transformers.utils import logging as hf_logging
base = Path({folder!r})
if {ctc!r}:
    cfg = transformers.Wav2Vec2Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=128, num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=4, vocab_size=12)
    transformers.Wav2Vec2ForCTC(cfg).save_pretrained(base)
else:
    factory.hf_base(base)
verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
print("LOADING", file=sys.stderr, flush=True)
from lowres.bases import load_base
loaded = load_base(str(base))
print("SOURCE", loaded.source)
print("HEADS", sorted(loaded.pretrain_heads))
print("RESTORED", hf_logging.get_verbosity() == verbosity and hf_logging.is_progress_bar_enabled() == bars)
"""


def _load_in_a_fresh_process(tmp_path, ctc: bool) -> tuple[str, str]:
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = _LOAD.format(tests=str(Path(__file__).parent), folder=str(tmp_path / "hf"), ctc=ctc)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    return res.stdout, res.stderr.split("LOADING", 1)[1]


def test_a_for_pretraining_checkpoint_loads_once_and_quietly(tmp_path):
    out, err = _load_in_a_fresh_process(tmp_path, ctc=False)
    assert err.strip() == "", err
    assert "SOURCE Hugging Face Wav2Vec2ForPreTraining from" in out and "left out" not in out, out
    assert "quantizer.codevectors" in out and "project_q.weight" in out and "project_hid.weight" in out, out
    assert "RESTORED True" in out


def test_what_a_checkpoint_holds_beyond_the_backbone_is_one_note(tmp_path):
    out, err = _load_in_a_fresh_process(tmp_path, ctc=True)
    assert err.strip() == "", err
    source = next(line for line in out.splitlines() if line.startswith("SOURCE"))
    assert "Wav2Vec2Model from" in source and "left out lm_head.bias, lm_head.weight" in source, source
    assert "HEADS []" in out and "RESTORED True" in out
