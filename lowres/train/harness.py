"""What every training run shares, whatever its objective: the harness that runs a :class:`Task`.

``train(task, out, ...)`` does, in this order (the order matters: a mistake in the inputs must leave
``--out`` as it was, and a resumed run must take exactly the random decisions of an uninterrupted one):

1. under torchrun, join the process group; rank 0 alone claims the folder, logs and writes;
2. check that ``--out`` can be claimed (touching nothing), or read the run's record for ``--resume``;
3. ``task.check_inputs()``: read and check every input;
4. runtime: threads, device, seeds, the metrics log;
5. ``task.build()``: the base, the model (on the device, ``requires_grad`` set), the training data;
6. a new run claims the folder for real and writes its record (``config.json``) and ``task.write_files()``;
7. the optimizer from ``task.param_groups()`` (each group with its own peak lr), the frozen phase;
8. resume from the latest checkpoint, or describe the new run;
9. the generic loop (lowres/train/loop.py) with the task's compute / evaluate / check / deliver;
10. ``task.finish()`` (the task's closing figures and pictures), the learning curve, ``summary.json`` and the
    closing line.

A new objective is one new module in lowres/train/tasks/ with a :class:`Task` subclass; the command that
runs it is ``train(MyTask(cfg), out, ...)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lowres import LowresError
from lowres.train.loop import Hooks, LoopState, MetricsLog, Micro, StepOutput, data_parallel


@dataclass(frozen=True)
class ParamGroup:
    """Parameters that share a peak learning rate (``peak_lr`` × the schedule's factor each update)."""

    name: str
    params: list
    peak_lr: float
    phase_lr_factor: float = 1.0  # peak lr × this during the frozen phase (adapt's fresh heads learn 10× faster)


@dataclass(frozen=True)
class FrozenPhase:
    """The first ``steps`` updates train only part of the model while the rest waits: fine-tuning's head-only
    phase (fairseq's ``freeze_finetune_updates``: a random CTC head first, so its gradients do not disturb a
    pretrained transformer) and adapt's heads warm-up (fresh quantizer and projections first). One concept,
    two uses."""

    steps: int
    during: str  # logged at the start: "updates 1-N: <during>"
    over: str  # logged when it ends: "update N+1: <over>"
    set_frozen: Callable[[bool], None]  # freezes (True) or releases (False) the waiting part
    is_frozen: Callable[[], bool]


def frozen_steps(wanted: int, train_cfg, what: str) -> tuple[int, str | None]:
    """(updates, note): the length of a frozen phase, which never covers more than ``train.max_frozen_share``
    of the run (a phase as long as the run would train only the part that does not wait). ``note`` says why
    a phase was shortened (None when it was not)."""
    limit = int(train_cfg.max_frozen_share * train_cfg.max_steps)
    if wanted <= limit:
        return wanted, None
    cover = "the whole run" if wanted >= train_cfg.max_steps else f"{wanted} of its {train_cfg.max_steps} updates"
    return limit, (f"the {what} of {wanted} updates would cover {cover}: shortened to {limit} updates "
                   f"(train.max_frozen_share = {train_cfg.max_frozen_share:g} of --max-steps "
                   f"{train_cfg.max_steps}) so that the rest of the model trains too")


@dataclass
class Run:
    """The run being trained, as the task sees it."""

    out: Path
    mode: str  # new | resume
    record: object | None  # runs.RunRecord of a resumed run
    main: bool  # rank 0 (or a single process): logs, evaluates, writes
    world: int  # torchrun processes
    rank: int
    console: object | None
    device: torch.device | None = None
    log: MetricsLog | None = None
    net: torch.nn.Module | None = None  # the model, wrapped in DistributedDataParallel under torchrun
    lock: object | None = None  # runs.RunLock held by rank 0 for the life of the run
    claimed: bool = False  # a new run's folder has been claimed (created, or emptied by --overwrite)
    checkpoint: Path | None = None  # a resumed run's latest checkpoint (None: it restarts from update 0)

    @property
    def from_checkpoint(self) -> bool:
        """Every weight comes back from a checkpoint: the task builds the architecture only. Otherwise (a new
        run, or a resumed one that had not saved a checkpoint yet) it builds the initial model the same way."""
        return self.mode == "resume" and self.checkpoint is not None
    state: LoopState = field(default_factory=LoopState)  # the loop's state (final once training ended)


class Task:
    """A training objective. Subclasses set ``kind`` and ``config_class`` and implement the methods that
    raise NotImplementedError; the others have the defaults most objectives want."""

    kind: str = ""  # the run kind recorded in config.json ("finetune", "adapt")
    curve_title: str = ""
    curve_extra: tuple[str, ...] = ()  # metrics.jsonl keys plotted beside the loss
    run: Run
    model: torch.nn.Module

    def __init__(self, cfg):
        self.cfg = cfg

    # -- inputs and model ---------------------------------------------------------------------------------
    def check_inputs(self) -> None:
        """Read and check every input before the run folder is touched (LowresError on a mistake)."""

    def build(self) -> None:
        """Set ``self.model`` (on ``self.run.device``, ``requires_grad`` set) and whatever data it trains on."""
        raise NotImplementedError

    def prepare_new_run(self) -> None:
        """A new run's work before its record is written: what a resumed run reads back from its folder (the
        indexed unlabeled audio, HuBERT's units) is made here, and the configuration takes the values it records
        (resolved paths, the base as stored)."""

    def record(self):
        """The new run's :class:`lowres.runs.RunRecord` (written as config.json before training starts): what
        :meth:`prepare_new_run` and :meth:`build` settled, as data; no work."""
        raise NotImplementedError

    def write_files(self) -> None:
        """Other files a new run writes next to its record (rank 0)."""

    # -- training -----------------------------------------------------------------------------------------
    def batches(self, position: tuple[int, int]) -> Iterator:
        """Positioned micro-batches of this rank, from global (epoch, batch) ``position`` on."""
        raise NotImplementedError

    def param_groups(self) -> list[ParamGroup]:
        raise NotImplementedError

    def lr_factor(self, step: int) -> float:
        raise NotImplementedError

    def frozen_phase(self) -> FrozenPhase | None:
        return None

    def compute(self, micro: list[Micro], step: int) -> StepOutput:
        """Forward and backward of one update's micro-batches; gradients normalised over the global batch."""
        raise NotImplementedError

    def micro_batches(self, micro: list[Micro]):
        """For :meth:`compute`: (batch on the device, loss weight, generator) of each micro-batch that runs,
        yielded inside DDP's gradient-sync context (all-reduce after the update's last micro-batch only): run
        the forward (under :meth:`autocast`) and the backward in the loop body."""
        from lowres.train.loop import grad_sync

        for m in micro:
            started = m.start()  # seeds dropout; None when every clip of the batch failed to decode
            if started is None:
                continue
            batch, weight = started
            batch.to(self.run.device)
            with grad_sync(self.run.net, m):
                yield batch, weight, m.gen

    def autocast(self):
        """Mixed precision for the forward pass, as train.precision says (the loss and backward stay outside)."""
        from lowres.runtime import autocast

        return autocast(self.run.device, self.cfg.train.precision)

    def evaluates(self) -> bool:
        """Whether :meth:`evaluate` has a dev set to score (then the best evaluation picks the deliverable)."""
        return False

    def evaluate(self, step: int) -> dict:
        """Dev metrics, ``{"metric": lower-is-better value or None, ...}`` (rank 0 only)."""
        return {}

    def check(self, step: int, row: dict) -> None:
        """After each logged row; may raise LowresError to stop the run (e.g. a collapse)."""

    def checkpoint_weights(self) -> dict:
        return dict(self.model.state_dict())

    def load_weights(self, weights: dict) -> None:
        raise NotImplementedError

    def deliverable(self) -> tuple[dict, dict]:
        """(tensors, metadata) of the run's model.safetensors."""
        raise NotImplementedError

    # -- talking ------------------------------------------------------------------------------------------
    def describe(self) -> None:
        """Log what a new run is about to do (base, what trains, data)."""

    def summary(self, final: LoopState) -> dict:
        """Task figures for summary.json, besides the shared ones."""
        return {}

    def cleanup(self) -> None:
        """After training, whether it ended or failed: drop what only the run's own epochs needed."""

    def finish(self, final: LoopState) -> dict:
        """Rank 0, once training is over and the deliverable written: what the task reports and draws at the end
        (log lines, pictures); returns more figures for summary.json."""
        return {}

    def done(self, final: LoopState, deliverable: Path) -> str:
        return f"done: {final.step} updates → {deliverable}"


def train(task: Task, out: Path, *, resume: bool = False, overwrite: bool = False, console=None,
          max_steps_override: int | None = None, resume_changes: dict | None = None) -> dict:
    """Run ``task`` into the run folder ``out`` (see the module docstring); returns summary.json's content.

    ``resume_changes``: what the resuming command line asked for, nested like the configuration (see
    :func:`lowres.runs.resume_config`: only some train settings may change)."""
    from lowres.fsutil import atomic_write_json
    from lowres.runs import RUN_CURVE, RUN_METRICS, RUN_SUMMARY, RUN_WEIGHTS, claim_run_folder, resume_config
    from lowres.runtime import (
        barrier,
        distributed,
        init_distributed,
        is_main_process,
        on_main,
        resolve_device,
        world_size,
    )
    from lowres.train.loop import train_loop
    from lowres.train.plot import learning_curve

    out = Path(out)
    init_distributed(resolve_device(task.cfg.train.device))  # under torchrun: join the group (nothing otherwise)
    main = is_main_process()
    run = Run(out=out, mode="new", record=None, main=main, world=world_size(), rank=distributed().rank,
              console=console if main else None)
    task.run = run
    # every input is read and checked before the run folder is touched: a mistake leaves --out as it was
    run.mode = on_main(claim_run_folder, out, resume=resume, overwrite=overwrite, check_only=not resume)
    existed = out.exists()  # a failed start of a new run removes what it made, and only that
    started_training = False
    try:
        if run.mode == "resume":
            run.record, task.cfg = resume_config(out, task.kind, type(task.cfg), resume_changes,
                                                 max_steps_override)
            on_main(_take_lock, run)
        optimizer, hooks = _start(task, run, overwrite)
        t, o = task.cfg.train, task.cfg.optim
        _say_plan(run, t)
        started, started_training = time.perf_counter(), True
        final = train_loop(run=out, model=task.model, optimizer=optimizer, lr_factor=task.lr_factor,
                           batches=task.batches, hooks=hooks, max_steps=t.max_steps, accumulate=t.accumulate,
                           clip_norm=o.clip_norm, seed=t.seed, log_every=t.log_every,
                           eval_every=getattr(t, "eval_every", 0), save_every=t.save_every, state=run.state,
                           log=run.log, console=run.console, save_minutes=getattr(t, "save_minutes", 0.0))
    except KeyboardInterrupt:
        if main and run.claimed and not started_training:
            _undo_start(out, existed)
        elif main and started_training:
            _say_interrupted(run, task.kind)
        raise
    except BaseException:
        if main and run.claimed and not started_training:
            _undo_start(out, existed)
        raise
    finally:
        task.cleanup()
        if run.lock is not None:
            run.lock.release()
    run.state = final
    finished = {}
    if main:
        finished = task.finish(final)
        learning_curve(out / RUN_METRICS, out / RUN_CURVE, title=task.curve_title,
                       extra=task.curve_extra)
    summary = {"steps": final.step, **task.summary(final), **finished, "skipped_nonfinite": final.skipped_nonfinite,
               "unreadable_clips": final.unreadable_clips, "audio_seconds_trained": final.audio_seconds,
               "wall_seconds": time.perf_counter() - started, "train_seconds": final.elapsed_s,
               "deliverable": str(out / RUN_WEIGHTS)}
    if main:
        atomic_write_json(out / RUN_SUMMARY, summary)
    barrier()
    run.log.say(task.done(final, out / RUN_WEIGHTS))
    return summary


def _start(task: Task, run: Run, overwrite: bool):
    """Steps 3-8: inputs, runtime, the model, the new run's record, the optimizer and hooks, the resume."""
    from lowres.runs import RUN_CONFIG, RUN_WEIGHTS, claim_run_folder, write_run
    from lowres.runtime import barrier, configure_threads, on_main, resolve_device, seed_everything
    from lowres.train.checkpoint import latest_checkpoint
    from lowres.train.loop import restore

    out = run.out
    if run.mode == "resume":
        run.checkpoint = latest_checkpoint(out)
    task.check_inputs()
    t = task.cfg.train
    configure_threads(t.threads)
    run.device = resolve_device(t.device)
    seed_everything(t.seed)
    run.log = log = MetricsLog(out, run.console)
    task.build()
    if run.mode == "new":
        on_main(claim_run_folder, out, resume=False, overwrite=overwrite)
        run.claimed = True  # from here on, a failed start removes what it made
        on_main(_take_lock, run)
        if run.main and (out / RUN_CONFIG).exists():  # another process claimed it in between and is done
            raise LowresError(f"{out} already holds a run. Use --resume to continue that run, or another --out.")
        task.prepare_new_run()
        record = task.record()
        if run.main:
            task.write_files()
            write_run(out, record)
        barrier()
        run.record = record

    groups = task.param_groups()
    o = task.cfg.optim
    optimizer = torch.optim.AdamW(
        [{"params": g.params, "peak_lr": g.peak_lr, "name": g.name} for g in groups],
        lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    trainable = [p for g in groups for p in g.params]
    hooks = Hooks(compute=task.compute, trainable=lambda: trainable, checkpoint_weights=task.checkpoint_weights,
                  load_weights=task.load_weights, evaluate=task.evaluate if task.evaluates() else None,
                  deliver=lambda kind: _deliver(task, out / RUN_WEIGHTS, kind),
                  on_update=_phase_switch(task.frozen_phase(), groups, optimizer, log), check=task.check)

    state = LoopState()
    if run.mode == "resume":
        ckpt = run.checkpoint
        if ckpt is not None:
            state = restore(ckpt, optimizer, hooks)
            task.model.to(run.device)
            log.truncate_after(state.step)
            log.say(f"resumed from {ckpt.name} (update {state.step})")
        else:
            log.truncate_after(0)
            log.say("no checkpoint yet: starting the run again from update 0")
        if state.step >= t.max_steps:
            log.say(f"the run had already finished {state.step} updates; pass --max-steps N to train longer")
    else:
        task.describe()
    run.state = state
    run.net = data_parallel(task.model, run.device)
    return optimizer, hooks


def _say_plan(run: Run, t) -> None:
    """The run's length before it starts: updates, audio per update and in all (its time follows once the first
    updates are timed: lowres/train/loop.py)."""
    remaining = t.max_steps - run.state.step
    if remaining <= 0:
        return
    audio = ""
    if getattr(t, "batch_seconds", None):  # (a task may batch by something else than audio)
        per_update = t.batch_seconds * t.accumulate * run.world
        audio = f" of up to {per_update:g} s of audio each (at most {remaining * per_update / 3600:,.1f} h of audio)"
    minutes = getattr(t, "save_minutes", 0.0)
    run.log.say(f"plan: {remaining:,} updates{audio}; a checkpoint every {t.save_every} updates"
                + (f" and every {minutes:g} min" if minutes else ""))


def _say_interrupted(run: Run, kind: str) -> None:
    """Ctrl-C during training: what is kept, and the command that continues from it."""
    from lowres.train.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run.out)
    at = run.state.step if run.state is not None else 0
    if ckpt is None:
        kept = "no checkpoint was saved yet: --resume starts the run again from update 0"
    else:
        kept = f"the last checkpoint, {ckpt.name}, is kept (updates after it are trained again)"
    run.log.say(f"interrupted at update {at}: {kept}. Continue with: lowres {kind} --resume --out {run.out}")


def _take_lock(run: Run) -> None:
    """Rank 0 locks the run folder for the life of the run (a second process gets a message naming it)."""
    from lowres.runs import RunLock

    run.lock = RunLock.take(run.out)


def _undo_start(out: Path, existed: bool) -> None:
    """A new run that failed before its first update leaves no half-made folder: what it created goes (the
    folder itself when it made it; an empty folder the user gave stays, empty)."""
    import shutil

    from lowres.fsutil import empty_folder

    if not out.is_dir():
        return
    if existed:
        empty_folder(out)
    else:
        shutil.rmtree(out, ignore_errors=True)


def _deliver(task: Task, path: Path, kind: str) -> None:
    from lowres.fsutil import save_safetensors

    tensors, metadata = task.deliverable()
    save_safetensors(path, tensors, {**metadata, "kind": kind} if metadata else None)


def _phase_switch(phase: FrozenPhase | None, groups: list[ParamGroup], optimizer, log: MetricsLog):
    """The loop's on_update hook: enter / leave the frozen phase, and set each group's peak lr for it (every
    update, since a resumed optimizer holds the value saved in its checkpoint)."""
    if phase is None:
        return None
    factors = {g.name: (g.peak_lr, g.phase_lr_factor) for g in groups}

    def on_update(step: int) -> None:
        frozen = step < phase.steps
        for grp in optimizer.param_groups:
            peak, factor = factors[grp["name"]]
            grp["peak_lr"] = peak * (factor if frozen else 1.0)
        if frozen != phase.is_frozen() or step == 0:
            phase.set_frozen(frozen)
            if frozen:
                log.say(f"updates 1-{phase.steps}: {phase.during}")
            elif phase.steps and step == phase.steps:
                log.say(f"update {step + 1}: {phase.over}")

    return on_update
