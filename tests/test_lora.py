"""lowres.model.lora on the transformer of a tiny random backbone.

Contract: add_lora puts adapters on the attention and feed-forward linears only (for wav2vec 2.0: q/k/v/out
projections, intermediate and output dense), freezes every base weight and leaves only the adapters
trainable; merge_lora folds the adapters into plain linears whose output equals the adapted model's and
leaves no peft state behind, so a run fine-tuned from a merged run gets its own adapters without peft's
"multiple adapters" warning (#14).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowres.bases import load_base
from lowres.model.lora import add_lora, has_lora, merge_lora

TARGETS = {"q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"}


@pytest.fixture
def transformer() -> nn.Module:
    return load_base("tiny", seed=0).model.encoder.transformer.eval()


def _linears(module: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


def _train_like(module: nn.Module, seed: int = 0) -> None:
    """What training leaves: non-zero A and B matrices (peft starts B at zero, which would make the test trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def test_adapters_only_in_the_target_modules(transformer):
    linears = _linears(transformer)
    targeted = {n for n in linears if n.rsplit(".", 1)[-1] in TARGETS}
    others = set(linears) - targeted
    layers = len(transformer.layers)
    assert len(targeted) == 6 * layers
    count = add_lora(transformer, "wav2vec2", rank=4, alpha=8.0, dropout=0.0)
    assert count == 6 * layers and has_lora(transformer)
    from peft.tuners.lora import LoraLayer

    adapted = {n for n, m in transformer.named_modules() if isinstance(m, LoraLayer)}
    assert adapted == targeted
    for name in others:  # everything else stays a plain linear
        assert not isinstance(transformer.get_submodule(name), LoraLayer), name
    assert not any("lora_" in n for n, _ in transformer.pos_conv_embed.named_parameters())


def test_base_weights_are_frozen_and_adapters_train(transformer):
    add_lora(transformer, "wav2vec2", rank=4, alpha=8.0, dropout=0.0)
    trainable = {n for n, p in transformer.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(not p.requires_grad for n, p in transformer.named_parameters() if "lora_" not in n)
    ranks = {p.shape[0] for n, p in transformer.named_parameters() if "lora_A" in n}
    assert ranks == {4}
    # a backward pass reaches only the adapters
    x = torch.randn(2, 20, 144)
    transformer(x).sum().backward()
    grads = {n for n, p in transformer.named_parameters() if p.grad is not None}
    assert grads and grads <= trainable


def test_fresh_adapters_change_nothing(transformer):
    x = torch.randn(2, 30, 144, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = transformer(x)
        add_lora(transformer, "wav2vec2", rank=4, alpha=8.0, dropout=0.0)
        after = transformer(x)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_merged_output_equals_unmerged(transformer):
    add_lora(transformer, "wav2vec2", rank=8, alpha=16.0, dropout=0.0)
    _train_like(transformer)
    x = torch.randn(3, 40, 144, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        unmerged = transformer(x)
        plain = transformer.layers[0].attention.q_proj.get_base_layer()(x)
        adapted = transformer.layers[0].attention.q_proj(x)
    assert (adapted - plain).abs().max() > 1e-3  # the adapters really change the output
    merged_count = merge_lora(transformer)
    assert merged_count == 6 * len(transformer.layers) and not has_lora(transformer)
    assert all(type(m) is nn.Linear for m in _linears(transformer).values())
    assert not any("lora_" in n for n in transformer.state_dict())
    with torch.no_grad():
        merged = transformer(x)
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)


def test_wavlm_gets_no_qkv_adapters():
    """torchaudio's WavLM attention reads its packed q/k/v weight itself, so only out_proj and the
    feed-forward linears can be adapted."""
    from peft.tuners.lora import LoraLayer

    from lowres.model.backbone import RANDOM_CONFIGS, BackboneSpec, build_model

    arch = dict(RANDOM_CONFIGS["tiny"].arch, encoder_num_buckets=32, encoder_max_distance=128)
    spec = BackboneSpec("wavlm", arch, True, False, "tiny-wavlm")
    transformer = build_model(spec).encoder.transformer.eval()
    count = add_lora(transformer, "wavlm", rank=4, alpha=8.0, dropout=0.0)
    names = {n.rsplit(".", 1)[-1] for n, m in transformer.named_modules() if isinstance(m, LoraLayer)}
    assert names == {"out_proj", "intermediate_dense", "output_dense"}
    assert count == 3 * len(transformer.layers)


def test_adapters_on_a_merged_transformer_start_clean(transformer):
    """#14: every eval of a run fine-tuned from a run printed peft's "Already found a `peft_config` attribute
    ... multiple adapters" warning: merge_lora left the first adapters' peft_config on the transformer."""
    import warnings

    add_lora(transformer, "wav2vec2", rank=4, alpha=8.0, dropout=0.0)
    _train_like(transformer)
    merge_lora(transformer)
    assert not any(hasattr(m, "peft_config") for m in transformer.modules())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        count = add_lora(transformer, "wav2vec2", rank=2, alpha=4.0, dropout=0.0)
    assert [str(w.message) for w in caught] == []
    assert count == 6 * len(transformer.layers)
    ranks = {p.shape[0] for n, p in transformer.named_parameters() if "lora_A" in n}
    assert ranks == {2}  # only the new adapters, one per module
