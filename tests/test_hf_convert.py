"""torchaudio → Hugging Face CTC export: equal logits per family, a save/load round trip through
``AutoModelForCTC`` + ``Wav2Vec2Processor``, config round trips and clear errors for what cannot be
represented. Tiny random models, no network."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn
from torchaudio.models import wav2vec2_model, wavlm_model

from lowres import LowresError
from lowres.model.hf_convert import arch_from_hf_config, hf_config_from_arch, save_hf_directory, to_hf_ctc

CONV = [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2
VOCAB = {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4, "g̃": 5, "'": 6, "s": 7, "ŋ": 8, "e": 9, "i": 10,
         "o": 11}
# (family, extractor_mode, layer_norm_first, conv_bias, embed_dim, heads)
CASES = {
    "wav2vec2-base": ("wav2vec2", "group_norm", False, False, 32, 2),
    "wav2vec2-large": ("wav2vec2", "layer_norm", True, True, 48, 4),
    "hubert": ("hubert", "group_norm", False, False, 40, 2),
    "wavlm-base": ("wavlm", "group_norm", False, False, 32, 4),
    "wavlm-large": ("wavlm", "layer_norm", True, True, 32, 2),
}


def tiny_arch(family, mode, layer_norm_first, conv_bias, embed_dim, heads, num_layers=2) -> dict:
    arch = {
        "extractor_mode": mode,
        "extractor_conv_layer_config": [list(c) for c in CONV],
        "extractor_conv_bias": conv_bias,
        "encoder_embed_dim": embed_dim,
        "encoder_projection_dropout": 0.1,
        "encoder_pos_conv_kernel": 16,
        "encoder_pos_conv_groups": 2,
        "encoder_num_layers": num_layers,
        "encoder_num_heads": heads,
        "encoder_attention_dropout": 0.1,
        "encoder_ff_interm_features": 2 * embed_dim,
        "encoder_ff_interm_dropout": 0.1,
        "encoder_dropout": 0.1,
        "encoder_layer_norm_first": layer_norm_first,
        "encoder_layer_drop": 0.05,
    }
    if family == "wavlm":
        arch.update(encoder_num_buckets=32, encoder_max_distance=64)
    return arch


def build(family: str, arch: dict, seed: int = 0) -> tuple[nn.Module, nn.Linear]:
    """Random torchaudio model + head; every parameter perturbed (LayerNorm/GroupNorm affine, weight-norm
    magnitude, WavLM gates and bucket embeddings included) so a dropped mapping shows in the logits."""
    torch.manual_seed(seed)
    make = wavlm_model if family == "wavlm" else wav2vec2_model
    model = make(**arch, aux_num_out=None).eval()
    head = nn.Linear(arch["encoder_embed_dim"], len(VOCAB))
    with torch.no_grad():
        for p in list(model.parameters()) + list(head.parameters()):
            p.add_(0.2 * torch.randn_like(p))
    return model, head


def ta_logits(model, head, wave):
    with torch.no_grad():
        return head(model.encoder(model.feature_extractor(wave, None)[0], None))  # (B, T, V)


def greedy(ids: list[int]) -> str:
    """Reference CTC collapse: merge repeats, drop blanks, "|" → space."""
    id2tok = {i: t for t, i in VOCAB.items()}
    out, prev = [], None
    for i in ids:
        if i != prev and i != 0:
            out.append(" " if id2tok[i] == "|" else id2tok[i])
        prev = i
    return "".join(out).strip()


@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_torchaudio(case):
    family, *spec = CASES[case]
    arch = tiny_arch(family, *spec)
    model, head = build(family, arch)
    mask_emb = torch.randn(arch["encoder_embed_dim"])
    hf = to_hf_ctc(model, head, family, arch, len(VOCAB), normalize_waveform=False, mask_embedding=mask_emb)
    assert not hf.training
    assert type(hf).__name__ == {"wav2vec2": "Wav2Vec2ForCTC", "hubert": "HubertForCTC",
                                 "wavlm": "WavLMForCTC"}[family]
    assert torch.equal(getattr(hf, family).masked_spec_embed, mask_emb)
    assert hf.config.pad_token_id == 0 and hf.config.ctc_zero_infinity
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = hf(wave).logits
    want = ta_logits(model, head, wave)
    assert got.shape == want.shape == (1, 49, len(VOCAB))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_plain_pos_conv_weight_is_accepted():
    """A torchaudio model whose positional-conv weight norm was removed (TorchScript preparation does
    this) still converts exactly."""
    arch = tiny_arch("wav2vec2", "group_norm", False, False, 32, 2)
    model, head = build("wav2vec2", arch)
    torch.nn.utils.parametrize.remove_parametrizations(model.encoder.transformer.pos_conv_embed.conv, "weight")
    hf = to_hf_ctc(model, head, "wav2vec2", arch, len(VOCAB), normalize_waveform=False)
    wave = torch.randn(1, 16000)
    with torch.no_grad():
        torch.testing.assert_close(hf(wave).logits, ta_logits(model, head, wave), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case,normalize", [("wav2vec2-base", False), ("wavlm-large", True)])
def test_save_load_round_trip(tmp_path, case, normalize):
    family, *spec = CASES[case]
    arch = tiny_arch(family, *spec)
    model, head = build(family, arch)
    hf = to_hf_ctc(model, head, family, arch, len(VOCAB), normalize_waveform=normalize)
    out = save_hf_directory(tmp_path / "export", hf, VOCAB, normalize_waveform=normalize)
    assert (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()

    loaded = transformers.AutoModelForCTC.from_pretrained(out).eval()
    processor = transformers.Wav2Vec2Processor.from_pretrained(out)
    assert type(loaded) is type(hf)
    fe = processor.feature_extractor
    assert fe.sampling_rate == 16000 and fe.do_normalize == normalize
    assert fe.return_attention_mask == (arch["extractor_mode"] == "layer_norm")

    wave = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(2)) + 0.05
    inputs = processor(wave.numpy(), sampling_rate=16000, return_tensors="pt")
    expected_in = (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7) if normalize else wave
    torch.testing.assert_close(inputs.input_values[0], expected_in, atol=1e-5, rtol=0)
    with torch.no_grad():
        logits = loaded(inputs.input_values).logits
        torch.testing.assert_close(logits, hf(inputs.input_values).logits, atol=0, rtol=0)
    torch.testing.assert_close(logits, ta_logits(model, head, inputs.input_values), atol=1e-5, rtol=0)

    ids = logits.argmax(-1)
    assert processor.batch_decode(ids) == [greedy(ids[0].tolist())]

    tok = processor.tokenizer
    assert tok.get_vocab() == VOCAB and len(tok) == len(VOCAB)
    crafted = [0, 3, 3, 0, 3, 2, 2, 5, 5, 0, 4, 2, 6, 7, 0]
    # repeats merge, a blank keeps doubled letters, "|" → space, "g̃" stays one token, no "clean-up"
    assert processor.batch_decode([crafted]) == ["aa g̃b 's"] == [greedy(crafted)]
    assert tok.convert_ids_to_tokens(5) == "g̃" and tok.convert_tokens_to_ids("g̃") == 5
    assert tok.decode([5, 5, 0, 5]) == "g̃g̃"


def plain(value):
    return list(value) if isinstance(value, list | tuple) else value


def test_arch_config_round_trip():
    configs = [
        transformers.Wav2Vec2Config(
            hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96, conv_dim=[32] * 7,
            conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=15,
            num_conv_pos_embedding_groups=3, feat_proj_dropout=0.05, attention_dropout=0.02,
            activation_dropout=0.03, hidden_dropout=0.04, layerdrop=0.06),
        transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  conv_dim=[16, 32, 32], conv_kernel=[10, 3, 3], conv_stride=[5, 2, 2]),
        transformers.WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=[32] * 7, num_buckets=64, max_bucket_distance=200),
    ]
    fields = ["model_type", "feat_extract_norm", "conv_dim", "conv_kernel", "conv_stride", "conv_bias",
              "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "do_stable_layer_norm",
              "feat_proj_dropout", "attention_dropout", "activation_dropout", "hidden_dropout", "layerdrop",
              "hidden_act", "feat_extract_activation", "layer_norm_eps"]
    for cfg in configs:
        family, arch = arch_from_hf_config(cfg)
        back = hf_config_from_arch(family, arch, vocab_size=12, normalize_waveform=True)
        for f in fields + (["num_buckets", "max_bucket_distance"] if family == "wavlm" else []):
            assert plain(getattr(back, f)) == plain(getattr(cfg, f)), f
        assert back.vocab_size == 12 and back.pad_token_id == 0 and back.ctc_loss_reduction == "mean"
        assert back.mask_time_prob == type(cfg)().mask_time_prob
        assert arch_from_hf_config(back) == (family, arch)
        make = wavlm_model if family == "wavlm" else wav2vec2_model
        make(**arch, aux_num_out=None)  # the arch dict is exactly torchaudio's keyword set


@pytest.mark.parametrize("config,match", [
    (lambda: transformers.Data2VecAudioConfig(), "data2vec-audio"),
    (lambda: transformers.Wav2Vec2ConformerConfig(), "wav2vec2-conformer"),
    (lambda: transformers.HubertConfig(conv_pos_batch_norm=True), "conv_pos_batch_norm"),
    (lambda: transformers.HubertConfig(feat_proj_layer_norm=False), "feat_proj_layer_norm"),
    (lambda: transformers.Wav2Vec2Config(add_adapter=True), "add_adapter"),
    (lambda: transformers.WavLMConfig(add_adapter=True), "add_adapter"),
    (lambda: transformers.Wav2Vec2Config(adapter_attn_dim=16), "adapter_attn_dim"),
    (lambda: transformers.Wav2Vec2Config(hidden_act="relu"), "hidden_act"),
    (lambda: transformers.Wav2Vec2Config(layer_norm_eps=1e-6), "layer_norm_eps"),
])
def test_unsupported_config_raises(config, match):
    with pytest.raises(LowresError, match=match):
        arch_from_hf_config(config())


def test_mismatches_raise(tmp_path):
    arch = tiny_arch("wav2vec2", "group_norm", False, False, 32, 2)
    model, head = build("wav2vec2", arch)
    with pytest.raises(LowresError, match="does not match arch"):
        to_hf_ctc(model, head, "wav2vec2", {**arch, "encoder_num_layers": 3}, len(VOCAB), False)
    with pytest.raises(LowresError, match="CTC head"):
        to_hf_ctc(model, head, "wav2vec2", arch, len(VOCAB) + 1, False)
    with pytest.raises(LowresError, match="family"):
        to_hf_ctc(model, head, "data2vec", arch, len(VOCAB), False)
    with pytest.raises(LowresError, match="unknown keys"):
        hf_config_from_arch("wav2vec2", {**arch, "encoder_num_buckets": 320}, len(VOCAB), False)
    hf = to_hf_ctc(model, head, "wav2vec2", arch, len(VOCAB), False)
    swapped = {**VOCAB, "<pad>": 1, "<unk>": 0}
    with pytest.raises(LowresError, match="<pad>"):
        save_hf_directory(tmp_path, hf, swapped, False)
    with pytest.raises(LowresError, match="normalize_waveform"):
        save_hf_directory(tmp_path, hf, VOCAB, True)


def test_export_writes_without_transformers_progress_bars(tmp_path, capfd):
    """save_hf_directory prints nothing (no "Writing model shards" bar); the command prints its one line."""
    family, *spec = CASES["wav2vec2-base"]
    arch = tiny_arch(family, *spec)
    hf = to_hf_ctc(*build(family, arch), family, arch, len(VOCAB), normalize_waveform=False)
    capfd.readouterr()
    save_hf_directory(tmp_path / "export", hf, VOCAB, normalize_waveform=False)
    err = capfd.readouterr().err
    assert "Writing model shards" not in err and "%|" not in err, err
