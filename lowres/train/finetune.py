"""``lowres finetune``: LoRA (or full) CTC fine-tuning of a backbone on a prepared split.

Run folder (``--out``)::

    config.json        the run's record (lowres/runs.py): resolved configuration, backbone spec, base, text
                       normalisation (written first)
    vocab.json         the prepared vocabulary (a copy: the run is self-contained)
    model.safetensors  the deliverable: trained weights (LoRA + CTC head; + a fresh mask embedding; or, with
                       --head weighted, the layer weights + BiLSTM downstream), best by dev CER
    metrics.jsonl      one JSON object per logged update / evaluation
    train.log          what happened, in words
    learning_curve.png loss and dev WER against updates (written at the end)
    layer_weights.png  (--head weighted) the delivered layer weights (softmax), a bar chart
    summary.json       final figures
    checkpoints/       training state for --resume (optimizer, schedule position, data position, counters)

The objective is lowres/train/tasks/ctc.py; the harness (claiming, resume, runtime, optimizer, frozen
phase, checkpoints, summary) is lowres/train/harness.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lowres import LowresError
from lowres.config import FinetuneConfig


def finetune_config(split: str | None, base: str | None, recipe: str | None = None, sets: tuple[str, ...] = (),
                    flags: dict | None = None) -> FinetuneConfig:
    """The configuration of ``lowres finetune``: defaults ← the split's recipe ← the base's fine-tuning method
    (``method``: auto = :func:`lowres.bases.finetune_method`, none, or a recipe name) ← ``--recipe`` ← ``--set`` ←
    flags. The returned configuration names the method it took (``none`` for the split recipe alone)."""
    from lowres.config import resolve_finetune

    split = split or FinetuneConfig.split
    try:
        given = resolve_finetune(split, recipe, tuple(sets), flags)
        method = given.method
        if method == "auto":
            from lowres.bases import finetune_method

            method = finetune_method(base or "")[0]
        if not method or method == "none":
            return replace(given, method="none")
        return replace(resolve_finetune(split, recipe, tuple(sets), flags, method=method), method=method)
    except ValueError as exc:
        raise LowresError(f"Invalid setting: {exc}") from None


def run_finetune(cfg: FinetuneConfig, out: Path, *, resume: bool = False, overwrite: bool = False,
                 console=None, max_steps_override: int | None = None, resume_train: dict | None = None) -> dict:
    """Fine-tune into the run folder ``out``; returns summary.json's content. ``resume_train``: the resuming
    command line's settings, nested (see lowres.runs.resume_config)."""
    from lowres.train.harness import train
    from lowres.train.tasks.ctc import CTCTask

    return train(CTCTask(cfg), out, resume=resume, overwrite=overwrite, console=console,
                 max_steps_override=max_steps_override, resume_changes=resume_train)
