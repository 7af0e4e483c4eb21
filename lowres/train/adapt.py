"""``lowres adapt``: continued self-supervised pretraining on unlabeled in-language audio, with the wav2vec 2.0
objective (lowres/train/tasks/wav2vec2.py) or HuBERT's (lowres/train/tasks/hubert.py).

Run folder (``--out``, its file names in lowres/runs.py)::

    config.json        the run's record (lowres/runs.py): resolved configuration, backbone spec, base (written first)
    data/unlabeled.jsonl  the indexed, segmented audio when --unlabeled was a folder (see `prepare --unlabeled`)
    model.safetensors  the deliverable: the adapted backbone (LoRA merged), mask embedding and heads
    units/             (hubert) the k-means units of the unlabeled pieces and their centroids
    metrics.jsonl, train.log, learning_curve.png, summary.json, checkpoints/   as for finetune

``lowres finetune --base RUN`` uses the adapted encoder; ``lowres adapt --base RUN`` continues it. The
harness is lowres/train/harness.py.
"""

from __future__ import annotations

from pathlib import Path

from lowres import LowresError
from lowres.config import OBJECTIVES, AdaptConfig

# the settings of HuBERT's units, by the flag that sets each: refused with another objective
_HUBERT_ONLY = {"units.targets": "--targets", "units.clusters": "--clusters", "units.reuse": "--units"}


def saved_objective(out: Path) -> str | None:
    """The objective of the adapt run in ``out`` (runs from before HuBERT: wav2vec2), or None without one."""
    from lowres.runs import is_run, read_run

    return read_run(Path(out)).config.get("objective", "wav2vec2") if is_run(Path(out)) else None


def adapt_objective(objective: str, base: str | None, out: Path, resume: bool) -> str:
    """``--objective``: as given, or for ``auto`` a resumed run's own, else the base's
    (:func:`lowres.bases.default_objective`: HuBERT for HuBERT, WavLM and random-init bases)."""
    if objective not in ("auto", *OBJECTIVES):
        raise LowresError(f"--objective must be auto, {' or '.join(OBJECTIVES)}, not {objective!r}.")
    if objective != "auto":
        return objective
    saved = saved_objective(out) if resume else None
    if saved is not None:
        return saved
    from lowres.bases import default_objective

    return default_objective(base or "")


def adapt_config(objective: str, base: str | None, out: Path, resume: bool, recipe: str | None = None,
                 sets: tuple[str, ...] = (), flags: dict | None = None) -> AdaptConfig:
    """The configuration of ``lowres adapt``: the objective resolved (:func:`adapt_objective`), HuBERT's unit
    settings refused with another objective, then defaults ← recipes ← ``--set`` ← flags
    (:func:`lowres.config.resolve_adapt`)."""
    if not resume and (not base or not (flags or {}).get("unlabeled")):
        raise LowresError("adapt needs --unlabeled (a folder of audio or an unlabeled.jsonl) and --base (a "
                          "backbone name such as xls-r-300m or tiny, a Hugging Face folder or a lowres run folder).")
    from lowres.bases.resolve import is_whisper_base

    resolved = adapt_objective(objective, base, out, resume)
    whisper = is_whisper_base(base)
    if whisper and not resume and not _resolve(recipe, sets, flags, "hubert").hubert.whisper:
        from lowres.train.tasks.hubert import WHISPER_REFUSAL

        raise LowresError(WHISPER_REFUSAL.format(base=base))
    if resolved == "wav2vec2" and whisper:
        raise LowresError(f"--base {base} is Whisper's encoder, which has no codebook for wav2vec 2.0's contrastive "
                          "objective: use --objective hubert (masked prediction of units of its own layers).")
    if resolved != "hubert":
        given = [flag for key, flag in _HUBERT_ONLY.items() if (flags or {}).get(key) is not None]
        if given:
            raise LowresError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --objective hubert "
                              f"only (this run uses {resolved}).")
    return _resolve(recipe, sets, flags, resolved)


def _resolve(recipe: str | None, sets: tuple[str, ...], flags: dict | None, objective: str) -> AdaptConfig:
    from lowres.config import resolve_adapt

    try:
        return resolve_adapt(recipe, tuple(sets), flags, objective=objective)
    except ValueError as exc:
        raise LowresError(f"Invalid setting: {exc}") from None


def run_adapt(cfg: AdaptConfig, out: Path, *, resume: bool = False, overwrite: bool = False, console=None,
              max_steps_override: int | None = None, resume_train: dict | None = None) -> dict:
    """Adapt into the run folder ``out`` with ``cfg.objective`` (a resumed run keeps its own); returns
    summary.json's content."""
    from lowres.train.harness import train
    from lowres.train.tasks.hubert import HubertTask
    from lowres.train.tasks.wav2vec2 import Wav2Vec2Task

    objective = (saved_objective(out) if resume else None) or cfg.objective
    task = {"wav2vec2": Wav2Vec2Task, "hubert": HubertTask}[objective]
    return train(task(cfg), out, resume=resume, overwrite=overwrite, console=console,
                 max_steps_override=max_steps_override, resume_changes=resume_train)
