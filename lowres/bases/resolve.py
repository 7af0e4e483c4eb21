"""Every ``--base`` resolved to a :class:`~lowres.model.backbone.LoadedBackbone`, and the weights lowres runs trained.

:func:`load_base` takes what a user gives: a random-init architecture name (model/backbone.py's
``RANDOM_CONFIGS``), a shipped base (shipped.py), a torchaudio bundle name (bundles.py), a local Hugging Face
folder (huggingface.py) or a lowres run folder (:func:`load_encoder`: its encoder). A run folder is also where a
recogniser comes from (:func:`load_run`, for eval, transcribe and export), rebuilt over its own base
(:func:`rebuild_base`). These call each other (a run's base may be another run), so they live in one module; the
record and layout of a run folder are lowres/runs.py's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lowres import LowresError
from lowres.bases.bundles import NAMED_BUNDLES, load_bundle
from lowres.bases.huggingface import load_huggingface
from lowres.bases.shipped import incomplete_shipped, load_shipped, shipped_info, shipped_names
from lowres.bases.whisper import NAMES as WHISPER_NAMES
from lowres.model.backbone import RANDOM_CONFIGS, BackboneSpec, LoadedBackbone, build_model, fingerprint
from lowres.runs import RUN_CONFIG, RUN_VOCAB, RUN_WEIGHTS, RunRecord, is_run, read_run, recorded_base_path


def available_names() -> list[str]:
    """Every name ``--base`` knows: the shipped bases, torchaudio bundles, Whisper's sizes and random-init
    architectures."""
    return sorted(shipped_names()) + sorted(NAMED_BUNDLES) + list(WHISPER_NAMES) + sorted(RANDOM_CONFIGS)


def load_base(base: str, seed: int = 0) -> LoadedBackbone:
    """What ``--base`` names, loaded: a lowres run folder (its encoder), a random-init architecture (seeded), a
    torchaudio bundle, a shipped base, Whisper by name (``whisper-base``, ``openai/whisper-small``), or a local
    Hugging Face folder (wav2vec 2.0, HuBERT, WavLM or Whisper), CTranslate2 Whisper folder or openai-whisper
    ``.pt`` file."""
    if not base:
        raise LowresError(f"No --base given. Use a name ({', '.join(available_names())}), a Hugging Face folder "
                          "or a lowres run folder.")
    path = Path(base)
    if path.is_dir() and is_run(path):
        return load_encoder(path)
    if base in RANDOM_CONFIGS:
        return random_init(base, seed)
    if base in NAMED_BUNDLES:
        return load_bundle(base)
    if base in shipped_names():
        return load_shipped(base)
    if base in WHISPER_NAMES or base.startswith("openai/whisper-"):
        from lowres.bases.whisper import load_named, load_whisper

        return load_named(base) if base in WHISPER_NAMES else load_whisper(base, base)
    if path.suffix == ".pt" and path.is_file():
        from lowres.bases.whisper import load_whisper

        return load_whisper(path)
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file() and _is_prepared(path):
            unlabeled = " (or its unlabeled.jsonl as adapt's --unlabeled)" if (path / "unlabeled.jsonl").is_file() else ""
            raise LowresError(f"--base {path} is a prepared data folder (written by `lowres prepare`), not a model: "
                              f"pass it as --data {path}{unlabeled}. --base takes a model: a name such as "
                              "xls-r-300m, wav2vec2-base or tiny, a Hugging Face folder or a lowres run folder.")
        if not config.is_file():
            raise LowresError(f"{path} has no config.json: it is neither a lowres run folder nor a Hugging Face "
                              "model folder.")
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise LowresError(f"{config} is not valid JSON: {exc}") from None
        from lowres.bases.whisper import is_whisper_folder, load_whisper

        if is_whisper_folder(path):
            return load_whisper(path)
        return load_huggingface(path, data)
    if path.suffix or "/" in base:
        raise LowresError(f"--base {base}: no such folder. Give a Hugging Face model folder, a lowres run folder, "
                          f"or a name: {', '.join(available_names())}.")
    import difflib

    broken = incomplete_shipped(base)
    if broken:
        raise LowresError(broken)
    close = difflib.get_close_matches(base, available_names(), n=2)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise LowresError(f"Unknown --base {base!r}.{hint} Known names: {', '.join(available_names())}; or pass a "
                      "Hugging Face folder or a lowres run folder.")


def random_init(name: str, seed: int) -> LoadedBackbone:
    """A random-init architecture of ``RANDOM_CONFIGS``, initialised as fairseq and transformers do, seeded."""
    import torch

    from lowres.model.backbone import reference_init

    spec = RANDOM_CONFIGS[name]
    torch.manual_seed(seed)
    model = build_model(spec)
    reference_init(model)
    return LoadedBackbone(model, spec, source=f"random initialisation ({name}, seed {seed})")


def _is_prepared(path: Path) -> bool:
    """Whether ``path`` is a folder `lowres prepare` wrote (a mistaken --base)."""
    from lowres.data.prepared import MANIFESTS, REPORT, VOCAB

    return (path / MANIFESTS).is_dir() and ((path / VOCAB).is_file() or (path / REPORT).is_file())


def default_objective(base: str) -> str:
    """``--objective auto``: HuBERT's masked prediction for HuBERT and WavLM bases (their own objective) and for
    a random initialisation (the contrastive objective does not learn from scratch at lowres's scale:
    benchmarks/README.md); wav2vec 2.0's for wav2vec 2.0 / XLS-R / MMS bases. Read from names and config
    files only, without loading weights."""
    if base in RANDOM_CONFIGS:
        return "hubert"
    if base in shipped_names():  # the objective it was trained with
        return shipped_info(base).get("objective", "hubert")
    if base in NAMED_BUNDLES:
        return "wav2vec2" if NAMED_BUNDLES[base][1] == "wav2vec2" else "hubert"
    if base in WHISPER_NAMES or base.startswith("openai/whisper-") or base.endswith(".pt"):
        return "hubert"  # Whisper has no codebook to continue
    folder = Path(base) if base else None
    if folder is None or not (folder / RUN_CONFIG).is_file():
        return "wav2vec2"
    from lowres.bases.whisper import is_whisper_folder

    if is_whisper_folder(folder):
        return "hubert"
    if is_run(folder):
        record = read_run(folder)
        if record.config.get("objective"):
            return record.config["objective"]
        return "wav2vec2" if record.backbone.get("family", "wav2vec2") == "wav2vec2" else "hubert"
    try:
        data = json.loads((folder / RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "wav2vec2"
    return "hubert" if data.get("model_type") in ("hubert", "wavlm") else "wav2vec2"


SMALL_ENCODER = 256  # narrower encoders fine-tune whole (LoRA's rank-8 adapters would hold too little of them)


def is_whisper_base(base: str | None) -> bool:
    """Whether ``base`` is Whisper's encoder (a name, a hub name, an openai-whisper ``.pt``, a Hugging Face or
    CTranslate2 Whisper folder, or a lowres run built on it), read from names, run records and config files
    only."""
    if not base:
        return False
    from lowres.bases.whisper import NAMES, is_whisper_folder

    path = Path(base)
    if path.is_dir() and is_run(path):
        return read_run(path).spec().family == "whisper"
    return base in NAMES or base.startswith("openai/whisper-") or path.suffix == ".pt" or (
        path.is_dir() and is_whisper_folder(path))


def finetune_method(base: str) -> tuple[str | None, str]:
    """lowres's fine-tuning method for ``base``: the recipe layered over the split's (None: the split recipe's
    LoRA alone) and why, in a sentence for the log. Read from names, run records and config files only."""
    if not base:
        return None, ""
    if base in RANDOM_CONFIGS:
        return None, (f"{base} is a random initialisation: the whole model trains (conv encoder included), without "
                      "LoRA or a head-only phase")
    path = Path(base)
    whisper = is_whisper_base(base)
    dim = None
    if path.is_dir() and is_run(path):
        dim = read_run(path).spec().embed_dim
    elif base in shipped_names():
        dim = int(shipped_info(base)["spec"]["arch"]["encoder_embed_dim"])
    elif path.is_dir() and (path / RUN_CONFIG).is_file() and not whisper:
        try:
            dim = json.loads((path / RUN_CONFIG).read_text(encoding="utf-8")).get("hidden_size")
        except (OSError, ValueError):
            dim = None
    if whisper:
        return "whisper", ("Whisper's encoder: LoRA + CTC with the settings that suit it on a CPU (20-s updates, "
                           "lr 1e-3, 5e-3 for the CTC layer, SpecAugment on the log-mel), recipes/whisper.toml")
    if dim is not None and int(dim) < SMALL_ENCODER:
        return "tiny_ssl", (f"a small encoder ({dim} wide): the whole model trains, the conv encoder above its lowest "
                            "3 layers too, as measured for the shipped tiny-ssl (LoRA's adapters would hold too little "
                            "of it), recipes/tiny_ssl.toml")
    return None, "LoRA adapters + CTC with the split's recipe, lowres's method for bases of wav2vec 2.0 BASE size and up"


# ---------------------------------------------------------------------------------------------------
# the base of a run, again


def locate_base(record: RunRecord, run: Path) -> str:
    """Where the run's base is now: a name as is; a recorded folder if it is still there (relative ones
    resolved against the run), else a folder beside the run whose weights have the recorded fingerprint
    (the base was moved or renamed with the run); otherwise a message saying which base is missing."""
    base = record.base
    path = recorded_base_path(base, run)
    if path is None:
        return base
    if path.is_dir():
        return str(path)
    found = _base_by_fingerprint(record, Path(run), path.name)
    if found is not None:
        return str(found)
    recorded = f" (recorded as {base})" if str(path) != base else ""
    raise LowresError(
        f"{run} was trained from the base {path}{recorded}, which is not there any more. Put that folder back, or "
        f"copy it next to the run (into {Path(run).resolve().parent}/): lowres finds a moved base there by its "
        f"fingerprint ({record.base_fingerprint or 'none recorded'}).")


def _base_by_fingerprint(record: RunRecord, run: Path, name: str) -> Path | None:
    """A folder next to ``run`` (the one with the base's old name first) whose weights have the recorded
    fingerprint. Lowres runs with another architecture are skipped unread; other folders are loaded."""
    if not record.base_fingerprint:
        return None
    here = run.resolve()
    candidates = [p for p in sorted(here.parent.iterdir()) if p.is_dir() and p != here and (p / RUN_CONFIG).is_file()]
    candidates.sort(key=lambda p: p.name != name)
    for folder in candidates:
        if is_run(folder):
            try:
                if read_run(folder).backbone.get("arch") != record.backbone.get("arch"):
                    continue
            except LowresError:
                continue
        try:
            if load_base(str(folder)).fingerprint == record.base_fingerprint:
                return folder
        except Exception:  # noqa: BLE001 - a folder that does not load is simply not the base
            continue
    return None


def rebuild_base(record: RunRecord, seed: int, run: Path) -> LoadedBackbone:
    """The base of the run in ``run``, rebuilt: random-init architectures from the saved spec (their weights are
    all in the run), everything else from where the base is now (:func:`locate_base`), checked against its
    fingerprint."""
    import torch

    spec = record.spec()
    if not spec.pretrained:
        if spec.name in RANDOM_CONFIGS and RANDOM_CONFIGS[spec.name] == spec:
            return load_base(spec.name, seed=seed)  # the initial weights a new run had (a restart from update 0)
        torch.manual_seed(seed)
        return LoadedBackbone(build_model(spec), spec, source=f"architecture of {spec.name}")
    where = locate_base(record, run)
    loaded = load_base(where, seed=seed)
    want = record.base_fingerprint
    if want and loaded.fingerprint and loaded.fingerprint != want:
        raise LowresError(
            f"The base {where} is not the one the run {run} was trained on (its weights changed since). "
            "Use the same base checkpoint, or fine-tune again."
        )
    return loaded


# ---------------------------------------------------------------------------------------------------
# what runs trained: recognisers and encoders


def _read_weights(run: Path, path: Path, kind: str) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise LowresError(f"{run} has no {path.name}: the {kind} run has not saved a model yet (did it finish? "
                          f"`lowres {kind} --resume` continues it).")
    return load_file(str(path))


@dataclass
class LoadedRun:
    model: object  # model.ctc.CTCModel (or model.weighted.WeightedLayerCTC), in eval mode, on the device
    vocab: object  # data.vocab.Vocab
    config: object  # config.FinetuneConfig
    record: RunRecord

    @property
    def meta(self) -> dict:
        """The run's config.json as a dict."""
        return self.record.to_json()


def load_run(run: str | Path, device="cpu", merge: bool = True, weights: Path | None = None) -> LoadedRun:
    """A fine-tuned recogniser from its run folder (LoRA merged into the base for fast inference). The
    recogniser is the one its recorded ``head.kind`` names; the base is rebuilt and the saved weights (what the
    run trained) loaded over it."""
    from lowres.config import FinetuneConfig
    from lowres.data.vocab import Vocab
    from lowres.model.backbone import encoder_module
    from lowres.model.build import build_recogniser
    from lowres.model.lora import has_lora, merge_lora

    run = Path(run)
    record = read_run(run)
    if record.kind != "finetune":
        raise LowresError(f"{run} is a lowres {record.kind} run, not a fine-tuned recogniser. Fine-tune it "
                          f"first: lowres finetune --base {run} ...")
    cfg = record.typed_config(FinetuneConfig)
    vocab = Vocab.load(run / RUN_VOCAB, units=record.vocab_units or "grapheme")
    loaded = rebuild_base(record, cfg.train.seed, run)
    model, _ = build_recogniser(cfg, len(vocab), loaded)
    path = weights or run / RUN_WEIGHTS
    missing, unexpected = model.load_state_dict(_read_weights(run, path, "finetune"), strict=False)
    if unexpected:
        raise LowresError(f"{path} does not fit the model rebuilt from {run / RUN_CONFIG}: unexpected weights "
                          f"{unexpected[:3]}...")
    del missing  # everything not saved comes from the base
    if merge and has_lora(model):
        merge_lora(encoder_module(model.backbone, loaded.spec))
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad = False
    return LoadedRun(model, vocab, cfg, record)


def load_encoder(run: Path) -> LoadedBackbone:
    """The encoder of a run folder, as a base for another run (``--base RUN``): a finetune run's backbone
    (LoRA merged, CTC head dropped), or an adapt run's adapted backbone with its mask embedding and
    pretraining heads."""
    run = Path(run)
    record = read_run(run)
    heads: dict = {}
    if record.kind == "finetune":
        recogniser = load_run(run, merge=True)
        backbone = recogniser.model.backbone
        mask = getattr(recogniser.model, "mask_emb", None)  # a weighted head's run has none (its base is unchanged)
        mask = mask.detach().clone() if mask is not None else None
    elif record.kind != "adapt":
        raise LowresError(f"{run}: a lowres {record.kind!r} run holds no encoder lowres can continue from.")
    else:
        path = run / RUN_WEIGHTS
        state = _read_weights(run, path, "adapt")
        backbone = build_model(record.spec())
        missing, _ = backbone.load_state_dict(
            {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, strict=False)
        if missing:
            raise LowresError(f"{path} lacks backbone weights {missing[:3]}...: not a complete adapt deliverable.")
        if record.config.get("objective", "wav2vec2") == "wav2vec2":  # a codebook the next adapt can import
            heads = {k.removeprefix("heads."): v for k, v in state.items() if k.startswith("heads.")}
        mask = state["mask_emb"]
    spec = record.spec()
    spec = BackboneSpec(spec.family, spec.arch, spec.normalize_waveform, True, str(run.resolve()))
    for p in backbone.parameters():
        p.requires_grad = True
    backbone.train()
    return LoadedBackbone(backbone, spec, mask, heads, fingerprint(backbone), source=f"lowres {record.kind} run {run}")


def encoder_state(backbone, mask_emb, heads) -> dict:
    """An adapt run's deliverable (model.safetensors): ``backbone.*`` (LoRA merged), ``heads.*`` (the
    pretraining heads) and ``mask_emb``; :func:`load_encoder` reads it back."""
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"heads.{k}": v for k, v in heads.state_dict().items()})
    state["mask_emb"] = mask_emb.detach()
    return state
