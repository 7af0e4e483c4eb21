"""``build_lm()``: text files (+ the training transcripts of a prepared folder) → an LM folder. The library
function behind ``lowres lm``.

The folder holds ``lm.arpa`` (the word n-gram), ``lexicon.txt`` (every word the acoustic vocabulary can
spell, in its units, for lexicon-constrained beam search), ``units.arpa`` (an n-gram over the acoustic
units with ``|`` between words, for lexicon-free beam search, whose flashlight decoder scores every emitted
unit) and ``lm_report.json``; ``lowres eval --tune-lm`` adds ``tuned.json`` (the names and the tuned weights'
format: :mod:`lowres.lm.folder`). The lexicon and the unit model need the prepared folder's vocabulary
(``--data``).

Each line of a text file is split into sentences at sentence-final punctuation followed by a space, and
each sentence is normalised exactly as ``prepare`` normalised the transcripts (the settings are read from
``prepare_report.json``). Dev and test transcripts never reach the model: a sentence or a whole line equal
to one of them (after normalisation) is dropped, counted and reported, and the prepared folder's own
manifests cannot be given as text. The dev perplexity and OOV rate in the report are computed on
``manifests/dev.jsonl``.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import regex

from lowres import LowresError, __version__
from lowres.config import LMConfig
from lowres.data.manifest import read_manifest
from lowres.data.prepared import PreparedDir
from lowres.data.splits import HELDOUT_SPLITS
from lowres.data.text import TextConfig, normalize
from lowres.data.vocab import Vocab
from lowres.fsutil import atomic_write_json, claim_folder
from lowres.lm.folder import ARPA, LEXICON, OUTPUT_NAMES, REPORT, UNITS_ARPA, LMFolder
from lowres.lm.lexicon import unit_sentences, write_lexicon
from lowres.lm.ngram import Corpus, estimate_arrays, perplexity, write_arpa

WORD_ORDERS = (2, 5)  # the --order range (words)
UNIT_ORDERS = (2, 10)  # the --unit-order range (units; 0 turns the unit model off)
UNIT_MAX_TOKENS = 10_000_000  # the unit model sees at most this many units (every k-th sentence beyond):
#                               unit statistics settle long before that, and memory stays near the word model's
_SENTENCE_BREAK = regex.compile(r"(?<=\p{Sentence_Terminal}[\p{Pe}\p{Pf}\"']*)\s+")
_EXAMPLES = 10  # dropped held-out sentences quoted in the report
_PROGRESS_EVERY = 20_000  # lines between progress updates


def split_sentences(line: str) -> list[str]:
    """Sentences of one line of text: breaks after sentence-final punctuation (Unicode Sentence_Terminal:
    . ! ? । ۔ 。 ...), optionally followed by closing quotes or brackets, then white space."""
    return [s for s in _SENTENCE_BREAK.split(line) if s.strip()]


def _clear_outputs(out: Path) -> None:
    """What --overwrite removes: only the language model's own files (other files are left alone)."""
    for name in OUTPUT_NAMES:
        (out / name).unlink(missing_ok=True)


def build_lm(
    texts: list[Path],
    out: Path,
    order: int = LMConfig.order,
    data: Path | None = None,
    text_config: TextConfig | None = None,
    prune_singletons: bool = False,
    overwrite: bool = False,
    console=None,
    *,
    unit_order: int = LMConfig.unit_order,
    prune_from_order: int = LMConfig.prune_from_order,
) -> dict:
    """Estimate a word n-gram model (interpolated modified Kneser-Ney, :mod:`lowres.lm.ngram`) and write
    ``out/lm.arpa``, ``out/lexicon.txt`` and ``out/units.arpa`` (when ``data`` has a vocabulary) and
    ``out/lm_report.json``.

    ``texts``: UTF-8 text files, one or more sentences a line (lines that are not UTF-8 are skipped and
    counted). ``data``: a folder written by ``lowres prepare``; its training transcripts
    (``manifests/full.jsonl``) are added, its dev and test transcripts are kept out, its vocabulary spells
    the lexicon and the unit model. ``text_config``: the normalisation; None means prepare's (from ``data``)
    or the default. ``prune_singletons``: leave out n-grams of order >= ``prune_from_order`` seen once (both
    models). ``unit_order``: order of the unit model (0: none). Returns the report.
    """
    t0 = time.perf_counter()
    from lowres.progress import progress_bar

    texts, out = [Path(t) for t in texts], Path(out)
    _check_arguments(texts, data, order, unit_order, prune_singletons, prune_from_order)
    notes: list[str] = []
    prepared, text_config, units, vocab = _open_data(data, texts, text_config, notes)
    heldout = HeldoutFilter(_heldout_transcripts(prepared) if prepared is not None else {})
    if data is not None and not heldout.transcripts:
        notes.append("the prepared folder has no dev or test transcripts to keep out")
    claim_folder(out, what="language model", overwrite=overwrite, clear=_clear_outputs,
                 hint="Pass --overwrite to replace the language model files in it (other files are left alone), "
                      "or choose another --out.")
    folder = LMFolder(out)
    prune_from = prune_from_order if prune_singletons else None
    with progress_bar(console) as progress:
        corpus, sources, train, dev_texts = _read_corpus(texts, prepared, text_config, heldout, progress)
        m, dev, lexicon, unit_report = _estimate(corpus, order, unit_order, prune_from, vocab, dev_texts, folder,
                                                 progress)
    if data is not None and not dev_texts:
        notes.append("the prepared folder has no dev transcripts: no dev perplexity")
    notes.extend(m["notes"])
    report = {
        "lowres_version": __version__,
        "order": m["order"],
        "requested_order": order,
        "smoothing": "interpolated modified Kneser-Ney (as KenLM lmplz)",
        "texts": sources,
        "data": str(data) if data is not None else None,
        "training_transcripts": train,
        "heldout_check": heldout.report(),
        "sentences": m["sentences"],
        "tokens": m["tokens"],
        "vocabulary_size": m["vocabulary_size"],
        "ngrams": m["ngrams"],
        "pruning": {
            "singletons_from_order": prune_from_order,
            "ngrams_before": m["ngrams_before"],
        } if prune_singletons else None,
        "discounts": m["discounts"],
        "dev": dev,
        "lexicon": lexicon,
        "units_lm": unit_report,
        "text_config": {"unicode_form": text_config.unicode_form, "lowercase": text_config.lowercase,
                        "keep_apostrophes": text_config.keep_apostrophes, "digits": text_config.digits,
                        "text_rules": text_config.rules.name or None, "units": units},
        "files": {"arpa": ARPA, "lexicon": LEXICON if lexicon is not None else None,
                  "units_arpa": UNITS_ARPA if unit_report is not None else None},
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    atomic_write_json(folder.report, report)
    return report


def _check_arguments(texts: list[Path], data: Path | None, order: int, unit_order: int, prune_singletons: bool,
                     prune_from_order: int) -> None:
    if not WORD_ORDERS[0] <= order <= WORD_ORDERS[1]:
        raise LowresError(f"--order must be between {WORD_ORDERS[0]} and {WORD_ORDERS[1]}, not {order}.")
    if unit_order and not UNIT_ORDERS[0] <= unit_order <= UNIT_ORDERS[1]:
        raise LowresError(f"--unit-order must be 0 (no unit model) or between {UNIT_ORDERS[0]} and "
                          f"{UNIT_ORDERS[1]}, not {unit_order}.")
    if prune_singletons and prune_from_order < 2:
        raise LowresError(f"Singletons can be pruned from order 2 upwards, not {prune_from_order}.")
    for t in texts:
        if not t.is_file():
            raise LowresError(f"Text file not found: {t}. Give UTF-8 text files, one or more sentences a line.")
    if not texts and data is None:
        raise LowresError("Nothing to build from: give text files (--text), a prepared folder (--data), or both.")


def _open_data(data: Path | None, texts: list[Path], text_config: TextConfig | None,
               notes: list[str]) -> tuple[PreparedDir | None, TextConfig, str, Vocab | None]:
    """``--data``, checked (prepared, with manifests/full.jsonl; no --text inside it), with the normalisation and
    units prepare used and its vocabulary (None without vocab.json: no lexicon and no unit model, noted)."""
    if data is None:
        return None, text_config or TextConfig(), "grapheme", None
    data = Path(data)
    prepared = PreparedDir.open(data, need_vocab=False)
    if not prepared.manifest("full").is_file():
        raise LowresError(f"{data} has no manifests/full.jsonl. Pass the folder written by `lowres prepare` "
                          "for a labeled corpus.")
    for t in texts:
        if t.resolve().is_relative_to(data.resolve()):
            raise LowresError(f"--text {t} is inside the prepared folder {data}. Its training transcripts are "
                              "added by --data already, and its dev and test transcripts must never reach "
                              "the language model; give only outside text with --text.")
    prepared_cfg, units = prepared.text_config(), prepared.units
    if text_config is None:
        text_config = prepared_cfg
    elif text_config != prepared_cfg:
        notes.append("the text normalisation given differs from the one `lowres prepare` used for --data")
    vocab = None
    if prepared.has_vocab:
        vocab = prepared.load_vocab()
    else:
        notes.append("the prepared folder has no vocab.json: no lexicon and no unit model were written")
    return prepared, text_config, units, vocab


class HeldoutFilter:
    """Keeps every dev or test transcript (``{sentence: the sets it is in}``) out of the LM, counting each one."""

    def __init__(self, transcripts: dict[str, tuple[str, ...]]):
        self.transcripts = transcripts
        self.dropped: Counter = Counter()
        self.examples: list[str] = []

    def keep(self, sentence: str) -> bool:
        sets = self.transcripts.get(sentence)
        if sets is None:
            return True
        for s in sets:
            self.dropped[s] += 1
        self.dropped["sentences"] += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(sentence)
        return False

    def report(self) -> dict:
        return {"dev_test_transcripts": len(self.transcripts), "dropped_sentences": self.dropped["sentences"],
                "dropped_matching_dev": self.dropped["dev"], "dropped_matching_test": self.dropped["test"],
                "dropped_examples": self.examples}


def _read_corpus(texts: list[Path], prepared: PreparedDir | None, text_config: TextConfig, heldout: HeldoutFilter,
                 progress) -> tuple[Corpus, list[dict], dict, list[str]]:
    """The sentences of the text files (dev/test sentences dropped) and the prepared folder's training
    transcripts; returns the corpus, each file's counts, the transcripts' counts and the dev transcripts."""
    corpus = Corpus()
    total_mb = sum(t.stat().st_size for t in texts) / 1e6
    task = progress.add_task("reading text", total=round(total_mb, 3) or None, unit="MB")
    sources = [_read_text(path, text_config, corpus, heldout.keep, progress, task) for path in texts]
    train = {"transcripts": 0, "equal_to_dev_or_test": 0}
    dev_texts: list[str] = []
    if prepared is not None:
        for utt in read_manifest(prepared.manifest("full")):
            # already normalised by prepare; a training transcript that is also a held-out one is kept
            # (the acoustic model trains on it too) but counted
            if utt.text in heldout.transcripts:
                train["equal_to_dev_or_test"] += 1
            if corpus.add(utt.text.split()):
                train["transcripts"] += 1
        if prepared.manifest("dev").is_file():
            dev_texts = [u.text for u in read_manifest(prepared.manifest("dev")) if u.text]
    if not corpus.sentences:
        raise LowresError("No sentences are left to build a language model from (all text files and "
                          "transcripts are empty after normalisation, or were dev/test sentences).")
    return corpus, sources, train, dev_texts


def _estimate(corpus: Corpus, order: int, unit_order: int, prune_from: int | None, vocab: Vocab | None,
              dev_texts: list[str], folder: LMFolder, progress) -> tuple[dict, dict | None, dict | None, dict | None]:
    """The word model (written as lm.arpa, its lexicon beside it) and the unit model (units.arpa), one after the
    other: each array is let go as soon as the next step no longer needs it, since the unit model needs the
    memory. Returns the word model's summary, its dev perplexity, the lexicon's report and the unit model's."""
    steps = 2 + (1 if vocab is not None else 0) + (2 if vocab is not None and unit_order else 0)
    est = progress.add_task(f"estimating the {order}-gram model", total=steps, unit="steps")
    words, tokens, lengths = corpus.arrays()
    del corpus
    model = estimate_arrays(words, tokens, lengths, order, prune_singletons_from=prune_from)
    progress.advance(est)
    write_arpa(model, folder.arpa)
    progress.advance(est)
    dev = perplexity(model, dev_texts) if dev_texts else None
    lexicon = None
    if vocab is not None:
        lexicon = write_lexicon(model.vocab, vocab, folder.lexicon)
        progress.advance(est)
    m = _summary(model)
    model_sentences = m["sentences"]
    del model  # the unit model needs the memory
    if vocab is None or not unit_order:
        return m, dev, lexicon, None
    unit_vocab, unit_tokens, unit_lengths = unit_sentences(words, tokens, lengths, vocab, max_units=UNIT_MAX_TOKENS)
    unit_sentence_count = len(unit_lengths)
    del tokens, lengths
    unit_model = estimate_arrays(unit_vocab, unit_tokens, unit_lengths, unit_order, prune_singletons_from=prune_from)
    del unit_tokens, unit_lengths
    progress.advance(est)
    write_arpa(unit_model, folder.units_arpa)
    progress.advance(est)
    unit_report = {
        "order": unit_model.order, "requested_order": unit_order, "units": len(unit_vocab),
        "tokens": unit_model.info["tokens"], "sentences": unit_sentence_count,
        "ngrams": {str(n): c for n, c in enumerate(unit_model.counts, 1)},
        "discounts": {str(n): d.as_dict() for n, d in enumerate(unit_model.discounts, 1)},
        "dev": _unit_dev(unit_model, dev_texts, vocab) if dev_texts else None,
        "notes": unit_model.info["notes"],
    }
    if unit_sentence_count < model_sentences:
        unit_report["notes"].append(
            f"estimated on {unit_sentence_count:,} evenly spaced sentences of {model_sentences:,} "
            f"(at most {UNIT_MAX_TOKENS:,} units)")
    return m, dev, lexicon, unit_report


def _summary(model) -> dict:
    return {"order": model.order, "sentences": model.info["sentences"], "tokens": model.info["tokens"],
            "vocabulary_size": len(model.vocab), "ngrams": {str(n): c for n, c in enumerate(model.counts, 1)},
            "ngrams_before": {str(n): c for n, c in enumerate(model.info["ngrams_before_pruning"], 1)},
            "discounts": {str(n): d.as_dict() for n, d in enumerate(model.discounts, 1)},
            "notes": list(model.info["notes"])}


def _unit_dev(model, dev_texts: list[str], vocab: Vocab) -> dict:
    """Per-unit dev perplexity of the unit model (``|`` and ``</s>`` predicted too)."""
    from lowres.lm.lexicon import unit_spelling

    def spelled(text: str) -> list[str]:
        out: list[str] = []
        for w in text.split():
            if out:
                out.append("|")
            out.extend(unit_spelling(w, vocab))
        return out

    ppl = perplexity(model, (spelled(t) for t in dev_texts))
    return {"units": ppl["words"], "perplexity": ppl["perplexity"]}


def _heldout_transcripts(prepared: PreparedDir) -> dict[str, tuple[str, ...]]:
    """{normalised transcript: the held-out sets ('dev', 'test') that have it}."""
    sets: dict[str, set] = {}
    for name in HELDOUT_SPLITS:
        path = prepared.manifest(name)
        if path.is_file():
            for u in read_manifest(path):
                if u.text:
                    sets.setdefault(u.text, set()).add(name)
    return {t: tuple(sorted(s)) for t, s in sets.items()}


def _read_text(path: Path, cfg: TextConfig, corpus, keep, progress, task) -> dict:
    """Add the sentences of one text file to ``corpus``; return its counts for the report."""
    stats = {"path": str(path), "lines": 0, "undecodable_lines": 0, "empty_lines": 0, "sentences": 0,
             "dropped_heldout": 0}
    pending = 0
    with open(path, "rb") as f:
        for raw in f:
            stats["lines"] += 1
            pending += len(raw)
            if stats["lines"] % _PROGRESS_EVERY == 0:
                progress.advance(task, pending / 1e6)
                pending = 0
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                stats["undecodable_lines"] += 1
                continue
            sentences = [s for s in (normalize(piece, cfg) for piece in split_sentences(line)) if s]
            if not sentences:
                stats["empty_lines"] += 1
                continue
            # the whole line may be one held-out transcript that the punctuation split up
            if len(sentences) > 1 and not keep(" ".join(sentences)):
                stats["dropped_heldout"] += 1
                continue
            added = 0
            for sentence in sentences:
                if not keep(sentence):
                    stats["dropped_heldout"] += 1
                    continue
                corpus.add(sentence.split())
                added += 1
            stats["sentences"] += added
    progress.advance(task, pending / 1e6)
    return stats


def print_summary(report: dict, out: Path, console) -> None:
    """A few lines on ``console`` for the command line."""
    from lowres.progress import say

    grams = ", ".join(f"{n}-grams {c:,}" for n, c in report["ngrams"].items())
    say(console, f"{report['order']}-gram model from {report['sentences']:,} sentences, {report['tokens']:,} words, "
                  f"{report['vocabulary_size']:,} word types: {grams}")
    held = report["heldout_check"]
    say(console, f"dev/test check: {held['dev_test_transcripts']:,} held-out transcripts; "
                  f"{held['dropped_sentences']:,} matching text sentences dropped")
    dev = report.get("dev")
    if dev:
        say(console, f"dev perplexity {dev['perplexity']} (without OOVs {dev['perplexity_excluding_oov']}), "
                      f"OOV rate {100 * dev['oov_rate']:.2f}%")
    lex = report.get("lexicon")
    if lex:
        say(console, f"lexicon: {lex['words']:,} words; {lex['left_out']:,} left out (symbols outside the "
                      "acoustic vocabulary)")
    unit = report.get("units_lm")
    if unit:
        unit_dev = f"; dev perplexity {unit['dev']['perplexity']} per unit" if unit.get("dev") else ""
        say(console, f"unit model (lexicon-free decoding): {unit['order']}-grams over {unit['units']} units"
                      f"{unit_dev}")
    for note in report.get("notes", []):
        say(console, f"note: {note}")
    written = [name for name in report["files"].values() if name] + [REPORT]
    say(console, f"wrote {', '.join(written)} to {out} in {report['seconds']} s")
