"""``lowres adapt``: continued self-supervised pretraining on unlabeled in-language audio, with the wav2vec 2.0
objective (lowres/train/tasks/wav2vec2.py) or HuBERT's (lowres/train/tasks/hubert.py).

Run folder (``--out``)::

    config.json        the run's record (lowres/runs.py): resolved configuration, backbone spec, base (written first)
    data/unlabeled.jsonl  the indexed, segmented audio when --unlabeled was a folder (see `prepare --unlabeled`)
    model.safetensors  the deliverable: the adapted backbone (LoRA merged), mask embedding and heads
    metrics.jsonl, train.log, learning_curve.png, summary.json, checkpoints/   as for finetune

``lowres finetune --base RUN`` uses the adapted encoder; ``lowres adapt --base RUN`` continues it. The
harness is lowres/train/harness.py.
"""

from __future__ import annotations

from pathlib import Path

from lowres.config import AdaptConfig


def run_adapt(cfg: AdaptConfig, out: Path, *, resume: bool = False, overwrite: bool = False, console=None,
              max_steps_override: int | None = None, resume_train: dict | None = None) -> dict:
    """Adapt into the run folder ``out`` with ``cfg.objective`` (a resumed run keeps its own); returns
    summary.json's content."""
    from lowres.train.harness import train
    from lowres.train.tasks.hubert import HubertTask
    from lowres.train.tasks.wav2vec2 import Wav2Vec2Task

    objective = cfg.objective
    if resume and (Path(out) / "config.json").is_file():
        from lowres.runs import read_run

        objective = read_run(Path(out)).config.get("objective", "wav2vec2")  # runs before HuBERT: wav2vec2
    task = {"wav2vec2": Wav2Vec2Task, "hubert": HubertTask}[objective]
    return train(task(cfg), out, resume=resume, overwrite=overwrite, console=console,
                 max_steps_override=max_steps_override, resume_changes=resume_train)
