"""The training harness runs any Task: a toy objective defined here, in one class, trains, checkpoints,
resumes exactly, switches its frozen phase and writes a run folder like the real objectives do.

Contract:
- ``train(task, out)`` writes config.json (the task's record), model.safetensors, metrics.jsonl, train.log,
  summary.json, learning_curve.png and checkpoints/;
- a frozen phase keeps the waiting parameters unchanged for its updates, logs its start and end, and its
  ``phase_lr_factor`` multiplies the group's peak lr only while it lasts;
- a run stopped at update 4 and resumed to 8 ends with the weights of an uninterrupted 8-update run;
- a second run into a used --out is refused; a resume that points at another input is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lowres import LowresError
from lowres.train.harness import FrozenPhase, ParamGroup, Task, train
from lowres.train.loop import StepOutput


@dataclass(frozen=True)
class ToyTrain:
    max_steps: int = 8
    accumulate: int = 2
    log_every: int = 2
    save_every: int = 2
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    frozen_steps: int = 0
    save_minutes: float = 0.0


@dataclass(frozen=True)
class ToyOptim:
    lr: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0


@dataclass(frozen=True)
class ToyConfig:
    base: str = "toy"
    train: ToyTrain = field(default_factory=ToyTrain)
    optim: ToyOptim = field(default_factory=ToyOptim)


@dataclass
class ToyBatch:
    x: torch.Tensor
    y: torch.Tensor
    position: tuple[int, int]
    errors: list = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.x)


class ToyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.b = torch.nn.Parameter(torch.zeros(1))
        self.b_frozen = False

    def forward(self, x):
        b = self.b.detach() if self.b_frozen else self.b
        return x @ self.w + b


class ToyTask(Task):
    """Least squares: y = x·[1, -2, 3] + 0.5, with noise from the per-micro-batch generator."""

    kind = "toy"
    curve_title = "toy"

    def build(self) -> None:
        torch.manual_seed(self.cfg.train.seed)
        self.model = ToyModel().to(self.run.device)

    def record(self):
        from lowres.config import to_dict
        from lowres.runs import RunRecord

        return RunRecord(kind=self.kind, config=to_dict(self.cfg), backbone={}, base=self.cfg.base)

    def batches(self, position):
        epoch, batch = position
        true_w = torch.tensor([1.0, -2.0, 3.0])
        while True:
            g = torch.Generator().manual_seed(epoch * 1000 + batch)
            x = torch.randn(4, 3, generator=g)
            yield ToyBatch(x, x @ true_w + 0.5, (epoch, batch))
            batch += 1

    def param_groups(self):
        return [ParamGroup("w", [self.model.w], self.cfg.optim.lr),
                ParamGroup("b", [self.model.b], self.cfg.optim.lr, phase_lr_factor=3.0)]

    def lr_factor(self, step):
        return 1.0

    def frozen_phase(self):
        model = self.model
        return FrozenPhase(self.cfg.train.frozen_steps, during="bias waits", over="bias learns",
                           set_frozen=lambda f: setattr(model, "b_frozen", f), is_frozen=lambda: model.b_frozen)

    def compute(self, micro, step):
        total = 0.0
        for m in micro:
            b, weight = m.start()
            loss = ((self.run.net(b.x) - b.y) ** 2).mean() / len(micro)
            (loss * weight).backward()
            total += float(loss.detach())
        return StepOutput(total, audio_seconds=float(len(micro)))

    def load_weights(self, weights):
        self.model.load_state_dict(weights)

    def deliverable(self):
        return {k: v.detach() for k, v in self.model.state_dict().items()}, {"step": self.run.state.step}


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def test_a_task_defined_in_one_class_trains_into_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    summary = train(ToyTask(ToyConfig()), out)
    assert summary["steps"] == 8 and summary["skipped_nonfinite"] == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["lowres_run"] == "toy" and meta["config"]["optim"]["lr"] == 0.2
    for name in ("model.safetensors", "metrics.jsonl", "train.log", "summary.json", "learning_curve.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns
    w = weights(out)["w"]
    assert torch.all(torch.sign(w) == torch.tensor([1.0, -1.0, 1.0]))


def test_frozen_phase_holds_the_waiting_part_while_it_lasts(tmp_path):
    cfg = ToyConfig(train=ToyTrain(max_steps=4, frozen_steps=2, save_every=0, log_every=1))
    task = ToyTask(cfg)
    seen: list[tuple[float, bool]] = []  # (bias before the update, frozen) per update
    original = task.compute

    def compute(micro, step):
        seen.append((float(task.model.b.detach()), task.model.b_frozen))
        return original(micro, step)

    task.compute = compute
    train(task, tmp_path / "run")
    assert [frozen for _, frozen in seen] == [True, True, False, False]
    assert seen[0][0] == seen[1][0] == seen[2][0] == 0.0  # the bias did not move during the phase
    assert seen[3][0] != 0.0  # and moves once it is over
    log = (tmp_path / "run" / "train.log").read_text()
    assert "updates 1-2: bias waits" in log and "update 3: bias learns" in log


def test_phase_lr_factor_applies_during_the_phase_only(tmp_path, monkeypatch):
    import lowres.train.loop as loop

    lrs = []
    original = loop.set_lr

    def spy(optimizer, factor):
        lrs.append({g["name"]: g["peak_lr"] for g in optimizer.param_groups})
        return original(optimizer, factor)

    monkeypatch.setattr(loop, "set_lr", spy)
    train(ToyTask(ToyConfig(train=ToyTrain(max_steps=3, frozen_steps=1, save_every=0))), tmp_path / "run")
    assert lrs[0] == {"w": 0.2, "b": pytest.approx(0.6)}
    assert lrs[1] == lrs[2] == {"w": 0.2, "b": 0.2}


def test_resume_ends_with_the_uninterrupted_weights(tmp_path):
    full = tmp_path / "full"
    train(ToyTask(ToyConfig()), full)
    part = tmp_path / "part"
    train(ToyTask(ToyConfig(train=ToyTrain(max_steps=4))), part)
    train(ToyTask(ToyConfig(train=ToyTrain(max_steps=4))), part, resume=True, max_steps_override=8)
    a, b = weights(full), weights(part)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "resumed from step-00000004" in (part / "train.log").read_text()


def test_used_folder_and_changed_inputs_are_refused(tmp_path):
    out = tmp_path / "run"
    train(ToyTask(ToyConfig(train=ToyTrain(max_steps=2))), out)
    with pytest.raises(LowresError, match="already holds files"):
        train(ToyTask(ToyConfig(train=ToyTrain(max_steps=2))), out)
    with pytest.raises(LowresError, match="own --base"):
        train(ToyTask(ToyConfig(train=ToyTrain(max_steps=2))), out, resume=True,
              resume_changes={"base": "another"})
    with pytest.raises(LowresError, match="optim.lr cannot change"):
        train(ToyTask(ToyConfig(train=ToyTrain(max_steps=2))), out, resume=True,
              resume_changes={"optim": {"lr": 0.1}})


# ---------------------------------------------------------------------------------------------------
# issue #14: a failed start leaves no half-made run; a frozen phase never covers the whole run


class FailingTask(ToyTask):
    """Fails after the folder was claimed, while writing its record (as adapt does when --unlabeled holds
    nothing usable)."""

    def record(self):
        (self.run.out / "half-made.txt").write_text("x")
        raise LowresError("nothing usable")


def test_a_failed_start_leaves_no_half_made_run(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(LowresError, match="nothing usable"):
        train(FailingTask(ToyConfig()), out)
    assert not out.exists()  # it made the folder, so the folder goes
    given = tmp_path / "given"
    given.mkdir()
    with pytest.raises(LowresError, match="nothing usable"):
        train(FailingTask(ToyConfig()), given)
    assert given.is_dir() and not any(given.iterdir())  # the user's empty folder stays, empty
    # and the next start works as if nothing happened: no "already holds files", no stale lock
    assert train(ToyTask(ToyConfig(train=ToyTrain(max_steps=2))), given)["steps"] == 2


def test_a_failed_start_before_the_claim_leaves_an_old_run_alone(tmp_path):
    out = tmp_path / "run"
    train(ToyTask(ToyConfig(train=ToyTrain(max_steps=2))), out)
    before = sorted(p.name for p in out.iterdir())

    class BadInputs(ToyTask):
        def check_inputs(self):
            raise LowresError("bad input")

    with pytest.raises(LowresError, match="bad input"):
        train(BadInputs(ToyConfig()), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before  # --overwrite only takes effect once inputs are good


@pytest.mark.parametrize(("frozen", "max_steps", "expected"), [(2, 8, 2), (4, 8, 4), (20, 8, 4), (8, 8, 4)])
def test_a_frozen_phase_covers_at_most_half_the_run(frozen, max_steps, expected):
    from lowres.train.harness import frozen_steps

    steps, note = frozen_steps(frozen, SimpleNamespace(max_steps=max_steps, max_frozen_share=0.5), "phase")
    assert steps == expected and (note is None) == (frozen == expected)
    if note:
        assert f"shortened to {expected} updates" in note and "max_frozen_share" in note


def test_the_plan_the_estimate_and_checkpoints_by_time(tmp_path, monkeypatch):
    """Before training the log says the plan; once the first updates are timed, the time the rest takes (a
    warning when that is more than a day); with train.save_minutes a checkpoint follows every update that comes
    that long after the last one, whatever save_every says."""
    import lowres.train.loop as loop
    from lowres.train.checkpoint import latest_checkpoint

    monkeypatch.setattr(loop, "ESTIMATE_UPDATES", 3)
    monkeypatch.setattr(loop, "LONG_RUN_HOURS", 0.0)  # any run is "long" here: the warning shows
    out = tmp_path / "run"
    train(ToyTask(ToyConfig(train=ToyTrain(max_steps=6, save_every=100, save_minutes=1e-9))), out)
    log = (out / "train.log").read_text()
    assert "plan: 6 updates; a checkpoint every 100 updates and every 1e-09 min" in log
    assert "estimated time:" in log and "for the remaining 3 updates at the speed of the first 3" in log
    assert "warning: this run would take" in log and "--max-steps" in log
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*"))[-2:] == ["step-00000005", "step-00000006"]
    assert latest_checkpoint(out).name == "step-00000006"


def test_ctrl_c_says_what_is_kept_and_how_to_continue(tmp_path):
    class Interrupted(ToyTask):
        def compute(self, micro, step):
            if step == 5:
                raise KeyboardInterrupt
            return super().compute(micro, step)

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(Interrupted(ToyConfig(train=ToyTrain(max_steps=8, save_every=2))), out)
    log = (out / "train.log").read_text()
    assert "interrupted at update 5: the last checkpoint, step-00000004, is kept" in log
    assert f"Continue with: lowres toy --resume --out {out}" in log
    train(ToyTask(ToyConfig(train=ToyTrain(max_steps=8, save_every=2))), out, resume=True)  # and it does
    assert json.loads((out / "summary.json").read_text())["steps"] == 8
