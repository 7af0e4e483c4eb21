"""Peak memory and wall time of `lowres prepare` over N files and `lowres eval` over M utterances.

    python benchmarks/memory.py --work /tmp/mem-bench --files 10000,30000,100000 --utterances 1000,3000,10000

Each size runs the CLI (`python -m lowres ...`) in a fresh child process. Peak RSS is what the kernel
reports for that child when it ends (``os.wait4``: the largest resident set of the child and of the
children it waited for, e.g. eval's data-loading worker); the child's own peak (``VmHWM``, read from
/proc every 50 ms) is reported beside it. Wall time is from starting the child to its exit, so it includes
starting Python and importing lowres (and torch, for eval).

Audio: a few dozen distinct 0.5–2 s wav files (16 kHz), hard-linked under as many names as the largest
size needs, so the disk holds a few MB whatever N; `prepare` still opens and probes every name.

- prepare: a `table` corpus (TSV: audio, text, speaker; 200 speakers) of the first N names.
- eval: one tiny run (`lowres finetune --base tiny --max-steps 1` on a 300-clip prepared corpus), then a
  manifest of the first M names (audio_filepath, duration, text) evaluated with greedy decoding.

Prints one markdown table and, with ``--json``, writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

WORDS = ("habari maji kitabu shule rafiki chakula asante nyumba mtoto jua mvua barabara kesho leo ng'ombe "
         "sauti neno watu kazi").split()
SAMPLE_RATE = 16000
DISTINCT_CLIPS = 48
SPEAKERS = 200


def _sizes(text: str) -> list[int]:
    return [int(s.replace("_", "")) for s in text.split(",") if s.strip()]


def _clip(duration_s: float, seed: int) -> np.ndarray:
    """Speech-like stand-in: tone bursts with pauses plus a little noise, float32 (T,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(duration_s * SAMPLE_RATE))) / SAMPLE_RATE
    envelope = (np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)) > -0.3).astype(np.float32)
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * t) * envelope + 0.01 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def build_clips(work: Path, count: int) -> tuple[Path, list[float]]:
    """``work/clips/c{i:06d}.wav`` for i < count, hard links to DISTINCT_CLIPS files; returns (folder,
    duration of each name). Reused when already there."""
    distinct = work / "distinct"
    folder = work / "clips"
    rng = random.Random(0)
    durations = [round(rng.uniform(0.5, 2.0), 3) for _ in range(DISTINCT_CLIPS)]
    distinct.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    for k, d in enumerate(durations):
        src = distinct / f"d{k:02d}.wav"
        if not src.exists():
            sf.write(str(src), _clip(d, k), SAMPLE_RATE, subtype="PCM_16")
    for i in range(count):
        name = folder / f"c{i:06d}.wav"
        if not name.exists():
            os.link(distinct / f"d{i % DISTINCT_CLIPS:02d}.wav", name)
    return folder, [durations[i % DISTINCT_CLIPS] for i in range(count)]


def _text(rng: random.Random, duration_s: float) -> str:
    # about two words per second, so every transcript fits its audio (CTC needs a frame per symbol)
    return " ".join(rng.choice(WORDS) for _ in range(max(1, min(4, int(duration_s * 2)))))


def write_table(path: Path, clips: Path, durations: list[float], n: int) -> Path:
    rng = random.Random(1)
    with open(path, "w", encoding="utf-8") as f:
        f.write("audio\ttext\tspeaker\n")
        for i in range(n):
            f.write(f"{clips.name}/c{i:06d}.wav\t{_text(rng, durations[i])}\ts{i % SPEAKERS:03d}\n")
    return path


def write_manifest(path: Path, clips: Path, durations: list[float], m: int) -> Path:
    rng = random.Random(2)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(m):
            row = {"id": f"c{i:06d}", "audio_filepath": str(clips / f"c{i:06d}.wav"), "duration": durations[i],
                   "text": _text(rng, durations[i])}
            f.write(json.dumps(row) + "\n")
    return path


def _vmhwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(args: list[str]) -> dict:
    """Run ``python -m lowres ARGS`` in a fresh child; its wall time, peak RSS and output tail."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lowres", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    own_peak_kb = 0
    done = threading.Event()

    def poll():
        nonlocal own_peak_kb
        while not done.is_set():
            kb = _vmhwm_kb(proc.pid)
            if kb is not None:
                own_peak_kb = max(own_peak_kb, kb)
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    output = proc.stdout.read()  # the child's output is short (--quiet); reading it keeps the pipe clear
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    done.set()
    poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = output.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise SystemExit(f"`lowres {' '.join(args)}` failed ({proc.returncode}):\n{text[-3000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "own_peak_rss_mb": round(own_peak_kb / 1024, 1), "output_tail": text[-400:]}


def bench_prepare(work: Path, clips: Path, durations: list[float], n: int) -> dict:
    table = write_table(work / f"corpus-{n}.tsv", clips, durations, n)
    out = work / f"prepared-{n}"
    shutil.rmtree(out, ignore_errors=True)
    got = measure(["prepare", str(table), "--out", str(out), "--quiet"])
    report = json.loads((out / "prepare_report.json").read_text())
    kept = sum(report["splits"][s]["utterances"] for s in ("full", "dev", "test"))
    rejected = report["rejects"]["total"]
    shutil.rmtree(out)
    table.unlink()
    return {"command": "prepare", "size": n, "kept": kept, "rejected": rejected,
            "per_second": round(n / got["seconds"], 1), **got}


def tiny_run(work: Path, clips: Path, durations: list[float]) -> Path:
    run = work / "run"
    if (run / "model.safetensors").exists():
        return run
    prep = work / "prepared-small"
    shutil.rmtree(prep, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    table = write_table(work / "corpus-small.tsv", clips, durations, 300)
    measure(["prepare", str(table), "--out", str(prep), "--quiet"])
    measure(["finetune", "--data", str(prep), "--split", "full", "--base", "tiny", "--max-steps", "1",
             "--set", "train.batch_seconds=20", "--set", "train.num_workers=0", "--quiet", "--out", str(run)])
    return run


def bench_eval(work: Path, run: Path, clips: Path, durations: list[float], m: int) -> dict:
    manifest = write_manifest(work / f"test-{m}.jsonl", clips, durations, m)
    out = work / f"eval-{m}"
    shutil.rmtree(out, ignore_errors=True)
    got = measure(["eval", "--model", str(run), "--manifest", str(manifest), "--out", str(out), "--quiet"])
    metrics = json.loads((out / "metrics.json").read_text())
    hyps = sum(1 for _ in open(out / "hyps.jsonl", encoding="utf-8"))
    if hyps != m or metrics["num_utterances"] != m:
        raise SystemExit(f"eval over {m} utterances wrote {hyps} hypotheses ({metrics['num_utterances']} scored)")
    shutil.rmtree(out)
    manifest.unlink()
    return {"command": "eval", "size": m, "hours": metrics["hours"], "per_second": round(m / got["seconds"], 1),
            **got}


def table(rows: list[dict]) -> str:
    lines = ["| command | size | peak RSS (MB) | own peak RSS (MB) | wall (s) | items/s | growth over the smallest size |",
             "|---|---|---|---|---|---|---|"]
    first: dict[str, dict] = {}
    for r in rows:
        base = first.setdefault(r["command"], r)
        unit = "files" if r["command"] == "prepare" else "utterances"
        if r is base:
            growth = "—"
        else:
            mb = r["peak_rss_mb"] - base["peak_rss_mb"]
            per_item = mb * 2**20 / (r["size"] - base["size"])
            growth = f"{mb:+.1f} MB ({per_item:+.0f} B per extra item)"
        lines.append(f"| {r['command']} | {r['size']:,} {unit} | {r['peak_rss_mb']:,.1f} | {r['own_peak_rss_mb']:,.1f} "
                     f"| {r['seconds']:.1f} | {r['per_second']:,.0f} | {growth} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="Scratch folder (clips, corpora, the tiny run).")
    ap.add_argument("--files", default="10000,30000,100000", help="prepare sizes, comma-separated ('' = skip).")
    ap.add_argument("--utterances", default="1000,3000,10000", help="eval sizes, comma-separated ('' = skip).")
    ap.add_argument("--json", type=Path, default=None, help="Also write the figures to this file.")
    ap.add_argument("--clean", action="store_true", help="Remove --work at the end.")
    args = ap.parse_args()

    files, utterances = _sizes(args.files), _sizes(args.utterances)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    clips, durations = build_clips(work, max(files + utterances + [300]))
    rows = []
    for n in files:
        rows.append(bench_prepare(work, clips, durations, n))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "output_tail"}), file=sys.stderr, flush=True)
    if utterances:
        run = tiny_run(work, clips, durations)
        for m in utterances:
            rows.append(bench_eval(work, run, clips, durations, m))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "output_tail"}), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        meta = {"python": platform.python_version(), "cpus": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2)}
        args.json.write_text(json.dumps({"machine": meta, "rows": rows}, indent=1) + "\n")
    if args.clean:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
