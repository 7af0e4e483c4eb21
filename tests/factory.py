"""Shared test helpers, the one module test files import helpers from (never from each other).

Synthetic corpora in every layout ``prepare`` reads (tones and noise, deterministic, no network), tiny
Hugging Face checkpoints, and the CLI runner with the settings that keep a real training run to seconds.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

runner = CliRunner()

# finetune settings under which the random "tiny" model learns tone "speech" (tone_table) in a few dozen updates
TONE_LEARNER = ["--lr", 2e-3, "--set", "train.batch_seconds=40", "--set", "train.accumulate=1", "--set",
                "train.num_workers=0", "--set", "model.mask_prob=0", "--set", "model.mask_channel_prob=0"]
# --set values that keep a real finetune run on a tiny model and corpus to a few seconds
# finetune's fast settings; method=none: the tests' tiny Hugging Face base stands for a BASE-size model, trained
# with the split recipe's LoRA (by its width alone lowres would pick the small-encoder method, recipes/tiny_ssl.toml)
FAST = ["--set", "train.batch_seconds=20", "--set", "train.accumulate=2", "--set", "train.num_workers=0",
        "--set", "train.log_every=1", "--set", "method=none", "--quiet"]


def invoke(*args):
    """``lowres ARGS`` in this process (typer's CliRunner); every argument goes through ``str``."""
    from lowres.cli import app

    return runner.invoke(app, [str(a) for a in args])


def prepared_corpus(root: Path, n: int = 30, speakers: int = 6) -> Path:
    """``lowres prepare`` of a :func:`table` corpus of ``n`` clips: root/corpus.csv, root/wavs/ -> root/prep."""
    table(root / "corpus.csv", n=n, speakers=speakers)
    res = invoke("prepare", root / "corpus.csv", "--out", root / "prep", "-q")
    assert res.exit_code == 0, res.output
    return root / "prep"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def hf_base(folder: Path, model_type: str = "wav2vec2") -> Path:
    """A tiny *pretrained-looking* Hugging Face checkpoint written by transformers itself."""
    import torch
    import transformers

    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                  conv_dim=(32, 32, 32, 32, 32, 32, 32), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                  conv_kernel=(10, 3, 3, 3, 3, 2, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                  feat_extract_norm="layer", do_stable_layer_norm=True, vocab_size=32)
    torch.manual_seed(0)
    if model_type == "wav2vec2":
        cfg = transformers.Wav2Vec2Config(codevector_dim=32, proj_codevector_dim=32, num_codevectors_per_group=8,
                                          **common)
        model = transformers.Wav2Vec2ForPreTraining(cfg)
    elif model_type == "hubert":
        model = transformers.HubertModel(transformers.HubertConfig(**common))
    else:
        model = transformers.WavLMModel(transformers.WavLMConfig(**common))
    model.save_pretrained(folder)
    return folder

WORDS = ("habari", "ng'ombe", "kitabu", "maji", "shule", "rafiki", "chakula", "asante", "nyumba", "mtoto",
         "jua", "mvua", "barabara", "kesho", "leo")


def signal(duration_s: float, sample_rate: int = 16000, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Speech-like test signal: a few tone bursts with pauses, plus a little noise. Shape (T,) or (T, C)."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sample_rate))
    t = np.arange(n) / sample_rate
    envelope = (np.sin(2 * np.pi * 1.5 * t + rng.uniform(0, 6)) > -0.3).astype(np.float32)
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * t) * envelope
    x = x + 0.01 * rng.standard_normal(n)
    x = x.astype(np.float32)
    if channels > 1:
        x = np.stack([x * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)
    return x


def sentence(rng: random.Random, n_words: int | None = None) -> str:
    n = n_words or rng.randint(2, 5)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_audio(path: Path, duration_s: float, sample_rate: int = 16000, seed: int = 0, channels: int = 1,
                subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), signal(duration_s, sample_rate, seed, channels), sample_rate, subtype=subtype)
    return path


def librispeech_set(root: Path, name: str, speakers: list[str], per_speaker: int = 3, seed: int = 0,
                    ending: str = ".flac", upper: bool = True) -> list[tuple[str, str]]:
    """root/name/spk/chap/spk-chap-NNNN.flac + spk-chap.trans.txt; returns (id, text) pairs."""
    rng = random.Random(seed)
    pairs = []
    for spk in speakers:
        chap = "100"
        folder = root / name / spk / chap
        lines = []
        for k in range(per_speaker):
            uid = f"{spk}-{chap}-{k:04d}"
            text = sentence(rng)
            write_audio(folder / f"{uid}{ending}", rng.uniform(2.0, 5.0), seed=rng.randrange(1 << 30))
            lines.append(f"{uid} {text.upper() if upper else text}")
            pairs.append((uid, text))
        (folder / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return pairs


def commonvoice(root: Path, n_train: int = 12, n_dev: int = 4, n_test: int = 4, seed: int = 0) -> Path:
    rng = random.Random(seed)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    header = ["client_id", "path", "sentence", "up_votes", "down_votes"]
    k = 0
    validated = []
    for split, n, spk_base in (("train", n_train, "a"), ("dev", n_dev, "d"), ("test", n_test, "t")):
        rows = []
        for i in range(n):
            name = f"common_voice_sw_{k:05d}.mp3"
            k += 1
            write_audio(root / "clips" / name, rng.uniform(2.0, 4.0), sample_rate=48000 if i % 2 else 32000,
                        seed=rng.randrange(1 << 30))
            rows.append([f"{spk_base}{i % 3}", name, sentence(rng).capitalize() + "!", "2", "0"])
        with open(root / f"{split}.tsv", "w", encoding="utf-8", newline="") as f:
            f.write("\t".join(header) + "\n")
            for row in rows:
                f.write("\t".join(row) + "\n")
        validated += rows
    with open(root / "validated.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for row in validated:
            f.write("\t".join(row) + "\n")
    return root


def kaldi(root: Path, n: int = 12, seed: int = 0, segments: bool = False, prefix: str = "spk") -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    wav_lines, text_lines, spk_lines, seg_lines = [], [], [], []
    if segments:
        write_audio(root / "audio" / "long.wav", 2.5 * n + 1, seed=1)
        wav_lines.append(f"rec1 {root / 'audio' / 'long.wav'}")
    for i in range(n):
        uid = f"{prefix}{i % 4}-utt{i:03d}"
        if segments:
            seg_lines.append(f"{uid} rec1 {2.5 * i:.2f} {2.5 * i + 2.4:.2f}")
        else:
            write_audio(root / "audio" / f"{uid}.wav", rng.uniform(2.0, 4.0), seed=i)
            wav_lines.append(f"{uid} audio/{uid}.wav")
        text_lines.append(f"{uid} {sentence(rng)}")
        spk_lines.append(f"{uid} {prefix}{i % 4}")
    (root / "wav.scp").write_text("\n".join(wav_lines) + "\n")
    (root / "text").write_text("\n".join(text_lines) + "\n")
    (root / "utt2spk").write_text("\n".join(spk_lines) + "\n")
    if segments:
        (root / "segments").write_text("\n".join(seg_lines) + "\n")
    return root


def table(path: Path, n: int = 12, kind: str = "csv", seed: int = 0, speakers: int = 4) -> Path:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rel = f"wavs/utt{i:03d}.wav"
        write_audio(path.parent / rel, rng.uniform(2.0, 4.0), seed=i)
        rows.append({"audio_filepath": rel, "text": sentence(rng), "speaker": f"s{i % speakers}",
                     "duration": 0.0})
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["audio_filepath", "text", "speaker"],
                               delimiter="\t" if kind == "tsv" else ",", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return path


LETTERS = "abcdefghijklmnopqrstuvwxyz'"


def tone_speech(text: str, sample_rate: int = 16000, seed: int = 0, letter_s: float = 0.08) -> np.ndarray:
    """A learnable stand-in for speech: each letter is a tone burst of its own pitch, a space is a pause.
    A tiny model learns to read it in a few dozen updates, so tests can check that training really fits."""
    rng = np.random.default_rng(seed)
    pieces = [np.zeros(int(0.1 * sample_rate), np.float32)]
    for ch in text:
        if ch == " ":
            pieces.append(np.zeros(int(0.12 * sample_rate), np.float32))
            continue
        k = LETTERS.index(ch) if ch in LETTERS else len(LETTERS)
        n = int(letter_s * sample_rate)
        t = np.arange(n) / sample_rate
        f = 200.0 * 2 ** (k / 7)
        burst = 0.3 * np.sin(2 * np.pi * f * t) * np.hanning(n)
        pieces.append(burst.astype(np.float32))
        pieces.append(np.zeros(int(0.02 * sample_rate), np.float32))
    pieces.append(np.zeros(int(0.1 * sample_rate), np.float32))
    x = np.concatenate(pieces)
    return (x + 0.003 * rng.standard_normal(len(x))).astype(np.float32)


def tone_table(path: Path, n: int = 20, seed: int = 0, words: tuple[str, ...] = ("abc", "dog", "ego", "bad", "cab")
               ) -> Path:
    """A CSV corpus of :func:`tone_speech` clips of 1–3 words."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        name = f"tones/t{i:03d}.wav"
        (path.parent / "tones").mkdir(exist_ok=True)
        sf.write(path.parent / name, tone_speech(text, seed=seed * 1000 + i), 16000, subtype="PCM_16")
        rows.append({"audio": name, "text": text, "speaker": f"s{i % 3}"})
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "text", "speaker"])
        w.writeheader()
        w.writerows(rows)
    return path


def tone_recordings(root: Path, n: int = 12) -> Path:
    """``n`` 3-5 s recordings of tone "speech" (:func:`tone_speech` of random word sequences) in ``root``: an
    unlabeled folder for adapt."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(n):
        text = " ".join(rng.choice(("abc", "dog", "ego", "bad", "cab")) for _ in range(rng.randint(7, 11)))
        sf.write(root / f"rec{i:02d}.wav", tone_speech(text, seed=i), 16000)
    return root


def invoke_stopped_after(step: int, *args):
    """``invoke(*args)`` of a training command whose process stops (KeyboardInterrupt, exit 130) right after
    its step-``step`` checkpoint is written: a kill at a known point, for exact-resume tests."""
    import lowres.train.loop as loop

    real = loop.save_checkpoint

    def stopped(run, at, *a, **k):
        path = real(run, at, *a, **k)
        if at == step:
            raise KeyboardInterrupt
        return path

    loop.save_checkpoint = stopped
    try:
        return invoke(*args)
    finally:
        loop.save_checkpoint = real


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same result: identical deliverable weights and identical metrics.jsonl rows
    (apart from the wall-clock fields): what an exact resume promises."""
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    strip = ("elapsed_s", "audio_s_per_s", "eval_s")
    ra = [{k: v for k, v in r.items() if k not in strip} for r in read_jsonl(a / "metrics.jsonl")]
    rb = [{k: v for k, v in r.items() if k not in strip} for r in read_jsonl(b / "metrics.jsonl")]
    assert ra == rb


WHISPER_DIMS = dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, decoder_layers=1,
                    decoder_attention_heads=4, decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=1500,
                    max_target_positions=448)
WHISPER_LETTERS = "abcdefghijklmnopqrstuvwxyz "


def tiny_whisper(folder: Path, tokenizer: bool = False) -> Path:
    """A random Whisper written by transformers (a Hugging Face folder); with ``tokenizer``, a tokenizer of
    letters and Whisper's special tokens, so that its own decoder can run (the flow and the files, not words)."""
    import tokenizers
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.WhisperConfig(**WHISPER_DIMS)
    transformers.WhisperForConditionalGeneration(config).save_pretrained(folder)
    if tokenizer:
        letters = {c: i for i, c in enumerate(WHISPER_LETTERS)}
        specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|nl|>", "<|transcribe|>", "<|notimestamps|>"]
        vocab = {**letters, **{t: len(letters) + i for i, t in enumerate(specials)}}
        tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="a"))
        tok.add_special_tokens(specials)
        tok.save(str(folder / "tokenizer.json"))
    return folder
