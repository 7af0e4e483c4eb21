"""``build_lm()``: text files (+ the training transcripts of a prepared folder) → ``lm.arpa``, ``lexicon.txt``
and ``lm_report.json``. The library function behind ``lowres lm``.

Each line of a text file is split into sentences at sentence-final punctuation followed by a space, and
each sentence is normalised exactly as ``prepare`` normalised the transcripts (the settings are read from
``prepare_report.json``). Dev and test transcripts never reach the model: a sentence or a whole line equal
to one of them (after normalisation) is dropped, counted and reported. The dev perplexity and OOV rate in
the report are computed on ``manifests/dev.jsonl``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import regex

from lowres import LowresError, __version__
from lowres.data.manifest import read_manifest
from lowres.data.text import LanguageRules, TextConfig, available_rules, load_rules, normalize
from lowres.data.vocab import Vocab
from lowres.fsutil import atomic_write_json
from lowres.lm.lexicon import write_lexicon
from lowres.lm.ngram import MAX_ORDER, MIN_ORDER, Corpus, estimate, perplexity, write_arpa

OUTPUT_NAMES = ("lm.arpa", "lexicon.txt", "lm_report.json")
DEFAULT_PRUNE_FROM_ORDER = 3  # prune_singletons=True drops singleton 3-grams and longer (lmplz --prune 0 0 1)
_SENTENCE_BREAK = regex.compile(r"(?<=\p{Sentence_Terminal}[\p{Pe}\p{Pf}\"']*)\s+")
_EXAMPLES = 10  # dropped held-out sentences quoted in the report
_PROGRESS_EVERY = 20_000  # lines between progress updates


def split_sentences(line: str) -> list[str]:
    """Sentences of one line of text: breaks after sentence-final punctuation (Unicode Sentence_Terminal:
    . ! ? । ۔ 。 ...), optionally followed by closing quotes or brackets, then white space."""
    return [s for s in _SENTENCE_BREAK.split(line) if s.strip()]


def text_config_from_prepare(data: Path) -> tuple[TextConfig, str]:
    """The text normalisation settings and vocabulary units that ``prepare`` used for ``data``."""
    path = Path(data) / "prepare_report.json"
    if not path.is_file():
        raise LowresError(f"{data} has no prepare_report.json. Pass the folder written by `lowres prepare`.")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        cfg = report.get("config") or {}
        rules_name = report.get("text_rules")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise LowresError(f"{path} is not a valid prepare report: {exc}") from None
    rules = LanguageRules()
    if rules_name:
        if rules_name not in available_rules():
            raise LowresError(
                f"`lowres prepare` normalised {data} with the text rules {rules_name!r} from your own TOML file, "
                "which the report does not hold. Pass the same rules again (text_config=TextConfig(rules="
                "load_rules(path)), or --text-rules PATH) so the language model sees the same spellings."
            )
        rules = load_rules(rules_name)
    try:
        text_cfg = TextConfig(unicode_form=cfg.get("unicode_form", "NFKC"), lowercase=cfg.get("lowercase", True),
                              keep_apostrophes=cfg.get("keep_apostrophes", True), digits=cfg.get("digits", "keep"),
                              rules=rules)
    except TypeError as exc:
        raise LowresError(f"{path}: unexpected text settings: {exc}") from None
    return text_cfg, str(cfg.get("units", "grapheme"))


def claim_output_folder(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``overwrite``; with it, remove only this command's own outputs."""
    if out.exists() and not out.is_dir():
        raise LowresError(f"--out {out} is a file; give a folder for the language model.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise LowresError(f"The output folder {out} is not empty. Pass --overwrite to replace the language "
                              "model files in it (other files are left alone), or choose another --out.")
        for name in OUTPUT_NAMES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def build_lm(
    texts: list[Path],
    out: Path,
    order: int = 4,
    data: Path | None = None,
    text_config: TextConfig | None = None,
    prune_singletons: bool = False,
    overwrite: bool = False,
    console=None,
    *,
    prune_from_order: int = DEFAULT_PRUNE_FROM_ORDER,
) -> dict:
    """Estimate a word n-gram model (interpolated modified Kneser-Ney, :mod:`lowres.lm.ngram`) and write
    ``out/lm.arpa``, ``out/lexicon.txt`` (when ``data`` has a vocabulary) and ``out/lm_report.json``.

    ``texts``: UTF-8 text files, one or more sentences a line (lines that are not UTF-8 are skipped and
    counted). ``data``: a folder written by ``lowres prepare``; its training transcripts
    (``manifests/full.jsonl``) are added, its dev and test transcripts are kept out, its vocabulary spells
    the lexicon. ``text_config``: the normalisation; None means prepare's (from ``data``) or the default.
    ``prune_singletons``: leave out n-grams of order >= ``prune_from_order`` seen once. Returns the report.
    """
    t0 = time.perf_counter()
    from lowres.progress import progress_bar

    texts = [Path(t) for t in texts]
    out = Path(out)
    if not MIN_ORDER <= order <= MAX_ORDER:
        raise LowresError(f"--order must be between {MIN_ORDER} and {MAX_ORDER}, not {order}.")
    for t in texts:
        if not t.is_file():
            raise LowresError(f"Text file not found: {t}. Give UTF-8 text files, one or more sentences a line.")
    if not texts and data is None:
        raise LowresError("Nothing to build from: give text files, a prepared folder (--data), or both.")
    notes: list[str] = []
    units = "grapheme"
    manifests = None
    if data is not None:
        data = Path(data)
        manifests = data / "manifests"
        if not (manifests / "full.jsonl").is_file():
            raise LowresError(f"{data} has no manifests/full.jsonl. Pass the folder written by `lowres prepare` "
                              "for a labeled corpus.")
        prepared_cfg, units = text_config_from_prepare(data)
        if text_config is None:
            text_config = prepared_cfg
        elif text_config != prepared_cfg:
            notes.append("the text normalisation given differs from the one `lowres prepare` used for --data")
    text_config = text_config or TextConfig()

    heldout = _heldout_transcripts(manifests) if manifests is not None else {}
    if data is not None and not heldout:
        notes.append("the prepared folder has no dev or test transcripts to keep out")
    claim_output_folder(out, overwrite)

    corpus = Corpus()
    dropped: Counter = Counter()
    dropped_examples: list[str] = []

    def keep(sentence: str) -> bool:
        sets = heldout.get(sentence)
        if sets is None:
            return True
        for s in sets:
            dropped[s] += 1
        dropped["sentences"] += 1
        if len(dropped_examples) < _EXAMPLES:
            dropped_examples.append(sentence)
        return False

    sources: list[dict] = []
    with progress_bar(console) as progress:
        total_mb = sum(t.stat().st_size for t in texts) / 1e6
        task = progress.add_task("reading text", total=round(total_mb, 3) or None, unit="MB")
        for path in texts:
            sources.append(_read_text(path, text_config, corpus, keep, progress, task))
        train = {"transcripts": 0, "equal_to_dev_or_test": 0}
        if manifests is not None:
            for utt in read_manifest(manifests / "full.jsonl"):
                # already normalised by prepare; a training sentence that is also a held-out one is kept
                # (the acoustic model trains on it too) but counted
                if utt.text in heldout:
                    train["equal_to_dev_or_test"] += 1
                if corpus.add(utt.text.split()):
                    train["transcripts"] += 1
        if not corpus.sentences:
            raise LowresError("No sentences are left to build a language model from (all text files and "
                              "transcripts are empty after normalisation, or were dev/test sentences).")
        est = progress.add_task(f"estimating {order}-gram model", total=2, unit="steps")
        model = estimate(corpus, order, prune_singletons_from=prune_from_order if prune_singletons else None)
        progress.advance(est)
        write_arpa(model, out / "lm.arpa")
        progress.advance(est)
        dev = None
        if manifests is not None and (manifests / "dev.jsonl").is_file():
            dev_texts = [u.text for u in read_manifest(manifests / "dev.jsonl") if u.text]
            if dev_texts:
                dev = perplexity(model, dev_texts)

    lexicon = None
    if data is not None:
        if (data / "vocab.json").is_file():
            vocab = Vocab.load(data, units=units)
            lexicon = write_lexicon(model.vocab, vocab, out / "lexicon.txt")
        else:
            notes.append("the prepared folder has no vocab.json: no lexicon was written")

    notes.extend(model.info["notes"])
    report = {
        "lowres_version": __version__,
        "order": model.order,
        "requested_order": order,
        "smoothing": "interpolated modified Kneser-Ney (as KenLM lmplz)",
        "texts": sources,
        "data": str(data) if data is not None else None,
        "training_transcripts": train,
        "heldout_check": {
            "dev_test_transcripts": len(heldout),
            "dropped_sentences": dropped["sentences"],
            "dropped_matching_dev": dropped["dev"],
            "dropped_matching_test": dropped["test"],
            "dropped_examples": dropped_examples,
        },
        "sentences": model.info["sentences"],
        "tokens": model.info["tokens"],
        "vocabulary_size": len(model.vocab),
        "ngrams": {str(n): c for n, c in enumerate(model.counts, 1)},
        "pruning": {
            "singletons_from_order": prune_from_order,
            "ngrams_before": {str(n): c for n, c in enumerate(model.info["ngrams_before_pruning"], 1)},
        } if prune_singletons else None,
        "discounts": {str(n): d.as_dict() for n, d in enumerate(model.discounts, 1)},
        "dev": dev,
        "lexicon": lexicon,
        "text_config": {"unicode_form": text_config.unicode_form, "lowercase": text_config.lowercase,
                        "keep_apostrophes": text_config.keep_apostrophes, "digits": text_config.digits,
                        "text_rules": text_config.rules.name or None, "units": units},
        "files": {"arpa": "lm.arpa", "lexicon": "lexicon.txt" if lexicon is not None else None},
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    atomic_write_json(out / "lm_report.json", report)
    return report


def _heldout_transcripts(manifests: Path) -> dict[str, tuple[str, ...]]:
    """{normalised transcript: the held-out sets ('dev', 'test') that have it}."""
    sets: dict[str, set] = {}
    for name in ("dev", "test"):
        path = manifests / f"{name}.jsonl"
        if path.is_file():
            for u in read_manifest(path):
                if u.text:
                    sets.setdefault(u.text, set()).add(name)
    return {t: tuple(sorted(s)) for t, s in sets.items()}


def _read_text(path: Path, cfg: TextConfig, corpus: Corpus, keep, progress, task) -> dict:
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
            pieces = split_sentences(line)
            if len(pieces) > 1 and not keep(normalize(line, cfg)):  # the whole line is a held-out transcript
                stats["dropped_heldout"] += 1
                continue
            added = nonempty = 0
            for piece in pieces:
                sentence = normalize(piece, cfg)
                if not sentence:
                    continue
                nonempty += 1
                if not keep(sentence):
                    stats["dropped_heldout"] += 1
                    continue
                corpus.add(sentence.split())
                added += 1
            if not nonempty:
                stats["empty_lines"] += 1
            stats["sentences"] += added
    progress.advance(task, pending / 1e6)
    return stats


def print_summary(report: dict, out: Path, console) -> None:
    """A few lines on ``console`` for the command line."""
    grams = ", ".join(f"{n}-grams {c:,}" for n, c in report["ngrams"].items())
    console.print(f"{report['order']}-gram model from {report['sentences']:,} sentences, {report['tokens']:,} words, "
                  f"{report['vocabulary_size']:,} word types: {grams}")
    held = report["heldout_check"]
    console.print(f"dev/test check: {held['dev_test_transcripts']:,} held-out transcripts; "
                  f"{held['dropped_sentences']:,} matching text sentences dropped")
    dev = report.get("dev")
    if dev:
        console.print(f"dev perplexity {dev['perplexity']} (without OOVs {dev['perplexity_excluding_oov']}), "
                      f"OOV rate {100 * dev['oov_rate']:.2f}%")
    lex = report.get("lexicon")
    if lex:
        console.print(f"lexicon: {lex['words']:,} words; {lex['left_out']:,} left out (symbols outside the "
                      "acoustic vocabulary)")
    for note in report.get("notes", []):
        console.print(f"note: {note}")
    console.print(f"wrote {out / 'lm.arpa'}" + (f", {out / 'lexicon.txt'}" if lex else "")
                  + f" and {out / 'lm_report.json'} in {report['seconds']} s")
