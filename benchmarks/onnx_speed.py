"""ONNX export benchmark (issue #32): CPU real-time factor, peak memory, file size and CER of `lowres transcribe`
with the run itself (torch fp32), its ONNX fp32 export and its int8 export, on one and two threads.

Runs (each exported with ``lowres export --format onnx --int8``, the parity gate on its dev set):

- ``tiny-ssl``: the demo's 10min run (benchmarks/self_training.py's WORK/s0/teacher), the demo's test set;
- ``base``: a BASE-size wav2vec 2.0 (95M, random weights, 1 update with LoRA: for speed only; its CER means
  nothing), the demo's test set;
- ``whisper-base``: with ``--whisper-run RUN --whisper-test MANIFEST``, the real-speech benchmark's Dutch 10min run
  on its test set.

Each configuration runs in its own process (peak memory is that process's): the model is loaded, one file
transcribed to warm up, then every file of the test set is transcribed and timed (decoding included, loading
not). Threads: ``OMP_NUM_THREADS`` for torch, the same number for ONNX Runtime's intra-op pool.

    python benchmarks/onnx_speed.py --work /tmp/st [--whisper-run RUN --whisper-test MANIFEST]

Results: WORK/onnx/onnx_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from self_training import demo_teacher, lowres  # noqa: E402

MEASURE = r"""
import json, resource, sys, time
from pathlib import Path
import jiwer
from lowres.data.manifest import read_manifest
from lowres.inference import transcribe_files
model, manifest, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
utts = list(read_manifest(manifest, require_text=True))[:limit]
files = [Path(u.audio_filepath) for u in utts]
list(transcribe_files(model, files[:1], "cpu"))  # load and warm up
t0 = time.perf_counter()
hyps = [text for _, text in transcribe_files(model, files, "cpu")]
seconds = time.perf_counter() - t0
audio = sum(u.duration for u in utts)
print(json.dumps({"files": len(files), "audio_s": round(audio, 1), "seconds": round(seconds, 2),
                  "rtf": round(seconds / audio, 4), "cer": round(100 * jiwer.cer([u.text for u in utts],
                                                                               [h or " " for h in hyps]), 2),
                  "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def measure(model: Path, manifest: Path, threads: int, limit: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(model), str(manifest), str(limit)], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"measuring {model} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def export(run: Path, out: Path, log: Path) -> dict:
    if not (out / "export_report.json").is_file():
        lowres("export", "--model", run, "--format", "onnx", "--int8", "--out", out, "--overwrite", "-q", log=log)
    return json.loads((out / "export_report.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="the self-training benchmark's folder (reused)")
    ap.add_argument("--whisper-run", type=Path)
    ap.add_argument("--whisper-test", type=Path)
    ap.add_argument("--limit", type=int, default=70, help="test files per configuration")
    args = ap.parse_args()
    bench, log, prepared, teacher = demo_teacher(args.work.resolve(), "onnx", threads=2)
    base = bench / "base-run"
    if not (base / "summary.json").is_file():
        lowres("finetune", "--data", prepared, "--split", "10min", "--base", "base-scratch", "--max-steps", 1,
               "--eval-every", 0, "--set", "train.batch_seconds=20", "--set", "train.accumulate=1", "--out", base,
               "--overwrite", "-q", log=log)
    runs = {"tiny-ssl": (teacher, prepared / "manifests" / "test.jsonl"),
            "base": (base, prepared / "manifests" / "test.jsonl")}
    if args.whisper_run is not None:
        runs["whisper-base"] = (args.whisper_run.resolve(), args.whisper_test.resolve())
    results = {"load_average_start": os.getloadavg()[0], "runs": {}}
    for name, (run, test) in runs.items():
        deploy = bench / f"deploy-{name}"
        report = export(run, deploy, log)
        row = {"export": {k: report[k] for k in ("torch", "fp32", "int8", "deliverable", "sizes_mb")}}
        for threads in (1, 2):
            for label, model in (("torch", run), ("onnx-fp32", deploy / "model.onnx"),
                                 ("onnx-int8", deploy / "model.int8.onnx")):
                row[f"{label}-{threads}t"] = measure(model, test, threads, args.limit)
                print(name, label, threads, row[f"{label}-{threads}t"], flush=True)
        results["runs"][name] = row
    results["load_average_end"] = os.getloadavg()[0]
    (bench / "onnx_speed.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    lines = ["| run | runtime | threads | RTF | × torch | CER | peak MB | size MB |", "|---|---|---|---|---|---|---|---|"]
    for name, row in results["runs"].items():
        for threads in (1, 2):
            ref = row[f"torch-{threads}t"]["rtf"]
            for label, size in (("torch", None), ("onnx-fp32", "model.onnx"), ("onnx-int8", "model.int8.onnx")):
                m = row[f"{label}-{threads}t"]
                mb = row["export"]["sizes_mb"].get(size, "-") if size else "-"
                lines.append(f"| {name} | {label} | {threads} | {m['rtf']:.4f} | {ref / m['rtf']:.2f} | {m['cer']:.1f}% | "
                             f"{m['peak_mb']} | {mb} |")
    (bench / "onnx_speed.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
