"""The one source of defaults: frozen dataclasses, TOML recipes and typed ``--set a.b=c`` overrides.

Recipes hold only deltas from these defaults. Unknown keys are errors (with the closest known name), and
values are checked against the field types, so a typo in a recipe or a ``--set`` never passes silently.
The resolved configuration is written into every run folder and every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lowres import LowresError
from lowres.config_engine import (
    check,
    check_range,
    flat_keys,
    from_dict,
    layer,
    load_recipe,
    merge,
    merge_nested,
    nest_flags,
    parse_sets,
    recipe_dir,
    to_dict,
)

# ---------------------------------------------------------------------------------------------------
# prepare


# the one definition of the split names: prepare writes manifests/{name}.jsonl for each (lowres.data.splits draws
# them; lowres.data.prepared.PreparedDir maps a name to its file), finetune --split takes a labeled one, eval --split
# any of them
DEFAULT_TARGETS: tuple[tuple[str, float], ...] = (("10min", 600.0), ("1h", 3600.0), ("10h", 36000.0))
LABELED_SPLITS: tuple[str, ...] = (*(name for name, _ in DEFAULT_TARGETS), "full")  # nested, smallest first
# the --base of the next steps prepare prints: Whisper's encoder, the base that works on real recordings (its weights
# come from the package registry once; benchmarks/README.md, "Real speech"); OFFLINE_BASE is named beside it
SUGGESTED_BASE = "whisper-base"
OFFLINE_BASE = "tiny-ssl"  # shipped inside lowres: synthetic speech, the demo and the tests
HELDOUT_SPLITS: tuple[str, ...] = ("dev", "test")  # never in the labeled pool (their voices may be: see Heldout)


@dataclass(frozen=True)
class PrepareConfig:
    seed: int = 0  # split draws and held-out carving
    min_duration_s: float = 0.25  # labeled clips shorter than this are rejected
    max_duration_s: float = 40.0  # labeled clips longer than this are rejected (memory in training)
    segment_min_s: float = 2.0  # unlabeled pieces: shortest (shorter files are rejected)
    segment_max_s: float = 15.6  # unlabeled pieces: longest (longer recordings are cut at quiet points)
    dev_fraction: float = 0.1  # held-out shares carved when the corpus has no dev/test of its own
    speaker_disjoint: bool = False  # dev/test voices never train: a given split's are left out of training (said
    #   loudly), a carved one is drawn by speaker or refused. Off: a given split is used as it is, and a carved
    #   one is by speaker only where the corpus has the voices for it (lowres.data.splits.carve_heldout)
    test_fraction: float = 0.1
    split_tolerance: float = 0.02  # each split within 2% of its target duration
    min_char_count: int = 2  # symbols seen fewer times in the training pool become <unk>
    units: str = "grapheme"  # vocabulary symbols: grapheme clusters, or codepoint
    unicode_form: str = "NFKC"  # NFKC or NFC (checked by lowres.data.text.TextConfig)
    lowercase: bool = True
    keep_apostrophes: bool = True
    digits: str = "keep"  # keep | spell | drop (lowres.data.text.DIGIT_POLICIES says what each does)
    workers: int = 0  # probing threads; 0 = automatic
    emit: tuple[str, ...] = ()  # extra formats: "fairseq"

    def __post_init__(self):
        if self.units not in ("grapheme", "codepoint"):
            raise ValueError(f"units must be grapheme or codepoint, not {self.units!r}")
        check("", self, "min_duration_s", 0)
        check("", self, "max_duration_s", self.min_duration_s if math.isfinite(self.min_duration_s) else 0,
               low_open=True)
        check("", self, "segment_min_s", 0, low_open=True)
        check("", self, "segment_max_s", 0, low_open=True)
        if self.segment_max_s < 2 * self.segment_min_s:
            raise ValueError("segment_max_s must be at least twice segment_min_s")
        if not (0 <= self.dev_fraction < 0.5 and 0 <= self.test_fraction < 0.5):
            raise ValueError("dev_fraction and test_fraction must be in [0, 0.5)")
        check("", self, "split_tolerance", 0, 1, high_open=True)
        if self.min_char_count < 1:
            raise ValueError("min_char_count must be at least 1")
        check("", self, "workers", 0)
        for e in self.emit:
            if e != "fairseq":
                raise ValueError(f"unknown --emit format {e!r} (known: fairseq)")


# ---------------------------------------------------------------------------------------------------
# what fine-tuning and adapt share: one declaration and one rule per setting. Both commands keep their own
# sections ([model], [optim], [train]) with the same keys as before, so `--set model.mask_prob=...` works in
# both and old config.json files load. A field without a default here is one where the two really differ:
# each command declares its default, with the reason, in its own class below.


@dataclass(frozen=True, kw_only=True)
class SharedModelConfig:
    """``[model]`` settings of both fine-tuning and adapt."""

    layerdrop: float  # probability of skipping each transformer layer in an update
    mask_prob: float = 0.65  # time masking: share of frames that start a span (≈49% end up masked); wav2vec
    #                          2.0 uses p = 0.65 for pretraining and for fine-tuning alike
    mask_length: int = 10  # frames per time span (wav2vec 2.0's M = 10 in both)
    freeze_feature_encoder: bool | None = None  # None: frozen for pretrained bases (the literature's choice
    # for fine-tuning and for continued pretraining), trained for a randomly initialised one

    def __post_init__(self):
        check("model", self, "layerdrop", 0, 1, high_open=True)
        check("model", self, "mask_prob", 0, 1, high_open=True)
        check("model", self, "mask_length", 1)


@dataclass(frozen=True, kw_only=True)
class SharedOptimConfig:
    """``[optim]`` settings of both fine-tuning and adapt (AdamW)."""

    lr: float  # peak learning rate
    head_lr: float | None = None  # the parts that start fresh (fine-tuning: CTC head and mask embedding; adapt:
    #                               quantizer, projections, mask embedding); None = lr
    betas: tuple[float, float] = (0.9, 0.98)  # wav2vec 2.0's Adam betas, pretraining and fine-tuning
    eps: float
    weight_decay: float
    clip_norm: float  # gradient norm clipping; 0 disables it

    def __post_init__(self):
        check("optim", self, "lr", 0, low_open=True)
        check("optim", self, "head_lr", 0, low_open=True, optional=True)
        for beta in self.betas:
            if not (math.isfinite(beta) and 0 <= beta < 1):
                raise ValueError(f"optim.betas must be two numbers in [0, 1), not {list(self.betas)!r}")
        check("optim", self, "eps", 0, low_open=True)
        check("optim", self, "weight_decay", 0)
        check("optim", self, "clip_norm", 0)


@dataclass(frozen=True, kw_only=True)
class SharedTrainConfig:
    """``[train]`` settings of both fine-tuning and adapt: the run's length and batches, logging, the runtime."""

    max_steps: int  # optimizer updates
    batch_seconds: float = 200.0  # audio per micro-batch, padding included
    accumulate: int  # micro-batches per update (audio per update = batch_seconds × accumulate)
    save_every: int = 500  # training-state checkpoint every N updates (0 = only at the end)
    save_minutes: float = 10.0  # ... and at the first update ten minutes after the last one (0 = by updates only),
    #                             so that a slow run killed or stopped loses minutes, not hours
    log_every: int = 10  # a metrics line every N updates
    num_workers: int = -1  # audio decoding processes; -1 = automatic
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA) | bf16 | fp32
    threads: int = 0  # CPU threads; 0 = all cores
    gradient_checkpointing: bool = False  # recompute each transformer layer in the backward pass instead of
    # keeping its activations: less memory for about one more forward pass of the transformer; same results
    max_frozen_share: float = 0.5  # a frozen phase (finetune's head-only phase, adapt's heads warm-up) covers at
    # most this share of max_steps, so that a short run still trains what waits (it is shortened, with a note)

    def __post_init__(self):
        check("train", self, "max_steps", 1)
        check("train", self, "max_frozen_share", 0, 1, low_open=True)
        check("train", self, "batch_seconds", 0, low_open=True)
        check("train", self, "accumulate", 1)
        check("train", self, "save_every", 0)
        check("train", self, "save_minutes", 0)
        check("train", self, "log_every", 1)
        check("train", self, "num_workers", 0, special={-1: "automatic"})
        check("train", self, "threads", 0)


@dataclass(frozen=True)
class LoraSettings:
    enabled: bool = True  # --no-lora: fine-tune the whole transformer (the baseline)
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0

    def __post_init__(self):
        check("lora", self, "rank", 1)
        check("lora", self, "alpha", 0, low_open=True)
        check("lora", self, "dropout", 0, 1, high_open=True)


# ---------------------------------------------------------------------------------------------------
# fine-tuning (recipes/finetune_*.toml hold the per-split deltas)


@dataclass(frozen=True, kw_only=True)
class ModelConfig(SharedModelConfig):
    layerdrop: float = 0.1  # fairseq's base_10m/base_1h value; adapt keeps more layers (see AdaptModelConfig)
    mask_channel_prob: float = 0.25  # channel masking on the transformer input (fine-tuning only)
    mask_channel_length: int = 64
    frozen_conv_layers: int = 0  # when the conv encoder trains (freeze_feature_encoder=false): its lowest N
    # layers stay frozen, and their output is cached across epochs like a frozen encoder's (train.feature_cache);
    # 0 = every conv layer trains
    final_dropout: float = 0.0  # dropout before the CTC head
    dropout: float | None = None  # transformer dropouts; None keeps the checkpoint's values
    attention_dropout: float | None = None
    activation_dropout: float | None = None
    projection_dropout: float | None = None
    whisper_window: bool = False  # Whisper bases: pad every clip to Whisper's 30-s window as Whisper was trained
    # (slower), instead of encoding it at its own length with the first positions of the table

    def __post_init__(self):
        super().__post_init__()
        check("model", self, "mask_channel_prob", 0, 1, high_open=True)
        check("model", self, "mask_channel_length", 1)
        check("model", self, "frozen_conv_layers", 0)
        check("model", self, "final_dropout", 0, 1, high_open=True)
        for name in ("dropout", "attention_dropout", "activation_dropout", "projection_dropout"):
            check("model", self, name, 0, 1, high_open=True, optional=True)


HEADS = ("ctc", "weighted")


@dataclass(frozen=True)
class HeadConfig:
    """``[head]``: what reads the backbone. ``ctc``: a linear CTC layer on the last layer, the backbone
    fine-tuned (LoRA or fully). ``weighted``: ML-SUPERB's frozen upstream: the whole backbone frozen and run
    without gradients, a learned softmax-weighted sum of all its hidden layers, then a BiLSTM downstream and a
    linear CTC layer trained from scratch (lowres/model/weighted.py)."""

    kind: str = "ctc"  # --head: ctc | weighted
    lstm_layers: int = 2  # (weighted) BiLSTM layers of the downstream (ML-SUPERB's 2)
    lstm_hidden: int = 256  # (weighted) units per direction of each BiLSTM layer
    dropout: float = 0.1  # (weighted) between the BiLSTM layers and before the CTC layer

    def __post_init__(self):
        if self.kind not in HEADS:
            raise ValueError(f"head.kind (--head) must be ctc (a CTC layer on the last layer, the backbone "
                             f"fine-tuned with LoRA or fully) or weighted (the backbone frozen, a learned weighted "
                             f"sum of all its layers read by a BiLSTM CTC downstream), not {self.kind!r}")
        check("head", self, "lstm_layers", 1)
        check("head", self, "lstm_hidden", 1)
        check("head", self, "dropout", 0, 1, high_open=True)


@dataclass(frozen=True, kw_only=True)
class OptimConfig(SharedOptimConfig):
    lr: float = 5e-4  # peak (LoRA wants ~10x full fine-tuning's 5e-5; adapt trains whole weights: 1e-4)
    eps: float = 1e-8  # fairseq's fine-tuning value (its pretraining, hence adapt, uses 1e-6)
    weight_decay: float = 0.0  # fairseq fine-tunes without weight decay (its pretraining uses 0.01)
    clip_norm: float = 1.0  # fine-tuning clips hard (adapt's 10 only catches spikes of the contrastive loss)


@dataclass(frozen=True)
class ScheduleConfig:
    """fairseq's tri-stage schedule: warm-up from init_scale·lr, hold, exponential decay to final_scale·lr."""

    warmup: float = 0.1  # fractions of max_steps
    hold: float = 0.4
    decay: float = 0.5
    init_scale: float = 0.01
    final_scale: float = 0.05

    def __post_init__(self):
        for name in ("warmup", "hold", "decay"):
            check("schedule", self, name, 0, 1)
        if abs(self.warmup + self.hold + self.decay - 1.0) > 1e-6:
            raise ValueError("schedule.warmup + hold + decay must add up to 1")
        check("schedule", self, "init_scale", 0, 1)
        check("schedule", self, "final_scale", 0, 1, low_open=True)  # the decay is exponential: never 0


@dataclass(frozen=True, kw_only=True)
class TrainConfig(SharedTrainConfig):
    max_steps: int = 13000  # fairseq's base_10m/base_1h run length
    head_only_steps: int = 1000  # first updates train only the CTC head (transformer frozen)
    accumulate: int = 8  # 200 s × 8 = 1600 s of audio per update, fairseq's fine-tuning batch
    max_utterance_s: float = 0.0  # longer training clips are dropped and counted; 0 = batch_seconds
    eval_every: int = 500  # dev WER every N updates (0 = only at the end)
    dev_max_utterances: int = 0  # evaluate on N dev utterances only, taken in turn from each speaker (0 = all)
    best_metric: str = "cer"  # cer | wer: the dev metric that picks the delivered weights (all-blank ones never).
    # CER, because on little data WER stays at or above 100% (insertions) long after CER has started to fall
    feature_cache: bool = True  # with a frozen conv encoder and no waveform augmentation, each clip's conv
    #                             features (--head weighted: all the frozen backbone's layers) are computed once
    #                             and reused in later epochs, in fp16 (model/feature_cache.py)
    feature_cache_mb: float = 2048.0  # the cache's memory; beyond it, clips spill to RUN/feature_cache/

    def __post_init__(self):
        super().__post_init__()
        if self.best_metric not in ("cer", "wer"):
            raise ValueError("train.best_metric must be cer or wer")
        check("train", self, "head_only_steps", 0)
        check("train", self, "max_utterance_s", 0)
        check("train", self, "eval_every", 0)
        check("train", self, "dev_max_utterances", 0)
        check("train", self, "feature_cache_mb", 0)


@dataclass(frozen=True)
class AugmentConfig:
    """Waveform augmentation (audiomentations), off by default; probabilities per utterance."""

    noise_prob: float = 0.0
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    gain_prob: float = 0.0
    gain_db: tuple[float, float] = (-6.0, 6.0)
    speed_prob: float = 0.0
    speed: tuple[float, float] = (0.9, 1.1)
    speed_steps: int = 0  # 0: the factor is drawn anywhere in `speed`; N >= 2: one of N evenly spaced factors
    #                       (Kaldi's three-way 0.9 / 1.0 / 1.1 is speed = [0.9, 1.1], speed_steps = 3). With
    #                       steps and no other augmentation, frozen conv layers' output stays cacheable
    #                       (train.feature_cache keeps one copy per clip and factor)
    pitch_prob: float = 0.0
    pitch_semitones: tuple[float, float] = (-2.0, 2.0)
    band_prob: float = 0.0  # band-pass filtering (telephone-like)

    def __post_init__(self):
        for name in ("noise_prob", "gain_prob", "speed_prob", "pitch_prob", "band_prob"):
            check("augment", self, name, 0, 1)
        for name in ("noise_snr_db", "gain_db", "pitch_semitones"):
            check_range("augment", self, name)
        check_range("augment", self, "speed", 0, low_open=True)
        check("augment", self, "speed_steps", 0)
        if self.speed_steps == 1:
            raise ValueError("augment.speed_steps must be 0 (a factor drawn anywhere in augment.speed) or at least 2 "
                             "(evenly spaced factors from its low to its high end), not 1")

    @property
    def enabled(self) -> bool:
        return max(self.noise_prob, self.gain_prob, self.speed_prob, self.pitch_prob, self.band_prob) > 0

    @property
    def cacheable(self) -> bool:
        """Every clip comes out as one of a few fixed versions (speed perturbation in steps, nothing else)."""
        return self.speed_steps >= 2 and max(self.noise_prob, self.gain_prob, self.pitch_prob, self.band_prob) == 0


@dataclass(frozen=True)
class PseudoSettings:
    """Pseudo-labelled audio beside the labeled split (``finetune --pseudo``; self-training, Xu et al. 2021)."""

    manifest: str = ""  # --pseudo: the --out folder of `lowres pseudolabel` (its pseudo.jsonl) or such a manifest
    keep: float = 1.0  # --pseudo-keep: the most confident share of its pieces that trains (by confidence)
    weight: float = 1.0  # --pseudo-weight: each pseudo-labelled clip's loss counts this much (a labeled clip's: 1)

    def __post_init__(self):
        check("pseudo", self, "keep", 0, 1, low_open=True)
        check("pseudo", self, "weight", 0, low_open=True)


@dataclass(frozen=True)
class SynthSettings:
    """Synthetic in-language speech of the user's text beside the labeled split (``finetune --synth-text``)."""

    text: str = ""  # --synth-text: a UTF-8 text file in the language (sentences, one or more per line)
    hours: float = 0.0  # --synth-hours: how much of it eSpeak NG speaks (the text again, in a new order, if short)
    lang: str = ""  # --synth-lang: eSpeak NG's language (default: the prepared folder's --lang)
    weight: float = 1.0  # --synth-weight: each synthetic clip's loss counts this much (a labeled clip's: 1)
    voices: int = 24  # eSpeak voice variants, each with its own rate and pitch (lowres/synth/corpus.py)

    def __post_init__(self):
        check("synth", self, "hours", 0)
        check("synth", self, "weight", 0, low_open=True)
        check("synth", self, "voices", 3)
        if bool(self.text) != (self.hours > 0):
            raise ValueError("synthetic speech needs both synth.text (--synth-text FILE) and synth.hours "
                             "(--synth-hours H, more than 0)")


@dataclass(frozen=True)
class FinetuneConfig:
    data: str = ""  # --data: a folder written by `lowres prepare`
    split: str = "1h"  # --split: 10min | 1h | 10h | full (picks the manifest and the recipe)
    train_manifest: str = ""  # overrides data/manifests/{split}.jsonl
    dev_manifest: str = ""  # default data/manifests/dev.jsonl
    base: str = ""  # --base
    method: str = "auto"  # the base's fine-tuning method: a recipe layered over the split's, under --recipe and --set:
    # auto = lowres's choice for the base (lowres.bases.finetune_method: tiny_ssl for small encoders, whisper for
    # Whisper, the split recipe's LoRA for the others), none, or a recipe name; a run records the one it took
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pseudo: PseudoSettings = field(default_factory=PseudoSettings)
    synth: SynthSettings = field(default_factory=SynthSettings)


# ---------------------------------------------------------------------------------------------------
# adapt: continued wav2vec 2.0 pretraining (recipes/adapt.toml holds the deltas)


@dataclass(frozen=True)
class QuantizerConfig:
    """Used only when the base has no pretraining heads (they are then initialised fresh)."""

    groups: int = 2  # G
    entries: int = 320  # V per group
    dim: int = 0  # codevector dim (all groups together); 0 = final_dim
    final_dim: int = 0  # contrastive space; 0 = 256 for models up to 768 wide, 768 above

    def __post_init__(self):
        check("quantizer", self, "groups", 1)
        check("quantizer", self, "entries", 1)
        check("quantizer", self, "dim", 0)
        check("quantizer", self, "final_dim", 0)


@dataclass(frozen=True)
class PretrainLossConfig:
    num_negatives: int = 100  # K distractors per masked frame, same utterance, other masked frames
    logit_temperature: float = 0.1
    diversity_weight: float = 0.1  # alpha
    feature_penalty: float = -1.0  # beta; -1 = 10 for group-norm (BASE-style) encoders, 0 for layer-norm
    feature_dropout: float = 0.1  # on the quantizer input (and the projected features)

    def __post_init__(self):
        check("loss", self, "num_negatives", 1)
        check("loss", self, "logit_temperature", 0, low_open=True)
        check("loss", self, "diversity_weight", 0)
        check("loss", self, "feature_penalty", 0, special={-1: "automatic"})
        check("loss", self, "feature_dropout", 0, 1, high_open=True)


@dataclass(frozen=True)
class GumbelConfig:
    """Gumbel temperature: tau = max(start * decay^step, end); decay compressed to the run by default."""

    max: float = 2.0  # start for fresh heads
    min: float = 0.5  # floor (0.5 BASE, 0.1 LARGE in fairseq)
    decay: float = 0.0  # per update; 0 = (min/start)^(1/max_steps), i.e. the floor is reached at the end
    imported_start: float = 0.0  # start when the quantizer was imported (trained); 0 = 1.5 x min

    def __post_init__(self):
        check("gumbel", self, "max", 0, low_open=True)
        check("gumbel", self, "min", 0, low_open=True)
        if self.min > self.max:
            raise ValueError(f"gumbel.min ({self.min:g}) must not exceed gumbel.max ({self.max:g})")
        check("gumbel", self, "decay", 0, 1, high_open=True)
        check("gumbel", self, "imported_start", 0)


@dataclass(frozen=True, kw_only=True)
class AdaptModelConfig(SharedModelConfig):
    layerdrop: float = 0.05  # continued pretraining keeps more layers than fine-tuning's 0.1 (the
    #                          continued-pretraining literature's value, as fairseq's base_10h fine-tuning)
    min_spans: int = 2  # at least this many masked spans per utterance (the contrastive loss needs masked frames)
    feature_grad_mult: float = 0.1  # scales the gradient reaching a trained conv encoder (0.1 in BASE)

    def __post_init__(self):
        super().__post_init__()
        check("model", self, "min_spans", 0)
        if self.mask_prob == 0 and self.min_spans == 0:
            raise ValueError("model.mask_prob = 0 with model.min_spans = 0 masks nothing, and the contrastive "
                             "loss is computed on masked frames: raise one of them")
        if not 0.0 < self.feature_grad_mult <= 1.0:
            raise ValueError("model.feature_grad_mult must be in (0, 1] (freeze the conv encoder with "
                             "model.freeze_feature_encoder=true instead of 0)")


@dataclass(frozen=True, kw_only=True)
class AdaptOptimConfig(SharedOptimConfig):
    lr: float = 1e-4  # continued pretraining of whole weights: 5e-5 to 3e-4 in the literature
    eps: float = 1e-6  # fairseq's wav2vec 2.0 pretraining value
    weight_decay: float = 0.01  # fairseq's wav2vec 2.0 pretraining value
    clip_norm: float = 10.0  # the contrastive loss has larger gradients than CTC on a few adapters
    warmup: float = 0.1  # share of max_steps, then linear decay to final_scale
    final_scale: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        check("optim", self, "warmup", 0, 1)
        check("optim", self, "final_scale", 0, 1)


@dataclass(frozen=True, kw_only=True)
class AdaptTrainConfig(SharedTrainConfig):
    max_steps: int = 2000  # a short continued run; raise it for real data (20k-100k updates)
    heads_warmup_steps: int = -1  # encoder frozen while fresh heads learn; -1 = 10% of max_steps (0 if imported)
    accumulate: int = 1  # one 200 s micro-batch per update (fine-tuning accumulates 8 for fairseq's 1600 s)
    crop_min_s: float = 2.0  # shorter pieces are dropped
    crop_max_s: float = 15.6  # longer pieces are randomly cropped
    collapse_patience: int = 3  # consecutive logged windows that look collapsed before the run stops

    def __post_init__(self):
        super().__post_init__()
        check("train", self, "heads_warmup_steps", 0, special={-1: "automatic"})
        check("train", self, "crop_min_s", 0, low_open=True)
        check("train", self, "crop_max_s", 0, low_open=True)
        if self.crop_max_s < self.crop_min_s:
            raise ValueError("train.crop_max_s must be >= crop_min_s")
        check("train", self, "collapse_patience", 1)


MFCC_CLUSTERS, LAYER_CLUSTERS = 100, 500  # HuBERT's K: iteration 1 (MFCC units), the iterations after (a layer's)


@dataclass(frozen=True)
class UnitsConfig:
    """``[units]``: the targets of ``--objective hubert``, discovered inside adapt (lowres/units.py)."""

    targets: str = "auto"  # mfcc | layer:N | auto: MFCC for a random-init base, the middle transformer layer
    #                        of a pretrained one (HuBERT's iteration 1 and iteration 2: layer 6 of 12)
    clusters: int = 0  # K; 0 = HuBERT's: MFCC_CLUSTERS for MFCC, LAYER_CLUSTERS for a layer
    max_frames: int = 200_000  # k-means is fit on a seeded sample of at most this many frames (memory bound)
    passes: int = 5  # MiniBatchKMeans passes over the sample (its defaults can take hours; inertia is near its
    #                  asymptote after one pass)
    batch_frames: int = 10_000  # MiniBatchKMeans batch size (fairseq's)
    memory_mb: float = 2048.0  # features kept in memory from sampling to labelling (one pass of the model over
    #                            the audio instead of two); pieces beyond it are computed again
    reuse: str = ""  # --units: a units/ folder of an earlier hubert run to train on instead of making new ones

    def __post_init__(self):
        if self.targets not in ("auto", "mfcc") and not self.targets.startswith("layer:"):
            raise ValueError(f"units.targets must be auto, mfcc or layer:N, not {self.targets!r}")
        check("units", self, "clusters", 2, special={0: "automatic"})
        check("units", self, "max_frames", 1000)
        check("units", self, "passes", 1)
        check("units", self, "batch_frames", 100)
        check("units", self, "memory_mb", 0)
        if self.reuse and (self.targets != "auto" or self.clusters):
            given = " and ".join(f"units.{k} (--{k})" for k in ("targets", "clusters")
                                 if getattr(self, k) != getattr(UnitsConfig, k))
            raise ValueError(f"units.reuse (--units) trains on that run's units as they are, so {given} cannot "
                             "change them: leave it out, or make new units without --units")


@dataclass(frozen=True)
class HubertConfig:
    """``[hubert]``: the prediction heads and loss of ``--objective hubert`` (HuBERT BASE's values)."""

    final_dim: int = 0  # final_proj output and unit embeddings; 0 = 256 for models up to 768 wide, else 768
    unmasked_weight: float = 0.0  # cross-entropy weight of unmasked frames (masked frames weigh 1)
    whisper: bool = False  # adapt a Whisper encoder anyway: refused by default, as it collapsed in every setting
    #                        measured (lowres/train/tasks/hubert.py, WHISPER_REFUSAL); for research only

    def __post_init__(self):
        check("hubert", self, "final_dim", 0)
        check("hubert", self, "unmasked_weight", 0)


OBJECTIVES = ("wav2vec2", "hubert")


@dataclass(frozen=True)
class AdaptConfig:
    unlabeled: str = ""  # --unlabeled: a folder of audio or an unlabeled.jsonl
    base: str = ""
    objective: str = "wav2vec2"  # --objective: wav2vec2 (contrastive) | hubert (masked prediction of units);
    #                              the CLI's auto picks by the base (see lowres.runs.default_objective)
    model: AdaptModelConfig = field(default_factory=AdaptModelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    loss: PretrainLossConfig = field(default_factory=PretrainLossConfig)
    gumbel: GumbelConfig = field(default_factory=GumbelConfig)
    optim: AdaptOptimConfig = field(default_factory=AdaptOptimConfig)
    train: AdaptTrainConfig = field(default_factory=AdaptTrainConfig)
    # adapt trains the transformer's own weights unless --lora asks for adapters
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(enabled=False))
    units: UnitsConfig = field(default_factory=UnitsConfig)
    hubert: HubertConfig = field(default_factory=HubertConfig)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")


# ---------------------------------------------------------------------------------------------------
# synth (the synthetic corpus of the demo and the tests)


@dataclass(frozen=True)
class SynthConfig:
    """``lowres synth``'s defaults (lowres/synth/corpus.py)."""

    lang: str = "sw"  # eSpeak NG language; Swahili has a word list shipped with lowres
    hours: float = 1.0  # transcribed training audio
    unlabeled_hours: float = 1.0  # unlabeled audio, spoken by the training voices
    speakers: int = 24  # voices in all; about 10% each are held out for dev and for test
    noise: float = 0.0  # probability of background noise per file
    seed: int = 0  # same seed, same corpus, byte for byte
    workers: int = 0  # processes; 0 = one per CPU core, at most 8


# ---------------------------------------------------------------------------------------------------
# decoding (eval, transcribe) and language models (lm)

LEXICON_MODE, LEXICON_FREE_MODE = "lexicon", "lexicon_free"  # the two beam searches (the keys of an LM's tuned.json)
DEFAULT_LM_WEIGHT = 0.5  # the LM weight when neither the user nor `eval --tune-lm` gave one
DEFAULT_WORD_SCORE = 0.0  # the per-word bonus likewise
TRANSCRIBE_CHUNK_S = 30.0  # transcribe: the longest piece decoded at once (long files are cut at quiet points)


@dataclass(frozen=True, kw_only=True)
class DecodeOptions:
    """How to decode: batching and precision of the forward passes, and the optional LM beam search.

    Built once by the CLI (``eval``, ``transcribe``) or by a caller; every field is keyword-only. Mistakes
    that need no file system (an option that needs ``--lm`` without it, a beam of 0) raise
    :class:`LowresError` here; the LM files are checked by :meth:`BeamSearch.from_options`."""

    batch_seconds: float = 120.0  # audio per forward batch, padding included: bounds memory (inference
    #                               holds no gradients, so it can take more than training's micro-batches)
    workers: int = -1  # audio-loading processes: -1 automatic, 0 in the main process (transcribe always
    #                    decodes in-process: it feeds one file's pieces at a time)
    precision: str | None = None  # auto | bf16 | fp32; None: the run's own train.precision ("auto" without a run)
    lm: Path | None = None  # LM folder from `lowres lm` (or an .arpa / KenLM .bin file); None: greedy decoding
    lexicon: Path | None = None  # another word lexicon than the LM folder's lexicon.txt
    lexicon_free: bool = False  # any unit sequence, scored by the folder's units.arpa, instead of lexicon words
    beam_size: int = 50  # hypotheses kept per frame
    lm_weight: float | None = None  # None: the tuned value (tuned.json), else DEFAULT_LM_WEIGHT
    word_score: float | None = None  # None: the tuned value, else DEFAULT_WORD_SCORE

    def __post_init__(self):
        for name in ("lm", "lexicon"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))  # frozen: the one coercion of the path fields
        if self.batch_seconds <= 0:
            raise LowresError(f"--batch-seconds must be more than 0, not {self.batch_seconds:g}.")
        if self.lm is None:
            given = [flag for flag, value in (("--lexicon", self.lexicon), ("--lm-weight", self.lm_weight),
                                              ("--word-score", self.word_score)) if value is not None]
            if self.lexicon_free:
                given.append("--lexicon-free")
            if given:
                raise LowresError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --lm LM_DIR (the "
                                  "folder written by `lowres lm`): they set up beam search with a language model.")
            return
        if self.beam_size < 1:
            raise LowresError(f"--beam must be at least 1, not {self.beam_size}.")
        if self.lexicon is not None and self.lexicon_free:
            raise LowresError("--lexicon and --lexicon-free contradict each other: choose one.")

    @property
    def mode(self) -> str:
        """The beam search's kind: ``lexicon`` (words of the lexicon) or ``lexicon_free`` (any spelling)."""
        return LEXICON_FREE_MODE if self.lexicon_free else LEXICON_MODE


@dataclass(frozen=True)
class PseudoLabelConfig:
    """``lowres pseudolabel``'s settings (lowres/pseudolabel.py): which decoded pieces become pseudo-labels."""

    keep: float = 1.0  # --keep: the most confident share of the plausible pieces that is kept
    min_confidence: float = 0.0  # --min-confidence: pieces below it are dropped (0-1; see pseudolabel.py)
    cps_margin: float = 0.25  # a piece whose characters per second lie more than this share outside the labeled
    #                           data's range (its 1st-99th percentiles) is implausible (a loop, a lost stretch)
    max_hours: float = 0.0  # --max-hours: decode a seeded random subset of this much audio (0: all of it)
    seed: int = 0  # --seed: that subset (decoding itself is deterministic)

    def __post_init__(self):
        check("pseudolabel", self, "keep", 0, 1, low_open=True)
        check("pseudolabel", self, "min_confidence", 0, 1)
        check("pseudolabel", self, "cps_margin", 0)
        check("pseudolabel", self, "max_hours", 0)


@dataclass(frozen=True)
class AlignConfig:
    """``lowres align``'s settings (lowres/align.py, lowres/ctc_align.py): long recordings cut at their text's lines."""

    window_s: float = 30.0  # audio read per forward pass (at most what the backbone reads: Whisper's 30 s)
    context_s: float = 3.0  # of each window, this much on either side only gives context: its frames come from
    #                         the neighbouring window, so every kept frame heard at least this much around it
    min_score: float = -2.0  # --min-score: a line whose path's mean log-probability is lower is rejected (a line
    #                          spoken as written scores about -0.1 to -1; text that is not in the audio, -5 and less)
    passes: int = 4  # lines scoring below --min-score are taken out and the rest aligned again, at most this often
    pad_s: float = 0.1  # --pad: audio kept before and after each line's first and last character (at most half
    #                     the gap to its neighbours), so a training clip does not start in the middle of a sound
    snap_s: float = 1.0  # a line's ends move outward at most this far from its first and last character's frames
    #                      to where its sound starts and stops (0: the frames as they are; lowres/align.py _snap)
    silence_db: float = 35.0  # quieter than the line's loudest 20-ms frame by this much is silence, for snap_s
    max_segment_s: float = 30.0  # lines whose audio is longer are rejected (too_long): longer than a clip trains
    star_score: float = 0.2  # what the star scores per frame (0 is probability 1, MMS's choice); a little above
    #                          0, a stray character in the pause before a line no longer pulls the line's start
    #                          into the pause (the demo's 10min run: 95th percentile of boundary error 0.85 s at 0,
    #                          0.18 s at 0.2, 0.19 s at 0.5, 0.40 s at 1; benchmarks/README.md)
    split_sentences: bool = False  # --split-sentences: one utterance per sentence instead of per text line
    direct_mb: float = 256.0  # torchaudio's forced_align where its back-pointer table fits in this many MB, else
    #                           lowres's checkpointed Viterbi (the same best path, in bounded memory)

    def __post_init__(self):
        check("align", self, "window_s", 4)
        check("align", self, "context_s", 0)
        if self.window_s <= 2 * self.context_s + 1:
            raise ValueError(f"align.window_s {self.window_s} must exceed twice align.context_s "
                             f"({self.context_s}) by at least 1 s")
        check("align", self, "min_score", high=0)
        check("align", self, "passes", 1)
        check("align", self, "pad_s", 0)
        check("align", self, "max_segment_s", 1)
        check("align", self, "snap_s", 0)
        check("align", self, "silence_db", 1)
        check("align", self, "direct_mb", 1)


@dataclass(frozen=True)
class LMConfig:
    """``lowres lm``'s settings (lowres/lm/build.py)."""

    order: int = 4  # word n-gram order (2 to 5)
    unit_order: int = 6  # the unit (character) model for --lexicon-free decoding (2 to 10; 0: none)
    prune_from_order: int = 3  # --prune drops singleton n-grams of this order and longer (lmplz --prune 0 0 1)


def resolve_adapt(recipe: str | Path | None = None, sets: tuple[str, ...] = (), flags: dict | None = None,
                  objective: str = AdaptConfig.objective) -> AdaptConfig:
    """Defaults ← recipes/adapt.toml (← recipes/adapt_hubert.toml for ``objective`` hubert) ← ``--recipe`` ←
    ``--set`` ← explicit flags."""
    if objective not in OBJECTIVES:
        raise LowresError(f"--objective must be one of auto, {', '.join(OBJECTIVES)}, not {objective!r}.")
    cfg = layer(AdaptConfig(objective=objective), load_recipe("adapt"), "the shipped recipe adapt.toml")
    if objective == "hubert":
        cfg = layer(cfg, load_recipe("adapt_hubert"), "the shipped recipe adapt_hubert.toml")
    if recipe:
        cfg = layer(cfg, load_recipe(recipe), f"the recipe {recipe}")
    cfg = layer(cfg, parse_sets(sets), "--set")
    return layer(cfg, nest_flags(flags), "the command line's flags")


SPLITS = LABELED_SPLITS  # --split of finetune: the labeled splits that prepare writes (declared with PrepareConfig)


def shipped_recipe(split: str) -> str:
    """The shipped recipe of a split: ``finetune_{split}``; ``full`` shares the 10h one."""
    return {"full": "finetune_10h"}.get(split, f"finetune_{split}")


def resolve_finetune(split: str, recipe: str | Path | None = None, sets: tuple[str, ...] = (),
                     flags: dict | None = None, method: str | None = None) -> FinetuneConfig:
    """Defaults ← the split's shipped recipe ← the ``method`` recipe (the base's fine-tuning method, chosen by
    lowres.train.finetune.finetune_config) ← ``--recipe`` ← ``--set`` ← explicit flags (dotted keys)."""
    if split not in SPLITS:
        raise LowresError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}.")
    shipped = shipped_recipe(split)
    cfg = layer(FinetuneConfig(), load_recipe(shipped), f"the shipped recipe {shipped}.toml")
    if method:
        cfg = layer(cfg, load_recipe(method), f"the method's recipe {method}.toml")
    if recipe:
        cfg = layer(cfg, load_recipe(recipe), f"the recipe {recipe}")
    cfg = layer(cfg, parse_sets(sets), "--set")
    return layer(merge(cfg, {"split": split}), nest_flags(flags), "the command line's flags")


__all__ = [
    "AdaptConfig",
    "resolve_adapt",
    "AugmentConfig",
    "FinetuneConfig",
    "HeadConfig",
    "LoraSettings",
    "ModelConfig",
    "OptimConfig",
    "PrepareConfig",
    "ScheduleConfig",
    "SharedModelConfig",
    "SharedOptimConfig",
    "SharedTrainConfig",
    "SPLITS",
    "TrainConfig",
    "resolve_finetune",
    "shipped_recipe",
    "DEFAULT_TARGETS",
    "HELDOUT_SPLITS",
    "LABELED_SPLITS",
    "SUGGESTED_BASE",
    "OFFLINE_BASE",
    "OBJECTIVES",
    # the engine's functions, for the commands and notebooks that resolve configurations (lowres/config_engine.py)
    "check",
    "check_range",
    "flat_keys",
    "from_dict",
    "layer",
    "load_recipe",
    "merge",
    "merge_nested",
    "nest_flags",
    "parse_sets",
    "recipe_dir",
    "to_dict",
]
