"""Alignment benchmark (issue #31): how close `lowres align` cuts long recordings to the true sentence boundaries,
what training on its cuts gives, and what it does with damaged transcripts.

Synthetic chapters: ``lowres synth`` speaks Swahili sentences with three eSpeak voices (seed 5: sentences the
demo corpus does not have); each voice's clips, trimmed of silence at -40 dB of their peak, are joined with
0.3-1.5 s pauses into chapters of ~11 min (the training voice's three) and ~3 min (the two held-out voices') whose true sentence boundaries are known. The aligner is the
demo's 10min run (built as ``lowres demo`` builds it, through benchmarks/self_training.py's helpers: the same
WORK folder is reused). Then:

    (a) boundary error of every line against the truth, per aligner (the 10min run; with ``--better RUN`` a
        stronger one too); fine-tuning from tiny-ssl on the aligned segments vs on the true segments (same
        lines, same dev lines, same budget: the demo's 900 updates), test CER on the demo's test set;
    (b) with ``--real-model RUN --real-data PREPARED``: a real chapter, the prepared test lines of a real corpus
        joined the same way, aligned with that run;
    (c) chapter 1 with damaged text: five lines missing from the text, five lines of another chapter added,
        two lines swapped: what is kept, what is rejected, and the boundary error of what is kept;
    (d) an hour: the three chapters joined (and again, to an hour) aligned as one file: real-time factor and
        peak memory.

    python benchmarks/align.py --work /tmp/st                   # ~25 min on 2 cores with the demo's runs made
    python benchmarks/align.py --work /tmp/st --real-model RUN --real-data PREPARED --skip-finetune

Results: WORK/align/align_bench.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from self_training import demo_teacher, finetune, lowres  # noqa: E402

SR = 16000


def trimmed(path: Path, offset: float = 0.0, duration: float | None = None) -> np.ndarray:
    """A clip (16 kHz mono) without its leading and trailing silence (below -40 dB of its peak)."""
    from lowres.data.audio import load

    wave = load(path, offset_s=offset, duration_s=duration)
    loud = np.abs(wave) > 0.01 * np.abs(wave).max()
    first, last = int(np.argmax(loud)), len(wave) - int(np.argmax(loud[::-1]))
    return wave[first:last].astype(np.float32)


def chapter(out: Path, clips: list[tuple[str, np.ndarray]], seed: int) -> list[dict]:
    """out.wav + out.txt (one line per clip) + out.truth.json: clips joined with 0.3-1.5 s pauses."""
    rng = random.Random(seed)
    parts, truth, t = [], [], 0.0
    for text, wave in clips:
        gap = np.zeros(int(SR * rng.uniform(0.3, 1.5)), np.float32)
        parts += [gap, wave]
        t += len(gap) / SR
        truth.append({"text": text, "start": round(t, 4), "end": round(t + len(wave) / SR, 4)})
        t += len(wave) / SR
    parts.append(np.zeros(SR, np.float32))
    sf.write(out.with_suffix(".wav"), np.concatenate(parts), SR, subtype="PCM_16")
    out.with_suffix(".txt").write_text("".join(x["text"] + "\n" for x in truth), encoding="utf-8")
    out.with_suffix(".truth.json").write_text(json.dumps(truth), encoding="utf-8")
    return truth


def synthetic_chapters(work: Path, log: Path) -> list[Path]:
    synth = work / "chapter-synth"
    if not (synth / "synth_report.json").is_file():
        lowres("synth", "--lang", "sw", "--hours", 0.5, "--unlabeled-hours", 0, "--speakers", 3, "--seed", 5,
               "--out", synth, "--overwrite", log=log)
    import csv

    rows = list(csv.DictReader(open(synth / "labeled" / "corpus.tsv", encoding="utf-8"), delimiter="\t"))
    by_voice: dict[str, list[dict]] = {}
    for r in rows:
        by_voice.setdefault(r["speaker"], []).append(r)
    groups = []  # each voice's clips in chapters of at most ~12 minutes, the longest chapters first
    for voice in sorted(by_voice):
        clips = by_voice[voice]
        total = sum(sf.info(synth / "labeled" / r["audio"]).duration for r in clips)
        n = max(1, round(total / 720))
        groups += [clips[i::n] for i in range(n)] if n > 1 else [clips]
    groups.sort(key=len, reverse=True)
    out = []
    for k, clips in enumerate(groups):
        path = work / "chapters" / f"chapter{k + 1}"
        if not path.with_suffix(".truth.json").is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            chapter(path, [(r["text"], trimmed(synth / "labeled" / r["audio"])) for r in clips], seed=k)
        out.append(path)
    return out


def align(model: Path, out: Path, log: Path, *inputs, extra=()) -> dict:
    if not (out / "align_report.json").is_file():
        lowres("align", *inputs, "--model", model, "--out", out, "--overwrite", "-q", *extra, log=log)
    return json.loads((out / "align_report.json").read_text())


def boundary_errors(out: Path, truths: dict[str, list[dict]]) -> dict:
    """Start and end errors (s) of every kept line against its true boundaries: median, 95th percentile, max."""
    errors = []
    for line in open(out / "segments.jsonl", encoding="utf-8"):
        s = json.loads(line)
        t = truths[s["file"]][s["line"] - 1]
        errors += [abs(s["start"] - t["start"]), abs(s["end"] - t["end"])]
    errors.sort()
    if not errors:
        return {"boundaries": 0}
    return {"boundaries": len(errors), "median_ms": round(1000 * statistics.median(errors)),
            "p95_ms": round(1000 * errors[int(0.95 * (len(errors) - 1))]), "max_ms": round(1000 * errors[-1]),
            "within_200ms": round(sum(e <= 0.2 for e in errors) / len(errors), 4)}


def part_a(work: Path, teacher: Path, better: Path | None, chapters: list[Path], log: Path) -> dict:
    pairs = work / "pairs"
    pairs.mkdir(exist_ok=True)
    for c in chapters:
        for suffix in (".wav", ".txt"):
            link = pairs / (c.name + suffix)
            if not link.exists():
                link.symlink_to(c.with_suffix(suffix))
    truths = {c.name: json.loads(c.with_suffix(".truth.json").read_text()) for c in chapters}
    rows = {}
    for name, model, extra in (("10min", teacher, ()), ("10min-nosnap", teacher, ("--set", "align.snap_s=0")),
                               ("better", better, ()), ("better-nosnap", better, ("--set", "align.snap_s=0"))):
        if model is None:
            continue
        report = align(model, work / f"aligned-{name}", log, "--pairs", pairs, extra=extra)
        rows[name] = {"model": str(model), "lines": report["lines"], "kept": report["kept"],
                      "rejected": report["rejected"], "audio_min": round(60 * report["audio_hours"], 1),
                      "rtf": report["real_time_factor"], **boundary_errors(work / f"aligned-{name}", truths)}
    return rows


def segments_table(path: Path, rows: list[dict]) -> None:
    """A table corpus with a fixed split by line (every 12th line dev), shared by the aligned and true tables."""
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            split = "dev" if r["line"] % 12 == 0 else "train"
            f.write(json.dumps({"id": f"{r['file']}_{r['line']:05d}", "audio": r["audio"], "offset": r["offset"],
                                "duration": r["duration"], "text": r["text"], "split": split}) + "\n")


def true_segments(chapters: list[Path], pad_s: float) -> list[dict]:
    """The true lines as align would write them: the truth padded by ``pad_s`` (at most half the gap)."""
    rows = []
    for c in chapters:
        truth = json.loads(c.with_suffix(".truth.json").read_text())
        total = sf.info(c.with_suffix(".wav")).duration
        for i, t in enumerate(truth):
            lo = max(t["start"] - pad_s, (truth[i - 1]["end"] + t["start"]) / 2 if i else 0.0)
            hi = min(t["end"] + pad_s, (t["end"] + truth[i + 1]["start"]) / 2 if i + 1 < len(truth) else total)
            rows.append({"file": c.name, "line": i + 1, "audio": str(c.with_suffix(".wav").resolve()),
                         "offset": round(lo, 3), "duration": round(hi - lo, 3), "text": t["text"]})
    return rows


def part_a_finetune(work: Path, demo_prepared: Path, chapters: list[Path], threads: int, log: Path) -> dict:
    aligned = [json.loads(x) for x in open(work / "aligned-10min" / "segments.jsonl", encoding="utf-8")]
    from lowres.config import AlignConfig

    sets = {"aligned": aligned, "true": true_segments(chapters, AlignConfig.pad_s)}
    kept = {(r["file"], r["line"]) for r in aligned}
    sets["true"] = [r for r in sets["true"] if (r["file"], r["line"]) in kept]  # the same lines
    out = {}
    for name, rows in sets.items():
        table = work / f"{name}-segments.jsonl"
        segments_table(table, rows)
        prepared = work / f"prepared-{name}"
        if not (prepared / "prepare_report.json").is_file():
            lowres("prepare", table, "--lang", "sw", "--out", prepared, "--overwrite", "-q", log=log)
        run = work / f"ft-{name}"
        minutes = finetune(run, prepared, 0, threads, log, "--split", "full")
        metrics = evaluate_on(run, demo_prepared / "manifests" / "test.jsonl", log)
        out[name] = {"lines": len(rows), "train_min": minutes, "test_cer": metrics["cer"], "test_wer": metrics["wer"]}
    return out


def evaluate_on(run: Path, manifest: Path, log: Path) -> dict:
    out = run / "eval-demo-test"
    if not (out / "metrics.json").is_file():
        lowres("eval", "--model", run, "--manifest", manifest, "--out", out, "--overwrite", "-q", log=log)
    return json.loads((out / "metrics.json").read_text())


def part_c(work: Path, teacher: Path, chapters: list[Path], log: Path) -> dict:
    """Chapter 1's text damaged three ways; the audio is untouched."""
    c1, c2 = chapters[0], chapters[1]
    lines = c1.with_suffix(".txt").read_text(encoding="utf-8").splitlines()
    other = c2.with_suffix(".txt").read_text(encoding="utf-8").splitlines()
    truth = json.loads(c1.with_suffix(".truth.json").read_text())
    cases = {
        "missing": ([*lines[:20], *lines[25:]], "lines 21-25 left out of the text (their audio stays)"),
        "extra": ([*lines[:40], *other[:5], *lines[40:]], "five lines of another chapter put after line 40"),
        "swapped": ([*lines[:59], lines[60], lines[59], *lines[61:]], "lines 60 and 61 swapped in the text"),
    }
    out = {}
    for name, (text, what) in cases.items():
        folder = work / f"damaged-{name}"
        folder.mkdir(exist_ok=True)
        (folder / "chapter1.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
        report = align(teacher, folder / "aligned", log, c1.with_suffix(".wav"), folder / "chapter1.txt")
        by_text = {t["text"]: t for t in truth}
        errors, wrong = [], []
        for row in map(json.loads, open(folder / "aligned" / "segments.jsonl", encoding="utf-8")):
            t = by_text.get(row["text"])
            if t is None:
                wrong.append(row["line"])  # a line that is not in the audio was kept
                continue
            errors += [abs(row["start"] - t["start"]), abs(row["end"] - t["end"])]
        rejects = [json.loads(x) for x in open(folder / "aligned" / "rejects.jsonl", encoding="utf-8")]
        errors.sort()
        out[name] = {"damage": what, "lines": report["lines"], "kept": report["kept"],
                     "rejected_lines": [r.get("line") for r in rejects], "kept_but_not_in_audio": wrong,
                     "median_ms": round(1000 * statistics.median(errors)) if errors else None,
                     "p95_ms": round(1000 * errors[int(0.95 * (len(errors) - 1))]) if errors else None,
                     "passes": report["per_file"][0].get("passes")}
    return out


def part_d(work: Path, teacher: Path, chapters: list[Path], log: Path) -> dict:
    """An hour-long file: the chapters joined, again and again, with their texts."""
    path = work / "hour"
    if not path.with_suffix(".wav").is_file():
        waves, texts, total = [], [], 0.0
        while total < 3600:
            for c in chapters:
                w, _ = sf.read(c.with_suffix(".wav"), dtype="float32")
                waves.append(w)
                texts.append(c.with_suffix(".txt").read_text(encoding="utf-8"))
                total += len(w) / SR
                if total >= 3600:
                    break
        sf.write(path.with_suffix(".wav"), np.concatenate(waves), SR, subtype="PCM_16")
        path.with_suffix(".txt").write_text("".join(texts), encoding="utf-8")
    t0 = time.time()
    report = align(teacher, work / "aligned-hour", log, path.with_suffix(".wav"), path.with_suffix(".txt"))
    f = report["per_file"][0]
    return {"audio_min": round(60 * report["audio_hours"], 1), "lines": report["lines"], "kept": report["kept"],
            "seconds": report["seconds"], "rtf": report["real_time_factor"], "emissions_s": f["emissions_s"],
            "align_s": f["align_s"], "passes": f["passes"], "peak_memory_mb": report["peak_memory_mb"],
            "wall_s_here": round(time.time() - t0, 1)}


def part_b(work: Path, model: Path, prepared: Path, log: Path) -> dict:
    """A real chapter: the prepared test lines of a real corpus (trimmed, joined) aligned with ``model``."""
    from lowres.data.manifest import read_manifest

    path = work / "real-chapter"
    utts = list(read_manifest(prepared / "manifests" / "test.jsonl", require_text=True))
    if not path.with_suffix(".truth.json").is_file():
        clips = [(u.raw_text or u.text, trimmed(Path(u.audio_filepath), u.offset, u.duration)) for u in utts]
        chapter(path, clips, seed=0)
    truth = json.loads(path.with_suffix(".truth.json").read_text())
    out = {}
    for name, extra in (("snapped", ()), ("nosnap", ("--set", "align.snap_s=0"))):
        folder = work / f"aligned-real-{name}"
        report = align(model, folder, log, path.with_suffix(".wav"), path.with_suffix(".txt"), extra=extra)
        out[name] = {"model": str(model), "lines": report["lines"], "kept": report["kept"],
                     "rejected": report["rejected"], "audio_min": round(60 * report["audio_hours"], 1),
                     "rtf": report["real_time_factor"], **boundary_errors(folder, {"real-chapter": truth})}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="the self-training benchmark's folder (reused)")
    ap.add_argument("--better", type=Path, help="a stronger run on the demo corpus to align with as well")
    ap.add_argument("--real-model", type=Path)
    ap.add_argument("--real-data", type=Path)
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    bench, log, prepared, teacher = demo_teacher(args.work.resolve(), "align", args.threads)
    chapters = synthetic_chapters(bench, log)
    results: dict = {"load_average_start": os.getloadavg()[0]}
    results["a"] = part_a(bench, teacher, args.better, chapters, log)
    results["c"] = part_c(bench, teacher, chapters, log)
    if args.real_model is not None:
        results["b"] = part_b(bench, args.real_model.resolve(), args.real_data.resolve(), log)
    results["d"] = part_d(bench, teacher, chapters, log)
    if not args.skip_finetune:
        results["a_finetune"] = part_a_finetune(bench, prepared, chapters, args.threads, log)
    results["load_average_end"] = os.getloadavg()[0]
    (bench / "align_bench.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
