"""lowres pseudolabel and finetune --pseudo: a tiny teacher that half-reads tone "speech" labels clips whose
true transcripts the test knows; and finetune --synth-text, the other extra training data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import factory
import jiwer
import pytest
import soundfile as sf
from factory import invoke, read_jsonl


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A labeled tone corpus (prepared, dev and test drawn), a teacher trained on it for 25 updates (it reads
    the letters but confuses some: confidences spread), and 12 unlabeled clips of other tone sentences with
    their truth."""
    root = tmp_path_factory.mktemp("pl")
    factory.tone_table(root / "lab" / "c.csv", n=16)
    factory.tone_table(root / "unl" / "c.csv", n=12, seed=5)
    truth = {}
    with open(root / "unl" / "unlabeled.jsonl", "w", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(open(root / "unl" / "c.csv", encoding="utf-8"))):
            truth[f"u{i:02d}"] = row["text"]
            f.write(json.dumps({"id": f"u{i:02d}", "audio_filepath": row["audio"],
                                "duration": sf.info(root / "unl" / row["audio"]).duration}) + "\n")
    res = invoke("prepare", root / "lab" / "c.csv", "--out", root / "prep", "-q", "--dev-fraction", 0.2,
                 "--test-fraction", 0.2)
    assert res.exit_code == 0, res.output
    res = invoke("finetune", "--data", root / "prep", "--split", "full", "--base", "tiny", "--out", root / "teacher",
                 "--max-steps", 25, *factory.TONE_LEARNER, "--eval-every", 25, "--quiet")
    assert res.exit_code == 0, res.output
    res = invoke("pseudolabel", "--model", root / "teacher", "--unlabeled", root / "unl" / "unlabeled.jsonl",
                 "--out", root / "pl", "-q")
    assert res.exit_code == 0, res.output
    return {"root": root, "truth": truth, "unlabeled": root / "unl" / "unlabeled.jsonl", "pl": root / "pl"}


def _cer(rows: list[dict], truth: dict, key: str = "text") -> float:
    return jiwer.cer([truth[r["id"]] for r in rows], [r[key] for r in rows])


def test_pseudolabels_are_the_teachers_transcripts_with_a_confidence_that_ranks_them(setup):
    pl, truth = setup["pl"], setup["truth"]
    decoded = read_jsonl(pl / "decoded.jsonl")
    assert sorted(r["id"] for r in decoded) == sorted(truth)  # every piece decoded once
    kept = read_jsonl(pl / "pseudo.jsonl")
    report = json.loads((pl / "pseudolabel_report.json").read_text())
    assert report["pieces"] == 12 and report["kept"] == len(kept)
    assert report["kept"] + sum(report["dropped"].values()) == 12
    assert all(r["pseudo"] is True and 0 <= r["confidence"] <= 1 and r["text"] for r in kept)
    assert [r["id"] for r in kept] == sorted(r["id"] for r in kept)  # the unlabeled manifest's order
    assert _cer(kept, truth) < 0.5  # the teacher reads most letters
    # the confidence ranks the transcripts: the more confident half is more accurate than the rest
    ranked = sorted(decoded, key=lambda r: -r["confidence"])
    top, rest = ranked[:6], ranked[6:]
    assert _cer(top, truth, "hypothesis") < _cer(rest, truth, "hypothesis")
    # the pseudo manifest is a manifest: prepare's reader takes it, paths relative to its folder
    from lowres.data.manifest import read_manifest

    utts = list(read_manifest(pl / "pseudo.jsonl", require_text=True))
    assert all(Path(u.audio_filepath).is_file() for u in utts)


def test_resume_refilters_without_decoding_again(setup, tmp_path, monkeypatch):
    import shutil

    import lowres.decode

    pl = tmp_path / "pl"
    shutil.copytree(setup["pl"], pl)

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(lowres.decode, "forward_batches", no_decoding)
    res = invoke("pseudolabel", "--model", setup["root"] / "teacher", "--unlabeled", setup["unlabeled"], "--out", pl,
                 "--resume", "--keep", 0.5, "-q")
    assert res.exit_code == 0, res.output
    kept = read_jsonl(pl / "pseudo.jsonl")
    rejects = read_jsonl(pl / "rejects.jsonl")
    below = [r for r in rejects if r["reason"] == "below_keep"]
    candidates = len(kept) + len(below)
    assert len(kept) == round(0.5 * candidates) and below
    assert min(r["confidence"] for r in kept) >= max(r["confidence"] for r in below)
    res = invoke("pseudolabel", "--model", setup["root"] / "teacher", "--unlabeled", setup["unlabeled"], "--out", pl,
                 "--resume", "--min-confidence", 1.0, "-q")
    assert res.exit_code == 0, res.output
    assert read_jsonl(pl / "pseudo.jsonl") == []
    assert {r["reason"] for r in read_jsonl(pl / "rejects.jsonl")} == {"low_confidence"}


def test_the_teachers_own_training_clips_are_not_pseudo_labels(setup, tmp_path):
    """Pieces of the audio the teacher trained on (an unlabeled pool that holds the labeled clips) are dropped
    as labeled_audio before --keep takes its share: the teacher is surest of them, and the student has their
    true transcripts."""
    from lowres.data.manifest import read_manifest

    prep = setup["root"] / "prep"
    trained = list(read_manifest(prep / "manifests" / "full.jsonl"))[:3]
    mixed = tmp_path / "mixed.jsonl"
    lines = setup["unlabeled"].read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    for r in rows:
        r["audio_filepath"] = str((setup["unlabeled"].parent / r["audio_filepath"]).resolve())
    rows += [{"id": f"t{i}", "audio_filepath": str(Path(u.audio_filepath).resolve()), "duration": u.duration}
             for i, u in enumerate(trained)]
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = invoke("pseudolabel", "--model", setup["root"] / "teacher", "--unlabeled", mixed, "--out", tmp_path / "pl",
                 "--keep", 0.5, "-q")
    assert res.exit_code == 0, res.output
    rejects = read_jsonl(tmp_path / "pl" / "rejects.jsonl")
    assert sorted(r["id"] for r in rejects if r["reason"] == "labeled_audio") == ["t0", "t1", "t2"]
    kept = read_jsonl(tmp_path / "pl" / "pseudo.jsonl")
    below = [r for r in rejects if r["reason"] == "below_keep"]
    assert kept and len(kept) == round(0.5 * (len(kept) + len(below)))
    assert all(r["id"].startswith("u") for r in kept)
    report = json.loads((tmp_path / "pl" / "pseudolabel_report.json").read_text())
    assert report["dropped"]["labeled_audio"] == 3 and report["kept_share_of_new_audio"] > report["kept_share_of_audio"]


def test_a_stopped_pseudolabel_resumes_where_it_stopped(setup, tmp_path):
    import shutil

    pl = tmp_path / "pl"
    shutil.copytree(setup["pl"], pl)
    lines = (pl / "decoded.jsonl").read_bytes().splitlines(keepends=True)
    (pl / "decoded.jsonl").write_bytes(b"".join(lines[:5]) + lines[5][:20])  # stopped in the middle of a line
    (pl / "pseudo.jsonl").unlink()
    res = invoke("pseudolabel", "--model", setup["root"] / "teacher", "--unlabeled", setup["unlabeled"], "--out", pl,
                 "--resume", "-q")
    assert res.exit_code == 0, res.output
    decoded = read_jsonl(pl / "decoded.jsonl")
    assert sorted(r["id"] for r in decoded) == sorted(setup["truth"])  # nothing twice, nothing lost
    def same(rows):
        return [{k: v for k, v in r.items() if k != "audio_filepath"} for r in rows]

    assert same(read_jsonl(pl / "pseudo.jsonl")) == same(read_jsonl(setup["pl"] / "pseudo.jsonl"))


def test_pseudolabel_refusals(setup, tmp_path):
    teacher, unl = setup["root"] / "teacher", setup["unlabeled"]
    res = invoke("pseudolabel", "--model", teacher, "--unlabeled", unl, "--out", setup["pl"])
    assert res.exit_code == 2 and "--resume" in res.output and "--overwrite" in res.output
    # --resume with another teacher would mix two models' transcripts
    res = invoke("pseudolabel", "--model", setup["root"] / "teacher", "--unlabeled", unl, "--out", setup["pl"],
                 "--resume", "--max-hours", 0.0001)
    assert res.exit_code == 2 and "max_hours" in res.output and "--overwrite" in res.output
    res = invoke("pseudolabel", "--model", teacher, "--unlabeled", tmp_path / "nothing", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "no such file or folder" in res.output
    res = invoke("pseudolabel", "--model", teacher, "--unlabeled", unl, "--out", tmp_path / "o", "--keep", 0)
    assert res.exit_code == 2 and "pseudolabel.keep" in res.output and "Traceback" not in res.output
    # an empty unlabeled set (a manifest, a folder without audio), a model that is no fine-tuned run: one message,
    # and no --out folder left behind
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "no-audio").mkdir()
    (tmp_path / "no-audio" / "notes.txt").write_text("x")
    for model, source, message in ((teacher, tmp_path / "empty.jsonl", "holds no audio pieces"),
                                   (teacher, tmp_path / "no-audio", "audio"),
                                   (setup["root"] / "prep", unl, "config.json")):
        res = invoke("pseudolabel", "--model", model, "--unlabeled", source, "--out", tmp_path / "left")
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
        assert not (tmp_path / "left").exists()
    # pseudo-labels written with another vocabulary
    other = tmp_path / "other.jsonl"
    row = read_jsonl(setup["pl"] / "pseudo.jsonl")[0]
    other.write_text(json.dumps({**row, "audio_filepath": str((setup["pl"] / row["audio_filepath"]).resolve()),
                                 "text": "ego zürich"}) + "\n")
    res = invoke("finetune", "--data", setup["root"] / "prep", "--split", "full", "--base", "tiny",
                 "--out", tmp_path / "r", "--pseudo", other, "-q")
    assert res.exit_code == 2 and "another vocabulary" in res.output and not (tmp_path / "r").exists()
    # a labeled manifest is not pseudo-labels
    prep = setup["root"] / "prep"
    res = invoke("finetune", "--data", prep, "--split", "full", "--base", "tiny", "--out", tmp_path / "r",
                 "--pseudo", prep / "manifests" / "full.jsonl", "-q")
    assert res.exit_code == 2 and '"pseudo": true' in res.output


def test_whispers_decoder_as_the_teacher(setup, tmp_path, monkeypatch):
    """--whisper NAME --language L --data PREPARED: Whisper's decoder labels the pieces (here a stand-in that
    returns each piece's true sentence as Whisper writes it, capitalised and punctuated, or with a digit or
    empty), normalised with the prepared folder's rules; a transcript the vocabulary cannot spell is dropped by
    name; the students' finetune reads the result."""
    import lowres.zeroshot

    whisper = factory.tiny_whisper(tmp_path / "whisper", tokenizer=True)
    prep, out, truth = setup["root"] / "prep", tmp_path / "wpl", setup["truth"]

    def decode_batches(gen, utts, language, device, batch_seconds, progress=None):
        assert language == "nl"
        raw = [(truth[u.id].capitalize() + ".", 0.9 - 0.01 * k) for k, u in enumerate(utts)]
        raw[1], raw[2] = (raw[1][0] + " 42", 0.95), ("", 0.5)
        yield list(range(len(utts))), [t for t, _ in raw], [c for _, c in raw], []

    monkeypatch.setattr(lowres.zeroshot, "decode_batches", decode_batches)
    res = invoke("pseudolabel", "--whisper", whisper, "--language", "nl", "--data", prep,
                 "--unlabeled", setup["unlabeled"], "--out", out, "--keep", 0.5, "-q")
    assert res.exit_code == 0, res.output
    rejects = {r["id"]: r["reason"] for r in read_jsonl(out / "rejects.jsonl")}
    assert rejects["u01"] == "outside_vocabulary" and rejects["u02"] == "empty"
    kept = read_jsonl(out / "pseudo.jsonl")
    assert [r["id"] for r in kept] == ["u00", "u03", "u04", "u05", "u06"]  # the most confident half of ten
    assert all(r["text"] == truth[r["id"]] and r["pseudo"] for r in kept)  # normalised back to the truth
    report = json.loads((out / "pseudolabel_report.json").read_text())
    assert report["settings"]["decoder"] == {"name": "whisper-greedy", "language": "nl"}
    assert report["chars_per_second_from"].endswith("full.jsonl") and report["settings"]["data"] == str(prep.resolve())
    # --resume refilters without decoding again; another prepared folder's rules would be another labelling

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(lowres.zeroshot, "decode_batches", no_decoding)
    res = invoke("pseudolabel", "--whisper", whisper, "--language", "nl", "--data", prep,
                 "--unlabeled", setup["unlabeled"], "--out", out, "--resume", "-q")
    assert res.exit_code == 0 and len(read_jsonl(out / "pseudo.jsonl")) == 10, res.output
    other = tmp_path / "other-prep"
    import shutil

    shutil.copytree(prep, other)
    res = invoke("pseudolabel", "--whisper", whisper, "--language", "nl", "--data", other,
                 "--unlabeled", setup["unlabeled"], "--out", out, "--resume", "--keep", 0.5)
    assert res.exit_code == 2 and "data" in res.output and "--overwrite" in res.output, res.output
    res = invoke("pseudolabel", "--whisper", whisper, "--language", "nl", "--data", prep,
                 "--unlabeled", setup["unlabeled"], "--out", out, "--resume", "--keep", 0.5, "-q")
    assert res.exit_code == 0, res.output
    res = invoke("finetune", "--data", prep, "--split", "full", "--base", "tiny", "--out", tmp_path / "student",
                 "--pseudo", out, "--max-steps", 2, "--eval-every", 0, "-q")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "student" / "config.json").read_text())["pseudo"]["pieces"] == 5
    # one message each, nothing made
    for args, message in ((["--model", setup["root"] / "teacher"], "not both"),
                          (["--language", "nl", "--data", setup["root"] / "nothing"], "no such folder"),
                          (["--language", "nl"], "needs --language CODE"),
                          (["--language", "xx", "--data", prep], "no language 'xx'"),
                          (["--language", "nl", "--data", prep, "--lm", tmp_path], "Whisper's decoder has its own")):
        res = invoke("pseudolabel", "--whisper", whisper, *args, "--unlabeled", setup["unlabeled"],
                     "--out", tmp_path / "left")
        assert res.exit_code == 2 and message in " ".join(res.output.split()) and "Traceback" not in res.output, \
            res.output
        assert not (tmp_path / "left").exists()


def test_finetune_trains_on_labels_and_the_kept_pseudo_labels(setup, tmp_path):
    prep, pl = setup["root"] / "prep", setup["pl"]
    # a pseudo-label cut from a dev clip's audio would train on what the run is scored on, one of a labeled
    # clip's would count it twice: both are left out
    pseudo = tmp_path / "pseudo.jsonl"
    rows = read_jsonl(pl / "pseudo.jsonl")
    dev = read_jsonl(prep / "manifests" / "dev.jsonl")[0]
    leak = {**rows[0], "id": "leak", "audio_filepath": str((prep / "manifests" / dev["audio_filepath"]).resolve()),
            "confidence": 1.0}
    train = read_jsonl(prep / "manifests" / "full.jsonl")[0]
    again = {**rows[0], "id": "again", "audio_filepath": str((prep / "manifests" / train["audio_filepath"]).resolve())}
    for r in rows:
        r["audio_filepath"] = str((pl / r["audio_filepath"]).resolve())
    pseudo.write_text("".join(json.dumps(r) + "\n" for r in [*rows, leak, again]), encoding="utf-8")
    run = tmp_path / "run"
    res = invoke("finetune", "--data", prep, "--split", "full", "--base", "tiny", "--out", run, "--max-steps", 3,
                 "--pseudo", pseudo, "--pseudo-weight", 0.5, "--set", "train.batch_seconds=20",
                 "--set", "train.num_workers=0", "-q")
    assert res.exit_code == 0, res.output
    meta = json.loads((run / "config.json").read_text())
    info = meta["pseudo"]
    assert info["from_heldout_audio"] == 1 and info["from_labeled_audio"] == 1  # (its transcript trains already)
    assert info["pieces"] == len(rows) == info["trainable"]
    assert info["weight"] == 0.5 and meta["config"]["pseudo"]["manifest"] == str(pseudo.resolve())
    labeled = len(read_jsonl(prep / "manifests" / "full.jsonl"))
    assert json.loads((run / "summary.json").read_text())["train_clips"] == labeled + len(rows)
    log = (run / "train.log").read_text()
    assert f"+ {len(rows)} pseudo-labelled clips" in log and "1 overlapping dev/test audio left out" in log


def test_pseudo_weight_scales_exactly_the_pseudo_labelled_clips_loss(setup, tmp_path):
    """The first update sees the same clips with the same (untrained) model whatever the weight w, so its
    logged loss is (labeled loss + w × pseudo loss) / symbols: linear in w, rising with it."""
    prep, pl = setup["root"] / "prep", setup["pl"]
    losses = {}
    for w in (0.25, 0.5, 1.0):
        run = tmp_path / f"w{w}"
        res = invoke("finetune", "--data", prep, "--split", "full", "--base", "tiny", "--out", run, "--max-steps", 1,
                     "--pseudo", pl, "--pseudo-weight", w, "--set", "train.batch_seconds=60",
                     "--set", "train.accumulate=1", "--set", "train.num_workers=0", "--seed", 3, "-q")
        assert res.exit_code == 0, res.output
        losses[w] = next(r["loss"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r)
    assert losses[0.25] < losses[0.5] < losses[1.0]
    assert losses[0.5] - losses[0.25] == pytest.approx((losses[1.0] - losses[0.25]) / 3, rel=1e-3)


def test_finetune_mixes_synthetic_speech_of_the_text(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("LOWRES_CACHE", str(tmp_path / "cache"))
    prep = setup["root"] / "prep"
    dev_text = read_jsonl(prep / "manifests" / "dev.jsonl")[0]["text"]
    text = tmp_path / "text.txt"
    # two sentences on the first line; a dev transcript (never trained on); letters the vocabulary lacks
    text.write_text(f"A bad cab. Dog ego!\nbad dog abc\n{dev_text.upper()}\nzebra quiz\n\n", encoding="utf-8")
    args = ["finetune", "--data", prep, "--split", "full", "--base", "tiny", "--max-steps", 2, "--synth-text", text,
            "--synth-hours", 0.002, "--synth-lang", "en", "--synth-weight", 0.5, "--set", "train.batch_seconds=20",
            "--set", "train.num_workers=0", "-q"]
    res = invoke(*args, "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "run" / "config.json").read_text())["synth"]
    assert info["sentences"] == 5 and info["distinct_sentences"] == 3
    assert info["heldout_transcripts"] == 1 and info["outside_vocabulary"] == 1
    assert dict(info["outside_symbols"])["z"] == 2 and info["hours"] >= 0.002 and info["trainable"] == info["clips"]
    spoken = read_jsonl(Path(info["audio"]) / "manifest.jsonl")
    assert {r["text"] for r in spoken} == {"a bad cab", "dog ego", "bad dog abc"}
    labeled = len(read_jsonl(prep / "manifests" / "full.jsonl"))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["train_clips"] == labeled + info["clips"]
    assert "synthetic clips" in (tmp_path / "run" / "train.log").read_text()
    # a second run with the same text and seed reads the speech back from the cache
    before = {p: p.stat().st_mtime_ns for p in Path(info["audio"]).rglob("*.wav")}
    assert invoke(*args, "--out", tmp_path / "run2").exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in Path(info["audio"]).rglob("*.wav")} == before
    res = invoke("finetune", "--data", prep, "--split", "full", "--base", "tiny", "--out", tmp_path / "r3",
                 "--synth-text", text)
    assert res.exit_code == 2 and "--synth-hours" in res.output


def test_pseudolabels_are_deterministic_and_the_subset_follows_the_seed(setup, tmp_path):
    teacher, unl = setup["root"] / "teacher", setup["unlabeled"]

    def run(name, *extra):
        res = invoke("pseudolabel", "--model", teacher, "--unlabeled", unl, "--out", tmp_path / name, "-q", *extra)
        assert res.exit_code == 0, res.output
        rows = [{k: v for k, v in r.items() if k != "audio_filepath"} for r in read_jsonl(tmp_path / name / "pseudo.jsonl")]
        return rows, json.loads((tmp_path / name / "pseudolabel_report.json").read_text())

    again, _ = run("again")
    assert again == [{k: v for k, v in r.items() if k != "audio_filepath"}
                     for r in read_jsonl(setup["pl"] / "pseudo.jsonl")]
    a, ra = run("a", "--max-hours", 0.001, "--seed", 1)
    b, _ = run("b", "--max-hours", 0.001, "--seed", 1)
    c, _ = run("c", "--max-hours", 0.001, "--seed", 2)
    assert a == b and 0 < ra["pieces"] < 12 and ra["hours"] >= 0.001  # a random 3.6 s and a little more
    assert {r["id"] for r in a} != {r["id"] for r in c}


def test_selftrain_runs_rounds_from_the_base_and_resumes(setup, tmp_path, monkeypatch):
    """Two rounds: round 2's teacher is round 1's student; every student trains from the first teacher's base
    with its configuration and the round's pseudo-labels; --resume on a finished folder trains nothing again."""
    teacher, unl, st = setup["root"] / "teacher", setup["unlabeled"], tmp_path / "st"
    res = invoke("selftrain", "--model", teacher, "--unlabeled", unl, "--rounds", 2, "--keep", 0.75,
                 "--pseudo-weight", 0.5, "--out", st)
    assert res.exit_code == 0, res.output
    assert "self-training" in res.output and "round 2 of 2" in res.output
    own = json.loads((teacher / "config.json").read_text())["config"]
    report = json.loads((st / "selftrain.json").read_text())
    assert [r["round"] for r in report["round"]] == [1, 2] and 0 <= report["teacher"]["dev_cer"] <= 1
    for n in (1, 2):
        pl, run = st / f"round-{n}" / "pl", st / f"round-{n}" / "run"
        made_by = json.loads((pl / "pseudolabel.json").read_text())["model"]
        assert made_by == str((teacher if n == 1 else st / "round-1" / "run").resolve())
        kept = read_jsonl(pl / "pseudo.jsonl")
        assert len(kept) == report["round"][n - 1]["kept"] == 9  # 0.75 of the 12 plausible pieces
        cfg = json.loads((run / "config.json").read_text())["config"]
        assert cfg["base"] == own["base"] == "tiny" and cfg["split"] == own["split"]
        assert [cfg["train"][k] for k in ("max_steps", "seed")] == [own["train"][k] for k in ("max_steps", "seed")]
        assert cfg["pseudo"]["manifest"] == str(pl.resolve() / "pseudo.jsonl") and cfg["pseudo"]["weight"] == 0.5
        assert 0 <= report["round"][n - 1]["dev_cer"] <= 1
    import shutil

    import lowres.train.finetune

    real, trained = lowres.train.finetune.run_finetune, []

    def counted(cfg, out, **kw):
        trained.append(Path(out))
        return real(cfg, out, **kw)

    monkeypatch.setattr(lowres.train.finetune, "run_finetune", counted)
    same = ["--model", teacher, "--unlabeled", unl, "--keep", 0.75, "--pseudo-weight", 0.5, "--out", st]
    # a stop during round 2 (its folder gone here): --resume, without --rounds, goes on to the 2 rounds started
    shutil.rmtree(st / "round-2")
    res = invoke("selftrain", *same, "--resume", "-q")
    assert res.exit_code == 0 and "round 2" in res.output, res.output
    assert trained == [st / "round-2" / "run"]  # round 1, finished, is not trained again
    assert json.loads((st / "round-2" / "pl" / "pseudolabel.json").read_text())["model"] == str((st / "round-1" / "run").resolve())
    res = invoke("selftrain", *same, "--resume", "-q")
    assert res.exit_code == 0 and trained == [st / "round-2" / "run"]  # finished: nothing trained again
    # refusals: an --out already used, other settings on --resume, a folder that is no fine-tuned run, a bad weight,
    # a missing LM (no half-made --out left)
    res = invoke("selftrain", *same)
    assert res.exit_code == 2 and "--resume" in res.output and "--overwrite" in res.output
    res = invoke("selftrain", "--model", teacher, "--unlabeled", unl, "--out", st, "--resume")
    assert res.exit_code == 2 and "pseudolabel" in res.output and "pseudo_weight" in res.output, res.output
    res = invoke("selftrain", "--model", setup["root"] / "prep", "--unlabeled", unl, "--out", tmp_path / "x")
    assert res.exit_code == 2 and "not a lowres run folder" in res.output and not (tmp_path / "x").exists()
    res = invoke("selftrain", "--model", teacher, "--unlabeled", unl, "--out", tmp_path / "x", "--pseudo-weight", 0)
    assert res.exit_code == 2 and "pseudo.weight" in res.output and "Traceback" not in res.output, res.output
    res = invoke("selftrain", "--model", teacher, "--unlabeled", unl, "--out", tmp_path / "x", "--lm", tmp_path / "no")
    assert res.exit_code == 2 and "Traceback" not in res.output and not (tmp_path / "x").exists(), res.output
