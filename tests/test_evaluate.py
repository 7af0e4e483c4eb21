"""lowres.evaluate: word and character error rates of score_pair and Scorer against jiwer on hand cases.

Contract: WER counts word substitutions, deletions and insertions over the reference words (jiwer's WER);
CER does the same over the vocabulary's units with spaces counted (jiwer's CER for plain letters; one
grapheme cluster is one unit by default, each codepoint with units="codepoint"); the corpus rates of a
Scorer are total errors over total reference length, never a mean of per-utterance rates. An empty
reference scores 0 for an empty hypothesis and 1 for any other.

The eval command (#14, every refusal exit status 2, one paragraph naming the folder, no traceback):

- an earlier eval's results (``RUN/eval-NAME`` for any manifest NAME.jsonl) are never replaced without
  ``--overwrite``; with it only hyps.jsonl and metrics.json are; a folder of other files never is;
- an unwritable ``--out`` (or the default folder inside a read-only run) is refused before the model is
  loaded, naming the folder, and nothing is written;
- metrics.json and the summary give the share of reference characters outside the model's vocabulary, with
  a warning above ``OOV_WARN_SHARE``; an LM lexicon spelled in units the model lacks is warned of too;
- the printed confusions show the word boundary as ``BOUNDARY_SYMBOL`` (a bare space is invisible).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import factory
import jiwer
import pytest
from factory import FAST, invoke

from lowres.data.vocab import Vocab
from lowres.evaluate import (
    BOUNDARY_SYMBOL,
    OOV_WARN_SHARE,
    Scorer,
    outside_vocabulary,
    print_eval,
    score_pair,
)

CASES = [  # (reference, hypothesis, word S D I, char errors)
    ("habari ya leo", "habari ya leo", (0, 0, 0), 0),
    ("habari ya leo", "habari za leo", (1, 0, 0), 1),  # one substitution
    ("habari leo", "habari ya leo", (0, 0, 1), 3),  # an inserted word (and its space)
    ("habari ya leo", "habari leo", (0, 1, 0), 3),  # a deleted word
    ("maji safi", "maj safi sana", (1, 0, 1), 6),
    ("mtoto", "", (0, 1, 0), 5),  # empty hypothesis: everything deleted
    ("a b c d", "d c b a", None, None),
]


@pytest.mark.parametrize(("ref", "hyp", "words", "char_errors"), CASES)
def test_score_pair_equals_jiwer(ref, hyp, words, char_errors):
    w, c, _ = score_pair(ref, hyp)
    assert w.rate == pytest.approx(jiwer.wer(ref, hyp))
    assert c.rate == pytest.approx(jiwer.cer(ref, hyp))
    assert w.reference_length == len(ref.split()) and c.reference_length == len(ref)
    out = jiwer.process_words(ref, hyp)
    assert (w.substitutions, w.deletions, w.insertions, w.hits) == (out.substitutions, out.deletions,
                                                                     out.insertions, out.hits)
    if words is not None:
        assert (w.substitutions, w.deletions, w.insertions) == words
        assert c.errors == char_errors


def test_empty_hypothesis_is_all_deletions():
    w, c, pairs = score_pair("habari ya leo", "")
    assert (w.deletions, w.errors, w.rate) == (3, 3, 1.0)
    assert (c.deletions, c.rate) == (len("habari ya leo"), 1.0) and pairs == []


def test_empty_reference():
    w, c, _ = score_pair("", "")
    assert (w.errors, w.rate, c.errors, c.rate) == (0, 0.0, 0, 0.0)
    w, c, _ = score_pair("", "kelele kubwa")
    out = jiwer.process_words("", "kelele kubwa")  # jiwer counts the insertions; the rate has no denominator
    assert w.insertions == out.insertions == 2 and w.reference_length == 0
    assert w.rate == 1.0 and c.rate == 1.0 and c.insertions == len("kelele kubwa")


def test_grapheme_clusters_are_one_unit():
    ref, hyp = "cafe\u0301 na\u0303", "cafe na"  # é and ã written with combining marks
    w, c, pairs = score_pair(ref, hyp)  # units="grapheme" (the default)
    assert w.substitutions == 2 and w.rate == pytest.approx(jiwer.wer(ref, hyp))
    clusters = ["c", "a", "f", "e\u0301", " ", "n", "a\u0303"]
    assert c.reference_length == len(clusters) and c.substitutions == 2 and c.errors == 2
    assert c.rate == pytest.approx(2 / 7)
    assert sorted(pairs) == [("a\u0303", "a"), ("e\u0301", "e")]
    # counted by codepoint, the combining marks are deletions, as jiwer's CER sees the raw string
    _, cp, _ = score_pair(ref, hyp, units="codepoint")
    assert cp.reference_length == len(ref) == 9 and cp.deletions == 2 and cp.substitutions == 0
    assert cp.rate == pytest.approx(jiwer.cer(ref, hyp))


def test_character_confusions_are_the_substituted_units():
    _, _, pairs = score_pair("dog bad", "dig bed")
    assert sorted(pairs) == [("a", "e"), ("o", "i")]
    _, _, pairs = score_pair("ab", "a b")  # an inserted space is an insertion, not a confusion
    assert pairs == []


def test_scorer_corpus_rates_are_totals_not_means():
    refs = ["habari ya leo", "mtoto", "maji safi sana leo", "a"]
    hyps = ["habari za leo", "", "maji safi", "a"]
    scorer = Scorer()
    rows = [scorer.add(f"u{i}", r, h) for i, (r, h) in enumerate(zip(refs, hyps, strict=True))]
    assert scorer.wer == pytest.approx(jiwer.wer(refs, hyps))
    assert scorer.cer == pytest.approx(jiwer.cer(refs, hyps))
    mean_of_rates = sum(r["wer"] for r in rows) / len(rows)
    assert scorer.wer != pytest.approx(mean_of_rates)
    assert scorer.count == 4 and scorer.empty_hypotheses == 1
    assert [(r["word_errors"], r["words"]) for r in rows] == [(1, 3), (1, 1), (2, 4), (0, 1)]
    assert rows[1]["cer"] == 1.0 and rows[3]["wer"] == 0.0
    # the worst utterances come first: most word errors, then most character errors
    assert [r["id"] for r in scorer.worst()][:2] == ["u2", "u1"]


def test_scorer_keeps_only_the_worst_and_counts_confusions():
    scorer = Scorer(keep_worst=2)
    for i in range(5):
        scorer.add(f"u{i}", "dog dog", " ".join(["dig"] * min(i, 2) + ["dog"] * (2 - min(i, 2))))
    worst = scorer.worst()
    assert len(worst) == 2 and all(r["word_errors"] == 2 for r in worst)
    assert scorer.top_confusions(1) == [{"reference": "o", "hypothesis": "i", "count": 1 + 2 + 2 + 2}]
    assert scorer.wer == pytest.approx((0 + 1 + 2 + 2 + 2) / 10)


# --------------------------------------------------------------------------------------------------
# the eval command


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(prepared folder, a one-update tiny run trained on it)."""
    root = tmp_path_factory.mktemp("eval")
    prepared = factory.prepared_corpus(root, n=12, speakers=4)
    res = invoke("finetune", "--data", prepared, "--split", "full", "--base", "tiny", "--out", root / "run",
                 "--max-steps", 1, "--eval-every", 0, *FAST)
    assert res.exit_code == 0, res.output
    return prepared, root / "run"


def one_paragraph(res) -> str:
    assert "Traceback" not in res.output, res.output
    return " ".join(res.output.split())


def test_eval_never_overwrites_earlier_results(trained, tmp_path):
    """#14: a second eval of any manifest called test silently replaced RUN/eval-test."""
    prepared, run = trained
    first = invoke("eval", "--model", run, "--data", prepared, "--split", "test", "-q")
    assert first.exit_code == 0, first.output
    folder = run / "eval-test"
    before = {name: (folder / name).read_bytes() for name in ("hyps.jsonl", "metrics.json")}
    again = invoke("eval", "--model", run, "--data", prepared, "--split", "test", "-q")
    text = one_paragraph(again)
    assert again.exit_code == 2
    assert f"eval writes its results into {folder} when no --out is given" in text
    assert "already holds files" in text and "results of an earlier eval of" in text
    assert "Pass --overwrite to replace them, or --out" in text
    assert {name: (folder / name).read_bytes() for name in before} == before  # untouched
    (folder / "notes.txt").write_text("mine")
    replaced = invoke("eval", "--model", run, "--data", prepared, "--split", "test", "-q", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert (folder / "notes.txt").read_text() == "mine"  # only the eval's own files are replaced
    assert json.loads((folder / "metrics.json").read_text())["num_utterances"] > 0
    # a folder that is not an eval's: refused, with or without --overwrite
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.txt").write_text("precious")
    for extra in ([], ["--overwrite"]):
        res = invoke("eval", "--model", run, "--data", prepared, "--split", "test", "-q", "--out", mine, *extra)
        assert res.exit_code == 2 and str(mine) in one_paragraph(res), res.output
    assert sorted(p.name for p in mine.iterdir()) == ["data.txt"]


@pytest.mark.parametrize("where", ["default", "out"])
def test_eval_into_an_unwritable_folder(trained, tmp_path, monkeypatch, where):
    """#14 item 1: a read-only run folder (default RUN/eval-NAME) or --out ended in a PermissionError traceback."""
    prepared, run = trained
    locked = run if where == "default" else tmp_path / "ro"
    locked.mkdir(exist_ok=True)
    real_access, real_mkdir = os.access, os.mkdir

    def access(path, mode, *args, **kwargs):  # what a read-only folder looks like (root passes chmod)
        return False if Path(path) == locked and mode & os.W_OK else real_access(path, mode, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if Path(path).parent == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "mkdir", mkdir)
    target = run / "eval-dev" if where == "default" else locked / "e"
    out = [] if where == "default" else ["--out", target]
    res = invoke("eval", "--model", run, "--data", prepared, "--split", "dev", "-q", *out)
    text = one_paragraph(res)
    assert res.exit_code == 2
    assert f"{target} cannot be created or written" in text and "make that location writable" in text
    assert not target.exists()


def test_outside_vocabulary_share():
    vocab = Vocab(tuple("abmo"))
    oov = outside_vocabulary(["mba ba", "ñoño"], vocab)  # spaces do not count; ñ is outside
    assert (oov["count"], oov["chars"]) == (2, 9) and oov["share"] == pytest.approx(2 / 9)
    assert oov["symbols"] == [["ñ", 2]]
    decomposed = outside_vocabulary(["ma\u0303"], Vocab(tuple("am\u0303")))  # spelled by its code points
    assert decomposed["count"] == 0
    assert outside_vocabulary([], vocab)["share"] == 0.0


def test_eval_warns_of_characters_outside_the_vocabulary(trained, tmp_path):
    """#14: a Swahili model evaluated on Guarani data scored without a word of warning."""
    prepared, run = trained
    rows = factory.read_jsonl(prepared / "manifests" / "full.jsonl")  # (enough clips for all three sentences)
    guarani = ["mba'éichapa reiko", "ñane ñe'ẽ porã", "aguyjevete ndéve"]
    manifest = tmp_path / "gn.jsonl"
    for i, row in enumerate(rows):
        row["audio_filepath"] = str((prepared / "manifests" / row["audio_filepath"]).resolve())
        row["text"] = guarani[i % 3]
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    res = invoke("eval", "--model", run, "--manifest", manifest, "--out", tmp_path / "e", "-q")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    oov = metrics["oov_chars"]
    assert oov["share"] > OOV_WARN_SHARE and "ñ" in {u for u, _ in oov["symbols"]}
    text = one_paragraph(res)
    assert f"warning: {100 * oov['share']:.1f}% of the reference characters of {manifest}" in text
    assert "not in the model's vocabulary" in text and metrics["warnings"]
    # the summary (no -q) says the share too
    res = invoke("eval", "--model", run, "--manifest", manifest, "--out", tmp_path / "e", "--overwrite")
    assert "reference characters outside the model's vocabulary" in res.output and "warning:" in res.output
    # transcripts in the run's own symbols warn of nothing
    symbols = set(json.loads((run / "vocab.json").read_text()))
    for row in rows:
        row["text"] = "".join(c for c in row["text"] if c in symbols or c == " ").strip() or "a"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    res = invoke("eval", "--model", run, "--manifest", manifest, "--out", tmp_path / "ok", "-q")
    assert res.exit_code == 0 and "warning" not in res.output, res.output
    assert json.loads((tmp_path / "ok" / "metrics.json").read_text())["oov_chars"]["share"] == 0.0


def test_confusions_show_the_word_boundary():
    """#14: a space confused with a letter printed as "x→  ×3", the space invisible."""
    from rich.console import Console

    scorer = Scorer()
    scorer.add("u", "ab cd", "abxcd")
    confusions = scorer.top_confusions()
    assert confusions == [{"reference": " ", "hypothesis": "x", "count": 1}]  # metrics.json keeps the space
    console = Console(record=True, width=200)
    metrics = {"manifest": "m.jsonl", "wer": 1.0, "cer": 0.2, "num_utterances": 1, "hours": 0.0, "rtf": 0.0,
               "decoder": "greedy", "worst": [], "confusions": confusions}
    print_eval(metrics, Path("out"), console)
    assert f"{BOUNDARY_SYMBOL}→x ×1" in console.export_text()


def arpa(one: str, two: str) -> str:
    """A bigram ARPA model of the words ``one`` and ``two`` (KenLM needs an order of at least 2)."""
    return (f"\\data\\\nngram 1=5\nngram 2=2\n\n\\1-grams:\n-1.0\t<s>\t-0.3\n-1.0\t</s>\t0\n-1.0\t<unk>\t0\n"
            f"-0.5\t{one}\t-0.3\n-0.5\t{two}\t-0.3\n\n\\2-grams:\n-0.3\t<s> {one}\n-0.3\t{one} {two}\n\n\\end\\\n")


def test_lexicon_in_other_units_is_warned(trained, tmp_path):
    """#14: an LM lexicon spelled in units the model lacks was replaced by the ARPA's words without a word."""
    pytest.importorskip("flashlight.lib.text")
    prepared, run = trained
    a, b, c = sorted(u for u in json.loads((run / "vocab.json").read_text()) if u.isalpha() and u.islower())[:3]
    (tmp_path / "lm.arpa").write_text(arpa(a + b + a, b + c), encoding="utf-8")
    lexicon = f"{a + b + a}\t{a.upper()} {b.upper()} {a.upper()} |\n{b + c}\t{b} {c} |\n"  # the first: other units
    (tmp_path / "lex.txt").write_text(lexicon, encoding="utf-8")
    res = invoke("eval", "--model", run, "--data", prepared, "--split", "test", "--lm", tmp_path / "lm.arpa",
                 "--lexicon", tmp_path / "lex.txt", "--beam", 4, "--out", tmp_path / "e", "-q")
    assert res.exit_code == 0, res.output
    text = one_paragraph(res)
    assert f"warning: The lexicon {tmp_path / 'lex.txt'} spells 1 of its 2 words with units the model does not " \
           f"have ({a.upper()}, {b.upper()})" in text  # the most frequent first
    assert "spells the ARPA's words itself instead (2 of them can be spelled)" in text
    coverage = json.loads((tmp_path / "e" / "metrics.json").read_text())["lm"]["lexicon_coverage"]
    assert (coverage["source"], coverage["words"], coverage["outside"], coverage["used"]) == ("lexicon", 2, 1, "arpa")
    # a lexicon in the run's units: no warning
    (tmp_path / "lex.txt").write_text(lexicon.lower(), encoding="utf-8")
    res = invoke("eval", "--model", run, "--data", prepared, "--split", "test", "--lm", tmp_path / "lm.arpa",
                 "--lexicon", tmp_path / "lex.txt", "--beam", 4, "--out", tmp_path / "e2", "-q")
    assert res.exit_code == 0 and "The lexicon" not in res.output, res.output
