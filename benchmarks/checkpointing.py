"""Peak memory and time of one CTC fine-tuning step with and without ``train.gradient_checkpointing``.

    python benchmarks/checkpointing.py --base base-scratch --batch 2 --seconds 8 --json checkpointing.json

Figures, machine and the exact command behind them: benchmarks/README.md ("Gradient checkpointing").

Each setting runs in a fresh subprocess (CPU): build the CTC model the way ``lowres finetune`` does
(``merge(FinetuneConfig(), ...)`` + ``load_base`` + ``build_ctc_model``, in train mode, the transformer
out of its head-only phase) and a batch of random audio, reset the kernel's RSS high-water mark
(``/proc/self/clear_refs``, so building the model does not count) after a warm-up step on 1 s of audio
(the first checkpointed call in a process imports ``torch._dynamo``: about 150 MB, once), run one forward
and backward (the gradients, dropped after the warm-up, are allocated in it), read ``VmHWM``. glibc's malloc gets a fixed mmap threshold
(``MALLOC_MMAP_THRESHOLD_``) so that freed blocks go back to the system and RSS follows live memory, as in
benchmarks/finetune_speed.py. Reported per setting: the RSS before the step, the peak, their difference
(what the step itself took: activations kept for the backward pass, gradients, workspace), the step's wall
time and its loss (the same with and without checkpointing: the recomputation is exact).

Cases: ``trained`` (a random-init base trains whole, conv feature encoder included, as ``lowres finetune``
does from scratch) and ``frozen-conv`` (``model.freeze_feature_encoder=true``: only the transformer and the
head train, so the activations kept are the transformer's, what checkpointing acts on).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

CASES = {"trained": {}, "frozen-conv": {"freeze_feature_encoder": True}}
VOCAB_SIZE = 32


def _status_kb(key: str) -> int:
    m = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(m.group(1)) if m else 0


def probe(args) -> dict:
    """(in a fresh subprocess) one forward and backward of one setting."""
    import torch

    from lowres.bases import load_base
    from lowres.config import FinetuneConfig, merge
    from lowres.model.build import build_ctc_model
    from lowres.model.ctc import ctc_loss

    torch.set_num_threads(args.threads)
    cfg = merge(FinetuneConfig(), {"model": CASES[args.case], "train": {"gradient_checkpointing": args.on}})
    model, _ = build_ctc_model(cfg, VOCAB_SIZE, load_base(args.base, seed=0))
    model.train()
    g = torch.Generator().manual_seed(1)
    samples = int(args.seconds * 16000)
    waves = torch.randn(args.batch, samples, generator=g) * 0.1
    lengths = torch.full((args.batch,), samples, dtype=torch.long)
    targets = torch.randint(1, VOCAB_SIZE, (args.batch * 20,), generator=g)
    target_lengths = torch.full((args.batch,), 20, dtype=torch.long)
    # a warm-up step on 1 s of audio first: the first checkpointed call imports torch._dynamo (about 150 MB
    # and a second or two, once per process), which is not what the setting costs per step
    short = waves[:, :16000]
    ctc_loss(*model(short, torch.full((args.batch,), 16000), torch.Generator().manual_seed(0)),
             targets[: args.batch * 5], torch.full((args.batch,), 5)).mean().backward()
    model.zero_grad(set_to_none=True)
    gc.collect()
    before_mb = _status_kb("VmRSS") / 1024
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    torch.manual_seed(2)
    t0 = time.perf_counter()
    logits, frames = model(waves, lengths, torch.Generator().manual_seed(3))
    loss = ctc_loss(logits, frames, targets, target_lengths).mean()
    loss.backward()
    seconds = time.perf_counter() - t0
    peak_mb = _status_kb("VmHWM") / 1024
    return {"case": args.case, "gradient_checkpointing": args.on, "rss_before_mb": round(before_mb, 1),
            "peak_rss_mb": round(peak_mb, 1), "step_increment_mb": round(peak_mb - before_mb, 1),
            "step_s": round(seconds, 2), "loss": float(loss)}


def run_probe(args, case: str, on: bool) -> dict:
    cmd = [sys.executable, __file__, "--probe", "--case", case, "--base", args.base, "--batch", str(args.batch),
           "--seconds", str(args.seconds), "--threads", str(args.threads)] + (["--on"] if on else [])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| case | checkpointing | RSS before (MB) | peak RSS (MB) | step's increment (MB) | step (s) | loss |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {'on' if r['gradient_checkpointing'] else 'off'} | {r['rss_before_mb']:,.0f} "
                     f"| {r['peak_rss_mb']:,.0f} | {r['step_increment_mb']:,.0f} | {r['step_s']:.1f} "
                     f"| {r['loss']:.6f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="base-scratch", help="a random-init base name (lowres's RANDOM_CONFIGS)")
    ap.add_argument("--batch", type=int, default=2, help="utterances in the batch")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each utterance")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--json", type=Path, default=None, help="write the figures here too")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="trained", help=argparse.SUPPRESS)
    ap.add_argument("--on", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args)))
        return 0
    load_before = os.getloadavg()
    rows = []
    for case in args.cases.split(","):
        for on in (False, True):
            rows.append(run_probe(args, case, on))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        off, on_ = rows[-2], rows[-1]
        print(f"{case}: the step's increment {off['step_increment_mb']:.0f} → {on_['step_increment_mb']:.0f} MB "
              f"({1 - on_['step_increment_mb'] / off['step_increment_mb']:.0%} less), peak "
              f"{off['peak_rss_mb']:.0f} → {on_['peak_rss_mb']:.0f} MB, step {on_['step_s'] / off['step_s']:.2f}x "
              f"the time, loss {'equal' if off['loss'] == on_['loss'] else 'DIFFERS'}", file=sys.stderr)
    print(table(rows))
    if args.json:
        import torch

        meta = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                "load_average_1min_before": round(load_before[0], 2),
                "load_average_1min_after": round(os.getloadavg()[0], 2), "args": vars(args)}
        args.json.write_text(json.dumps({"machine": meta, "rows": rows}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
