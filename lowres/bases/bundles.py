"""torchaudio's pretrained wav2vec 2.0 / HuBERT / WavLM bundles, by the names ``--base`` takes (``xls-r-300m``).

A registry as data: name → (``torchaudio.pipelines`` attribute, family). torchaudio downloads a bundle's weights
once into the torch hub cache, which needs the network.
"""

from __future__ import annotations

from lowres import LowresError
from lowres.model.backbone import BackboneSpec, LoadedBackbone, fingerprint

# name → (torchaudio.pipelines attribute, family)
NAMED_BUNDLES: dict[str, tuple[str, str]] = {
    "wav2vec2-base": ("WAV2VEC2_BASE", "wav2vec2"),
    "wav2vec2-large": ("WAV2VEC2_LARGE", "wav2vec2"),
    "wav2vec2-large-lv60k": ("WAV2VEC2_LARGE_LV60K", "wav2vec2"),
    "xlsr-53": ("WAV2VEC2_XLSR53", "wav2vec2"),
    "xls-r-300m": ("WAV2VEC2_XLSR_300M", "wav2vec2"),
    "xls-r-1b": ("WAV2VEC2_XLSR_1B", "wav2vec2"),
    "xls-r-2b": ("WAV2VEC2_XLSR_2B", "wav2vec2"),
    "hubert-base": ("HUBERT_BASE", "hubert"),
    "hubert-large": ("HUBERT_LARGE", "hubert"),
    "hubert-xlarge": ("HUBERT_XLARGE", "hubert"),
    "wavlm-base": ("WAVLM_BASE", "wavlm"),
    "wavlm-base-plus": ("WAVLM_BASE_PLUS", "wavlm"),
    "wavlm-large": ("WAVLM_LARGE", "wavlm"),
}


def load_bundle(name: str) -> LoadedBackbone:
    """A torchaudio bundle by its lowres name (downloaded once into the torch hub cache)."""
    import torchaudio.pipelines as pipelines

    attr, family = NAMED_BUNDLES[name]
    bundle = getattr(pipelines, attr, None)
    if bundle is None:
        raise LowresError(f"This torchaudio has no bundle {attr} for --base {name}.")
    # torchaudio keeps a bundle's architecture and normalisation in these two attributes
    # (pinned by tests/test_backbone.py::test_bundle_registry_reads_torchaudio_parameters).
    arch = {k: v for k, v in bundle._params.items() if k != "aux_num_out"}
    spec = BackboneSpec(family, arch, bool(bundle._normalize_waveform), True, name)
    try:
        model = bundle.get_model()
    except Exception as exc:  # URLError, HTTPError, OSError, RuntimeError from torch.hub
        raise LowresError(
            f"Could not load the torchaudio bundle {name} ({attr}): {type(exc).__name__}: {exc}. Loading a named "
            "bundle downloads its weights once into the torch hub cache, which needs the network. Offline, pass a "
            "local checkpoint instead: --base /path/to/hf-model-folder (a Hugging Face folder such as a download "
            "of facebook/wav2vec2-base or facebook/wav2vec2-xls-r-300m, holding config.json and the weights), or "
            "copy the bundle file into ~/.cache/torch/hub/checkpoints/ on this machine."
        ) from None
    return LoadedBackbone(model, spec, fingerprint=fingerprint(model), source=f"torchaudio bundle {attr}")
