"""Where weights come from: every ``--base`` (and every run's trained weights) resolves here.

- ``shipped.py``: the self-supervised bases inside the package (``tiny-ssl``: ``NAME.safetensors`` + ``NAME.json``
  in this folder), offline;
- ``bundles.py``: torchaudio's pretrained bundles by name (``xls-r-300m``, ``hubert-base``, ...);
- ``huggingface.py``: local Hugging Face folders (wav2vec 2.0, XLS-R, MMS, HuBERT, WavLM);
- ``resolve.py``: :func:`load_base` over all of these, random initialisations of model/backbone.py's
  architectures, and lowres run folders (their encoders), and :func:`load_run` (a fine-tuned recogniser).

model/ holds the networks only and never imports this package; a new source of weights is a module here.
``scripts/build_base.py`` builds and packs a shipped base.
"""

from lowres.bases.resolve import (
    LoadedRun,
    available_names,
    default_objective,
    encoder_state,
    finetune_method,
    load_base,
    load_encoder,
    load_run,
    locate_base,
    rebuild_base,
)
from lowres.bases.shipped import SUFFIX_INFO, SUFFIX_WEIGHTS, load_shipped, shipped_info, shipped_names

__all__ = ["LoadedRun", "SUFFIX_INFO", "SUFFIX_WEIGHTS", "available_names", "default_objective", "encoder_state",
           "finetune_method", "load_base", "load_encoder", "load_run", "load_shipped", "locate_base", "rebuild_base", "shipped_info",
           "shipped_names"]
