"""The synthetic corpus builder (eSpeak NG through espeakng-loader): determinism, held-out speakers and
sentences, the layout prepare reads, real speech. Corpora are tiny (about a minute and a half each)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from lowres import LowresError
from lowres.cli import app
from lowres.synth import build_corpus
from lowres.synth.corpus import VARIANTS, make_speakers
from lowres.synth.lexicon import MIN_WORDS, load_lexicon

runner = CliRunner()
TINY = dict(hours=0.01, dev_hours=0.003, test_hours=0.003, unlabeled_hours=0.008, speakers=6)


def _table(root: Path) -> list[dict]:
    with open(root / "labeled" / "corpus.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "sw"
    return build_corpus(out, seed=7, workers=1, noise=0.5, **TINY)


def test_layout_and_report(corpus):
    out = corpus.out
    rows = _table(out)
    assert list(rows[0]) == ["id", "audio", "text", "speaker", "split"]
    assert {r["split"] for r in rows} == {"train", "dev", "test"}
    for r in rows:
        assert (out / "labeled" / r["audio"]).is_file()
        assert 3 <= len(r["text"].split()) <= 12
    assert len({r["id"] for r in rows}) == len(rows)
    assert sorted(p.name for p in (out / "labeled" / "wavs").iterdir()) == sorted(f"{r['id']}.wav" for r in rows)
    assert list((out / "unlabeled").glob("*.wav"))
    report = json.loads((out / "synth_report.json").read_text())
    assert report["seed"] == 7 and report["language"]["code"] == "sw"
    assert "CC BY 3.0" in report["lexicon"]["source"] and report["lexicon"]["words"] >= 2000
    for split, target in (("train", 0.01), ("dev", 0.003), ("test", 0.003), ("unlabeled", 0.008)):
        assert report["splits"][split]["hours"] >= target  # the shortest run of files reaching the target


def test_heldout_speakers_and_sentences(corpus):
    rows = _table(corpus.out)
    speakers = {s: {r["speaker"] for r in rows if r["split"] == s} for s in ("train", "dev", "test")}
    unl = [r for r in corpus.rows if r["split"] == "unlabeled"]
    unl_speakers = {r["speaker"] for r in unl}
    assert speakers["dev"] and speakers["test"] and unl_speakers
    assert not speakers["dev"] & (speakers["train"] | speakers["test"] | unl_speakers)
    assert not speakers["test"] & (speakers["train"] | unl_speakers)
    for path in (corpus.out / "unlabeled").iterdir():
        assert path.name.split("_")[0] in speakers["train"]
    texts = {s: [r["text"] for r in rows if r["split"] == s] for s in ("train", "dev", "test")}
    unl_sentences = [t for r in unl for t in r["sentences"]]
    everything = texts["train"] + texts["dev"] + texts["test"] + unl_sentences
    assert len(set(everything)) == len(everything)  # no sentence is spoken twice, so dev/test are held out


def test_heldout_voices_are_never_reused():
    cast = make_speakers(2 * len(VARIANTS), seed=3)  # more speakers than voices: train voices are shared
    held = {s.variant for s in cast if s.split != "train"}
    assert held and not held & {s.variant for s in cast if s.split == "train"}
    assert len({s.id for s in cast}) == len(cast)
    assert {s.gender for s in cast if s.split == "dev"} == {"f", "m"}


def test_audio_is_speech_at_16k(corpus):
    rows = _table(corpus.out)
    for r in rows[:8]:
        info = sf.info(str(corpus.out / "labeled" / r["audio"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        wave, _ = sf.read(str(corpus.out / "labeled" / r["audio"]), dtype="float32")
        words = len(r["text"].split())
        assert 0.15 * words < info.duration < 1.5 * words + 1.0
        assert np.sqrt(np.mean(wave**2)) > 0.01 and np.abs(wave).max() < 1.0
        # speech has pauses: quiet 20 ms frames next to loud ones
        frames = wave[: len(wave) // 320 * 320].reshape(-1, 320)
        energy = np.sqrt((frames**2).mean(axis=1))
        assert energy.max() > 10 * np.percentile(energy, 10)


def test_deterministic_for_a_seed_whatever_the_workers(corpus, tmp_path):
    again = build_corpus(tmp_path / "again", seed=7, workers=2, noise=0.5, **TINY)
    assert _files(again.out) == _files(corpus.out)
    other = build_corpus(tmp_path / "other", seed=8, workers=1, noise=0.5, **TINY)
    assert [r["text"] for r in _table(other.out)] != [r["text"] for r in _table(corpus.out)]
    a = sf.read(str(corpus.out / "labeled" / _table(corpus.out)[0]["audio"]))[0]
    b = sf.read(str(other.out / "labeled" / _table(other.out)[0]["audio"]))[0]
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_prepare_reads_it(corpus, tmp_path):
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["prepare", str(corpus.corpus), "--unlabeled", str(corpus.unlabeled), "--lang", "sw",
                                 "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    rows = _table(corpus.out)

    def ids(name):
        return {json.loads(line)["id"] for line in (out / name).read_text().splitlines()}

    assert ids("manifests/dev.jsonl") == {r["id"] for r in rows if r["split"] == "dev"}
    assert ids("manifests/test.jsonl") == {r["id"] for r in rows if r["split"] == "test"}
    assert ids("manifests/full.jsonl") == {r["id"] for r in rows if r["split"] == "train"}
    assert ids("unlabeled.jsonl")
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["rejects"]["total"] == 0
    first = json.loads((out / "manifests" / "dev.jsonl").read_text().splitlines()[0])
    assert first["text"] == next(r["text"] for r in rows if r["id"] == first["id"])


def test_word_lists(tmp_path):
    sw = load_lexicon("sw")
    assert len(sw.words) >= 2000 and len(set(sw.words)) == len(sw.words)
    assert all(w == w.lower() and w.replace("'", "").isalpha() for w in sw.words)
    text = tmp_path / "words.txt"
    body = " ".join(f"Neno{i:03d}" for i in range(5)) + " 2024 Hello, world! " + " ".join(
        f"w{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(MIN_WORDS))
    text.write_text("# a comment line\n" + body + "\n", encoding="utf-8")
    user = load_lexicon("xx", text)
    assert "hello" in user.words and "world" in user.words and "2024" not in user.words
    assert not any(any(c.isdigit() for c in w) for w in user.words)
    text.write_text("only a few words here\n", encoding="utf-8")
    with pytest.raises(LowresError, match="distinct usable words"):
        load_lexicon("xx", text)
    with pytest.raises(LowresError, match="--words"):
        load_lexicon("tn")


def test_cli(tmp_path):
    listed = runner.invoke(app, ["synth", "--list-languages"])
    assert listed.exit_code == 0 and "sw\tSwahili" in listed.output
    out = tmp_path / "cli"
    ok = runner.invoke(app, ["synth", "--out", str(out), "--hours", "0.002", "--unlabeled-hours", "0",
                             "--speakers", "3", "--workers", "1", "--seed", "1"])
    assert ok.exit_code == 0, ok.output
    assert "lowres prepare" in ok.output and (out / "labeled" / "corpus.tsv").is_file()
    assert not (out / "unlabeled").exists()
    cases = [
        (["synth", "--out", str(out)], "--overwrite"),
        (["synth", "--out", str(tmp_path / "a"), "--lang", "swa"], "no language"),
        (["synth", "--out", str(tmp_path / "b"), "--lang", "tn"], "--words"),
        (["synth", "--out", str(tmp_path / "c"), "--speakers", "2"], "at least 3"),
        (["synth", "--out", str(tmp_path / "d"), "--noise", "2"], "probability"),
        (["synth", "--out", str(tmp_path / "e"), "--hours", "0"], "--hours"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
    again = runner.invoke(app, ["synth", "--out", str(out), "--hours", "0.002", "--unlabeled-hours", "0",
                                "--speakers", "3", "--workers", "1", "--seed", "1", "--overwrite", "-q"])
    assert again.exit_code == 0, again.output


def test_speak_sentences_speaks_the_text_in_every_voice_deterministically(tmp_path):
    from lowres.synth.corpus import speak_sentences

    text = ["habari ya asubuhi", "karibu sana", "asante"]
    rows = speak_sentences(tmp_path / "a", "sw", text, 0.004, seed=3, speakers=4, workers=1)
    assert sum(r["duration_s"] for r in rows) >= 0.004 * 3600
    assert len(rows) > len(text) and {r["text"] for r in rows} == set(text)  # the text again when short
    assert len({r["speaker"] for r in rows}) == 4  # every voice speaks
    for r in rows:
        wave, sr = sf.read(str(tmp_path / "a" / f"{r['id']}.wav"))
        assert sr == 16000 and abs(len(wave) / sr - r["duration_s"]) < 0.01 and np.abs(wave).max() > 0.05
    again = speak_sentences(tmp_path / "b", "sw", text, 0.004, seed=3, speakers=4, workers=2)
    assert again == rows and _files(tmp_path / "a") == _files(tmp_path / "b")
    with pytest.raises(LowresError, match="No sentences"):
        speak_sentences(tmp_path / "c", "sw", [], 0.01)
