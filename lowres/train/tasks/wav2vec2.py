"""Continued wav2vec 2.0 pretraining (``lowres adapt``): the contrastive + diversity objective on unlabeled
audio (lowres/model/pretrain.py), with imported heads (a Hugging Face ``*ForPreTraining`` base, or an adapt
run) or fresh ones warmed up while the encoder waits.

Files it adds to the run folder: ``data/unlabeled.jsonl`` when ``--unlabeled`` was a folder of audio;
``model.safetensors`` holds the adapted backbone (LoRA merged), the mask embedding and the heads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lowres.train.loop import StepOutput
from lowres.train.tasks.selfsup import SelfSupervisedTask

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


class Wav2Vec2Task(SelfSupervisedTask):
    curve_extra = ("accuracy", "masked_fraction")
    heads_name = "quantizer and projections"

    def build(self) -> None:
        from lowres.model.build import build_wav2vec2_pretrainer
        from lowres.model.pretrain import PretrainHeads, fresh_heads

        run, cfg, t = self.run, self.cfg, self.cfg.train
        loaded = self.open_base()
        spec = loaded.spec
        if run.from_checkpoint:
            shapes = run.record.extras["heads"]
            heads = PretrainHeads(shapes["conv_dim"], spec.embed_dim, shapes["groups"], shapes["entries"],
                                  shapes["dim"], shapes["final_dim"])
            self.imported = run.record.extras["heads_imported"]
        elif loaded.pretrain_heads:
            conv_dim = spec.arch["extractor_conv_layer_config"][-1][0]
            heads = PretrainHeads.from_state(loaded.pretrain_heads, conv_dim, spec.embed_dim, cfg.quantizer.groups)
            self.imported = True
        else:
            q = cfg.quantizer
            torch.manual_seed(t.seed + 1)
            heads = fresh_heads(spec, q.groups, q.entries, q.dim, q.final_dim)
            self.imported = False
        self.model, self.info = build_wav2vec2_pretrainer(cfg, loaded, heads, self.feature_penalty)
        self.model.to(run.device)
        self.warm_up(self.imported)
        g = cfg.gumbel
        self.tau_start = g.max if not self.imported else (g.imported_start or min(g.max, 1.5 * g.min))
        if run.mode == "resume":
            self.open_data(Path(run.record.extras["manifest"]))

    def prepare_new_run(self) -> None:
        self.open_data(self.new_run_manifest())

    def record(self):
        q, model = self.model.heads.quantizer, self.model
        return self.new_record({
            "heads_imported": self.imported,
            "heads": {"conv_dim": q.weight_proj.in_features, "groups": q.groups, "entries": q.entries, "dim": q.dim,
                      "final_dim": model.heads.project_q.out_features},
            "temperature_start": self.tau_start})

    def compute(self, micro, step) -> StepOutput:
        from lowres.model.pretrain import temperature_at
        from lowres.runtime import all_reduce_sum

        net, g = self.run.net, self.cfg.gumbel
        tau = temperature_at(step, self.tau_start, g.min, g.decay, self.cfg.train.max_steps)
        results, total_masked, audio = self.forward_backward(micro, lambda b, gen: net(b.waves, b.lengths, tau, gen))
        # the update's masked frames over all micro-batches and ranks
        sums = all_reduce_sum([total_masked, sum(r.n_masked * float(r.loss.detach()) for r in results)]
                              + [sum(r.n_masked * getattr(r, k) for r in results) for k in STAT_KEYS])
        total = sums[0]
        self.normalise_gradients(total)
        if not total:
            return StepOutput(float("nan"), audio)
        stats = {k: v / total for k, v in zip(STAT_KEYS, sums[2:], strict=True)}
        stats["temperature"] = tau
        return StepOutput(sums[1] / total, audio, stats=stats)

    def check(self, step: int, row: dict) -> None:
        from lowres.model.pretrain import collapse_signs

        self.count_collapse(
            collapse_signs(row, self.model.heads.quantizer.groups), step, "the codebook collapsed",
            "The quantizer now maps everything to one code and the contrastive task became trivial, so further "
            "updates teach the encoder nothing. Try a lower peak lr (--set optim.lr=...), a higher diversity weight "
            "(--set loss.diversity_weight=0.2 or more), a higher temperature floor (--set gumbel.min=1.0), or "
            "more/varied audio.")

    def describe(self) -> None:
        cfg, g = self.cfg, self.cfg.gumbel
        self.describe_base("pretraining heads " + ("imported (trained codebook kept)" if self.imported
                                                   else "initialised fresh"))
        log = self.run.log
        if not self.imported:
            log.say(f"{cfg.base} has no pretraining heads (quantizer, project_q, final projection): they start "
                    f"from scratch, with {self.warm} updates of heads warm-up (encoder frozen) first")
        if not self.spec.pretrained:
            log.say(RANDOM_INIT_NOTE.format(base=cfg.base))
        self.describe_data(f"; Gumbel temperature {self.tau_start:g} → {g.min:g}")

    def summary(self, final) -> dict:
        return {"heads_imported": self.imported}
