"""Conversion between lowres's torchaudio models and Hugging Face ``*ForCTC`` directories.

A backbone is described by ``family`` ("wav2vec2" | "hubert" | "wavlm") and ``arch``, the keyword
arguments of ``torchaudio.models.wav2vec2_model`` (wav2vec2, hubert) or ``wavlm_model`` (wavlm) without
``aux_num_out``. The CTC head is a separate ``nn.Linear(encoder_embed_dim, vocab_size)`` whose id 0 is the
blank, written ``<pad>`` in vocab.json because Hugging Face's ``Wav2Vec2CTCTokenizer`` uses its pad token
as the blank.

torchaudio names follow the Hugging Face ones closely (both descend from fairseq), so the mapping is a
prefix rename plus two real changes: WavLM's packed ``nn.MultiheadAttention`` in-projection is split back
into q/k/v, and the weight-normed positional convolution is written in whichever naming the target uses
(``parametrizations.weight.original0/1`` or the older ``weight_g/weight_v``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from torch import Tensor, nn

from lowres import LowresError
from lowres.audiotime import SAMPLE_RATE

BLANK_TOKEN = "<pad>"  # id 0: the CTC blank; HF's tokenizer drops its pad token when decoding
UNK_TOKEN = "<unk>"  # id 1
WORD_DELIMITER = "|"  # id 2; decoded as a space

# torchaudio's importer warns "lm_head is not imported" for every model that is not a *ForCTC
_TORCHAUDIO_IMPORT_LOGGER = "torchaudio.models.wav2vec2.utils.import_huggingface"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' (and torchaudio's importer's) chatter off inside the block: the "Loading weights" and
    "Writing model shards" bars, the LOAD REPORT table, the "lm_head is not imported" warning. They read
    like errors to a user; the caller says what matters in one line. Errors still show; the previous
    settings come back afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    importer = logging.getLogger(_TORCHAUDIO_IMPORT_LOGGER)
    level = importer.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    importer.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        importer.setLevel(level)
_LAYER_NORM_EPS = 1e-5  # torchaudio's LayerNorm/GroupNorm use PyTorch's default eps


@dataclass(frozen=True)
class _Family:
    model_type: str  # HF config.model_type
    config_class: str  # transformers config class name
    ctc_class: str  # transformers *ForCTC class name
    prefix: str  # attribute of the *ForCTC model that holds the backbone


_FAMILIES: dict[str, _Family] = {
    "wav2vec2": _Family("wav2vec2", "Wav2Vec2Config", "Wav2Vec2ForCTC", "wav2vec2"),
    "hubert": _Family("hubert", "HubertConfig", "HubertForCTC", "hubert"),
    "wavlm": _Family("wavlm", "WavLMConfig", "WavLMForCTC", "wavlm"),
}

_ARCH_KEYS = (
    "extractor_mode",
    "extractor_conv_layer_config",
    "extractor_conv_bias",
    "encoder_embed_dim",
    "encoder_projection_dropout",
    "encoder_pos_conv_kernel",
    "encoder_pos_conv_groups",
    "encoder_num_layers",
    "encoder_num_heads",
    "encoder_attention_dropout",
    "encoder_ff_interm_features",
    "encoder_ff_interm_dropout",
    "encoder_dropout",
    "encoder_layer_norm_first",
    "encoder_layer_drop",
)
_WAVLM_KEYS = ("encoder_num_buckets", "encoder_max_distance")

# torchaudio's default conv feature encoder (used when extractor_conv_layer_config is None)
_DEFAULT_CONV = [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2

# HF config fields that torchaudio's Wav2Vec2Model cannot represent: (attribute, the only value it can
# take, why). An attribute the config does not have is fine (not every family has every field).
_REQUIRED_VALUES: tuple[tuple[str, object, str], ...] = (
    ("feat_extract_activation", "gelu", "torchaudio's conv feature encoder uses GELU"),
    ("hidden_act", "gelu", "torchaudio's feed-forward blocks use GELU"),
    ("add_adapter", False, "the output adapter (add_adapter=True) has no torchaudio counterpart"),
    ("adapter_attn_dim", None, "MMS attention adapters (adapter_attn_dim) have no torchaudio counterpart"),
    ("conv_pos_batch_norm", False, "HuBERT's batch-normed positional convolution has no torchaudio counterpart"),
    ("feat_proj_layer_norm", True, "torchaudio always applies a LayerNorm before the feature projection"),
    ("position_embeddings_type", None, "rotary/relative (conformer) position embeddings are not supported"),
)


def _family(family: str) -> _Family:
    if family not in _FAMILIES:
        raise LowresError(f"unknown backbone family {family!r}; expected one of {sorted(_FAMILIES)}")
    return _FAMILIES[family]


def arch_from_hf_config(config) -> tuple[str, dict]:
    """Family and torchaudio ``arch`` dict of a transformers Wav2Vec2/Hubert/WavLM config.

    Raises ``LowresError`` for other model types (data2vec-audio, wav2vec2-conformer, ...) and for
    configuration features torchaudio cannot represent exactly (adapters, HuBERT's batch-normed
    positional convolution, non-GELU activations, a LayerNorm eps other than 1e-5, ...).
    """
    model_type = getattr(config, "model_type", None)
    by_type = {f.model_type: name for name, f in _FAMILIES.items()}
    if model_type not in by_type:
        raise LowresError(
            f"Hugging Face model type {model_type!r} is not supported; lowres converts "
            f"{sorted(by_type)} (torchaudio Wav2Vec2Model architectures) only"
        )
    family = by_type[model_type]
    for attr, allowed, why in _REQUIRED_VALUES:
        if hasattr(config, attr) and getattr(config, attr) != allowed:
            raise LowresError(f"{model_type} config has {attr}={getattr(config, attr)!r}: {why}")
    if config.feat_extract_norm not in ("group", "layer"):
        raise LowresError(f"{model_type} config has feat_extract_norm={config.feat_extract_norm!r}; "
                          "expected 'group' or 'layer'")
    if abs(float(config.layer_norm_eps) - _LAYER_NORM_EPS) > 1e-12:
        raise LowresError(f"{model_type} config has layer_norm_eps={config.layer_norm_eps}; torchaudio "
                          f"uses {_LAYER_NORM_EPS}")
    dims, kernels, strides = list(config.conv_dim), list(config.conv_kernel), list(config.conv_stride)
    if not len(dims) == len(kernels) == len(strides) > 0:
        raise LowresError(f"{model_type} config has conv_dim/conv_kernel/conv_stride of different lengths "
                          f"({len(dims)}, {len(kernels)}, {len(strides)})")
    arch = {
        "extractor_mode": f"{config.feat_extract_norm}_norm",
        "extractor_conv_layer_config": [[int(d), int(k), int(s)] for d, k, s in zip(dims, kernels, strides, strict=True)],
        "extractor_conv_bias": bool(config.conv_bias),
        "encoder_embed_dim": int(config.hidden_size),
        "encoder_projection_dropout": float(config.feat_proj_dropout),
        "encoder_pos_conv_kernel": int(config.num_conv_pos_embeddings),
        "encoder_pos_conv_groups": int(config.num_conv_pos_embedding_groups),
        "encoder_num_layers": int(config.num_hidden_layers),
        "encoder_num_heads": int(config.num_attention_heads),
        "encoder_attention_dropout": float(config.attention_dropout),
        "encoder_ff_interm_features": int(config.intermediate_size),
        "encoder_ff_interm_dropout": float(config.activation_dropout),
        "encoder_dropout": float(config.hidden_dropout),
        "encoder_layer_norm_first": bool(config.do_stable_layer_norm),
        "encoder_layer_drop": float(config.layerdrop),
    }
    if family == "wavlm":
        arch["encoder_num_buckets"] = int(config.num_buckets)
        arch["encoder_max_distance"] = int(config.max_bucket_distance)
    return family, arch


def _check_arch(family: str, arch: Mapping) -> None:
    expected = set(_ARCH_KEYS) | (set(_WAVLM_KEYS) if family == "wavlm" else set())
    missing, unknown = expected - set(arch), set(arch) - expected
    if missing or unknown:
        raise LowresError(f"arch for family {family!r} is missing {sorted(missing)} / has unknown keys "
                          f"{sorted(unknown)}")
    if arch["extractor_mode"] not in ("group_norm", "layer_norm"):
        raise LowresError(f"arch extractor_mode {arch['extractor_mode']!r}: expected 'group_norm' or 'layer_norm'")


def hf_config_from_arch(family: str, arch: Mapping, vocab_size: int, normalize_waveform: bool):
    """The transformers config of the ``*ForCTC`` model matching ``family`` + ``arch`` + a CTC head of
    ``vocab_size`` outputs (blank = pad = id 0). SpecAugment settings keep Hugging Face's defaults.

    ``normalize_waveform`` is recorded as the extra attribute ``lowres_normalize_waveform`` (HF keeps the
    setting in the feature extractor; ``save_hf_directory`` checks the two agree).
    """
    fam = _family(family)
    _check_arch(family, arch)
    if vocab_size < 3:
        raise LowresError(f"vocab_size {vocab_size} is too small: ids 0-2 are {BLANK_TOKEN}, {UNK_TOKEN}, "
                          f"{WORD_DELIMITER}")
    conv = arch["extractor_conv_layer_config"]
    conv = _DEFAULT_CONV if conv is None else [[int(v) for v in layer] for layer in conv]
    kwargs = dict(
        vocab_size=int(vocab_size),
        pad_token_id=0,
        # ids 1 and 2 are <unk> and "|" here, not HF's default <s>/</s>
        bos_token_id=None,
        eos_token_id=None,
        ctc_loss_reduction="mean",
        ctc_zero_infinity=True,
        feat_extract_norm=arch["extractor_mode"].removesuffix("_norm"),
        feat_extract_activation="gelu",
        conv_dim=[c[0] for c in conv],
        conv_kernel=[c[1] for c in conv],
        conv_stride=[c[2] for c in conv],
        conv_bias=bool(arch["extractor_conv_bias"]),
        hidden_size=int(arch["encoder_embed_dim"]),
        num_hidden_layers=int(arch["encoder_num_layers"]),
        num_attention_heads=int(arch["encoder_num_heads"]),
        intermediate_size=int(arch["encoder_ff_interm_features"]),
        hidden_act="gelu",
        num_conv_pos_embeddings=int(arch["encoder_pos_conv_kernel"]),
        num_conv_pos_embedding_groups=int(arch["encoder_pos_conv_groups"]),
        do_stable_layer_norm=bool(arch["encoder_layer_norm_first"]),
        layer_norm_eps=_LAYER_NORM_EPS,
        feat_proj_dropout=float(arch["encoder_projection_dropout"]),
        attention_dropout=float(arch["encoder_attention_dropout"]),
        activation_dropout=float(arch["encoder_ff_interm_dropout"]),
        hidden_dropout=float(arch["encoder_dropout"]),
        layerdrop=float(arch["encoder_layer_drop"]),
        architectures=[fam.ctc_class],
        lowres_normalize_waveform=bool(normalize_waveform),
    )
    if family == "hubert":
        kwargs.update(feat_proj_layer_norm=True, conv_pos_batch_norm=False)
    if family == "wavlm":
        kwargs.update(num_buckets=int(arch["encoder_num_buckets"]),
                      max_bucket_distance=int(arch["encoder_max_distance"]))
    return getattr(transformers, fam.config_class)(**kwargs)


# --- state-dict mapping -------------------------------------------------------------------------------

_WN_G = ("parametrizations.weight.original0", "weight_g")  # weight-norm magnitude, new / old naming
_WN_V = ("parametrizations.weight.original1", "weight_v")  # weight-norm direction
_POS_CONV = "encoder.pos_conv_embed.conv."  # HF name, relative to the backbone prefix


def _hf_name(ta_key: str) -> str | None:
    """HF name (relative to the backbone prefix) of a torchaudio ``Wav2Vec2Model`` key; None if unknown."""
    for ta_prefix, hf_prefix in (("feature_extractor.", "feature_extractor."),
                                 ("encoder.feature_projection.", "feature_projection."),
                                 ("encoder.transformer.", "encoder.")):
        if ta_key.startswith(ta_prefix):
            return hf_prefix + ta_key.removeprefix(ta_prefix)
    return None


def _backbone_state(ta_state: Mapping[str, Tensor], family: str, num_layers: int) -> dict[str, Tensor]:
    """torchaudio backbone state → HF names (relative to the backbone prefix). The positional conv weight
    comes out as ``<pos conv>.g`` / ``.v`` / ``.weight`` (naming fixed later against the target)."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in ta_state.items():
        name = _hf_name(key)
        if name is None:
            unknown.append(key)
            continue
        if name.startswith(_POS_CONV):
            leaf = name.removeprefix(_POS_CONV)
            leaf = "g" if leaf in _WN_G else "v" if leaf in _WN_V else leaf
            name = _POS_CONV + leaf
        out[name] = value
    if unknown:
        raise LowresError(
            f"the torchaudio model has parameters with no Hugging Face counterpart: {unknown[:5]}"
            + (" ..." if len(unknown) > 5 else "")
            + " (merge LoRA adapters and pass the CTC head separately before exporting)"
        )
    if family == "wavlm":
        for i in range(num_layers):
            # torchaudio keeps WavLM attention in nn.MultiheadAttention: packed [q; k; v] in-projection
            layer = f"encoder.layers.{i}.attention."
            for kind in ("weight", "bias"):
                packed = out.pop(f"{layer}attention.in_proj_{kind}", None)
                if packed is None:
                    raise LowresError(f"WavLM layer {i} has no packed attention in-projection {kind}")
                for proj, part in zip(("q_proj", "k_proj", "v_proj"), packed.chunk(3, dim=0), strict=True):
                    out[f"{layer}{proj}.{kind}"] = part
                out[f"{layer}out_proj.{kind}"] = out.pop(f"{layer}attention.out_proj.{kind}")
    return out


def _place_pos_conv(state: dict[str, Tensor], target_keys: set[str], prefix: str) -> None:
    """Rename the positional conv's weight-norm pieces to the target's naming (in place)."""
    base = f"{prefix}.{_POS_CONV}"
    g, v, w = (state.pop(base + leaf, None) for leaf in ("g", "v", "weight"))
    if w is not None:  # weight norm removed on the torchaudio side: split the plain weight (dim=2)
        g, v = w.norm(dim=(0, 1), keepdim=True), w
    if g is None or v is None:
        raise LowresError("the torchaudio model has no positional convolution weight")
    for g_name, v_name in zip(_WN_G, _WN_V, strict=True):
        if base + g_name in target_keys:
            state[base + g_name], state[base + v_name] = g, v
            return
    # target without weight norm: materialise w = g * v / ||v|| (norm over all dims but 2)
    state[base + "weight"] = g * v / v.norm(dim=(0, 1), keepdim=True)


def to_hf_ctc(model: nn.Module, head: nn.Linear | None, family: str, arch: Mapping, vocab_size: int,
              normalize_waveform: bool, mask_embedding: Tensor | None = None) -> nn.Module:
    """Hugging Face ``Wav2Vec2ForCTC`` / ``HubertForCTC`` / ``WavLMForCTC`` (float32, CPU, eval mode)
    with the weights of the torchaudio ``model`` (built from ``family``/``arch``, ``aux_num_out=None``)
    and the CTC ``head`` (``nn.Linear(encoder_embed_dim, vocab_size)``; may be None when the model
    carries its head as ``model.aux``).

    ``mask_embedding`` (shape (encoder_embed_dim,)) becomes ``masked_spec_embed``; without one the
    embedding is drawn from U(0, 1) with a fixed seed (what HF itself does for a missing one, made
    deterministic). It only matters if the exported model is fine-tuned further with SpecAugment.
    """
    fam = _family(family)
    _check_arch(family, arch)
    ta_state = dict(model.state_dict())
    aux = {k.removeprefix("aux."): ta_state.pop(k) for k in [k for k in ta_state if k.startswith("aux.")]}
    if head is not None and aux:
        raise LowresError("the torchaudio model has its own aux head and a separate head was given; pass one")
    head_state = dict(head.state_dict()) if head is not None else aux
    if set(head_state) != {"weight", "bias"}:
        raise LowresError(f"the CTC head must be an nn.Linear with bias; got parameters {sorted(head_state)}")
    embed_dim = int(arch["encoder_embed_dim"])
    if tuple(head_state["weight"].shape) != (vocab_size, embed_dim):
        raise LowresError(f"CTC head weight has shape {tuple(head_state['weight'].shape)}; expected "
                          f"({vocab_size}, {embed_dim}) for vocab_size {vocab_size}")

    config = hf_config_from_arch(family, arch, vocab_size, normalize_waveform)
    hf_model = getattr(transformers, fam.ctc_class)(config)
    target = hf_model.state_dict()

    state = {f"{fam.prefix}.{k}": v for k, v in
             _backbone_state(ta_state, family, int(arch["encoder_num_layers"])).items()}
    _place_pos_conv(state, set(target), fam.prefix)
    state["lm_head.weight"], state["lm_head.bias"] = head_state["weight"], head_state["bias"]
    if mask_embedding is None:
        gen = torch.Generator().manual_seed(0)
        mask_embedding = torch.rand(embed_dim, generator=gen)
    state[f"{fam.prefix}.masked_spec_embed"] = mask_embedding

    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    if missing or unexpected:
        raise LowresError(f"torchaudio model does not match arch: Hugging Face parameters left unset "
                          f"{missing[:5]}, unexpected {unexpected[:5]}")
    bad = [(k, tuple(state[k].shape), tuple(t.shape)) for k, t in target.items() if state[k].shape != t.shape]
    if bad:
        raise LowresError(f"shape mismatch between the torchaudio model and arch (name, got, expected): {bad[:5]}")
    hf_model.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in state.items()}, strict=True)
    return hf_model.eval()


# --- Hugging Face directory ---------------------------------------------------------------------------

def _check_vocab(vocab: Mapping[str, int], vocab_size: int) -> None:
    ids = sorted(vocab.values())
    if ids != list(range(len(vocab))):
        raise LowresError("vocab ids must be 0..N-1 with no gaps or repeats")
    if len(vocab) != vocab_size:
        raise LowresError(f"vocab has {len(vocab)} tokens but the model's head has {vocab_size} outputs")
    for token, want in ((BLANK_TOKEN, 0), (UNK_TOKEN, 1), (WORD_DELIMITER, 2)):
        if vocab.get(token) != want:
            raise LowresError(f"vocab must map {token!r} to id {want} (got {vocab.get(token)!r})")


def save_hf_directory(out_dir: str | Path, hf_model: nn.Module, vocab: Mapping[str, int],
                      normalize_waveform: bool) -> Path:
    """Write ``hf_model`` (safetensors + config.json) and a ``Wav2Vec2Processor`` (vocab.json, tokenizer
    and feature-extractor configs) into ``out_dir``; returns it. The directory loads offline with
    ``AutoModelForCTC.from_pretrained`` and ``Wav2Vec2Processor.from_pretrained``.
    """
    config = hf_model.config
    _check_vocab(vocab, int(config.vocab_size))
    recorded = getattr(config, "lowres_normalize_waveform", None)
    if recorded is not None and bool(recorded) != bool(normalize_waveform):
        raise LowresError(f"normalize_waveform={normalize_waveform} but the model was converted with "
                          f"normalize_waveform={recorded}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # transformers' own output ("Writing model shards" bars) off: the command says where it wrote
    with quiet_transformers():
        hf_model.save_pretrained(out)

        vocab_path = out / "vocab.json"
        ordered = dict(sorted(vocab.items(), key=lambda item: item[1]))
        vocab_path.write_text(json.dumps(ordered, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        tokenizer = transformers.Wav2Vec2CTCTokenizer(
            str(vocab_path),
            unk_token=UNK_TOKEN,
            pad_token=BLANK_TOKEN,
            word_delimiter_token=WORD_DELIMITER,
            bos_token=None,  # not in the vocabulary; HF would otherwise append <s>, </s> as extra ids
            eos_token=None,
            do_lower_case=False,
            clean_up_tokenization_spaces=False,  # keep decoded text exactly as lowres decodes it ("a 's")
        )
        feature_extractor = transformers.Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=SAMPLE_RATE,
            padding_value=0.0,
            do_normalize=bool(normalize_waveform),
            # HF's advice: group-norm feature encoders were trained without attention masks (zero padding
            # changes their output anyway); layer-norm ones should get a mask
            return_attention_mask=config.feat_extract_norm == "layer",
        )
        transformers.Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)
        # transformers 5 nests the feature-extractor settings in processor_config.json; 4.x reads them from
        # preprocessor_config.json, so write that too for readers on older versions
        feature_extractor.save_pretrained(out)
    return out
