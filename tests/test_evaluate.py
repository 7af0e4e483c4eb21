"""lowres.evaluate: word and character error rates of score_pair and Scorer against jiwer on hand cases.

Contract: WER counts word substitutions, deletions and insertions over the reference words (jiwer's WER);
CER does the same over the vocabulary's units with spaces counted (jiwer's CER for plain letters; one
grapheme cluster is one unit by default, each codepoint with units="codepoint"); the corpus rates of a
Scorer are total errors over total reference length, never a mean of per-utterance rates. An empty
reference scores 0 for an empty hypothesis and 1 for any other.
"""

from __future__ import annotations

import jiwer
import pytest

from lowres.evaluate import Scorer, score_pair

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
