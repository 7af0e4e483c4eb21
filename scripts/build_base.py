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
4. three HuBERT iterations, ``lowres adapt --objective hubert`` (``WORK/adapt1`` .. ``adapt3``, each with
   ``--resume`` when a run is there): iteration 1 from the random-init ``tiny`` predicts 100 k-means units of
   MFCCs; iterations 2 and 3 each continue the one before and predict 100 units of its layer 2
   (``--targets layer:2``). Masked prediction with unmasked frames weighted 1 (what learns at this budget:
   benchmarks/README.md), the conv encoder trained throughout, 1 thread per run (the same numbers on any
   machine with the same packages);
5. the last encoder is packed into ``lowres/bases/tiny-ssl.safetensors`` + ``tiny-ssl.json``
   (architecture, fingerprint, provenance: languages, hours, each iteration's targets, minutes and final
   accuracies, commit, command).

Budget (the defaults): 4 h of audio, 3 x 1,200 updates of 30 s: the shipped file took 107.5 min of training
(35.5 + 35.2 + 36.8) on 2 CPU cores shared with other jobs, synth and prepare about 1 min more: the two hours
the project allows. Each iteration gave a better start for fine-tuning (benchmarks/README.md, "Rebuilt: three
HuBERT iterations").

    python scripts/build_base.py --work /tmp/base-build            # then: git diff --stat lowres/bases
    python scripts/build_base.py --work /tmp/base-build --iterations 1 --steps 600 --ship /tmp/b  # a quick one
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
# HuBERT's iterations: (targets, clusters). Iteration 1 predicts k-means units of MFCCs; each later one
# predicts k-means units of the previous iteration's layer 2 (of 4), the layer whose units the measurements
# favoured (benchmarks/README.md, "The shipped base")
ITERATIONS = (("mfcc", 0), ("layer:2", 100), ("layer:2", 100))
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
    ap.add_argument("--steps", type=int, default=1200, help="Updates per iteration.")
    ap.add_argument("--iterations", type=int, default=3, choices=(1, 2, 3))
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
    base, runs = "tiny", []
    for it, (targets, clusters) in enumerate(ITERATIONS[: args.iterations], start=1):
        run = w / f"adapt{it}"
        runs.append(run)
        if not (run / "summary.json").is_file():
            resume = ["--resume"] if (run / "config.json").is_file() else []
            units = ["--set", f"units.clusters={clusters}"] if clusters else []
            # from iteration 2 on the base is pretrained, so lowres would freeze its conv encoder by default:
            # it keeps training, as in iteration 1 (feature_grad_mult 1: HuBERT's 0.1 learnt no better here)
            conv = ["--set", "model.freeze_feature_encoder=false"] if it > 1 else []
            lowres("adapt", "--objective", "hubert", "--targets", targets, "--unlabeled", prepared / "unlabeled.jsonl",
                   "--base", base, "--out", run, "--max-steps", args.steps, "--lr", args.lr, "--seed", args.seed,
                   *units, *conv, "--set", "model.feature_grad_mult=1.0",
                   "--set", "hubert.unmasked_weight=1.0", "--set", "train.batch_seconds=30",
                   "--set", "train.heads_warmup_steps=20", "--set", "train.num_workers=0",
                   "--set", "train.threads=1", "--set", "train.log_every=25", "--set", "train.save_every=100",
                   "-q", *resume)
        base = run
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    report = json.loads((prepared / "prepare_report.json").read_text(encoding="utf-8"))
    iterations = []
    for it, run in enumerate(runs, start=1):
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
        last = [r for r in rows if "masked_accuracy" in r][-1]
        units = json.loads((run / "units" / "units.json").read_text(encoding="utf-8"))
        iterations.append({"iteration": it, "targets": ITERATIONS[it - 1][0], "clusters": units["clusters"],
                           "updates": summary["steps"], "minutes": round(summary["wall_seconds"] / 60, 1),
                           "masked_accuracy": round(last["masked_accuracy"], 4),
                           "unmasked_accuracy": round(last["unmasked_accuracy"], 4)})
    provenance = {
        "languages": langs,
        "unlabeled_hours": report.get("unlabeled", {}).get("hours"),
        "transcripts_used": False,
        "audio": "lowres synth (eSpeak NG), 24 voices per language, varied rate and pitch, noise p=0.3, gain",
        "words": f"wordfreq top {args.words} per language (build time only)",
        "start": "tiny (random init): iteration 1 starts from it, each later one from the one before",
        "iterations": iterations,
        "build_command": "python scripts/build_base.py " + " ".join(sys.argv[1:]),
        "adapt_minutes": round(sum(i["minutes"] for i in iterations), 1),  # the three trainings, 1 thread each
        "this_invocation_minutes": round((time.perf_counter() - t0) / 60, 1),
        "lowres_commit": commit,
    }
    run = runs[-1]
    path = pack_base(run, args.ship, args.name, provenance)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")



def pack_base(run: str | Path, folder: str | Path, name: str, provenance: dict) -> Path:
    """Write ``folder/NAME.safetensors`` + ``NAME.json`` from a finished lowres adapt run (its encoder, no
    pretraining heads), with ``provenance`` plus the run's objective, updates and final training metrics."""
    from safetensors.torch import save

    from lowres import LowresError
    from lowres.bases import SUFFIX_INFO, SUFFIX_WEIGHTS, load_encoder
    from lowres.fsutil import atomic_write_bytes, atomic_write_json
    from lowres.runs import read_run

    run, folder = Path(run), Path(folder)
    record = read_run(run)
    if record.kind != "adapt":
        raise LowresError(f"{run} is a lowres {record.kind} run; a shipped base is packed from an adapt run.")
    loaded = load_encoder(run)
    state = {f"backbone.{k}": v.detach().contiguous() for k, v in loaded.model.state_dict().items()}
    state["mask_emb"] = loaded.mask_embedding.detach().contiguous()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    train_rows = [r for r in rows if "masked_accuracy" in r or "loss" in r]
    last = train_rows[-1] if train_rows else {}
    keep = ("step", "loss", "masked_accuracy", "unmasked_accuracy", "predicted_perplexity", "target_perplexity",
            "masked_fraction", "elapsed_s")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8")) if (run / "summary.json").is_file() else {}
    units = run / "units" / "units.json"
    spec = {k: v for k, v in record.spec().to_dict().items() if k not in ("pretrained", "name")}
    info = {
        "name": name,
        "spec": spec,
        "fingerprint": loaded.fingerprint,
        "objective": record.config.get("objective", "wav2vec2"),
        "updates": last.get("step"),
        "final_metrics": {k: last[k] for k in keep if k in last},
        "units": _without_pieces(units),
        "train_wall_seconds": summary.get("wall_seconds"),
        "adapt_config": record.config,
        "provenance": provenance,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{SUFFIX_WEIGHTS}"
    atomic_write_bytes(path, save(state, metadata={"name": name, "fingerprint": loaded.fingerprint}))
    atomic_write_json(folder / f"{name}{SUFFIX_INFO}", info)
    return path


def _without_pieces(units: Path) -> dict | None:
    """The run's units report without its per-piece list (the base ships without its audio)."""
    if not units.is_file():
        return None
    return {k: v for k, v in json.loads(units.read_text(encoding="utf-8")).items() if k != "pieces"}


if __name__ == "__main__":
    main()
