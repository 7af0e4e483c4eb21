"""Whisper's 30-s window: pad every clip to it (as Whisper was trained) or encode the clip at its own length with
the first entries of the position table (lowres's default, ``model.whisper_window=false``)? The speed side.

For real clips of the Dutch corpus's test set (and a few lengths of one clip), the encoder's forward time in
both modes on one thread, in CPU seconds of this process (less sensitive than wall time to other work on a shared
machine; the load average is printed beside), and how far the sliced mode's last-layer states are from the
windowed ones over the clip's frames (cosine similarity): the representation the CTC head reads. The quality
side is the real-speech benchmark's pair of rows ``whisper-base-weighted`` / ``whisper-base-weighted-window``
(the same frozen encoder under a trained weighted head, each mode).

    python benchmarks/whisper_window.py --prepared /work/real-bench/prepared/nl --clips 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch


def _encode(model, spec, wave: torch.Tensor, window: bool) -> torch.Tensor:
    from lowres.model.backbone import encoder_input, encoder_states, front_end

    model.pad_to_window = window
    lengths = torch.tensor([wave.shape[-1]])
    feats, frames = front_end(model, spec, wave[None], lengths)
    x, pad = encoder_input(model, spec, feats, frames)
    return encoder_states(model, spec, x, pad, keep_all=False)[-1][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepared", type=Path, required=True, help="a prepared folder (its test manifest is read)")
    ap.add_argument("--base", default="whisper-base")
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="JSON of the figures")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from lowres.bases import load_base
    from lowres.data import audio
    from lowres.data.manifest import read_manifest

    loaded = load_base(args.base)
    model, spec = loaded.model.eval(), loaded.spec
    utts = list(read_manifest(args.prepared / "manifests" / "test.jsonl"))[: args.clips]
    rows = []
    with torch.inference_mode():
        for u in utts:
            wave = torch.from_numpy(audio.load(u.audio_filepath, u.offset, u.duration))
            row = {"id": u.id, "seconds": round(u.duration, 2)}
            states = {}
            for window in (False, True):
                times = []
                for _ in range(args.repeats):
                    t = time.process_time()
                    states[window] = _encode(model, spec, wave, window)
                    times.append(time.process_time() - t)
                row["window_cpu_s" if window else "sliced_cpu_s"] = round(min(times), 4)
            n = states[False].shape[0]  # the clip's frames (the window's beyond them are silence)
            row["cosine"] = round(float(torch.nn.functional.cosine_similarity(
                states[False], states[True][:n], dim=-1).mean()), 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    ratio = [r["window_cpu_s"] / r["sliced_cpu_s"] for r in rows]
    summary = {"base": args.base, "clips": len(rows), "mean_seconds": round(statistics.mean(r["seconds"] for r in rows), 2),
               "window_over_sliced_cpu": round(statistics.median(ratio), 2),
               "sliced_cpu_s_per_audio_s": round(sum(r["sliced_cpu_s"] for r in rows) / sum(r["seconds"] for r in rows), 4),
               "window_cpu_s_per_audio_s": round(sum(r["window_cpu_s"] for r in rows) / sum(r["seconds"] for r in rows), 4),
               "mean_cosine": round(statistics.mean(r["cosine"] for r in rows), 4),
               "min_cosine": min(r["cosine"] for r in rows), "load_average_1min": round(os.getloadavg()[0], 2),
               "threads": 1, "torch": torch.__version__}
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
