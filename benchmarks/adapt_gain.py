"""Does `lowres adapt` help? Fine-tuning on 10 minutes of Swahili with and without continued pretraining on
the corpus's unlabeled audio, from the same starting weights and with the same fine-tuning budget.

    python benchmarks/adapt_gain.py --work /tmp/quality        # about 90 min on 2 CPU cores

Figures, machine and commands: benchmarks/README.md ("Does adapt help?").

Users continue the pretraining of a model trained on other data (XLS-R, MMS, wav2vec2-base). Without the
network, this benchmark makes such a base itself: the `tiny` model trained with CTC on 2 h of another
synthetic language (Turkish eSpeak voices reading seeded pseudo-words, so it shares no word with the
Swahili text). The Swahili corpus is the quality benchmark's (`quality.py`'s `ensure_corpus`: 10 h
labeled, 10 h unlabeled, seed 0; reused when it is already in --work).

Every step is a `lowres` command line (printed before it runs; two run at a time, one thread each, where
they do not depend on each other), and each one's output folder is kept, so a second call only runs what is
missing:

1. the base: `lowres synth --lang tr` (2 h labeled, 10 h unlabeled), `lowres prepare --lang tr`,
   `lowres finetune --split full --base tiny` (1,500 updates of `demo_finetune`);
2. adapt runs, 2,000 updates each (`demo_adapt`, lr 1e-4): the base on the Swahili unlabeled audio; the
   base on the Turkish unlabeled audio (a control: the same updates, audio of the wrong language); `tiny`
   (random init) on the Swahili unlabeled audio;
3. `lowres finetune --split 10min` (500 updates of `demo_finetune`, the whole model trains) from `tiny`, the
   base and each adapt run, once per fine-tuning seed (`--seeds`, default 2: `train.seed` 0 and 1);
4. `lowres eval` of each on the whole Swahili dev and test sets (greedy decoding).

Writes ``adapt_gain.json`` and ``adapt_gain.md`` (the table) into --work.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import ensure_corpus  # noqa: E402

LOWRES = [sys.executable, "-m", "lowres"]
FT = ["--recipe", "demo_finetune", "--no-lora", "--set", "train.head_only_steps=0",
      "--set", "model.freeze_feature_encoder=false", "--set", "train.threads=1"]
ADAPT = ["--recipe", "demo_adapt", "--max-steps", "2000", "--set", "optim.lr=1e-4", "--set", "train.threads=1"]
FINETUNE_STEPS = 500


def pseudo_words(path: Path, n: int = 3000, seed: int = 7) -> None:
    """``n`` distinct pseudo-words spelled with Turkish letters (syllables C?V C?), seeded."""
    rng = random.Random(seed)
    consonants, vowels = list("bcçdfghjklmnprsştvyz"), list("aeıioöuü")
    words: set[str] = set()
    while len(words) < n:
        word = ""
        for i in range(rng.choice([1, 2, 2, 3, 3, 4])):
            syllable = (rng.choice(consonants) if rng.random() < 0.85 or i > 0 else "") + rng.choice(vowels)
            if rng.random() < 0.3:
                syllable += rng.choice(consonants)
            word += syllable
        if 2 <= len(word) <= 12:
            words.add(word)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sorted(words)) + "\n", encoding="utf-8")


class Jobs:
    """Named command lines with dependencies, run two at a time; a job whose ``done`` file exists is skipped."""

    def __init__(self, work: Path, slots: int = 2):
        self.work, self.slots, self.jobs = work, slots, {}

    def add(self, name: str, argv: list[str], done: Path, after: tuple[str, ...] = ()) -> None:
        self.jobs[name] = {"argv": argv, "done": done, "after": after}

    def run(self) -> None:
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        finished = {n for n, j in self.jobs.items() if j["done"].is_file()}
        running: dict[str, tuple[subprocess.Popen, float]] = {}
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        while len(finished) < len(self.jobs):
            for name, (proc, started) in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
                    if proc.returncode != 0 or not self.jobs[name]["done"].is_file():
                        sys.exit(f"{name} failed (exit {proc.returncode}); see {logs / name}.log")
                    finished.add(name)
                    print(f"done  {name} ({(time.perf_counter() - started) / 60:.1f} min)", flush=True)
            ready = [n for n, j in self.jobs.items() if n not in finished and n not in running
                     and all(a in finished for a in j["after"])]
            while ready and len(running) < self.slots:
                name = ready.pop(0)
                argv = self.jobs[name]["argv"]
                print("start", name, ":", " ".join(str(a) for a in argv[2:]), flush=True)
                with open(logs / f"{name}.log", "w") as log:
                    running[name] = (subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                                                      env=env), time.perf_counter())
            time.sleep(2)


def ft_name(start: str, seed: int) -> str:
    return f"ft10min-{start}" + (f"-seed{seed}" if seed else "")


def last_adapt_window(run: Path) -> dict:
    from lowres.train.plot import read_metrics

    last = [r for r in read_metrics(run / "metrics.jsonl") if "accuracy" in r][-1]
    return {k: last[k] for k in ("step", "contrastive", "accuracy", "prob_perplexity")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="working folder (the quality benchmark's is reused)")
    ap.add_argument("--seeds", type=int, default=2,
                    help="fine-tune each start with train.seed 0..N-1 (batch order, head init) and average")
    args = ap.parse_args()
    work = args.work.resolve()
    t0 = time.perf_counter()
    sw = ensure_corpus(work, 10.0, 10.0, 0)
    tr = work / "tr"
    pseudo_words(tr / "words.txt")

    jobs = Jobs(work)
    jobs.add("synth-tr", LOWRES + ["synth", "--lang", "tr", "--words", tr / "words.txt", "--hours", "2",
                                   "--unlabeled-hours", "10", "--seed", "0", "--out", tr / "synth"],
             tr / "synth" / "synth_report.json")
    jobs.add("prepare-tr", LOWRES + ["prepare", tr / "synth" / "labeled" / "corpus.tsv", "--unlabeled",
                                     tr / "synth" / "unlabeled", "--lang", "tr", "--out", tr / "prepared"],
             tr / "prepared" / "prepare_report.json", after=("synth-tr",))
    base = work / "base-tr"
    jobs.add("base-tr", LOWRES + ["finetune", "--data", tr / "prepared", "--split", "full", "--base", "tiny", *FT,
                                  "--max-steps", "1500", "--eval-every", "500", "--out", base],
             base / "summary.json", after=("prepare-tr",))
    adapts = {  # name: (base, unlabeled manifest, depends on)
        "adapt-tiny-sw": ("tiny", sw / "unlabeled.jsonl", ()),
        "adapt-base-sw": (base, sw / "unlabeled.jsonl", ("base-tr",)),
        "adapt-base-tr": (base, tr / "prepared" / "unlabeled.jsonl", ("base-tr",)),
    }
    for name, (b, manifest, after) in adapts.items():
        jobs.add(name, LOWRES + ["adapt", "--unlabeled", manifest, "--base", b, *ADAPT, "--out", work / name],
                 work / name / "summary.json", after=after)
    starts = {"tiny": ("tiny", ()), "base-tr": (base, ("base-tr",)),
              **{name: (work / name, (name,)) for name in adapts}}
    seeds = range(args.seeds)
    for name, (b, after) in starts.items():
        for seed in seeds:
            tag = ft_name(name, seed)
            run = work / tag
            jobs.add(tag, LOWRES + ["finetune", "--data", sw, "--split", "10min", "--base", b, *FT,
                                    "--set", f"train.seed={seed}", "--max-steps", str(FINETUNE_STEPS),
                                    "--eval-every", "100", "--out", run], run / "summary.json", after=after)
            for split in ("dev", "test"):
                jobs.add(f"eval-{split}-{tag}", LOWRES + ["eval", "--model", run, "--data", sw, "--split", split,
                                                          "--out", run / f"eval-{split}"],
                         run / f"eval-{split}" / "metrics.json", after=(tag,))
    jobs.run()

    labels = {"tiny": ("tiny (random init)", "—"), "adapt-tiny-sw": ("tiny (random init)", "Swahili, 10 h"),
              "base-tr": ("base: tiny + CTC on 2 h of Turkish", "—"),
              "adapt-base-sw": ("base: tiny + CTC on 2 h of Turkish", "Swahili, 10 h"),
              "adapt-base-tr": ("base: tiny + CTC on 2 h of Turkish", "Turkish, 10 h (control)")}
    rows = []
    for name in starts:
        runs = []
        for seed in seeds:
            run = work / ft_name(name, seed)
            dev = json.loads((run / "eval-dev" / "metrics.json").read_text())
            test = json.loads((run / "eval-test" / "metrics.json").read_text())
            summary = json.loads((run / "summary.json").read_text())
            runs.append({"seed": seed, "best_update": summary.get("best_step"), "dev_wer": dev["wer"],
                         "dev_cer": dev["cer"], "test_wer": test["wer"], "test_cer": test["cer"]})
        mean = {k: sum(r[k] for r in runs) / len(runs) for k in ("dev_wer", "dev_cer", "test_wer", "test_cer")}
        rows.append({"start": name, "label": labels[name][0], "adapt": labels[name][1], "updates": FINETUNE_STEPS,
                     "runs": runs, **mean, "adapt_end": last_adapt_window(work / name) if name in adapts else None})

    def cell(r: dict, key: str) -> str:
        each = " / ".join(f"{100 * x[key]:.1f}" for x in r["runs"])
        return f"{100 * r[key]:.1f}%" + (f" ({each})" if len(r["runs"]) > 1 else "")

    lines = [f"Fine-tuning seeds: {', '.join(map(str, seeds))}; each cell is the mean (each seed's figure).", "",
             "| start | adapt on | 10min fine-tuning | dev WER | dev CER | test WER | test CER |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['adapt']} | {r['updates']} updates | {cell(r, 'dev_wer')} | {cell(r, 'dev_cer')} | "
              f"{cell(r, 'test_wer')} | {cell(r, 'test_cer')} |" for r in rows]
    for r in rows:
        if r["adapt_end"]:
            a = r["adapt_end"]
            lines.append(f"\n{r['start']}: after {a['step']} updates, contrastive accuracy {100 * a['accuracy']:.1f}%, "
                         f"loss {a['contrastive']:.3f}, probability perplexity {a['prob_perplexity']:.0f}")
    result = {"rows": rows, "wall_minutes": (time.perf_counter() - t0) / 60}
    (work / "adapt_gain.json").write_text(json.dumps(result, indent=1) + "\n")
    (work / "adapt_gain.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
