"""lowres lm: Kneser-Ney estimation against a hand-computed example, normalisation, ARPA files, KenLM agreement,
the LM folder, and beam search in eval / transcribe (flashlight, when the lm extra is installed)."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from fractions import Fraction as F
from pathlib import Path

import factory
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lowres import LowresError
from lowres.cli import app
from lowres.data.vocab import Vocab
from lowres.lm import build_lm, estimate, read_arpa, score_sentence, score_word, write_arpa
from lowres.lm.lexicon import lexicon_lines, read_lexicon, spell, unit_sentences
from lowres.lm.ngram import FALLBACK_DISCOUNTS, Corpus, perplexity, sentence_scores

runner = CliRunner()
FAST = ["--set", "train.batch_seconds=20", "--set", "train.accumulate=2", "--set", "train.num_workers=0", "--quiet"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def ngram_table(model, order: int) -> dict[tuple[str, ...], tuple[float, float]]:
    """{n-gram words: (p, backoff weight)} of one order, as plain probabilities."""
    ids = model.ngram_ids(order)
    return {tuple(model.vocab[i] for i in row): (10 ** model.logprob[order - 1][r], 10 ** model.backoff[order - 1][r])
            for r, row in enumerate(ids)}


# The hand-computed example. Sentences (with <s> ... </s> around each):
#   "a b" ×3, "b" ×3, "a" ×2, "c a b" ×1
# Bigram counts (the highest order, so adjusted = raw):
#   <s> a 5, <s> b 3, <s> c 1, a b 4, a </s> 2, b </s> 7, c a 1
#   count-of-counts n1..n4 = 2 (<s> c, c a), 1 (a </s>), 1 (<s> b), 1 (a b)
#   Y = n1 / (n1 + 2 n2) = 1/2;  D1 = 1 - 2Y n2/n1 = 1/2;  D2 = 2 - 3Y n3/n2 = 1/2;  D3+ = 3 - 4Y n4/n3 = 1
# Unigram adjusted counts = distinct left neighbours: a {<s>, c} 2, b {<s>, a} 2, c {<s>} 1, </s> {a, b} 2;
#   <s> and <unk> 0. n1..n3 = 1, 3, 0 → no Chen & Goodman estimate: lmplz's fallback D = 0.5, 1, 1.5.
#   total 7; γ = (0.5·1 + 1·3) / 7 = 1/2; uniform share 1/(V-1) = 1/5 (V = 6 words with <unk>, <s>, </s>)
#   p(a) = p(b) = p(</s>) = (2-1)/7 + 1/10 = 17/70;  p(c) = 0.5/7 + 1/10 = 12/70;  p(<unk>) = 1/10 = 7/70
# Bigram probabilities, p(w|h) = (a - D(a)) / Σ a(h·) + γ(h) p(w):
#   h = <s>: Σ = 9, γ = (1 + 1 + 1/2)/9 = 5/18: p(a|<s>) = 4/9 + 5/18·17/70 = 43/84, p(b|<s>) = 2/9 + 5/18·17/70
#            = 73/252, p(c|<s>) = 1/18 + 5/18·12/70 = 13/126
#   h = a:   Σ = 6, γ = (1 + 1/2)/6 = 1/4: p(b|a) = 3/6 + 17/280 = 157/280, p(</s>|a) = 1.5/6 + 17/280 = 87/280
#   h = b:   Σ = 7, γ = 1/7: p(</s>|b) = 6/7 + 17/490 = 437/490
#   h = c:   Σ = 1, γ = 1/2: p(a|c) = 1/2 + 17/140 = 87/140
#   </s> and <unk> are no contexts: backoff weight 1 (log10 0); <s> has log10 p = 0, as lmplz writes it.
HAND_TEXT = [["a", "b"]] * 3 + [["b"]] * 3 + [["a"]] * 2 + [["c", "a", "b"]]
HAND_UNIGRAMS = {"<unk>": (F(7, 70), 1), "<s>": (1, F(5, 18)), "</s>": (F(17, 70), 1), "a": (F(17, 70), F(1, 4)),
                 "b": (F(17, 70), F(1, 7)), "c": (F(12, 70), F(1, 2))}
HAND_BIGRAMS = {("<s>", "a"): F(43, 84), ("<s>", "b"): F(73, 252), ("<s>", "c"): F(13, 126),
                ("a", "b"): F(157, 280), ("a", "</s>"): F(87, 280), ("b", "</s>"): F(437, 490), ("c", "a"): F(87, 140)}


def test_hand_computed_bigram_model():
    model = estimate(HAND_TEXT, order=2)
    assert model.counts == [6, 7]
    uni, bi = model.discounts
    assert bi.counts_of_counts == (2, 1, 1, 1) and not bi.fallback
    assert (bi.d1, bi.d2, bi.d3) == pytest.approx((0.5, 0.5, 1.0))
    assert uni.counts_of_counts == (1, 3, 0, 0) and "adjusted count 3" in uni.fallback
    assert (uni.d1, uni.d2, uni.d3) == FALLBACK_DISCOUNTS
    unigrams = ngram_table(model, 1)
    assert set(unigrams) == {(w,) for w in HAND_UNIGRAMS}
    for w, (p, b) in HAND_UNIGRAMS.items():
        assert unigrams[(w,)] == pytest.approx((float(p), float(b)), rel=1e-12), w
    bigrams = ngram_table(model, 2)
    assert set(bigrams) == set(HAND_BIGRAMS)
    for g, p in HAND_BIGRAMS.items():
        assert bigrams[g] == pytest.approx((float(p), 1.0), rel=1e-12), g
    # an unseen bigram backs off: p(c | a) = γ(a) p(c)
    assert 10 ** score_word(model, ["a"], "c") == pytest.approx(float(F(1, 4) * F(12, 70)), rel=1e-12)
    # p(a b) = p(a|<s>) p(b|a) p(</s>|b)
    expected = math.log10(float(F(43, 84) * F(157, 280) * F(437, 490)))
    assert score_sentence(model, "a b") == pytest.approx(expected, abs=1e-12)


def test_hand_computed_adjusted_counts_of_lower_orders():
    """Order 3: bigrams get continuation counts, except those that start with <s> (raw counts).

    Trigrams: <s> a b 3, a b </s> 4, <s> b </s> 3, <s> a </s> 2, <s> c a 1, c a b 1.
    Bigram adjusted counts: <s> a 5, <s> b 3, <s> c 1 (raw); a b {<s>, c} 2, b </s> {a, <s>} 2, a </s> {<s>} 1,
    c a {<s>} 1. n1..n4 = 3, 2, 1, 0: Y = 3/7, D1 = 1 - 2·3/7·2/3 = 3/7, D2 = 2 - 3·3/7·1/2 = 19/14,
    D3+ = 3 - 0 = 3 (lmplz accepts D ≤ k). Trigram n1..n4 = 2, 1, 2, 1 give D2 = 2 - 3·1/2·2 = -1: fallback.
    """
    model = estimate(HAND_TEXT, order=3)
    assert model.counts == [6, 7, 6]
    bi, tri = model.discounts[1], model.discounts[2]
    assert bi.counts_of_counts == (3, 2, 1, 0) and not bi.fallback
    assert (bi.d1, bi.d2, bi.d3) == pytest.approx((3 / 7, 19 / 14, 3.0), rel=1e-12)
    assert tri.counts_of_counts == (2, 1, 2, 1) and "D2" in tri.fallback
    assert model.discounts[0].counts_of_counts == (1, 3, 0, 0)  # unigrams: the same continuation counts


def random_corpus(seed: int = 0, n: int = 300) -> list[list[str]]:
    rng = random.Random(seed)
    words = "a b c d e f g h i j".split()
    return [[rng.choice(words[: rng.randint(2, 10)]) for _ in range(rng.randint(1, 8))] for _ in range(n)]


HISTORIES = [["<s>"], ["<s>", "a"], ["a", "b"], ["b", "c", "a"], ["zz"], ["a", "b", "c", "d"], ["j", "j", "j"]]


@pytest.mark.parametrize("order,prune", [(2, None), (3, None), (3, 2), (4, None), (4, 3), (5, None), (5, 3)])
def test_probabilities_sum_to_one(order, prune, tmp_path):
    model = estimate(random_corpus(), order=order, prune_singletons_from=prune)
    if prune:
        assert model.counts[prune - 1] < model.info["ngrams_before_pruning"][prune - 1]
    predicted = [w for w in model.vocab if w != "<s>"]
    for h in HISTORIES:
        total = sum(10 ** score_word(model, h, w) for w in predicted)
        assert total == pytest.approx(1.0, abs=1e-9), h
    # the ARPA file keeps it up to its 7 significant digits
    write_arpa(model, tmp_path / "m.arpa")
    back = read_arpa(tmp_path / "m.arpa")
    assert back.vocab == model.vocab and back.counts == model.counts
    for i in range(model.order):
        np.testing.assert_array_equal(back.word[i], model.word[i])
        np.testing.assert_array_equal(back.context[i], model.context[i])
        np.testing.assert_allclose(back.logprob[i], model.logprob[i], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(back.backoff[i], model.backoff[i], rtol=1e-6, atol=1e-7)
    for h in HISTORIES[:3]:
        assert sum(10 ** score_word(back, h, w) for w in predicted) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("order,prune", [(2, None), (3, None), (4, None), (4, 3), (5, 2)])
def test_kenlm_agrees_with_our_scoring(order, prune, tmp_path):
    kenlm = pytest.importorskip("kenlm")
    corpus = random_corpus(1)
    write_arpa(estimate(corpus, order=order, prune_singletons_from=prune), tmp_path / "m.arpa")
    ours = read_arpa(tmp_path / "m.arpa")
    theirs = kenlm.Model(str(tmp_path / "m.arpa"))
    assert theirs.order == order
    tests = [" ".join(s) for s in random_corpus(2, 40)] + ["zz a b", "a zz zz b", "j j j j j j j", "a"]
    for sentence in tests:
        full = list(theirs.full_scores(sentence))
        mine = sentence_scores(ours, sentence)
        assert [p for p, _, _ in full] == pytest.approx([p for p, _, _ in mine], abs=2e-5), sentence
        assert [(n, oov) for _, n, oov in full] == [(n, oov) for _, n, oov in mine], sentence
        assert theirs.score(sentence) == pytest.approx(score_sentence(ours, sentence), abs=1e-4)
    ppl = perplexity(ours, tests)
    assert ppl["perplexity"] == pytest.approx(10 ** (-sum(theirs.score(s) for s in tests)
                                                      / (ppl["words"] + len(tests))), rel=1e-4)


def test_perplexity_and_oov_rate():
    model = estimate([["a", "b"], ["b", "a"]], order=2)
    ppl = perplexity(model, ["a b", "a zz"])
    assert (ppl["words"], ppl["oov"], ppl["oov_rate"]) == (4, 1, 0.25)
    total = score_sentence(model, "a b") + score_sentence(model, "a zz")
    assert ppl["perplexity"] == pytest.approx(10 ** (-total / 6), rel=1e-4)
    assert ppl["perplexity_excluding_oov"] > 0


def test_short_sentences_and_bad_input():
    model = estimate([["a"], ["b"]], order=5)  # no 4-grams: sentences of one word give at most 3-grams
    assert model.order == 3 and "order 3" in model.info["notes"][0]
    with pytest.raises(LowresError, match="between 2 and"):
        estimate([["a"]], order=1)
    with pytest.raises(LowresError, match="empty"):
        estimate([[]], order=2)
    with pytest.raises(LowresError, match="marker"):
        Corpus().add(["a", "</s>"])


def test_arpa_reader_errors(tmp_path):
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=2\nngram 2=1\n\n\\1-grams:\n-1\t<s>\t0\n-1\ta\t0\n\n\\2-grams:\n-0.5\ta b\n"
                   "\n\\end\\\n", encoding="utf-8")
    with pytest.raises(LowresError, match="'b' is not among the unigrams"):
        read_arpa(bad)
    bad.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1\t<s>\n-1\ta\n\\end\\\n", encoding="utf-8")
    with pytest.raises(LowresError, match=r"bad.arpa:7: the header promises 3 1-grams"):
        read_arpa(bad)
    bad.write_text("hello\n", encoding="utf-8")
    with pytest.raises(LowresError, match="not an ARPA file"):
        read_arpa(bad)


# --------------------------------------------------------------------------------------------------
# spelling: lexicon and unit sentences


def test_lexicon_spelling_and_unit_sentences(tmp_path):
    vocab = Vocab(tuple("abcdg'"))
    assert spell("g'a", vocab) == ["g", "'", "a"]
    assert spell("dax", vocab) is None
    lines, left_out = lexicon_lines(["<s>", "ab", "dax", "<unk>", "ca"], vocab)
    assert lines == ["ab\ta b |", "ca\tc a |"] and left_out == ["dax"]
    (tmp_path / "lex.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read_lexicon(tmp_path / "lex.txt") == [("ab", ["a", "b"]), ("ca", ["c", "a"])]
    (tmp_path / "bad.txt").write_text("ab\n", encoding="utf-8")
    with pytest.raises(LowresError, match="bad.txt:1"):
        read_lexicon(tmp_path / "bad.txt")

    corpus = Corpus()
    for s in ("ab ca", "dax", "g'a a b"):
        corpus.add(s.split())
    units, tokens, lengths = unit_sentences(*corpus.arrays(), vocab)
    assert units[:4] == ("<unk>", "<s>", "</s>", "|")
    pieces = np.split(tokens, np.cumsum(lengths)[:-1])
    assert [" ".join(units[i] for i in p) for p in pieces] == ["a b | c a", "d a <unk>", "g ' a | a | b"]
    # a cap on the units keeps evenly spaced sentences (every 2nd here: 3 + 5 + 7 units > 10)
    _, tokens, lengths = unit_sentences(*corpus.arrays(), vocab, max_units=10)
    assert lengths.tolist() == [5, 7] and len(tokens) == 12


# --------------------------------------------------------------------------------------------------
# the LM folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lmcorpus")
    factory.table(root / "corpus.csv", n=30, speakers=6)
    res = invoke("prepare", root / "corpus.csv", "--out", root / "prep", "-q")
    assert res.exit_code == 0, res.output
    return root / "prep"


def dev_transcripts(prepared: Path) -> list[str]:
    lines = (prepared / "manifests" / "dev.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


@pytest.fixture(scope="module")
def text_file(prepared, tmp_path_factory) -> Path:
    rng = random.Random(3)
    path = tmp_path_factory.mktemp("lmtext") / "news.txt"
    lines = [f"{factory.sentence(rng).capitalize()}. {factory.sentence(rng)}!" for _ in range(150)]
    lines.append(dev_transcripts(prepared)[0].upper() + ".")  # a dev sentence: must be dropped
    lines.append("Zzz qqq. " + dev_transcripts(prepared)[1].capitalize() + "?  Habari!")  # a dev sentence mid-line
    first, *rest = dev_transcripts(prepared)[2].split()
    lines.append(f"{first.capitalize()}. {' '.join(rest)}!" if rest else first)  # a dev line split by punctuation
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lm_dir(prepared, text_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm") / "lm"
    res = invoke("lm", "--text", text_file, "--data", prepared, "--order", 3, "--out", out)
    assert res.exit_code == 0, res.output
    assert "dev perplexity" in res.output and "held-out" in res.output
    return out


def test_lm_folder(lm_dir, prepared, text_file):
    report = json.loads((lm_dir / "lm_report.json").read_text())
    assert sorted(p.name for p in lm_dir.iterdir()) == ["lexicon.txt", "lm.arpa", "lm_report.json", "units.arpa"]
    assert report["order"] == 3 and report["training_transcripts"]["transcripts"] > 0
    held = report["heldout_check"]
    assert held["dropped_sentences"] >= 3 and held["dropped_matching_dev"] >= 3
    assert report["texts"][0]["dropped_heldout"] >= 3
    model = read_arpa(lm_dir / "lm.arpa")
    words = set(model.vocab)
    assert "zzz" in words and "habari" in words  # the text's own words, normalised (lower case, no punctuation)
    # no held-out sentence reached the counts: the dev transcripts' full 3-grams are there only if seen elsewhere
    assert report["dev"]["sentences"] == len(dev_transcripts(prepared)) and report["dev"]["oov_rate"] == 0.0
    assert report["dev"]["perplexity"] > 1
    vocab = Vocab.load(prepared)
    lexicon = dict(read_lexicon(lm_dir / "lexicon.txt"))
    # z and q never occur in the transcripts: the acoustic model cannot spell "zzz" and "qqq"
    assert set(lexicon) == words - {"<s>", "</s>", "<unk>", "zzz", "qqq"}
    assert all(u in vocab for units in lexicon.values() for u in units)
    assert report["lexicon"]["words"] == len(lexicon)
    assert (report["lexicon"]["left_out"], sorted(report["lexicon"]["left_out_examples"])) == (2, ["qqq", "zzz"])
    units = read_arpa(lm_dir / "units.arpa")
    assert "|" in units.vocab and units.order == 6 and report["units_lm"]["dev"]["perplexity"] > 1


def test_heldout_sentences_never_counted(prepared, tmp_path):
    dev = dev_transcripts(prepared)
    text = tmp_path / "only_dev.txt"
    text.write_text("\n".join(d.capitalize() + "." for d in dev) + "\n", encoding="utf-8")
    report = build_lm([text], tmp_path / "lm", order=2, data=prepared, unit_order=0)
    assert report["heldout_check"]["dropped_sentences"] == len(dev)
    assert report["texts"][0]["sentences"] == 0 and report["files"]["units_arpa"] is None
    # without --data nothing is known about dev: the same text is a corpus like any other
    report = build_lm([text], tmp_path / "lm2", order=2)
    assert report["sentences"] == len(dev) and report["lexicon"] is None


def test_lm_command_errors(prepared, text_file, tmp_path):
    res = invoke("lm", "--text", prepared / "manifests" / "dev.jsonl", "--data", prepared, "--out", tmp_path / "a")
    assert res.exit_code == 2 and "never reach" in res.output
    res = invoke("lm", "--text", text_file, "--order", 6, "--out", tmp_path / "b")
    assert res.exit_code == 2 and "between 2 and 5" in res.output
    res = invoke("lm", "--text", tmp_path / "missing.txt", "--out", tmp_path / "c")
    assert res.exit_code == 2 and "not found" in res.output
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    res = invoke("lm", "--text", text_file, "--out", tmp_path / "d", "-q")
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = invoke("lm", "--text", text_file, "--out", tmp_path / "d", "-q", "--overwrite", "--prune")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine"
    report = json.loads((tmp_path / "d" / "lm_report.json").read_text())
    assert report["pruning"]["singletons_from_order"] == 3
    assert report["ngrams"]["3"] < report["pruning"]["ngrams_before"]["3"]


# --------------------------------------------------------------------------------------------------
# decoding


def test_lm_options_without_extra_or_lm(lm_dir, monkeypatch, tmp_path):
    import sys

    res = invoke("eval", "--model", tmp_path, "--manifest", lm_dir / "lm.arpa", "--lexicon-free")
    assert res.exit_code == 2 and "--lm LM_DIR" in res.output
    res = invoke("eval", "--model", tmp_path, "--manifest", lm_dir / "lm.arpa", "--lm", lm_dir, "--tune-lm",
                 "--lm-weight", 1)
    assert res.exit_code == 2 and "not both" in res.output
    monkeypatch.setitem(sys.modules, "flashlight.lib.text.decoder.kenlm", None)  # as if not installed
    from lowres.decode import BeamSearch, DecodeOptions
    from lowres.runtime import install_hint

    with pytest.raises(LowresError) as err:
        BeamSearch.from_options(DecodeOptions(lm=lm_dir))
    assert "needs the lm extra (flashlight-text)" in str(err.value) and install_hint("lm") in str(err.value)


def synthetic_logits(vocab: Vocab, texts: list[str], noise: float, seed: int = 0):
    """CTC outputs that spell ``texts`` (one symbol every other frame), buried in Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    frames = [2 * len(vocab.encode(t)) + 2 for t in texts]
    logits = torch.full((len(texts), max(frames), len(vocab)), -5.0)
    logits[:, :, 0] = 0.0
    for b, t in enumerate(texts):
        for i, sym in enumerate(vocab.encode(t)):
            logits[b, 2 * i + 1, sym], logits[b, 2 * i + 1, 0] = 5.0, -5.0
    return logits + noise * torch.randn(logits.shape, generator=g), torch.tensor(frames)


def test_beam_search_with_the_lm(lm_dir, prepared, tmp_path):
    pytest.importorskip("flashlight.lib.text")
    from lowres.decode import BeamSearch, DecodeOptions, greedy_texts

    def search(lm, **options) -> BeamSearch:
        return BeamSearch.from_options(DecodeOptions(lm=lm, **options))

    vocab = Vocab.load(prepared)
    texts = dev_transcripts(prepared)[:3]
    logits, frames = synthetic_logits(vocab, texts, noise=3.0)
    greedy = greedy_texts(logits, frames, vocab)
    assert greedy != texts  # the noise is strong enough to spoil greedy decoding

    lm = search(lm_dir, lm_weight=1.0, word_score=0.0, beam_size=20)
    decode = lm.make_decoder(vocab)
    assert decode(logits, frames) == texts
    assert "lexicon" in lm.name and lm.settings()["weights_from"] == {"lm_weight": "given", "word_score": "given"}
    free = search(lm_dir, lexicon_free=True, lm_weight=2.0, beam_size=20)
    assert free.make_decoder(vocab)(logits, frames) == texts
    # a bare ARPA file works too (its lexicon is spelled from the unigrams); empty input gives empty text
    bare = search(lm_dir / "lm.arpa", lm_weight=1.0).make_decoder(vocab)
    assert bare(logits, frames) == texts
    assert bare(torch.zeros(1, 0, len(vocab)), torch.tensor([0])) == [""]

    # a run that spells with other units: the lexicon is rebuilt from the ARPA words it can spell
    few = Vocab(tuple("abehiklmnorstu"))
    lexicon = lm.lexicon_for(few)
    assert lexicon and all(set(spelling[0][:-1]) <= set(few.symbols) for spelling in lexicon.values())
    assert "kesho" in lexicon and "mvua" not in lexicon

    with pytest.raises(LowresError, match="units.arpa"):
        (tmp_path / "words_only").mkdir()
        (tmp_path / "words_only" / "lm.arpa").write_bytes((lm_dir / "lm.arpa").read_bytes())
        search(tmp_path / "words_only", lexicon_free=True)


@pytest.mark.slow
def test_eval_tune_lm_and_transcribe(prepared, lm_dir, tmp_path, monkeypatch):
    pytest.importorskip("flashlight.lib.text")
    import lowres.evaluate

    monkeypatch.setattr(lowres.evaluate, "TUNE_LM_WEIGHTS", (0.5, 2.0))  # 2 × 3 points instead of 6 × 5
    monkeypatch.setattr(lowres.evaluate, "TUNE_WORD_SCORES", (-1.0, 0.0, 1.0))
    run = tmp_path / "run"
    res = invoke("finetune", "--data", prepared, "--split", "full", "--base", "tiny", "--out", run, "--max-steps", 1,
                 *FAST)
    assert res.exit_code == 0, res.output
    res = invoke("eval", "--model", run, "--data", prepared, "--split", "test", "--lm", lm_dir, "--tune-lm",
                 "--beam", 8, "--out", tmp_path / "e1", "-q")
    assert res.exit_code == 0, res.output
    assert "greedy WER" in res.output
    metrics = json.loads((tmp_path / "e1" / "metrics.json").read_text())
    tuned = json.loads((lm_dir / "tuned.json").read_text())["lexicon"]
    assert metrics["decoder"].startswith("beam 8, lexicon")
    assert {"wer", "cer"} <= set(metrics["greedy"]) and metrics["lm_tuning"]["lm_weight"] == tuned["lm_weight"]
    assert len(tuned["grid"]) == 6 and tuned["dev_manifest"].endswith("dev.jsonl")
    assert metrics["lm"]["weights_from"] == {"lm_weight": "tuned", "word_score": "tuned"}
    rows = [json.loads(line) for line in (tmp_path / "e1" / "hyps.jsonl").read_text().splitlines()]
    assert all("greedy_hypothesis" in r for r in rows)
    # later runs use the stored weights unless told otherwise
    res = invoke("eval", "--model", run, "--data", prepared, "--lm", lm_dir, "--word-score", 0.5, "--beam", 8,
                 "--out", tmp_path / "e2", "-q")
    assert res.exit_code == 0, res.output
    lm = json.loads((tmp_path / "e2" / "metrics.json").read_text())["lm"]
    assert (lm["lm_weight"], lm["word_score"]) == (tuned["lm_weight"], 0.5)
    assert lm["weights_from"] == {"lm_weight": "tuned", "word_score": "given"}
    wav = Path(json.loads((prepared / "manifests" / "test.jsonl").read_text().splitlines()[0])["audio_filepath"])
    wav = wav if wav.is_absolute() else (prepared / "manifests" / wav).resolve()
    res = invoke("transcribe", "--model", run, "--lm", lm_dir, "--beam", 8, wav)
    assert res.exit_code == 0, res.output
    assert res.output.startswith(str(wav))
    if importlib.util.find_spec("onnxruntime") is not None:  # the same search over an ONNX export's frame scores
        res_onnx = invoke("export", "--model", run, "--format", "onnx", "--out", tmp_path / "deploy", "-q")
        assert res_onnx.exit_code == 0, res_onnx.output
        res_onnx = invoke("transcribe", "--model", tmp_path / "deploy", "--lm", lm_dir, "--beam", 8, wav)
        assert res_onnx.exit_code == 0 and res_onnx.output == res.output, res_onnx.output
