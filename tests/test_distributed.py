"""torchrun: 2 CPU processes (gloo) train the same weights as one process with the same global batch.

One process with ``accumulate = 2`` and two processes with ``accumulate = 1`` take the same micro-batches in
every update (rank r takes batches r, r + 2, ...), draw the same masks, dropout and layerdrop (seeded per
micro-batch by its index in the global batch) and normalise the loss over the whole global batch, so the
weights agree to float rounding. Also: a run started on 2 processes resumes on 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import factory
import pytest
import torch
from factory import invoke
from safetensors.torch import load_file

COMMON = ["--set", "train.batch_seconds=6", "--set", "train.num_workers=0", "--set", "train.log_every=1",
          "--set", "train.save_every=1", "--quiet"]


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "lowres", *[str(a) for a in args]]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return factory.prepared_corpus(tmp_path_factory.mktemp("corpus"), n=30, speakers=6)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    """Equal up to float rounding. Adam turns rounding noise in near-zero gradients into steps of up to lr for
    a handful of elements, so the check is on the mean and on the share of elements that moved apart."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and len(wa) > 10
    diff = torch.cat([(wa[k] - wb[k]).flatten().abs() for k in wa])
    assert float(diff.mean()) < 1e-7, float(diff.mean())
    assert float((diff > 1e-5).float().mean()) < 1e-3


def trace(run: Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r[key] for r in rows if key in r]


def single_and_torchrun(command: str, tmp_path: Path, flags: list) -> tuple[Path, Path]:
    """The same run as 1 process with accumulate 2 and as 2 torchrun processes with accumulate 1."""
    single = tmp_path / "single"
    res = invoke(command, "--out", single, "--accumulate", 2, *flags)
    assert res.exit_code == 0, res.output
    ddp = tmp_path / "ddp"
    proc = torchrun(command, "--out", ddp, "--accumulate", 1, *flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return single, ddp


def test_finetune_two_processes_match_one(prepared, tmp_path):
    # masking, layerdrop and dropout on: the per-micro-batch seeds must make them identical
    flags = ["--data", prepared, "--split", "full", "--base", "tiny", "--max-steps", 3, "--eval-every", 0,
             "--set", "model.layerdrop=0.2", "--set", "model.mask_prob=0.3", *COMMON]
    single, ddp = single_and_torchrun("finetune", tmp_path, flags)
    assert_same_weights(single, ddp)
    # the same data, masks and dropout (loss) and the same normalisation over the global batch (grad norm)
    assert trace(ddp, "loss") == pytest.approx(trace(single, "loss"), rel=1e-5)
    assert trace(ddp, "grad_norm") == pytest.approx(trace(single, "grad_norm"), rel=1e-3)
    # rank 0 alone wrote the run: one metrics line per update
    assert len(trace(ddp, "loss")) == 3
    assert json.loads((ddp / "checkpoints" / "step-00000003" / "meta.json").read_text())["world_size"] == 2

    # resume across a changed world size: 2 processes for 3 updates, then 1 process (accumulate 2) to 5
    res = invoke("finetune", "--out", single, "--max-steps", 5, "--resume", "--quiet")
    assert res.exit_code == 0, res.output
    res = invoke("finetune", "--out", ddp, "--max-steps", 5, "--accumulate", 2, "--resume", "--quiet")
    assert res.exit_code == 0, res.output
    assert "instead of 2" in (ddp / "train.log").read_text()
    assert_same_weights(single, ddp)


def test_adapt_two_processes_match_one(prepared, tmp_path):
    unlabeled = prepared.parent  # the corpus folder's audio
    flags = ["--objective", "wav2vec2", "--unlabeled", unlabeled, "--base", "tiny", "--max-steps", 3,
             "--set", "train.heads_warmup_steps=1", "--set", "train.crop_min_s=0.5", "--set", "model.layerdrop=0.2",
             *COMMON]
    single, ddp = single_and_torchrun("adapt", tmp_path, flags)
    assert_same_weights(single, ddp)
    for key in ("loss", "contrastive", "accuracy", "code_perplexity", "masked_fraction", "grad_norm"):
        assert trace(ddp, key) == pytest.approx(trace(single, key), rel=1e-3), key


def test_hubert_two_processes_match_one(prepared, tmp_path):
    """HuBERT under torchrun: rank 0 alone makes the units (the others read them), and the run equals one
    process with twice the accumulation."""
    flags = ["--objective", "hubert", "--unlabeled", prepared.parent, "--base", "tiny", "--max-steps", 3,
             "--clusters", 8, "--set", "train.heads_warmup_steps=1", "--set", "train.crop_min_s=0.5",
             "--set", "model.layerdrop=0.2", *COMMON]
    single, ddp = single_and_torchrun("adapt", tmp_path, flags)
    assert_same_weights(single, ddp)
    for key in ("loss", "masked_accuracy", "predicted_perplexity", "target_perplexity", "masked_fraction",
                "grad_norm"):
        assert trace(ddp, key) == pytest.approx(trace(single, key), rel=1e-3), key
    units = [json.loads((run / "units" / "units.json").read_text()) for run in (single, ddp)]
    assert units[0] == {**units[1], "seconds": units[0]["seconds"]}  # the same units, made once


def test_a_rank_whose_micro_batch_cannot_be_read_takes_part_with_a_stand_in(prepared, tmp_path):
    """One clip is corrupted after prepare. With one clip per micro-batch, the rank that draws it has nothing
    to train on: it runs a zero-weighted stand-in so that the gradient all-reduce still has every rank, and
    the weights equal one process skipping that micro-batch."""
    import shutil

    root = tmp_path / "corpus"
    shutil.copytree(prepared.parent, root)
    prep = root / prepared.name
    first = json.loads((prep / "manifests" / "full.jsonl").read_text().splitlines()[0])
    (prep / "manifests" / first["audio_filepath"]).resolve().write_bytes(b"this is not audio" * 100)
    n_clips = len((prep / "manifests" / "full.jsonl").read_text().splitlines())
    steps = (n_clips + 1) // 2  # one epoch: every clip, the corrupted one included, is drawn once
    flags = ["--data", prep, "--split", "full", "--base", "tiny", "--max-steps", steps, "--eval-every", 0,
             *COMMON, "--set", "train.batch_seconds=4.01"]
    single, ddp = single_and_torchrun("finetune", tmp_path, flags)
    for run in (single, ddp):  # the count is summed over ranks
        assert json.loads((run / "summary.json").read_text())["unreadable_clips"] == 1
    assert "unreadable clip skipped" in (single / "train.log").read_text()
    assert len(trace(ddp, "loss")) == steps
    assert_same_weights(single, ddp)
