"""The generic training loop shared by ``adapt`` and ``finetune``.

One update = ``accumulate`` micro-batches → gradient norm (clipped) → a non-finite guard (the update is
skipped and counted) → the lr for this update → optimizer step. Every micro-batch seeds torch's generator
and a masking generator from (seed, update, its index in the global batch), so masks, dropout and
layerdrop depend on those only: a run resumed from a checkpoint takes exactly the decisions an
uninterrupted run takes, and N torchrun processes take the decisions one process takes with N times the
accumulation.

Under torchrun (DistributedDataParallel) every rank runs this loop on its share of the batches; the data
position is kept in global batch numbers (so a run resumes with another world size), counters are summed
over ranks, and only rank 0 logs, evaluates, shows progress and writes checkpoints.

Hooks give the task its say: ``compute`` runs forward/backward of the micro-batches, ``evaluate`` scores
the dev set, ``deliver`` writes the run's deliverable, ``checkpoint_weights`` names what a checkpoint holds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lowres.fsutil import atomic_write_lines
from lowres.progress import say
from lowres.runs import RUN_LOG, RUN_METRICS
from lowres.runtime import all_reduce_sum, is_main_process, step_seed, world_size
from lowres.train.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class LoopState:
    step: int = 0  # updates done
    position: tuple[int, int] = (0, 0)  # (epoch, batch) of the next micro-batch
    skipped_nonfinite: int = 0
    unreadable_clips: int = 0
    best_metric: float | None = None  # lower is better (dev WER, or dev loss)
    best_step: int = -1
    audio_seconds: float = 0.0  # trained on so far
    world_size: int = 1  # torchrun processes that trained it
    elapsed_s: float = 0.0  # wall time of the loop up to the last checkpoint (a resumed run's clock goes on from it)
    window: dict = field(default_factory=dict)  # sums since the last logged row (a resumed run logs the same rows)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["position"] = list(self.position)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LoopState:
        d = dict(d)
        d["position"] = tuple(d.get("position", (0, 0)))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Micro:
    """One micro-batch of an update with its own random stream: call :meth:`start` right before its forward."""

    batch: object  # data.batching.Batch
    gen: torch.Generator  # masks and layerdrop
    torch_seed: int  # dropout (torch's global generator)
    last: bool  # the update's last micro-batch on this rank (DDP synchronises gradients after it)

    def start(self):
        """(batch, loss weight) to run forward and backward on, or None to skip this micro-batch (every clip in
        it failed to decode). Under torchrun such a batch is replaced by a stand-in weighted 0 instead: every
        rank must take part in DDP's gradient all-reduce."""
        torch.manual_seed(self.torch_seed)
        if self.batch.size:
            return self.batch, 1.0
        if world_size() == 1:
            return None
        from lowres.data.batching import placeholder_batch

        return placeholder_batch(), 0.0


@dataclass
class StepOutput:
    loss: float  # the value to log (already normalised)
    audio_seconds: float
    stats: dict = field(default_factory=dict)


@dataclass
class Hooks:
    compute: Callable[[list[Micro], int], StepOutput]
    trainable: Callable[[], list[torch.nn.Parameter]]
    checkpoint_weights: Callable[[], dict]
    load_weights: Callable[[dict], None]
    evaluate: Callable[[int], dict] | None = None  # → {"metric": lower-is-better value, ...}
    deliver: Callable[[str], None] | None = None  # called with "best" or "final"
    on_update: Callable[[int], None] | None = None  # before each update (e.g. phase changes)
    check: Callable[[int, dict], None] | None = None  # after logging; may raise to stop the run


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per line) plus a plain ``train.log``."""

    def __init__(self, run: Path, console=None):
        self.path = Path(run) / RUN_METRICS
        self.log_path = Path(run) / RUN_LOG
        self.console = console
        self.enabled = is_main_process()  # under torchrun only rank 0 writes

    def truncate_after(self, step: int) -> None:
        """On resume, forget what was logged after the checkpoint (it will be logged again, identically)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
        atomic_write_lines(self.path, keep)

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def say(self, message: str) -> None:
        if not self.enabled:
            return
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message + "\n")
        if self.console is not None:
            say(self.console, (time.strftime("%H:%M:%S"), "dim"), f" {message}")


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor
    return optimizer.param_groups[0]["lr"]


def grad_norm_and_clip(params: list[torch.nn.Parameter], clip_norm: float) -> float:
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, clip_norm if clip_norm > 0 else float("inf"))
    return float(norm)


def train_loop(*, run: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               lr_factor: Callable[[int], float], batches: Callable[[tuple[int, int]], Iterator],
               hooks: Hooks, max_steps: int, accumulate: int, clip_norm: float, seed: int,
               log_every: int, eval_every: int, save_every: int, state: LoopState, log: MetricsLog,
               console=None, extra_meta: dict | None = None, save_minutes: float = 0.0) -> LoopState:
    """Run updates ``state.step .. max_steps``; returns the final state. ``batches(position)`` yields
    positioned micro-batches starting at ``position``. A checkpoint is saved every ``save_every`` updates, at the
    first update ``save_minutes`` after the last save, and at the end. Once the first updates are timed, the log
    says how long the rest will take (and warns when that is more than a day)."""
    from lowres.progress import progress_bar
    from lowres.runtime import distributed

    world, rank, main = world_size(), distributed().rank, is_main_process()
    if state.step and state.world_size != world:
        log.say(f"resumed with {world} process(es) instead of {state.world_size}: the data goes on from the same "
                f"place; one update now takes {world} × {accumulate} micro-batches")
    state.world_size = world
    if not main:
        console = None
    epoch0, global_next = state.position
    data = iter(batches((epoch0, -(-global_next // world))))  # this rank's batch number, rounded up
    model.train()
    started = last_save = time.perf_counter()
    first_step, estimated, before = state.step, False, state.elapsed_s  # before: earlier processes' time
    window = {"loss": 0.0, "n": 0, "updates": 0, "stats": {}, **state.window,  # sums restored on resume,
              "audio": 0.0, "t": time.perf_counter()}  # the speed measured anew
    with progress_bar(console) as progress:
        task = progress.add_task("training", total=max_steps, completed=state.step, unit="upd")
        while state.step < max_steps:
            step = state.step
            if hooks.on_update is not None:
                hooks.on_update(step)
            torch.manual_seed(step_seed(seed, step))
            micro = []
            for i in range(accumulate):
                try:
                    batch = next(data)
                except StopIteration:
                    break
                g = i * world + rank  # the micro-batch's index in the global batch of this update
                micro.append(Micro(batch, torch.Generator().manual_seed(step_seed(seed, step, salt=1 + 2 * g)),
                                   step_seed(seed, step, salt=2 + 2 * g), last=False))
            if not micro:
                log.say("the training data ran out (no batch could be formed); stopping")
                break
            micro[-1].last = True
            epoch, b = micro[-1].batch.position
            state.position = (epoch, (b + 1) * world)
            out = hooks.compute(micro, step)
            unreadable = sum(len(m.batch.errors or []) for m in micro)
            out.audio_seconds, unreadable = all_reduce_sum([out.audio_seconds, unreadable])
            state.unreadable_clips += int(unreadable)
            norm = grad_norm_and_clip(hooks.trainable(), clip_norm)
            lr = set_lr(optimizer, lr_factor(step))
            if math.isfinite(norm) and math.isfinite(out.loss):
                optimizer.step()
            else:
                state.skipped_nonfinite += 1
                log.say(f"update {step + 1}: non-finite loss or gradient (loss {out.loss}, grad norm {norm}); "
                        f"skipped ({state.skipped_nonfinite} so far)")
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.audio_seconds += out.audio_seconds
            if math.isfinite(out.loss):
                window["loss"] += out.loss
                window["n"] += 1
            window["audio"] += out.audio_seconds
            window["updates"] += 1
            for k, v in out.stats.items():
                window["stats"][k] = window["stats"].get(k, 0.0) + v
            seen = window["audio"] / max(time.perf_counter() - window["t"], 1e-9)
            progress.update(task, completed=state.step,
                            description=f"training loss {out.loss:.3f} lr {lr:.2e} {seen:.1f} audio-s/s")
            done = state.step
            if done % log_every == 0 or done == max_steps:
                now = time.perf_counter()
                speed = window["audio"] / max(now - window["t"], 1e-9)
                row = {"step": done, "loss": window["loss"] / max(window["n"], 1), "lr": lr,
                       "grad_norm": norm, "audio_s_per_s": speed, "epoch": epoch,
                       "skipped_nonfinite": state.skipped_nonfinite, "elapsed_s": before + now - started}
                row.update({k: v / max(window["updates"], 1) for k, v in window["stats"].items()})
                log.write(row)
                if console is None or not getattr(console, "is_terminal", False):
                    log.say(f"update {done}/{max_steps}  loss {row['loss']:.4f}  lr {lr:.2e}  "
                            f"{speed:.1f} audio-s/s")
                if hooks.check is not None:
                    hooks.check(done, row)
                window = {"loss": 0.0, "n": 0, "updates": 0, "audio": 0.0, "t": now, "stats": {}}
            state.window = {k: v for k, v in window.items() if k != "t"}
            if main and hooks.evaluate is not None and ((eval_every and done % eval_every == 0)
                                                         or done == max_steps):
                eval_started = time.perf_counter()
                result = hooks.evaluate(done)
                metric = result.get("metric")
                if metric is not None and (state.best_metric is None or metric < state.best_metric):
                    state.best_metric, state.best_step = metric, done
                    if hooks.deliver is not None:
                        hooks.deliver("best")
                # eval_s: the evaluation and the writing of a new best deliverable. elapsed_s - the eval_s of the
                # earlier evaluations is the training time of the weights scored here; the speed window leaves
                # evaluations out, so audio_s_per_s stays the training speed
                eval_s = time.perf_counter() - eval_started
                window["t"] += eval_s
                log.write({"step": done, **{k: v for k, v in result.items() if k != "metric"},
                           "elapsed_s": before + eval_started - started, "eval_s": eval_s})
            if main and not estimated and (done - first_step >= ESTIMATE_UPDATES
                                           or time.perf_counter() - started >= ESTIMATE_SECONDS):
                estimated = True
                _say_estimate(log, done - first_step, time.perf_counter() - started, max_steps - done)
            if main and (save_every and done % save_every == 0 or done == max_steps
                         or save_minutes and time.perf_counter() - last_save >= 60 * save_minutes):
                state.elapsed_s = before + time.perf_counter() - started
                save_checkpoint(run, done, hooks.checkpoint_weights(),
                                {"optimizer": optimizer.state_dict()},
                                {**state.to_dict(), **(extra_meta or {})})
                last_save = time.perf_counter()
    state.elapsed_s = before + time.perf_counter() - started
    if main and hooks.deliver is not None and (hooks.evaluate is None or state.best_step < 0):
        hooks.deliver("final")
    return state


ESTIMATE_UPDATES, ESTIMATE_SECONDS = 10, 60.0  # the run's time is estimated after this many updates or seconds
LONG_RUN_HOURS = 24.0  # an estimate above this is a warning


def _say_estimate(log: MetricsLog, updates: int, seconds: float, remaining: int) -> None:
    """The time the remaining updates take at the speed of the first ones (evaluations and the first epoch's
    caching make it a rough figure), and a warning when it is more than a day."""
    if remaining <= 0 or updates <= 0:
        return
    hours = seconds / updates * remaining / 3600
    when = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
    log.say(f"estimated time: {when} for the remaining {remaining:,} updates at the speed of the first {updates} "
            f"({seconds / updates:.2f} s each; evaluations come on top)")
    if hours > LONG_RUN_HOURS:
        log.say(f"warning: this run would take {hours / 24:.1f} days on this device. Pass --max-steps N for fewer "
                "updates or --batch-seconds / --accumulate for smaller ones (a checkpoint is saved every "
                "train.save_minutes, so Ctrl-C and --resume lose little); on a CPU, recipes such as "
                "recipes/tiny_ssl.toml and recipes/whisper.toml are sized for it.")


def data_parallel(model: torch.nn.Module, device) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel under torchrun, else the model itself.

    ``find_unused_parameters``: layerdrop, the head-only phase and the heads warm-up leave parameters
    without a gradient in some updates, which plain DDP refuses."""
    if world_size() <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def grad_sync(net: torch.nn.Module, micro: Micro):
    """Forward + backward of ``micro`` inside this context: DDP all-reduces gradients after the update's
    last micro-batch only (``no_sync`` for the others)."""
    import contextlib

    if micro.last or not hasattr(net, "no_sync"):
        return contextlib.nullcontext()
    return net.no_sync()


def restore(path: Path, optimizer: torch.optim.Optimizer, hooks: Hooks) -> LoopState:
    weights, trainer, meta = load_checkpoint(path)
    hooks.load_weights(weights)
    optimizer.load_state_dict(trainer["optimizer"])
    return LoopState.from_dict(meta)
