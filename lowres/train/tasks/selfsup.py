"""What the self-supervised objectives of ``lowres adapt`` share (``wav2vec2``, ``hubert``): the unlabeled
pieces, randomly cropped; the base (or, on resume, its architecture: every weight comes back from the
checkpoint); fresh or imported heads with a warm-up while the encoder waits; the adapted encoder as the
deliverable. A subclass adds its heads, its loss (``compute``) and what it records and logs.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch

from lowres import LowresError
from lowres.train.harness import FrozenPhase, ParamGroup, Task, frozen_steps


class SelfSupervisedTask(Task):
    kind = "adapt"
    curve_title = "lowres adapt"
    heads_name = "heads"  # how describe() and the warm-up name the heads

    # -- inputs and model ---------------------------------------------------------------------------------
    def check_inputs(self) -> None:
        from lowres.data.unlabeled import check_unlabeled_source
        from lowres.runtime import on_main

        if self.run.mode == "new":
            on_main(check_unlabeled_source, Path(self.cfg.unlabeled))

    def open_base(self):
        """The base as --base names it (a new run, or a resumed one without a checkpoint yet, where it is
        looked for where the run recorded it), or its architecture (every weight comes from the checkpoint)."""
        from lowres.bases import load_base, locate_base
        from lowres.model.backbone import LoadedBackbone, build_model

        run, t = self.run, self.cfg.train
        if run.from_checkpoint:
            spec = run.record.spec()
            torch.manual_seed(t.seed)
            loaded = LoadedBackbone(build_model(spec), spec)
        else:
            base = locate_base(run.record, run.out) if run.mode == "resume" else self.cfg.base
            loaded = load_base(base, seed=t.seed)
        self.loaded, self.spec = loaded, loaded.spec
        beta = self.cfg.loss.feature_penalty
        if beta < 0:
            beta = 10.0 if loaded.spec.arch.get("extractor_mode") == "group_norm" else 0.0
        self.feature_penalty = beta
        self._collapsed = 0  # consecutive logged windows that look collapsed
        return loaded

    def warm_up(self, imported: bool) -> None:
        """The heads warm-up: what the run started with on resume; else ``train.heads_warmup_steps`` (auto: 10%
        of the run for fresh heads, none for imported ones), at most ``train.max_frozen_share`` of the run."""
        run, t = self.run, self.cfg.train
        self.phase_note = None
        if run.mode == "resume":
            self.warm = run.record.extras["heads_warmup_steps"]
            return
        warm = t.heads_warmup_steps
        if warm < 0:
            warm = 0 if imported else max(1, t.max_steps // 10)
        self.warm, self.phase_note = frozen_steps(warm, t, "heads warm-up")

    def new_run_manifest(self) -> Path:
        """A new run's unlabeled manifest (a folder of audio is indexed into RUN/data first); the configuration
        takes the resolved base and source it records."""
        from lowres.data.unlabeled import unlabeled_manifest
        from lowres.runs import RUN_DATA, stored_base
        from lowres.runtime import on_main

        cfg, run = self.cfg, self.run
        manifest = on_main(unlabeled_manifest, Path(cfg.unlabeled), run.out / RUN_DATA, run.console)
        self.cfg = replace(cfg, base=stored_base(cfg.base, run.out), unlabeled=str(Path(cfg.unlabeled).resolve()))
        return manifest

    def new_record(self, extras: dict):
        """The record of an adapt run over :meth:`open_data`'s manifest, with the objective's ``extras``."""
        from lowres.config import to_dict
        from lowres.runs import RunRecord

        return RunRecord(kind=self.kind, config=to_dict(self.cfg), backbone=self.spec.to_dict(), base=self.cfg.base,
                         base_fingerprint=self.loaded.fingerprint,
                         extras={"objective": self.cfg.objective, "manifest": str(self.manifest.resolve()), **extras,
                                 "feature_penalty": self.feature_penalty, "heads_warmup_steps": self.warm})

    def open_data(self, manifest: Path, units=None) -> None:
        """The pieces of ``manifest`` at least ``train.crop_min_s`` long, cropped to ``train.crop_max_s``."""
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
                # (a folder with no audio at all has already stopped prepare, naming it)
                raise LowresError(
                    f"--unlabeled {source}: nothing to adapt on (none of the {len(self.utts)} pieces cut from it is "
                    f"at least {t.crop_min_s} s long). Give a folder of speech recordings (wav, "
                    "flac, ogg, mp3) of a few seconds or more; `lowres prepare --unlabeled FOLDER --out DIR` lists "
                    "why each file was left out.")
            raise LowresError(f"No piece in {manifest} is at least {t.crop_min_s} s long: nothing to adapt on.")
        dataset = CropDataset(self.kept, t.crop_max_s, t.seed, units=units)
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
            during=f"heads warm-up, the encoder is frozen while the freshly initialised {self.heads_name} learn",
            over="heads warm-up over, the encoder adapts from now on",
            set_frozen=lambda frozen: setattr(model, "encoder_frozen", frozen),
            is_frozen=lambda: model.encoder_frozen)

    def forward_backward(self, micro, forward) -> tuple[list, int, float]:
        """Each micro-batch's ``forward(batch, generator)`` (an output with ``loss`` normalised by its own
        ``n_masked`` frames), backward weighted by those frames: (outputs that count, masked frames, audio s)."""
        from lowres.data import batching

        results, masked, audio = [], 0, 0.0
        for b, weight, gen in self.micro_batches(micro):
            with self.autocast():
                res = forward(b, gen)
            # normalised by its own masked frames: weight it by their number; the caller divides by the update's
            # total over all micro-batches and ranks (normalise_gradients)
            (res.loss * (res.n_masked * weight)).backward()
            if weight:
                results.append(res)
                masked += res.n_masked
                audio += batching.audio_seconds(b)
        return results, masked, audio

    def normalise_gradients(self, total: float) -> None:
        """Gradients summed over an update's micro-batches → per masked frame of the whole global batch (DDP
        averaged them over ranks, hence the factor world)."""
        for p in self.model.parameters():
            if p.requires_grad and p.grad is not None:
                p.grad.mul_(self.run.world / max(total, 1))

    def count_collapse(self, signs: list[str], step: int, what: str, advice: str) -> None:
        """Stop the run once ``train.collapse_patience`` logged windows in a row show ``signs``."""
        self._collapsed = self._collapsed + 1 if signs else 0
        if self._collapsed >= self.cfg.train.collapse_patience:
            raise LowresError(f"adapt stopped at update {step}: {what} ({'; '.join(signs)}). {advice} The last good "
                              "checkpoint is in checkpoints/.")

    def load_weights(self, weights: dict) -> None:
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if unexpected or missing:
            raise LowresError(f"checkpoint does not fit this run's model: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")

    def deliverable(self) -> tuple[dict, dict]:
        """Backbone (LoRA merged) + mask embedding + heads: what finetune --base RUN and adapt --base RUN need."""
        from lowres.bases import encoder_state
        from lowres.model.lora import merge_lora

        model = self.model
        backbone = model.backbone
        if self.cfg.lora.enabled:
            backbone = copy.deepcopy(backbone).cpu()
            merge_lora(backbone.encoder.transformer)
        return encoder_state(backbone, model.mask_emb, model.heads), {}

    # -- talking ------------------------------------------------------------------------------------------
    def describe_base(self, heads: str) -> None:
        from lowres.model.build import trainable_report

        log, cfg = self.run.log, self.cfg
        rep = trainable_report(self.model)
        log.say(f"base {self.loaded.source}; {heads}; {rep['trainable']:,} of {rep['parameters']:,} parameters train "
                f"({'LoRA on the transformer' if cfg.lora.enabled else 'whole transformer'} + heads"
                f"{' + conv feature encoder' if self.info.feature_encoder_trained else ''}) on {self.run.device}")
        if self.phase_note:
            log.say(self.phase_note)
        self._report = rep

    def describe_data(self, extra: str = "") -> None:
        t, log = self.cfg.train, self.run.log
        log.say(f"{len(self.kept)} pieces ({sum(u.duration for u in self.kept) / 3600:.3f} h) from {self.manifest}; "
                f"{len(self.utts) - len(self.kept)} shorter than {t.crop_min_s} s left out{extra}")
        log.write({"step": 0, "event": "start", "pieces": len(self.kept), **self._report})

    def done(self, final, deliverable: Path) -> str:
        return f"done: {final.step} updates → {deliverable} (use it with: lowres finetune --base {self.run.out} ...)"
