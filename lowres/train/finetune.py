"""``lowres finetune``: LoRA (or full) CTC fine-tuning of a backbone on a prepared split.

Run folder (``--out``)::

    config.json        resolved configuration, backbone spec, base, text normalisation (written first)
    vocab.json         the prepared vocabulary (a copy: the run is self-contained)
    model.safetensors  the deliverable: trained weights (LoRA + CTC head; + a fresh mask embedding), best by dev WER
    metrics.jsonl      one JSON object per logged update / evaluation
    train.log          what happened, in words
    learning_curve.png loss and dev WER against updates (written at the end)
    summary.json       final figures
    checkpoints/       training state for --resume (optimizer, schedule position, data position, counters)
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from lowres import LowresError, __version__
from lowres.config import FinetuneConfig, from_dict, merge, to_dict
from lowres.fsutil import atomic_write_json

ALL_BLANK_NOTE = (
    "CTC training starts by predicting only blanks: the loss falls quickly to a plateau (about 3) and the "
    "hypotheses stay empty (WER 100%) until the model finds the first letters. This phase is normal and can "
    "last a good share of the run on tiny data; it is not a bug."
)


# ---------------------------------------------------------------------------------------------------
# the run folder


def claim_run_folder(out: Path, *, resume: bool, overwrite: bool, check_only: bool = False) -> str:
    """'new' | 'resume'. Never deletes anything that does not look like a lowres run unless it is empty.
    ``check_only``: say whether the folder could be claimed, touching nothing (before the inputs are read)."""
    out = Path(out)
    if resume and overwrite:
        raise LowresError("--resume and --overwrite contradict each other: --resume continues the run in --out, "
                          "--overwrite starts it again from nothing. Pick one.")
    if out.exists() and not out.is_dir():
        raise LowresError(f"--out {out} is a file. Give a folder for the run.")
    exists = out.is_dir() and any(out.iterdir())
    if resume:
        if not (out / "config.json").is_file():
            raise LowresError(f"--resume: {out} holds no run to continue (no config.json). Drop --resume to start "
                              "a new run there.")
        return "resume"
    if exists:
        if not overwrite:
            raise LowresError(f"{out} already holds files. Use --resume to continue that run, --overwrite to "
                              "replace it, or another --out.")
        meta = out / "config.json"
        is_run = False
        if meta.is_file():
            try:
                is_run = "lowres_run" in json.loads(meta.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                is_run = False
        if not is_run:
            raise LowresError(f"--overwrite refused: {out} is not a lowres run folder (no lowres config.json), so "
                              "it may hold your own files. Choose an empty or new --out.")
        if check_only:
            return "new"
        shutil.rmtree(out)
    if check_only:
        return "new"
    out.mkdir(parents=True, exist_ok=True)
    return "new"


# what --resume may change: the length of the run and how the global batch is laid out on the machine
# (another world size under torchrun wants another accumulate to keep the same global batch)
RESUME_SETTINGS = ("max_steps", "accumulate", "device", "num_workers", "threads")


def resumed_run(out: Path, kind: str, config_class, max_steps_override: int | None,
                changes: dict | None = None):
    """(config.json, the run's saved configuration) of a run being resumed.

    ``changes`` is the nested ``--set`` dict of the resuming command line (plus --accumulate / --device): the
    train settings in RESUME_SETTINGS are applied; any other setting must equal the saved one (so the original
    command line with --resume added works), else the resume is refused."""
    meta = json.loads((out / "config.json").read_text(encoding="utf-8"))
    if meta.get("lowres_run") != kind:
        raise LowresError(f"--resume: {out} is not a {kind} run.")
    saved = from_dict(config_class, meta["config"])
    changes = {k: dict(v) if isinstance(v, dict) else v for k, v in (changes or {}).items()}
    train = changes.pop("train", {})
    allowed = {k: train.pop(k) for k in list(train) if k in RESUME_SETTINGS and train[k] is not None}
    if max_steps_override is not None:
        allowed["max_steps"] = max_steps_override
    if train:
        changes["train"] = train
    if changes:
        before, after = _flat(to_dict(saved)), _flat(to_dict(merge(saved, changes)))
        differ = [k for k in after if after[k] != before.get(k)]
        if differ:
            raise LowresError(f"--resume continues the run with its own settings; {', '.join(differ)} cannot change "
                              f"(only train.{', train.'.join(RESUME_SETTINGS)} can). Start a new run (another "
                              "--out) to change the others.")
    cfg = merge(saved, {"train": allowed}) if allowed else saved
    return meta, cfg


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _prepared(data: Path) -> tuple[Path, dict]:
    data = Path(data)
    if not data.is_dir():
        raise LowresError(f"--data {data}: no such folder. Give the --out folder of `lowres prepare`.")
    report_path = data / "prepare_report.json"
    if not (data / "vocab.json").is_file() or not (data / "manifests").is_dir():
        raise LowresError(f"--data {data} is not a prepared folder (no vocab.json or manifests/). Run "
                          f"`lowres prepare CORPUS --out {data}` first.")
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    return data, report


def manifest_paths(cfg: FinetuneConfig) -> tuple[Path, Path | None]:
    data = Path(cfg.data)
    train = Path(cfg.train_manifest) if cfg.train_manifest else data / "manifests" / f"{cfg.split}.jsonl"
    if cfg.dev_manifest:
        dev: Path | None = Path(cfg.dev_manifest)
        if not dev.is_file():
            raise LowresError(f"dev manifest {dev} not found.")
    else:
        dev = data / "manifests" / "dev.jsonl"
        if not dev.is_file() or dev.stat().st_size == 0:
            dev = None
    if not train.is_file():
        raise LowresError(f"Training manifest {train} not found. `lowres prepare` writes manifests/10min.jsonl, "
                          "1h.jsonl, 10h.jsonl and full.jsonl; check --data and --split.")
    return train, dev


# ---------------------------------------------------------------------------------------------------
# the job


def run_finetune(cfg: FinetuneConfig, out: Path, *, resume: bool = False, overwrite: bool = False,
                 console=None, max_steps_override: int | None = None, resume_train: dict | None = None) -> dict:
    from lowres.data import batching
    from lowres.data.augment import make_augmenter
    from lowres.data.manifest import read_manifest
    from lowres.data.text import text_config_from_dict
    from lowres.data.vocab import Vocab
    from lowres.evaluate import evaluate_utterances
    from lowres.model.backbone import load_backbone
    from lowres.model.build import (
        RUN_WEIGHTS,
        _base_backbone,
        build_ctc_model,
        trainable_report,
        trained_state,
    )
    from lowres.model.ctc import ctc_loss
    from lowres.runtime import (
        all_reduce_sum,
        autocast,
        barrier,
        configure_threads,
        distributed,
        init_distributed,
        is_main_process,
        on_main,
        resolve_device,
        seed_everything,
        world_size,
    )
    from lowres.train.checkpoint import latest_checkpoint, save_safetensors
    from lowres.train.loop import (
        Hooks,
        LoopState,
        MetricsLog,
        StepOutput,
        data_parallel,
        grad_sync,
        restore,
        train_loop,
    )
    from lowres.train.plot import learning_curve
    from lowres.train.schedules import tri_stage

    out = Path(out)
    init_distributed(resolve_device(cfg.train.device))  # under torchrun: join the group (nothing otherwise)
    main, world = is_main_process(), world_size()
    if not main:
        console = None
    # every input is read and checked before the run folder is touched: a mistake leaves --out as it was
    mode = on_main(claim_run_folder, out, resume=resume, overwrite=overwrite, check_only=not resume)
    if mode == "resume":
        meta, cfg = resumed_run(out, "finetune", FinetuneConfig, max_steps_override, resume_train)
    data, report = _prepared(Path(cfg.data))
    train_path, dev_path = manifest_paths(cfg)
    train_all = list(read_manifest(train_path, require_text=True))
    if not train_all:
        raise LowresError(f"{train_path} holds no utterances: nothing to train on. Check the prepare report "
                          f"({data / 'prepare_report.json'}) for why.")
    dev_all = list(read_manifest(dev_path, require_text=True)) if dev_path else []
    t = cfg.train
    configure_threads(t.threads)
    device = resolve_device(t.device)
    seed_everything(t.seed)
    log = MetricsLog(out, console)

    vocab_src = out / "vocab.json" if mode == "resume" else data / "vocab.json"
    vocab = Vocab.load(vocab_src, units=report.get("config", {}).get("units", "grapheme"))
    if mode == "resume":
        text_dict = meta.get("text")
        loaded = _base_backbone(meta, t.seed)
    else:
        text_dict = report.get("text")
        loaded = load_backbone(cfg.base, seed=t.seed)
    text_cfg = text_config_from_dict(text_dict)
    # data
    max_utt = t.max_utterance_s or t.batch_seconds
    train_utts, dropped = batching.filter_trainable(train_all, vocab, loaded.spec.conv_stack, max_utt)
    if not train_utts:
        raise LowresError(f"None of the {len(train_all)} clips in {train_path} can train: {dropped}. Transcripts "
                          "must fit in their audio frames (20 ms each) and clips must be shorter than "
                          "train.batch_seconds.")
    if mode == "new":
        on_main(claim_run_folder, out, resume=False, overwrite=overwrite)
    model, info = build_ctc_model(cfg, len(vocab), loaded)
    model.to(device)
    head_only = t.head_only_steps if loaded.spec.pretrained else 0

    if mode == "new":
        base = cfg.base
        if Path(base).is_dir():
            base = str(Path(base).resolve())
        cfg = replace(cfg, data=str(data.resolve()), base=base)
        meta = {"lowres_run": "finetune", "lowres_version": __version__, "config": to_dict(cfg),
                "backbone": loaded.spec.to_dict(), "base": base, "base_fingerprint": loaded.fingerprint,
                "vocab_units": vocab.units, "text": text_dict or {}, "train_manifest": str(train_path.resolve()),
                "dev_manifest": str(dev_path.resolve()) if dev_path else None,
                "build": {"lora": info.lora, "feature_encoder_trained": info.feature_encoder_trained,
                          "pretrained_base": info.pretrained, "head_only_steps": head_only},
                "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        if main:
            shutil.copyfile(data / "vocab.json", out / "vocab.json")
            atomic_write_json(out / "config.json", meta)
        barrier()

    dev_utts = dev_all
    if t.dev_max_utterances:
        dev_utts = dev_utts[: t.dev_max_utterances]
    augment = make_augmenter(cfg.augment)
    dataset = batching.UtteranceDataset(train_utts, vocab, augment=augment, seed=t.seed)
    buckets = batching.BucketBatchSampler([u.duration for u in train_utts], t.batch_seconds, seed=t.seed,
                                          rank=distributed().rank, world_size=world)

    def batches(position):
        return iter(batching.loader(dataset, batching.StreamSampler(buckets, position), t.num_workers,
                                    positioned=True))

    # optimizer: LoRA / transformer at lr, head + mask embedding at head_lr
    head_params = [p for n, p in model.named_parameters() if p.requires_grad and (n.startswith("head.")
                                                                                   or n == "mask_emb")]
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    o = cfg.optim
    groups = [{"params": head_params, "peak_lr": o.head_lr or o.lr, "name": "head"}]
    if body_params:
        groups.insert(0, {"params": body_params, "peak_lr": o.lr, "name": "body"})
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    trainable = head_params + body_params
    s = cfg.schedule

    def lr_factor(step: int) -> float:
        return tri_stage(step, t.max_steps, s.warmup, s.hold, s.decay, s.init_scale, s.final_scale)

    net = {"model": model}  # DistributedDataParallel(model) under torchrun, set once the weights are final

    def compute(micro, step) -> StepOutput:
        # normalisers over the whole global batch (all micro-batches, all ranks); DDP averages gradients
        # over ranks, hence the factor `world`
        total_utts, total_tokens = all_reduce_sum([sum(m.batch.size for m in micro),
                                                   sum(int(m.batch.target_lengths.sum()) for m in micro
                                                       if m.batch.size)])
        loss_sum, audio = 0.0, 0.0
        for m in micro:
            started = m.start()
            if started is None:
                continue
            b, weight = started
            b.to(device)
            with grad_sync(net["model"], m):
                with autocast(device, t.precision):
                    logits, frames = net["model"](b.waves, b.lengths, m.gen)
                losses = ctc_loss(logits, frames, b.targets.to(device), b.target_lengths.to(device))
                (losses.sum() * (weight * world / max(total_utts, 1))).backward()
            if weight:
                loss_sum += float(losses.detach().sum())
                audio += batching.audio_seconds(b)
        for e in (err for m in micro for err in (m.batch.errors or [])):
            log.say(f"unreadable clip skipped: {e}")
        (loss_sum,) = all_reduce_sum([loss_sum])
        # gradients are averaged per utterance (fairseq's sentence_avg); the logged loss is per target
        # symbol (what the Hugging Face example prints), where the all-blank plateau sits near 3
        return StepOutput(loss_sum / max(total_tokens, 1), audio,
                          stats={"loss_per_utterance": loss_sum / max(total_utts, 1)})

    def on_update(step: int) -> None:
        frozen = step < head_only
        if frozen != model.transformer_frozen or step == 0:
            model.transformer_frozen = frozen
            if frozen:
                log.say(f"updates 1-{head_only}: head-only phase, the transformer is frozen (fairseq's "
                        "'freeze_finetune_updates'); only the CTC head learns")
            elif head_only and step == head_only:
                log.say(f"update {step + 1}: head-only phase over, the {'LoRA adapters' if info.lora else 'transformer'}"
                        " train from now on")

    state_box = {"state": None}

    def evaluate(step: int) -> dict:
        if not dev_utts:
            return {}
        scorer, timing = evaluate_utterances(model, dev_utts, vocab, device, text_cfg,
                                             batch_seconds=max(t.batch_seconds, 60.0), workers=0,
                                             precision=t.precision)
        model.train()
        hyps_empty = scorer.empty_hypotheses == scorer.count
        if hyps_empty:
            log.say(f"update {step}: dev hypotheses are all empty (all-blank phase). " + ALL_BLANK_NOTE)
        log.say(f"update {step}: dev WER {100 * scorer.wer:.2f}%  CER {100 * scorer.cer:.2f}%  "
                f"({scorer.count} utterances)")
        # an all-blank model is never the deliverable: its WER (100%) would beat the first real hypotheses,
        # whose insertions often put WER just above 100% while CER is already falling
        metric = None if hyps_empty else (scorer.cer if t.best_metric == "cer" else scorer.wer)
        return {"metric": metric, "dev_wer": scorer.wer, "dev_cer": scorer.cer,
                "dev_empty_hypotheses": scorer.empty_hypotheses}

    def deliver(kind: str) -> None:
        state = state_box["state"]
        save_safetensors(out / RUN_WEIGHTS, trained_state(model),
                         {"step": state.step if state else 0, "kind": kind})

    def load_weights(weights: dict) -> None:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected:
            raise LowresError(f"checkpoint does not fit this run's model: {unexpected[:3]}")

    hooks = Hooks(compute=compute, trainable=lambda: trainable, checkpoint_weights=lambda: trained_state(model),
                  load_weights=load_weights, evaluate=evaluate if dev_utts else None, deliver=deliver,
                  on_update=on_update)

    state = LoopState()
    if mode == "resume":
        ckpt = latest_checkpoint(out)
        if ckpt is not None:
            state = restore(ckpt, optimizer, hooks)
            model.to(device)
            log.truncate_after(state.step)
            log.say(f"resumed from {ckpt.name} (update {state.step})")
        else:
            log.truncate_after(0)
            log.say("no checkpoint yet: starting the run again from update 0")
        if state.step >= t.max_steps:
            log.say(f"the run had already finished {state.step} updates; pass --max-steps N to train longer")
    else:
        rep = trainable_report(model)
        for note in info.notes:
            log.say(note)
        log.say(f"base {loaded.source}; {rep['trainable']:,} of {rep['parameters']:,} parameters train "
                f"({100 * rep['trainable_share']:.2f}%: {'LoRA + ' if info.lora else ''}CTC head"
                f"{' + transformer' if not info.lora else ''}"
                f"{' + conv feature encoder' if info.feature_encoder_trained else ''}) on {device}")
        log.say(f"{len(train_utts)} training clips ({sum(u.duration for u in train_utts) / 3600:.3f} h) from "
                f"{train_path}; dropped: {', '.join(f'{k} {v}' for k, v in dropped.items() if v) or 'none'}; "
                f"{len(dev_utts)} dev clips")
        log.say(ALL_BLANK_NOTE)
        log.write({"step": 0, "event": "start", "train_clips": len(train_utts), "dropped": dropped,
                   "dev_clips": len(dev_utts), **rep})
    state_box["state"] = state
    net["model"] = data_parallel(model, device)

    started = time.perf_counter()
    final = train_loop(run=out, model=model, optimizer=optimizer, lr_factor=lr_factor, batches=batches,
                       hooks=hooks, max_steps=t.max_steps, accumulate=t.accumulate,
                       clip_norm=o.clip_norm, seed=t.seed, log_every=t.log_every, eval_every=t.eval_every,
                       save_every=t.save_every, state=state, log=log, console=console)
    state_box["state"] = final
    if main:
        learning_curve(out / "metrics.jsonl", out / "learning_curve.png",
                       title=f"lowres finetune --split {cfg.split}")
    summary = {"steps": final.step, "best_by": f"dev_{t.best_metric}", "best_value": final.best_metric,
               "best_step": final.best_step,
               "skipped_nonfinite": final.skipped_nonfinite, "unreadable_clips": final.unreadable_clips,
               "dropped_clips": dropped, "train_clips": len(train_utts), "audio_seconds_trained": final.audio_seconds,
               "wall_seconds": time.perf_counter() - started, "deliverable": str(out / RUN_WEIGHTS)}
    if main:
        atomic_write_json(out / "summary.json", summary)
    barrier()
    if final.best_metric is not None:
        log.say(f"done: best dev {t.best_metric.upper()} {100 * final.best_metric:.2f}% at update {final.best_step} "
                f"→ {out / RUN_WEIGHTS}")
    elif dev_utts:
        log.say(f"done: {final.step} updates; every dev evaluation was all blank, so the final weights are the "
                f"deliverable → {out / RUN_WEIGHTS}")
    else:
        log.say(f"done: {final.step} updates (no dev set: the final weights are the deliverable) → {out / RUN_WEIGHTS}")
    return summary

