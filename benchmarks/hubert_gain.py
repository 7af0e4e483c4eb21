"""Does HuBERT's masked prediction learn from a random initialisation at lowres's scale, and does it help?

The steps (each skipped when its output exists, so the script can be stopped and run again):

1. a synthetic Swahili corpus (`lowres synth`) and `lowres prepare` with its unlabeled audio;
2. `lowres adapt --objective hubert --base tiny` (iteration 1: MFCC units) on the unlabeled audio;
3. `lowres adapt --objective hubert --base ITER1 --targets layer:2` (iteration 2: units from its middle layer);
4. `lowres finetune --split 10min` from the random-init tiny, from iteration 1 and from iteration 2 (and/or
   the shipped base), with the same fine-tuning on every side (the demo's recipe, full fine-tuning, no
   head-only phase, the same updates; the conv encoder trained from the random init and, by default, frozen
   for a pretrained start, as lowres finetune and the demo do: ``--pretrained-conv trained`` trains it too)
   and three seeds;
5. `lowres eval` of each on the dev set; a table (markdown and JSON) in --work.

    python benchmarks/hubert_gain.py --work /tmp/hubert --adapt-steps 250 --finetune-steps 250 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def lowres(*args) -> None:
    cmd = [sys.executable, "-m", "lowres", *[str(a) for a in args]]
    print("$ lowres " + " ".join(str(a) for a in args), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ})


def last_row(run: Path, key: str) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if key in line]
    return rows[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--unlabeled-hours", type=float, default=1.0)
    ap.add_argument("--adapt-steps", type=int, default=250)
    ap.add_argument("--iter2-steps", type=int, default=150)
    ap.add_argument("--adapt-lr", type=float, default=5e-4)  # HuBERT BASE's peak lr from scratch
    ap.add_argument("--finetune-steps", type=int, default=250)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--starts", default="random,iter1,iter2",
                    help="Which starts to fine-tune: random, iter1, iter2 (trained here), shipped (--base tiny-ssl, "
                         "the base lowres ships: HuBERT from scratch on ten other languages).")
    ap.add_argument("--adapt-set", action="append", default=[], metavar="KEY=VALUE",
                    help="A setting for both adapt iterations (e.g. hubert.unmasked_weight=1.0).")
    ap.add_argument("--pretrained-conv", choices=("frozen", "trained"), default="frozen",
                    help="The conv encoder of a pretrained start (iter1, iter2, shipped) in fine-tuning: frozen (what "
                         "lowres finetune, fairseq and Hugging Face do) or trained as the random init's is.")
    ap.add_argument("--report-only", action="store_true", help="Only tabulate the runs that finished.")
    args = ap.parse_args()
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not args.report_only and not (w / "synth" / "synth_report.json").is_file():
        lowres("synth", "--lang", "sw", "--hours", args.hours, "--unlabeled-hours", args.unlabeled_hours,
               "--out", w / "synth", "--seed", 0, "-q", "--overwrite")
    if not args.report_only and not (w / "prepared" / "prepare_report.json").is_file():
        lowres("prepare", w / "synth" / "labeled" / "corpus.tsv", "--unlabeled", w / "synth" / "unlabeled",
               "--lang", "sw", "--out", w / "prepared", "-q", "--overwrite")
    unlabeled = w / "prepared" / "unlabeled.jsonl"
    chosen = [x for x in args.starts.split(",") if x]
    adapt = [*[a for kv in args.adapt_set for a in ("--set", kv)], "--set", "train.batch_seconds=30", "--set", "train.num_workers=0", "--set", "train.log_every=10",
             "--set", "train.save_every=50", "-q"]
    for name, base, steps, extra in (("iter1", "tiny", args.adapt_steps, []),
                                     ("iter2", w / "iter1", args.iter2_steps, ["--targets", "layer:2"])):
        run = w / name
        if name not in chosen:
            continue
        if not args.report_only and not (run / "summary.json").is_file():
            resume = ["--resume"] if (run / "config.json").is_file() else []
            lowres("adapt", "--objective", "hubert", "--unlabeled", unlabeled, "--base", base, "--out", run,
                   "--max-steps", steps, "--lr", args.adapt_lr, *extra, *adapt, *resume)
    rows = []
    every = {"random": ("random init", "tiny"), "iter1": ("hubert iteration 1", w / "iter1"),
             "iter2": ("hubert iteration 2", w / "iter2"), "shipped": ("shipped tiny-ssl", "tiny-ssl")}
    starts = [every[c] for c in chosen]
    for seed in range(args.seeds):  # seed by seed, so that a stopped run has every start for its first seeds
        for start, base in starts:
            run = w / f"ft-{start.split()[-1]}-{seed}"
            if not (run / "eval-dev" / "metrics.json").is_file():
                if args.report_only:
                    continue
                if not (run / "summary.json").is_file():
                    lowres("finetune", "--data", w / "prepared", "--split", "10min", "--base", base, "--out", run,
                           "--recipe", "demo_finetune", "--no-lora", "--set", "train.head_only_steps=0",
                           "--set", "model.freeze_feature_encoder="
                           + str(base != "tiny" and args.pretrained_conv == "frozen").lower(),
                           "--max-steps", args.finetune_steps,
                           "--seed", seed, "--set", "train.num_workers=0", "-q", "--overwrite")
                lowres("eval", "--model", run, "--data", w / "prepared", "--split", "dev", "-q", "--overwrite")
            m = json.loads((run / "eval-dev" / "metrics.json").read_text())
            rows.append({"start": start, "seed": seed, "dev_wer": m["wer"], "dev_cer": m["cer"]})
    table = ["| start | dev CER (seeds) | mean | dev WER mean |", "|---|---|---|---|"]
    summary = {}
    for start, _ in starts:
        cers = [r["dev_cer"] for r in rows if r["start"] == start]
        wers = [r["dev_wer"] for r in rows if r["start"] == start]
        if not cers:
            continue
        summary[start] = {"dev_cer": cers, "dev_wer": wers}
        table.append(f"| {start} | {' / '.join(f'{100 * c:.1f}' for c in cers)} | {100 * statistics.mean(cers):.1f}% "
                     f"| {100 * statistics.mean(wers):.1f}% |")
    for name in [c for c in chosen if c.startswith("iter")]:
        last = last_row(w / name, "masked_accuracy")
        units = json.loads((w / name / "units" / "units.json").read_text())
        summary[name] = {"masked_accuracy": last["masked_accuracy"], "unmasked_accuracy": last.get("unmasked_accuracy"),
                         "predicted_perplexity": last["predicted_perplexity"],
                         "target_perplexity": last["target_perplexity"], "clusters": units["clusters"],
                         "targets": units["targets"], "chance": 1.0 / units["clusters"], "steps": last["step"]}
        table.append(f"\n{name}: {units['targets']}, {units['clusters']} clusters; after {last['step']} updates masked "
                     f"accuracy {100 * last['masked_accuracy']:.1f}% (chance {100 / units['clusters']:.1f}%), "
                     f"unmasked {100 * (last.get('unmasked_accuracy') or 0):.1f}%, predicted-unit perplexity "
                     f"{last['predicted_perplexity']:.1f} (targets {last['target_perplexity']:.1f})")
    summary["minutes"] = (time.perf_counter() - t0) / 60
    (w / "hubert_gain.md").write_text("\n".join(table) + "\n")
    (w / "hubert_gain.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
