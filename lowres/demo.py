"""``lowres demo``: the whole pipeline on a synthetic Swahili corpus, on a CPU, with no downloads.

synth (eSpeak NG) → prepare → adapt (continued pretraining of a tiny model on the unlabeled audio) →
finetune on the 10min split from the random tiny model and from the adapted one (the same fine-tuning
method and budget on both sides) and on the 1h split → eval on the test set → one table.

Every step writes a normal lowres folder inside ``--out`` (``synth/``, ``prepared/``, ``adapt/``,
``finetune-*/``), so the results can be inspected and reused with the other commands. Re-running the demo
in the same folder reuses the steps that already finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lowres.fsutil import atomic_write_text, claim_folder


@dataclass(frozen=True)
class DemoPlan:
    hours: float  # labeled training audio synthesised
    unlabeled_hours: float
    adapt_steps: int
    steps_10min: int
    steps_1h: int


FULL = DemoPlan(hours=1.0, unlabeled_hours=0.5, adapt_steps=60, steps_10min=150, steps_1h=1100)
QUICK = DemoPlan(hours=0.2, unlabeled_hours=0.05, adapt_steps=6, steps_10min=8, steps_1h=0)


def _done(folder: Path, marker: str) -> bool:
    return (folder / marker).is_file()


def run_demo(out: Path, quick: bool = False, seed: int = 0, overwrite: bool = False, console=None) -> list[dict]:
    from lowres.config import PrepareConfig, resolve_adapt, resolve_finetune
    from lowres.data.prepare import prepare
    from lowres.data.prepared import PreparedDir
    from lowres.data.text import load_rules
    from lowres.evaluate import run_eval
    from lowres.synth.corpus import build_corpus
    from lowres.train.adapt import run_adapt
    from lowres.train.finetune import run_finetune

    plan = QUICK if quick else FULL
    out = Path(out)
    # a demo folder is continued as it is (done steps are skipped); --overwrite empties it first, and only it:
    # a folder the demo did not write may hold the user's files
    claim_folder(out, what="demo", overwrite=overwrite, is_ours=lambda folder: _done(folder, "demo.json"),
                 not_ours="no demo.json", continue_ours=True,
                 hint="The demo did not write them (no demo.json). Choose a new folder.")
    atomic_write_text(out / "demo.json", json.dumps({"quick": quick, "seed": seed, "plan": plan.__dict__}) + "\n")
    t_all = time.perf_counter()
    say = console.print if console is not None else (lambda *a, **k: None)
    minutes: dict[str, float] = {}

    def step(name: str):
        say(f"\n[bold]── {name}[/bold]")
        return time.perf_counter()

    synth_dir = out / "synth"
    t = step(f"synth: {plan.hours:g} h of transcribed + {plan.unlabeled_hours:g} h of unlabeled Swahili (eSpeak NG)")
    if not _done(synth_dir, "synth_report.json"):
        build_corpus(synth_dir, lang="sw", hours=plan.hours, unlabeled_hours=plan.unlabeled_hours, seed=seed,
                     overwrite=True, console=console)
    minutes["synth"] = (time.perf_counter() - t) / 60

    prepared = out / "prepared"
    prepared_dir = PreparedDir(prepared)  # where the later steps find its manifests
    t = step("prepare: manifests, vocabulary, 10min ⊂ 1h splits")
    if not _done(prepared, "prepare_report.json"):
        prepare(synth_dir / "labeled" / "corpus.tsv", prepared, PrepareConfig(seed=seed),
                unlabeled=synth_dir / "unlabeled", rules=load_rules("sw"), overwrite=True, console=console)
    minutes["prepare"] = (time.perf_counter() - t) / 60

    adapt_dir = out / "adapt"
    t = step(f"adapt: continued wav2vec 2.0 pretraining of the tiny model, {plan.adapt_steps} updates")
    if not _done(adapt_dir, "summary.json"):
        cfg = resolve_adapt("demo_adapt", flags={"unlabeled": str(prepared_dir.unlabeled_path), "base": "tiny",
                                                 "train.max_steps": plan.adapt_steps, "train.seed": seed})
        run_adapt(cfg, adapt_dir, overwrite=True, console=console)
    minutes["adapt"] = (time.perf_counter() - t) / 60

    runs = [("10min", "tiny (random init)", "tiny", plan.steps_10min),
            ("10min", "tiny + adapt", str(adapt_dir), plan.steps_10min)]
    if plan.steps_1h:
        runs.append(("1h", "tiny (random init)", "tiny", plan.steps_1h))
    rows = []
    for split, label, base, steps in runs:
        name = f"finetune-{split}{'-adapted' if base != 'tiny' else ''}"
        run = out / name
        t = step(f"finetune --split {split} from {label}: {steps} updates")
        if not _done(run, "summary.json"):
            # the same method on both sides: the whole model trains (a random-init base cannot use LoRA)
            cfg = resolve_finetune(split, "demo_finetune", flags={
                "data": str(prepared), "base": base, "train.max_steps": steps, "train.seed": seed,
                "lora.enabled": False, "train.head_only_steps": 0, "model.freeze_feature_encoder": False})
            run_finetune(cfg, run, overwrite=True, console=console)
        train_min = (time.perf_counter() - t) / 60
        metrics = run_eval(run, prepared_dir.manifest("test"), run / "eval-test", console=None,
                           overwrite=True)  # a re-run of the demo scores its own runs again
        summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
        rows.append({"split": split, "start": label, "adapt": base != "tiny", "updates": steps,
                     "wer": metrics["wer"], "cer": metrics["cer"], "minutes": round(train_min, 2),
                     "run": str(run), "train_seconds": summary["wall_seconds"]})
        say(f"test WER {100 * metrics['wer']:.1f}%  CER {100 * metrics['cer']:.1f}%")
    total = (time.perf_counter() - t_all) / 60
    result = {"rows": rows, "minutes": {**{k: round(v, 2) for k, v in minutes.items()}, "total": round(total, 2)},
              "quick": quick, "seed": seed}
    atomic_write_text(out / "demo_results.json", json.dumps(result, indent=1) + "\n")
    if console is not None:
        print_table(result, console)
    return rows


def print_table(result: dict, console) -> None:
    from rich.table import Table

    table = Table(title="lowres demo: synthetic Swahili, tiny wav2vec2, test set")
    for col in ("split", "start", "adapt", "updates", "WER", "CER", "minutes"):
        table.add_column(col, justify="right" if col not in ("split", "start") else "left")
    for r in result["rows"]:
        table.add_row(r["split"], r["start"], "yes" if r["adapt"] else "no", str(r["updates"]),
                      f"{100 * r['wer']:.1f}%", f"{100 * r['cer']:.1f}%", f"{r['minutes']:.1f}")
    console.print(table)
    m = result["minutes"]
    console.print(f"total {m['total']:.1f} min (synth {m['synth']:.1f}, prepare {m['prepare']:.1f}, adapt "
                  f"{m['adapt']:.1f}). Every step's folder is in the --out folder; try e.g. "
                  f"lowres transcribe --model {result['rows'][-1]['run']} some.wav")

