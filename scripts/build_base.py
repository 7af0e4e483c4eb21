"""Rebuild lowres's shipped self-supervised base (``--base tiny-ssl``) from nothing, with lowres's own commands.

No transcript is used: the audio is synthetic speech (eSpeak NG through ``lowres synth``) in ten languages,
spoken by many voices at varied rates and pitches, with the synth's background noise and gain; the word
lists come from the ``wordfreq`` package at build time (``pip install wordfreq``; they are not shipped).
The base never hears Swahili, Hawaiian or Turkish, which the tests, the demo and the benchmarks fine-tune on
(benchmarks/adapt_gain.py trains its CTC base on Turkish; Dutch takes its place).

Steps (each skipped when its output exists, so a stopped build is continued by running it again):

1. ``wordfreq`` word lists -> ``WORK/words/LANG.txt``;
2. ``lowres synth --lang LANG --words ... --unlabeled-hours H --noise 0.3`` per language;
3. ``lowres prepare --unlabeled WORK/pool`` (the unlabeled audio of all languages);
4. ``lowres adapt --objective hubert --base tiny`` (HuBERT iteration 1: 100 MFCC units; masked prediction
   with unmasked frames weighted 1, which is what learns at this budget: benchmarks/README.md) with
   ``--resume`` when a run is there;
5. the adapted encoder is packed into ``lowres/bases/tiny-ssl.safetensors`` + ``tiny-ssl.json``
   (architecture, fingerprint, provenance: languages, hours, objective, updates, final metrics, commit).

Budget (the defaults): 4 h of audio, 1,200 updates of 30 s: the shipped file took 37.8 min on 2 CPU cores
(shared with other jobs). The two hours the project allows are about 4,000 updates (``--steps``).

    python scripts/build_base.py --work /tmp/base-build            # then: git diff --stat lowres/bases
    python scripts/build_base.py --work /tmp/base-build --steps 3000 --hours-per-language 1.0  # a bigger one
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "nl", "id", "ru", "pl")
REPO = Path(__file__).resolve().parent.parent


def lowres(*args) -> None:
    print("$ lowres " + " ".join(str(a) for a in args), flush=True)
    subprocess.run([sys.executable, "-m", "lowres", *[str(a) for a in args]], check=True, env={**os.environ})


def speakable(word: str) -> bool:
    return len(word) >= 2 and all(unicodedata.category(c)[0] in "LM" or c == "'" for c in word)


def word_list(lang: str, path: Path, n: int) -> None:
    try:
        from wordfreq import top_n_list
    except ImportError:
        sys.exit("build_base.py takes its word lists from the wordfreq package at build time: "
                 "`pip install wordfreq`, then run it again (finished steps are kept).")

    words = [w for w in top_n_list(lang, n) if speakable(w)]
    path.write_text(f"# SOURCE: wordfreq {lang} top {n} (filtered to letters)\n" + "\n".join(words) + "\n",
                    encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="Build folder (kept; rerun to continue).")
    ap.add_argument("--languages", default=",".join(LANGUAGES))
    ap.add_argument("--hours-per-language", type=float, default=0.4)
    ap.add_argument("--words", type=int, default=5000, help="wordfreq's most frequent words per language.")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=5e-4)  # HuBERT BASE's peak from scratch
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="tiny-ssl")
    ap.add_argument("--ship", type=Path, default=REPO / "lowres" / "bases",
                    help="Where the packed base goes (the package's lowres/bases).")
    args = ap.parse_args()
    w = args.work
    langs = [x for x in args.languages.split(",") if x]
    for sub in ("words", "synth", "pool"):
        (w / sub).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, lang in enumerate(langs):
        words = w / "words" / f"{lang}.txt"
        if not words.is_file():
            word_list(lang, words, args.words)
        pool = w / "pool" / lang
        if not pool.is_dir():
            out = w / "synth" / lang
            # --hours is the synth's (required) transcribed part: kept minimal and never used
            lowres("synth", "--lang", lang, "--words", words, "--hours", 0.01, "--unlabeled-hours",
                   args.hours_per_language, "--speakers", 24, "--noise", 0.3, "--seed", args.seed + i,
                   "--out", out, "-q", "--overwrite")
            (out / "unlabeled").rename(pool)
    prepared = w / "prepared"
    if not (prepared / "prepare_report.json").is_file():
        lowres("prepare", "--unlabeled", w / "pool", "--out", prepared, "-q", "--overwrite")
    run = w / "adapt"
    if not (run / "summary.json").is_file():
        resume = ["--resume"] if (run / "config.json").is_file() else []
        lowres("adapt", "--objective", "hubert", "--targets", "mfcc", "--unlabeled", prepared / "unlabeled.jsonl",
               "--base", "tiny", "--out", run, "--max-steps", args.steps, "--lr", args.lr, "--seed", args.seed,
               "--set", "hubert.unmasked_weight=1.0", "--set", "train.batch_seconds=30",
               "--set", "train.heads_warmup_steps=20", "--set", "train.num_workers=0",
               "--set", "train.log_every=25", "--set", "train.save_every=100", "-q", *resume)
    from lowres.bases import pack_base

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    report = json.loads((prepared / "prepare_report.json").read_text(encoding="utf-8"))
    provenance = {
        "languages": langs,
        "unlabeled_hours": report.get("unlabeled", {}).get("hours"),
        "transcripts_used": False,
        "audio": "lowres synth (eSpeak NG), 24 voices per language, varied rate and pitch, noise p=0.3, gain",
        "words": f"wordfreq top {args.words} per language (build time only)",
        "build_command": "python scripts/build_base.py " + " ".join(sys.argv[1:]),
        "build_minutes": round((time.perf_counter() - t0) / 60, 1),
        "lowres_commit": commit,
    }
    path = pack_base(run, args.ship, args.name, provenance)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
