"""Time per fine-tuning update with and without the feature cache (``train.feature_cache``), on the 10min and 1h
splits of a synthetic corpus, from a pretrained base (its conv encoder frozen: the default).

    python benchmarks/feature_cache.py --work /tmp/cache-bench --base tiny-ssl --steps 8

Figures, machine and the exact command behind them: benchmarks/README.md ("Cached conv features").

Every case is a real ``lowres finetune`` run (subprocess, the split's shipped recipe: 200 s micro-batches x 8
per update, LoRA, no evaluation; ``train.head_only_steps=0`` so every update trains the LoRA adapters, which
is the phase that dominates a real run) with the cache on and off, and ``--head weighted`` on and off. The
time per update is read from ``metrics.jsonl`` (``elapsed_s`` at every update, ``train.log_every=1``) and
averaged over the updates that start after the first epoch has ended: those are the ones a cache can speed
up (the first epoch computes and stores every clip). The 10min split is about 600 s of audio, so every update of 1,600 s is
more than one epoch and all updates after the first read cached features; on the 1h split an epoch is about
2.25 updates. The runs go one after the other on the same machine; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def lowres(*args) -> None:
    print("$ lowres " + " ".join(str(a) for a in args), flush=True)
    subprocess.run([sys.executable, "-m", "lowres", *[str(a) for a in args]], check=True, env={**os.environ})


def per_update(run: Path) -> dict:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r and "elapsed_s" in r]
    times = [(r["step"], r["elapsed_s"], r["epoch"]) for r in rows]
    # an update whose previous one already ended in the second epoch reads only clips seen before
    gaps = [(b[1] - a[1], a[2]) for a, b in zip(times, times[1:], strict=False)]
    later = [g for g, epoch in gaps if epoch >= 1]
    summary = json.loads((run / "summary.json").read_text())
    return {"updates": len(rows), "first_update_s": times[0][1],
            "s_per_update_after_epoch_1": statistics.mean(later) if later else None,
            "updates_measured": len(later), "cache": summary.get("feature_cache")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--data", type=Path, help="A prepared folder with 10min and 1h splits (default: synthesise one).")
    ap.add_argument("--base", default="tiny-ssl")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--splits", default="10min,1h")
    ap.add_argument("--heads", default="ctc,weighted")
    args = ap.parse_args()
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        data = w / "prepared"
        if not (data / "prepare_report.json").is_file():
            lowres("synth", "--lang", "sw", "--hours", 1.2, "--unlabeled-hours", 0.05, "--out", w / "synth",
                   "--seed", 0, "-q", "--overwrite")
            lowres("prepare", w / "synth" / "labeled" / "corpus.tsv", "--lang", "sw", "--out", data, "-q",
                   "--overwrite")
    results = {}
    load_before = os.getloadavg()
    for split in [s for s in args.splits.split(",") if s]:
        for head in [h for h in args.heads.split(",") if h]:
            for cache in ("on", "off"):
                run = w / f"{split}-{head}-cache-{cache}"
                if not (run / "summary.json").is_file():
                    lowres("finetune", "--data", data, "--split", split, "--base", args.base, "--out", run,
                           "--head", head, "--max-steps", args.steps, "--eval-every", 0,
                           "--set", "train.head_only_steps=0", "--set", f"train.feature_cache={cache == 'on'}",
                           "--set", "train.num_workers=0", "--set", "train.log_every=1",
                           "--set", "train.save_every=0", "-q", "--overwrite")
                results[f"{split} {head} cache {cache}"] = per_update(run)
    table = ["| split | head | s/update, cache off | s/update, cache on | speed-up | first update (on / off) |",
             "|---|---|---|---|---|---|"]
    for split in [s for s in args.splits.split(",") if s]:
        for head in [h for h in args.heads.split(",") if h]:
            on, off = results[f"{split} {head} cache on"], results[f"{split} {head} cache off"]
            a, b = off["s_per_update_after_epoch_1"], on["s_per_update_after_epoch_1"]
            ratio = f"{a / b:.2f}x" if a and b else "n/a"
            table.append(f"| {split} | {head} | {a:.1f} | {b:.1f} | {ratio} | {on['first_update_s']:.1f} / "
                         f"{off['first_update_s']:.1f} s |")
    out = {"results": results, "load_average_before": load_before, "load_average_after": os.getloadavg(),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "threads": os.environ.get("OMP_NUM_THREADS")}, "command": " ".join(sys.argv),
           "date": time.strftime("%Y-%m-%d %H:%M")}
    (w / "feature_cache.json").write_text(json.dumps(out, indent=1) + "\n")
    (w / "feature_cache.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"load average before {load_before}, after {os.getloadavg()}")


if __name__ == "__main__":
    main()
