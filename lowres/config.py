"""The one source of defaults: frozen dataclasses, TOML recipes and typed ``--set a.b=c`` overrides.

Recipes hold only deltas from these defaults. Unknown keys are errors (with the closest known name), and
values are checked against the field types, so a typo in a recipe or a ``--set`` never passes silently.
The resolved configuration is written into every run folder and every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lowres import LowresError

# ---------------------------------------------------------------------------------------------------
# generic machinery


def to_dict(cfg) -> dict:
    """Nested plain dict (tuples become lists), ready for JSON or TOML."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        elif isinstance(value, Path):
            value = str(value)
        out[f.name] = value
    return out


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp, where: str):
    """``value`` (from TOML, JSON or a ``--set`` string) converted to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in typing.get_args(tp):
                return None
        last = None
        for a in args:
            try:
                return _coerce(value, a, where)
            except LowresError as exc:
                last = exc
        raise last or LowresError(f"{where}: bad value {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise LowresError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise LowresError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise LowresError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise LowresError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    as_float = float(value)  # "2e3" is a fine way to write 2000
                except ValueError:
                    as_float = None
                if as_float is not None and as_float.is_integer():
                    return int(as_float)
        raise LowresError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise LowresError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise LowresError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise LowresError(f"{where}: expected a string, got {value!r}")
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise LowresError(f"{where}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    raise LowresError(f"{where}: cannot set a value of type {_type_name(tp)}")


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key(cls, key: str, where: str) -> LowresError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean {where}{close[0]}?" if close else f" Known keys: {', '.join(where + n for n in names)}."
    return LowresError(f"Unknown setting {where}{key}.{hint} The settings and their defaults are in "
                       "lowres/config.py and recipes/README.md.")


def merge(cfg, updates: dict, prefix: str = ""):
    """A copy of dataclass ``cfg`` with the nested ``updates`` applied (types checked, unknown keys refused)."""
    hints = _field_types(type(cfg))
    changes = {}
    for key, value in updates.items():
        if key not in hints:
            raise _unknown_key(type(cfg), key, prefix)
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise LowresError(f"Setting {prefix}{key} is a section; give its keys, e.g. {prefix}{key}.name=value")
            changes[key] = merge(current, value, f"{prefix}{key}.")
        else:
            changes[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        return dataclasses.replace(cfg, **changes)
    except (ValueError, TypeError) as exc:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the configuration"
        raise LowresError(f"Invalid setting in {where}: {exc}") from None


def parse_sets(items: list[str] | tuple[str, ...]) -> dict:
    """``["optim.lr=1e-3", "lora.rank=16"]`` → nested dict of raw strings."""
    out: dict = {}
    for item in items or ():
        if "=" not in item:
            raise LowresError(f"--set takes key=value (for example --set optim.lr=1e-3), not {item!r}.")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise LowresError(f"--set {item!r}: empty key.")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise LowresError(f"--set {item!r} conflicts with another --set of {p}.")
        node[parts[-1]] = value.strip()
    return out


def from_dict(cls, data: dict):
    """Build dataclass ``cls`` from a nested dict such as a saved ``config.json`` (strict)."""
    return merge(cls(), data)


# ---------------------------------------------------------------------------------------------------
# recipes


def recipe_dir() -> Path:
    """Where the shipped recipes are: the package data folder when installed, ``recipes/`` in a checkout."""
    try:
        folder = resources.files("lowres.recipes")
        if isinstance(folder, Path) and folder.is_dir() and any(folder.glob("*.toml")):
            return folder
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "recipes"


def load_recipe(name_or_path: str | Path) -> dict:
    """A recipe as a nested dict: a TOML path, or a shipped recipe name such as ``finetune_1h``."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = recipe_dir() / f"{name_or_path}.toml"
        if shipped.is_file():
            path = shipped
        else:
            names = sorted(p.stem for p in recipe_dir().glob("*.toml"))
            raise LowresError(f"Recipe not found: {name_or_path}. Pass a TOML file, or one of: {', '.join(names)}.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise LowresError(f"Recipe {path} is not valid TOML: {exc}") from None


# ---------------------------------------------------------------------------------------------------
# prepare


@dataclass(frozen=True)
class PrepareConfig:
    seed: int = 0  # split draws and held-out carving
    min_duration_s: float = 0.25  # labeled clips shorter than this are rejected
    max_duration_s: float = 40.0  # labeled clips longer than this are rejected (memory in training)
    segment_min_s: float = 2.0  # unlabeled pieces: shortest (shorter files are rejected)
    segment_max_s: float = 15.6  # unlabeled pieces: longest (longer recordings are cut at quiet points)
    dev_fraction: float = 0.1  # held-out shares carved when the corpus has no dev/test of its own
    test_fraction: float = 0.1
    split_tolerance: float = 0.02  # each split within 2% of its target duration
    min_char_count: int = 2  # symbols seen fewer times in the training pool become <unk>
    units: str = "grapheme"  # vocabulary symbols: grapheme clusters, or codepoint
    unicode_form: str = "NFKC"
    lowercase: bool = True
    keep_apostrophes: bool = True
    digits: str = "keep"  # keep | drop
    workers: int = 0  # probing threads; 0 = automatic
    emit: tuple[str, ...] = ()  # extra formats: "fairseq"

    def __post_init__(self):
        if self.units not in ("grapheme", "codepoint"):
            raise ValueError(f"units must be grapheme or codepoint, not {self.units!r}")
        if self.segment_max_s < 2 * self.segment_min_s:
            raise ValueError("segment_max_s must be at least twice segment_min_s")
        if not (0 <= self.dev_fraction < 0.5 and 0 <= self.test_fraction < 0.5):
            raise ValueError("dev_fraction and test_fraction must be in [0, 0.5)")
        if self.min_char_count < 1:
            raise ValueError("min_char_count must be at least 1")
        for e in self.emit:
            if e != "fairseq":
                raise ValueError(f"unknown --emit format {e!r} (known: fairseq)")


# ---------------------------------------------------------------------------------------------------
# fine-tuning (recipes/finetune_*.toml hold the per-split deltas)


@dataclass(frozen=True)
class ModelConfig:
    layerdrop: float = 0.1  # probability of skipping each transformer layer in an update
    mask_prob: float = 0.65  # time masking: share of frames that start a span (≈49% end up masked)
    mask_length: int = 10  # frames per time span
    mask_channel_prob: float = 0.25  # channel masking on the transformer input
    mask_channel_length: int = 64
    final_dropout: float = 0.0  # dropout before the CTC head
    dropout: float | None = None  # transformer dropouts; None keeps the checkpoint's values
    attention_dropout: float | None = None
    activation_dropout: float | None = None
    projection_dropout: float | None = None
    freeze_feature_encoder: bool | None = None  # None: frozen for pretrained bases, trained from scratch

    def __post_init__(self):
        for name in ("layerdrop", "mask_prob", "mask_channel_prob", "final_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1)")
        if self.mask_length < 1 or self.mask_channel_length < 1:
            raise ValueError("mask lengths must be at least 1")


@dataclass(frozen=True)
class LoraSettings:
    enabled: bool = True  # --no-lora: fine-tune the whole transformer (the baseline)
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4  # peak learning rate (LoRA wants ~10x full fine-tuning's 5e-5)
    head_lr: float | None = None  # CTC head and mask embedding; None = lr
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # 0 disables clipping


@dataclass(frozen=True)
class ScheduleConfig:
    """fairseq's tri-stage schedule: warm-up from init_scale·lr, hold, exponential decay to final_scale·lr."""

    warmup: float = 0.1  # fractions of max_steps
    hold: float = 0.4
    decay: float = 0.5
    init_scale: float = 0.01
    final_scale: float = 0.05

    def __post_init__(self):
        if min(self.warmup, self.hold, self.decay) < 0 or abs(self.warmup + self.hold + self.decay - 1.0) > 1e-6:
            raise ValueError("schedule.warmup + hold + decay must add up to 1")


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 13000  # optimizer updates
    head_only_steps: int = 1000  # first updates train only the CTC head (transformer frozen)
    batch_seconds: float = 200.0  # audio per micro-batch, padding included
    accumulate: int = 8  # micro-batches per update (audio per update = batch_seconds × accumulate)
    max_utterance_s: float = 0.0  # longer training clips are dropped and counted; 0 = batch_seconds
    eval_every: int = 500  # dev WER every N updates (0 = only at the end)
    save_every: int = 500  # training-state checkpoint every N updates
    log_every: int = 10
    dev_max_utterances: int = 0  # evaluate on the first N dev utterances only (0 = all)
    best_metric: str = "wer"  # wer | cer: the dev metric that picks the delivered weights (all-blank ones never)
    num_workers: int = -1  # audio decoding processes; -1 = automatic
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA) | bf16 | fp32
    threads: int = 0  # CPU threads; 0 = all cores

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError("train.max_steps must be at least 1")
        if self.best_metric not in ("wer", "cer"):
            raise ValueError("train.best_metric must be wer or cer")
        if self.batch_seconds <= 0 or self.accumulate < 1:
            raise ValueError("train.batch_seconds must be > 0 and train.accumulate >= 1")
        if self.head_only_steps < 0:
            raise ValueError("train.head_only_steps must be >= 0")


@dataclass(frozen=True)
class AugmentConfig:
    """Waveform augmentation (audiomentations), off by default; probabilities per utterance."""

    noise_prob: float = 0.0
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    gain_prob: float = 0.0
    gain_db: tuple[float, float] = (-6.0, 6.0)
    speed_prob: float = 0.0
    speed: tuple[float, float] = (0.9, 1.1)
    pitch_prob: float = 0.0
    pitch_semitones: tuple[float, float] = (-2.0, 2.0)
    band_prob: float = 0.0  # band-pass filtering (telephone-like)

    @property
    def enabled(self) -> bool:
        return max(self.noise_prob, self.gain_prob, self.speed_prob, self.pitch_prob, self.band_prob) > 0


@dataclass(frozen=True)
class FinetuneConfig:
    data: str = ""  # --data: a folder written by `lowres prepare`
    split: str = "1h"  # --split: 10min | 1h | 10h | full (picks the manifest and the recipe)
    train_manifest: str = ""  # overrides data/manifests/{split}.jsonl
    dev_manifest: str = ""  # default data/manifests/dev.jsonl
    base: str = ""  # --base
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# ---------------------------------------------------------------------------------------------------
# adapt: continued wav2vec 2.0 pretraining (recipes/adapt.toml holds the deltas)


@dataclass(frozen=True)
class QuantizerConfig:
    """Used only when the base has no pretraining heads (they are then initialised fresh)."""

    groups: int = 2  # G
    entries: int = 320  # V per group
    dim: int = 0  # codevector dim (all groups together); 0 = final_dim
    final_dim: int = 0  # contrastive space; 0 = 256 for models up to 768 wide, 768 above


@dataclass(frozen=True)
class PretrainLossConfig:
    num_negatives: int = 100  # K distractors per masked frame, same utterance, other masked frames
    logit_temperature: float = 0.1
    diversity_weight: float = 0.1  # alpha
    feature_penalty: float = -1.0  # beta; -1 = 10 for group-norm (BASE-style) encoders, 0 for layer-norm
    feature_dropout: float = 0.1  # on the quantizer input (and the projected features)

    def __post_init__(self):
        if self.num_negatives < 1:
            raise ValueError("loss.num_negatives must be at least 1")


@dataclass(frozen=True)
class GumbelConfig:
    """Gumbel temperature: tau = max(start * decay^step, end); decay compressed to the run by default."""

    max: float = 2.0  # start for fresh heads
    min: float = 0.5  # floor (0.5 BASE, 0.1 LARGE in fairseq)
    decay: float = 0.0  # per update; 0 = (min/start)^(1/max_steps), i.e. the floor is reached at the end
    imported_start: float = 0.0  # start when the quantizer was imported (trained); 0 = 1.5 x min


@dataclass(frozen=True)
class AdaptModelConfig:
    mask_prob: float = 0.65
    mask_length: int = 10
    min_spans: int = 2
    layerdrop: float = 0.05
    freeze_feature_encoder: bool | None = None  # None: frozen for pretrained bases (the literature's choice
    # for continued runs), trained for a randomly initialised one
    feature_grad_mult: float = 0.1  # scales the gradient reaching a trained conv encoder (0.1 in BASE)

    def __post_init__(self):
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError("model.mask_prob must be in (0, 1)")
        if not 0.0 < self.feature_grad_mult <= 1.0:
            raise ValueError("model.feature_grad_mult must be in (0, 1] (freeze the conv encoder with "
                             "model.freeze_feature_encoder=true instead of 0)")


@dataclass(frozen=True)
class AdaptOptimConfig:
    lr: float = 1e-4  # peak (continued pretraining: 5e-5 to 3e-4 in the literature)
    head_lr: float | None = None  # quantizer / projections / mask embedding; None = lr (x10 in the heads warm-up)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    clip_norm: float = 10.0
    warmup: float = 0.1  # share of max_steps, then linear decay to final_scale
    final_scale: float = 0.0


@dataclass(frozen=True)
class AdaptTrainConfig:
    max_steps: int = 2000
    heads_warmup_steps: int = -1  # encoder frozen while fresh heads learn; -1 = 10% of max_steps (0 if imported)
    batch_seconds: float = 200.0
    accumulate: int = 1
    crop_min_s: float = 2.0  # shorter pieces are dropped
    crop_max_s: float = 15.6  # longer pieces are randomly cropped
    log_every: int = 10
    save_every: int = 500
    num_workers: int = -1
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    threads: int = 0
    collapse_patience: int = 3  # consecutive logged windows that look collapsed before the run stops

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError("train.max_steps must be at least 1")
        if self.crop_max_s < self.crop_min_s:
            raise ValueError("train.crop_max_s must be >= crop_min_s")


@dataclass(frozen=True)
class AdaptConfig:
    unlabeled: str = ""  # --unlabeled: a folder of audio or an unlabeled.jsonl
    base: str = ""
    model: AdaptModelConfig = field(default_factory=AdaptModelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    loss: PretrainLossConfig = field(default_factory=PretrainLossConfig)
    gumbel: GumbelConfig = field(default_factory=GumbelConfig)
    optim: AdaptOptimConfig = field(default_factory=AdaptOptimConfig)
    train: AdaptTrainConfig = field(default_factory=AdaptTrainConfig)
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(enabled=False))


def nest_flags(flags: dict | None) -> dict:
    """``{"optim.lr": 1e-3, "data": "p"}`` → ``{"optim": {"lr": 1e-3}, "data": "p"}``; None values left out."""
    updates: dict = {}
    for key, value in (flags or {}).items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        node = updates
        for part in section.split(".") if section else []:
            node = node.setdefault(part, {})
        node[name] = value
    return updates


def merge_nested(base: dict, updates: dict) -> dict:
    """A copy of nested dict ``base`` with ``updates`` laid over it (sections merged key by key)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_nested(out[key], value)
        else:
            out[key] = value
    return out


def _apply_flags(cfg, flags: dict | None):
    return merge(cfg, nest_flags(flags))


def resolve_adapt(recipe: str | Path | None = None, sets: tuple[str, ...] = (), flags: dict | None = None
                  ) -> AdaptConfig:
    """Defaults ← recipes/adapt.toml ← ``--recipe`` ← ``--set`` ← explicit flags."""
    cfg = merge(AdaptConfig(), load_recipe("adapt"))
    if recipe:
        cfg = merge(cfg, load_recipe(recipe))
    cfg = merge(cfg, parse_sets(sets))
    return _apply_flags(cfg, flags)


SPLITS = ("10min", "1h", "10h", "full")


def resolve_finetune(split: str, recipe: str | Path | None = None, sets: tuple[str, ...] = (),
                     flags: dict | None = None) -> FinetuneConfig:
    """Defaults ← the split's shipped recipe ← ``--recipe`` ← ``--set`` ← explicit flags (dotted keys)."""
    if split not in SPLITS:
        raise LowresError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}.")
    cfg = FinetuneConfig()
    shipped = {"full": "finetune_10h"}.get(split, f"finetune_{split}")
    cfg = merge(cfg, load_recipe(shipped))
    if recipe:
        cfg = merge(cfg, load_recipe(recipe))
    cfg = merge(cfg, parse_sets(sets))
    return _apply_flags(merge(cfg, {"split": split}), flags)


__all__ = [
    "AdaptConfig",
    "resolve_adapt",
    "AugmentConfig",
    "FinetuneConfig",
    "LoraSettings",
    "ModelConfig",
    "OptimConfig",
    "PrepareConfig",
    "ScheduleConfig",
    "TrainConfig",
    "resolve_finetune",
    "field",
    "from_dict",
    "load_recipe",
    "merge",
    "parse_sets",
    "recipe_dir",
    "to_dict",
]
