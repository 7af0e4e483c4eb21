"""lowres.decode and lowres.lm.folder: greedy CTC collapse rules, the decode options (one default each,
frozen, keyword-only, mistakes as LowresError), the CLI building them once, the LM folder record and its
tuned weights (round trip), weight precedence given > tuned > default, and the batched forward passes
(a padded batch decodes as one utterance at a time does). Beam search itself runs only where the lm extra
(flashlight-text with its KenLM) is importable; tests/test_lm.py decodes with a real LM folder."""

from __future__ import annotations

import dataclasses
import json

import factory
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lowres import LowresError
from lowres.cli import app
from lowres.data.manifest import Utterance
from lowres.data.vocab import BLANK_ID, Vocab
from lowres.decode import (
    DEFAULT_LM_WEIGHT,
    DEFAULT_WORD_SCORE,
    BeamSearch,
    DecodeOptions,
    decode_utterances,
    forward_batches,
    greedy_ids,
    greedy_texts,
    path_confidence,
)
from lowres.lm.folder import LEXICON_FREE_MODE, LEXICON_MODE, LMFolder, TunedWeights

runner = CliRunner()
VOCAB = Vocab(tuple("abcd"))  # ids: <pad> 0, <unk> 1, | 2, a 3, b 4, c 5, d 6


def one_hot_logits(paths: list[list[int]], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, T, V) whose argmax is ``paths[b][t]``; frames beyond a path are ``a`` (must be ignored)."""
    longest = max([len(p) for p in paths] + [pad_to or 0])
    logits = torch.zeros(len(paths), longest, len(VOCAB))
    logits[:, :, 3] = 1.0
    for b, path in enumerate(paths):
        for t, i in enumerate(path):
            logits[b, t] = 0.0
            logits[b, t, i] = 1.0
    return logits, torch.tensor([len(p) for p in paths])


# --------------------------------------------------------------------------------------------------
# greedy


def test_greedy_collapses_repeats_and_drops_blanks():
    a, b, bar = 3, 4, 2
    logits, frames = one_hot_logits([
        [a, a, a, b, b],  # repeats collapse
        [a, BLANK_ID, a],  # a blank between two frames keeps a doubled letter
        [BLANK_ID, a, a, BLANK_ID, BLANK_ID, b, BLANK_ID],  # blanks vanish wherever they are
        [a, bar, bar, b],  # the word delimiter collapses like any unit
        [BLANK_ID, BLANK_ID],  # all blank: nothing
    ], pad_to=9)
    assert greedy_ids(logits, frames) == [[a, b], [a, a], [a, b], [a, bar, b], []]
    assert greedy_texts(logits, frames, VOCAB) == ["ab", "aa", "ab", "a b", ""]


def test_path_confidence_is_the_mean_posterior_of_the_aligned_units():
    # 6 frames, 5 units: frame 1 is unit 3, frames 3-4 unit 4, the others blank, each with a known posterior
    probs = torch.full((6, 5), 0.025)
    for t, (unit, p) in enumerate([(BLANK_ID, 0.9), (3, 0.8), (BLANK_ID, 0.9), (4, 0.6), (4, 0.7), (BLANK_ID, 0.9)]):
        probs[t, unit] = p
        probs[t] = probs[t] / probs[t].sum()
    logits = probs.log()
    expected = float((probs[1, 3] + probs[3, 4] + probs[4, 4]) / 3)  # blank frames left out
    assert path_confidence(logits, [3, 4]) == pytest.approx(expected, rel=1e-4)
    assert path_confidence(logits * 7.0, [3, 4]) > path_confidence(logits, [3, 4])  # a sharper model is surer
    assert path_confidence(logits, [4, 3]) < path_confidence(logits, [3, 4])  # the wrong transcript scores low
    assert path_confidence(logits, []) == 0.0
    assert path_confidence(logits, [3, 3, 3, 3]) == 0.0  # needs 7 frames: cannot fit


def test_greedy_ignores_padding_frames_and_takes_empty_input():
    logits, _ = one_hot_logits([[4, 5]], pad_to=6)  # frames 2.. say "a"
    assert greedy_ids(logits, torch.tensor([2])) == [[4, 5]]
    assert greedy_ids(logits, torch.tensor([0])) == [[]]
    assert greedy_ids(torch.zeros(2, 0, len(VOCAB)), torch.tensor([0, 0])) == [[], []]


def test_greedy_moved_out_of_the_model():
    import lowres.model.ctc

    assert not hasattr(lowres.model.ctc, "greedy_ids")  # decoding lives in lowres.decode only


# --------------------------------------------------------------------------------------------------
# options


def test_decode_options_defaults_frozen_keyword_only():
    o = DecodeOptions()
    assert (o.batch_seconds, o.workers, o.precision, o.lm, o.beam_size) == (120.0, -1, None, None, 50)
    assert (o.lexicon, o.lexicon_free, o.lm_weight, o.word_score, o.mode) == (None, False, None, None, LEXICON_MODE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.batch_seconds = 1.0
    with pytest.raises(TypeError):
        DecodeOptions(60.0)  # keyword-only: no positional soup
    assert DecodeOptions(lm="x/lm", lexicon="y.txt").lm.name == "lm"  # paths are coerced once
    assert DecodeOptions(lm="x", lexicon_free=True).mode == LEXICON_FREE_MODE
    assert DecodeOptions(beam_size=0).beam_size == 0  # the beam only matters (and is checked) with --lm


@pytest.mark.parametrize("given, message", [
    ({"lexicon_free": True}, "--lexicon-free needs --lm LM_DIR"),
    ({"lm_weight": 1.0, "word_score": 0.0}, "--lm-weight, --word-score need --lm LM_DIR"),
    ({"lm": "lm", "beam_size": 0}, "--beam must be at least 1"),
    ({"lm": "lm", "lexicon": "x.txt", "lexicon_free": True}, "contradict"),
    ({"batch_seconds": 0}, "--batch-seconds must be more than 0"),
])
def test_decode_options_refuse_mistakes(given, message):
    with pytest.raises(LowresError, match=message):
        DecodeOptions(**given)


def test_cli_builds_the_options_once(monkeypatch, tmp_path):
    import lowres.evaluate
    import lowres.inference

    seen = []
    monkeypatch.setattr(lowres.evaluate, "run_eval", lambda *a, **k: seen.append((a, k)) or {})
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("")
    res = runner.invoke(app, ["eval", "--model", str(tmp_path), "--manifest", str(manifest)])
    assert res.exit_code == 0, res.output
    assert seen[-1][1]["options"] == DecodeOptions() and seen[-1][1]["tune_on"] is None
    res = runner.invoke(app, ["eval", "--model", str(tmp_path), "--manifest", str(manifest), "--lm", str(tmp_path),
                              "--beam", "7", "--lexicon-free", "--word-score", "0.5", "--batch-seconds", "30"])
    assert res.exit_code == 0, res.output
    assert seen[-1][1]["options"] == DecodeOptions(lm=tmp_path, beam_size=7, lexicon_free=True, word_score=0.5,
                                           batch_seconds=30.0)
    res = runner.invoke(app, ["eval", "--model", str(tmp_path), "--manifest", str(manifest), "--beam", "0", "--lm",
                              str(tmp_path)])
    assert res.exit_code == 2 and "--beam must be at least 1" in res.output

    monkeypatch.setattr(lowres.inference, "transcribe_files", lambda *a, **k: seen.append((a, k)) or iter(()))
    res = runner.invoke(app, ["transcribe", "--model", str(tmp_path), "--lm", str(tmp_path), "--lm-weight", "2",
                              "x.wav"])
    assert res.exit_code == 0, res.output
    assert seen[-1][1]["options"] == DecodeOptions(lm=tmp_path, lm_weight=2.0)


def test_cli_help_shows_the_dataclass_defaults():
    for command in ("eval", "transcribe"):
        out = " ".join(runner.invoke(app, [command, "--help"]).output.split())
        assert f"(default {DecodeOptions().beam_size})" in out
    out = " ".join(runner.invoke(app, ["eval", "--help"]).output.split())
    assert f"(default {DecodeOptions().batch_seconds:g})" in out


# --------------------------------------------------------------------------------------------------
# the LM folder record


def test_lm_folder_names_and_tuned_round_trip(tmp_path):
    folder = LMFolder(str(tmp_path))
    assert folder.path == tmp_path and folder == LMFolder(tmp_path)
    assert [p.name for p in (folder.arpa, folder.lexicon, folder.units_arpa, folder.report, folder.tuned)] == [
        "lm.arpa", "lexicon.txt", "units.arpa", "lm_report.json", "tuned.json"]
    assert folder.model_file(LEXICON_MODE) == folder.arpa and folder.model_file(LEXICON_FREE_MODE) == folder.units_arpa
    assert folder.read_tuned(LEXICON_MODE) is None  # nothing tuned yet
    entry = {"lm_weight": 1.5, "word_score": -1.0, "dev_wer": 0.25, "grid": [{"lm_weight": 1.5}]}
    stored = folder.store_tuned(LEXICON_MODE, entry)
    assert stored == TunedWeights(1.5, -1.0, entry) == folder.read_tuned(LEXICON_MODE)
    assert folder.read_tuned(LEXICON_FREE_MODE) is None
    folder.store_tuned(LEXICON_FREE_MODE, {"lm_weight": 2, "word_score": 0})
    assert folder.read_tuned(LEXICON_MODE) == stored  # one mode's tuning keeps the other's
    on_disk = json.loads(folder.tuned.read_text())
    assert set(on_disk) == {"lexicon", "lexicon_free"} and on_disk["lexicon"] == entry  # the format old folders have
    with pytest.raises(ValueError):
        folder.read_tuned("beam")


def test_lm_folder_broken_tuned_file(tmp_path):
    folder = LMFolder(tmp_path)
    folder.tuned.write_text("{not json")
    with pytest.raises(LowresError, match="tuned.json is not valid JSON"):
        folder.read_tuned(LEXICON_MODE)
    folder.store_tuned(LEXICON_MODE, {"lm_weight": 1, "word_score": 2})  # tuning again replaces it
    assert folder.read_tuned(LEXICON_MODE).lm_weight == 1.0
    folder.tuned.write_text(json.dumps({"lexicon": {"lm_weight": 3}}))  # a partial entry: only what is there
    assert folder.read_tuned(LEXICON_MODE) == TunedWeights(3.0, None, {"lm_weight": 3})
    folder.tuned.write_text(json.dumps({"lexicon": {"lm_weight": "heavy", "word_score": 0}}))
    with pytest.raises(LowresError, match="not numbers"):
        folder.read_tuned(LEXICON_MODE)


def test_build_lm_writes_the_folder_names(tmp_path):
    from lowres.lm import build_lm

    text = tmp_path / "t.txt"
    text.write_text("a b c\nb c d\n", encoding="utf-8")
    report = build_lm([text], tmp_path / "lm", order=2)
    folder = LMFolder(tmp_path / "lm")
    assert folder.arpa.is_file() and folder.report.is_file() and report["files"]["arpa"] == folder.arpa.name


# --------------------------------------------------------------------------------------------------
# beam search: options resolved against the files (weights given > tuned > default), immutable


def test_beam_search_weights_and_immutability(tmp_path, monkeypatch):
    import lowres.decode

    monkeypatch.setattr(lowres.decode, "require_lm_extra", lambda: None)  # resolving loads nothing
    folder = LMFolder(tmp_path)
    folder.arpa.write_text("\\data\\\n")
    s = BeamSearch.from_options(DecodeOptions(lm=tmp_path, beam_size=8))
    assert (s.lm_weight, s.word_score, s.lm_weight_from, s.word_score_from) == (
        DEFAULT_LM_WEIGHT, DEFAULT_WORD_SCORE, "default", "default")
    assert s.lexicon is None and s.folder == folder and s.model_file == folder.arpa
    folder.store_tuned(LEXICON_MODE, {"lm_weight": 2.0, "word_score": 1.0})
    folder.lexicon.write_text("a\ta |\n")
    s = BeamSearch.from_options(DecodeOptions(lm=tmp_path, beam_size=8, word_score=-0.5))
    assert (s.lm_weight, s.word_score) == (2.0, -0.5) and s.settings()["weights_from"] == {
        "lm_weight": "tuned", "word_score": "given"}
    assert s.lexicon == folder.lexicon and s.name == "beam 8, lexicon, lm.arpa (lm weight 2, word score -0.5)"
    t = s.with_weights(3.0, 0.0)
    assert (t.lm_weight, t.word_score, t.settings()["weights_from"]["word_score"]) == (3.0, 0.0, "tuned")
    assert (s.lm_weight, s.word_score) == (2.0, -0.5)  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.lm_weight = 1.0
    assert BeamSearch.from_options(DecodeOptions()) is None  # no --lm: greedy
    with pytest.raises(LowresError, match="units.arpa"):
        BeamSearch.from_options(DecodeOptions(lm=tmp_path, lexicon_free=True))
    with pytest.raises(LowresError, match="no such folder or file"):
        BeamSearch.from_options(DecodeOptions(lm=tmp_path / "missing"))
    (tmp_path / "model.bin").write_bytes(b"\0")
    with pytest.raises(LowresError, match="needs --lexicon"):
        BeamSearch.from_options(DecodeOptions(lm=tmp_path / "model.bin"))


def test_beam_search_decodes_with_a_tiny_lm(tmp_path):
    pytest.importorskip("flashlight.lib.text")
    pytest.importorskip("torchaudio.models.decoder")
    from lowres.lm import estimate, write_arpa, write_lexicon

    model = estimate([["bad"], ["cab"], ["bad", "cab"]] * 5, order=2)
    folder = LMFolder(tmp_path)
    write_arpa(model, folder.arpa)
    write_lexicon(model.vocab, VOCAB, folder.lexicon)
    ids = {c: VOCAB.encode(c)[0] for c in "abcd"}
    # "bad cab" with the d blurred towards c: greedy reads "bac cab", the lexicon only knows "bad"
    path = [ids["b"], 0, ids["a"], 0, ids["c"], 0, 2, 0, ids["c"], 0, ids["a"], 0, ids["b"], 0]
    logits, frames = one_hot_logits([path])
    logits[0, 4, ids["d"]] = 0.9
    assert greedy_texts(logits, frames, VOCAB) == ["bac cab"]
    search = BeamSearch.from_options(DecodeOptions(lm=tmp_path, beam_size=10, lm_weight=1.0))
    loaded = search.load(VOCAB)
    assert search.decoder(loaded)(logits * 5, frames) == ["bad cab"]
    assert search.with_weights(0.0, 0.0).decoder(loaded)(logits * 5, frames) == ["bad cab"]  # no model reload
    assert search.decoder(loaded)(torch.zeros(1, 0, len(VOCAB)), torch.tensor([0])) == [""]


# --------------------------------------------------------------------------------------------------
# forward passes


class WindowModel(nn.Module):
    """Stands in for a recogniser: one frame per 320 samples, its symbol picked by the samples it covers
    (so padding can change nothing), logits (B, T', V) and frame lengths (B,)."""

    def forward(self, waves, lengths):
        frames = lengths // 320
        windows = waves[:, : waves.shape[1] // 320 * 320].reshape(waves.shape[0], -1, 320)
        ids = 3 + (windows.abs().sum(-1) * 7).long() % 4
        ids[:, ::2] = BLANK_ID
        return torch.nn.functional.one_hot(ids, len(VOCAB)).float(), frames


def test_padded_batches_decode_as_one_at_a_time(tmp_path):
    utts = []
    for i, duration in enumerate((0.5, 1.3, 0.9, 2.0)):
        path = tmp_path / f"u{i}.wav"
        factory.write_audio(path, duration, seed=i)
        utts.append(Utterance(id=f"u{i}", audio_filepath=str(path), duration=duration))
    utts.append(Utterance(id="gone", audio_filepath=str(tmp_path / "gone.wav"), duration=1.0))
    model = WindowModel().train()
    cpu = torch.device("cpu")
    together = list(decode_utterances(model, utts, VOCAB, cpu, options=DecodeOptions(workers=0)))
    alone = list(decode_utterances(model, utts, VOCAB, cpu, options=DecodeOptions(batch_seconds=1.0, workers=0)))
    assert model.training  # restored after decoding
    texts = {i: t for i, t, _ in together if i >= 0}
    assert texts == {i: t for i, t, _ in alone if i >= 0} and sorted(texts) == [0, 1, 2, 3]
    assert all(texts.values())
    assert [e for i, _, e in together if i < 0] and all("gone.wav" in e for i, _, e in together if i < 0)
    sizes = [len(ix) for ix, *_ in forward_batches(model, utts, cpu, options=DecodeOptions(batch_seconds=1.0,
                                                                                        workers=0)) if ix]
    assert max(sizes) == 1 and sum(sizes) == 4


def test_library_calls_take_the_options_by_keyword(tmp_path, monkeypatch):
    import lowres.decode
    from lowres.evaluate import run_eval
    from lowres.inference import transcribe_files

    with pytest.raises(TypeError):
        run_eval(tmp_path, tmp_path / "test.jsonl", None, "cpu", 60.0)  # the old positional batch_seconds
    with pytest.raises(TypeError):
        transcribe_files(tmp_path, [], "cpu", 30.0, 60.0)
    monkeypatch.setattr(lowres.decode, "require_lm_extra", lambda: None)
    (tmp_path / "words.arpa").write_text("\\data\\\n")
    with pytest.raises(LowresError, match="stores the weights it finds in the LM folder"):  # before any loading
        run_eval(tmp_path / "no-run", tmp_path / "no.jsonl", options=DecodeOptions(lm=tmp_path / "words.arpa"),
                 tune_on=tmp_path / "dev.jsonl")
