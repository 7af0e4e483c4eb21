"""CTC fine-tuning (``lowres finetune``): backbone + LoRA adapters (or the whole transformer) + a CTC head
over the prepared character vocabulary, trained on a labeled split, scored on the dev set. With ``--head
weighted`` (``head.kind``) the backbone is frozen instead and a weighted sum of its layers feeds a BiLSTM CTC
downstream (lowres/model/weighted.py); the rest of the run is the same.

Files it adds to the run folder: ``vocab.json`` (a copy of the prepared vocabulary: the run is self-contained);
``model.safetensors`` holds the weights it trained (LoRA + head; + a fresh mask embedding; or the layer weights
+ downstream), best by dev CER (or WER: ``train.best_metric``); ``layer_weights.png`` (weighted head) the
delivered layer weights.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from lowres import LowresError
from lowres.train.harness import FrozenPhase, ParamGroup, Task, frozen_steps
from lowres.train.loop import StepOutput

ALL_BLANK_NOTE = (
    "CTC training starts by predicting only blanks: the loss falls quickly to a plateau (about 3) and the "
    "hypotheses stay empty (WER 100%) until the model finds the first letters. This phase is normal and can "
    "last a good share of the run on tiny data; it is not a bug."
)


def manifest_paths(cfg, prepared) -> tuple[Path, Path | None]:
    """(train manifest, dev manifest or None) of a fine-tuning configuration on its prepared folder."""
    train = Path(cfg.train_manifest) if cfg.train_manifest else prepared.manifest(cfg.split)
    if cfg.dev_manifest:
        dev: Path | None = Path(cfg.dev_manifest)
        if not dev.is_file():
            raise LowresError(f"dev manifest {dev} not found.")
    else:
        dev = prepared.dev_manifest()
    if not train.is_file():
        raise LowresError(f"Training manifest {train} not found. `lowres prepare` writes manifests/10min.jsonl, "
                          "1h.jsonl, 10h.jsonl and full.jsonl; check --data and --split.")
    return train, dev




class CTCTask(Task):
    kind = "finetune"

    @property
    def weighted(self) -> bool:
        """``--head weighted``: frozen backbone, layer weights + BiLSTM downstream."""
        return self.cfg.head.kind == "weighted"

    @property
    def curve_title(self) -> str:
        return f"lowres finetune --split {self.cfg.split}"

    # -- inputs and model ---------------------------------------------------------------------------------
    def check_inputs(self) -> None:
        from lowres.data.manifest import read_manifest
        from lowres.data.prepared import PreparedDir

        cfg = self.cfg
        self.prepared = PreparedDir.open(cfg.data)
        self.train_path, self.dev_path = manifest_paths(cfg, self.prepared)
        self.train_all = list(read_manifest(self.train_path, require_text=True))
        if not self.train_all:
            raise LowresError(f"{self.train_path} holds no utterances: nothing to train on. Check the prepare "
                              f"report ({self.prepared.report_path}) for why.")
        self.dev_all = list(read_manifest(self.dev_path, require_text=True)) if self.dev_path else []
        self.pseudo_all, self.pseudo_info = self._pseudo_inputs() if cfg.pseudo.manifest else ([], None)

    def _pseudo_inputs(self):
        """``--pseudo``: its most confident ``pseudo.keep`` share, without pieces cut from dev or test audio
        (they would train on what the run is scored on) or from the labeled clips' audio (their transcripts are
        there already), and what the run record says about them."""
        from lowres.data.manifest import read_manifest
        from lowres.data.pseudo import most_confident, overlaps, pseudo_manifest_path, read_pseudo
        from lowres.evaluate import outside_vocabulary

        p = self.cfg.pseudo
        path = pseudo_manifest_path(p.manifest)
        pieces = read_pseudo(path)
        heldout = []
        for manifest in (self.dev_path or self.prepared.manifest("dev"), self.prepared.manifest("test")):
            if Path(manifest).is_file():
                heldout += read_manifest(manifest)
        in_heldout, in_labeled = overlaps(pieces, heldout), overlaps(pieces, self.train_all)
        clean = [q for q, h, la in zip(pieces, in_heldout, in_labeled, strict=True) if not h and not la]
        kept = most_confident(clean, p.keep)
        vocab = self.prepared.load_vocab()
        oov = outside_vocabulary([q.utt.text for q in kept], vocab)
        if oov["count"]:
            symbols = ", ".join(f"{c} ×{n}" for c, n in oov["symbols"][:6])
            raise LowresError(f"--pseudo {p.manifest}: its transcripts use {oov['count']} characters that the prepared "
                              f"vocabulary of {self.prepared.root} lacks ({symbols}): they were written by a run "
                              "prepared with another vocabulary (another language or folder). Pseudo-label with a run "
                              "fine-tuned on this prepared folder.")
        if not kept:
            raise LowresError(f"--pseudo {p.manifest}: none of its {len(pieces)} pieces can train ({sum(in_heldout)} "
                              f"overlap dev or test audio, {sum(in_labeled)} the labeled clips). Pseudo-label the "
                              "untranscribed audio (prepare --unlabeled leaves dev and test out).")
        info = {"manifest": str(path.resolve()), "pieces": len(kept), "of": len(pieces),
                "hours": round(sum(q.utt.duration for q in kept) / 3600, 4), "keep": p.keep, "weight": p.weight,
                "from_heldout_audio": sum(in_heldout),
                "from_labeled_audio": sum(la and not h for h, la in zip(in_heldout, in_labeled, strict=True)),
                "min_confidence": round(min(q.confidence for q in kept), 6)}
        return [q.utt for q in kept], info

    def _synth_inputs(self):
        """``--synth-text`` / ``--synth-hours``: the text's sentences, normalised like the transcripts, spoken by
        eSpeak NG into RUN/synth/ (once: a resumed run reads them back). Sentences with characters outside the
        vocabulary, or that are dev or test transcripts, are left out and counted."""
        from lowres.runtime import on_main

        return on_main(self._speak_text)

    def _speak_text(self):
        from lowres.data.manifest import read_manifest
        from lowres.data.text import normalize, read_sentences
        from lowres.evaluate import outside_vocabulary

        sy = self.cfg.synth
        lang = sy.lang or (self.text_dict or {}).get("rules_name") or ""
        if not lang:
            raise LowresError("--synth-text needs the language eSpeak NG should speak: pass --synth-lang CODE (see "
                              "`lowres synth --list-languages`); the prepared folder records none.")
        heldout = {u.text for u in self.dev_all} | {u.text for u in self._test_utts()}
        counts = {"sentences": 0, "outside_vocabulary": 0, "heldout_transcripts": 0, "empty": 0}
        outside: dict[str, int] = {}
        sentences: set[str] = set()
        for raw in read_sentences(Path(sy.text)):
            counts["sentences"] += 1
            text = normalize(raw, self.text_cfg)
            oov = outside_vocabulary([text], self.vocab)
            if not text:
                counts["empty"] += 1
            elif oov["count"]:
                counts["outside_vocabulary"] += 1
                for sym, k in oov["symbols"]:
                    outside[sym] = outside.get(sym, 0) + k
            elif text in heldout:
                counts["heldout_transcripts"] += 1
            else:
                sentences.add(text)
        folder = _spoken_text(sorted(sentences), lang, sy.hours, self.cfg.train.seed, sy.voices, self.run.console)
        utts = list(read_manifest(folder / "manifest.jsonl", require_text=True))
        info = {"text": str(Path(sy.text).resolve()), "lang": lang, "audio": str(folder),
                "hours": round(sum(u.duration for u in utts) / 3600, 4), "clips": len(utts),
                "distinct_sentences": len(sentences), "weight": sy.weight, **counts,
                "outside_symbols": sorted(outside.items(), key=lambda kv: (-kv[1], kv[0]))[:10]}
        return utts, info

    def _test_utts(self):
        from lowres.data.manifest import read_manifest

        test = self.prepared.manifest("test")
        return list(read_manifest(test)) if test.is_file() else []

    def build(self) -> None:
        from lowres.bases import load_base, rebuild_base
        from lowres.data import batching
        from lowres.data.text import text_config_from_dict
        from lowres.data.vocab import Vocab
        from lowres.model.build import build_recogniser
        from lowres.runs import RUN_VOCAB

        run, cfg, t = self.run, self.cfg, self.cfg.train
        self.method_line = _method_line(cfg.method, cfg.base) if run.mode == "new" else ""  # (--base as given)
        if run.mode == "resume":
            self.vocab = Vocab.load(run.out / RUN_VOCAB, units=run.record.vocab_units or self.prepared.units)
            self.text_dict = run.record.text
            self.loaded = rebuild_base(run.record, t.seed, run.out)
        else:
            self.vocab = self.prepared.load_vocab()
            self.text_dict = self.prepared.text_settings
            self.loaded = load_base(cfg.base, seed=t.seed)
        self.text_cfg = text_config_from_dict(self.text_dict)
        max_utt = t.max_utterance_s or t.batch_seconds
        spec = self.loaded.spec
        self.train_utts, self.dropped = batching.filter_trainable(self.train_all, self.vocab, spec.conv_stack,
                                                                  max_utt, spec.max_seconds)
        pseudo_utts, self.pseudo_dropped = batching.filter_trainable(self.pseudo_all, self.vocab, spec.conv_stack,
                                                                     max_utt, spec.max_seconds)
        if self.pseudo_info is not None:
            self.pseudo_info["trainable"] = len(pseudo_utts)
            self.pseudo_info["labeled_hours"] = round(sum(u.duration for u in self.train_utts) / 3600, 4)
        synth_all, self.synth_info = self._synth_inputs() if cfg.synth.hours > 0 else ([], None)
        synth_utts, self.synth_dropped = batching.filter_trainable(synth_all, self.vocab, spec.conv_stack, max_utt,
                                                                   spec.max_seconds)
        if self.synth_info is not None:
            self.synth_info["trainable"] = len(synth_utts)
        # a clip's loss weight (by position in train_utts): 1 for a transcript, pseudo.weight for a pseudo-label,
        # synth.weight for synthetic speech
        self.loss_weights = ([1.0] * len(self.train_utts) + [cfg.pseudo.weight] * len(pseudo_utts)
                             + [cfg.synth.weight] * len(synth_utts))
        self.extra_clips = len(pseudo_utts) + len(synth_utts)
        self.train_utts = self.train_utts + pseudo_utts + synth_utts
        if not self.train_utts:
            raise LowresError(f"None of the {len(self.train_all)} clips in {self.train_path} can train: "
                              f"{self.dropped}. Transcripts must fit in their audio frames (20 ms each) and clips "
                              "must be shorter than train.batch_seconds.")
        self.model, self.info = build_recogniser(cfg, len(self.vocab), self.loaded)
        self.model.to(run.device)
        self.phase_note = None
        if run.mode == "resume" and "head_only_steps" in run.record.extras.get("build", {}):
            self.head_only = run.record.extras["build"]["head_only_steps"]  # what the run started with
        else:
            wanted = t.head_only_steps if self.loaded.spec.pretrained and not self.weighted else 0
            self.head_only, self.phase_note = frozen_steps(wanted, t, "head-only phase")
        from lowres.data.manifest import spread_over_speakers

        # a subset hears every dev voice (the manifest is sorted by speaker: its head would be one voice)
        self.dev_utts = spread_over_speakers(self.dev_all, t.dev_max_utterances) if t.dev_max_utterances \
            else self.dev_all
        augment = _augmenter(cfg.augment)
        self.cache = None
        # a clip's frozen conv output is the same in every epoch (or one of a few versions, with speed
        # perturbation in steps): computed once, then reused
        if t.feature_cache and (augment is None or augment.cacheable) and (self.weighted or self.model.cacheable):
            from lowres.model.feature_cache import CACHE_DIR, ConvFeatureCache

            self.cache = ConvFeatureCache(t.feature_cache_mb, run.out / CACHE_DIR / f"rank{run.rank}")
            self.model.feature_cache = self.cache
        dataset = batching.UtteranceDataset(self.train_utts, self.vocab, augment=augment, seed=t.seed)
        buckets = batching.BucketBatchSampler([u.duration for u in self.train_utts], t.batch_seconds,
                                              seed=t.seed, rank=run.rank, world_size=run.world)
        self._data = (dataset, buckets)

    def prepare_new_run(self) -> None:
        from lowres.runs import stored_base

        self.cfg = replace(self.cfg, data=str(self.prepared.root.resolve()), base=stored_base(self.cfg.base, self.run.out))
        if self.cfg.pseudo.manifest:  # a resume from another folder finds it too
            self.cfg = replace(self.cfg, pseudo=replace(self.cfg.pseudo, manifest=self.pseudo_info["manifest"]))
        if self.cfg.synth.text:
            self.cfg = replace(self.cfg, synth=replace(self.cfg.synth, text=str(Path(self.cfg.synth.text).resolve())))

    def record(self):
        from lowres.config import to_dict
        from lowres.runs import RunRecord

        return RunRecord(
            kind=self.kind, config=to_dict(self.cfg), backbone=self.loaded.spec.to_dict(), base=self.cfg.base,
            base_fingerprint=self.loaded.fingerprint, vocab_units=self.vocab.units, text=self.text_dict or {},
            extras={"train_manifest": str(self.train_path.resolve()),
                    "dev_manifest": str(self.dev_path.resolve()) if self.dev_path else None,
                    **({"pseudo": self.pseudo_info} if self.pseudo_info is not None else {}),
                **({"synth": self.synth_info} if self.synth_info is not None else {}),
                    **({"synth": self.synth_info} if self.synth_info is not None else {}),
                    "build": {"lora": self.info.lora, "feature_encoder_trained": self.info.feature_encoder_trained,
                              "pretrained_base": self.info.pretrained, "head_only_steps": self.head_only,
                              "head": self.cfg.head.kind}})

    def write_files(self) -> None:
        from lowres.runs import RUN_VOCAB

        shutil.copyfile(self.prepared.vocab_path, self.run.out / RUN_VOCAB)

    # -- training -----------------------------------------------------------------------------------------
    def batches(self, position):
        from lowres.data import batching

        dataset, buckets = self._data
        cached = None
        if self.cache is not None:  # clips whose features are kept are not decoded again
            def cached(key, cache=self.cache):
                return cache.samples.get(dataset.cache_key(key), 0)
        return iter(batching.loader(dataset, batching.StreamSampler(buckets, position, cached),
                                    self.cfg.train.num_workers, positioned=True))

    def param_groups(self) -> list[ParamGroup]:
        """LoRA / transformer at lr, head + mask embedding at head_lr. A weighted head's layer weights and
        downstream are all that trains, all fresh: one group at lr (``--lr``; head_lr, which the recipes set
        for the CTC head beside a transformer, does not apply)."""
        o = self.cfg.optim
        if self.weighted:
            return [ParamGroup("head", [p for p in self.model.parameters() if p.requires_grad], o.lr)]
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        head = [p for n, p in named if n.startswith("head.") or n == "mask_emb"]
        head_ids = {id(p) for p in head}
        body = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [ParamGroup("head", head, o.head_lr or o.lr)]
        if body:
            groups.insert(0, ParamGroup("body", body, o.lr))
        return groups

    def lr_factor(self, step: int) -> float:
        from lowres.train.schedules import tri_stage

        s = self.cfg.schedule
        return tri_stage(step, self.cfg.train.max_steps, s.warmup, s.hold, s.decay, s.init_scale, s.final_scale)

    def frozen_phase(self) -> FrozenPhase | None:
        if self.weighted:  # the backbone never trains: there is no phase to wait for
            return None
        model = self.model
        trains = "LoRA adapters train" if self.info.lora else "transformer trains"
        return FrozenPhase(
            self.head_only,
            during="head-only phase, the transformer is frozen (fairseq's 'freeze_finetune_updates'); only the "
                   "CTC head learns",
            over=f"head-only phase over, the {trains} from now on",
            set_frozen=lambda frozen: setattr(model, "transformer_frozen", frozen),
            is_frozen=lambda: model.transformer_frozen)

    def compute(self, micro, step) -> StepOutput:
        import torch

        from lowres.data import batching
        from lowres.model.ctc import ctc_loss
        from lowres.runtime import all_reduce_sum

        device, net, world = self.run.device, self.run.net, self.run.world
        # normalisers over the whole global batch (all micro-batches, all ranks); DDP averages gradients
        # over ranks, hence the factor `world`
        total_utts, total_tokens = all_reduce_sum([sum(m.batch.size for m in micro),
                                                   sum(int(m.batch.target_lengths.sum()) for m in micro
                                                       if m.batch.size)])
        loss_sum, audio = 0.0, 0.0
        for b, weight, gen in self.micro_batches(micro):
            with self.autocast():
                logits, frames = net(b.waves, b.lengths, gen, keys=b.cache_keys)
            losses = ctc_loss(logits, frames, b.targets.to(device), b.target_lengths.to(device))
            if self.extra_clips:  # pseudo-labelled and synthetic clips count pseudo.weight / synth.weight each
                losses = losses * torch.tensor([self.loss_weights[i] if i >= 0 else 1.0 for i in b.indices],
                                               dtype=losses.dtype, device=losses.device)
            (losses.sum() * (weight * world / max(total_utts, 1))).backward()
            if weight:
                loss_sum += float(losses.detach().sum())
                audio += batching.audio_seconds(b)
        for e in (err for m in micro for err in (m.batch.errors or [])):
            self.run.log.say(f"unreadable clip skipped: {e}")
        (loss_sum,) = all_reduce_sum([loss_sum])
        # gradients are averaged per utterance (fairseq's sentence_avg); the logged loss is per target
        # symbol (what the Hugging Face example prints), where the all-blank plateau sits near 3
        return StepOutput(loss_sum / max(total_tokens, 1), audio,
                          stats={"loss_per_utterance": loss_sum / max(total_utts, 1)})

    def evaluates(self) -> bool:
        return bool(self.dev_utts)

    def evaluate(self, step: int) -> dict:
        from lowres.decode import DecodeOptions
        from lowres.evaluate import evaluate_utterances

        t, log = self.cfg.train, self.run.log
        options = DecodeOptions(batch_seconds=max(t.batch_seconds, 60.0), workers=0, precision=t.precision)
        scorer, _ = evaluate_utterances(self.model, self.dev_utts, self.vocab, self.run.device, self.text_cfg,
                                        options=options)
        self.model.train()
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

    def checkpoint_weights(self) -> dict:
        """The weights this run changed; for a weighted head on a random-init base also the frozen backbone,
        whose random weights exist nowhere else (a pretrained base is rebuilt from the base, as for LoRA)."""
        from lowres.model.build import trained_state

        state = trained_state(self.model)
        if self.weighted and not self.loaded.spec.pretrained:
            state.update({f"backbone.{k}": v.detach().cpu().contiguous()
                          for k, v in self.model.backbone.state_dict().items()})
        return state

    def load_weights(self, weights: dict) -> None:
        _, unexpected = self.model.load_state_dict(weights, strict=False)
        if unexpected:
            raise LowresError(f"checkpoint does not fit this run's model: {unexpected[:3]}")

    def deliverable(self) -> tuple[dict, dict]:
        return self.checkpoint_weights(), {"step": self.run.state.step}

    # -- talking ------------------------------------------------------------------------------------------
    def describe(self) -> None:
        from lowres.model.build import trainable_report

        log, info = self.run.log, self.info
        rep = trainable_report(self.model)
        log.say(self.method_line)
        for note in info.notes + ([self.phase_note] if self.phase_note else []):
            log.say(note)
        if self.weighted:
            trains = "layer weights + BiLSTM + CTC layer; the backbone is frozen"
        else:
            trains = (f"{'LoRA + ' if info.lora else ''}CTC head{' + transformer' if not info.lora else ''}"
                      f"{' + conv feature encoder' if info.feature_encoder_trained else ''}")
        log.say(f"base {self.loaded.source}; {rep['trainable']:,} of {rep['parameters']:,} parameters train "
                f"({100 * rep['trainable_share']:.2f}%: {trains}) on {self.run.device}")
        if self.cache is not None:
            from lowres.model.backbone import front_layers

            conv = front_layers(self.model.backbone, self.loaded.spec)
            if self.weighted:
                frozen = "layers of the frozen backbone"
            elif self.model.fixed_conv_layers < len(conv):
                frozen = f"outputs of the {self.model.fixed_conv_layers} frozen lowest conv layers"
            else:
                frozen = "conv features (the conv encoder is frozen)"
            versions = " (one copy per speed version)" if self.cfg.augment.enabled else ""
            log.say(f"feature cache on: each clip's {frozen}{versions} are computed the first time and reused, in fp16 "
                    f"(up to {self.cfg.train.feature_cache_mb:g} MB in memory, then {self.run.out}/feature_cache; "
                    "train.feature_cache=false turns it off)")
        labeled = self.train_utts[: len(self.train_utts) - self.extra_clips]
        log.say(f"{len(labeled)} training clips ({sum(u.duration for u in labeled) / 3600:.3f} h) "
                f"from {self.train_path}; dropped: "
                f"{_counted(self.dropped)}; "
                f"{len(self.dev_utts)} dev clips")
        if self.pseudo_info is not None:
            p = self.pseudo_info
            held = "".join(f", {n} overlapping {what} audio left out" for n, what in
                           ((p["from_heldout_audio"], "dev/test"), (p["from_labeled_audio"], "the labeled clips'"))
                           if n)
            log.say(f"+ {p['trainable']} pseudo-labelled clips ({p['hours']:.3f} h; the {100 * p['keep']:g}% most "
                    f"confident of {p['of']}{held}, confidence >= {p['min_confidence']:.3f}; dropped: "
                    f"{_counted(self.pseudo_dropped)}) from "
                    f"{p['manifest']}, each weighing {p['weight']:g} in the loss")
        if self.synth_info is not None:
            y = self.synth_info
            left = _counted({k.replace("_", " "): y[k] for k in ("outside_vocabulary", "heldout_transcripts", "empty")})
            symbols = (" (characters the vocabulary lacks: " + ", ".join(f"{c} ×{n}" for c, n in y["outside_symbols"])
                       + ")") if y["outside_symbols"] else ""
            log.say(f"+ {y['trainable']} synthetic clips ({y['hours']:.3f} h, eSpeak NG '{y['lang']}', "
                    f"{y['distinct_sentences']} distinct sentences of {y['sentences']} in {y['text']}; sentences left "
                    f"out: {left}{symbols}), each weighing {y['weight']:g} in the loss")
        log.say(ALL_BLANK_NOTE)
        log.write({"step": 0, "event": "start", "train_clips": len(self.train_utts), "dropped": self.dropped,
                   "dev_clips": len(self.dev_utts), **rep})

    def summary(self, final) -> dict:
        t = self.cfg.train
        return {"best_by": f"dev_{t.best_metric}", "best_value": final.best_metric, "best_step": final.best_step,
                "dropped_clips": self.dropped, "train_clips": len(self.train_utts),
                **({"pseudo": self.pseudo_info} if self.pseudo_info is not None else {}),
                "feature_cache": self.cache.report() if self.cache is not None else None}

    def cleanup(self) -> None:
        if getattr(self, "cache", None) is not None:
            self.cache.close()

    def finish(self, final) -> dict:
        """A weighted head's delivered layer weights (softmax): logged in train.log and metrics.jsonl, drawn in
        layer_weights.png, returned for summary.json."""
        if not self.weighted:
            return {}
        from lowres.runs import RUN_LAYER_WEIGHTS, RUN_METRICS
        from lowres.train.plot import layer_weights_chart, read_metrics

        weights = self._delivered_layer_weights()
        log, step = self.run.log, final.step
        log.say("learned layer weights (softmax) of the deliverable, layer 0 = the transformer's input: "
                + ", ".join(f"{i}: {w:.3f}" for i, w in enumerate(weights)))
        rows = read_metrics(self.run.out / RUN_METRICS)
        if not (rows and rows[-1].get("event") == "layer_weights" and rows[-1].get("step") == step):
            log.write({"step": step, "event": "layer_weights", "layer_weights": weights})
        layer_weights_chart(weights, self.run.out / RUN_LAYER_WEIGHTS,
                            title=f"{self.curve_title} --head weighted: layer weights")
        return {"layer_weights": weights}

    def _delivered_layer_weights(self) -> list[float]:
        """softmax of the layer weights in model.safetensors (the best evaluation's; the model's own when the
        file is missing)."""
        import torch
        from safetensors.torch import load_file

        from lowres.runs import RUN_WEIGHTS

        path = self.run.out / RUN_WEIGHTS
        logits = load_file(str(path))["layer_weights"] if path.is_file() else self.model.layer_weights.detach().cpu()
        return [float(w) for w in torch.softmax(logits.float(), dim=0)]

    def done(self, final, deliverable: Path) -> str:
        metric = self.cfg.train.best_metric
        if final.best_metric is not None:
            return (f"done: best dev {metric.upper()} {100 * final.best_metric:.2f}% at update {final.best_step} "
                    f"→ {deliverable}")
        if self.dev_utts:
            return (f"done: {final.step} updates; every dev evaluation was all blank, so the final weights are the "
                    f"deliverable → {deliverable}")
        return f"done: {final.step} updates (no dev set: the final weights are the deliverable) → {deliverable}"


def _counted(counts: dict) -> str:
    """``{"a": 2, "b": 0}`` → ``"a 2"`` (``"none"`` when every count is 0)."""
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none"


def _spoken_text(sentences: list[str], lang: str, hours: float, seed: int, voices: int, console) -> Path:
    """The folder of ``sentences`` spoken by eSpeak NG (``manifest.jsonl`` + ``wavs/``), made once per
    sentences, language, hours, seed and voices in lowres's cache (``$LOWRES_CACHE/synth/``): a resumed run, or
    another run with the same text, reads it back (the same seed makes the same files)."""
    import hashlib
    import tempfile

    from lowres.data.manifest import Utterance, write_manifest
    from lowres.fsutil import cache_root
    from lowres.progress import progress_bar
    from lowres.synth.corpus import speak_sentences

    if not sentences:
        raise LowresError("--synth-text: none of its sentences can be spoken for training (see the counts above: "
                          "characters outside the vocabulary, dev or test transcripts, empty lines).")
    key = hashlib.sha1(json.dumps([sentences, lang, hours, seed, voices]).encode()).hexdigest()[:16]
    folder = cache_root() / "synth" / f"{lang}-{key}"
    if (folder / "manifest.jsonl").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        with progress_bar(console) as progress:
            rows = speak_sentences(staging / "wavs", lang, sentences, hours, seed=seed, speakers=voices,
                                   progress=progress)
        write_manifest(staging / "manifest.jsonl", [
            Utterance(r["id"], str(staging / "wavs" / f"{r['id']}.wav"), r["duration_s"], text=r["text"],
                      speaker=r["speaker"], sample_rate=16000) for r in rows])  # (paths stored relative)
        staging.rename(folder)
    except OSError:
        if not (folder / "manifest.jsonl").is_file():  # (another run made it in between: theirs is the same)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _augmenter(cfg):
    from lowres.data.augment import make_augmenter

    return make_augmenter(cfg)


def _method_line(method: str, base: str) -> str:
    """The fine-tuning method the run took, and why (lowres's choice for the base, or the user's)."""
    from lowres.bases import finetune_method

    chosen, why = finetune_method(base)
    if method == (chosen or "none"):
        how = f"recipes/{method}.toml" if method != "none" else "the split's recipe"
        return (f"method: {how}, lowres's choice for this base ({why}); --set method=none or another recipe "
                "changes it, --recipe and --set override its values")
    return f"method: {'the split recipe alone' if method == 'none' else f'recipes/{method}.toml'} (as given)"
