"""prepare() on every corpus layout, with broken files and hostile transcripts."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from factory import commonvoice, kaldi, librispeech_set, table, write_audio

from lowres import LowresError
from lowres.config import PrepareConfig
from lowres.data.corpora import CorpusOptions, detect_format
from lowres.data.manifest import read_manifest
from lowres.data.prepare import prepare
from lowres.data.text import has_digit, load_rules
from lowres.data.vocab import Vocab


def manifest(out: Path, name: str):
    return list(read_manifest(out / "manifests" / f"{name}.jsonl"))


def rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def libri(tmp_path):
    root = tmp_path / "LibriSpeech"
    librispeech_set(root, "train-clean-5", ["11", "12", "13", "14"], per_speaker=4)
    librispeech_set(root, "dev-clean", ["21", "22"], per_speaker=2, seed=1)
    librispeech_set(root, "dev-other", ["23"], per_speaker=2, seed=3)
    librispeech_set(root, "test-clean", ["31", "32"], per_speaker=2, seed=2)
    return root


def test_librispeech_layout(libri, tmp_path):
    out = tmp_path / "out"
    result = prepare(libri, out)
    assert result.report["format"] == "librispeech"
    full, dev, test = manifest(out, "full"), manifest(out, "dev"), manifest(out, "test")
    assert len(full) == 16 and len(dev) == 6 and len(test) == 4
    assert {u.speaker for u in full} == {"11", "12", "13", "14"}
    assert len(manifest(out, "dev-clean")) == 4 and len(manifest(out, "dev-other")) == 2
    u = full[0]
    assert u.text == u.raw_text.lower() and Path(u.audio_filepath).is_file() and u.sample_rate == 16000
    row = json.loads((out / "manifests" / "full.jsonl").read_text().splitlines()[0])
    assert {"audio_filepath", "duration", "text", "id", "speaker", "offset", "sample_rate", "raw_text"} <= set(row)
    assert not Path(row["audio_filepath"]).is_absolute()
    vocab = Vocab.load(out)
    assert "'" in vocab and vocab.tokens[:3] == ("<pad>", "<unk>", "|")
    assert (out / "dict.ltr.txt").is_file() and rejects(out) == []
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["splits"]["10min"]["flag"].startswith("pool has only")
    assert report["coverage"]["dev"]["symbols"] > 0


def test_librilight_official_subsets(tmp_path):
    root = tmp_path / "librispeech_finetuning"
    expected = {"10min": set(), "1h": set(), "10h": set()}
    for k in range(6):
        pairs = librispeech_set(root / "1h" / str(k), "clean", [f"{100 + k}"], per_speaker=2, seed=k)
        for uid, _ in pairs:
            expected["1h"].add(uid)
            expected["10h"].add(uid)
            if k == 0:
                expected["10min"].add(uid)
    for uid, _ in librispeech_set(root / "9h", "clean", ["200", "201"], per_speaker=2, seed=9):
        expected["10h"].add(uid)
    librispeech_set(tmp_path / "LibriSpeech", "dev-clean", ["300"], per_speaker=2, seed=10)
    out = tmp_path / "out"
    result = prepare(root, out)
    for name, ids in expected.items():
        assert {u.id for u in manifest(out, name)} == ids, name
    assert {u.id for u in manifest(out, "full")} == expected["10h"]
    assert len(manifest(out, "dev")) == 2  # found beside the fine-tuning tree
    assert any("no test set found" in n for n in result.report["notes"])


def test_librispeech_dev_test_flags(libri, tmp_path):
    out = tmp_path / "out"
    prepare(libri, out, corpus_opts=CorpusOptions(dev_dirs=(libri / "dev-other",), test_dirs=(libri / "test-clean",)))
    assert {u.speaker for u in manifest(out, "dev")} == {"23"}


def test_commonvoice_mp3_resampling_and_official_sets(tmp_path):
    root = commonvoice(tmp_path / "cv")
    out = tmp_path / "out"
    prepare(root, out)
    assert len(manifest(out, "full")) == 12 and len(manifest(out, "dev")) == 4 and len(manifest(out, "test")) == 4
    u = manifest(out, "dev")[0]
    assert u.sample_rate in (32000, 48000) and u.text == u.text.lower() and "!" not in u.text
    # validated pool: dev/test clips, speakers and sentences are kept out
    out2 = tmp_path / "out2"
    prepare(root, out2, corpus_opts=CorpusOptions(cv_pool="validated"))
    held = {u.speaker for u in manifest(out2, "dev") + manifest(out2, "test")}
    assert not held & {u.speaker for u in manifest(out2, "full")}


def test_kaldi_with_segments_and_pipe(tmp_path):
    root = kaldi(tmp_path / "data" / "train", segments=True)
    with open(root / "wav.scp", "a") as f:
        f.write("rec2 sox in.flac -t wav - |\n")
    with open(root / "segments", "a") as f:
        f.write("spk9-utt999 rec2 0.0 2.0\n")
    with open(root / "text", "a") as f:
        f.write("spk9-utt999 maji\n")
    out = tmp_path / "out"
    prepare(root, out)
    rows = manifest(out, "full") + manifest(out, "dev") + manifest(out, "test")
    assert len(rows) == 12 and any(u.offset > 0 for u in rows)
    assert all(abs(u.duration - 2.4) < 1e-6 for u in rows)
    pipe = [r for r in rejects(out) if r["reason"] == "piped_wav_scp"]
    assert len(pipe) == 1 and "command" in pipe[0]["detail"] and "wav.scp:2" in pipe[0]["source"]


def test_kaldi_data_folder_of_folders(tmp_path):
    kaldi(tmp_path / "data" / "train", n=8)
    kaldi(tmp_path / "data" / "dev", n=4, seed=1, prefix="dev")
    kaldi(tmp_path / "data" / "test", n=4, seed=2, prefix="tst")
    out = tmp_path / "out"
    prepare(tmp_path / "data", out)
    assert (len(manifest(out, "full")), len(manifest(out, "dev")), len(manifest(out, "test"))) == (8, 4, 4)


def test_duplicate_ids_and_given_dev_sharing_training_voices(tmp_path):
    kaldi(tmp_path / "data" / "train", n=8)
    kaldi(tmp_path / "data" / "dev", n=4, seed=1)  # same ids and speakers as train
    out = tmp_path / "out"
    result = prepare(tmp_path / "data", out)
    reasons = [r["reason"] for r in rejects(out)]
    assert reasons == ["duplicate_id"] * 4  # dev is read first; train's copies are rejected
    # the 4 other train utterances: carved test (by utterance: 4 voices are too few) and training; the given dev
    # speaks with the training voices, which still train, and the report says so
    assert len(manifest(out, "test")) + len(manifest(out, "full")) == 4 and manifest(out, "full")
    dev = result.report["heldout"]["dev"]
    assert dev["drawn"] == "given" and dev["share_by_training_voices"] > 0 and dev["speakers_in_training"] >= 1


def _shared_voices_table(root: Path, n: int = 40) -> Path:
    """A dialogue corpus with its own split column, whose dev and test reuse the two training voices."""
    lines = ["audio\ttext\tspeaker\tsplit"]
    for i in range(n):
        write_audio(root / f"u{i:03d}.wav", 2.0 + (i % 5) * 0.3, seed=i)
        split = "test" if i % 10 == 0 else "dev" if i % 10 == 1 else "train"
        lines.append(f"u{i:03d}.wav\tmaji ya kunywa\t{'ab'[(i // 10) % 2]}\t{split}")
    (root / "corpus.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "corpus.tsv"


def test_given_split_with_training_voices_is_used_as_given(tmp_path):
    """The corpus's own dev/test is used as it is: its voices keep training, and the report and the summary say
    how much of dev/test they speak. --speaker-disjoint leaves them out of training, loudly."""
    from rich.console import Console

    from lowres.data.prepare import print_summary

    path = _shared_voices_table(tmp_path / "c")
    result = prepare(path, tmp_path / "out")
    assert (len(manifest(tmp_path / "out", "full")), len(manifest(tmp_path / "out", "dev")),
            len(manifest(tmp_path / "out", "test"))) == (32, 4, 4)
    assert rejects(tmp_path / "out") == [] and not result.report["warnings"]
    held = result.report["heldout"]
    assert held["test"] == {"drawn": "given", "speakers": 2, "speakers_in_training": 2,
                            "share_by_training_voices": 1.0, "share_unknown_speaker": 0.0}
    console = Console(record=True, width=300)
    print_summary(result, console)
    printed = console.export_text()
    assert "dev/test audio spoken by voices heard in training: dev 100% (2 of 2 voices), test 100% " in printed
    assert "--speaker-disjoint" in printed
    out = tmp_path / "out"  # the next step, on the smallest split with data (prepare printed none)
    assert f"next:  lowres finetune --data {out} --split 10min --base whisper-base --out runs/out-10min" in printed

    strict = prepare(path, tmp_path / "strict", PrepareConfig(speaker_disjoint=True))
    assert manifest(tmp_path / "strict", "full") == []
    assert [r["reason"] for r in rejects(tmp_path / "strict")] == ["heldout_speaker"] * 32
    warnings = " ".join(strict.report["warnings"])
    assert "--speaker-disjoint left" in warnings and "100% of the training pool" in warnings
    assert "most were rejected as heldout_speaker (32)" in warnings and "training pool is empty" in warnings
    assert strict.report["heldout"]["dev"]["share_by_training_voices"] == 0.0
    assert strict.report["splits"]["10min"]["flag"] == "the training pool is empty: no utterance to draw"
    console = Console(record=True, width=300)
    print_summary(strict, console)
    assert "lowres finetune" not in console.export_text()  # no split to fine-tune on: no such next step


def test_one_voice_corpus_prepares(tmp_path):
    """No split column and one voice: dev and test are drawn by utterance (said in a note) and the voice trains."""
    path = table(tmp_path / "c" / "data.csv", n=40, speakers=1)
    result = prepare(path, tmp_path / "out")
    full, dev, test = (manifest(tmp_path / "out", s) for s in ("full", "dev", "test"))
    assert full and dev and test and len(full) + len(dev) + len(test) == 40
    assert {u.speaker for u in full} == {"s0"} and rejects(tmp_path / "out") == []
    assert any("1 voice(s)" in n and "drawn by utterance" in n for n in result.report["notes"])
    assert result.report["heldout"]["dev"]["drawn"] == "carved by utterance"
    assert result.report["kept"]["share"] == 1.0 and not result.report["warnings"]
    with pytest.raises(LowresError, match="speaker-disjoint dev/test cannot be drawn"):
        prepare(path, tmp_path / "strict", PrepareConfig(speaker_disjoint=True))
    assert not (tmp_path / "strict").exists()


def test_many_voices_are_carved_by_speaker(tmp_path):
    path = table(tmp_path / "c" / "data.csv", n=120, speakers=40)
    result = prepare(path, tmp_path / "out")
    dev, test, full = (manifest(tmp_path / "out", s) for s in ("dev", "test", "full"))
    speakers = [{u.speaker for u in rows} for rows in (dev, test, full)]
    assert not speakers[0] & speakers[1] and not speakers[0] & speakers[2] and not speakers[1] & speakers[2]
    assert result.report["heldout"]["test"]["drawn"] == "carved by speaker"
    assert result.report["heldout"]["test"]["share_by_training_voices"] == 0.0


def test_keeping_less_than_half_warns_with_the_main_reason(tmp_path):
    root = tmp_path / "c"
    lines = ["path,text,speaker"]
    for i in range(10):
        if i < 3:
            write_audio(root / f"u{i}.wav", 2.0, seed=i)
        lines.append(f"u{i}.wav,maji,s{i % 2}")
    root.mkdir(exist_ok=True)
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    result = prepare(root / "t.csv", tmp_path / "out")
    kept = result.report["kept"]
    assert (kept["utterances_listed"], kept["utterances_kept"]) == (10, 3)
    [warning] = result.report["warnings"]
    assert "only 3 of the 10 labeled utterances (30%)" in warning
    assert "missing_audio (7)" in warning and "relative paths" in warning


def test_narrowband_audio_is_reported(tmp_path):
    root = tmp_path / "c"
    lines = ["path,text,speaker"]
    for i in range(12):
        write_audio(root / f"u{i}.wav", 2.0, 8000 if i < 9 else 16000, seed=i)
        lines.append(f"u{i}.wav,maji ya kunywa,s{i % 3}")
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    result = prepare(root / "t.csv", tmp_path / "out")
    audio = result.report["audio"]
    assert audio["sample_rates"]["8000"]["utterances"] == 9 and audio["sample_rates"]["16000"]["utterances"] == 3
    assert audio["narrowband_share"] == pytest.approx(0.75)
    notes = " ".join(result.report["notes"])
    assert "75% of the labeled audio is narrow-band (8000 Hz)" in notes and "upsampled to 16000 Hz" in notes
    assert "mixes narrow-band (8000 Hz) and wide-band (16000 Hz)" in notes
    assert {u.sample_rate for u in manifest(tmp_path / "out", "full")} <= {8000, 16000}
    prepare(root / "t.csv", tmp_path / "un", unlabeled=root)
    report = json.loads((tmp_path / "un" / "prepare_report.json").read_text())
    assert "8000" in report["unlabeled"]["audio"]["sample_rates"]


def test_digits_policies(tmp_path):
    root = tmp_path / "c"
    lines = ["path,text,speaker"]
    texts = ["press 1 to mute", "bonyeza #5 sasa", "maji ya kunywa", "habari za asubuhi"] * 3
    for i, text in enumerate(texts):
        write_audio(root / f"u{i}.wav", 3.0, seed=i)
        lines.append(f"u{i}.wav,{text},s{i % 3}")
    (root / "t.csv").write_text("\n".join(lines) + "\n")
    every = lambda out: [u for s in ("full", "dev", "test") for u in manifest(out, s)]  # noqa: E731
    keep = prepare(root / "t.csv", tmp_path / "keep")
    assert keep.report["text_counts"]["digits"]["transcripts_with_digits"] == 6
    assert "press 1 to mute" in {u.text for u in every(tmp_path / "keep")}
    assert any(line.startswith("digits: 6 transcript(s) hold digits") for line in keep.report["text_advice"])
    spell = prepare(root / "t.csv", tmp_path / "spell", PrepareConfig(digits="spell"), rules=load_rules("sw"))
    assert {"press moja to mute", "bonyeza tano sasa"} <= {u.text for u in every(tmp_path / "spell")}
    assert spell.report["text_counts"]["digits"]["transcripts_with_digits"] == 6
    assert spell.report["text_counts"]["digits"]["transcripts_with_digits_after"] == 0
    drop = prepare(root / "t.csv", tmp_path / "drop", PrepareConfig(digits="drop"))
    assert len(every(tmp_path / "drop")) == 6 and not any(has_digit(u.raw_text) for u in every(tmp_path / "drop"))
    assert [r["reason"] for r in rejects(tmp_path / "drop")] == ["has_digits"] * 6
    assert drop.report["text_counts"]["digits"]["transcripts_with_digits"] == 6  # counted before the policy
    assert "those utterances are left out" in " ".join(drop.report["text_advice"])
    with pytest.raises(LowresError, match="--digits spell needs the words for 0-9"):
        prepare(root / "t.csv", tmp_path / "nowords", PrepareConfig(digits="spell"))


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_table_layouts(tmp_path, kind):
    path = table(tmp_path / "corpus" / f"data.{kind}", n=16, kind=kind)
    out = tmp_path / "out"
    result = prepare(path, out)
    assert result.report["format"] == "table"
    dev, test, full = manifest(out, "dev"), manifest(out, "test"), manifest(out, "full")
    assert len(dev) + len(test) + len(full) == 16 and dev and test
    # four voices: too few to hold any out, so every voice trains and dev/test are drawn by utterance
    assert {u.speaker for u in full} == {"s0", "s1", "s2", "s3"}
    assert any("carved out of the training pool (by utterance" in n for n in result.report["notes"])


def test_nemo_manifest_with_offsets_and_split_column(tmp_path):
    write_audio(tmp_path / "long.wav", 30.0)
    rows = []
    for i in range(10):
        rows.append({"audio_filepath": "long.wav", "offset": 3.0 * i, "duration": 2.5, "text": f"neno {i % 3}",
                     "speaker": f"s{i % 5}", "split": "test" if i == 9 else "train"})
    path = tmp_path / "nemo.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    prepare(path, out)
    test = manifest(out, "test")
    assert len(test) == 1 and test[0].offset == 27.0 and test[0].duration == 2.5


def test_table_columns_by_flag_and_errors(tmp_path):
    write_audio(tmp_path / "a.wav", 2.0)
    path = tmp_path / "t.csv"
    path.write_text("clip,words,who\na.wav,habari,x\n")
    with pytest.raises(LowresError, match="--audio-column"):
        prepare(path, tmp_path / "o1")
    opts = CorpusOptions(audio_column="clip", text_column="words", speaker_column="who")
    prepare(path, tmp_path / "o2", corpus_opts=opts)
    assert len(manifest(tmp_path / "o2", "full")) + len(manifest(tmp_path / "o2", "dev")) + len(
        manifest(tmp_path / "o2", "test")) == 1


def test_broken_files_and_hostile_transcripts_go_to_rejects(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    good = [write_audio(root / f"good{i}.flac", 2.5, seed=i) for i in range(6)]
    (root / "zero.wav").write_bytes(b"")
    (root / "text.wav").write_text("this is not audio")
    trunc = write_audio(root / "trunc.flac", 3.0)
    trunc.write_bytes(trunc.read_bytes()[:2000])
    x = np.zeros(16000, dtype=np.float32)
    x[10] = np.nan
    sf.write(str(root / "nan.wav"), x, 16000, subtype="FLOAT")
    write_audio(root / "short.wav", 0.1)
    write_audio(root / "long.wav", 45.0)
    write_audio(root / "stereo48k.wav", 2.0, 48000, channels=2)
    write_audio(root / "int24.wav", 2.0, 8000, subtype="PCM_24")
    write_audio(root / "u8.wav", 2.0, 16000, subtype="PCM_U8")
    write_audio(root / "tiny.wav", 0.5)
    lines = ["path\ttext\tspeaker"]
    lines += [f"{p.name}\tmaji ya kunywa {i}\ts{i % 3}" for i, p in enumerate(good)]
    lines += ["zero.wav\tmaji\ts1", "text.wav\tmaji\ts1", "trunc.flac\tmaji\ts1", "nan.wav\tmaji\ts1",
              "missing.wav\tmaji\ts1", "short.wav\tmaji\ts1", "long.wav\tmaji\ts1",
              "stereo48k.wav\tSTEREO «sauti»!\ts2", "int24.wav\tsauti\ts2", "u8.wav\tsauti\ts0",
              "tiny.wav\t" + "maneno mengi sana " * 5 + "\ts0", "good0.flac\t?!…\ts0"]
    path = root / "t.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(path, "ab") as f:
        f.write(b"good1.flac\tcaf\xe9 latin1\ts0\n")
    out = tmp_path / "out"
    prepare(path, out)
    reasons = {}
    for r in rejects(out):
        reasons.setdefault(r["reason"], []).append(r)
    assert set(reasons) >= {"empty_audio", "unreadable_audio", "truncated_audio", "non_finite_audio",
                            "missing_audio", "too_short", "too_long", "transcript_too_long", "bad_encoding"}
    # the empty transcript line duplicates good0's id, so it is rejected as a duplicate first
    assert [r.get("id") for r in reasons["duplicate_id"]] == ["good0"] and "empty_transcript" not in reasons
    kept = {u.id for name in ("full", "dev", "test") for u in manifest(out, name)}
    assert kept == {f"good{i}" for i in range(6)} | {"stereo48k", "int24", "u8"}
    stereo = next(u for name in ("full", "dev", "test") for u in manifest(out, name) if u.id == "stereo48k")
    assert stereo.text == "stereo sauti" and stereo.sample_rate == 48000
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["rejects"]["total"] == len(rejects(out)) >= 10
    assert report["text_counts"]["digits"]["transcripts_with_digits"] == 6


def test_empty_transcript_rejected(tmp_path):
    write_audio(tmp_path / "a.wav", 2.0)
    write_audio(tmp_path / "b.wav", 2.0)
    path = tmp_path / "t.csv"
    path.write_text("path,text\na.wav,habari\nb.wav,?!…\n")
    prepare(path, tmp_path / "out")
    assert [r["reason"] for r in rejects(tmp_path / "out")] == ["empty_transcript"]


def test_rerun_is_byte_identical_and_seed_changes_splits(tmp_path):
    path = table(tmp_path / "corpus" / "data.csv", n=30, speakers=6)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    prepare(path, a, PrepareConfig(emit=("fairseq",)))
    prepare(path, b, PrepareConfig(emit=("fairseq",)))
    assert outputs(a) == outputs(b)
    prepare(path, c, PrepareConfig(seed=5, emit=("fairseq",)))
    assert outputs(a) != outputs(c)


def test_output_folder_never_overwritten_without_flag(tmp_path):
    path = table(tmp_path / "corpus" / "data.csv", n=12)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LowresError, match="--overwrite"):
        prepare(path, out)
    prepare(path, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "manifests" / "full.jsonl").is_file()


def test_moving_prepared_folder_with_corpus_keeps_manifests_valid(tmp_path):
    project = tmp_path / "project"
    path = table(project / "corpus" / "data.csv", n=12)
    prepare(path, project / "prepared")
    moved = tmp_path / "elsewhere"
    shutil.move(str(project), str(moved))
    for name in ("full", "dev", "test"):
        for u in manifest(moved / "prepared", name):
            assert Path(u.audio_filepath).is_file()


def test_unlabeled_segmentation_and_heldout_exclusion(tmp_path):
    corpus = table(tmp_path / "corpus" / "data.csv", n=12)
    unl = tmp_path / "unl"
    write_audio(unl / "a" / "long.flac", 50.0, seed=3)
    write_audio(unl / "b.wav", 5.0, 44100, channels=2)
    write_audio(unl / "short.wav", 1.0)
    (unl / "readme.txt").write_text("not audio")
    (unl / "broken.wav").write_text("nope")
    (unl / "loop").symlink_to(unl)  # a symlink loop must not hang the walk
    out = tmp_path / "out"
    result = prepare(corpus, out, unlabeled=unl)
    pieces = list(read_manifest(out / "unlabeled.jsonl"))
    long = [p for p in pieces if "long" in p.id]
    assert len(long) >= 4 and all(2.0 <= p.duration <= 15.6 for p in pieces)
    assert sum(p.duration for p in long) == pytest.approx(50.0, abs=0.05)
    assert any(p.id == "b" for p in pieces)
    reasons = {r["reason"] for r in rejects(out)}
    assert {"too_short", "unreadable_audio"} <= reasons
    assert result.report["unlabeled"]["non_audio_files_skipped"] == 1
    from lowres.data.prepare import next_steps

    first = next_steps(result)[0].split("--split ")[1].split()[0]  # the untranscribed audio: self-training next
    assert next_steps(result)[1].startswith(f"then:  lowres selftrain --model runs/out-{first} --unlabeled "
                                            f"{out / 'unlabeled.jsonl'} --out runs/out-st")
    # unlabeled alone; dev/test audio inside the unlabeled folder is left out
    out2 = tmp_path / "out2"
    prepare(None, out2, unlabeled=unl)
    assert not (out2 / "vocab.json").exists() and (out2 / "unlabeled.jsonl").is_file()
    out3 = tmp_path / "out3"
    prepare(corpus, out3, unlabeled=corpus.parent)
    heldout = {Path(u.audio_filepath).resolve() for n in ("dev", "test") for u in manifest(out3, n)}
    assert not heldout & {Path(p.audio_filepath).resolve() for p in read_manifest(out3 / "unlabeled.jsonl")}


def test_fairseq_emit(tmp_path):
    path = table(tmp_path / "corpus" / "data.csv", n=12)
    out = tmp_path / "out"
    prepare(path, out, PrepareConfig(emit=("fairseq",)))
    tsv = (out / "fairseq" / "full.tsv").read_text().splitlines()
    ltr = (out / "fairseq" / "full.ltr").read_text().splitlines()
    wrd = (out / "fairseq" / "full.wrd").read_text().splitlines()
    root = Path(tsv[0])
    assert root.is_absolute() and len(tsv) - 1 == len(ltr) == len(wrd) == len(manifest(out, "full"))
    rel, frames = tsv[1].split("\t")
    assert sf.info(str(root / rel)).frames == int(frames)
    assert ltr[0].endswith(" |") and ltr[0].replace(" ", "").replace("|", " ").strip() == wrd[0]
    assert (out / "fairseq" / "dict.ltr.txt").is_file()


def test_layout_detection_errors(tmp_path, libri):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LowresError, match="matches no corpus layout"):
        detect_format(tmp_path / "empty")
    with pytest.raises(LowresError, match="does not look like a 'kaldi' corpus"):
        detect_format(libri, "kaldi")
    with pytest.raises(LowresError, match="Corpus not found"):
        detect_format(tmp_path / "nope")
    with pytest.raises(LowresError, match="Nothing to prepare"):
        prepare(None, tmp_path / "o")


def test_a_dev_subset_takes_each_voice_in_turn():
    """train.dev_max_utterances' subset (lowres/data/manifest.py spread_over_speakers): prepare sorts dev by
    speaker, so the first N clips would be one voice."""
    from lowres.data.manifest import Utterance, spread_over_speakers

    utts = [Utterance(f"a{i}", "x.wav", 1.0, speaker="a") for i in range(5)] + \
        [Utterance(f"b{i}", "x.wav", 1.0, speaker="b") for i in range(2)]
    assert [u.id for u in spread_over_speakers(utts, 5)] == ["a0", "b0", "a1", "b1", "a2"]
    assert [u.id for u in spread_over_speakers(utts, 50)] == [u.id for u in utts]  # all there is, in order
    assert spread_over_speakers(utts, 0) == []


def test_short_unlabeled_files_are_counted_and_said(tmp_path):
    """A folder of short prompts: the files under --min-segment are left out, and when that is most of the audio
    the summary warns with the flag that keeps them; the rejects line tells labeled items from unlabeled files."""
    from rich.console import Console

    from lowres.data.prepare import print_summary

    for i in range(6):
        write_audio(tmp_path / "unl" / f"p{i}.wav", 1.2, seed=i)
    write_audio(tmp_path / "unl" / "long.wav", 3.0)
    result = prepare(None, tmp_path / "out", unlabeled=tmp_path / "unl")
    [warning] = result.report["warnings"]
    assert "6 unlabeled file(s), 0.00 h of the 0.00 h found, are shorter than --min-segment 2 s" in warning
    assert result.report["rejects"]["unlabeled"] == {"too_short": 6} and result.report["rejects"]["labeled"] == {}
    console = Console(record=True, width=300)
    print_summary(result, console)
    assert "rejected 6: 6 unlabeled files (too_short 6)" in console.export_text()
    again = prepare(None, tmp_path / "out2", PrepareConfig(segment_min_s=1.0, segment_max_s=15.6),
                    unlabeled=tmp_path / "unl")
    assert len(again.splits["unlabeled"]) == 7 and not again.report["warnings"]
