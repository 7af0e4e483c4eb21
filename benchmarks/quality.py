"""Quality benchmark: test WER/CER for finetune --split 10min, 1h, 10h, each with and without a preceding adapt.

On a synthetic corpus (`lowres synth`, default Swahili), from the same initial weights on both sides and
with the same fine-tuning method and budget; writes a JSON of results, a markdown table and a PNG plot of
WER against labeled duration.

    python benchmarks/quality.py --work /tmp/quality --budget cpu        # what fits a 2-core CPU
    python benchmarks/quality.py --work /tmp/quality --budget gpu        # the shipped recipes' budgets

Budgets (updates): cpu = the shipped self-supervised base ``tiny-ssl`` and the demo's recipes on a 10 h + 10 h
corpus; gpu = `small` model, the shipped recipes scaled as in the table below. Every run is a normal lowres run
folder under --work; running the command again reuses the finished runs and resumes a stopped one from its
last checkpoint. ``--base tiny`` reruns the earlier benchmark from a random-init ``tiny`` (contrastive
adapt, conv encoder trained).

The fine-tuning method is the demo's (lowres/demo.py ``finetune_flags``): the whole model trains with no
head-only phase, with speed perturbation in 5 steps (recipes/demo_finetune.toml); a pretrained start (the
shipped base, every adapted one) keeps the lowest 3 of its conv layers frozen (their output cached) and trains
the others; with ``--base tiny`` (a random init) this script trains all of them instead (the demo's random
init keeps 3 frozen too). A pretrained base is adapted with the HuBERT objective, as the demo does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

BUDGETS = {
    # labeled hours, unlabeled hours, base, adapt updates, finetune updates per split, finetune recipe
    # cpu: ≈2 h on 2 cores (synth 20 h ≈ 3 min, adapt ≈0.5 s per 30 s batch, 0.42 s per tiny fine-tuning
    # update at 20 s batches). 10h gets 3000 updates: with 1500 (8 h of audio seen, under one pass over the
    # split) it ended behind the 1h split's 1100 updates (6 passes).
    "cpu": {"hours": 10.0, "unlabeled": 10.0, "base": "tiny-ssl", "adapt_steps": 2000,
            "steps": {"10min": 500, "1h": 1100, "10h": 3000}, "recipe": "demo_finetune", "adapt_recipe": "demo_adapt"},
    "gpu": {"hours": 10.0, "unlabeled": 10.0, "base": "small", "adapt_steps": 20000,
            "steps": {"10min": 13000, "1h": 13000, "10h": 20000}, "recipe": "demo_finetune",
            "adapt_recipe": "demo_adapt"},
}




def ensure_corpus(work: Path, hours: float, unlabeled: float, seed: int) -> Path:
    """The synthetic Swahili corpus in ``work/synth``, prepared into ``work/prepared`` (both kept if there)."""
    from lowres.config import PrepareConfig
    from lowres.data.prepare import prepare
    from lowres.data.text import load_rules
    from lowres.synth.corpus import build_corpus

    work.mkdir(parents=True, exist_ok=True)
    if not (work / "synth" / "synth_report.json").is_file():
        build_corpus(work / "synth", hours=hours, unlabeled_hours=unlabeled, seed=seed, overwrite=True)
    if not (work / "prepared" / "prepare_report.json").is_file():
        prepare(work / "synth" / "labeled" / "corpus.tsv", work / "prepared", PrepareConfig(seed=seed),
                unlabeled=work / "synth" / "unlabeled", rules=load_rules("sw"), overwrite=True)
    return work / "prepared"


def _resumable(run: Path) -> bool:
    """A run stopped part-way (a checkpoint, no summary.json): the benchmark continues it with --resume
    instead of starting it again, so a stopped benchmark loses at most save_every updates."""
    from lowres.train.checkpoint import latest_checkpoint

    return (run / "config.json").is_file() and latest_checkpoint(run) is not None \
        and not (run / "summary.json").is_file()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    ap.add_argument("--splits", default="10min,1h,10h")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--base", default=None, help="the start of every row (default: the budget's; tiny = random init)")
    ap.add_argument("--threads", type=int, default=0, help="train.threads of every run (0: torch's default)")
    args = ap.parse_args()

    from lowres.config import resolve_adapt, resolve_finetune
    from lowres.demo import finetune_flags
    from lowres.evaluate import run_eval
    from lowres.model.backbone import RANDOM_CONFIGS
    from lowres.train.adapt import run_adapt
    from lowres.train.finetune import run_finetune

    b = dict(BUDGETS[args.budget])
    if args.base:
        b["base"] = args.base
    random_init = b["base"] in RANDOM_CONFIGS  # a name that builds a random-init model
    # a random init learns with the contrastive objective; a pretrained base continues with HuBERT's (demo)
    objective = "wav2vec2" if random_init else "hubert"
    b["objective"] = objective
    work = args.work
    t0 = time.perf_counter()
    ensure_corpus(work, b["hours"], b["unlabeled"], args.seed)
    if not (work / "adapt" / "summary.json").is_file():
        resume = _resumable(work / "adapt")
        cfg = resolve_adapt(b["adapt_recipe"], flags={"unlabeled": str(work / "prepared" / "unlabeled.jsonl"),
                                                      "base": b["base"], "train.max_steps": b["adapt_steps"],
                                                      "objective": objective, "train.threads": args.threads,
                                                      "train.device": args.device, "train.seed": args.seed})
        run_adapt(cfg, work / "adapt", resume=resume, overwrite=not resume)
    adapt_rows = [json.loads(line) for line in (work / "adapt" / "metrics.jsonl").read_text().splitlines()]
    keys = ("step", "contrastive", "accuracy", "code_perplexity") if random_init else \
        ("step", "masked_ce", "masked_accuracy", "unmasked_accuracy")
    adapt_last = [r for r in adapt_rows if keys[2] in r][-1]
    adapt_stats = {k: adapt_last[k] for k in keys}
    print("adapt, last logged window:", adapt_stats, flush=True)
    rows = []
    for split in args.splits.split(","):
        for adapted in (False, True):
            run = work / f"ft-{split}{'-adapt' if adapted else ''}"
            if not (run / "summary.json").is_file():
                base = str(work / "adapt") if adapted else b["base"]
                flags = finetune_flags(str(work / "prepared"), base, b["steps"][split], args.seed)
                if random_init:  # the adapted random init's conv encoder has learnt only from adapt: all of it trains
                    flags.update({"model.freeze_feature_encoder": False, "model.frozen_conv_layers": 0})
                cfg = resolve_finetune(split, b["recipe"], flags={**flags, "train.device": args.device,
                                                                  "train.threads": args.threads})
                resume = _resumable(run)
                run_finetune(cfg, run, resume=resume, overwrite=not resume)
            m = run_eval(run, work / "prepared" / "manifests" / "test.jsonl", run / "eval-test", args.device)
            rows.append({"split": split, "adapt": adapted, "updates": b["steps"][split], "wer": m["wer"],
                         "cer": m["cer"]})
            print(rows[-1], flush=True)
    result = {"budget": args.budget, **b, "adapt_end": adapt_stats, "rows": rows,
              "wall_minutes": (time.perf_counter() - t0) / 60}
    (work / "quality.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["| split | adapt | updates | test WER | test CER |", "|---|---|---|---|---|"]
    lines += [f"| {r['split']} | {'yes' if r['adapt'] else 'no'} | {r['updates']} | {100 * r['wer']:.1f}% | "
              f"{100 * r['cer']:.1f}% |" for r in rows]
    if random_init:
        lines.append(f"\nadapt: {adapt_stats['step']} updates, at the end contrastive loss "
                     f"{adapt_stats['contrastive']:.3f}, accuracy {100 * adapt_stats['accuracy']:.1f}% "
                     "(chance: 1/(negatives + 1))")
    else:
        lines.append(f"\nadapt (HuBERT, from {b['base']}): {adapt_stats['step']} updates, at the end masked "
                     f"accuracy {100 * adapt_stats['masked_accuracy']:.1f}%, unmasked "
                     f"{100 * adapt_stats['unmasked_accuracy']:.1f}%")
    (work / "quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, work / "quality.png", b["base"])


def plot(rows: list[dict], path: Path, base: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = {"10min": 1 / 6, "1h": 1.0, "10h": 10.0, "full": 10.0}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for ax, key, name in ((axes[0], "wer", "test WER %"), (axes[1], "cer", "test CER %")):
        for adapted, style in ((False, "o--"), (True, "s-")):
            pts = sorted((hours[r["split"]], 100 * r[key]) for r in rows if r["adapt"] == adapted)
            ax.plot([h for h, _ in pts], [v for _, v in pts], style,
                    label="with adapt" if adapted else "without adapt")
        ax.set_xscale("log")
        ax.set_xlabel("labeled hours (split)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"lowres quality benchmark (synthetic Swahili, from {base})")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
