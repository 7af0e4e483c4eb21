"""``lowres adapt``: continued wav2vec 2.0 pretraining on unlabeled in-language audio.

Run folder (``--out``)::

    config.json        resolved configuration, backbone spec, base (written first)
    data/unlabeled.jsonl  the indexed, segmented audio when --unlabeled was a folder (see `prepare --unlabeled`)
    model.safetensors  the deliverable: the adapted backbone (LoRA merged), mask embedding and heads
    metrics.jsonl, train.log, learning_curve.png, summary.json, checkpoints/   as for finetune

``lowres finetune --base RUN`` uses the adapted encoder; ``lowres adapt --base RUN`` continues it.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import replace
from pathlib import Path

import torch

from lowres import LowresError, __version__
from lowres.config import AdaptConfig, to_dict
from lowres.fsutil import atomic_write_json

RANDOM_INIT_NOTE = (
    "{base} is a random initialisation: its conv features do not yet describe the audio (two adjacent frames of one "
    "sound are about as alike as any two frames), so the quantized targets of speech frames are close to noise "
    "and the run learns little beyond telling silence from speech until the encoder itself has been trained, "
    "which is the compute of a pretraining from scratch. On a small budget, start from a model trained on other "
    "data (XLS-R, MMS, wav2vec2-base, or a lowres finetune run of another language): see the README, "
    "`lowres adapt`."
)


class CropDataset(torch.utils.data.Dataset):
    """Unlabeled pieces, randomly cropped to at most ``crop_max_s`` (seeded by seed, epoch, index)."""

    def __init__(self, utts, crop_max_s: float, seed: int):
        self.utts, self.crop_max_s, self.seed = list(utts), crop_max_s, seed

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, key):
        from lowres.data import audio as audio_mod
        from lowres.data.batching import Key

        if isinstance(key, int):
            key = Key(key)
        u = self.utts[key.index]
        offset, duration = u.offset, u.duration
        if duration > self.crop_max_s:
            rng = random.Random((self.seed * 1_000_003 + key.epoch * 65_537 + key.index) % 2**32)
            offset += rng.uniform(0.0, duration - self.crop_max_s)
            duration = self.crop_max_s
        try:
            wave = audio_mod.load(u.audio_filepath, offset, duration)
        except audio_mod.AudioError as exc:
            return {"index": key.index, "error": f"{u.audio_filepath}: {exc.detail}"}
        return {"index": key.index, "wave": wave}


def check_unlabeled_source(source: Path) -> None:
    """``--unlabeled`` exists; an ``unlabeled.jsonl`` is read through (a bad line stops the run, naming it)."""
    from lowres.data.manifest import read_manifest

    if source.is_file():
        for _ in read_manifest(source):
            pass
    elif not source.is_dir():
        raise LowresError(f"--unlabeled {source}: no such file or folder. Give a folder of audio or the "
                          "unlabeled.jsonl written by `lowres prepare --unlabeled`.")


def unlabeled_manifest(source: Path, out: Path, console=None) -> Path:
    """``--unlabeled`` (checked by :func:`check_unlabeled_source`): an ``unlabeled.jsonl`` as is, or a folder
    indexed and cut like ``prepare --unlabeled``."""
    source = Path(source)
    if source.is_file():
        return source
    from lowres.config import PrepareConfig
    from lowres.data.prepare import prepare

    target = out / "data"
    if (target / "unlabeled.jsonl").is_file():
        return target / "unlabeled.jsonl"
    prepare(None, target, PrepareConfig(), unlabeled=source, console=console)
    return target / "unlabeled.jsonl"


def run_adapt(cfg: AdaptConfig, out: Path, *, resume: bool = False, overwrite: bool = False, console=None,
              max_steps_override: int | None = None, resume_train: dict | None = None) -> dict:
    from lowres.data import batching
    from lowres.data.manifest import read_manifest
    from lowres.model.backbone import BackboneSpec, build_model
    from lowres.model.build import RUN_WEIGHTS, trainable_report
    from lowres.model.lora import add_lora, merge_lora
    from lowres.model.pretrain import (
        PretrainHeads,
        Wav2Vec2Pretrainer,
        collapse_signs,
        fresh_heads,
        temperature_at,
    )
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
    from lowres.train.finetune import claim_run_folder, resumed_run
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
    from lowres.train.schedules import warmup_decay

    out = Path(out)
    init_distributed(resolve_device(cfg.train.device))  # under torchrun: join the group (nothing otherwise)
    main, world = is_main_process(), world_size()
    if not main:
        console = None
    # every input is read and checked before the run folder is touched: a mistake leaves --out as it was
    mode = on_main(claim_run_folder, out, resume=resume, overwrite=overwrite, check_only=not resume)
    if mode == "new":
        on_main(check_unlabeled_source, Path(cfg.unlabeled))
    if mode == "resume":
        meta, cfg = resumed_run(out, "adapt", AdaptConfig, max_steps_override, resume_train)
    t = cfg.train
    configure_threads(t.threads)
    device = resolve_device(t.device)
    seed_everything(t.seed)
    log = MetricsLog(out, console)

    # the model
    if mode == "resume":
        spec = BackboneSpec.from_dict(meta["backbone"])
        torch.manual_seed(t.seed)
        backbone = build_model(spec)  # every weight comes back from the checkpoint
        head_shapes = meta["heads"]
        heads = PretrainHeads(head_shapes["conv_dim"], spec.embed_dim, head_shapes["groups"], head_shapes["entries"],
                              head_shapes["dim"], head_shapes["final_dim"])
        mask_emb, imported = None, meta["heads_imported"]
        source = f"resumed from {out}"
    else:
        from lowres.model.backbone import load_backbone

        loaded = load_backbone(cfg.base, seed=t.seed)
        spec, backbone, mask_emb = loaded.spec, loaded.model, loaded.mask_embedding
        conv_dim = spec.arch["extractor_conv_layer_config"][-1][0]
        if loaded.pretrain_heads:
            heads = PretrainHeads.from_state(loaded.pretrain_heads, conv_dim, spec.embed_dim, cfg.quantizer.groups)
            imported = True
        else:
            q = cfg.quantizer
            torch.manual_seed(t.seed + 1)
            heads = fresh_heads(spec, q.groups, q.entries, q.dim, q.final_dim)
            imported = False
        source = loaded.source
    beta = cfg.loss.feature_penalty
    if beta < 0:
        beta = 10.0 if spec.arch.get("extractor_mode") == "group_norm" else 0.0
    model = Wav2Vec2Pretrainer(backbone, spec, heads, mask_emb, mask_prob=cfg.model.mask_prob,
                               mask_length=cfg.model.mask_length, min_spans=cfg.model.min_spans,
                               layerdrop=cfg.model.layerdrop, num_negatives=cfg.loss.num_negatives,
                               logit_temperature=cfg.loss.logit_temperature,
                               diversity_weight=cfg.loss.diversity_weight, feature_penalty=beta,
                               feature_dropout=cfg.loss.feature_dropout,
                               feature_grad_mult=cfg.model.feature_grad_mult)
    freeze_fe = cfg.model.freeze_feature_encoder
    if freeze_fe is None:
        freeze_fe = spec.pretrained
    model.freeze_feature_encoder = freeze_fe
    for p in model.parameters():
        p.requires_grad = False
    model.heads.requires_grad_(True)
    model.mask_emb.requires_grad_(True)
    transformer = model.backbone.encoder.transformer
    if cfg.lora.enabled:
        add_lora(transformer, spec.family, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout)
        for n, p in transformer.named_parameters():
            p.requires_grad = "lora_" in n
    else:
        model.backbone.encoder.requires_grad_(True)
    if not freeze_fe:
        model.backbone.feature_extractor.requires_grad_(True)
    model.to(device)
    warm = t.heads_warmup_steps
    if warm < 0:
        warm = 0 if imported else max(1, t.max_steps // 10)
    g = cfg.gumbel
    tau_start = g.max if not imported else (g.imported_start or min(g.max, 1.5 * g.min))

    if mode == "new":
        on_main(claim_run_folder, out, resume=False, overwrite=overwrite)
        base = str(Path(cfg.base).resolve()) if Path(cfg.base).is_dir() else cfg.base
        manifest = on_main(unlabeled_manifest, Path(cfg.unlabeled), out, console)
        cfg = replace(cfg, base=base, unlabeled=str(Path(cfg.unlabeled).resolve()))
        q = model.heads.quantizer
        meta = {"lowres_run": "adapt", "lowres_version": __version__, "config": to_dict(cfg),
                "backbone": spec.to_dict(), "base": base, "base_fingerprint": loaded.fingerprint,
                "manifest": str(manifest.resolve()), "heads_imported": imported,
                "heads": {"conv_dim": q.weight_proj.in_features, "groups": q.groups, "entries": q.entries,
                          "dim": q.dim, "final_dim": model.heads.project_q.out_features},
                "feature_penalty": beta, "heads_warmup_steps": warm, "temperature_start": tau_start,
                "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        if main:
            atomic_write_json(out / "config.json", meta)
        barrier()
    manifest = Path(meta["manifest"])

    # data
    utts = list(read_manifest(manifest))
    kept = [u for u in utts if u.duration >= t.crop_min_s]
    if not kept:
        raise LowresError(f"No piece in {manifest} is at least {t.crop_min_s} s long: nothing to adapt on.")
    dataset = CropDataset(kept, t.crop_max_s, t.seed)
    buckets = batching.BucketBatchSampler([min(u.duration, t.crop_max_s) for u in kept], t.batch_seconds,
                                          seed=t.seed, rank=distributed().rank, world_size=world)

    def batches(position):
        return iter(batching.loader(dataset, batching.StreamSampler(buckets, position), t.num_workers,
                                    positioned=True))

    o = cfg.optim
    head_params = list(model.heads.parameters()) + [model.mask_emb]
    head_ids = {id(p) for p in head_params}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": head_params, "peak_lr": o.head_lr or o.lr, "name": "heads"}]
    if body:
        groups.append({"params": body, "peak_lr": o.lr, "name": "encoder"})
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    trainable = head_params + body

    def lr_factor(step: int) -> float:
        return warmup_decay(step, t.max_steps, o.warmup, o.final_scale)

    current = {"tau": tau_start}

    net = {"model": model}  # DistributedDataParallel(model) under torchrun, set once the weights are final
    stat_keys = ("contrastive", "diversity", "feature_penalty", "accuracy", "code_perplexity", "prob_perplexity",
                 "masked_fraction")

    def compute(micro, step) -> StepOutput:
        tau = temperature_at(step, tau_start, g.min, g.decay, t.max_steps)
        current["tau"] = tau
        audio, total_masked = 0.0, 0
        results = []
        for m in micro:
            started = m.start()
            if started is None:
                continue
            b, weight = started
            b.to(device)
            with grad_sync(net["model"], m):
                with autocast(device, t.precision):
                    res = net["model"](b.waves, b.lengths, tau, m.gen)
                # each micro-batch's loss is normalised by its own masked frames: weight it by their number,
                # then divide by the update's total (below)
                (res.loss * (res.n_masked * weight)).backward()
            if weight:
                results.append(res)
                total_masked += res.n_masked
                audio += batching.audio_seconds(b)
        # the update's masked frames over all micro-batches and ranks; DDP averaged the gradients over ranks
        sums = all_reduce_sum([total_masked, sum(r.n_masked * float(r.loss.detach()) for r in results)]
                              + [sum(r.n_masked * getattr(r, k) for r in results) for k in stat_keys])
        total = sums[0]
        for p in trainable:
            if p.grad is not None:
                p.grad.mul_(world / max(total, 1))
        if not total:
            return StepOutput(float("nan"), audio)
        stats = {k: v / total for k, v in zip(stat_keys, sums[2:], strict=True)}
        stats["temperature"] = tau
        return StepOutput(sums[1] / total, audio, stats=stats)

    def on_update(step: int) -> None:
        frozen = step < warm
        for grp in optimizer.param_groups:  # the heads learn 10x faster while the encoder waits (set every
            if grp["name"] == "heads" and o.head_lr is None:  # update: a resumed optimizer holds the old value)
                grp["peak_lr"] = o.lr * (10.0 if frozen else 1.0)
        if frozen != model.encoder_frozen or step == 0:
            model.encoder_frozen = frozen
            if frozen:
                log.say(f"updates 1-{warm}: heads warm-up, the encoder is frozen while the freshly initialised "
                        "quantizer and projections learn")
            elif warm and step == warm:
                log.say(f"update {step + 1}: heads warm-up over, the encoder adapts from now on")

    collapse = {"count": 0}

    def check(step: int, row: dict) -> None:
        signs = collapse_signs(row, model.heads.quantizer.groups)
        collapse["count"] = collapse["count"] + 1 if signs else 0
        if collapse["count"] >= t.collapse_patience:
            raise LowresError(
                f"adapt stopped at update {step}: the codebook collapsed ({'; '.join(signs)}). The quantizer now "
                "maps everything to one code and the contrastive task became trivial, so further updates teach "
                "the encoder nothing. Try a lower peak lr (--set optim.lr=...), a higher diversity weight "
                "(--set loss.diversity_weight=0.2 or more), a higher temperature floor (--set gumbel.min=1.0), "
                "or more/varied audio. The last good checkpoint is in checkpoints/.")

    def full_state() -> dict:
        """Backbone (LoRA merged) + mask embedding + heads: what finetune --base RUN and adapt --base RUN need."""
        bb = model.backbone
        if cfg.lora.enabled:
            bb = copy.deepcopy(bb).cpu()
            merge_lora(bb.encoder.transformer)
        state = {f"backbone.{k}": v for k, v in bb.state_dict().items()}
        state.update({f"heads.{k}": v for k, v in model.heads.state_dict().items()})
        state["mask_emb"] = model.mask_emb.detach()
        return state

    def checkpoint_weights() -> dict:
        return {k: v for k, v in model.state_dict().items()}

    def load_weights(weights: dict) -> None:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or missing:
            raise LowresError(f"checkpoint does not fit this run's model: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")

    hooks = Hooks(compute=compute, trainable=lambda: trainable, checkpoint_weights=checkpoint_weights,
                  load_weights=load_weights, deliver=lambda kind: save_safetensors(out / RUN_WEIGHTS, full_state()),
                  on_update=on_update, check=check)
    state = LoopState()
    if mode == "resume":
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise LowresError(f"--resume: {out} has no checkpoint yet; start it again with --overwrite.")
        state = restore(ckpt, optimizer, hooks)
        model.to(device)
        log.truncate_after(state.step)
        log.say(f"resumed from {ckpt.name} (update {state.step})")
    else:
        rep = trainable_report(model)
        log.say(f"base {source}; pretraining heads {'imported (trained codebook kept)' if imported else 'initialised fresh'}"
                f"; {rep['trainable']:,} of {rep['parameters']:,} parameters train "
                f"({'LoRA on the transformer' if cfg.lora.enabled else 'whole transformer'} + heads"
                f"{' + conv feature encoder' if not freeze_fe else ''}) on {device}")
        if not imported:
            log.say(f"{cfg.base} has no pretraining heads (quantizer, project_q, final projection): they start "
                    f"from scratch, with {warm} updates of heads warm-up (encoder frozen) first")
        if not spec.pretrained:
            log.say(RANDOM_INIT_NOTE.format(base=cfg.base))
        log.say(f"{len(kept)} pieces ({sum(u.duration for u in kept) / 3600:.3f} h) from {manifest}; "
                f"{len(utts) - len(kept)} shorter than {t.crop_min_s} s left out; Gumbel temperature "
                f"{tau_start:g} → {g.min:g}")
        log.write({"step": 0, "event": "start", "pieces": len(kept), **rep})
    net["model"] = data_parallel(model, device)
    started = time.perf_counter()
    final = train_loop(run=out, model=model, optimizer=optimizer, lr_factor=lr_factor, batches=batches, hooks=hooks,
                       max_steps=t.max_steps, accumulate=t.accumulate, clip_norm=o.clip_norm, seed=t.seed,
                       log_every=t.log_every, eval_every=0, save_every=t.save_every, state=state, log=log,
                       console=console)
    if main:
        learning_curve(out / "metrics.jsonl", out / "learning_curve.png", title="lowres adapt",
                       extra=("accuracy", "masked_fraction"))
    summary = {"steps": final.step, "skipped_nonfinite": final.skipped_nonfinite,
               "unreadable_clips": final.unreadable_clips, "audio_seconds_trained": final.audio_seconds,
               "wall_seconds": time.perf_counter() - started, "deliverable": str(out / RUN_WEIGHTS),
               "heads_imported": imported}
    if main:
        atomic_write_json(out / "summary.json", summary)
    barrier()
    log.say(f"done: {final.step} updates → {out / RUN_WEIGHTS} (use it with: lowres finetune --base {out} ...)")
    return summary
