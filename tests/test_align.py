"""lowres align end to end: a tiny model trained on tone "speech" aligns a long recording of tone sentences whose
true boundaries the test knows; folders of pairs with halves missing; text that cannot fit; prepare reads the
result."""

from __future__ import annotations

import io
import json
import random
import statistics
from pathlib import Path

import factory
import numpy as np
import pytest
import soundfile as sf
from factory import invoke, read_jsonl

SMALL_WINDOWS = ["--set", "align.window_s=6", "--set", "align.context_s=1"]  # a 30-s file in several windows


def _recording(path: Path, n: int, seed: int) -> list[dict]:
    """``path``.wav of ``n`` tone sentences with pauses between them, ``path``.txt with one per line; the truth."""
    rng = random.Random(seed)
    parts, truth, t = [], [], 0.0
    for i in range(n):
        text = " ".join(rng.choice(("abc", "dog", "ego", "bad", "cab")) for _ in range(rng.randint(2, 3)))
        gap = np.zeros(int(16000 * rng.uniform(0.4, 1.2)), np.float32)
        clip = factory.tone_speech(text, seed=seed * 100 + i)
        parts += [gap, clip]
        t += len(gap) / 16000
        truth.append({"text": text, "start": t + 0.1, "end": t + len(clip) / 16000 - 0.1})  # tone_speech pads 0.1 s
        t += len(clip) / 16000
    parts.append(np.zeros(8000, np.float32))
    sf.write(path.with_suffix(".wav"), np.concatenate(parts), 16000, subtype="PCM_16")
    path.with_suffix(".txt").write_text("".join(x["text"] + "\n" for x in truth), encoding="utf-8")
    return truth


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("align")
    factory.tone_table(root / "lab" / "c.csv", n=24)
    res = invoke("prepare", root / "lab" / "c.csv", "--out", root / "prep", "-q", "--dev-fraction", 0.15,
                 "--test-fraction", 0.15)
    assert res.exit_code == 0, res.output
    res = invoke("finetune", "--data", root / "prep", "--split", "full", "--base", "tiny", "--out", root / "model",
                 "--max-steps", 40, *factory.TONE_LEARNER, "--eval-every", 40, "--quiet")
    assert res.exit_code == 0, res.output
    truth = _recording(root / "long", 12, seed=3)
    res = invoke("align", root / "long.wav", root / "long.txt", "--model", root / "model", "--out", root / "a",
                 "--min-score", -50, *SMALL_WINDOWS, "-q")
    assert res.exit_code == 0, res.output
    return {"root": root, "model": root / "model", "truth": truth, "a": root / "a"}


def test_lines_are_cut_where_they_are_spoken(setup):
    segs = read_jsonl(setup["a"] / "segments.jsonl")
    truth = setup["truth"]
    assert [s["line"] for s in segs] == list(range(1, 13))  # every line kept, in order, numbered as in the file
    assert [s["text"] for s in segs] == [t["text"] for t in truth]  # as written: prepare normalises it
    errors = [abs(s[k] - truth[s["line"] - 1][k]) for s in segs for k in ("start", "end")]
    assert statistics.median(errors) < 0.1  # within 100 ms of where each line's first and last tone are
    for a, b in zip(segs, segs[1:], strict=False):
        assert a["start"] < a["end"] <= b["start"] < b["end"]
        assert a["offset"] + a["duration"] <= b["offset"] + 1e-6  # padded clips do not overlap
    s = segs[0]
    assert s["offset"] <= s["start"] and s["offset"] + s["duration"] >= s["end"]  # the pad around the speech
    assert Path(s["audio"]).is_absolute() and s["audio"].endswith("long.wav")
    report = json.loads((setup["a"] / "align_report.json").read_text())
    assert report["lines"] == report["kept"] == 12 and report["files"] == 1
    assert report["per_file"][0]["frames"] == int(sf.info(setup["root"] / "long.wav").frames // 320)
    assert report["peak_memory_mb"] > 0 and report["real_time_factor"] > 0


def test_prepare_reads_the_segments_as_a_corpus(setup, tmp_path):
    res = invoke("prepare", setup["a"] / "segments.jsonl", "--out", tmp_path / "prep", "-q", "--dev-fraction", 0.2,
                 "--test-fraction", 0.2)
    assert res.exit_code == 0, res.output
    rows = [r for name in ("full", "dev", "test") for r in read_jsonl(tmp_path / "prep" / "manifests" /
                                                                        f"{name}.jsonl")]
    segs = {round(s["offset"], 3): s for s in read_jsonl(setup["a"] / "segments.jsonl")}
    assert len(rows) == 12
    for r in rows:
        s = segs[round(r["offset"], 3)]
        assert r["duration"] == pytest.approx(s["duration"], abs=1e-3) and r["text"] == s["text"]


def test_a_folder_of_pairs_aligns_what_it_can_and_says_why_not_the_rest(setup, tmp_path):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    _recording(pairs / "ch1", 4, seed=7)
    _recording(pairs / "ch2", 3, seed=8)
    (pairs / "ch2.txt").unlink()  # a recording without its text
    (pairs / "ch3.txt").write_text("abc dog\n", encoding="utf-8")  # a text without its recording
    _recording(pairs / "ch4", 2, seed=9)
    (pairs / "ch4.txt").write_text("\n  \n", encoding="utf-8")  # an empty text
    _recording(pairs / "ch5", 2, seed=10)
    (pairs / "ch5.txt").write_text("abc dog ego bad cab " * 40 + "\n", encoding="utf-8")  # far more than is said
    res = invoke("align", "--pairs", pairs, "--model", setup["model"], "--out", tmp_path / "out", "--min-score", -50,
                 *SMALL_WINDOWS)
    assert res.exit_code == 0, res.output
    segs = read_jsonl(tmp_path / "out" / "segments.jsonl")
    assert {s["file"] for s in segs} == {"ch1"} and len(segs) == 4
    reasons = {r["file"]: r["reason"] for r in read_jsonl(tmp_path / "out" / "rejects.jsonl")}
    assert reasons == {"ch2": "no_text", "ch3": "no_audio", "ch4": "no_text", "ch5": "text_too_long"}
    assert "text_too_long" in res.output.replace(" ", "_") or "too long" in res.output
    # the same pair alone gives nothing to keep: an error that says why, and the rejects are written
    res = invoke("align", pairs / "ch5.wav", pairs / "ch5.txt", "--model", setup["model"], "--out", tmp_path / "o5")
    assert res.exit_code == 2 and "No line could be aligned" in res.output and "Traceback" not in res.output
    assert read_jsonl(tmp_path / "o5" / "rejects.jsonl")[0]["reason"] == "text_too_long"


def test_characters_the_model_lacks_are_counted_and_aligned_as_a_wildcard(setup, tmp_path):
    truth = _recording(tmp_path / "r", 3, seed=11)
    lines = [t["text"] for t in truth]
    lines[1] = lines[1] + " zzz"  # z is no letter the model knows (it is not said either: the star takes nothing)
    (tmp_path / "r.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = invoke("align", tmp_path / "r.wav", tmp_path / "r.txt", "--model", setup["model"], "--out", tmp_path / "o",
                 "--min-score", -50)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "align_report.json").read_text())
    assert report["outside_vocabulary"] == {"z": 3}
    assert "not in the model's vocabulary" in res.output
    assert len(read_jsonl(tmp_path / "o" / "segments.jsonl")) == 3


def test_progress_over_a_long_files_windows_goes_to_the_log(setup, tmp_path):
    from rich.console import Console

    from lowres.align import Pair, run_align
    from lowres.config import AlignConfig

    log = io.StringIO()
    root = setup["root"]
    run_align(setup["model"], [Pair("long", root / "long.wav", root / "long.txt")], tmp_path / "o",
              AlignConfig(window_s=6, context_s=1, min_score=-50), device_name="cpu",
              console=Console(file=log, width=200))
    text = log.getvalue()
    assert "long:" in text and "window" in text and "aligning" in text  # plain progress lines, not a bar
    assert "aligned: kept 12 of 12 lines" in text


def test_a_second_pass_is_compared_with_the_first(setup, tmp_path):
    root = setup["root"]
    res = invoke("align", root / "long.wav", root / "long.txt", "--model", setup["model"], "--out", tmp_path / "b",
                 "--min-score", -50, *SMALL_WINDOWS, "--compare", setup["a"], "-q")
    assert res.exit_code == 0, res.output
    c = json.loads((tmp_path / "b" / "align_report.json").read_text())["compared_to"]
    assert c["kept_by_both"] == 12 and c["kept_now_only"] == c["kept_before_only"] == 0
    assert c["boundary_shift_median_s"] == 0.0  # the same model: the same boundaries


def test_mistakes_get_a_message_and_touch_nothing(setup, tmp_path):
    root = setup["root"]
    res = invoke("align", root / "long.wav", root / "long.txt", "--pairs", root, "--model", setup["model"],
                 "--out", tmp_path / "x")
    assert res.exit_code == 2 and "not both" in res.output
    res = invoke("align", root / "long.wav", "--model", setup["model"], "--out", tmp_path / "x")
    assert res.exit_code == 2 and "--pairs" in res.output
    res = invoke("align", root / "nope.wav", root / "long.txt", "--model", setup["model"], "--out", tmp_path / "x")
    assert res.exit_code == 2 and "nope.wav" in res.output
    res = invoke("align", root / "long.wav", root / "long.txt", "--model", setup["model"], "--out", tmp_path / "x",
                 "--set", "align.windw_s=3")
    assert res.exit_code == 2 and "windw_s" in res.output
    res = invoke("align", root / "long.wav", root / "long.txt", "--model", root / "prep", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert not (tmp_path / "x").exists()
    res = invoke("align", root / "long.wav", root / "long.txt", "--model", setup["model"], "--out", setup["a"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert all("Traceback" not in r for r in (res.output,))


def test_lines_that_are_not_in_the_audio_are_rejected_and_their_neighbours_kept(setup, tmp_path):
    root = setup["root"]
    lines = (root / "long.txt").read_text(encoding="utf-8").splitlines()
    intruders = ["bad cab dog ego", "ego ego abc"]  # said nowhere in the recording
    text = [*lines[:5], *intruders, *lines[5:]]
    (tmp_path / "t.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    # the toy model reads tones less surely than a real model reads speech: its lines score -0.1 to -1.1, the
    # intruders squeezed in -1.4 to -1.9 (a real model's intruders: -3 and lower, hence the default -2)
    res = invoke("align", root / "long.wav", tmp_path / "t.txt", "--model", setup["model"], "--out", tmp_path / "o",
                 "--min-score", -1.2, *SMALL_WINDOWS, "-q")
    assert res.exit_code == 0, res.output
    rejected = {r["line"]: r["reason"] for r in read_jsonl(tmp_path / "o" / "rejects.jsonl")}
    assert rejected == {6: "low_score", 7: "low_score"}
    segs = read_jsonl(tmp_path / "o" / "segments.jsonl")
    clean = read_jsonl(setup["a"] / "segments.jsonl")  # the same recording aligned with its true text
    assert [s["text"] for s in segs] == [c["text"] for c in clean]
    moved = [abs(s[k] - c[k]) for s, c in zip(segs, clean, strict=True) for k in ("start", "end")]
    assert max(moved) <= 0.04  # the lines around the intruders stay where they were without them


def test_a_lines_ends_move_out_to_where_its_sound_stops_not_into_a_neighbour():
    from lowres.align import _loud_until

    db = np.full(60, -80.0)
    db[10:20] = -10  # a line's sound, frames 10-19 ...
    db[22:30] = -12  # ... with a 2-frame closure inside (shorter than the gap allowed)
    db[40:50] = -10  # the next line
    assert _loud_until(db, 15, 60, -45, gap=5, step=1) == 30  # forward past the closure, to the sound's end
    assert _loud_until(db, 15, 60, -45, gap=1, step=1) == 20  # a shorter gap allowed stops at the closure
    assert _loud_until(db, 15, 26, -45, gap=5, step=1) == 26  # never past the limit (the next line's start)
    assert _loud_until(db, 24, -1, -45, gap=5, step=-1) == 10  # backwards to where the sound starts
    assert _loud_until(db, 35, 60, -45, gap=3, step=1) == 35  # silence from the start: the boundary stays
