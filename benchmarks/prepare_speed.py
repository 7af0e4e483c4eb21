"""Files per second for `lowres prepare` on a synthetic corpus (default 20,000 FLAC files).

    python benchmarks/prepare_speed.py --files 20000 --work /tmp/prepare-bench

Builds (once; reused when present) a LibriSpeech-layout corpus of 1–4 s FLAC files with transcripts, then
times `prepare` on it (probing with a check of every file's last block, normalisation, splits, writes),
and reports files/s and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

WORDS = ("habari maji kitabu shule rafiki chakula asante nyumba mtoto jua mvua barabara kesho leo ng'ombe "
         "sauti neno watu kazi").split()


def _write_chapter(args):
    root, spk, chap, n, seed = args
    rng = random.Random(seed)
    folder = Path(root) / "train-bench" / spk / chap
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for k in range(n):
        uid = f"{spk}-{chap}-{k:04d}"
        dur = rng.uniform(1.0, 4.0)
        t = np.arange(int(dur * 16000)) / 16000
        x = (0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t)).astype(np.float32)
        sf.write(str(folder / f"{uid}.flac"), x, 16000, subtype="PCM_16")
        lines.append(f"{uid} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))).upper())
    (folder / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    return n


def build(root: Path, files: int) -> None:
    marker = root / f".complete-{files}"
    if marker.exists():
        return
    if root.exists():
        shutil.rmtree(root)
    per_chapter = 50
    jobs = []
    for i in range(files // per_chapter):
        jobs.append((str(root), f"{100 + i // 4}", f"{i % 4}", per_chapter, i))
    with ProcessPoolExecutor() as pool:
        made = sum(pool.map(_write_chapter, jobs))
    marker.write_text(str(made))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/prepare-bench"))
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()

    from lowres.config import PrepareConfig
    from lowres.data.prepare import prepare

    corpus = args.work / "corpus"
    t0 = time.perf_counter()
    build(corpus, args.files)
    print(f"corpus ready in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    out = args.work / "prepared"
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    result = prepare(corpus, out, PrepareConfig(workers=args.workers))
    seconds = time.perf_counter() - t0
    n = sum(s["utterances"] for k, s in result.report["splits"].items() if k in ("full", "dev", "test"))
    n += result.report["rejects"]["total"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"files": n, "seconds": round(seconds, 2), "files_per_second": round(n / seconds, 1),
               "peak_rss_mb": round(peak_mb, 1), "workers": args.workers or "auto"}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
