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
from collections.abc import Iterable

from lowres.data.vocab import SPECIALS, WORD_DELIMITER, Vocab, split_units
from lowres.fsutil import atomic_write_text

LM_MARKERS = frozenset(("<s>", "</s>", "<unk>"))  # words of the language model that are not words
_EXAMPLES = 20  # left-out words named in the report


def spell(word: str, vocab: Vocab) -> list[str] | None:
    """The units of ``word`` in ``vocab`` (without the final ``|``), or None when one is not in it."""
    out: list[str] = []
    for unit in split_units(word, vocab.units):
        if unit in vocab and unit not in SPECIALS:
            out.append(unit)
        elif len(unit) > 1 and all(c in vocab and c not in SPECIALS for c in unit):
            out.extend(unit)
        else:
            return None
    return out or None


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
