"""LoRA through peft on the transformer's attention and feed-forward linears.

Adapters are injected into the transformer module only (``peft.inject_adapter_in_model``); the CTC head
and the mask embedding are ordinary parameters of lowres's model, saved by lowres next to the adapter
weights. That sidesteps the "adapter plus a new head" saving problems of wrapping the whole model.
"""

from __future__ import annotations

from torch import nn


def lora_targets(family: str) -> tuple[str, ...]:
    """Module names LoRA adapts: attention and feed-forward linears. torchaudio's WavLM attention reads its
    packed q/k/v weight directly (no module call peft could wrap), so WavLM gets its output projection and
    feed-forward linears only."""
    if family == "wavlm":
        return ("out_proj", "intermediate_dense", "output_dense")
    if family == "whisper":
        return ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    return ("q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense")


def add_lora(transformer: nn.Module, family: str, rank: int, alpha: float, dropout: float) -> int:
    """Inject LoRA adapters; returns the number of adapted modules. Base weights are frozen by peft."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_targets(family)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=r".*\.(" + "|".join(targets) + r")$", bias="none")
    inject_adapter_in_model(config, transformer)
    return sum(1 for m in transformer.modules() if _is_lora_layer(m))


def _is_lora_layer(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def has_lora(module: nn.Module) -> bool:
    return any(_is_lora_layer(m) for m in module.modules())


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter into its base weight and put the plain layer back. Returns how many were merged.

    The ``peft_config`` that ``inject_adapter_in_model`` set is removed too: with no adapter left it describes
    nothing, and a later :func:`add_lora` (a run fine-tuned from a run) would find it and warn of "multiple
    adapters"."""
    merged = 0
    for name, child in list(module.named_modules()):
        if not _is_lora_layer(child):
            continue
        child.merge()
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, child.get_base_layer())
        merged += 1
    for m in module.modules():
        if "peft_config" in vars(m):  # an instance attribute, never a parameter or a submodule
            del m.peft_config
    return merged
