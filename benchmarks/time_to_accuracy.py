"""Time to accuracy: dev CER against training wall time of lowres's 1h recipe, transformers + peft with the
Hugging Face CTC example's defaults, and lowres's frozen-upstream head, from the same shipped base (#17).

    python benchmarks/time_to_accuracy.py --work /tmp/tta --minutes 30 --every-s 60     # the full budget
    python benchmarks/time_to_accuracy.py --work /tmp/tta-quick --quick                  # a smoke check

Figures, machine and the exact command behind them: benchmarks/README.md ("Time to accuracy").

What runs (each step is skipped when its output is in ``--work``, so a stopped run continues):

1. the corpus: ``lowres synth --lang sw --hours 1.2 --unlabeled-hours 0 --seed 0`` (synthetic Swahili, a
   language the shipped base never heard) and ``lowres prepare --lang sw``; every side trains on its ``1h``
   split (646 clips, 0.98 h) and is scored on ``--dev-utterances`` clips of its dev split, taken in turn from
   each of its two held-out voices (``dev-N.jsonl``, given to lowres as ``dev_manifest``, the clips that
   ``train.dev_max_utterances`` would pick: lowres.data.manifest.spread_over_speakers; the HF side gets the same);
2. three sides, one after the other on the same machine, threads and seed, all from ``--base tiny-ssl``
   (lowres/bases/tiny-ssl.json: a wav2vec2-family encoder, so the Hugging Face side is ``Wav2Vec2ForCTC``;
   ``AutoModelForCTC`` would pick ``HubertForCTC`` for a hubert-family base):

   - ``lowres``: the real CLI, ``lowres finetune --split 1h --base tiny-ssl`` (the 1h recipe: LoRA r=8, alpha=16
     on q/k/v/out_proj and both feed-forward linears, CTC head, conv encoder frozen with its features cached,
     masking 0.65/10 in time and 0.25/64 in channels, layerdrop 0.1, AdamW (0.9, 0.98) at 5e-4, fairseq's
     tri-stage schedule, clipping 1.0, 200 s micro-batches x 8 per update, a head-only phase). The budget is
     scaled down: ``--max-steps N`` (below) and ``train.head_only_steps`` = the recipe's share of the run
     (2,000 of 13,000 updates), so the recipe's shape survives the shorter run;
   - ``hf``: transformers' ``Wav2Vec2ForCTC`` + peft LoRA (see "The Hugging Face side");
   - ``weighted``: ``lowres finetune --split 1h --base tiny-ssl --head weighted`` (ML-SUPERB's frozen upstream:
     learned layer weights + BiLSTM + CTC; the whole upstream's outputs cached), the same update size;
3. the report: ``time_to_accuracy.json``, ``time_to_accuracy.md`` (the tables) and ``time_to_accuracy.png``
   (dev CER against training time, one line per side; matplotlib, as lowres/train/plot.py draws learning curves).

Clocks. Wall time counts training only, on every side: from the first update to the last, with every dev
evaluation taken out; model building, loading the base and the HF side's feature extraction (the example's
``dataset.map``, done before its Trainer starts) are outside. The lowres sides read it from ``metrics.jsonl``:
an evaluation row has ``elapsed_s`` (when it started, since the training loop began) and ``eval_s`` (how long
it took, with the writing of a new best deliverable), so the training time of the weights it scored is its
``elapsed_s`` minus the ``eval_s`` of the evaluations before it (lowres/train/loop.py; the training rows'
``audio_s_per_s`` leaves evaluations out too). lowres decodes its audio inside that time (``num_workers=0``,
the Trainer's ``dataloader_num_workers`` default, so no side uses extra processes); the HF side's audio is
decoded and normalised in memory before its clock starts, so lowres's clock carries a cost HF's does not.
The HF side writes the same rows from its own loop. Checkpoints are written only at the end, after the last
evaluation.

Budget. Every side gets ``--minutes`` of training. Its lr schedule has to end there, so its update count is
fixed in advance from a pilot of that side on the same machine just before it (``pilot-SIDE/``: lowres sides
run the CLI for one epoch + 2 updates, so that the first epoch, which fills the feature cache, and the cached
updates after it are both measured, and with no head-only phase, whose updates are cheaper, so a lowres side
ends a little before its budget; the HF side times 4 updates and drops the first; ``--quick``: 3 updates):
updates = (budget - the first epoch's or update's extra time) / seconds per later update. ``--updates SIDE=N`` fixes a side's count instead (the
JSON records every side's plan). A side whose machine got slower after its pilot runs past the budget, one
that got faster ends early; the report gives each side's real training time, and compares at equal times.

Evaluations. Every side is evaluated about every ``--every-s`` seconds of its training: every
``round(every_s / seconds per update)`` updates, and after the last; always with lowres's evaluation code
(lowres.evaluate.evaluate_utterances: the same dev clips, batches, greedy CTC decoding, lowres's text
normalisation and jiwer CER over grapheme units) on the model as it is after that update. The HF model is
wrapped so that it takes lowres's padded batches: its own ``Wav2Vec2FeatureExtractor`` normalises and pads
them and builds the attention mask, and ``_get_feat_extract_output_lengths`` gives the frames. Its vocabulary
is lowres's prepared ``vocab.json`` (blank = pad = 0), so the CER is over the same symbols.

The Hugging Face side. transformers' examples/pytorch/speech-recognition: the README's single-GPU CTC command
(``--learning_rate 3e-4 --warmup_steps 500 --per_device_train_batch_size 16 --gradient_accumulation_steps 2
--num_train_epochs 15 --layerdrop 0.0 --freeze_feature_encoder --gradient_checkpointing --fp16
--group_by_length``) over ``run_speech_recognition_ctc.py``'s ModelArguments defaults, which it writes into the
config before ``AutoModelForCTC.from_pretrained``: ``mask_time_prob 0.05``, ``mask_time_length 10``,
``mask_feature_prob 0.0``, ``layerdrop 0.0``, attention / activation / hidden / feat_proj / final dropout 0.0,
``ctc_loss_reduction "mean"``, ``ctc_zero_infinity False``; TrainingArguments' defaults (transformers 5.24):
AdamW betas (0.9, 0.999), eps 1e-8, weight decay 0, ``max_grad_norm 1.0``, linear decay after the warm-up,
``dataloader_num_workers 0``; ``group_by_length``: the Trainer's ``LengthGroupedSampler(batch x accumulation)``.
Built like this: the shipped base is converted with lowres/model/hf_convert.py (``to_hf_ctc``: its backbone
weights and mask embedding, the config from ``hf_config_from_arch``) and written as a Hugging Face folder with
lowres's vocabulary (``save_hf_directory``), loaded with ``AutoModelForCTC.from_pretrained(folder, **the
example's overrides)``, its ``lm_head`` re-drawn as transformers draws a missing head (normal, std
``initializer_range``, zero bias), ``freeze_feature_encoder()``, then ``get_peft_model(LoraConfig(r, alpha,
dropout of lowres's LoRA defaults, target_modules = lowres's targets, modules_to_save=["lm_head"]))``. A plain
torch loop (no Trainer) does what the Trainer does with those arguments: micro-batches of 16 from the
length-grouped order, padded by the feature extractor with an attention mask (the example's
``DataCollatorCTCWithPadding``), labels padded with -100, loss / micro-batches, clipping at 1.0, AdamW step,
linear schedule step; an update at the end of an epoch with the micro-batches left; a non-finite loss is counted
(``hf/summary.json``), not skipped, as the Trainer does. (The sampler's megabatches
hold 50 x batch x accumulation clips, more than the 1h split has, so every epoch is the whole split sorted
longest first: the same updates each epoch, as the Trainer gives with these settings.) What differs from the
README, and why: fp32 (``--fp16`` needs CUDA; lowres runs fp32 on CPU too); no gradient checkpointing (it only
saves memory and would cost HF ~25% per update: benchmarks/README.md); the update's size matched to lowres's
(below) instead of 32 clips; the warm-up a share of the run (``--hf-warmup-share``, default 0.1 = lowres's
tri-stage warm-up share), since the README's 500 steps are longer than this whole budget; the run length is
the time budget, not 15 epochs.

Matched on every side: base weights, training clips (lowres's filter: transcripts that fit their frames),
vocabulary and targets, dev clips and scoring, threads (``--threads``), seed, clipping at 1.0, the conv encoder
frozen, LoRA rank / alpha / dropout / target modules (lowres vs HF), the audio per update: lowres's 1h recipe
takes 200 s x 8 micro-batches (``--update-seconds``, default 1,600; padding included), whose real audio per
update, about 1,400 s (its micro-batches hold about 177 s of speech), is computed from lowres's bucket
sampler; the HF side accumulates ``round(that / (16 x mean clip
duration))`` micro-batches of 16. Not matched, by design (each side's documented defaults): lr and schedule,
masking, layerdrop, dropouts, Adam betas, the head-only phase, batching (lowres's duration buckets vs HF's
length groups), CTC loss normalisation (per utterance vs per target length), lowres's feature cache.

Report. A table of each side's dev CER at every ``--every-s`` of training time (the latest evaluation at or
before it: on every side up to one evaluation interval old), the time each side first reached the best CER of the slowest side (the one whose best CER is the
highest), every side's CER at the equal wall time (the shortest side's training time) and at its own end, and
the goal of #17: lowres reaches the HF side's final CER in at most two thirds of the HF side's training time
(>= 1.5x) without a worse final CER. The load average (1 minute) is sampled every 5 s and reported per side,
with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # before transformers is imported
warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation notes, raised by peft

import torch  # noqa: E402

SIDES = ("lowres", "hf", "weighted")
LABELS = {"lowres": "lowres finetune (1h recipe, LoRA)", "hf": "transformers + peft (HF CTC example)",
          "weighted": "lowres finetune --head weighted"}
COLOURS = {"lowres": "tab:blue", "hf": "tab:red", "weighted": "tab:green"}
SPLIT = "1h"
SAMPLE_RATE = 16000
HF_BATCH = 16  # the README's --per_device_train_batch_size
HF_LR = 3e-4  # the README's --learning_rate
GOAL_SPEEDUP = 1.5  # #17: the peer's final CER in at most two thirds of its time


# ---------------------------------------------------------------------------------------------------
# reading a side's metrics (pure functions: tests/test_time_to_accuracy.py)


def timeline(rows: list[dict]) -> dict:
    """A side's evaluations on its training clock, from its metrics.jsonl rows (training rows have ``loss`` and
    ``elapsed_s``; evaluation rows ``dev_cer``, ``elapsed_s`` and ``eval_s``). Returns ``{"points": [{"train_s",
    "step", "cer", "wer", "empty"}], "end_s": training time at the last update, "steps": updates}``."""
    evals = sorted((r for r in rows if "dev_cer" in r and "eval_s" in r), key=lambda r: r["elapsed_s"])
    train = sorted((r for r in rows if "loss" in r and "elapsed_s" in r), key=lambda r: r["step"])
    points, spent = [], 0.0
    for r in evals:
        points.append({"train_s": r["elapsed_s"] - spent, "step": r["step"], "cer": r["dev_cer"],
                       "wer": r.get("dev_wer"), "empty": r.get("dev_empty_hypotheses")})
        spent += r["eval_s"]
    end_s, steps = 0.0, 0
    if train:
        last = train[-1]
        before = sum(r["eval_s"] for r in evals if r["step"] < last["step"])
        end_s, steps = last["elapsed_s"] - before, last["step"]
    if points:  # the last evaluation follows the last update: the same instant, up to the loop's bookkeeping
        end_s = max(end_s, points[-1]["train_s"])
    return {"points": points, "end_s": end_s, "steps": steps}


def cer_at(points: list[dict], t: float) -> float | None:
    """The CER a side had shown by training time ``t``: its latest evaluation at or before ``t`` (None before
    its first)."""
    seen = [p for p in points if p["train_s"] <= t + 1e-9]
    return seen[-1]["cer"] if seen else None


def first_reach(points: list[dict], target: float) -> float | None:
    """Training time of a side's first evaluation with CER at or below ``target`` (None: never)."""
    for p in points:
        if p["cer"] <= target + 1e-12:
            return p["train_s"]
    return None


def compare(lines: dict[str, dict], dev_count: int, peer: str = "hf") -> dict:
    """The report's figures over the sides' timelines (``{side: timeline(...)}``, sides without evaluations
    left out), scored on ``dev_count`` dev clips; the goal is checked for each lowres side against ``peer``
    (``goal`` for the 1h recipe, ``goal_weighted`` for the frozen-upstream path: both are lowres)."""
    lines = {k: v for k, v in lines.items() if v["points"]}
    out: dict = {"sides": {}}
    if not lines:
        return out
    equal_s = min(v["end_s"] for v in lines.values())
    best = {k: min(p["cer"] for p in v["points"]) for k, v in lines.items()}
    slowest = max(best, key=lambda k: best[k])
    target = best[slowest]
    for k, v in lines.items():
        pts = v["points"]
        out["sides"][k] = {
            "updates": v["steps"], "train_s": round(v["end_s"], 1), "evaluations": len(pts),
            "best_cer": best[k], "best_at_s": round(next(p["train_s"] for p in pts if p["cer"] == best[k]), 1),
            "final_cer": pts[-1]["cer"], "final_wer": pts[-1]["wer"],
            "final_all_blank": pts[-1]["empty"] == dev_count,
            "cer_at_equal_time": cer_at(pts, equal_s),
            "reaches_slowest_best_at_s": _round(first_reach(pts, target)),
        }
    out["equal_time_s"] = round(equal_s, 1)
    out["slowest"] = {"side": slowest, "best_cer": target}
    for ours, key in (("lowres", "goal"), ("weighted", "goal_weighted")):
        if ours in lines and peer in lines:
            out[key] = _goal(lines, out["sides"][peer]["final_all_blank"], ours, peer)
    return out


def _goal(lines: dict[str, dict], peer_all_blank: bool, ours: str, peer: str) -> dict:
    """#17's goal for side ``ours``: it reaches ``peer``'s final CER within 1 / GOAL_SPEEDUP of the peer's
    training time and ends no worse, and the peer left the all-blank phase."""
    peer_final, peer_end = lines[peer]["points"][-1]["cer"], lines[peer]["end_s"]
    reach = first_reach(lines[ours]["points"], peer_final)
    speedup = peer_end / reach if reach else None
    not_worse = lines[ours]["points"][-1]["cer"] <= peer_final + 1e-12
    blank = peer_all_blank or peer_final >= 1.0
    return {
        "peer": peer, "peer_final_cer": peer_final, "peer_train_s": round(peer_end, 1),
        "ours": ours, "ours_reaches_peer_final_at_s": _round(reach), "speedup": _round(speedup, 3),
        "ours_final_cer": lines[ours]["points"][-1]["cer"], "final_not_worse": not_worse,
        "met": bool(speedup is not None and speedup >= GOAL_SPEEDUP and not_worse and not blank),
        "note": ("the peer ended at a CER of 100% or more, or with empty hypotheses (CTC's all-blank phase): no "
                 "better than an empty transcript, so reaching it means nothing; give a larger budget")
        if blank else "",
    }


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def clock(seconds: float) -> str:
    """Training time as m:ss (h:mm:ss from an hour)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def grid_table(lines: dict[str, dict], every_s: float) -> list[str]:
    """Markdown rows: dev CER (%) of every side at every ``every_s`` of training time, up to the longest side."""
    sides = [k for k in SIDES if k in lines and lines[k]["points"]]
    if not sides:
        return []
    longest = max(lines[k]["end_s"] for k in sides)
    rows = ["| training time (m:ss) | " + " | ".join(f"{k} dev CER" for k in sides) + " |",
            "|---|" + "---|" * len(sides)]
    n = max(1, math.ceil(longest / every_s - 1e-9))
    for i in range(1, n + 1):
        t = min(i * every_s, longest)
        cells = []
        for k in sides:
            c = cer_at(lines[k]["points"], t)
            cells.append("—" if c is None else f"{100 * c:.1f}%")
        rows.append(f"| {clock(t)} | " + " | ".join(cells) + " |")
    return rows


# ---------------------------------------------------------------------------------------------------
# plumbing


def read_rows(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
    return rows


def lowres(*args) -> None:
    cmd = [sys.executable, "-m", "lowres", *[str(a) for a in args]]
    print("$ lowres " + " ".join(str(a) for a in args), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ})


class LoadSampler:
    """The 1-minute load average every ``period_s`` seconds, tagged with the side running then."""

    def __init__(self, period_s: float = 5.0):
        self.samples: list[tuple[str, float]] = []
        self.side = "setup"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period_s,), daemon=True)

    def _run(self, period_s: float) -> None:
        while True:
            self.samples.append((self.side, round(os.getloadavg()[0], 2)))
            if self._stop.wait(period_s):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self, side: str) -> dict | None:
        values = [v for s, v in self.samples if s == side]
        if not values:
            return None
        return {"min": min(values), "median": statistics.median(values), "max": max(values), "samples": len(values)}


def settings_guard(folder: Path, settings: dict) -> bool:
    """True when ``folder`` holds a finished side run with exactly these settings (reuse it); a finished run with
    other settings is an error (another --work, or remove the folder); an unfinished one is redone."""
    done = (folder / "summary.json").is_file()
    recorded = folder / "bench_settings.json"
    if done and recorded.is_file():
        if json.loads(recorded.read_text()) == settings:
            return True
        raise SystemExit(f"{folder} holds a run made with other settings ({recorded}). Use another --work, or "
                         f"remove {folder} to redo it.")
    return False


# ---------------------------------------------------------------------------------------------------
# the data every side shares


class Data:
    """The prepared corpus as the lowres recipe sees it: vocabulary, text rules, trainable 1h clips, dev clips."""

    def __init__(self, prepared: Path, base: str, dev_utterances: int, seed: int, work: Path | None = None):
        from lowres.bases import load_base
        from lowres.config import resolve_finetune
        from lowres.data import batching
        from lowres.data.manifest import read_manifest, spread_over_speakers
        from lowres.data.prepared import PreparedDir
        from lowres.data.text import text_config_from_dict

        self.recipe = resolve_finetune(SPLIT)
        self.prepared = PreparedDir.open(prepared)
        self.vocab = self.prepared.load_vocab()
        self.text_cfg = text_config_from_dict(self.prepared.text_settings)
        self.base = base
        self.loaded = load_base(base, seed=seed)
        t = self.recipe.train
        train_all = list(read_manifest(self.prepared.manifest(SPLIT), require_text=True))
        self.train, self.dropped = batching.filter_trainable(train_all, self.vocab, self.loaded.spec.conv_stack,
                                                             t.max_utterance_s or t.batch_seconds)
        self.dev = spread_over_speakers(list(read_manifest(self.prepared.dev_manifest(), require_text=True)),
                                        dev_utterances)
        self.dev_manifest = None
        if work is not None:  # the lowres sides read it with --set dev_manifest=...
            from lowres.data.manifest import write_manifest

            self.dev_manifest = work / f"dev-{len(self.dev)}.jsonl"
            write_manifest(self.dev_manifest, self.dev)
        self.seed = seed

    def lowres_audio_per_update(self, accumulate: int) -> tuple[float, float]:
        """(real audio seconds, micro-batches per epoch) of the lowres side: its bucket sampler's first epoch."""
        from lowres.data.batching import BucketBatchSampler

        durations = [u.duration for u in self.train]
        batches = BucketBatchSampler(durations, self.recipe.train.batch_seconds, seed=self.seed).epoch_batches(0)
        per_micro = sum(durations) / len(batches)
        return per_micro * accumulate, len(batches)


# ---------------------------------------------------------------------------------------------------
# the lowres sides: the real CLI


def lowres_finetune(args, data: Data, side: str, out: Path, steps: int, eval_every: int, accumulate: int,
                    dev_utterances: int, head_only: int | None = None) -> None:
    """``lowres finetune --split 1h --base BASE`` (``--head weighted`` for that side) with the benchmark's budget:
    ``steps`` updates, a head-only phase of the recipe's share of them (or ``head_only``), evaluations every
    ``eval_every`` updates on the ``dev_utterances`` dev clips, a metrics row per update, checkpoints at
    the end only, the decoding in the training process."""
    recipe = data.recipe.train
    if head_only is None:
        head_only = round(steps * recipe.head_only_steps / recipe.max_steps)
    extra = ["--head", "weighted"] if side == "weighted" else ["--set", f"train.head_only_steps={head_only}"]
    lowres("finetune", "--data", data.prepared.root, "--split", SPLIT, "--base", data.base, "--out", out,
           "--max-steps", steps, "--seed", args.seed, "--accumulate", accumulate, *extra,
           "--set", f"train.eval_every={eval_every}", "--set", "train.log_every=1", "--set", "train.save_every=0",
           *(["--set", f"dev_manifest={data.dev_manifest}"] if dev_utterances > 1 else []),
           "--set", f"train.dev_max_utterances={dev_utterances}", "--set", f"train.threads={args.threads}",
           "--set", "train.num_workers=0", "-q", "--overwrite")


def pilot_fit(rows: list[dict]) -> dict:
    """Seconds per update after the first epoch, and the first epoch's extra time, from a pilot's training rows
    (``elapsed_s`` at every update, no evaluation before the end)."""
    train = sorted((r for r in rows if "loss" in r and "elapsed_s" in r), key=lambda r: r["step"])
    times = [(r["step"], r["elapsed_s"], r["epoch"]) for r in train]
    gaps = [(b[1] - a[1], a[2]) for a, b in zip(times, times[1:], strict=False)]
    later = [g for g, epoch in gaps if epoch >= 1] or [g for g, _ in gaps] or [times[-1][1]]
    per_update = statistics.median(later)
    overhead = max(0.0, times[-1][1] - len(times) * per_update)
    return {"s_per_update": per_update, "overhead_s": overhead, "pilot_updates": len(times),
            "pilot_s": times[-1][1]}


def run_lowres_side(args, data: Data, side: str, plan: dict) -> tuple[Path, bool]:
    """Pilot (unless planned already or fixed by --updates), plan, and the run of a lowres side: (its folder,
    whether it trained now)."""
    accumulate = plan["accumulate"]
    common = {"accumulate": accumulate, "seed": args.seed, "threads": args.threads, "base": data.base}
    if "pilot" not in plan and side not in args.fixed:
        _, micro_per_epoch = data.lowres_audio_per_update(accumulate)
        n = args.pilot_updates or math.ceil(micro_per_epoch / accumulate) + 2
        pilot = args.work / f"pilot-{side}"
        settings = {"updates": n, **common}
        if not settings_guard(pilot, settings):
            # no head-only phase: the pilot times the updates that train the adapters (head-only ones are cheaper)
            lowres_finetune(args, data, side, pilot, n, 0, accumulate, 1, head_only=0)
            (pilot / "bench_settings.json").write_text(json.dumps(settings, indent=1) + "\n")
        plan["pilot"] = pilot_fit(read_rows(pilot / "metrics.jsonl"))
    fit = plan.get("pilot") or {"s_per_update": 60 * args.minutes / args.fixed[side], "overhead_s": 0.0}
    plan["updates"] = args.fixed.get(side) or max(2, int((60 * args.minutes - fit["overhead_s"]) / fit["s_per_update"]))
    plan["eval_every"] = max(1, round(args.every_s / fit["s_per_update"]))
    out = args.work / side
    settings = {"updates": plan["updates"], "eval_every": plan["eval_every"], "dev_utterances": len(data.dev), **common}
    if settings_guard(out, settings):
        return out, False
    lowres_finetune(args, data, side, out, plan["updates"], plan["eval_every"], accumulate, len(data.dev))
    (out / "bench_settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    return out, True


# ---------------------------------------------------------------------------------------------------
# the Hugging Face side


HF_OVERRIDES = dict(  # run_speech_recognition_ctc.py's ModelArguments defaults + the README's --layerdrop 0.0
    feat_proj_dropout=0.0, attention_dropout=0.0, hidden_dropout=0.0, final_dropout=0.0, activation_dropout=0.0,
    mask_time_prob=0.05, mask_time_length=10, mask_feature_prob=0.0, mask_feature_length=10, layerdrop=0.0,
    ctc_loss_reduction="mean", ctc_zero_infinity=False,
)


def hf_base_folder(data: Data, folder: Path) -> Path:
    """The shipped base as a Hugging Face ``*ForCTC`` folder with lowres's vocabulary (written once)."""
    from lowres.model.hf_convert import quiet_transformers, save_hf_directory, to_hf_ctc

    if (folder / "config.json").is_file() and (folder / "preprocessor_config.json").is_file():
        return folder
    spec = data.loaded.spec
    head = torch.nn.Linear(int(spec.arch["encoder_embed_dim"]), len(data.vocab))  # re-drawn after loading
    with quiet_transformers():
        hf = to_hf_ctc(data.loaded.model, head, spec.family, spec.arch, len(data.vocab), spec.normalize_waveform,
                       mask_embedding=data.loaded.mask_embedding)
    save_hf_directory(folder, hf, data.vocab.token_to_id(), spec.normalize_waveform)
    return folder


class HFRecogniser(torch.nn.Module):
    """A peft-wrapped ``*ForCTC`` model behind lowres's recogniser interface (``model(waves, lengths) -> (logits,
    frames)``), so that lowres's evaluation code scores it: the feature extractor normalises and pads the clips
    and makes the attention mask, as the HF example's processor does."""

    def __init__(self, model, extractor, spec):
        super().__init__()
        self.model = model
        self.extractor = extractor
        self.spec = spec  # lowres's decoding reads spec.conv_stack (the shortest clip that makes one frame)

    def forward(self, waves, lengths, generator=None):  # (B, T), (B,) -> (B, F, V), (B,)
        arrays = [waves[i, : int(n)].float().cpu().numpy() for i, n in enumerate(lengths.tolist())]
        feats = self.extractor(arrays, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=True,
                               return_tensors="pt")
        logits = self.model(input_values=feats["input_values"].to(waves.device),
                            attention_mask=feats["attention_mask"].to(waves.device)).logits
        return logits, self.model.get_base_model()._get_feat_extract_output_lengths(lengths)


class HFSide:
    """transformers + peft trained as run_speech_recognition_ctc.py + Trainer would (module docstring)."""

    def __init__(self, args, data: Data, folder: Path):
        import numpy as np
        import transformers

        from lowres.data.batching import UtteranceDataset

        self.args, self.data, self.folder = args, data, folder
        self.extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(str(folder))
        # the example's dataset.map: audio decoded, normalised by the feature extractor, labels encoded; once,
        # before training
        dataset = UtteranceDataset(data.train, data.vocab)
        self.items = []
        for i in range(len(dataset)):
            item = dataset[i]
            values = self.extractor(item["wave"], sampling_rate=SAMPLE_RATE).input_values[0]
            self.items.append({"input_values": np.asarray(values, dtype=np.float32), "labels": item["labels"]})
        self.lengths = [len(it["input_values"]) for it in self.items]

    def build(self, seed: int):
        import transformers
        from peft import LoraConfig, get_peft_model

        from lowres.model.hf_convert import quiet_transformers
        from lowres.model.lora import lora_targets

        torch.manual_seed(seed)
        with quiet_transformers():
            model = transformers.AutoModelForCTC.from_pretrained(str(self.folder), **HF_OVERRIDES)
        # the folder carries the head lowres wrote; the example starts from a base without one, which
        # transformers draws like this
        torch.nn.init.normal_(model.lm_head.weight, mean=0.0, std=model.config.initializer_range)
        torch.nn.init.zeros_(model.lm_head.bias)
        model.freeze_feature_encoder()
        lora = self.data.recipe.lora
        config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                            target_modules=list(lora_targets(self.data.loaded.spec.family)),
                            modules_to_save=["lm_head"])
        model = get_peft_model(model, config)
        model.train()
        return model

    def micro_batches(self, seed: int, accumulate: int):
        """Endless (epoch, update's micro-batches) from the Trainer's length-grouped order, epoch after epoch:
        ``LengthGroupedSampler(batch x accumulation)`` drawn anew each epoch, cut into micro-batches of 16, an
        update every ``accumulate`` of them (fewer at the end of an epoch). Its megabatches hold 50 x batch x
        accumulation clips, more than this split has, so each epoch is the whole split sorted longest first:
        the same updates every epoch, as the Trainer would give here."""
        from transformers.trainer_pt_utils import LengthGroupedSampler

        gen = torch.Generator().manual_seed(seed)
        sampler = LengthGroupedSampler(HF_BATCH * accumulate, lengths=self.lengths, generator=gen)
        epoch = 0
        while True:
            order = list(sampler)
            micro = [order[i: i + HF_BATCH] for i in range(0, len(order), HF_BATCH)]
            for i in range(0, len(micro), accumulate):
                yield epoch, micro[i: i + accumulate]
            epoch += 1

    def collate(self, idx: list[int]) -> dict:
        """The example's DataCollatorCTCWithPadding: inputs padded by the feature extractor (with the attention
        mask), labels padded with -100."""
        feats = self.extractor.pad([{"input_values": self.items[i]["input_values"]} for i in idx], padding=True,
                                   return_attention_mask=True, return_tensors="pt")
        longest = max(len(self.items[i]["labels"]) for i in idx)
        labels = torch.full((len(idx), longest), -100, dtype=torch.long)
        for row, i in enumerate(idx):
            labels[row, : len(self.items[i]["labels"])] = torch.tensor(self.items[i]["labels"])
        return {"input_values": feats["input_values"], "attention_mask": feats["attention_mask"], "labels": labels}

    def train(self, steps: int, accumulate: int, seed: int, eval_every: int, out: Path | None) -> list[float]:
        """``steps`` updates; evaluations every ``eval_every`` (0: none) and after the last, rows written to
        ``out``/metrics.jsonl as lowres writes them. Returns the seconds of each update."""
        import transformers

        model = self.build(seed)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.args.hf_lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        warmup = round(self.args.hf_warmup_share * steps)
        scheduler = transformers.get_linear_schedule_with_warmup(optimizer, warmup, steps)
        log = (out / "metrics.jsonl").open("w", encoding="utf-8") if out else None
        recogniser = HFRecogniser(model, self.extractor, self.data.loaded.spec)
        durations, spent, nonfinite = [], 0.0, 0
        started = time.perf_counter()
        batches = self.micro_batches(seed, accumulate)
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            epoch, micro = next(batches)
            total = 0.0
            for idx in micro:
                loss = model(**self.collate(idx)).loss / len(micro)
                loss.backward()
                total += float(loss.detach())
            nonfinite += not math.isfinite(total)
            lr = optimizer.param_groups[0]["lr"]  # this update's
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            now = time.perf_counter()
            durations.append(now - t0)
            if log:
                log.write(json.dumps({"step": step, "loss": total, "lr": lr, "epoch": epoch,
                                      "elapsed_s": now - started}) + "\n")
            if log and (step == steps or (eval_every and step % eval_every == 0)):
                row = self.evaluate(recogniser)
                row.update(step=step, elapsed_s=now - started, eval_s=time.perf_counter() - now)
                log.write(json.dumps(row) + "\n")
                log.flush()
                print(f"hf update {step}/{steps}: dev CER {100 * row['dev_cer']:.1f}% after "
                      f"{now - started - spent:.0f} s of training", flush=True)
                spent += row["eval_s"]
        if log:
            log.close()
            summary = {"steps": steps, "accumulate": accumulate, "warmup_steps": warmup, "nonfinite_losses": nonfinite,
                       "trainable_parameters": sum(p.numel() for p in params),
                       "s_per_update_median": statistics.median(durations)}
            (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        return durations

    def evaluate(self, recogniser) -> dict:
        from lowres.decode import DecodeOptions
        from lowres.evaluate import evaluate_utterances

        t = self.data.recipe.train  # the options lowres's own dev evaluation uses (lowres/train/tasks/ctc.py)
        options = DecodeOptions(batch_seconds=max(t.batch_seconds, 60.0), workers=0, precision=t.precision)
        scorer, _ = evaluate_utterances(recogniser, self.data.dev, self.data.vocab, torch.device("cpu"),
                                        self.data.text_cfg, options=options)
        recogniser.train()
        return {"dev_wer": scorer.wer, "dev_cer": scorer.cer, "dev_empty_hypotheses": scorer.empty_hypotheses}


def run_hf_side(args, data: Data, plan: dict) -> tuple[Path, bool]:
    """Feature extraction, pilot (unless planned already or fixed by --updates), plan and run of the HF side:
    (its folder, whether it trained now)."""
    torch.set_num_threads(args.threads)
    folder = hf_base_folder(data, args.work / "hf-base")
    out = args.work / "hf"
    audio_per_update, _ = data.lowres_audio_per_update(plan["lowres_accumulate"])
    mean_clip = sum(u.duration for u in data.train) / len(data.train)
    plan["accumulate"] = max(1, round(audio_per_update / (HF_BATCH * mean_clip)))
    plan["audio_per_update_s"] = round(HF_BATCH * plan["accumulate"] * mean_clip, 1)
    side = None
    fit = plan.get("pilot")
    if fit is None and "hf" in args.fixed:
        fit = {"s_per_update": 60 * args.minutes / args.fixed["hf"], "overhead_s": 0.0}
    if fit is None:
        pilot_file = args.work / "pilot-hf" / "pilot.json"
        key = {"accumulate": plan["accumulate"], "threads": args.threads, "seed": args.seed}
        if pilot_file.is_file() and all(json.loads(pilot_file.read_text()).get(k) == v for k, v in key.items()):
            fit = json.loads(pilot_file.read_text())
        else:
            side = HFSide(args, data, folder)
            n = args.pilot_updates or 4
            durations = side.train(n, plan["accumulate"], args.seed, 0, None)
            per_update = statistics.median(durations[1:] or durations)
            fit = {"s_per_update": per_update, "overhead_s": max(0.0, durations[0] - per_update),
                   "pilot_updates": n, "pilot_s": sum(durations), **key}
            pilot_file.parent.mkdir(parents=True, exist_ok=True)
            pilot_file.write_text(json.dumps(fit, indent=1) + "\n")
        plan["pilot"] = fit
    budget = 60 * args.minutes
    plan["updates"] = args.fixed.get("hf") or max(2, int((budget - fit["overhead_s"]) / fit["s_per_update"]))
    plan["eval_every"] = max(1, round(args.every_s / fit["s_per_update"]))
    plan["warmup_steps"] = round(args.hf_warmup_share * plan["updates"])
    settings = {k: plan[k] for k in ("updates", "eval_every", "accumulate")} | {
        "dev_utterances": len(data.dev), "seed": args.seed, "threads": args.threads, "base": data.base,
        "lr": args.hf_lr, "warmup_share": args.hf_warmup_share}
    if settings_guard(out, settings):
        return out, False
    side = side or HFSide(args, data, folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)
    side.train(plan["updates"], plan["accumulate"], args.seed, plan["eval_every"], out)
    (out / "bench_settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    return out, True


# ---------------------------------------------------------------------------------------------------
# the report


def plot(lines: dict[str, dict], out: Path, title: str) -> bool:
    """Dev CER (%) against training minutes, one line per side (matplotlib, headless, as lowres/train/plot.py)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for side in SIDES:
        pts = lines.get(side, {}).get("points") or []
        if pts:
            ax.plot([p["train_s"] / 60 for p in pts], [100 * p["cer"] for p in pts], "o-", markersize=3,
                    color=COLOURS[side], label=LABELS[side])
    ax.set_xlabel("training wall time (min; dev evaluations excluded)")
    ax.set_ylabel("dev CER (%)")
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return True


def report(args, data: Data, plans: dict, runs: dict[str, Path], loads: LoadSampler, t0: float) -> dict:
    from finetune_speed import machine  # benchmarks/finetune_speed.py: the same machine record

    lines = {side: timeline(read_rows(run / "metrics.jsonl")) for side, run in runs.items()}
    figures = compare(lines, len(data.dev))
    for side in runs:
        if side in figures["sides"]:
            figures["sides"][side]["load_average_1min"] = plans[side].get("load_average_1min")
            figures["sides"][side]["plan"] = plans[side]
    result = {"base": data.base, "split": SPLIT, "train_clips": len(data.train), "dropped": data.dropped,
              "train_hours": round(sum(u.duration for u in data.train) / 3600, 3), "dev_utterances": len(data.dev),
              "minutes_per_side": args.minutes, "every_s": args.every_s, "threads": args.threads, "seed": args.seed,
              "quick": args.quick, "machine": machine(torch.device("cpu")), "figures": figures,
              "timelines": lines, "benchmark_minutes": round((time.perf_counter() - t0) / 60, 1)}
    md = markdown(result, lines, args.every_s)
    (args.work / "time_to_accuracy.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.work / "time_to_accuracy.md").write_text(md)
    plot(lines, args.work / "time_to_accuracy.png",
         f"{data.base}, {SPLIT} split of synthetic Swahili, {len(data.dev)} dev clips, {args.threads} thread(s)")
    print(md)
    return result


def markdown(result: dict, lines: dict, every_s: float) -> str:
    f = result["figures"]
    out = [f"Dev CER ({result['dev_utterances']} dev clips) against training time; `{result['base']}`, "
           f"{result['split']} split ({result['train_clips']} clips, {result['train_hours']} h), "
           f"{result['minutes_per_side']} min per side, {result['threads']} thread(s).", ""]
    out += grid_table(lines, every_s)
    out += ["", "Times are training time (m:ss), dev evaluations excluded.", "",
            "| side | updates | audio/update | training time | best CER (at) | final CER | CER at equal time "
            f"({clock(f.get('equal_time_s', 0))}) | reaches {f.get('slowest', {}).get('side', '?')}'s best "
            f"({100 * f.get('slowest', {}).get('best_cer', 0):.1f}%) at | load avg (median, max) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for side in SIDES:
        s = f["sides"].get(side)
        if s is None:
            continue
        plan = s["plan"]
        load = s.get("load_average_1min") or {}
        reach = s["reaches_slowest_best_at_s"]
        equal = s["cer_at_equal_time"]
        out.append(f"| {LABELS[side]} | {s['updates']} | {plan.get('audio_per_update_s', 0):.0f} s | "
                   f"{clock(s['train_s'])} | {100 * s['best_cer']:.1f}% ({clock(s['best_at_s'])}) | "
                   f"{100 * s['final_cer']:.1f}% | {'—' if equal is None else f'{100 * equal:.1f}%'} | "
                   f"{'never' if reach is None else clock(reach)} | "
                   f"{load.get('median', '—')}, {load.get('max', '—')} |")
    for g in (f.get("goal"), f.get("goal_weighted")):
        if not g:
            continue
        reach = g["ours_reaches_peer_final_at_s"]
        when = "never" if reach is None else clock(reach)
        factor = "" if g["speedup"] is None else f" ({g['speedup']:.2f}x faster)"
        verdict = "met" if g["met"] else "not met"
        out += ["", f"Goal (#17): {LABELS[g['ours']]} reaches the HF side's final CER ({100 * g['peer_final_cer']:.1f}% after "
                f"{clock(g['peer_train_s'])}) at {when}{factor}; its final CER "
                f"{100 * g['ours_final_cer']:.1f}% ({'not worse' if g['final_not_worse'] else 'worse'}): "
                f"**{verdict}** (needs >= {GOAL_SPEEDUP}x and a final CER not worse)."
                + (f" Note: {g['note']}." if g["note"] else "")]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="kept; steps whose outputs exist are skipped")
    ap.add_argument("--minutes", type=float, default=None, help="training minutes per side (default 30; quick 0.4)")
    ap.add_argument("--every-s", type=float, default=None, help="evaluate about every N s of training (default 60)")
    ap.add_argument("--dev-utterances", type=int, default=None, help="N dev clips, taken in turn from each voice (default 60)")
    ap.add_argument("--sides", default=",".join(SIDES), help="any of lowres,hf,weighted")
    ap.add_argument("--quick", action="store_true", help="a smoke check: 0.4 min per side, 200 s updates, "
                    "8 s evaluation interval, 12 dev clips, 3-update pilots")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of every side")
    ap.add_argument("--base", default="tiny-ssl")
    ap.add_argument("--update-seconds", type=float, default=None,
                    help="audio per update, padding included (default: the 1h recipe's 200 s x 8 = 1600)")
    ap.add_argument("--pilot-updates", type=int, default=0, help="pilot length (default: lowres one epoch + 2, HF 4)")
    ap.add_argument("--updates", action="append", default=[], metavar="SIDE=N", help="fix a side's update count "
                    "(no pilot), e.g. --updates hf=120")
    ap.add_argument("--hf-lr", type=float, default=HF_LR, help="HF side's peak lr (the README's 3e-4)")
    ap.add_argument("--hf-warmup-share", type=float, default=0.1, help="HF side's linear warm-up, share of its updates")
    args = ap.parse_args()
    quick = args.quick
    args.minutes = args.minutes if args.minutes is not None else (0.4 if quick else 30.0)
    args.every_s = args.every_s if args.every_s is not None else (8.0 if quick else 60.0)
    dev_n = args.dev_utterances if args.dev_utterances is not None else (12 if quick else 60)
    args.pilot_updates = args.pilot_updates or (3 if quick else 0)
    args.fixed = {k: int(v) for k, v in (x.split("=", 1) for x in args.updates)}
    sides = [s for s in args.sides.split(",") if s]
    unknown = sorted(set(sides) - set(SIDES)) + sorted(set(args.fixed) - set(SIDES))
    if unknown:
        ap.error(f"unknown side(s) {unknown}: expected {', '.join(SIDES)}")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    with LoadSampler() as loads:
        w = args.work
        if not (w / "synth" / "synth_report.json").is_file():
            lowres("synth", "--lang", "sw", "--hours", 1.2, "--unlabeled-hours", 0, "--out", w / "synth",
                   "--seed", 0, "-q", "--overwrite")
        if not (w / "prepared" / "prepare_report.json").is_file():
            lowres("prepare", w / "synth" / "labeled" / "corpus.tsv", "--lang", "sw", "--out", w / "prepared", "-q",
                   "--overwrite")
        data = Data(w / "prepared", args.base, dev_n, args.seed, work=w)
        recipe = data.recipe.train
        update_s = args.update_seconds or (200.0 if quick else recipe.batch_seconds * recipe.accumulate)
        accumulate = max(1, round(update_s / recipe.batch_seconds))
        plan_file = w / "plan.json"
        plans = json.loads(plan_file.read_text()) if plan_file.is_file() else {}
        runs: dict[str, Path] = {}
        for side in sides:
            # a plan (the pilot's figures) is kept, so a continued benchmark trains what it planned
            plan = plans.get(side, {})
            budget = [args.minutes, args.every_s, accumulate, args.threads, args.seed, args.base]
            if plan.get("budget") != budget:
                plan = {"budget": budget}
            loads.side = side
            if side == "hf":
                plan["lowres_accumulate"] = accumulate
                runs[side], trained = run_hf_side(args, data, plan)
            else:
                plan["accumulate"] = accumulate
                plan["audio_per_update_s"] = round(data.lowres_audio_per_update(accumulate)[0], 1)
                runs[side], trained = run_lowres_side(args, data, side, plan)
            if trained:  # a reused run keeps the load average of when it ran
                plan["load_average_1min"] = loads.summary(side)
            plans[side] = plan
            plan_file.write_text(json.dumps(plans, indent=1) + "\n")
        loads.side = "report"
    report(args, data, plans, runs, loads, t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
