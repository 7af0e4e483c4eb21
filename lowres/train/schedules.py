"""Learning-rate schedules as pure functions of the update number: lr(step) / peak."""

from __future__ import annotations

import math


def tri_stage(step: int, max_steps: int, warmup: float = 0.1, hold: float = 0.4, decay: float = 0.5,
              init_scale: float = 0.01, final_scale: float = 0.05) -> float:
    """fairseq's tri-stage schedule as a multiplier of the peak lr.

    Linear warm-up from ``init_scale`` to 1 over the first ``warmup`` share of the updates, hold at 1,
    then exponential decay to ``final_scale`` over the last ``decay`` share (and stay there).
    """
    warm_steps = int(round(warmup * max_steps))
    hold_steps = int(round(hold * max_steps))
    decay_steps = max(max_steps - warm_steps - hold_steps, 0) if decay > 0 else 0
    if step < warm_steps:
        return init_scale + (1.0 - init_scale) * step / warm_steps
    step -= warm_steps
    if step < hold_steps:
        return 1.0
    step -= hold_steps
    if decay_steps and step < decay_steps:
        return math.exp(math.log(final_scale) * step / decay_steps)
    return final_scale


def warmup_decay(step: int, max_steps: int, warmup: float = 0.1, final_scale: float = 0.0, power: float = 1.0
                 ) -> float:
    """Linear warm-up from 0, then polynomial decay to ``final_scale`` (power 1 = linear), as in wav2vec 2.0
    pretraining."""
    warm_steps = max(int(round(warmup * max_steps)), 0)
    if step < warm_steps:
        return (step + 1) / warm_steps
    remaining = max(max_steps - warm_steps, 1)
    progress = min(max(step - warm_steps, 0) / remaining, 1.0)
    return final_scale + (1.0 - final_scale) * (1.0 - progress) ** power
