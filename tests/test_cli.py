"""The CLI wiring, with the heavy call patched: what each command resolves and hands to its one library function.

Contract: a command parses its flags, resolves the configuration (defaults < shipped recipe < --recipe <
--set < explicit flags) and calls one library function with it; nothing trains here. A user mistake ends
in one paragraph on the console and exit status 2, without a traceback and without calling the function.
The commands import their library function inside the command, so patching the module attribute is enough.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from pathlib import Path

import factory
import pytest
from factory import invoke

from lowres.config import PrepareConfig, resolve_adapt, resolve_finetune


class Recorder:
    """Stands in for library function ``real``: records each call, bound to ``real``'s signature (so a test
    reads arguments by name however the command passes them), and returns ``result``."""

    def __init__(self, real, result=None):
        self.signature = inspect.signature(real)
        self.calls: list[dict] = []
        self.result = result

    def __call__(self, *args, **kwargs):
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        self.calls.append(dict(bound.arguments))
        return self.result

    @property
    def call(self) -> dict:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]

    @property
    def cfg(self):
        return self.call["cfg"]


@pytest.fixture
def finetune(monkeypatch) -> Recorder:
    import lowres.train.finetune

    rec = Recorder(lowres.train.finetune.run_finetune, {})
    monkeypatch.setattr(lowres.train.finetune, "run_finetune", rec)
    return rec


@pytest.fixture
def adapt(monkeypatch) -> Recorder:
    import lowres.train.adapt

    rec = Recorder(lowres.train.adapt.run_adapt, {})
    monkeypatch.setattr(lowres.train.adapt, "run_adapt", rec)
    return rec


@pytest.fixture
def run_eval(monkeypatch) -> Recorder:
    import lowres.evaluate

    rec = Recorder(lowres.evaluate.run_eval, {"wer": 0.5, "cer": 0.25, "num_utterances": 3, "rtf": 0.01})
    monkeypatch.setattr(lowres.evaluate, "run_eval", rec)
    return rec


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return factory.prepared_corpus(tmp_path_factory.mktemp("corpus"), n=12, speakers=4)


def assert_user_error(res, message: str, *never_called: Recorder) -> None:
    """Exit 2, the message in one paragraph, no traceback, and the library function never reached."""
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert message in " ".join(text.split()), (message, text)
    assert "Traceback" not in text and "\n\n" not in text
    for rec in never_called:
        assert rec.calls == []


# ---------------------------------------------------------------------------------------------------
# finetune


def test_finetune_flags_become_config_fields(finetune, tmp_path):
    res = invoke("finetune", "--data", tmp_path / "prep", "--split", "10min", "--base", "tiny", "--out",
                 tmp_path / "run", "--max-steps", 7, "--lora-rank", 16, "--lr", 0.002, "--batch-seconds", 33,
                 "--accumulate", 3, "--eval-every", 5, "--device", "cpu", "--seed", 9, "--quiet")
    assert res.exit_code == 0, res.output
    cfg = finetune.cfg
    assert (cfg.data, cfg.split, cfg.base) == (str(tmp_path / "prep"), "10min", "tiny")
    assert (cfg.train.max_steps, cfg.train.batch_seconds, cfg.train.accumulate, cfg.train.eval_every,
            cfg.train.device, cfg.train.seed) == (7, 33.0, 3, 5, "cpu", 9)
    assert (cfg.lora.rank, cfg.lora.enabled, cfg.optim.lr) == (16, True, 0.002)
    # everything the flags do not name is the split's resolved recipe
    shipped = resolve_finetune("10min")
    assert (cfg.model, cfg.schedule, cfg.augment) == (shipped.model, shipped.schedule, shipped.augment)
    assert cfg.train.head_only_steps == shipped.train.head_only_steps
    call = finetune.call
    assert Path(call["out"]) == tmp_path / "run"
    assert call["resume"] is False and call["overwrite"] is False and call["console"] is None
    assert call["resume_train"] is None


def test_finetune_without_flags_is_the_split_recipe(finetune, tmp_path):
    res = invoke("finetune", "--data", tmp_path, "--split", "10h", "--base", "tiny", "--out", tmp_path / "r", "-q")
    assert res.exit_code == 0, res.output
    expected = resolve_finetune("10h", flags={"data": str(tmp_path), "base": "tiny"})
    assert finetune.cfg == replace(expected, method="none")  # a random init has no method of its own


def test_finetune_takes_the_bases_method_unless_told_otherwise(finetune, tmp_path):
    """#29: the method is a property of the base: tiny-ssl (a small encoder) trains whole with the conv encoder
    above its lowest 3 layers (recipes/tiny_ssl.toml); --recipe, --set and flags still override its values, and
    --set method=none leaves the split recipe alone."""
    res = invoke("finetune", "--data", tmp_path, "--split", "10min", "--base", "tiny-ssl", "--out", tmp_path / "r",
                 "-q")
    assert res.exit_code == 0, res.output
    cfg = finetune.calls[-1]["cfg"]
    assert cfg.method == "tiny_ssl" and not cfg.lora.enabled and cfg.model.frozen_conv_layers == 3
    assert (cfg.train.max_steps, cfg.train.batch_seconds, cfg.train.head_only_steps) == (1500, 20.0, 0)
    res = invoke("finetune", "--data", tmp_path, "--split", "10min", "--base", "tiny-ssl", "--out", tmp_path / "r",
                 "--max-steps", 40, "--set", "lora.enabled=true", "-q")
    assert res.exit_code == 0 and (finetune.calls[-1]["cfg"].train.max_steps, finetune.calls[-1]["cfg"].lora.enabled) == (40, True)
    res = invoke("finetune", "--data", tmp_path, "--split", "10min", "--base", "tiny-ssl", "--out", tmp_path / "r",
                 "--set", "method=none", "-q")
    assert res.exit_code == 0 and finetune.calls[-1]["cfg"] == replace(
        resolve_finetune("10min", flags={"data": str(tmp_path), "base": "tiny-ssl"}), method="none")
    res = invoke("finetune", "--data", tmp_path, "--split", "10min", "--base", "whisper-base", "--out",
                 tmp_path / "r", "-q")
    assert res.exit_code == 0 and finetune.calls[-1]["cfg"].method == "whisper"
    cfg = finetune.calls[-1]["cfg"]
    assert (cfg.train.batch_seconds, cfg.optim.head_lr, cfg.train.max_steps) == (20.0, 5e-3, 1100)


def test_finetune_set_and_recipe_precedence(finetune, tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text("[train]\nsave_every = 3\nmax_steps = 40\n[optim]\nlr = 0.125\n")
    res = invoke("finetune", "--data", tmp_path, "--base", "tiny", "--out", tmp_path / "r", "--recipe", recipe,
                 "--set", "train.save_every=4", "--set", "train.max_steps=50", "--max-steps", 7,
                 "--set", "model.mask_prob=0.3", "--set", "optim.head_lr=null", "-q")
    assert res.exit_code == 0, res.output
    cfg = finetune.cfg
    assert cfg.train.save_every == 4  # --set beats --recipe
    assert cfg.train.max_steps == 7  # the flag beats --set
    assert cfg.optim.lr == 0.125  # --recipe beats the shipped recipe
    assert cfg.model.mask_prob == 0.3 and cfg.optim.head_lr is None
    assert cfg.split == "1h"  # the default split


@pytest.mark.parametrize(("flags", "enabled"), [([], True), (["--no-lora"], False)])
def test_finetune_no_lora(finetune, tmp_path, flags, enabled):
    res = invoke("finetune", "--data", tmp_path, "--base", "tiny", "--out", tmp_path / "r", *flags, "-q")
    assert res.exit_code == 0, res.output
    assert finetune.cfg.lora.enabled is enabled


def test_finetune_resume_passes_the_changes_as_resume_train(finetune, tmp_path):
    res = invoke("finetune", "--resume", "--out", tmp_path / "r", "--max-steps", 20, "--accumulate", 4,
                 "--set", "train.log_every=2", "-q")
    assert res.exit_code == 0, res.output
    call = finetune.call
    assert call["resume"] is True
    assert call["resume_train"] == {"train": {"max_steps": 20, "accumulate": 4, "log_every": "2"}}


def test_finetune_resume_without_changes(finetune, tmp_path):
    assert invoke("finetune", "--resume", "--out", tmp_path / "r", "-q").exit_code == 0
    assert finetune.call["resume"] is True and finetune.call["resume_train"] == {}


@pytest.mark.parametrize(("args", "message"), [
    (["--split", "2h"], "--split must be one of 10min, 1h, 10h, full"),
    (["--set", "optim.lrr=1"], "Did you mean optim.lr?"),
    (["--set", "train.lr=1e-4"], "Unknown setting train.lr. Did you mean optim.lr?"),
    (["--set", "model.mask_prob=1.5"], "mask_prob"),
    (["--set", "train.max_steps=many"], "train.max_steps: expected an integer"),
    (["--set", "optim.lr"], "--set takes key=value"),
    (["--set", "train=5"], "Setting train is a section"),
    (["--recipe", "no-such-recipe"], "Recipe not found: no-such-recipe"),
])
def test_finetune_bad_settings(finetune, tmp_path, args, message):
    res = invoke("finetune", "--data", tmp_path, "--base", "tiny", "--out", tmp_path / "r", *args, "-q")
    assert_user_error(res, message, finetune)


def test_finetune_missing_inputs(finetune, tmp_path):
    assert_user_error(invoke("finetune", "--data", tmp_path, "--out", tmp_path / "r"), "--base is required",
                      finetune)
    assert_user_error(invoke("finetune", "--base", "tiny", "--out", tmp_path / "r"), "--data is required", finetune)


def test_a_flag_of_the_wrong_type_is_a_usage_error(finetune, tmp_path):
    res = invoke("finetune", "--data", tmp_path, "--base", "tiny", "--out", tmp_path / "r", "--max-steps", "many")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "Invalid value for '--max-steps'" in res.output
    assert finetune.calls == []


# ---------------------------------------------------------------------------------------------------
# adapt


def test_adapt_flags_become_config_fields(adapt, tmp_path):
    res = invoke("adapt", "--unlabeled", tmp_path / "audio", "--base", "tiny", "--out", tmp_path / "a",
                 "--objective", "wav2vec2", "--max-steps", 12, "--lr", 3e-4, "--batch-seconds", 25, "--accumulate", 2, "--device", "cpu",
                 "--seed", 4, "--set", "gumbel.min=0.1", "-q")
    assert res.exit_code == 0, res.output
    cfg = adapt.cfg
    assert (cfg.unlabeled, cfg.base) == (str(tmp_path / "audio"), "tiny")
    assert (cfg.train.max_steps, cfg.optim.lr, cfg.train.batch_seconds, cfg.train.accumulate, cfg.train.device,
            cfg.train.seed, cfg.gumbel.min) == (12, 3e-4, 25.0, 2, "cpu", 4, 0.1)
    assert cfg.lora.enabled is False  # adapt trains the whole transformer unless --lora
    shipped = resolve_adapt()
    assert (cfg.model, cfg.loss, cfg.quantizer) == (shipped.model, shipped.loss, shipped.quantizer)
    call = adapt.call
    assert Path(call["out"]) == tmp_path / "a"
    assert call["resume"] is False and call["resume_train"] is None and call["console"] is None


def test_adapt_lora(adapt, tmp_path):
    res = invoke("adapt", "--unlabeled", tmp_path, "--base", "tiny", "--out", tmp_path / "a", "--lora", "-q",
                 "--objective", "wav2vec2")
    assert res.exit_code == 0, res.output
    assert adapt.cfg.lora.enabled is True
    assert adapt.cfg == resolve_adapt(flags={"unlabeled": str(tmp_path), "base": "tiny", "lora.enabled": True})


@pytest.mark.parametrize(("base", "objective"), [("tiny", "hubert"), ("small", "hubert"), ("xls-r-300m", "wav2vec2"),
                                                  ("hubert-base", "hubert"), ("wavlm-base-plus", "hubert")])
def test_adapt_objective_auto_follows_the_base(adapt, tmp_path, base, objective):
    res = invoke("adapt", "--unlabeled", tmp_path, "--base", base, "--out", tmp_path / "a", "-q")
    assert res.exit_code == 0, res.output
    assert adapt.cfg.objective == objective
    assert adapt.cfg.model.mask_prob == (0.8 if objective == "hubert" else 0.65)  # adapt_hubert.toml's delta


def test_adapt_hubert_flags(adapt, tmp_path):
    res = invoke("adapt", "--objective", "hubert", "--unlabeled", tmp_path, "--base", "tiny", "--out", tmp_path / "a",
                 "--targets", "layer:3", "--clusters", 50, "-q")
    assert res.exit_code == 0, res.output
    u = adapt.cfg.units
    assert (adapt.cfg.objective, u.targets, u.clusters, u.reuse) == ("hubert", "layer:3", 50, "")
    res = invoke("adapt", "--objective", "hubert", "--unlabeled", tmp_path, "--base", "tiny", "--out", tmp_path / "a",
                 "--units", tmp_path / "u", "-q")
    assert res.exit_code == 0, res.output
    u = adapt.calls[-1]["cfg"].units
    assert (u.targets, u.clusters, u.reuse) == ("auto", 0, str(tmp_path / "u"))
    # the units of --units are that run's: a --clusters beside it was recorded in config.json and ignored
    res = invoke("adapt", "--objective", "hubert", "--unlabeled", tmp_path, "--base", "tiny", "--out", tmp_path / "b",
                 "--clusters", 100, "--units", tmp_path / "u", "-q")
    assert res.exit_code == 2 and "units.clusters (--clusters) cannot change them" in " ".join(res.output.split())


@pytest.mark.parametrize(("args", "message"), [
    (["--objective", "wav2vec2", "--clusters", "50"], "--clusters applies to --objective hubert only"),
    (["--objective", "hubert", "--clusters", "1"], "--clusters 1: k-means needs 2 clusters or more"),
    (["--objective", "hubert", "--clusters", "0"], "Leave --clusters out for HuBERT's number (100 for mfcc"),
    (["--objective", "hubert", "--targets", "layer"], "units.targets must be auto, mfcc or layer:N"),
    (["--objective", "contrastive"], "--objective must be auto, wav2vec2 or hubert"),
])
def test_adapt_objective_mistakes(adapt, tmp_path, args, message):
    assert_user_error(invoke("adapt", "--unlabeled", tmp_path, "--base", "tiny", "--out", tmp_path / "a", *args, "-q"),
                      message, adapt)


def test_adapt_resume_passes_resume_train(adapt, tmp_path):
    res = invoke("adapt", "--resume", "--out", tmp_path / "a", "--max-steps", 30, "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    assert adapt.call["resume"] is True
    assert adapt.call["resume_train"] == {"train": {"max_steps": 30, "device": "cpu"}}


@pytest.mark.parametrize(("args", "message"), [
    (["--base", "tiny"], "adapt needs --unlabeled"),
    (["--unlabeled", "x"], "adapt needs --unlabeled"),
    (["--unlabeled", "x", "--base", "tiny", "--set", "gumbel.mn=1"], "Did you mean gumbel.min?"),
    (["--unlabeled", "x", "--base", "tiny", "--set", "model.mask_prob=1"], "mask_prob"),
])
def test_adapt_bad_flags(adapt, tmp_path, args, message):
    assert_user_error(invoke("adapt", *args, "--out", tmp_path / "a", "-q"), message, adapt)


# ---------------------------------------------------------------------------------------------------
# eval, transcribe, export, prepare


def test_eval_with_a_manifest(run_eval, prepared, tmp_path):
    manifest = prepared / "manifests" / "test.jsonl"
    res = invoke("eval", "--model", tmp_path / "run", "--manifest", manifest, "--batch-seconds", 30,
                 "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    call = run_eval.call
    assert Path(call["model_dir"]) == tmp_path / "run" and Path(call["manifest"]) == manifest
    assert (call["out"], call["device_name"], call["options"].batch_seconds) == (None, "cpu", 30.0)
    assert call["options"].lm is None and call["tune_on"] is None and call["console"] is None
    assert "WER 50.00%  CER 25.00%  (3 utterances" in res.output


@pytest.mark.parametrize("split", ["test", "dev", "10min"])
def test_eval_data_and_split_pick_the_manifest(run_eval, prepared, tmp_path, split):
    res = invoke("eval", "--model", tmp_path / "run", "--data", prepared, "--split", split, "--out", tmp_path / "o",
                 "-q")
    assert res.exit_code == 0, res.output
    call = run_eval.call
    assert Path(call["manifest"]) == prepared / "manifests" / f"{split}.jsonl" and Path(call["out"]) == tmp_path / "o"
    assert (call["device_name"], call["options"].batch_seconds) == ("auto", 120.0)  # the defaults


@pytest.mark.parametrize(("with_data", "args", "message"), [
    (False, [], "Say what to evaluate on"),
    (True, ["--split", "nosuch"], "Available:"),
    (True, ["--manifest", "{prep}/manifests/test.jsonl"], "Give --manifest or --data/--split, not both"),
    (False, ["--manifest", "{prep}/missing.jsonl"], "missing.jsonl: file not found"),
    (True, ["--lm-weight", "0.5"], "--lm-weight needs --lm LM_DIR"),
    (True, ["--lexicon", "lex.txt", "--word-score", "1"], "--lexicon, --word-score need --lm"),
    (True, ["--tune-lm"], "--tune-lm needs --lm"),
])
def test_eval_bad_flags(run_eval, prepared, tmp_path, with_data, args, message):
    args = [a.replace("{prep}", str(prepared)) for a in args]
    data = ["--data", prepared] if with_data else []
    assert_user_error(invoke("eval", "--model", tmp_path, *data, *args), message, run_eval)


def test_transcribe_passes_files_and_prints_text(monkeypatch, tmp_path):
    import lowres.inference

    rec = Recorder(lowres.inference.transcribe_files, [(tmp_path / "a.wav", "habari ya leo"), (tmp_path / "b.wav", "")])
    monkeypatch.setattr(lowres.inference, "transcribe_files", rec)
    res = invoke("transcribe", "--model", tmp_path / "run", "--chunk", 12, "--device", "cpu",
                 tmp_path / "a.wav", tmp_path / "b.wav")
    assert res.exit_code == 0, res.output
    call = rec.call
    assert Path(call["run_dir"]) == tmp_path / "run"
    assert [Path(p) for p in call["files"]] == [tmp_path / "a.wav", tmp_path / "b.wav"]
    assert (call["device_name"], call["chunk_s"], call["options"].lm) == ("cpu", 12.0, None)
    assert res.output.splitlines() == [f"{tmp_path / 'a.wav'}\thabari ya leo", f"{tmp_path / 'b.wav'}\t"]
    rec.calls.clear()
    res = invoke("transcribe", "--model", tmp_path / "run", "--json", tmp_path / "a.wav")
    assert [json.loads(line) for line in res.output.splitlines()] == [
        {"audio": str(tmp_path / "a.wav"), "text": "habari ya leo"}, {"audio": str(tmp_path / "b.wav"), "text": ""}]
    assert_user_error(invoke("transcribe", "--model", tmp_path, "--lexicon-free", tmp_path / "a.wav"),
                      "--lexicon-free needs --lm")


def test_export_passes_the_run_and_the_folder(monkeypatch, tmp_path):
    import lowres.inference

    rec = Recorder(lowres.inference.export_run, tmp_path / "hf")
    monkeypatch.setattr(lowres.inference, "export_run", rec)
    res = invoke("export", "--model", tmp_path / "run", "--out", tmp_path / "hf", "--overwrite")
    assert res.exit_code == 0, res.output
    call = rec.call
    assert (Path(call["run_dir"]), Path(call["out"]), call["overwrite"]) == (tmp_path / "run", tmp_path / "hf", True)
    assert "exported to" in res.output


@pytest.fixture
def prepare(monkeypatch) -> Recorder:
    import lowres.data.prepare

    rec = Recorder(lowres.data.prepare.prepare, None)
    monkeypatch.setattr(lowres.data.prepare, "prepare", rec)
    return rec


def _prepare_cfg(rec: Recorder) -> PrepareConfig:
    return rec.call["cfg"]


def test_prepare_without_flags_uses_the_defaults(prepare, tmp_path):
    res = invoke("prepare", tmp_path / "corpus.csv", "--out", tmp_path / "p", "-q")
    assert res.exit_code == 0, res.output
    assert _prepare_cfg(prepare) == PrepareConfig()
    call = prepare.call
    assert (Path(call["corpus"]), Path(call["out"])) == (tmp_path / "corpus.csv", tmp_path / "p")
    assert call["overwrite"] is False and call["console"] is None and call["unlabeled"] is None


def test_prepare_flags_become_config_fields(prepare, tmp_path):
    res = invoke("prepare", tmp_path / "c.csv", "--out", tmp_path / "p", "--seed", 3, "--min-duration", 0.5,
                 "--max-duration", 20, "--keep-case", "--no-apostrophes", "--units", "codepoint", "--digits", "drop",
                 "--emit", "fairseq", "--dev-fraction", 0.2, "--min-char-count", 1, "--unicode", "nfc",
                 "--format", "table", "--overwrite", "-q")
    assert res.exit_code == 0, res.output
    cfg = _prepare_cfg(prepare)
    assert (cfg.seed, cfg.min_duration_s, cfg.max_duration_s, cfg.lowercase, cfg.keep_apostrophes, cfg.units,
            cfg.digits, cfg.emit, cfg.dev_fraction, cfg.min_char_count, cfg.unicode_form) == (
        3, 0.5, 20.0, False, False, "codepoint", "drop", ("fairseq",), 0.2, 1, "NFC")
    assert prepare.call["fmt"] == "table" and prepare.call["overwrite"] is True


@pytest.mark.parametrize(("args", "message"), [
    (["--units", "letters"], "units must be grapheme or codepoint"),
    (["--dev-fraction", "0.7"], "--dev-fraction"),
    (["--lang", "sw", "--text-rules", "r.toml"], "Give --lang or --text-rules, not both"),
])
def test_prepare_bad_flags(prepare, tmp_path, args, message):
    assert_user_error(invoke("prepare", tmp_path / "c.csv", "--out", tmp_path / "p", *args, "-q"), message, prepare)


# ---------------------------------------------------------------------------------------------------
# a folder given to the wrong flag: the real library call, which refuses before anything is written


def assert_refused_and_nothing_written(res, out: Path, *messages: str) -> str:
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "Traceback" not in res.output and "\n\n" not in res.output.strip()
    for message in messages:
        assert message in text, (message, text)
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    return text


def test_base_given_a_prepared_folder_says_to_pass_it_as_data(prepared, tmp_path):
    out = tmp_path / "run"
    res = invoke("finetune", "--data", prepared, "--base", prepared, "--split", "10min", "--out", out, "-q")
    assert_refused_and_nothing_written(res, out, f"--base {prepared} is a prepared data folder",
                                       f"pass it as --data {prepared}", "--base takes a model")
    res = invoke("adapt", "--unlabeled", prepared, "--base", prepared, "--out", out, "-q")
    assert_refused_and_nothing_written(res, out, f"--base {prepared} is a prepared data folder")


def test_data_given_a_corpus_suggests_preparing_it_into_a_folder_of_its_own(prepared, tmp_path):
    corpus = prepared.parent / "wavs"  # a folder of audio, not prepared
    before = sorted(p.name for p in corpus.iterdir())
    out = tmp_path / "run"
    res = invoke("finetune", "--data", corpus, "--base", "tiny", "--out", out, "-q")
    text = assert_refused_and_nothing_written(res, out, f"--data {corpus} is not a prepared folder",
                                              f"`lowres prepare {corpus} --out prepared/wavs`",
                                              "--data prepared/wavs")
    assert f"--out {corpus}`" not in text  # never into the corpus itself
    assert sorted(p.name for p in corpus.iterdir()) == before


def test_data_given_a_run_folder_says_it_is_a_model(tmp_path):
    run = tmp_path / "runs" / "sw-1h"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"kind": "finetune"}')
    out = tmp_path / "run"
    res = invoke("finetune", "--data", run, "--base", "tiny", "--out", out, "-q")
    assert_refused_and_nothing_written(res, out, f"--data {run} is not a prepared folder", "holds a model",
                                       "`lowres prepare`")


def test_data_given_the_working_folder_suggests_a_folder_beside_it(prepared, tmp_path, monkeypatch):
    corpus = prepared.parent / "wavs"
    monkeypatch.chdir(corpus)
    res = invoke("finetune", "--data", ".", "--base", "tiny", "--out", tmp_path / "run", "-q")
    target = corpus.resolve().parent / "prepared" / "wavs"
    assert_refused_and_nothing_written(res, tmp_path / "run", f"`lowres prepare . --out {target}`")


# ---------------------------------------------------------------------------------------------------
# help: every example is one whole line, as it is typed (Click rewraps paragraphs unless marked with \b)


def _commands():
    import typer.main

    from lowres.cli import app

    return typer.main.get_command(app).commands


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_examples_stay_on_lines_of_their_own(name):
    import re

    command = _commands()[name]
    examples = [m.group(1).strip() for line in (command.help or "").splitlines()
                if (m := re.search(r"(?:^|:\s+)(lowres .*)$", line.strip()))]
    assert examples, f"lowres {name} --help shows no example"
    res = invoke(name, "--help")
    assert res.exit_code == 0, res.output
    for example in examples:
        assert any(line.strip().endswith(example) for line in res.output.splitlines()), (example, res.output)


def test_the_root_help_keeps_its_first_command_on_a_line_of_its_own():
    res = invoke("--help")
    assert any(line.strip() == "lowres demo --out demo" for line in res.output.splitlines()), res.output


# ---------------------------------------------------------------------------------------------------
# lm: several text files after one --text (as the README shows), as arguments, or with --text repeated


@pytest.fixture
def build_lm(monkeypatch) -> Recorder:
    import lowres.lm.build

    rec = Recorder(lowres.lm.build.build_lm, {})
    monkeypatch.setattr(lowres.lm.build, "build_lm", rec)
    return rec


@pytest.mark.parametrize("args", [
    ["--text", "a.txt", "b.txt", "c.txt"],  # the README's form
    ["a.txt", "b.txt", "c.txt"],
    ["--text", "a.txt", "--text", "b.txt", "c.txt"],
    ["-t", "a.txt", "-t", "b.txt", "-t", "c.txt"],
])
def test_lm_takes_several_text_files(build_lm, tmp_path, args):
    res = invoke("lm", *args, "--order", 3, "--out", tmp_path / "lm", "-q")
    assert res.exit_code == 0, res.output
    assert sorted(Path(p).name for p in build_lm.call["texts"]) == ["a.txt", "b.txt", "c.txt"]
    assert build_lm.call["order"] == 3 and Path(build_lm.call["out"]) == tmp_path / "lm"


def test_lm_help_and_its_page_show_the_same_form():
    res = invoke("lm", "--help")
    assert "lowres lm --text sw_news.txt sw_books.txt --data prepared/sw" in res.output
    page = (Path(__file__).parents[1] / "docs" / "lm.md").read_text(encoding="utf-8")
    assert "lowres lm --text sw_news.txt sw_books.txt --data prepared/sw --order 4 --out lm/sw" in page
