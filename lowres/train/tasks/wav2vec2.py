"""Continued wav2vec 2.0 pretraining (``lowres adapt``): the contrastive + diversity objective on unlabeled
audio (lowres/model/pretrain.py), with imported heads (a Hugging Face ``*ForPreTraining`` base, or an adapt
run) or fresh ones warmed up while the encoder waits.

Files it adds to the run folder: ``data/unlabeled.jsonl`` when ``--unlabeled`` was a folder of audio;
``model.safetensors`` holds the adapted backbone (LoRA merged), the mask embedding and the heads.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch

from lowres import LowresError
from lowres.train.harness import FrozenPhase, ParamGroup, Task, frozen_steps
from lowres.train.loop import StepOutput

RANDOM_INIT_NOTE = (
    "{base} is a random initialisation: its conv features do not yet describe the audio (two adjacent frames of one "
    "sound are about as alike as any two frames), so the quantized targets of speech frames are close to noise "
    "and the run learns little beyond telling silence from speech until the encoder itself has been trained, "
    "which is the compute of a pretraining from scratch. On a small budget, start from a model trained on other "
    "data (XLS-R, MMS, wav2vec2-base, or a lowres finetune run of another language): see the README, "
    "`lowres adapt`."
)
STAT_KEYS = ("contrastive", "diversity", "feature_penalty", "accuracy", "code_perplexity", "prob_perplexity",
             "masked_fraction")


class Wav2Vec2Task(Task):
    kind = "adapt"
    curve_title = "lowres adapt"
    curve_extra = ("accuracy", "masked_fraction")

    # -- inputs and model ---------------------------------------------------------------------------------
    def check_inputs(self) -> None:
        from lowres.data.unlabeled import check_unlabeled_source
        from lowres.runtime import on_main

        if self.run.mode == "new":
            on_main(check_unlabeled_source, Path(self.cfg.unlabeled))

    def build(self) -> None:
        from lowres.model.backbone import LoadedBackbone, build_model
        from lowres.model.build import build_wav2vec2_pretrainer
        from lowres.model.pretrain import PretrainHeads, fresh_heads
        from lowres.runs import load_base

        run, cfg, t = self.run, self.cfg, self.cfg.train
        if run.mode == "resume":
            extras = run.record.extras
            spec = run.record.spec()
            torch.manual_seed(t.seed)
            loaded = LoadedBackbone(build_model(spec), spec)  # every weight comes back from the checkpoint
            shapes = extras["heads"]
            heads = PretrainHeads(shapes["conv_dim"], spec.embed_dim, shapes["groups"], shapes["entries"],
                                  shapes["dim"], shapes["final_dim"])
            self.imported = extras["heads_imported"]
        else:
            loaded = load_base(cfg.base, seed=t.seed)
            spec = loaded.spec
            conv_dim = spec.arch["extractor_conv_layer_config"][-1][0]
            if loaded.pretrain_heads:
                heads = PretrainHeads.from_state(loaded.pretrain_heads, conv_dim, spec.embed_dim, cfg.quantizer.groups)
                self.imported = True
            else:
                q = cfg.quantizer
                torch.manual_seed(t.seed + 1)
                heads = fresh_heads(spec, q.groups, q.entries, q.dim, q.final_dim)
                self.imported = False
        self.loaded, self.spec = loaded, spec
        self._collapsed = 0  # consecutive logged windows that look collapsed
        beta = cfg.loss.feature_penalty
        if beta < 0:
            beta = 10.0 if spec.arch.get("extractor_mode") == "group_norm" else 0.0
        self.feature_penalty = beta
        self.model, self.info = build_wav2vec2_pretrainer(cfg, loaded, heads, beta)
        self.model.to(run.device)
        self.phase_note = None
        if run.mode == "resume":
            self.warm = run.record.extras["heads_warmup_steps"]  # what the run started with
        else:
            warm = t.heads_warmup_steps
            if warm < 0:
                warm = 0 if self.imported else max(1, t.max_steps // 10)
            self.warm, self.phase_note = frozen_steps(warm, t, "heads warm-up")
        g = cfg.gumbel
        self.tau_start = g.max if not self.imported else (g.imported_start or min(g.max, 1.5 * g.min))
        if run.mode == "resume":
            self._open_data(Path(run.record.extras["manifest"]))

    def record(self):
        from lowres.config import to_dict
        from lowres.data.unlabeled import unlabeled_manifest
        from lowres.runs import RunRecord, stored_base
        from lowres.runtime import on_main

        cfg, run = self.cfg, self.run
        manifest = on_main(unlabeled_manifest, Path(cfg.unlabeled), run.out, run.console)
        self.cfg = cfg = replace(cfg, base=stored_base(cfg.base, run.out), unlabeled=str(Path(cfg.unlabeled).resolve()))
        q, model = self.model.heads.quantizer, self.model
        record = RunRecord(
            kind=self.kind, config=to_dict(cfg), backbone=self.spec.to_dict(), base=cfg.base,
            base_fingerprint=self.loaded.fingerprint,
            extras={"manifest": str(manifest.resolve()), "heads_imported": self.imported,
                    "heads": {"conv_dim": q.weight_proj.in_features, "groups": q.groups, "entries": q.entries,
                              "dim": q.dim, "final_dim": model.heads.project_q.out_features},
                    "feature_penalty": self.feature_penalty, "heads_warmup_steps": self.warm,
                    "temperature_start": self.tau_start})
        self._open_data(manifest)
        return record

    def _open_data(self, manifest: Path) -> None:
        from lowres.data import batching
        from lowres.data.manifest import read_manifest
        from lowres.data.unlabeled import CropDataset

        t = self.cfg.train
        self.manifest = manifest
        self.utts = list(read_manifest(manifest))
        self.kept = [u for u in self.utts if u.duration >= t.crop_min_s]
        if not self.kept:
            source = Path(self.cfg.unlabeled)
            if source.is_dir():  # the manifest is lowres's own index of the user's folder: name the folder
                found = (f"none of the {len(self.utts)} pieces cut from it is at least {t.crop_min_s} s long"
                         if self.utts else "lowres found no audio it can read in it")
                raise LowresError(
                    f"--unlabeled {source}: nothing to adapt on ({found}). Give a folder of speech recordings (wav, "
                    "flac, ogg, mp3) of a few seconds or more; `lowres prepare --unlabeled FOLDER --out DIR` lists "
                    "why each file was left out.")
            raise LowresError(f"No piece in {manifest} is at least {t.crop_min_s} s long: nothing to adapt on.")
        dataset = CropDataset(self.kept, t.crop_max_s, t.seed)
        buckets = batching.BucketBatchSampler([min(u.duration, t.crop_max_s) for u in self.kept], t.batch_seconds,
                                              seed=t.seed, rank=self.run.rank, world_size=self.run.world)
        self._data = (dataset, buckets)

    # -- training -----------------------------------------------------------------------------------------
    def batches(self, position):
        from lowres.data import batching

        dataset, buckets = self._data
        return iter(batching.loader(dataset, batching.StreamSampler(buckets, position), self.cfg.train.num_workers,
                                    positioned=True))

    def param_groups(self) -> list[ParamGroup]:
        o, model = self.cfg.optim, self.model
        heads = list(model.heads.parameters()) + [model.mask_emb]
        head_ids = {id(p) for p in heads}
        body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
        # fresh heads learn 10x faster while the encoder waits (unless their lr is set explicitly)
        groups = [ParamGroup("heads", heads, o.head_lr or o.lr, 10.0 if o.head_lr is None else 1.0)]
        if body:
            groups.append(ParamGroup("encoder", body, o.lr))
        return groups

    def lr_factor(self, step: int) -> float:
        from lowres.train.schedules import warmup_decay

        o = self.cfg.optim
        return warmup_decay(step, self.cfg.train.max_steps, o.warmup, o.final_scale)

    def frozen_phase(self) -> FrozenPhase:
        model = self.model
        return FrozenPhase(
            self.warm,
            during="heads warm-up, the encoder is frozen while the freshly initialised quantizer and projections "
                   "learn",
            over="heads warm-up over, the encoder adapts from now on",
            set_frozen=lambda frozen: setattr(model, "encoder_frozen", frozen),
            is_frozen=lambda: model.encoder_frozen)

    def compute(self, micro, step) -> StepOutput:
        from lowres.data import batching
        from lowres.model.pretrain import temperature_at
        from lowres.runtime import all_reduce_sum

        net, world, g = self.run.net, self.run.world, self.cfg.gumbel
        tau = temperature_at(step, self.tau_start, g.min, g.decay, self.cfg.train.max_steps)
        audio, total_masked = 0.0, 0
        results = []
        for b, weight, gen in self.micro_batches(micro):
            with self.autocast():
                res = net(b.waves, b.lengths, tau, gen)
            # each micro-batch's loss is normalised by its own masked frames: weight it by their number, then
            # divide by the update's total (below)
            (res.loss * (res.n_masked * weight)).backward()
            if weight:
                results.append(res)
                total_masked += res.n_masked
                audio += batching.audio_seconds(b)
        # the update's masked frames over all micro-batches and ranks; DDP averaged the gradients over ranks
        sums = all_reduce_sum([total_masked, sum(r.n_masked * float(r.loss.detach()) for r in results)]
                              + [sum(r.n_masked * getattr(r, k) for r in results) for k in STAT_KEYS])
        total = sums[0]
        for p in self.model.parameters():
            if p.requires_grad and p.grad is not None:
                p.grad.mul_(world / max(total, 1))
        if not total:
            return StepOutput(float("nan"), audio)
        stats = {k: v / total for k, v in zip(STAT_KEYS, sums[2:], strict=True)}
        stats["temperature"] = tau
        return StepOutput(sums[1] / total, audio, stats=stats)

    def check(self, step: int, row: dict) -> None:
        from lowres.model.pretrain import collapse_signs

        signs = collapse_signs(row, self.model.heads.quantizer.groups)
        self._collapsed = self._collapsed + 1 if signs else 0
        if self._collapsed >= self.cfg.train.collapse_patience:
            raise LowresError(
                f"adapt stopped at update {step}: the codebook collapsed ({'; '.join(signs)}). The quantizer now "
                "maps everything to one code and the contrastive task became trivial, so further updates teach "
                "the encoder nothing. Try a lower peak lr (--set optim.lr=...), a higher diversity weight "
                "(--set loss.diversity_weight=0.2 or more), a higher temperature floor (--set gumbel.min=1.0), "
                "or more/varied audio. The last good checkpoint is in checkpoints/.")

    def load_weights(self, weights: dict) -> None:
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if unexpected or missing:
            raise LowresError(f"checkpoint does not fit this run's model: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")

    def deliverable(self) -> tuple[dict, dict]:
        """Backbone (LoRA merged) + mask embedding + heads: what finetune --base RUN and adapt --base RUN need."""
        from lowres.model.lora import merge_lora
        from lowres.runs import encoder_state

        model = self.model
        backbone = model.backbone
        if self.cfg.lora.enabled:
            backbone = copy.deepcopy(backbone).cpu()
            merge_lora(backbone.encoder.transformer)
        return encoder_state(backbone, model.mask_emb, model.heads), {}

    # -- talking ------------------------------------------------------------------------------------------
    def describe(self) -> None:
        from lowres.model.build import trainable_report

        log, cfg, t, g = self.run.log, self.cfg, self.cfg.train, self.cfg.gumbel
        rep = trainable_report(self.model)
        log.say(f"base {self.loaded.source}; pretraining heads "
                f"{'imported (trained codebook kept)' if self.imported else 'initialised fresh'}"
                f"; {rep['trainable']:,} of {rep['parameters']:,} parameters train "
                f"({'LoRA on the transformer' if cfg.lora.enabled else 'whole transformer'} + heads"
                f"{' + conv feature encoder' if self.info.feature_encoder_trained else ''}) on {self.run.device}")
        if not self.imported:
            log.say(f"{cfg.base} has no pretraining heads (quantizer, project_q, final projection): they start "
                    f"from scratch, with {self.warm} updates of heads warm-up (encoder frozen) first")
        if self.phase_note:
            log.say(self.phase_note)
        if not self.spec.pretrained:
            log.say(RANDOM_INIT_NOTE.format(base=cfg.base))
        log.say(f"{len(self.kept)} pieces ({sum(u.duration for u in self.kept) / 3600:.3f} h) from {self.manifest}; "
                f"{len(self.utts) - len(self.kept)} shorter than {t.crop_min_s} s left out; Gumbel temperature "
                f"{self.tau_start:g} → {g.min:g}")
        log.write({"step": 0, "event": "start", "pieces": len(self.kept), **rep})

    def summary(self, final) -> dict:
        return {"heads_imported": self.imported}

    def done(self, final, deliverable: Path) -> str:
        return f"done: {final.step} updates → {deliverable} (use it with: lowres finetune --base {self.run.out} ...)"
