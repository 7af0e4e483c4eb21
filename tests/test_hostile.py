"""Hostile input: every kind of broken file and transcript, in every layout ``prepare`` reads, and hostile
manifest lines for ``finetune`` and ``eval``.

The contract: ``prepare`` finishes, every bad item is in ``rejects.jsonl`` with a reason, every good item is
kept with the right text; when nothing at all is usable (no utterance kept, no unlabeled piece), or the corpus
cannot be read (a Common Voice TSV without its columns), it stops with exit status 2 and one paragraph (the
rejects summary, an example per reason, naming the corpus or the --unlabeled folder) and leaves --out as it
was; ``finetune``/``eval`` stop at the first line that is not a valid record (exit
status 2, the file and line number and the reason, no traceback) and skip and count clips whose audio
cannot be decoded; checkpoints are never unpickled into arbitrary objects.

Decisions for the ambiguous cases (what a Kaldi / ESPnet / fairseq / Hugging Face user would expect):

- 8-bit, 24-bit, float and double WAV, 8 kHz and 48 kHz, 6 channels: kept (decoded, resampled to 16 kHz and
  averaged to mono when loaded; the manifest keeps the file's own sample rate).
- a file whose ending lies about its format (FLAC named .wav, WAV named .mp3, Ogg named .flac, MP3 named
  .wav): kept, the content decides (libsndfile reads the header, as sox and soundfile do).
- UTF-8 byte-order mark, CRLF line ends, UTF-16 files with their byte-order mark: read as text.
- control characters inside a transcript (BEL, VT, FF, DEL, NEL, a lone CR): word breaks, item kept.
  A NUL byte is different: the line is not UTF-8 text (UTF-16 without a mark?) and is rejected.
- right-to-left marks, BOMs and emoji inside a transcript: dropped, item kept; a transcript of emoji or
  punctuation only has nothing left and is rejected (empty_transcript).
- a dev/test transcript in a script never seen in training: kept (it is the test set's truth); the report's
  coverage shows the symbols outside the vocabulary.
- duplicate utterance ids: the first is kept, every later one rejected (duplicate_id, naming the first).
- paths with spaces and non-ASCII (even non-UTF-8) names: kept.
- symlink loops, dangling links, folders and FIFOs named like audio: rejected with a reason.
- an audio file beside a LibriSpeech transcript file that no line names, a wav.scp entry with no transcript:
  rejected (no_transcript). A Kaldi audio file that is missing or broken is blamed on its wav.scp line.
- a file that holds no audio (text, an HTML page, an image), whatever its ending: rejected as not audio, with
  what it holds; libsndfile's mpg123 notes ("Illegal Audio-MPEG-Header") never reach stderr.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from factory import signal, write_audio
from typer.testing import CliRunner

from lowres import LowresError
from lowres.cli import app
from lowres.config import PrepareConfig
from lowres.data import audio as audio_mod
from lowres.data.manifest import ManifestError, Utterance, json_line, read_manifest, write_manifest
from lowres.data.prepare import prepare
from lowres.data.text import normalize

runner = CliRunner()
SPLITS = ("full", "dev", "test")


# --------------------------------------------------------------------------------------------------
# helpers


def rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").split("\n") if line]


def kept(out: Path) -> dict[str, Utterance]:
    """Every utterance of the prepared folder (full, dev and test together), by id."""
    rows = [u for name in SPLITS for u in read_manifest(out / "manifests" / f"{name}.jsonl")]
    ids = [u.id for u in rows]
    assert len(ids) == len(set(ids)), "an utterance is in two manifests"
    return {u.id: u for u in rows}


class Expected:
    """What a hostile corpus must give: kept ids with their text, and rejects by (source, line) or id."""

    def __init__(self):
        self.kept: dict[str, str] = {}
        self.rejected: list[tuple[str, str | None, str]] = []  # (source suffix, id or None, reason)

    def check(self, out: Path) -> None:
        got = rejects(out)
        for r in got:
            assert r["reason"] and r["detail"] and r["source"], r
        for source, uid, reason in self.rejected:
            hits = [r for r in got if r["source"].endswith(source) and (uid is None or r["id"] == uid)]
            assert hits, f"no reject for {source} {uid}: {[(r['source'], r['id'], r['reason']) for r in got]}"
            assert reason in {r["reason"] for r in hits}, (source, uid, reason, hits)
        assert len(got) == len(self.rejected), sorted((r["source"], r["reason"]) for r in got)
        utts = kept(out)
        assert set(utts) == set(self.kept), (sorted(set(utts) - set(self.kept)), sorted(set(self.kept) - set(utts)))
        for uid, text in self.kept.items():
            assert utts[uid].text == text, (uid, utts[uid].text, text)
            assert Path(utts[uid].audio_filepath).is_file()
        report = json.loads((out / "prepare_report.json").read_text(encoding="utf-8"))
        assert report["rejects"]["total"] == len(got)


def wav(path: Path, seconds: float = 0.6, rate: int = 16000, channels: int = 1, subtype: str | None = None,
        fmt: str | None = None, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, signal(seconds, rate, seed, channels), rate, subtype=subtype, format=fmt)
    return path


def cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def with_bad_sample(path: Path, value: float, subtype: str) -> None:
    x = signal(0.6)
    x[100] = value
    sf.write(path, x, 16000, subtype=subtype)


# --------------------------------------------------------------------------------------------------
# the table layout: every broken file, every hostile transcript


def hostile_table(root: Path) -> tuple[Path, Expected]:
    """A TSV corpus (UTF-8 BOM, CRLF line ends, a Latin-1 and a cp1252 line) with a split column."""
    root.mkdir(parents=True)
    exp = Expected()
    lines: list[bytes] = [b"path\ttext\tspeaker\tsplit"]

    def row(name: str, text: str, speaker: str = "s0", split: str = "train") -> int:
        lines.append("\t".join((name, text, speaker, split)).encode("utf-8"))
        return len(lines)  # its line number

    def good(name: str, text: str, expected: str, speaker: str = "s0", split: str = "train") -> None:
        row(name, text, speaker, split)
        exp.kept[name.rsplit(".", 1)[0]] = expected

    def bad(name: str, text: str, reason: str, uid: str | None = None) -> None:
        line = row(name, text)
        exp.rejected.append((f"t.tsv:{line}", uid if uid is not None else name.rsplit(".", 1)[0], reason))

    # plain good clips, spread over speakers
    for i in range(6):
        wav(root / f"good{i}.wav", 0.8 + 0.1 * i, seed=i)
        good(f"good{i}.wav", f"Habari yako {i}", f"habari yako {i}", speaker=f"s{i % 3}")
    # not errors: sample formats, rates, channels, lying endings, odd names
    wav(root / "u8.wav", subtype="PCM_U8")
    good("u8.wav", "maji", "maji")
    wav(root / "s24.wav", subtype="PCM_24")
    good("s24.wav", "maji", "maji")
    wav(root / "f32.wav", subtype="FLOAT")
    good("f32.wav", "maji", "maji")
    wav(root / "f64.wav", subtype="DOUBLE")
    good("f64.wav", "maji", "maji")
    wav(root / "r8k.wav", rate=8000)
    good("r8k.wav", "maji", "maji")
    wav(root / "r48k.flac", rate=48000)
    good("r48k.flac", "maji", "maji")
    wav(root / "six.wav", channels=6)
    good("six.wav", "maji", "maji")
    wav(root / "flac_named.wav", fmt="FLAC")
    good("flac_named.wav", "maji", "maji")
    wav(root / "wav_named.mp3", fmt="WAV")
    good("wav_named.mp3", "maji", "maji")
    wav(root / "ogg_named.flac", fmt="OGG")
    good("ogg_named.flac", "maji", "maji")
    wav(root / "mp3_named.wav", seconds=0.8, fmt="MP3")
    good("mp3_named.wav", "maji", "maji")
    wav(root / "with space.wav")
    good("with space.wav", "maji", "maji")
    wav(root / "ñandú 日本 ☃.wav")
    good("ñandú 日本 ☃.wav", "maji", "maji")
    # not errors: hostile transcripts that still hold words
    for name in ("bom", "ctrl", "cr", "rtl", "emoji", "digits"):
        wav(root / f"{name}.wav")
    good("bom.wav", "\ufeffmaji", "maji")
    good("ctrl.wav", "habari\x07 yako\x0b\x0cleo\x7f\x85", "habari yako leo")
    good("cr.wav", "habari\ryako", "habari yako")
    good("rtl.wav", "\u200fمرحبا\u200e بالعالم", "مرحبا بالعالم")
    good("emoji.wav", "habari 😀 yako 👩\u200d💻 🇰🇪", "habari yako")
    good("digits.wav", "maji 42", "maji 42")
    # held-out sets: the test transcript is in a script the training pool never shows
    wav(root / "dev1.wav")
    good("dev1.wav", "habari", "habari", speaker="d9", split="dev")
    wav(root / "cyrillic.wav")
    good("cyrillic.wav", "Привет мир", "привет мир", speaker="t9", split="test")

    # broken audio
    (root / "zero.wav").write_bytes(b"")
    bad("zero.wav", "maji", "empty_audio")
    cut(wav(root / "cut.wav", 1.0), 0.5)
    bad("cut.wav", "maji", "truncated_audio")
    cut(wav(root / "cut_flac.flac", 1.0, seed=3), 0.5)
    bad("cut_flac.flac", "maji", "truncated_audio")
    cut(wav(root / "header_only.wav"), 0.005)  # the header and 52 bytes of samples
    bad("header_only.wav", "maji", "truncated_audio")
    half_header = wav(root / "half_header.wav")
    half_header.write_bytes(half_header.read_bytes()[:30])
    bad("half_header.wav", "maji", "unreadable_audio")
    (root / "text.wav").write_text("this is not audio\n")
    bad("text.wav", "maji", "unreadable_audio")
    (root / "png.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    bad("png.wav", "maji", "unreadable_audio")
    with_bad_sample(root / "nan.wav", np.nan, "FLOAT")
    bad("nan.wav", "maji", "non_finite_audio")
    with_bad_sample(root / "inf.wav", np.inf, "DOUBLE")
    bad("inf.wav", "maji", "non_finite_audio")
    (root / "folder.wav").mkdir()
    bad("folder.wav", "maji", "unreadable_audio")
    os.mkfifo(root / "fifo.wav")  # opening it would block forever
    bad("fifo.wav", "maji", "unreadable_audio")
    os.symlink("loop_b.wav", root / "loop_a.wav")
    os.symlink("loop_a.wav", root / "loop_b.wav")
    bad("loop_a.wav", "maji", "unreadable_audio")
    os.symlink("nowhere.wav", root / "dangling.wav")
    bad("dangling.wav", "maji", "missing_audio")
    bad("missing.wav", "maji", "missing_audio")
    wav(root / "short.wav", 0.1)
    bad("short.wav", "maji", "too_short")
    wav(root / "long.wav", 41.0)
    bad("long.wav", "maji", "too_long")
    # transcripts with nothing to learn from
    for name in ("empty", "punct", "emoji_only", "too_much"):
        wav(root / f"{name}.wav", 0.3 if name == "too_much" else 0.6)
    bad("empty.wav", "", "empty_transcript")
    bad("punct.wav", "?!… «» -- ...", "empty_transcript")
    bad("emoji_only.wav", "😀👩\u200d💻🇰🇪", "empty_transcript")
    bad("too_much.wav", "maneno mengi sana " * 4, "transcript_too_long")
    # lines that are not records
    bad("good1.wav", "nakala", "duplicate_id", uid="good1")
    wav(root / "quote.wav")
    bad("quote.wav", '"habari yako', "bad_line", uid="")
    lines.append(b"only_two\tfields")
    exp.rejected.append((f"t.tsv:{len(lines)}", "", "bad_line"))
    lines.append(b"")  # a blank line is no record and no reject
    for raw in (b"nul.wav\thabari\x00yako", b"latin1.wav\tcaf\xe9 au lait", b"cp1252.wav\t\x93habari\x94"):
        lines.append(raw + b"\ts0\ttrain")
        exp.rejected.append((f"t.tsv:{len(lines)}", "", "bad_encoding"))

    path = root / "t.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    return path, exp


@pytest.fixture(scope="module")
def table_corpus(tmp_path_factory):
    return hostile_table(tmp_path_factory.mktemp("hostile") / "corpus")


def test_prepare_api_keeps_every_good_item_and_rejects_every_bad_one(table_corpus, tmp_path):
    path, exp = table_corpus
    out = tmp_path / "out"
    result = prepare(path, out)
    exp.check(out)
    utts = kept(out)
    # the manifest keeps the file's own rate; loading gives 16 kHz mono of the right length
    assert utts["r8k"].sample_rate == 8000 and utts["r48k"].sample_rate == 48000
    for uid in ("u8", "s24", "f32", "f64", "r8k", "r48k", "six", "mp3_named", "ñandú 日本 ☃"):
        u = utts[uid]
        wave = audio_mod.load(u.audio_filepath, u.offset, u.duration)
        assert wave.ndim == 1 and wave.dtype == np.float32 and np.isfinite(wave).all()
        assert abs(len(wave) - 16000 * u.duration) <= 16000 * 0.05, uid
    assert utts["cr"].raw_text == "habari\ryako"  # raw_text is the corpus's, byte for byte
    # the test set's unseen script is kept and reported as outside the vocabulary
    coverage = result.report["coverage"]["test"]
    assert coverage["oov_share"] == 1.0 and "п" in coverage["oov_symbols"]
    assert "п" not in json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    # every JSONL line written is one line for every reader (U+0085 in raw_text is escaped)
    for name in ["rejects.jsonl"] + [f"manifests/{s}.jsonl" for s in SPLITS]:
        text = (out / name).read_text(encoding="utf-8")
        assert len(text.splitlines()) == text.count("\n")
    details = " ".join(r["detail"] for r in rejects(out))
    assert "symbolic link loop" in details and "nowhere.wav, which does not exist" in details
    assert "id already used at" in details and "t.tsv:3" in details


def test_prepare_cli_on_the_hostile_corpus(table_corpus, tmp_path):
    """The real command in a fresh interpreter: exit 0, no traceback, same result as the API. The output
    folder's name looks like rich markup, which must be printed, not interpreted."""
    path, exp = table_corpus
    out = tmp_path / "out [/x] ñ"
    proc = subprocess.run([sys.executable, "-m", "lowres", "prepare", str(path), "--out", str(out)],
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    both = proc.stdout + proc.stderr
    assert proc.returncode == 0, both
    assert "Traceback" not in both
    assert f"rejected {len(exp.rejected)}" in both and "[/x]" in both
    exp.check(out)


# --------------------------------------------------------------------------------------------------
# the other layouts


def test_kaldi_hostile_data_folder(tmp_path):
    data = tmp_path / "data"
    train, test = data / "train", data / "test"
    exp = Expected()
    scp, text = [], []

    def bad(table: list[str], line: str, uid: str | None, reason: str) -> None:
        table.append(line)
        name = "wav.scp" if table is scp else "text"
        exp.rejected.append((f"train/{name}:{len(table)}", uid, reason))

    for i in range(8):
        wav(train / "audio" / f"k{i}.wav", 0.8, seed=i)
        scp.append(f"k{i} audio/k{i}.wav")
        text.append(f"k{i} Habari yako {i}")
        exp.kept[f"k{i}"] = f"habari yako {i}"
    wav(train / "audio" / "with space" / "k 8.wav")  # Kaldi: the path is the rest of the line
    scp.append("k8 audio/with space/k 8.wav")
    text.append("k8 maji")
    exp.kept["k8"] = "maji"
    bad(scp, "k1 audio/k0.wav", "k1", "duplicate_id")
    bad(scp, "k9 sox in.flac -t wav - |", "k9", "piped_wav_scp")
    bad(scp, "k10 raw.ark:1234", "k10", "unsupported_audio")
    wav(train / "audio" / "k11.wav")
    bad(scp, "k11 audio/k11.wav", "k11", "no_transcript")  # no line in text
    with_bad_sample(train / "audio" / "k12.wav", np.nan, "FLOAT")
    bad(scp, "k12 audio/k12.wav", "k12", "non_finite_audio")  # the audio file's fault: its wav.scp line
    bad(scp, "k16 audio/gone.wav", "k16", "missing_audio")  # listed, not on disk: its wav.scp line too
    wav(train / "audio" / "k14.wav")
    scp.append("k14 audio/k14.wav")
    text += ["k9 maji", "k10 maji", "k12 maji", "k16 maji"]  # reported on their wav.scp lines
    bad(text, "k1 nakala", "k1", "duplicate_id")
    bad(text, "k13 hakuna sauti", "k13", "missing_audio")  # not in wav.scp: the text line's fault
    bad(text, "k14", "k14", "empty_transcript")  # a key and no words
    spk = [f"k{i} s{i % 4}" for i in range(15)]
    train.mkdir(parents=True, exist_ok=True)
    (train / "wav.scp").write_text("\n".join(scp) + "\n", encoding="utf-8")
    (train / "text").write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(text) + "\r\n").encode() + b"k15 caf\xe9\r\n")
    exp.rejected.append((f"train/text:{len(text) + 1}", "", "bad_encoding"))
    (train / "utt2spk").write_text("\n".join(spk) + "\n", encoding="utf-8")

    # a test folder with segments, some of them broken
    wav(test / "rec.wav", 6.0, seed=9)
    (test / "wav.scp").write_text("rec rec.wav\n", encoding="utf-8")
    (test / "segments").write_text("t1 rec 0.0 1.0\nt2 rec 1.0 2.0\nt2 rec 2.0 3.0\nt3 rec nan 3.5\n"
                                   "t4 rec 5.0 9.0\nt5 rec 3.0 4.0\n", encoding="utf-8")
    (test / "text").write_text("t1 habari\nt2 yako\nt3 leo\nt4 kesho\n", encoding="utf-8")
    (test / "utt2spk").write_text("t1 x\nt2 x\nt3 x\nt4 x\n", encoding="utf-8")
    exp.kept.update({"t1": "habari", "t2": "yako"})
    exp.rejected += [("test/segments:3", "t2", "duplicate_id"), ("test/segments:4", "t3", "bad_segment"),
                     ("test/text:3", "t3", "missing_segment"), ("test/text:4", "t4", "segment_out_of_range"),
                     ("test/segments:6", "t5", "no_transcript")]
    out = tmp_path / "out"
    prepare(data, out)
    exp.check(out)


def test_librispeech_hostile_tree(tmp_path):
    root = tmp_path / "LibriSpeech"
    exp = Expected()

    def chapter(name: str, spk: str, n: int) -> tuple[Path, list[str]]:
        folder = root / name / spk / "100"
        ids = [f"{spk}-100-{k:04d}" for k in range(n)]
        for k, uid in enumerate(ids):
            wav(folder / f"{uid}.flac", 0.8, seed=int(spk) * 10 + k)
        return folder, ids

    # UTF-8 with a Latin-1 line, a NUL line, a line naming no audio, and an audio file no line names
    folder, ids = chapter("train-clean-5", "11", 4)
    wav(folder / "11-100-0099.flac")
    (folder / "11-100.trans.txt").write_bytes(
        f"{ids[0]} HABARI YAKO\n{ids[1]} MAJI\n".encode() + f"{ids[2]} CAF\xc9\n".encode("latin-1")
        + f"{ids[3]} HA\x00BARI\n".encode() + b"11-100-0042 HAKUNA\n")
    exp.kept.update({ids[0]: "habari yako", ids[1]: "maji"})
    exp.rejected += [("11-100.trans.txt:3", None, "bad_encoding"), ("11-100.trans.txt:4", None, "bad_encoding"),
                     ("11-100.trans.txt:5", "11-100-0042", "missing_audio"),
                     ("11-100-0099.flac", "11-100-0099", "no_transcript"),
                     (f"{ids[2]}.flac", ids[2], "no_transcript"), (f"{ids[3]}.flac", ids[3], "no_transcript")]
    # Notepad's "Unicode" (UTF-16 with its byte-order mark) and CRLF
    folder, ids = chapter("train-clean-5", "12", 3)
    (folder / "12-100.trans.txt").write_bytes("\r\n".join(f"{u} MTOTO WA {k}" for k, u in enumerate(ids))
                                              .encode("utf-16"))
    exp.kept.update({u: f"mtoto wa {k}" for k, u in enumerate(ids)})
    # the transcript file is a symlink loop: the file is reported, and its audio as untranscribed
    folder, ids = chapter("train-clean-5", "13", 2)
    os.symlink("13-100.trans.txt", folder / "13-100.trans.txt")
    exp.rejected += [("13-100.trans.txt:0", None, "unreadable_file")] + [
        (f"{u}.flac", u, "no_transcript") for u in ids]
    for name, spk in (("dev-clean", "21"), ("test-clean", "31")):
        folder, ids = chapter(name, spk, 2)
        (folder / f"{spk}-100.trans.txt").write_text("".join(f"{u} NENO\n" for u in ids), encoding="utf-8")
        exp.kept.update({u: "neno" for u in ids})
    out = tmp_path / "out"
    prepare(root, out)
    exp.check(out)


def test_commonvoice_hostile_tsv(tmp_path):
    root = tmp_path / "cv"
    exp = Expected()
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes"
    rows = {"train": [], "dev": [], "test": []}
    for split, n in (("train", 5), ("dev", 1), ("test", 1)):
        for i in range(n):
            name = f"{split}{i}.mp3"
            wav(root / "clips" / name, 0.8, seed=i, fmt="WAV")  # a WAV named .mp3: the content decides
            speaker = {"train": "a", "dev": "d", "test": "e"}[split] + str(i % 3)
            rows[split].append(f"{speaker}\t{name}\tHabari yako {i}.\t2\t0")
            exp.kept[f"{split}{i}"] = f"habari yako {i}"
    wav(root / "clips" / "quote.mp3", fmt="WAV")
    rows["train"].append('a1\tquote.mp3\t"Habari" alisema\t2\t0')  # quotes are literal in Common Voice
    exp.kept["quote"] = "habari alisema"
    wav(root / "clips" / "cr.mp3", fmt="WAV")
    rows["train"].append("a1\tcr.mp3\tmaji\rbaridi\t2\t0")
    exp.kept["cr"] = "maji baridi"
    rows["train"].append("a1\t\tmaji\t2\t0")
    exp.rejected.append((f"train.tsv:{len(rows['train']) + 1}", "", "bad_line"))
    for split, lines in rows.items():
        (root / f"{split}.tsv").write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    with open(root / "train.tsv", "ab") as f:
        f.write(b"a2\tlatin.mp3\tcaf\xe9\t2\t0\n")
    exp.rejected.append((f"train.tsv:{len(rows['train']) + 2}", "", "bad_encoding"))
    out = tmp_path / "out"
    prepare(root, out)
    exp.check(out)


def test_csv_and_jsonl_lines_that_are_not_records(tmp_path):
    for i in range(4):
        wav(tmp_path / f"a{i}.wav", seed=i)
    csv_path = tmp_path / "t.csv"
    csv_path.write_text('path,text,speaker\na0.wav,"habari, yako",s0\na1.wav,"habari\nyako",s1\n'
                        'a2.wav,maji,s2,extra\na3.wav,"ndiyo ""kabisa""",s3\n'
                        f'a2.wav,{"maji " * 40000},s2\n', encoding="utf-8")  # a field over csv's size limit
    out = tmp_path / "o1"
    prepare(csv_path, out)
    exp = Expected()
    exp.kept.update({"a0": "habari yako", "a3": "ndiyo kabisa"})
    # a line break inside quotes: lowres reads a record per line, so both halves are rejected, not cut short
    exp.rejected += [(f"t.csv:{k}", "", "bad_line") for k in (3, 4, 5, 7)]
    exp.check(out)
    assert any("quoted field is not closed" in r["detail"] for r in rejects(out))

    jsonl = tmp_path / "t.jsonl"
    good = [{"audio_filepath": f"a{i}.wav", "text": f"neno {i}", "speaker": f"s{i}"} for i in range(2)]
    lines = [json.dumps(r) for r in good] + [
        "this is not json", '["a2.wav", "maji"]', json.dumps({"audio_filepath": "a2.wav", "text": 42}),
        json.dumps({"text": "maji"}), "[" * 50000, "",
        json.dumps({"audio_filepath": "a3.wav", "text": "habari", "offset": 0.0, "duration": float("nan")})]
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "o2"
    prepare(jsonl, out)
    exp = Expected()
    exp.kept.update({"a0": "neno 0", "a1": "neno 1"})
    exp.rejected += [(f"t.jsonl:{k}", "", reason) for k, reason in
                     ((3, "bad_line"), (4, "bad_line"), (5, "bad_line"), (6, "bad_line"), (7, "bad_line"),
                      (9, "bad_segment"))]
    exp.check(out)


def _permissions_apply() -> bool:
    """False for root with CAP_DAC_OVERRIDE, which reads files whatever their permissions."""
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        os.chmod(f.name, 0)
        try:
            open(f.name, "rb").close()
        except PermissionError:
            return True
    return False


@pytest.mark.skipif(not _permissions_apply(), reason="this user reads files whatever their permissions (root)")
def test_files_without_read_permission_are_rejected(tmp_path):
    root = tmp_path / "LibriSpeech" / "train-clean"
    for spk in ("11", "12"):
        folder = root / spk / "100"
        for k in range(2):
            wav(folder / f"{spk}-100-000{k}.flac", seed=k)
        (folder / f"{spk}-100.trans.txt").write_text(f"{spk}-100-0000 HABARI\n{spk}-100-0001 MAJI\n")
    (root / "11" / "100" / "11-100-0001.flac").chmod(0)
    (root / "12" / "100" / "12-100.trans.txt").chmod(0)
    out = tmp_path / "out"
    prepare(root, out)
    exp = Expected()
    exp.kept["11-100-0000"] = "habari"
    exp.rejected += [("11-100.trans.txt:2", "11-100-0001", "unreadable_audio"),
                     ("12-100.trans.txt:0", None, "unreadable_file"),
                     ("12-100-0000.flac", "12-100-0000", "no_transcript"),
                     ("12-100-0001.flac", "12-100-0001", "no_transcript")]
    exp.check(out)


def test_a_corpus_with_nothing_usable_is_refused_and_writes_nothing(tmp_path):
    (tmp_path / "zero.wav").write_bytes(b"")
    path = tmp_path / "t.csv"
    path.write_text("path,text\nzero.wav,maji\nmissing.wav,maji\n", encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", str(path), "--out", str(out), "-q"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert text.startswith(f"error: Nothing usable: {path} gave no usable utterance. All 2 item(s) were rejected "
                           "(empty_audio 1, missing_audio 1), for example: "), text
    assert f"{path}:2: {tmp_path / 'zero.wav'}: zero.wav is an empty (zero-byte) file" in text
    assert f"{path}:3: audio file not found: {tmp_path / 'missing.wav'}" in text
    assert text.endswith("Nothing was written. Fix what these reasons point at (paths, columns, formats), then run "
                         "the command again."), text
    assert not out.exists()
    # --overwrite of a prepared folder: its earlier outputs stay as they were
    good = tmp_path / "good.csv"
    for i in range(6):
        wav(tmp_path / f"g{i}.wav", 0.8, seed=i)
    good.write_text("path,text,speaker\n" + "".join(f"g{i}.wav,maji,s{i % 3}\n" for i in range(6)), encoding="utf-8")
    prepare(good, out)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    result = runner.invoke(app, ["prepare", str(path), "--out", str(out), "--overwrite", "-q"])
    assert result.exit_code == 2 and "Nothing usable" in result.output, result.output
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_an_unlabeled_folder_with_nothing_usable_names_that_folder(tmp_path):
    unl = tmp_path / "radio"
    unl.mkdir()
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", "--unlabeled", str(unl), "--out", str(out), "-q"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert text.startswith(f"error: Nothing usable: --unlabeled {unl} holds no audio file; lowres reads "), text
    assert text.endswith("Nothing was written. Point --unlabeled at the folder that holds the recordings, then run "
                         "the command again."), text
    assert not out.exists()
    # files, none usable; called as `lowres adapt --unlabeled FOLDER` calls it (into the run's own data folder):
    # the message names the user's folder, never the folder lowres would have written
    (unl / "notes.txt").write_text("not audio")
    wav(unl / "short.wav", 0.5)
    (unl / "fake.mp3").write_text("not audio either\n" * 10)
    run_data = tmp_path / "run" / "data"
    with pytest.raises(LowresError) as exc:
        prepare(None, run_data, PrepareConfig(), unlabeled=unl)
    text = " ".join(str(exc.value).split())
    assert text.startswith(f"Nothing usable: --unlabeled {unl} gave no usable piece of audio. All 2 item(s) were "
                           "rejected (too_short 1, unreadable_audio 1), for example: "), text
    assert "short.wav: 0.50s is shorter than segment_min_s=2.0" in text and "fake.mp3 is not audio" in text
    assert str(run_data) not in text and not run_data.exists()
    # only non-audio files: said so
    (unl / "short.wav").unlink()
    (unl / "fake.mp3").unlink()
    result = runner.invoke(app, ["prepare", "--unlabeled", str(unl), "--out", str(out), "-q"])
    assert f"--unlabeled {unl} holds no audio file (1 file(s) with other endings skipped)" in " ".join(
        result.output.split()), result.output


def test_one_part_with_nothing_usable_is_a_warning_when_the_other_part_is(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,text\nmissing.wav,maji\n", encoding="utf-8")
    good = tmp_path / "good.csv"
    for i in range(6):
        wav(tmp_path / f"g{i}.wav", 0.8, seed=i)
    good.write_text("path,text,speaker\n" + "".join(f"g{i}.wav,maji,s{i % 3}\n" for i in range(6)), encoding="utf-8")
    unl, empty = tmp_path / "unl", tmp_path / "empty"
    write_audio(unl / "a.wav", 5.0)
    empty.mkdir()
    result = runner.invoke(app, ["prepare", str(bad), "--unlabeled", str(unl), "--out", str(tmp_path / "o1"), "-q"])
    assert result.exit_code == 0, result.output
    warnings = json.loads((tmp_path / "o1" / "prepare_report.json").read_text(encoding="utf-8"))["warnings"]
    assert f"{bad} gave no usable utterance (every item is in rejects.jsonl): only the unlabeled audio was " \
           "prepared" in warnings, warnings
    assert any("only 0 of the 1 labeled utterances" in w and "missing_audio (1)" in w for w in warnings)
    assert not any("training pool is empty" in w for w in warnings)
    result = runner.invoke(app, ["prepare", str(good), "--unlabeled", str(empty), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 0, result.output
    assert f"warning: --unlabeled {empty} gave no usable piece of audio: `lowres adapt` has nothing to train on " \
           "from it" in " ".join(result.output.split())


def test_a_fake_mp3_is_not_audio_and_mpg123_stays_off_stderr(tmp_path, capfd):
    """libsndfile's mpg123 decoder says "File does not exist ... (possibly a pipe?)" about a text file named
    .mp3, and prints "Note: Illegal Audio-MPEG-Header" (from C, on file descriptor 2). Many such files, probed
    in parallel threads: one reason each, nothing on stderr, and stderr works again afterwards."""
    root = tmp_path / "c"
    lines = ["path,text,speaker"]
    for i in range(6):
        wav(root / f"good{i}.wav", 0.8, seed=i)
        lines.append(f"good{i}.wav,maji,s{i % 3}")
    mp3 = wav(root / "real.mp3", 1.0, fmt="MP3")
    (root / "junk_after.mp3").write_bytes(mp3.read_bytes() + b"garbage" * 500)  # decodes; mpg123 warns
    lines += ["real.mp3,maji,s0", "junk_after.mp3,maji,s1"]
    for i in range(12):
        (root / f"fake{i}.mp3").write_text("<html>404 Not Found</html>\n" * 20)
        lines.append(f"fake{i}.mp3,maji,s2")
    (root / "png.mp3").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    lines.append("png.mp3,maji,s2")
    (root / "t.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    capfd.readouterr()
    out = tmp_path / "out"
    prepare(root / "t.csv", out, PrepareConfig(workers=4))
    err = capfd.readouterr().err
    assert "MPEG" not in err and "Note:" not in err and "Warning:" not in err, err
    got = {r["id"]: r for r in rejects(out)}
    assert set(got) == {f"fake{i}" for i in range(12)} | {"png"}
    for i in range(12):
        r = got[f"fake{i}"]
        assert r["reason"] == "unreadable_audio" and "possibly a pipe" not in r["detail"], r
        assert f"fake{i}.mp3 is not audio: it holds text (it starts '<html>404 Not Found</html>" in r["detail"]
    assert "png.mp3 is not audio: its content is in no audio format lowres reads" in got["png"]["detail"]
    assert {"real", "junk_after"} <= set(kept(out))
    os.write(2, b"stderr is back\n")
    assert capfd.readouterr().err == "stderr is back\n"


def test_quiet_stderr_is_counted_across_threads_and_undone_in_a_forked_child(capfd):
    import threading

    inside, leave = threading.Event(), threading.Event()

    def decode():
        with audio_mod.quiet_stderr():
            inside.set()
            leave.wait(10)

    worker = threading.Thread(target=decode)
    worker.start()
    inside.wait(10)
    with audio_mod.quiet_stderr():
        os.write(2, b"lost while quiet\n")
    os.write(2, b"still quiet: the other thread decodes\n")
    pid = os.fork()
    if pid == 0:  # a process forked meanwhile has its stderr
        os.write(2, b"child speaks\n")
        os._exit(0)
    os.waitpid(pid, 0)
    leave.set()
    worker.join()
    os.write(2, b"back\n")
    assert capfd.readouterr().err == "child speaks\nback\n"


def test_a_commonvoice_tsv_without_a_column_leaves_no_out(tmp_path):
    from factory import commonvoice

    cv = commonvoice(tmp_path / "cv")
    lines = (cv / "train.tsv").read_text(encoding="utf-8").splitlines()
    (cv / "train.tsv").write_text("\n".join("\t".join(line.split("\t")[:2]) for line in lines) + "\n",
                                  encoding="utf-8")
    out = tmp_path / "prepared" / "cv"
    result = runner.invoke(app, ["prepare", str(cv), "--out", str(out), "-q"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert " ".join(result.output.split()) == (f"error: {cv / 'train.tsv'} has no 'sentence' column (found: "
                                               "client_id, path). A Common Voice TSV has client_id, path and "
                                               "sentence columns.")
    assert not out.exists() and not out.parent.exists()


def test_unlabeled_folder_with_hostile_files(tmp_path):
    corpus = tmp_path / "c.csv"
    for i in range(4):
        wav(tmp_path / f"a{i}.wav", seed=i)
    corpus.write_text("path,text,speaker,split\n" + "".join(
        f"a{i}.wav,neno,s{i},{('train', 'train', 'dev', 'test')[i]}\n" for i in range(4)), encoding="utf-8")
    unl = tmp_path / "unl"
    write_audio(unl / "good.wav", 3.0)
    latin = os.fsencode(unl) + b"/caf\xe9.wav"  # a file name that is not UTF-8
    sf.write(latin, signal(2.5), 16000)
    (unl / "zero.wav").write_bytes(b"")
    os.symlink("loop2.wav", unl / "loop1.wav")
    os.symlink("loop1.wav", unl / "loop2.wav")
    os.mkfifo(unl / "fifo.flac")
    (unl / "notes.wav").write_text("not audio")
    (unl / "folder.wav").mkdir()
    out = tmp_path / "out"
    prepare(corpus, out, PrepareConfig(), unlabeled=unl)
    pieces = {p.id: p for p in read_manifest(out / "unlabeled.jsonl")}
    assert set(pieces) == {"good", "caf\udce9"}
    assert len(audio_mod.load(pieces["caf\udce9"].audio_filepath)) == 40000
    reasons = {r["id"]: r["reason"] for r in rejects(out)}
    assert reasons == {"zero": "empty_audio", "loop1": "unreadable_audio", "loop2": "unreadable_audio",
                       "fifo": "unreadable_audio", "notes": "unreadable_audio"}


# --------------------------------------------------------------------------------------------------
# text and manifests, as units


@pytest.mark.parametrize("raw, expected", [
    ("\ufeffHabari yako", "habari yako"),
    ("habari\x07 yako\x0b\x0cleo\x7f\x85", "habari yako leo"),
    ("habari\ryako\tleo", "habari yako leo"),
    ("\u200fمرحبا\u200e بالعالم", "مرحبا بالعالم"),
    ("habari 😀 yako 👩\u200d💻 🇰🇪", "habari yako"),
    ("👩\u200d💻", ""),  # a lone zero width joiner is no word
    ("\u200d\u0301a", "a"),
    ("می\u200cخواهم", "می\u200cخواهم"),  # ZWNJ between letters is spelling (Persian)
    ("?!… «» -- ...", ""),
    (" \u3000 ", ""),
])
def test_normalize_hostile_transcripts(raw, expected):
    assert normalize(raw) == expected


def test_manifest_lines_stay_lines(tmp_path):
    u = Utterance("a\u2028b", str(tmp_path / "a.wav"), 1.0, "x", raw_text="p\x85q\u2029r\x1c")
    line = json_line({"id": u.id, "raw_text": u.raw_text})
    assert len(line.splitlines()) == 1 and json.loads(line)["raw_text"] == u.raw_text
    write_manifest(tmp_path / "m.jsonl", [u])
    assert [v.raw_text for v in read_manifest(tmp_path / "m.jsonl")] == [u.raw_text]


GOOD_LINE = '{"audio_filepath": "a.wav", "duration": 1.0, "text": "habari"}'

# (what, the fourth line of a manifest, what the error must say)
BAD_MANIFEST_LINES = [
    ("not JSON", b"this is not json", "not a JSON object"),
    ("JSON but a list", b'["a.wav", 1.0, "habari"]', "expected a JSON object, found list"),
    ("no audio path", b'{"duration": 1.0, "text": "habari"}', "missing 'audio_filepath'"),
    ("no duration", b'{"audio_filepath": "a.wav", "text": "habari"}', "'duration' must be a positive number"),
    ("negative duration", b'{"audio_filepath": "a.wav", "duration": -2, "text": "habari"}', "found -2"),
    ("NaN duration", b'{"audio_filepath": "a.wav", "duration": NaN, "text": "habari"}', "found nan"),
    ("duration as text", b'{"audio_filepath": "a.wav", "duration": "1.0", "text": "habari"}', "found '1.0'"),
    ("negative offset", b'{"audio_filepath": "a.wav", "duration": 1, "offset": -1, "text": "x"}', "'offset'"),
    ("text not a string", b'{"audio_filepath": "a.wav", "duration": 1.0, "text": ["habari"]}', "'text'"),
    ("empty text", b'{"audio_filepath": "a.wav", "duration": 1.0, "text": " "}', "empty 'text'"),
    ("bad sample rate", b'{"audio_filepath": "a.wav", "duration": 1.0, "text": "x", "sample_rate": "16k"}',
     "'sample_rate'"),
    ("nested too deeply", b"[" * 50000, "nested too deeply"),
    ("not UTF-8", b'{"audio_filepath": "a.wav", "duration": 1.0, "text": "caf\xe9"}', "not UTF-8"),
]


def hostile_manifest(folder: Path, bad: bytes, name: str = "m.jsonl") -> Path:
    """Line 1 good (after a UTF-8 BOM), line 2 blank, line 3 good (CRLF), line 4 bad, line 5 good."""
    path = folder / name
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_LINE.encode() + b"\n\n" + GOOD_LINE.encode() + b"\r\n" + bad + b"\n"
                     + GOOD_LINE.encode() + b"\n")
    return path


@pytest.mark.parametrize("what, bad, message", BAD_MANIFEST_LINES, ids=[c[0] for c in BAD_MANIFEST_LINES])
def test_read_manifest_names_file_line_and_reason(tmp_path, what, bad, message):
    path = hostile_manifest(tmp_path, bad)
    with pytest.raises(ManifestError) as info:
        list(read_manifest(path, require_text=True))
    assert f"{path}:4: " in str(info.value) and message in str(info.value), str(info.value)


# --------------------------------------------------------------------------------------------------
# finetune and eval on hostile manifests (one tiny run, reused)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A prepared folder and a 1-update tiny run, trained on a manifest with a missing and a NaN clip (which
    it must skip and count)."""
    root = tmp_path_factory.mktemp("ft")
    rows = [{"audio": f"w{i}.wav", "text": ("habari yako", "maji leo", "kesho jua")[i % 3],
             "speaker": "t0" if i >= 6 else f"s{i % 3}", "split": "test" if i >= 6 else "train"} for i in range(8)]
    for i in range(8):
        wav(root / f"w{i}.wav", 1.2, seed=i)
    with open(root / "c.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "text", "speaker", "split"])
        w.writeheader()
        w.writerows(rows)
    res = runner.invoke(app, ["prepare", str(root / "c.csv"), "--out", str(root / "prep"), "-q",
                              "--dev-fraction", "0"])
    assert res.exit_code == 0, res.output
    train = root / "prep" / "manifests" / "hostile_train.jsonl"  # beside full.jsonl: its relative paths hold
    with_bad_sample(root / "nan.wav", np.nan, "FLOAT")
    extra = [{"audio_filepath": str(root / "gone.wav"), "duration": 1.0, "text": "maji"},
             {"audio_filepath": str(root / "nan.wav"), "duration": 0.6, "text": "maji"}]
    train.write_text((root / "prep" / "manifests" / "full.jsonl").read_text(encoding="utf-8")
                     + "".join(json.dumps(r) + "\n" for r in extra), encoding="utf-8")
    res = runner.invoke(app, ["finetune", "--data", str(root / "prep"), "--split", "full", "--base", "tiny",
                              "--out", str(root / "run"), "--max-steps", "1", "--set", f"train_manifest={train}",
                              "--set", "train.batch_seconds=30", "--set", "train.accumulate=1",
                              "--set", "train.num_workers=0", "--quiet"])
    assert res.exit_code == 0, res.output
    return root


def test_finetune_skips_and_counts_clips_it_cannot_decode(run):
    summary = json.loads((run / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["unreadable_clips"] == 2, summary
    log = (run / "run" / "train.log").read_text(encoding="utf-8")
    assert "gone.wav" in log and "nan.wav" in log


@pytest.mark.parametrize("what, bad, message", BAD_MANIFEST_LINES[:4] + BAD_MANIFEST_LINES[-1:],
                         ids=[c[0] for c in BAD_MANIFEST_LINES[:4] + BAD_MANIFEST_LINES[-1:]])
def test_eval_stops_at_a_bad_manifest_line(run, tmp_path, what, bad, message):
    path = hostile_manifest(tmp_path, bad)
    res = runner.invoke(app, ["eval", "--model", str(run / "run"), "--manifest", str(path), "-q"])
    assert res.exit_code == 2, res.output
    assert f"{path}:4: " in res.output and message in res.output and "Traceback" not in res.output
    assert res.output.strip().count("\n\n") == 0  # one paragraph


def test_finetune_stops_at_a_bad_manifest_line(run, tmp_path):
    path = hostile_manifest(tmp_path, b"this is not json")
    res = runner.invoke(app, ["finetune", "--data", str(run / "prep"), "--split", "full", "--base", "tiny",
                              "--out", str(tmp_path / "r"), "--max-steps", "1", "--set", f"train_manifest={path}",
                              "--set", "train.num_workers=0", "--quiet"])
    assert res.exit_code == 2, res.output
    assert f"{path}:4: not a JSON object" in res.output and "Traceback" not in res.output


def test_eval_skips_and_counts_audio_it_cannot_decode(run, tmp_path):
    test = list(read_manifest(run / "prep" / "manifests" / "test.jsonl"))
    rows = [{"audio_filepath": u.audio_filepath, "duration": u.duration, "text": u.text} for u in test]
    rows += [{"audio_filepath": str(tmp_path / "gone.wav"), "duration": 1.0, "text": "maji"},
             {"audio_filepath": str(run / "nan.wav"), "duration": 0.6, "text": "maji"},
             {"audio_filepath": test[0].audio_filepath, "duration": 1.0, "text": "Привет, мир!"}]  # outside vocab
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    res = runner.invoke(app, ["eval", "--model", str(run / "run"), "--manifest", str(path), "--out",
                              str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    assert "2 utterance(s) could not be decoded" in res.output and "Traceback" not in res.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["num_utterances"] == len(test) + 1 and metrics["failed_utterances"] == 2
    assert any("gone.wav" in f for f in metrics["failures"]) and any("nan.wav" in f for f in metrics["failures"])
    hyps = [json.loads(line) for line in (tmp_path / "e" / "hyps.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(h["reference"] == "привет мир" for h in hyps)  # scored: unknown letters count as errors

    gone = tmp_path / "gone.jsonl"
    gone.write_text(json.dumps(rows[len(test)]) + "\n", encoding="utf-8")
    res = runner.invoke(app, ["eval", "--model", str(run / "run"), "--manifest", str(gone), "-q"])
    assert res.exit_code == 2 and "None of the 1 utterances" in res.output and "Traceback" not in res.output


# --------------------------------------------------------------------------------------------------
# checkpoints are never unpickled into arbitrary objects


class _Payload:
    """Unpickling this creates a folder: a stand-in for any code a crafted checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_checkpoint_with_pickled_code_is_refused_and_not_run(tmp_path):
    import torch

    from lowres.train.checkpoint import load_checkpoint, save_checkpoint

    folder = save_checkpoint(tmp_path / "run", 1, {"w": torch.zeros(3)}, {"step": 1, "rng": torch.ones(2)}, {})
    weights, state, meta = load_checkpoint(folder)
    assert meta["step"] == 1 and state["step"] == 1 and weights["w"].shape == (3,)

    marker = tmp_path / "payload-ran"
    torch.save({"step": 1, "optimizer": _Payload(marker)}, folder / "trainer.pt")
    torch.load(folder / "trainer.pt", weights_only=False)  # the payload is live: plain unpickling runs it
    assert marker.is_dir()
    marker.rmdir()
    with pytest.raises(LowresError, match="cannot be read"):
        load_checkpoint(folder)
    assert not marker.exists()


def test_resume_from_a_poisoned_checkpoint_is_a_clear_error(run, tmp_path):
    import torch

    from lowres.train.checkpoint import latest_checkpoint

    copy = tmp_path / "run"
    shutil.copytree(run / "run", copy)
    ckpt = latest_checkpoint(copy)
    marker = tmp_path / "payload-ran"
    torch.save({"optimizer": _Payload(marker)}, ckpt / "trainer.pt")
    res = runner.invoke(app, ["finetune", "--resume", "--out", str(copy), "--data", str(run / "prep"), "--quiet"])
    assert res.exit_code == 2, res.output
    assert "cannot be read" in res.output and "Traceback" not in res.output and not marker.exists()


def test_no_unpickling_anywhere_in_the_package():
    """Every torch.load passes weights_only=True, numpy never allows pickles, and nothing calls a
    pickle-based loader (pickle, dill, joblib, cloudpickle, marshal, shelve)."""
    loaders = {"pickle", "_pickle", "dill", "joblib", "cloudpickle", "marshal", "shelve"}
    package = Path(__file__).resolve().parent.parent / "lowres"
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.module in loaders:
                assert not {a.name for a in node.names} & {"load", "loads", "Unpickler", "open"}, where
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            flags = {k.arg: k.value for k in node.keywords}
            assert not (owner in loaders and node.func.attr in ("load", "loads", "Unpickler", "open")), where
            if owner == "torch" and node.func.attr == "load":
                flag = flags.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, where
            if owner in ("np", "numpy") and node.func.attr == "load":
                flag = flags.get("allow_pickle")
                assert flag is None or (isinstance(flag, ast.Constant) and flag.value is False), where


# --------------------------------------------------------------------------------------------------
# the run folder and checkpoints


def test_poisoned_checkpoint_message_is_one_paragraph_and_gives_no_unsafe_advice(tmp_path):
    import torch

    from lowres.train.checkpoint import load_checkpoint, save_checkpoint

    folder = save_checkpoint(tmp_path / "run", 1, {"w": torch.zeros(3)}, {"step": 1}, {})
    torch.save({"optimizer": _Payload(tmp_path / "payload-ran")}, folder / "trainer.pt")
    with pytest.raises(LowresError) as info:
        load_checkpoint(folder)
    message = str(info.value)
    assert str(folder) in message and "\n" not in message and "weights_only` set to `False" not in message


def test_a_bad_manifest_leaves_the_run_folder_untouched(run, tmp_path):
    path = hostile_manifest(tmp_path, b"this is not json")
    out = tmp_path / "r"
    res = runner.invoke(app, ["finetune", "--data", str(run / "prep"), "--split", "full", "--base", "tiny",
                              "--out", str(out), "--max-steps", "1", "--set", f"train_manifest={path}", "--quiet"])
    assert res.exit_code == 2
    assert not out.exists() or not any(out.iterdir())


def test_scorer_worst_list_survives_repeated_ids_with_equal_errors():
    # Two manifest lines may name the same audio (hence the same id) and score the same errors; the
    # worst-utterance heap must not fall back to comparing the row dicts.
    from lowres.evaluate import Scorer
    scorer = Scorer(keep_worst=2)
    for ref in ("maji safi", "maji safi", "maji safi"):
        scorer.add("same", ref, "maji")
    worst = scorer.worst()
    assert len(worst) == 2 and all(r["id"] == "same" and r["word_errors"] == 1 for r in worst)
