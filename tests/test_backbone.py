"""Backbone registry: named torchaudio bundles (no download), random configs, clear errors offline."""

from __future__ import annotations

import urllib.error

import pytest
import torchaudio.pipelines as pipelines

from lowres import LowresError
from lowres.model.backbone import NAMED_BUNDLES, RANDOM_CONFIGS, build_model, load_backbone


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
        load_backbone("wav2vec2-base")


def test_random_configs_build_and_keep_20ms_frames():
    import torch

    model = build_model(RANDOM_CONFIGS["tiny"])
    feats, _ = model.eval()(torch.zeros(1, 16000))
    assert feats.shape[1] == 49  # 1 s of 16 kHz audio → 49 frames of 20 ms
    # the same seed gives the same random weights
    a, b = load_backbone("tiny", seed=3).model, load_backbone("tiny", seed=3).model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_random_configs_get_the_fairseq_initialisation():
    import math

    import torch

    model = load_backbone("small", seed=0).model
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
        load_backbone("xls-r-300")
    with pytest.raises(LowresError, match="no such folder"):
        load_backbone(str(tmp_path / "missing" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LowresError, match="no config.json"):
        load_backbone(str(tmp_path / "empty"))
