"""Time and peak memory of `lowres lm` on a synthetic text of a few million words (default 3,000,000).

    python benchmarks/lm_speed.py --words 3000000 --order 4 --work /tmp/lm-bench [--prune] [--data PREPARED]

Writes (once; reused when present) a text with Zipf-distributed words over a 60,000-word vocabulary of
Swahili-like syllable words, 4–20 words a sentence, with punctuation and capitals so the normaliser has
work to do; then times `build_lm` on it (reading + normalising, counting, Kneser-Ney estimation, ARPA
writing; with --data also the lexicon, the unit model and the dev perplexity) and reports words/s, the
n-gram counts, the ARPA size and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

SYLLABLES = [c + v for c in ("", "b", "ch", "d", "f", "g", "h", "j", "k", "l", "m", "n", "ng'", "ny", "p", "r", "s",
                             "sh", "t", "w", "y", "z") for v in "aeiou"]


def make_text(path: Path, n_words: int, vocab_size: int = 60_000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    words = sorted({"".join(prng.choice(SYLLABLES) for _ in range(prng.randint(1, 4))) for _ in range(vocab_size)})
    ranks = rng.zipf(1.1, size=n_words * 2)
    ranks = ranks[ranks <= len(words)][:n_words] - 1
    order = rng.permutation(len(words))  # frequency rank → word, not alphabetical
    lengths = rng.integers(4, 21, size=n_words // 4 + 1)
    with open(path, "w", encoding="utf-8") as f:
        i = 0
        for n in lengths:
            if i >= len(ranks):
                break
            sentence = [words[order[r]] for r in ranks[i:i + n]]
            i += n
            sentence[0] = sentence[0].capitalize()
            f.write(" ".join(sentence) + prng.choice([".", "!", "?", ","]) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--words", type=int, default=3_000_000)
    ap.add_argument("--order", type=int, default=4)
    ap.add_argument("--prune", action="store_true")
    ap.add_argument("--data", type=Path, default=None, help="A prepared folder (adds lexicon, unit model, dev ppl).")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lm-bench"))
    args = ap.parse_args()

    from lowres.lm.build import build_lm

    args.work.mkdir(parents=True, exist_ok=True)
    text = args.work / f"text-{args.words}.txt"
    if not text.is_file():
        t0 = time.perf_counter()
        make_text(text, args.words)
        print(f"wrote {text} ({text.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    out = args.work / "lm"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    report = build_lm([text], out, order=args.order, data=args.data, prune_singletons=args.prune)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "words": report["tokens"], "sentences": report["sentences"], "vocabulary": report["vocabulary_size"],
        "order": report["order"], "prune": args.prune, "ngrams": report["ngrams"], "seconds": round(seconds, 1),
        "words_per_s": round(report["tokens"] / seconds), "arpa_mb": round((out / "lm.arpa").stat().st_size / 1e6, 1),
        "peak_rss_mb": round(peak_mb), "python": sys.version.split()[0],
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
