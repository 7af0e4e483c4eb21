"""HuBERT-style masked prediction of discovered units (``lowres adapt --objective hubert``).

The targets are made inside the run, before the first update (lowres/units.py): features of every piece
(MFCC for a random-init base, a transformer layer of a pretrained one), k-means, a unit per 20 ms frame. Under
torchrun rank 0 makes them and the other ranks read them. Files it adds to the run folder: ``units/``
(centroids, per-piece units and their report; ``--units RUN/units`` reuses them in another run), and
``data/unlabeled.jsonl`` when ``--unlabeled`` was a folder. ``model.safetensors`` holds the adapted backbone,
the mask embedding and the HuBERT heads; ``adapt --base RUN --targets layer:N`` is the next iteration.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from lowres import LowresError
from lowres.model.backbone import WHISPER
from lowres.runs import RUN_UNITS
from lowres.train.loop import StepOutput
from lowres.train.tasks.selfsup import SelfSupervisedTask

STAT_KEYS = ("masked_ce", "feature_penalty", "masked_accuracy", "masked_fraction")
# issue #28: adapt on Whisper's encoder, measured (benchmarks/README.md, "Whisper on real speech"), refused
WHISPER_REFUSAL = (  # .format(base=--base)
    "adapt does not continue Whisper's encoder ({base}): on real Dutch (1.2 h untranscribed, HuBERT units of its "
    "layer 3) "
    "it collapsed in every setting tried (lr 1e-4; lr 2e-5; the prediction head at 1e-3; a third of the frames "
    "masked instead of 57%): by update 100 it predicted one unit at the masked frames (4% accuracy; the "
    "targets use about 50 units), and lowres's collapse check stopped it. Whisper was never trained to fill in "
    "masked frames. "
    "Instead: fine-tune it directly (`lowres finetune --base {base} --data PREPARED --split 10min`), and put your "
    "untranscribed audio to work by self-training (`lowres selftrain --model RUN --unlabeled ...`, or `lowres "
    "pseudolabel` then `finetune --pseudo`); for a language Whisper knows, `lowres pseudolabel --whisper NAME "
    "--language CODE --data PREPARED --unlabeled ...` lets its own decoder label it. To try adapt on it anyway "
    "(research), add --set hubert.whisper=true.")

# said when a Whisper adapt runs anyway (--set hubert.whisper=true): what was measured (WHISPER_REFUSAL above)
WHISPER_ADAPT_NOTE = ("note: adapt on Whisper's encoder runs here because --set hubert.whisper=true asked for it: on "
                      "real Dutch it collapsed in all four settings measured (benchmarks/README.md, 'Whisper on real "
                      "speech'). Watch the collapse check.")


class HubertTask(SelfSupervisedTask):
    curve_extra = ("masked_accuracy", "unmasked_accuracy")
    heads_name = "final projection and unit embeddings"

    def check_inputs(self) -> None:
        super().check_inputs()
        if self.run.mode == "new" and self.cfg.units.reuse:
            _units_folder(Path(self.cfg.units.reuse))  # a wrong --units fails before --out is touched

    def build(self) -> None:
        from lowres.model.build import build_hubert_pretrainer
        from lowres.model.hubert import HubertHeads, fresh_hubert_heads
        from lowres.units import default_clusters, parse_targets

        run, cfg, t = self.run, self.cfg, self.cfg.train
        loaded = self.open_base()
        spec = loaded.spec
        layers = int(spec.arch["encoder_num_layers"])
        if run.mode == "resume":
            extras = run.record.extras
            self.kind_layer = (extras["units"]["kind"], extras["units"]["layer"])
            self.clusters = extras["units"]["clusters"]
            torch.manual_seed(t.seed + 1)  # the new run's initial heads (a resume without a checkpoint restarts)
            heads = HubertHeads(spec.embed_dim, self.clusters, extras["heads"]["final_dim"])
        else:
            if cfg.units.reuse:
                from lowres.units import Units

                reused = Units.load(_units_folder(Path(cfg.units.reuse)))
                self.kind_layer, self.clusters = (reused.info["kind"], reused.info["layer"]), reused.clusters
            else:
                self.kind_layer = parse_targets(cfg.units.targets, layers, spec.pretrained)
                self.clusters = cfg.units.clusters or default_clusters(self.kind_layer[0])
            torch.manual_seed(t.seed + 1)
            heads = fresh_hubert_heads(spec, self.clusters, cfg.hubert.final_dim)
        self.model, self.info = build_hubert_pretrainer(cfg, loaded, heads, self.feature_penalty)
        self.model.to(run.device)
        self.warm_up(imported=False)  # Hugging Face HuBERT/WavLM checkpoints ship no prediction heads
        if run.mode == "resume":
            from lowres.units import Units

            self.units = Units.load(run.out / RUN_UNITS)
            self.open_data(Path(run.record.extras["manifest"]), units=self.units)

    def prepare_new_run(self) -> None:
        """Index the unlabeled audio, make (or copy) the units of every piece, then open them for training."""
        from lowres.runtime import barrier, on_main
        from lowres.units import Units

        if self.loaded.spec.family == WHISPER:
            if not self.cfg.hubert.whisper:
                raise LowresError(WHISPER_REFUSAL.format(base=self.cfg.base))
            self.run.log.say(WHISPER_ADAPT_NOTE)

        manifest = self.new_run_manifest()
        on_main(self._make_units, manifest)
        barrier()
        self.units = Units.load(self.run.out / RUN_UNITS)
        self.open_data(manifest, units=self.units)

    def record(self):
        kind, layer = self.kind_layer
        return self.new_record({
            "units": {"kind": kind, "layer": layer, "clusters": self.clusters,
                      "reused_from": str(Path(self.cfg.units.reuse).resolve()) if self.cfg.units.reuse else None},
            "heads": {"final_dim": self.model.heads.final_proj.out_features}})

    def _make_units(self, manifest: Path) -> None:
        """Rank 0: the units of every piece into RUN/units/ (made here, or copied from --units)."""
        from lowres.data.manifest import read_manifest
        from lowres.progress import progress_bar
        from lowres.units import FeatureSource, make_units

        cfg, run = self.cfg, self.run
        target = run.out / RUN_UNITS
        if cfg.units.reuse:
            shutil.copytree(_units_folder(Path(cfg.units.reuse)), target)
            run.log.say(f"units reused from {cfg.units.reuse}")
            return
        kind, layer = self.kind_layer
        if not cfg.units.clusters:
            run.log.say(f"units: {self.clusters} clusters, HuBERT's number for {kind} features (--clusters sets "
                        "another)")
        utts = list(read_manifest(manifest))
        source = FeatureSource(kind, self.spec.conv_stack, layer, self.loaded, run.device)
        u = cfg.units
        with progress_bar(run.console) as progress:
            units, centroids = make_units(utts, source, self.clusters, max_frames=u.max_frames, passes=u.passes,
                                          batch_frames=u.batch_frames, seed=cfg.train.seed, memory_mb=u.memory_mb,
                                          progress=progress, log=run.log.say)
        units.save(target, centroids)

    def open_data(self, manifest: Path, units=None) -> None:
        """The pieces that train, each with its units (checked: made for these pieces)."""
        from lowres import audiotime
        from lowres.units import Units

        super().open_data(manifest)
        row = {pid: i for i, pid in enumerate(units.ids)}
        missing = [p.id for p in self.kept if p.id not in row]
        if missing:
            raise LowresError(f"The units in {self.cfg.units.reuse or self.run.out / RUN_UNITS} were made for other "
                              f"pieces ({len(missing)} of these {len(self.kept)} have none, e.g. {missing[0]}): give "
                              "the same --unlabeled audio, or drop --units to make new ones.")
        flat, offsets = [], [0]
        for p in self.kept:
            seq = units.of(row[p.id])
            if abs(len(seq) - audiotime.frames(audiotime.samples(p.duration))) > 2:
                raise LowresError(f"The units of piece {p.id} do not match its length: they were made for other "
                                  "audio. Drop --units to make new ones.")
            flat.append(seq.to(torch.int16))
            offsets.append(offsets[-1] + len(seq))
        self._data[0].units = Units([p.id for p in self.kept], torch.tensor(offsets), torch.cat(flat),
                                    units.clusters, units.info)

    # -- training -----------------------------------------------------------------------------------------
    def compute(self, micro, step) -> StepOutput:
        from lowres.model.hubert import IGNORE, perplexity
        from lowres.runtime import all_reduce_sum

        net = self.run.net
        results, total_masked, audio = self.forward_backward(
            micro, lambda b, gen: net(b.waves, b.lengths, _unit_rows(b, IGNORE), gen))
        c = self.clusters
        predicted = sum((r.predicted for r in results), torch.zeros(c))
        targets = sum((r.targets for r in results), torch.zeros(c))
        unmasked = [r for r in results if r.unmasked_accuracy == r.unmasked_accuracy]  # not NaN
        sums = all_reduce_sum([total_masked, sum(r.n_masked * float(r.loss.detach()) for r in results)]
                              + [sum(r.n_masked * getattr(r, k) for r in results) for k in STAT_KEYS]
                              + [sum(r.unmasked_accuracy for r in unmasked), len(unmasked)]
                              + predicted.tolist() + targets.tolist())
        total = sums[0]
        self.normalise_gradients(total)
        if not total:
            return StepOutput(float("nan"), audio)
        stats = {k: v / total for k, v in zip(STAT_KEYS, sums[2:2 + len(STAT_KEYS)], strict=True)}
        acc_u, n_u = sums[2 + len(STAT_KEYS): 4 + len(STAT_KEYS)]
        if n_u:
            stats["unmasked_accuracy"] = acc_u / n_u
        rest = sums[4 + len(STAT_KEYS):]
        stats["predicted_perplexity"] = perplexity(torch.tensor(rest[:c]))
        stats["target_perplexity"] = perplexity(torch.tensor(rest[c:]))
        return StepOutput(sums[1] / total, audio, stats=stats)

    def check(self, step: int, row: dict) -> None:
        from lowres.model.hubert import collapse_signs

        if step <= max(self.warm, self.cfg.train.max_steps // 4):  # from scratch, predictions start on the
            return  # commonest unit (silence) for a while: that is not a collapse yet
        self.count_collapse(
            collapse_signs(row), step, "the predictions collapsed onto one unit",
            "The model guesses the commonest unit everywhere and learns nothing about the others. Try a lower peak "
            "lr (--set optim.lr=...), a longer warm-up (--set optim.warmup=0.2), or more and more varied audio.")

    # -- talking ------------------------------------------------------------------------------------------
    def describe(self) -> None:
        info = self.units.info
        self.describe_base(f"HuBERT heads initialised fresh ({self.clusters} units; {self.warm} updates of heads "
                           "warm-up, encoder frozen, first)")
        self.run.log.say(f"targets: {info.get('targets')} k-means, {self.clusters} clusters "
                         f"({info.get('clusters_used', '?')} used), {info.get('frames', 0):,} frames at 50 Hz")
        self.describe_data()

    def summary(self, final) -> dict:
        return {"objective": "hubert", "units": {"kind": self.kind_layer[0], "layer": self.kind_layer[1],
                                                 "clusters": self.clusters}}


def _unit_rows(batch, ignore: int) -> torch.Tensor:
    """The batch's concatenated units (``targets``/``target_lengths`` from collate) as (B, T') rows."""
    b = batch.size if batch.size else 1
    if batch.targets is None:
        return torch.full((b, 1), ignore, dtype=torch.long)
    lengths = batch.target_lengths.tolist()
    rows = torch.full((len(lengths), max(lengths, default=1) or 1), ignore, dtype=torch.long)
    start = 0
    for i, n in enumerate(lengths):
        rows[i, :n] = batch.targets[start:start + n]
        start += n
    return rows


def _units_folder(path: Path) -> Path:
    """``--units``: a units folder, or a hubert run folder holding one."""
    from lowres.units import INDEX

    if (path / RUN_UNITS / INDEX).is_file():
        return path / RUN_UNITS
    if (path / INDEX).is_file():
        return path
    raise LowresError(f"--units {path}: no units there. Give the units/ folder of an earlier `lowres adapt "
                      "--objective hubert` run (or that run's folder).")
