"""Local Hugging Face checkpoints (``--base /path/to/wav2vec2-folder``): wav2vec 2.0 (also XLS-R and MMS),
HuBERT and WavLM, loaded with transformers and converted to torchaudio's model; a ``*ForPreTraining`` folder
brings its pretraining heads (quantizer, projections) along.
"""

from __future__ import annotations

import json
from pathlib import Path

from lowres import LowresError
from lowres.model.backbone import FAMILIES, BackboneSpec, LoadedBackbone, fingerprint


def load_huggingface(path: Path, config: dict) -> LoadedBackbone:
    """A local Hugging Face folder (wav2vec2 / XLS-R / MMS, HuBERT, WavLM) whose ``config.json`` is ``config``."""
    model_type = config.get("model_type", "")
    if model_type not in FAMILIES:
        raise LowresError(f"{path}: model_type {model_type!r} is not supported; lowres reads wav2vec2 (also "
                          "XLS-R and MMS), hubert and wavlm checkpoints.")
    import transformers
    from torchaudio.models.wav2vec2.utils import import_huggingface_model

    from lowres.model.hf_convert import arch_from_hf_config, quiet_transformers

    # A *ForPreTraining checkpoint is loaded once, with its own class: the backbone and the pretraining heads
    # (quantizer, project_q, project_hid) from one load. Anything else loads as the bare backbone.
    archs = config.get("architectures") or []
    pretraining = next((getattr(transformers, a, None) for a in archs if a.endswith("ForPreTraining")), None)
    cls = pretraining or transformers.AutoModel
    try:
        with quiet_transformers():  # its LOAD REPORT and bars read like errors; what matters is the note below
            loaded, info = cls.from_pretrained(str(path), output_loading_info=True)
            hf = loaded.base_model  # the Wav2Vec2Model / HubertModel / WavLMModel inside (itself for AutoModel)
            model = import_huggingface_model(hf)
    except Exception as exc:
        raise LowresError(f"transformers could not load {path}: {type(exc).__name__}: {exc}") from None
    family, arch = arch_from_hf_config(hf.config)
    normalize = config.get("feat_extract_norm", "group") == "layer"
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        normalize = bool(json.loads(pre.read_text(encoding="utf-8")).get("do_normalize", normalize))
    mask = getattr(hf, "masked_spec_embed", None)
    heads = {}
    if pretraining is not None:
        keep = ("quantizer.", "project_q.", "project_hid.")
        heads = {k: v.detach().clone() for k, v in loaded.state_dict().items() if k.startswith(keep)}
    spec = BackboneSpec(family, arch, normalize, True, str(path.resolve()))
    source = f"Hugging Face {type(loaded).__name__} from {path}{_loading_note(info)}"
    return LoadedBackbone(model, spec, mask.detach().clone() if mask is not None else None, heads,
                          fingerprint(model), source=source)


def _loading_note(info: dict, shown: int = 4) -> str:
    """`` (left out lm_head.bias, lm_head.weight: not part of the backbone)`` for what transformers' loading
    info lists as unexpected (weights of heads lowres does not use) or missing (freshly initialised)."""
    parts = []
    for key, what in (("unexpected_keys", "left out {}: not part of the backbone"),
                      ("missing_keys", "not in the checkpoint, initialised afresh: {}")):
        names = sorted(info.get(key) or ())
        if names:
            more = f" and {len(names) - shown} more" if len(names) > shown else ""
            parts.append(what.format(", ".join(names[:shown]) + more))
    return f" ({'; '.join(parts)})" if parts else ""
