"""Character vocabulary for CTC: grapheme clusters, a word delimiter, a blank and an unknown symbol.

Symbols are extended grapheme clusters (``regex`` ``\\X``): a letter with a combining mark that has no
precomposed form (Guarani g̃) is one symbol, and a lone combining mark never is. ``units="codepoint"``
builds a code-point vocabulary instead (useful for scripts whose clusters are whole syllables).

Ids: 0 is the CTC blank, written ``<pad>`` because Hugging Face's ``Wav2Vec2CTCTokenizer`` uses its pad
token as the blank; 1 is ``<unk>``; 2 is the word delimiter ``|``; symbols follow in code-point order.
``vocab.json`` is exactly the token→id map that ``Wav2Vec2CTCTokenizer`` reads; ``dict.ltr.txt`` is
fairseq's letter dictionary (symbol and count per line, most frequent first).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import regex

from lowres import LowresError
from lowres.fsutil import atomic_write_lines, atomic_write_text

BLANK = "<pad>"
UNK = "<unk>"
WORD_DELIMITER = "|"
BLANK_ID = 0
UNK_ID = 1
WORD_DELIMITER_ID = 2
SPECIALS = (BLANK, UNK, WORD_DELIMITER)

_GRAPHEME = regex.compile(r"\X")


def split_units(word: str, units: str = "grapheme") -> list[str]:
    """The symbols of one word: grapheme clusters (default) or code points."""
    if units == "codepoint":
        return list(word)
    return _GRAPHEME.findall(word)


def tokenize(text: str, units: str = "grapheme") -> list[str]:
    """Normalised text → symbols with ``|`` between words (none at the ends)."""
    out: list[str] = []
    for word in text.split():
        if out:
            out.append(WORD_DELIMITER)
        out.extend(split_units(word, units))
    return out


def ctc_frames_needed(tokens: Sequence) -> int:
    """Fewest CTC frames that can emit ``tokens``: one per symbol plus a blank between repeats."""
    repeats = sum(1 for a, b in zip(tokens, tokens[1:], strict=False) if a == b)
    return len(tokens) + repeats


@dataclass(frozen=True)
class Vocab:
    symbols: tuple[str, ...]  # the non-special symbols, in id order (ids start at len(SPECIALS))
    units: str = "grapheme"
    _index: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        tokens = SPECIALS + tuple(self.symbols)
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary symbols must be unique and must not repeat the special tokens")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(tokens)})

    @property
    def tokens(self) -> tuple[str, ...]:
        return SPECIALS + tuple(self.symbols)

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._index

    def token_to_id(self) -> dict[str, int]:
        return dict(self._index)

    def encode(self, text: str) -> list[int]:
        """Normalised text → ids. A cluster missing from the vocabulary falls back to its code points when
        all of them are known, else becomes ``<unk>``."""
        ids: list[int] = []
        index = self._index
        for tok in tokenize(text, self.units):
            i = index.get(tok)
            if i is not None:
                ids.append(i)
            elif len(tok) > 1 and all(c in index for c in tok):
                ids.extend(index[c] for c in tok)
            else:
                ids.append(UNK_ID)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids (already CTC-collapsed) → text. Blanks and ``<unk>`` produce nothing; ``|`` is a space."""
        tokens = self.tokens
        pieces = []
        for i in ids:
            i = int(i)
            if i == BLANK_ID or i == UNK_ID:
                continue
            pieces.append(" " if i == WORD_DELIMITER_ID else tokens[i])
        return " ".join("".join(pieces).split())

    def outside(self, text: str) -> tuple[list[str], int]:
        """(the symbols of a normalised text outside the vocabulary, how many symbols it has), word delimiters
        excluded. A grapheme cluster whose code points are all in the vocabulary counts as inside."""
        n, unknown = 0, []
        for tok in tokenize(text, self.units):
            if tok == WORD_DELIMITER:
                continue
            n += 1
            if tok not in self._index and not (len(tok) > 1 and all(c in self._index for c in tok)):
                unknown.append(tok)
        return unknown, n

    # -- files ---------------------------------------------------------------------------------------
    def save(self, folder: str | Path, counts: Counter | None = None) -> None:
        """Write ``vocab.json`` and fairseq's ``dict.ltr.txt`` into ``folder``."""
        folder = Path(folder)
        atomic_write_text(folder / "vocab.json", json.dumps(self.token_to_id(), ensure_ascii=False, indent=1) + "\n")
        counts = counts or Counter()
        # fairseq adds <s> <pad> </s> <unk> itself; its file lists '|' and the letters, most frequent first.
        rows = [(WORD_DELIMITER, counts.get(WORD_DELIMITER, 0))] + [(s, counts.get(s, 0)) for s in self.symbols]
        rows.sort(key=lambda r: (-r[1], r[0]))
        atomic_write_lines(folder / "dict.ltr.txt", (f"{s} {c}" for s, c in rows))

    @classmethod
    def load(cls, path: str | Path, units: str = "grapheme") -> Vocab:
        """Read a ``vocab.json`` (a file, or a folder that holds one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "vocab.json"
        if not path.is_file():
            raise LowresError(f"No vocabulary at {path}. Run `lowres prepare` first, or pass its output folder.")
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LowresError(f"{path} is not a valid vocab.json: {exc}") from None
        return cls.from_mapping(mapping, units=units, source=str(path))

    @classmethod
    def from_mapping(cls, mapping: dict, units: str = "grapheme", source: str = "vocabulary") -> Vocab:
        by_id = sorted(mapping.items(), key=lambda kv: kv[1])
        ids = [i for _, i in by_id]
        if ids != list(range(len(ids))) or tuple(t for t, _ in by_id[: len(SPECIALS)]) != SPECIALS:
            raise LowresError(
                f"{source} is not a lowres vocabulary: ids must run 0..N-1 and start with {', '.join(SPECIALS)}."
            )
        return cls(tuple(t for t, _ in by_id[len(SPECIALS):]), units=units)


def count_symbols(texts: Iterable[str], units: str = "grapheme") -> Counter:
    counts: Counter = Counter()
    for text in texts:
        counts.update(tokenize(text, units))
    return counts


def build_vocab(counts: Counter, min_count: int = 1, units: str = "grapheme") -> tuple[Vocab, list[str]]:
    """Symbols seen at least ``min_count`` times (in code-point order) and the list of rarer ones."""
    symbols = sorted(s for s, c in counts.items() if s not in SPECIALS and c >= min_count)
    rare = sorted(s for s, c in counts.items() if s not in SPECIALS and c < min_count)
    return Vocab(tuple(symbols), units=units), rare
