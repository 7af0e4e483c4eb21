"""Real-speech benchmark: lowres's whole pipeline, through its own CLI, on real recorded speech.

The corpora come from Debian main (``apt-get download``, no root needed for the download folder), are unpacked
into a cache folder and written as ``table`` corpora (``corpus.jsonl``: id, audio, text, speaker, split):

- ``nl``: Fish Fillets NG's Dutch voice acting (GPL-2): ~1,528 lines, ~91 min, 22.05 kHz Vorbis, 20 character
  voices of which two speak ~80%;
- ``en``, ``es``, ``fr``, ``it``, ``ru``: the Asterisk core sounds (CC-BY-SA-3.0 / CC-BY-3.0): one professional
  voice each, 24-31 min of short IVR prompts, 8 kHz wav (narrow-band: lowres upsamples it).

None of them has an official split: each gets a seeded utterance-level dev and test (10% + 10%), written into
the table's split column, so dev/test hear the training voices (there is no other voice to hear). Each corpus
then goes through the user's story (an hour recorded, ten minutes transcribed):

    lowres prepare corpus.jsonl --unlabeled AUDIO --lang L --digits spell      (dev/test audio is left out of
                                                                               the unlabeled pieces)
    lowres lm --data PREPARED --order 3                                        (the training pool's transcripts)
    lowres adapt --objective hubert --base B --recipe demo_adapt               (the untranscribed audio; a start
                                                                               with +adapt)
    lowres finetune --split 10min (and 1h for nl) from each start              (the method of each base)
    lowres eval --split test, greedy and with the LM (its weights tuned on dev)

Starts (``STARTS``; ``--starts`` picks): ``tiny`` (random init), ``tiny-ssl`` (the shipped base),
``tiny-ssl+adapt``, fine-tuned with the demo's method (the whole model, no LoRA, the conv encoder trained above
its 3 lowest layers, speed perturbation in 5 steps; recipes/tiny_ssl.toml is the same method), 2,000 updates;
``whisper-base`` (Whisper's encoder, LoRA + CTC, recipes/whisper.toml, 1,100 updates of 20 s), its frozen encoder
under ``--head weighted`` (and the same padded to the 30-s window), ``whisper-base+adapt``, and
``whisper-base-zeroshot`` (Whisper's own decoder, no fine-tuning: ``lowres eval --whisper``).

    python benchmarks/real_speech.py --work /tmp/real                 # every corpus and start (hours on 2 cores)
    python benchmarks/real_speech.py --work /tmp/real-quick --quick   # one corpus, one start: a few minutes

The packages are cached in ``--cache`` (default ``~/.cache/lowres/real-speech``); every run is a normal lowres
folder under ``--work``, and running the command again reuses what is finished and resumes a stopped
fine-tune or adapt from its checkpoint. Results: ``WORK/real_speech.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lowres.data.debian import CORPORA, Corpus, fetch, write_corpus  # the corpora live in lowres


def _die(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


# ---------------------------------------------------------------------------------------------------
# running lowres


@dataclass(frozen=True)
class Start:
    """A start of the table: the base and the fine-tuning method the README recommends for it."""

    base: str  # --base (or the base adapted first, with ``adapt``)
    flags: tuple[str, ...] = ()  # finetune's method
    zero_shot: bool = False  # no fine-tuning: Whisper's own decoder (lowres eval --whisper)
    adapt: tuple[str, ...] | None = None  # adapt ``base`` first on the corpus's untranscribed audio, with these flags


# adapt's settings: the demo's for the shipped base (HuBERT, its own kind of units: 100 clusters of layer 2); for
# Whisper the same with the units of its middle layer and the lower lr of a pretrained encoder (recipes/adapt.toml)
ADAPT_SSL = ("--objective", "hubert", "--recipe", "demo_adapt")
# (refused by adapt since it collapsed in every setting tried: --set hubert.whisper=true runs it for this row)
ADAPT_WHISPER = ("--objective", "hubert", "--recipe", "demo_adapt", "--targets", "layer:3", "--lr", "1e-4",
                 "--set", "hubert.whisper=true")


# the demo's fine-tuning method, the one the README recommends for tiny-ssl and the random init (lowres.demo)
FINETUNE = ("--recipe", "demo_finetune", "--no-lora", "--set", "train.head_only_steps=0",
            "--set", "model.freeze_feature_encoder=false", "--set", "model.frozen_conv_layers=3")
STARTS = {
    "tiny": Start("tiny", FINETUNE),
    "tiny-ssl": Start("tiny-ssl", FINETUNE),
    "tiny-ssl+adapt": Start("tiny-ssl", FINETUNE, adapt=ADAPT_SSL),
    # Whisper's encoder: LoRA + CTC (recipes/whisper.toml), the frozen encoder under --head weighted, and its
    # own decoder without fine-tuning
    "whisper-base": Start("whisper-base", ("--recipe", "whisper")),
    "whisper-base-weighted": Start("whisper-base", ("--recipe", "whisper", "--head", "weighted")),
    # the same frozen encoder with every clip padded to Whisper's 30-s window (its training condition) instead of
    # the position table sliced to the clip: the quality side of model.whisper_window
    "whisper-base-weighted-window": Start("whisper-base", ("--recipe", "whisper", "--head", "weighted",
                                                           "--set", "model.whisper_window=true")),
    "whisper-base+adapt": Start("whisper-base", ("--recipe", "whisper"), adapt=ADAPT_WHISPER),
    # adapt's effect on the representation alone, at a tenth of the cost: the adapted encoder frozen, weighted head
    "whisper-base-weighted+adapt": Start("whisper-base", ("--recipe", "whisper", "--head", "weighted"),
                                         adapt=ADAPT_WHISPER),
    "whisper-base-zeroshot": Start("whisper-base", zero_shot=True),
}


def _adapt_folder(work: Path, corpus: str, base: str) -> Path:
    """The corpus's adapt run of ``base`` (the shipped base's keeps its first name, adapt)."""
    return work / "runs" / corpus / ("adapt" if base == "tiny-ssl" else f"adapt-{base}")


@dataclass
class Budget:
    adapt_steps: int = 300
    steps: dict = field(default_factory=lambda: {"10min": 2000, "1h": 2000})  # fine-tuning updates per split
    whisper_steps: dict = field(default_factory=lambda: {"10min": 1100, "1h": 1100})  # Whisper's (20-s batches)
    starts: tuple[str, ...] = ("tiny", "tiny-ssl", "tiny-ssl+adapt")
    corpora: tuple[str, ...] = tuple(CORPORA)
    lm: bool = True

    def updates(self, start: str, split: str) -> int:
        return (self.whisper_steps if start.startswith("whisper") else self.steps).get(split, 0)


QUICK = Budget(adapt_steps=0, steps={"10min": 600, "1h": 0}, starts=("tiny-ssl",), corpora=("en",))
ROW = "bench_row.json"  # each run's row of the table, written when its evaluation is done


def lowres(*args, log: Path | None = None) -> float:
    """Run ``lowres ARGS`` (this Python's) and return its minutes; stops the benchmark where it fails."""
    cmd = [sys.executable, "-m", "lowres", *map(str, args)]
    print("$ lowres " + " ".join(map(str, args)), flush=True)
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") if log else open(os.devnull, "w") as sink:
        r = subprocess.run(cmd, stdout=sink if log else None, stderr=subprocess.STDOUT if log else None)
    if r.returncode:
        _die(f"`lowres {' '.join(map(str, args))}` exited with {r.returncode}" + (f"; see {log}" if log else ""))
    return (time.perf_counter() - t0) / 60


def _train(kind: str, run: Path, args: list, log: Path) -> float:
    """An adapt or finetune run: started, resumed from its last complete checkpoint, or reused when finished."""
    from lowres.runs import RUN_SUMMARY, is_run
    from lowres.train.checkpoint import latest_checkpoint

    if not (run / RUN_SUMMARY).is_file():
        if is_run(run) and latest_checkpoint(run) is not None:
            lowres(kind, "--resume", "--out", run, "-q", log=log)
        else:
            lowres(kind, *args, "--out", run, "--overwrite", "-q", log=log)
    summary = json.loads((run / RUN_SUMMARY).read_text())
    # train_seconds: the training loop's time over every process of a resumed run (wall_seconds: the last one's)
    return summary.get("train_seconds", summary.get("wall_seconds", 0.0)) / 60


def _eval(run: Path, prepared: Path, out: Path, lm: Path | None, log: Path) -> dict:
    if not (out / "metrics.json").is_file():
        args = ["eval", "--model", run, "--data", prepared, "--split", "test", "--out", out, "--overwrite", "-q"]
        if lm is not None:
            args += ["--lm", lm, "--tune-lm"]
        lowres(*args, log=log)
    return _metrics(out)


def _metrics(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    hyps = [json.loads(x) for x in (out / "hyps.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    return {"wer": m["wer"], "cer": m["cer"], "utterances": m["num_utterances"],
            "empty_hypotheses": sum(1 for h in hyps if not h.get("hypothesis", "").strip()), "rtf": m.get("rtf")}


def _has_lm_extra() -> bool:
    try:
        import flashlight.lib.text  # noqa: F401
    except ImportError:
        return False
    return True


def prepare_corpus(corpus: Corpus, cache: Path, work: Path) -> tuple[Path, dict, Path]:
    """``corpus`` fetched, written as a table and prepared (what is done already is kept): the prepared folder,
    its report and the corpus's log."""
    root = fetch(cache, corpus.packages)
    folder = work / "corpora" / corpus.name
    prepared = work / "prepared" / corpus.name
    log = work / "logs" / f"{corpus.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if not (prepared / "prepare_report.json").is_file():
        written = write_corpus(corpus, root, folder)
        (folder / "written.json").write_text(json.dumps(written, indent=1) + "\n")
        lowres("prepare", folder / "corpus.jsonl", "--out", prepared, "--unlabeled", folder / "unlabeled",
               "--lang", corpus.lang, "--digits", "spell", "--overwrite", log=log)
    return prepared, json.loads((prepared / "prepare_report.json").read_text()), log


def kept_line(corpus: Corpus, report: dict) -> str:
    """What ``prepare`` kept of a corpus, in one line: the issue's target is 95% of its transcribed utterances."""
    kept, audio = report.get("kept", {}), report.get("audio", {})
    return (f"{corpus.name}: kept {kept.get('utterances_kept')} of {kept.get('utterances_listed')} transcribed "
            f"utterances ({100 * (kept.get('share') or 0):.1f}%), narrow-band share "
            f"{100 * (audio.get('narrowband_share') or 0):.0f}%, labeled rejects "
            f"{report.get('rejects', {}).get('labeled', {}) or 'none'}")


def run_corpus(corpus: Corpus, cache: Path, work: Path, b: Budget, seed: int, threads: int) -> None:
    """Every start of ``b`` on ``corpus``: prepared, adapted, fine-tuned and evaluated as needed; each run's row is
    written beside it (``ROW``), so that separate invocations (say, Whisper's starts beside the others) add up."""
    prepared, report, log = prepare_corpus(corpus, cache, work)
    lm = None
    if b.lm and _has_lm_extra():
        lm = work / "lm" / corpus.name
        if not (lm / "lm.arpa").is_file():
            lowres("lm", "--data", prepared, "--order", 3, "--out", lm, "--overwrite", "-q", log=log)
    common = ["--set", f"train.threads={threads}", "--seed", seed]
    adapt_min = {}
    for name in b.starts:
        start = STARTS[name]
        if start.adapt is not None and start.base not in adapt_min:
            adapt_min[start.base] = _train("adapt", _adapt_folder(work, corpus.name, start.base),
                                           [*start.adapt, "--base", start.base, "--unlabeled",
                                            prepared / "unlabeled.jsonl", "--max-steps", b.adapt_steps, *common], log)
    kept = report.get("kept", {})
    about = {"kept_share": kept.get("share"), "utterances": kept.get("utterances_kept"),
             "listed": kept.get("utterances_listed"), "narrowband_share": report.get("audio", {}).get("narrowband_share"),
             "hours": {s: report["splits"][s]["hours"] for s in ("10min", "1h", "full", "dev", "test")}}
    for split in corpus.splits:
        for name in b.starts:
            start, steps = STARTS[name], b.updates(name, split)
            run = work / "runs" / corpus.name / (name if start.zero_shot else f"{split}-{name}")
            if not steps or (run / ROW).is_file() or (start.zero_shot and split != corpus.splits[0]):
                continue
            row = {"corpus": corpus.name, "split": "-" if start.zero_shot else split, "start": name,
                   "updates": 0 if start.zero_shot else steps}
            if start.zero_shot:
                t0 = time.perf_counter()
                lowres("eval", "--whisper", start.base, "--language", corpus.lang, "--data", prepared, "--split",
                       "test", "--out", run / "eval-test", "--overwrite", "-q", log=log)
                row["decode_minutes"] = round((time.perf_counter() - t0) / 60, 1)
                row["greedy"] = _metrics(run / "eval-test")
            else:
                base = str(_adapt_folder(work, corpus.name, start.base)) if start.adapt else start.base
                minutes = _train("finetune", run, ["--data", prepared, "--split", split, "--base", base,
                                                   "--max-steps", steps, *start.flags, *common], log)
                row["train_minutes"] = round(minutes, 1)
                row["greedy"] = _eval(run, prepared, run / "eval-test", None, log)
                if lm is not None:  # a copy per run: --tune-lm stores the weights it finds in the LM folder
                    if not (run / "lm").is_dir():
                        shutil.copytree(lm, run / "lm")
                    row["lm"] = _eval(run, prepared, run / "eval-test-lm", run / "lm", log)
                if start.adapt is not None:
                    row["adapt_updates"], row["adapt_minutes"] = b.adapt_steps, round(adapt_min[start.base], 1)
            row["load_average_1min"] = round(os.getloadavg()[0], 2)
            row["prepared"] = about
            run.mkdir(parents=True, exist_ok=True)
            (run / ROW).write_text(json.dumps(row, indent=1) + "\n")
            print(json.dumps(row), flush=True)


def collect(work: Path) -> list[dict]:
    """Every row written under ``work``, in the table's order (corpus, split, start)."""
    rows = []
    for path in work.glob(f"runs/*/*/{ROW}"):
        row = json.loads(path.read_text())
        if "rtf" not in row["greedy"] and (path.parent / "eval-test" / "metrics.json").is_file():
            row["greedy"] = _metrics(path.parent / "eval-test")  # rows written before the RTF was kept
        rows.append(row)
    order = {name: i for i, name in enumerate(STARTS)}
    return sorted(rows, key=lambda r: (list(CORPORA).index(r["corpus"]), r["split"] != "-", r["split"],
                                       order.get(r["start"], 99)))


def table(rows: list[dict]) -> str:
    lines = ["| corpus | split | start | updates | test WER | test CER | WER+LM | CER+LM | empty hyps | minutes | "
             "s/update | RTF | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g, lm = r["greedy"], r.get("lm")
        with_lm = [f"{100 * lm[k]:.1f}%" if lm else "-" for k in ("wer", "cer")]
        minutes = r.get("train_minutes")
        per_update = f"{60 * minutes / r['updates']:.1f}" if minutes and r["updates"] else "-"
        rtf = f"{g['rtf']:.3f}" if g.get("rtf") is not None else "-"
        lines.append(
            f"| {r['corpus']} | {r['split']} | {r['start']} | {r['updates']} | {100 * g['wer']:.1f}% | "
            f"{100 * g['cer']:.1f}% | {with_lm[0]} | {with_lm[1]} | {g['empty_hypotheses']}/{g['utterances']} | "
            f"{minutes if minutes is not None else r.get('decode_minutes', '-')} | {per_update} | {rtf} | "
            f"{r.get('load_average_1min', '-')} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["start"] in STARTS]  # rows kept under another name (older settings): the table's
    groups = sorted({(r["corpus"], r["split"]) for r in rows if r["split"] != "-"},
                    key=lambda g: (list(CORPORA).index(g[0]), g[1]))
    starts = [s for s in STARTS if any(r["start"] == s for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) + 2), 4.5), dpi=110)
    width = 0.8 / max(1, len(starts))
    for k, start in enumerate(starts):
        xs, ys = [], []
        for g, (corpus, split) in enumerate(groups):
            # a zero-shot row belongs to no split: it stands beside every split of its corpus
            found = [r for r in rows if r["corpus"] == corpus and r["start"] == start and r["split"] in (split, "-")]
            if found:
                xs.append(g + (k - (len(starts) - 1) / 2) * width)
                ys.append(100 * found[0]["greedy"]["cer"])
        ax.bar(xs, ys, width, label=start)
    ax.set_xticks(range(len(groups)), [f"{c}\n{s}" for c, s in groups])
    ax.axhline(100, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("test CER % (greedy)")
    ax.set_title("lowres on real speech: test CER per corpus, split and start")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="where corpora tables, prepared folders and runs go")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "lowres" / "real-speech",
                    help="where the Debian packages are downloaded and unpacked")
    ap.add_argument("--corpora", default=None, help=f"comma-separated, from {', '.join(CORPORA)} (default: all)")
    ap.add_argument("--starts", default=None, help=f"comma-separated, from {', '.join(STARTS)} (default: the first three)")
    ap.add_argument("--steps", type=int, default=None, help="fine-tuning updates per run (default 2000)")
    ap.add_argument("--adapt-steps", type=int, default=None, help="adapt updates (default 300)")
    ap.add_argument("--quick", action="store_true", help="one corpus (en), one start (tiny-ssl), 600 updates")
    ap.add_argument("--no-lm", action="store_true", help="greedy only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="train.threads of every run (0: torch's default)")
    ap.add_argument("--prepare-only", action="store_true", help="fetch, write and prepare the corpora, and say "
                    "what each kept (seconds per corpus once fetched)")
    ap.add_argument("--table", action="store_true", help="only gather the rows written under --work into the "
                    "table, JSON and PNG (no run)")
    args = ap.parse_args()
    b = QUICK if args.quick else Budget()
    if args.corpora:
        unknown = set(args.corpora.split(",")) - set(CORPORA)
        if unknown:
            _die(f"unknown corpus {', '.join(sorted(unknown))}: choose from {', '.join(CORPORA)}")
        b.corpora = tuple(args.corpora.split(","))
    if args.starts:
        unknown = set(args.starts.split(",")) - set(STARTS)
        if unknown:
            _die(f"unknown start {', '.join(sorted(unknown))}: choose from {', '.join(STARTS)}")
        b.starts = tuple(args.starts.split(","))
    if args.steps:
        b.steps = dict.fromkeys(b.steps, args.steps)
    if args.adapt_steps is not None:
        b.adapt_steps = args.adapt_steps
    if args.no_lm:
        b.lm = False
    if b.lm and not _has_lm_extra():
        print("note: the lm extra (flashlight-text) is not installed: greedy rows only", flush=True)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.prepare_only:
        for name in b.corpora:
            print(kept_line(CORPORA[name], prepare_corpus(CORPORA[name], args.cache, work)[1]), flush=True)
        return
    for name in () if args.table else b.corpora:
        run_corpus(CORPORA[name], args.cache, work, b, args.seed, args.threads)
    rows = collect(work)
    result = {"budget": {"adapt_steps": b.adapt_steps, "steps": b.steps, "starts": b.starts, "lm": b.lm},
              "seed": args.seed, "rows": rows, "wall_minutes": round((time.perf_counter() - t0) / 60, 1),
              "corpora": {n: {"title": CORPORA[n].title, "licence": CORPORA[n].licence} for n in b.corpora}}
    (work / "real_speech.json").write_text(json.dumps(result, indent=1) + "\n")
    md = table(rows)
    (work / "real_speech.md").write_text(md + "\n")
    plot(rows, work / "real_speech.png")
    print(md)
    print(f"\n{result['wall_minutes']} min; {work / 'real_speech.json'}, .md and .png")


if __name__ == "__main__":
    from lowres import LowresError

    try:
        main()
    except LowresError as err:  # the corpora's fetcher says what to do
        _die(str(err))
