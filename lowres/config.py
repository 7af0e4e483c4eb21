"""The one source of defaults: frozen dataclasses, TOML recipes and typed ``--set a.b=c`` overrides.

Recipes hold only deltas from these defaults. Unknown keys are errors (with the closest known name), and
values are checked against the field types, so a typo in a recipe or a ``--set`` never passes silently.
The resolved configuration is written into every run folder and every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lowres import LowresError
from lowres.data.splits import LABELED_SPLITS

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
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _unknown_key(cls, key: str, where: str, root=None) -> LowresError:
    """The message for unknown ``{where}{key}``: the closest key of the same section, else the same key (or a
    close one) in another section of ``root`` (``train.lr`` → ``optim.lr``), else the section's keys."""
    names = [f.name for f in dataclasses.fields(cls)]
    close = [where + n for n in difflib.get_close_matches(key, names, n=1)]
    elsewhere = [k for k in _dotted_keys(root) if k[:k.rfind(".") + 1] != where] if root is not None else []
    same = [k for k in elsewhere if k.rsplit(".", 1)[-1] == key]
    if same:  # the key itself, in another section: the likeliest mistake (train.lr for optim.lr)
        close = same[:3]
    elif not close and elsewhere:
        leaves = {k.rsplit(".", 1)[-1]: k for k in reversed(elsewhere)}
        close = [leaves[n] for n in difflib.get_close_matches(key, list(leaves), n=1)]
    hint = (f" Did you mean {' or '.join(close)}?" if close
            else f" Known keys: {', '.join(where + n for n in names)}.")
    return LowresError(f"Unknown setting {where}{key}.{hint} The settings and their defaults are in "
                       "lowres/config.py and recipes/README.md.")


def _dotted_keys(cfg, prefix: str = "") -> list[str]:
    """Every setting of dataclass ``cfg`` by its dotted name (``optim.lr``), sections walked."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += _dotted_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def merge(cfg, updates: dict, prefix: str = "", root=None):
    """A copy of dataclass ``cfg`` with the nested ``updates`` applied (types checked, unknown keys refused).
    ``root``: the whole configuration when ``cfg`` is one of its sections (where an unknown key is looked for)."""
    root = cfg if root is None else root
    hints = _field_types(type(cfg))
    changes = {}
    for key, value in updates.items():
        if key not in hints:
            raise _unknown_key(type(cfg), key, prefix, root)
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise LowresError(f"Setting {prefix}{key} is a section; give its keys, e.g. {prefix}{key}.name=value")
            changes[key] = merge(current, value, f"{prefix}{key}.", root)
        else:
            changes[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        return dataclasses.replace(cfg, **changes)
    except (ValueError, TypeError) as exc:  # the dataclass's own rule (its message names the dotted key)
        raise LowresError(f"Invalid setting: {exc}.") from None


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
# validation: one rule per setting, each naming its dotted key (merge turns the ValueError into a LowresError)


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"


def _check(section: str, cfg, name: str, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False, optional: bool = False, special: dict | None = None
           ) -> None:
    """Refuse ``cfg.<name>`` unless it is a finite number in the interval (``optional``: None is fine too;
    ``special``: values with a meaning of their own, e.g. ``{-1: "automatic"}``)."""
    value = getattr(cfg, name)
    special = special or {}
    if (value is None and optional) or (value in special and not isinstance(value, bool)):
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        key = f"{section}.{name}" if section else name
        also = "".join(f" or {v:g} ({why})" for v, why in special.items())
        kind = "an integer" if isinstance(value, int) and not isinstance(value, bool) else "a finite number"
        raise ValueError(f"{key} must be {kind} {_interval(low, high, low_open, high_open)}{also}, not {value!r}")


def _check_range(section: str, cfg, name: str, low: float | None = None, *, low_open: bool = False) -> None:
    """A ``(lo, hi)`` pair: both finite (and above ``low``), lo <= hi."""
    lo, hi = getattr(cfg, name)
    key = f"{section}.{name}" if section else name
    for v in (lo, hi):
        if not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low)):
            bound = f" {_interval(low, None, low_open, False)}" if low is not None else ""
            raise ValueError(f"{key} must be two finite numbers{bound}, not {[lo, hi]!r}")
    if lo > hi:
        raise ValueError(f"{key} must be [low, high] with low <= high, not {[lo, hi]!r}")


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
        _check("", self, "min_duration_s", 0)
        _check("", self, "max_duration_s", self.min_duration_s if math.isfinite(self.min_duration_s) else 0,
               low_open=True)
        _check("", self, "segment_min_s", 0, low_open=True)
        _check("", self, "segment_max_s", 0, low_open=True)
        if self.segment_max_s < 2 * self.segment_min_s:
            raise ValueError("segment_max_s must be at least twice segment_min_s")
        if not (0 <= self.dev_fraction < 0.5 and 0 <= self.test_fraction < 0.5):
            raise ValueError("dev_fraction and test_fraction must be in [0, 0.5)")
        _check("", self, "split_tolerance", 0, 1, high_open=True)
        if self.min_char_count < 1:
            raise ValueError("min_char_count must be at least 1")
        _check("", self, "workers", 0)
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
        _check("model", self, "layerdrop", 0, 1, high_open=True)
        _check("model", self, "mask_prob", 0, 1, high_open=True)
        _check("model", self, "mask_length", 1)


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
        _check("optim", self, "lr", 0, low_open=True)
        _check("optim", self, "head_lr", 0, low_open=True, optional=True)
        for beta in self.betas:
            if not (math.isfinite(beta) and 0 <= beta < 1):
                raise ValueError(f"optim.betas must be two numbers in [0, 1), not {list(self.betas)!r}")
        _check("optim", self, "eps", 0, low_open=True)
        _check("optim", self, "weight_decay", 0)
        _check("optim", self, "clip_norm", 0)


@dataclass(frozen=True, kw_only=True)
class SharedTrainConfig:
    """``[train]`` settings of both fine-tuning and adapt: the run's length and batches, logging, the runtime."""

    max_steps: int  # optimizer updates
    batch_seconds: float = 200.0  # audio per micro-batch, padding included
    accumulate: int  # micro-batches per update (audio per update = batch_seconds × accumulate)
    save_every: int = 500  # training-state checkpoint every N updates (0 = only at the end)
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
        _check("train", self, "max_steps", 1)
        _check("train", self, "max_frozen_share", 0, 1, low_open=True)
        _check("train", self, "batch_seconds", 0, low_open=True)
        _check("train", self, "accumulate", 1)
        _check("train", self, "save_every", 0)
        _check("train", self, "log_every", 1)
        _check("train", self, "num_workers", 0, special={-1: "automatic"})
        _check("train", self, "threads", 0)


@dataclass(frozen=True)
class LoraSettings:
    enabled: bool = True  # --no-lora: fine-tune the whole transformer (the baseline)
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0

    def __post_init__(self):
        _check("lora", self, "rank", 1)
        _check("lora", self, "alpha", 0, low_open=True)
        _check("lora", self, "dropout", 0, 1, high_open=True)


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

    def __post_init__(self):
        super().__post_init__()
        _check("model", self, "mask_channel_prob", 0, 1, high_open=True)
        _check("model", self, "mask_channel_length", 1)
        _check("model", self, "frozen_conv_layers", 0)
        _check("model", self, "final_dropout", 0, 1, high_open=True)
        for name in ("dropout", "attention_dropout", "activation_dropout", "projection_dropout"):
            _check("model", self, name, 0, 1, high_open=True, optional=True)


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
        _check("head", self, "lstm_layers", 1)
        _check("head", self, "lstm_hidden", 1)
        _check("head", self, "dropout", 0, 1, high_open=True)


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
            _check("schedule", self, name, 0, 1)
        if abs(self.warmup + self.hold + self.decay - 1.0) > 1e-6:
            raise ValueError("schedule.warmup + hold + decay must add up to 1")
        _check("schedule", self, "init_scale", 0, 1)
        _check("schedule", self, "final_scale", 0, 1, low_open=True)  # the decay is exponential: never 0


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
        _check("train", self, "head_only_steps", 0)
        _check("train", self, "max_utterance_s", 0)
        _check("train", self, "eval_every", 0)
        _check("train", self, "dev_max_utterances", 0)
        _check("train", self, "feature_cache_mb", 0)


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
            _check("augment", self, name, 0, 1)
        for name in ("noise_snr_db", "gain_db", "pitch_semitones"):
            _check_range("augment", self, name)
        _check_range("augment", self, "speed", 0, low_open=True)
        _check("augment", self, "speed_steps", 0)
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
class FinetuneConfig:
    data: str = ""  # --data: a folder written by `lowres prepare`
    split: str = "1h"  # --split: 10min | 1h | 10h | full (picks the manifest and the recipe)
    train_manifest: str = ""  # overrides data/manifests/{split}.jsonl
    dev_manifest: str = ""  # default data/manifests/dev.jsonl
    base: str = ""  # --base
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
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

    def __post_init__(self):
        _check("quantizer", self, "groups", 1)
        _check("quantizer", self, "entries", 1)
        _check("quantizer", self, "dim", 0)
        _check("quantizer", self, "final_dim", 0)


@dataclass(frozen=True)
class PretrainLossConfig:
    num_negatives: int = 100  # K distractors per masked frame, same utterance, other masked frames
    logit_temperature: float = 0.1
    diversity_weight: float = 0.1  # alpha
    feature_penalty: float = -1.0  # beta; -1 = 10 for group-norm (BASE-style) encoders, 0 for layer-norm
    feature_dropout: float = 0.1  # on the quantizer input (and the projected features)

    def __post_init__(self):
        _check("loss", self, "num_negatives", 1)
        _check("loss", self, "logit_temperature", 0, low_open=True)
        _check("loss", self, "diversity_weight", 0)
        _check("loss", self, "feature_penalty", 0, special={-1: "automatic"})
        _check("loss", self, "feature_dropout", 0, 1, high_open=True)


@dataclass(frozen=True)
class GumbelConfig:
    """Gumbel temperature: tau = max(start * decay^step, end); decay compressed to the run by default."""

    max: float = 2.0  # start for fresh heads
    min: float = 0.5  # floor (0.5 BASE, 0.1 LARGE in fairseq)
    decay: float = 0.0  # per update; 0 = (min/start)^(1/max_steps), i.e. the floor is reached at the end
    imported_start: float = 0.0  # start when the quantizer was imported (trained); 0 = 1.5 x min

    def __post_init__(self):
        _check("gumbel", self, "max", 0, low_open=True)
        _check("gumbel", self, "min", 0, low_open=True)
        if self.min > self.max:
            raise ValueError(f"gumbel.min ({self.min:g}) must not exceed gumbel.max ({self.max:g})")
        _check("gumbel", self, "decay", 0, 1, high_open=True)
        _check("gumbel", self, "imported_start", 0)


@dataclass(frozen=True, kw_only=True)
class AdaptModelConfig(SharedModelConfig):
    layerdrop: float = 0.05  # continued pretraining keeps more layers than fine-tuning's 0.1 (the
    #                          continued-pretraining literature's value, as fairseq's base_10h fine-tuning)
    min_spans: int = 2  # at least this many masked spans per utterance (the contrastive loss needs masked frames)
    feature_grad_mult: float = 0.1  # scales the gradient reaching a trained conv encoder (0.1 in BASE)

    def __post_init__(self):
        super().__post_init__()
        _check("model", self, "min_spans", 0)
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
        _check("optim", self, "warmup", 0, 1)
        _check("optim", self, "final_scale", 0, 1)


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
        _check("train", self, "heads_warmup_steps", 0, special={-1: "automatic"})
        _check("train", self, "crop_min_s", 0, low_open=True)
        _check("train", self, "crop_max_s", 0, low_open=True)
        if self.crop_max_s < self.crop_min_s:
            raise ValueError("train.crop_max_s must be >= crop_min_s")
        _check("train", self, "collapse_patience", 1)


@dataclass(frozen=True)
class UnitsConfig:
    """``[units]``: the targets of ``--objective hubert``, discovered inside adapt (lowres/units.py)."""

    targets: str = "auto"  # mfcc | layer:N | auto: MFCC for a random-init base, the middle transformer layer
    #                        of a pretrained one (HuBERT's iteration 1 and iteration 2: layer 6 of 12)
    clusters: int = 0  # K; 0 = HuBERT's: 100 for MFCC, 500 for a layer
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
        _check("units", self, "clusters", 2, special={0: "automatic"})
        _check("units", self, "max_frames", 1000)
        _check("units", self, "passes", 1)
        _check("units", self, "batch_frames", 100)
        _check("units", self, "memory_mb", 0)


@dataclass(frozen=True)
class HubertConfig:
    """``[hubert]``: the prediction heads and loss of ``--objective hubert`` (HuBERT BASE's values)."""

    final_dim: int = 0  # final_proj output and unit embeddings; 0 = 256 for models up to 768 wide, else 768
    unmasked_weight: float = 0.0  # cross-entropy weight of unmasked frames (masked frames weigh 1)

    def __post_init__(self):
        _check("hubert", self, "final_dim", 0)
        _check("hubert", self, "unmasked_weight", 0)


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


def flat_keys(d: dict, prefix: str = "") -> dict:
    """``{"optim": {"lr": 1e-3}}`` → ``{"optim.lr": 1e-3}``: a nested dict by dotted key."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def merge_nested(base: dict, updates: dict) -> dict:
    """A copy of nested dict ``base`` with ``updates`` laid over it (sections merged key by key)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_nested(out[key], value)
        else:
            out[key] = value
    return out


def _layer(cfg, updates: dict, source: str):
    """``merge`` that says where a refused value came from (a recipe file, --set, a flag)."""
    try:
        return merge(cfg, updates)
    except LowresError as exc:
        raise LowresError(f"{str(exc).rstrip('.')} (given in {source}).") from None


def resolve_adapt(recipe: str | Path | None = None, sets: tuple[str, ...] = (), flags: dict | None = None,
                  objective: str = AdaptConfig.objective) -> AdaptConfig:
    """Defaults ← recipes/adapt.toml (← recipes/adapt_hubert.toml for ``objective`` hubert) ← ``--recipe`` ←
    ``--set`` ← explicit flags."""
    if objective not in OBJECTIVES:
        raise LowresError(f"--objective must be one of auto, {', '.join(OBJECTIVES)}, not {objective!r}.")
    cfg = _layer(AdaptConfig(objective=objective), load_recipe("adapt"), "the shipped recipe adapt.toml")
    if objective == "hubert":
        cfg = _layer(cfg, load_recipe("adapt_hubert"), "the shipped recipe adapt_hubert.toml")
    if recipe:
        cfg = _layer(cfg, load_recipe(recipe), f"the recipe {recipe}")
    cfg = _layer(cfg, parse_sets(sets), "--set")
    return _layer(cfg, nest_flags(flags), "the command line's flags")


SPLITS = LABELED_SPLITS  # --split of finetune: the labeled splits that prepare writes


def shipped_recipe(split: str) -> str:
    """The shipped recipe of a split: ``finetune_{split}``; ``full`` shares the 10h one."""
    return {"full": "finetune_10h"}.get(split, f"finetune_{split}")


def resolve_finetune(split: str, recipe: str | Path | None = None, sets: tuple[str, ...] = (),
                     flags: dict | None = None) -> FinetuneConfig:
    """Defaults ← the split's shipped recipe ← ``--recipe`` ← ``--set`` ← explicit flags (dotted keys)."""
    if split not in SPLITS:
        raise LowresError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}.")
    shipped = shipped_recipe(split)
    cfg = _layer(FinetuneConfig(), load_recipe(shipped), f"the shipped recipe {shipped}.toml")
    if recipe:
        cfg = _layer(cfg, load_recipe(recipe), f"the recipe {recipe}")
    cfg = _layer(cfg, parse_sets(sets), "--set")
    return _layer(merge(cfg, {"split": split}), nest_flags(flags), "the command line's flags")


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
    "field",
    "from_dict",
    "load_recipe",
    "merge",
    "parse_sets",
    "recipe_dir",
    "to_dict",
]
