"""The prepare command through Typer's test runner: wiring, messages, exit codes."""

import json
import subprocess
import sys

from factory import table
from typer.testing import CliRunner

from lowres.cli import app

runner = CliRunner()


def test_help_is_fast_and_explains():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "prepare" in result.output
    result = runner.invoke(app, ["prepare", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output
    # --help, of the tool and of each command, imports nothing heavy (torch alone takes seconds; measure with
    # `python -X importtime -m lowres --help`)
    heavy = ("torch", "numpy", "soundfile", "sklearn", "matplotlib", "transformers", "peft", "jiwer", "torchaudio")
    for argv in (["--help"], *([cmd, "--help"] for cmd in ("prepare", "adapt", "finetune", "eval", "transcribe"))):
        code = (f"import sys; from lowres.cli import app; sys.argv=['lowres', *{argv!r}]\ntry:\n app()\n"
                f"except SystemExit: pass\nprint(sorted(m for m in {heavy!r} if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "[]", (argv, out[-300:])


def test_prepare_cli_end_to_end(tmp_path):
    corpus = table(tmp_path / "corpus" / "data.csv", n=12)
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", str(corpus), "--out", str(out), "--emit", "fairseq", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "full" in result.output and "rejected 0" in result.output
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["seed"] == 3 and (out / "fairseq" / "full.tsv").is_file()
    again = runner.invoke(app, ["prepare", str(corpus), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output and "Traceback" not in again.output
    assert runner.invoke(app, ["prepare", str(corpus), "--out", str(out), "--overwrite", "-q"]).exit_code == 0


def test_user_mistakes_are_one_clear_message(tmp_path):
    corpus = table(tmp_path / "corpus" / "data.csv", n=4)
    cases = [
        (["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "o1")], "Corpus not found"),
        (["prepare", str(corpus), "--out", str(tmp_path / "o2"), "--format", "kaldi"], "does not look like"),
        (["prepare", str(corpus), "--out", str(tmp_path / "o3"), "--digits", "spell"], "digits"),
        (["prepare", str(corpus), "--out", str(tmp_path / "o4"), "--lang", "xx"], "No text rules"),
        (["prepare", str(corpus), "--out", str(tmp_path / "o5"), "--min-segment", "10"], "twice"),
        (["prepare", "--out", str(tmp_path / "o6"), "--unlabeled", str(tmp_path / "nowhere")], "not a folder"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
    bad_format = runner.invoke(app, ["prepare", str(corpus), "--out", str(tmp_path / "o7"), "--format", "wav"])
    assert bad_format.exit_code == 2 and "Traceback" not in bad_format.output


def test_unlabeled_only(tmp_path):
    from factory import write_audio

    write_audio(tmp_path / "unl" / "x.flac", 20.0)
    out = tmp_path / "out"
    result = runner.invoke(app, ["prepare", "--unlabeled", str(tmp_path / "unl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "unlabeled:" in result.output
    assert len((out / "unlabeled.jsonl").read_text().splitlines()) == 2
