"""lowres.inference.transcribe_files and the transcribe command on a tiny one-update run.

The contract (#14): one file that cannot be transcribed (missing, a folder, not audio, no samples) never
stops the batch: the command prints one line on stderr naming the file and why, writes every other file's
transcript to stdout in input order, and ends with exit status 2 and one paragraph naming the files that
failed; no traceback. A clip shorter than one frame of the model is transcribed as empty text. Files that
are all missing are refused before the model is loaded. The library raises at the first bad file unless
given ``on_error``. A long file gets a progress bar over its chunks (hidden once it is done); a piped stdout
gets nothing but the transcripts.
"""

from __future__ import annotations

import json
from pathlib import Path

import factory
import numpy as np
import pytest
import soundfile as sf
from factory import FAST, invoke

from lowres import LowresError
from lowres.inference import plan_chunks, transcribe_files


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("transcribe")
    prepared = factory.prepared_corpus(root, n=12, speakers=4)
    res = invoke("finetune", "--data", prepared, "--split", "full", "--base", "tiny", "--out", root / "run",
                 "--max-steps", 1, "--eval-every", 0, *FAST)
    assert res.exit_code == 0, res.output
    return root / "run"


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    good = factory.write_audio(tmp_path / "good.wav", 2.0, seed=1)
    other = factory.write_audio(tmp_path / "other.flac", 1.5, seed=2)
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, np.zeros(10, np.float32), 16000)  # shorter than one frame (400 samples)
    (tmp_path / "folder.wav").mkdir()
    return {"good": good, "other": other, "fake": fake, "empty": empty, "tiny": tiny,
            "missing": tmp_path / "missing.wav", "folder": tmp_path / "folder.wav"}


def test_one_bad_file_does_not_stop_the_batch(run, files):
    """#14: the first bad file ended the command; the files after it were never transcribed."""
    order = ["good", "fake", "missing", "tiny", "empty", "folder", "other"]
    res = invoke("transcribe", "--model", run, *[files[k] for k in order])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    lines = res.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(files[k]) for k in ("good", "tiny", "other")]
    assert lines[1] == f"{files['tiny']}\t"  # too short to hear anything: empty text, not a failure
    err = res.stderr.splitlines()
    assert len(err) >= 5 and all(line.startswith("skipped: ") for line in err[:4]), err
    assert err[0].startswith(f"skipped: {files['fake']}: cannot be read as audio (")  # the reason: item 9's
    assert err[1] == f"skipped: {files['missing']}: no such file."
    assert err[2] == (f"skipped: {files['empty']}: cannot be read as audio (the file holds no samples). Give a wav, "
                      "flac, ogg or mp3 file.")
    assert err[3] == f"skipped: {files['folder']}: a folder, not an audio file."
    summary = " ".join(err[4:])
    assert summary == (f"error: 4 of 7 files could not be transcribed: {files['fake']}, {files['missing']}, "
                       f"{files['empty']}, {files['folder']} (the reasons are above; the other files' transcripts "
                       "were written).")


def test_all_good_files_exit_zero_and_all_missing_are_refused_first(run, files, monkeypatch):
    res = invoke("transcribe", "--model", run, "--json", files["good"], files["other"])
    assert res.exit_code == 0 and res.stderr == "", res.output
    assert [json.loads(line)["audio"] for line in res.stdout.splitlines()] == [str(files["good"]), str(files["other"])]
    import lowres.bases

    monkeypatch.setattr(lowres.bases, "load_run", lambda *a, **k: pytest.fail("the model was loaded"))
    res = invoke("transcribe", "--model", run, files["missing"], files["folder"])
    assert res.exit_code == 2 and "Audio file(s) not found" in res.output and "Traceback" not in res.output


def test_the_library_raises_at_the_first_bad_file_without_on_error(run, files):
    results = transcribe_files(run, [files["good"], files["fake"], files["other"]], "cpu")
    assert next(results)[0] == files["good"]
    with pytest.raises(LowresError, match="fake.wav: cannot be read as audio"):
        next(results)
    seen = []
    got = list(transcribe_files(run, [files["fake"], files["good"]], "cpu", on_error=lambda f, why: seen.append(f)))
    assert [f for f, _ in got] == [files["good"]] and seen == [files["fake"]]


class Recorder:
    """Stands in for a rich Progress: what was added, advanced and hidden."""

    def __init__(self):
        self.tasks: dict[int, dict] = {}

    def add_task(self, description, total=None, **fields):
        self.tasks[len(self.tasks)] = {"description": description, "total": total, "done": 0, "visible": True}
        return len(self.tasks) - 1

    def advance(self, task, n=1):
        self.tasks[task]["done"] += n

    def update(self, task, visible=True, **fields):
        self.tasks[task]["visible"] = visible


def test_a_long_file_gets_progress_over_its_chunks(run, tmp_path):
    """#14: a 2-hour file gave no progress at all."""
    long = factory.write_audio(tmp_path / "long.wav", 50.0, seed=4)
    short = factory.write_audio(tmp_path / "short.wav", 2.0, seed=5)
    chunks = len(plan_chunks(long, 10.0))
    assert chunks >= 5
    progress = Recorder()
    got = list(transcribe_files(run, [short, long], "cpu", 10.0, progress=progress))
    assert [f for f, _ in got] == [short, long]
    assert list(progress.tasks.values()) == [{"description": "long.wav", "total": chunks, "done": chunks,
                                              "visible": False}]  # none for a one-piece file
    # the command's stdout is piped here: nothing but the transcripts
    res = invoke("transcribe", "--model", run, "--chunk", 10, long)
    assert res.exit_code == 0 and res.output.splitlines() == [f"{long}\t{got[1][1]}"], res.output
