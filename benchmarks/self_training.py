"""Self-training benchmark (issue #30): does a second fine-tune on labels + pseudo-labels beat the first?

On the demo's synthetic Swahili (the corpus ``lowres demo`` builds: 1 h transcribed + 0.5 h unlabeled, seed 0)
and through lowres's own CLI, for each seed:

    teacher    lowres finetune --split 10min --base tiny-ssl  (the demo's method and budget: 900 updates)
    round 1    lowres pseudolabel --model teacher --unlabeled prepared/unlabeled.jsonl --lm lm  (``--decoder
               lm``, the default: the demo's word 3-gram of the shipped Swahili word list; or greedy)
               lowres finetune --split 10min --base tiny-ssl --pseudo round1-pl   (from the base again, same budget)
    round 2    the same with the round-1 student as the teacher
    eval       test CER and WER of each, greedy

    python benchmarks/self_training.py --work /tmp/st                 # seeds 0 and 1 (about 35 minutes on 2 cores)
    python benchmarks/self_training.py --work /tmp/st --seeds 0 --rounds 1

Runs are reused when finished and resumed when stopped. Results: WORK/self_training.json and .md. The
real-speech rows (Dutch, from whisper-base) are run by hand with the same commands on the real-speech
benchmark's folders: see benchmarks/README.md, "Self-training and synthetic speech".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def lowres(*args, log: Path) -> None:
    cmd = [sys.executable, "-m", "lowres", *map(str, args)]
    print("$ lowres " + " ".join(map(str, args)), flush=True)
    with open(log, "a", encoding="utf-8") as sink:
        r = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT)
    if r.returncode:
        sys.exit(f"`lowres {' '.join(map(str, args))}` exited with {r.returncode}; see {log}")


def corpus(work: Path, log: Path) -> Path:
    """The demo's corpus and prepared folder (built as ``lowres demo`` builds them)."""
    from lowres.config import PrepareConfig
    from lowres.data.prepare import prepare
    from lowres.data.text import load_rules
    from lowres.demo import FULL
    from lowres.synth.corpus import build_corpus

    synth, prepared = work / "synth", work / "prepared"
    if not (synth / "synth_report.json").is_file():
        build_corpus(synth, lang="sw", hours=FULL.hours, unlabeled_hours=FULL.unlabeled_hours, seed=0, overwrite=True)
    if not (prepared / "prepare_report.json").is_file():
        prepare(synth / "labeled" / "corpus.tsv", prepared, PrepareConfig(seed=0), unlabeled=synth / "unlabeled",
                rules=load_rules("sw"), overwrite=True)
    return prepared


def finetune(run: Path, prepared: Path, seed: int, threads: int, log: Path, *extra) -> float:
    """The demo's 10min row (recipes/demo_finetune.toml and lowres/demo.py's flags) from tiny-ssl; minutes."""
    from lowres.demo import FROZEN_CONV_LAYERS, FULL

    if not (run / "summary.json").is_file():
        resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
        if resume:
            lowres("finetune", "--resume", "--out", run, "-q", log=log)
        else:
            lowres("finetune", "--data", prepared, "--split", "10min", "--base", "tiny-ssl", "--recipe",
                   "demo_finetune", "--no-lora", "--max-steps", FULL.steps_10min, "--seed", seed,
                   "--set", "method=none", "--set", "train.head_only_steps=0",
                   "--set", "model.freeze_feature_encoder=false",
                   "--set", f"model.frozen_conv_layers={FROZEN_CONV_LAYERS}", "--set", f"train.threads={threads}",
                   *extra, "--out", run, "--overwrite", "-q", log=log)
    summary = json.loads((run / "summary.json").read_text())
    return summary.get("train_seconds", summary.get("wall_seconds", 0.0)) / 60


def teacher_path(work: Path, seed: int) -> Path:
    """Where a seed's teacher (the demo's 10min run) is in WORK."""
    return work / f"s{seed}" / "teacher"


def demo_teacher(work: Path, name: str, threads: int) -> tuple[Path, Path, Path, Path]:
    """For a benchmark that builds on this one's WORK: its folder WORK/NAME and log, the demo's prepared folder
    and the seed-0 teacher, each made when missing."""
    bench = work / name
    bench.mkdir(parents=True, exist_ok=True)
    log = bench / "log.txt"
    prepared = corpus(work, log)
    teacher = teacher_path(work, 0)
    finetune(teacher, prepared, 0, threads, log)
    return bench, log, prepared, teacher


def evaluate(run: Path, prepared: Path, log: Path) -> dict:
    out = run / "eval-test"
    if not (out / "metrics.json").is_file():
        lowres("eval", "--model", run, "--data", prepared, "--split", "test", "--out", out, "--overwrite", "-q",
               log=log)
    return json.loads((out / "metrics.json").read_text())


def demo_lm(work: Path, prepared: Path) -> Path:
    """The demo's LM: a word 3-gram of the shipped Swahili word list (text alone, no transcript)."""
    from importlib import resources

    from lowres.lm.build import build_lm

    lm = work / "lm"
    if not (lm / "lm_report.json").is_file():
        with resources.as_file(resources.files("lowres.data.lang") / "sw_words.txt") as words:
            build_lm([words], lm, order=3, data=prepared, overwrite=True)
    return lm


def pseudolabel(teacher: Path, prepared: Path, out: Path, log: Path, lm: Path | None) -> dict:
    if not (out / "pseudolabel_report.json").is_file():
        resume = ["--resume"] if (out / "pseudolabel.json").is_file() else []
        lowres("pseudolabel", "--model", teacher, "--unlabeled", prepared / "unlabeled.jsonl", "--out", out,
               *(["--lm", lm] if lm else []), *resume, "-q", log=log)
    return json.loads((out / "pseudolabel_report.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decoder", choices=("greedy", "lm"), default="lm",
                    help="pseudo-labels by greedy decoding or by beam search with the demo's word 3-gram LM")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    log = a.work / "log.txt"
    prepared = corpus(a.work, log)
    lm = demo_lm(a.work, prepared) if a.decoder == "lm" else None
    tag = "" if a.decoder == "greedy" else "-lm"
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        teacher = teacher_path(a.work, seed)
        t0 = time.perf_counter()
        minutes = finetune(teacher, prepared, seed, a.threads, log)
        rows.append({"seed": seed, "round": 0, "decoder": a.decoder, "run": str(teacher), "minutes": round(minutes, 1),
                     **_scores(evaluate(teacher, prepared, log))})
        for r in range(1, a.rounds + 1):
            pl = a.work / f"s{seed}" / f"round{r}{tag}-pl"
            report = pseudolabel(teacher, prepared, pl, log, lm)
            student = a.work / f"s{seed}" / f"round{r}{tag}"
            minutes = finetune(student, prepared, seed, a.threads, log, "--pseudo", pl)
            rows.append({"seed": seed, "round": r, "decoder": a.decoder, "run": str(student), "minutes": round(minutes, 1),
                         "pseudo_pieces": report["kept"], "pseudo_hours": report["kept_hours"],
                         **_scores(evaluate(student, prepared, log))})
            teacher = student
        print(f"seed {seed}: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    (a.work / f"self_training{tag}.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| seed | round | test WER | test CER | pseudo-labels | minutes |", "|---|---|---|---|---|---|"]
    for r in rows:
        pl = f"{r['pseudo_pieces']} ({60 * r['pseudo_hours']:.0f} min)" if r["round"] else "-"
        lines.append(f"| {r['seed']} | {r['round'] or 'teacher'} | {100 * r['wer']:.1f}% | {100 * r['cer']:.1f}% | "
                     f"{pl} | {r['minutes']} |")
    (a.work / f"self_training{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"load average: {os.getloadavg()[0]:.2f}")


def _scores(m: dict) -> dict:
    return {"wer": m["wer"], "cer": m["cer"]}


if __name__ == "__main__":
    main()
