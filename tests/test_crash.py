"""Crash safety: real training processes killed with SIGKILL at random points, then --resume.

After every kill the run folder holds a loadable checkpoint (or none yet, before the first one), and the
resumed run ends with exactly the weights and metrics of an uninterrupted run. A full disk while a
checkpoint is written leaves the previous checkpoint intact and ends with a clear message.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import factory
import pytest
import torch
from factory import invoke
from safetensors.torch import load_file

from lowres.train.checkpoint import latest_checkpoint, load_checkpoint

STRIP = ("elapsed_s", "audio_s_per_s", "eval_s")  # timings differ from run to run


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return factory.prepared_corpus(tmp_path_factory.mktemp("corpus"), n=24, speakers=6)


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in STRIP} for r in rows]


def logged_updates(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text(errors="replace").splitlines() if '"loss"' in line)


def assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    assert metrics(a) == metrics(b)


def run_uninterrupted(args: list[str]) -> None:
    """The reference: the same command in the same kind of process (``python -m lowres``), never killed."""
    proc = subprocess.run([sys.executable, "-m", "lowres", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def run_with_kills(cmd: list[str], run: Path, kills: int, steps: int, rng: random.Random) -> int:
    """Start ``cmd`` and SIGKILL it ``kills`` times at random points of training, resuming each time; then let
    the last --resume finish. Returns the number of kills that landed before the run ended."""
    landed = 0
    for attempt in range(kills + 1):
        args = cmd if attempt == 0 else [*cmd, "--resume"]  # the same command line, with --resume
        proc = subprocess.Popen([sys.executable, "-m", "lowres", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
        if attempt < kills:
            # kill once a random number of further updates are logged, plus a random fraction of an update,
            # so kills land in forward/backward, in checkpoint writes and in the metrics appends alike
            target = min(steps, logged_updates(run) + rng.randint(1, 3))
            deadline = time.monotonic() + 120
            while proc.poll() is None and logged_updates(run) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                landed += 1
            proc.communicate(timeout=60)
            if (run / "config.json").is_file():
                ckpt = latest_checkpoint(run)
                if ckpt is not None:
                    load_checkpoint(ckpt)  # always loadable
        else:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, out + err
            assert "Traceback" not in err
    return landed


def test_sigkill_at_random_points_then_resume_equals_uninterrupted(prepared, tmp_path):
    steps = 8
    args = ["finetune", "--data", str(prepared), "--split", "full", "--base", "tiny", "--max-steps", str(steps),
            "--eval-every", "3", "--set", "train.batch_seconds=8", "--set", "train.accumulate=1",
            "--set", "train.num_workers=0", "--set", "train.log_every=1", "--set", "train.save_every=1", "--quiet"]
    ref = tmp_path / "ref"
    run_uninterrupted([*args, "--out", str(ref)])
    crashed = tmp_path / "crashed"
    landed = run_with_kills([*args, "--out", str(crashed)], crashed, kills=3, steps=steps, rng=random.Random(7))
    assert landed >= 2  # the kills really hit a running process
    assert_same_run(ref, crashed)
    assert json.loads((crashed / "summary.json").read_text())["steps"] == steps


def test_adapt_sigkill_then_resume_equals_uninterrupted(prepared, tmp_path):
    steps = 6
    unlabeled = tmp_path / "unl"  # the corpus audio, indexed as `prepare --unlabeled` does
    res = invoke("prepare", "--unlabeled", prepared.parent / "wavs", "--out", unlabeled, "-q")
    assert res.exit_code == 0, res.output
    args = ["adapt", "--objective", "wav2vec2", "--unlabeled", str(unlabeled / "unlabeled.jsonl"), "--base", "tiny",
            "--max-steps", str(steps),
            "--set", "train.batch_seconds=8", "--set", "train.num_workers=0", "--set", "train.log_every=1",
            "--set", "train.save_every=1", "--set", "train.crop_min_s=0.5", "--quiet"]
    ref = tmp_path / "ref"
    run_uninterrupted([*args, "--out", str(ref)])
    crashed = tmp_path / "crashed"
    landed = run_with_kills([*args, "--out", str(crashed)], crashed, kills=2, steps=steps, rng=random.Random(3))
    assert landed >= 1
    assert_same_run(ref, crashed)


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(prepared, tmp_path, monkeypatch):
    import lowres.fsutil as fsutil
    import lowres.train.checkpoint as checkpoint
    import lowres.train.loop as loop

    args = ["finetune", "--data", prepared, "--split", "full", "--base", "tiny", "--max-steps", 4, "--eval-every", 0,
            "--set", "train.batch_seconds=8", "--set", "train.accumulate=1", "--set", "train.num_workers=0",
            "--set", "train.save_every=1", "--quiet"]
    ref = tmp_path / "ref"
    assert invoke(*args, "--out", ref).exit_code == 0

    disk = {"full": False}
    real_fsync, real_save = os.fsync, loop.save_checkpoint

    def fsync(fd):
        if disk["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    def save_checkpoint(run, step, *a, **k):
        disk["full"] = step == 3  # the disk fills up while the step-3 checkpoint is written
        return real_save(run, step, *a, **k)

    monkeypatch.setattr(fsutil.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(loop, "save_checkpoint", save_checkpoint)
    run = tmp_path / "run"
    res = invoke(*args, "--out", run)
    assert res.exit_code == 2
    assert "No space left on device" in res.output and "--resume" in res.output
    assert "Traceback" not in res.output
    ckpt = latest_checkpoint(run)
    assert ckpt.name == "step-00000002"
    load_checkpoint(ckpt)
    assert not [p for p in run.rglob("*.tmp")]  # no temp file left behind

    disk["full"] = False
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    res = invoke("finetune", "--out", run, "--resume", "--quiet")
    assert res.exit_code == 0, res.output
    assert_same_run(ref, run)
