"""The lexicon for lexicon-constrained CTC beam search (torchaudio's ``ctc_decoder``, flashlight format).

One line per word: the word, a tab, its spelling in the acoustic model's units separated by spaces, and
the word delimiter ``|``::

    ng'ombe	n g ' o m b e |

Units are the vocabulary's (grapheme clusters or code points, :func:`lowres.data.vocab.split_units`),
spelled exactly as :meth:`lowres.data.vocab.Vocab.encode` turns training transcripts into targets: a cluster
missing from the vocabulary whose code points all are in it is spelled as those code points. A word with
any other symbol outside the vocabulary cannot be emitted by the acoustic model: it is left out and counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lowres import LowresError
from lowres.data.vocab import SPECIALS, UNK, WORD_DELIMITER, Vocab, split_units
from lowres.fsutil import atomic_write_text

LM_MARKERS = frozenset(("<s>", "</s>", "<unk>"))  # words of the language model that are not words
_EXAMPLES = 20  # left-out words named in the report


def spell(word: str, vocab: Vocab) -> list[str] | None:
    """The units of ``word`` in ``vocab`` (without the final ``|``), or None when one is not in it."""
    units = unit_spelling(word, vocab)
    return None if not units or UNK in units else units


def lexicon_lines(words: Iterable[str], vocab: Vocab) -> tuple[list[str], list[str]]:
    """(lexicon lines without newlines, words left out), both in the order of ``words``. The markers
    ``<s>``, ``</s>``, ``<unk>`` are skipped silently."""
    lines: list[str] = []
    left_out: list[str] = []
    for w in words:
        if w in LM_MARKERS:
            continue
        units = spell(w, vocab)
        if units is None:
            left_out.append(w)
        else:
            lines.append(f"{w}\t{' '.join(units)} {WORD_DELIMITER}")
    return lines, left_out


def write_lexicon(words: Iterable[str], vocab: Vocab, path: str | os.PathLike) -> dict:
    """Write the lexicon of ``words`` to ``path`` (atomically) and return counts for the report:
    ``{"words": written, "left_out": n, "left_out_examples": [...]}``."""
    lines, left_out = lexicon_lines(words, vocab)
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return {"words": len(lines), "left_out": len(left_out), "left_out_examples": left_out[:_EXAMPLES]}


def read_lexicon(path: str | os.PathLike) -> list[tuple[str, list[str]]]:
    """(word, units without the final ``|``) for each line of a lexicon file; a line that is not
    ``word<TAB>units`` is an error naming it."""
    path = Path(path)
    out: list[tuple[str, list[str]]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                word, _, spelling = line.rstrip("\n").partition("\t")
                units = spelling.split()
                if units and units[-1] == WORD_DELIMITER:
                    units = units[:-1]
                if not word.strip() or not units:
                    raise LowresError(f"{path}:{lineno}: a lexicon line is a word, a tab and its units separated "
                                      f"by spaces (e.g. 'mama\tm a m a |'), not {line.strip()[:60]!r}.")
                out.append((word, units))
    except UnicodeDecodeError as exc:
        raise LowresError(f"{path} is not UTF-8 text ({exc.reason}).") from None
    return out


def unit_spelling(word: str, vocab: Vocab) -> list[str]:
    """The units of ``word`` as :meth:`Vocab.encode` makes training targets: a symbol outside the vocabulary
    becomes ``<unk>`` (after the code-point fallback)."""
    out: list[str] = []
    for unit in split_units(word, vocab.units):
        if unit in vocab and unit not in SPECIALS:
            out.append(unit)
        elif len(unit) > 1 and all(c in vocab and c not in SPECIALS for c in unit):
            out.extend(unit)
        else:
            out.append(UNK)
    return out


def unit_sentences(words: Sequence[str], tokens: np.ndarray, lengths: np.ndarray, vocab: Vocab,
                   max_units: int | None = None) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Word sentences → the same sentences in the acoustic model's units, ``|`` between words (none at the
    ends, as in training targets), for a unit-level n-gram (lexicon-free decoding).

    ``words``: the word vocabulary (``<unk>``, ``<s>``, ``</s>`` first); ``tokens`` (W,) word ids;
    ``lengths`` (S,) words per sentence. Returns (unit vocabulary: ``<unk>``, ``<s>``, ``</s>``, ``|``, then
    units in code-point order; unit ids (U,) int64; units per sentence (S',) int64). With ``max_units``, a
    longer stream keeps every k-th sentence only (the smallest k that fits), so S' <= S. Vectorised: memory
    is a few int64 arrays of the unit stream's length.
    """
    from lowres.lm.ngram import SPECIAL_WORDS

    spellings = [[] if i < len(SPECIAL_WORDS) else unit_spelling(w, vocab) for i, w in enumerate(words)]
    spellings[0] = [UNK]  # the unknown word is the unknown unit
    names = sorted({u for sp in spellings for u in sp} - {UNK, WORD_DELIMITER})
    unit_vocab = (*SPECIAL_WORDS, WORD_DELIMITER, *names)
    uid = {u: i for i, u in enumerate(unit_vocab)}
    spell_len = np.array([len(sp) for sp in spellings], dtype=np.int64)
    flat = np.array([uid[u] for sp in spellings for u in sp], dtype=np.int64)
    spell_start = np.zeros(len(spellings), dtype=np.int64)
    np.cumsum(spell_len[:-1], out=spell_start[1:])

    tokens = np.asarray(tokens, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if max_units is not None:
        total = int(spell_len[tokens].sum() + lengths.sum() - len(lengths))  # units + delimiters
        if total > max_units:
            k = -(-total // max_units)
            keep = np.arange(len(lengths)) % k == 0
            tokens = tokens[np.repeat(keep, lengths)]
            lengths = lengths[keep]
    n_tok = len(tokens)
    last = np.zeros(n_tok, dtype=bool)  # the last word of its sentence: no delimiter after it
    last[np.cumsum(lengths) - 1] = True
    tok_len = spell_len[tokens]
    out_len = tok_len + ~last  # units of the word, plus the delimiter
    out_start = np.zeros(n_tok, dtype=np.int64)
    np.cumsum(out_len[:-1], out=out_start[1:])
    total = int(out_len.sum())
    out = np.empty(total, dtype=np.int64)
    which = np.repeat(np.arange(n_tok, dtype=np.int64), tok_len)  # the token each unit belongs to
    within = np.arange(len(which), dtype=np.int64) - np.repeat(np.cumsum(tok_len) - tok_len, tok_len)
    out[out_start[which] + within] = flat[spell_start[tokens[which]] + within]
    out[(out_start + tok_len)[~last]] = uid[WORD_DELIMITER]
    sentence_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    unit_lengths = np.bincount(sentence_of, weights=out_len, minlength=len(lengths)).astype(np.int64)
    return unit_vocab, out, unit_lengths
