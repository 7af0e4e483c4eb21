"""Word n-gram language models: counting, interpolated modified Kneser-Ney, ARPA files, scoring.

NumPy only. The estimate is the one KenLM's ``lmplz`` makes (Chen & Goodman 1998, as in Heafield et al.
2013); for the same text and order the ARPA values agree with lmplz's to float precision.

* Every sentence is ``<s> w1 ... wk </s>``; every stretch of at most ``order`` tokens of it is an n-gram
  (the unigram ``<s>`` too, though it is never predicted).
* Adjusted counts a(g): the raw count for the highest order and for n-grams that start with ``<s>``
  (nothing can precede them); otherwise the continuation count N1+(• g), the number of distinct words seen
  just before g. The unigrams ``<s>`` and (unless the text has it) ``<unk>`` have a = 0.
* Discounts per order from the count-of-counts n1..n4 of the adjusted counts (Chen & Goodman eq. 26):
  Y = n1/(n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3. When one of n1, n2, n3 is 0
  (tiny or artificial text) or a discount falls outside [0, k], that order uses the fixed discounts
  ``FALLBACK_DISCOUNTS`` = (0.5, 1, 1.5), the values of lmplz's ``--discount_fallback``, and the model
  records why (:attr:`Discount.fallback`). lmplz stops with an error there unless told to fall back.
* u(w|h) = (a(hw) - D(a(hw))) / Σx a(hx), γ(h) = (D1 N1(h•) + D2 N2(h•) + D3+ N3+(h•)) / Σx a(hx), and
  p(w|h) = u(w|h) + γ(h) p(w|h') with h' = h without its first word. Unigrams are interpolated with the
  uniform distribution over the vocabulary without ``<s>``: p(w) = u(w) + γ / (V - 1).
* The ARPA file holds log10 p(w|h) of every n-gram and log10 γ(h) as the backoff weight of every n-gram
  below the highest order (0 where it is no context). ``<s>`` is written with log10 p = 0, as lmplz does.

Pruning (``prune_singletons_from=k``): n-grams of order ≥ k seen once in the text are left out, as lmplz's
``--prune 0 .. 0 1`` does. Discounts come from the unpruned counts; the adjusted counts of the pruned
n-grams join the discounted mass in γ(h) (lmplz's method), which makes γ(h) exactly the backoff weight that
renormalises the context: Σw p(w|h) stays 1. A kept n-gram's context and suffix are always kept (they
were seen at least as often), so the model stays a valid backoff model.

Edge cases: a text whose sentences are all shorter than ``order - 1`` words has no n-grams of the highest
orders; the model then has the highest order that exists and says so in ``info['notes']``. Words seen
once are ordinary words (KenLM keeps them too); ``<unk>`` gets the interpolated share of every word.

Memory: n-grams are never Python objects. Order n is stored as three arrays, sorted: the row of its first
n - 1 words in order n - 1 (``context``), its last word id (``word``) and its log10 probability, plus the
backoff weight; lookups are binary searches on ``context * V + word``.
"""

from __future__ import annotations

import math
import os
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from lowres import LowresError
from lowres.config import LMConfig
from lowres.fsutil import atomic_writer

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2  # ids of models estimated here; words follow in code-point order
SPECIAL_WORDS = (UNK, BOS, EOS)
MIN_ORDER, MAX_ORDER = 2, 10  # word models use 2..5 (lowres lm); unit models go higher
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz --discount_fallback defaults: D1, D2, D3+
_WRITE_CHUNK = 100_000  # n-grams formatted per batch when writing ARPA


@dataclass(frozen=True)
class Discount:
    """Kneser-Ney discounts of one order and the count-of-counts they came from."""

    d1: float
    d2: float
    d3: float  # D3+: for adjusted counts of 3 and more
    counts_of_counts: tuple[int, int, int, int]  # n1..n4: n-grams of this order with adjusted count 1..4
    fallback: str = ""  # why FALLBACK_DISCOUNTS replaced the Chen & Goodman estimate ("" when they did not)

    def as_dict(self) -> dict:
        n1, n2, n3, n4 = self.counts_of_counts
        return {"D1": round(self.d1, 6), "D2": round(self.d2, 6), "D3+": round(self.d3, 6),
                "n1": n1, "n2": n2, "n3": n3, "n4": n4, "fallback": self.fallback or None}


@dataclass(frozen=True, eq=False)
class NgramModel:
    """A backoff n-gram model. Index ``i`` of each tuple holds order ``i + 1``, whose ``M`` n-grams are
    sorted by (context row, word id), so unigram row ``w`` is word id ``w``.

    ``context[i]``: (M,) int64, the row of the n-gram's first ``i`` words in order ``i`` (zeros for unigrams);
    ``word[i]``: (M,) int64, its last word id; ``logprob[i]``: (M,) float64, log10 p(word | context words);
    ``backoff[i]``: (M,) float64, log10 backoff weight of the n-gram as a context (zeros at the top order).
    """

    vocab: tuple[str, ...]  # word of each id
    context: tuple[np.ndarray, ...]
    word: tuple[np.ndarray, ...]
    logprob: tuple[np.ndarray, ...]
    backoff: tuple[np.ndarray, ...]
    discounts: tuple[Discount, ...] = ()  # per order, for models estimated here
    info: dict = field(default_factory=dict)  # sentences, tokens, counts before pruning, notes
    _index: dict = field(default=None, init=False, repr=False)
    _keys: tuple = field(default=None, init=False, repr=False)

    def __post_init__(self):
        n = len(self.word)
        if not n or not (len(self.context) == len(self.logprob) == len(self.backoff) == n):
            raise ValueError("an n-gram model needs the same number (>= 1) of context/word/logprob/backoff arrays")
        v = len(self.vocab)
        if len(self.word[0]) != v or not np.array_equal(self.word[0], np.arange(v)):
            raise ValueError("unigram row i must be word id i for every word of the vocabulary")
        keys = []
        for i in range(n):
            m = len(self.word[i])
            if not (len(self.context[i]) == len(self.logprob[i]) == len(self.backoff[i]) == m):
                raise ValueError(f"order {i + 1}: arrays of different lengths")
            k = self.context[i].astype(np.int64) * v + self.word[i]
            if m > 1 and not np.all(k[1:] > k[:-1]):
                raise ValueError(f"order {i + 1}: n-grams must be unique and sorted by (context, word)")
            keys.append(k)
        object.__setattr__(self, "_keys", tuple(keys))
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.vocab)})

    @property
    def order(self) -> int:
        return len(self.word)

    @property
    def counts(self) -> list[int]:
        """Number of n-grams of each order, lowest first."""
        return [len(w) for w in self.word]

    def word_id(self, word: str) -> int:
        """Id of ``word``, or -1 when it is not in the vocabulary."""
        return self._index.get(word, -1)

    def ngram_ids(self, order: int, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Word ids of the n-grams ``rows`` of ``order``: (m, order) int64, oldest word first."""
        i = order - 1
        cols = [self.word[i][rows]]
        r = self.context[i][rows]
        for j in range(i - 1, -1, -1):
            cols.append(self.word[j][r])
            r = self.context[j][r]
        return np.stack(cols[::-1], axis=1)

    def find(self, order: int, context_row: int, word: int) -> int:
        """Row of the n-gram (context n-gram at ``context_row`` of ``order - 1``, ``word``), or -1."""
        if order == 1:
            return word
        keys = self._keys[order - 1]
        key = context_row * len(self.vocab) + word
        j = int(np.searchsorted(keys, key))
        return j if j < len(keys) and keys[j] == key else -1


# ---------------------------------------------------------------------------------------------------
# corpus


class Corpus:
    """Sentences as word ids, added one at a time (4 bytes a word, 4 a sentence; one dict of word types).

    ``<unk>`` in a sentence is the unknown word; ``<s>`` and ``</s>`` are added by the model and must not
    appear in the text.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {UNK: UNK_ID, BOS: BOS_ID, EOS: EOS_ID}
        self._tokens = array("i")
        self._lengths = array("i")

    def add(self, words: Sequence[str]) -> bool:
        """Append one sentence (its words, without markers). An empty sentence is ignored: False."""
        if not words:
            return False
        ids = self._ids
        out = self._tokens
        for w in words:
            i = ids.get(w)
            if i is None:
                i = ids[w] = len(ids)
            elif i == BOS_ID or i == EOS_ID:
                raise LowresError(f"the sentence marker {w} may not appear inside a sentence: {' '.join(words)[:80]!r}")
            out.append(i)
        self._lengths.append(len(words))
        return True

    @property
    def sentences(self) -> int:
        return len(self._lengths)

    @property
    def tokens(self) -> int:
        """Words, without sentence markers."""
        return len(self._tokens)

    def arrays(self) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """(vocabulary: <unk>, <s>, </s>, then words in code-point order; word ids (W,) int32 in that
        vocabulary; sentence lengths (S,) int32)."""
        words = sorted(w for w in self._ids if w not in SPECIAL_WORDS)
        vocab = (*SPECIAL_WORDS, *words)
        remap = np.empty(len(self._ids), dtype=np.int32)
        new = {w: i for i, w in enumerate(vocab)}
        for w, old in self._ids.items():
            remap[old] = new[w]
        tokens = remap[np.frombuffer(self._tokens, dtype=np.int32)] if len(self._tokens) else np.zeros(0, np.int32)
        return vocab, tokens, np.frombuffer(self._lengths, dtype=np.int32).copy()


def _pad(tokens: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Word ids (W,) and sentence lengths (S,) → ``<s> w.. </s>`` per sentence, concatenated (T,) with
    T = W + 2S, and each token's position in its sentence (T,) (0 at ``<s>``); int32 while T < 2**31 (the
    token stream is the largest thing in memory), else int64."""
    n_sent = len(lengths)
    padded_len = lengths.astype(np.int64) + 2
    total = int(padded_len.sum())
    dtype = _index_dtype(total)
    starts = np.zeros(n_sent, dtype=np.int64)
    np.cumsum(padded_len[:-1], out=starts[1:])
    out = np.empty(total, dtype=dtype)
    out[starts] = BOS_ID
    out[starts + padded_len - 1] = EOS_ID
    word_pos = np.repeat(2 * np.arange(n_sent, dtype=np.int64) + 1, lengths) + np.arange(len(tokens))
    out[word_pos] = tokens
    del word_pos
    pos = np.arange(total, dtype=dtype)
    pos -= np.repeat(starts, padded_len).astype(dtype)
    return out, pos


def _index_dtype(n: int):
    return np.int32 if n < 2**31 - 1 else np.int64


# ---------------------------------------------------------------------------------------------------
# estimation


def estimate(corpus: Corpus | Iterable[Sequence[str]], order: int = LMConfig.order,
             prune_singletons_from: int | None = None) -> NgramModel:
    """Interpolated modified Kneser-Ney model of ``order`` (2..10; ``lowres lm`` uses 2..5 for words) from
    sentences (lists of words, or a :class:`Corpus`). ``prune_singletons_from=k`` (k >= 2) leaves out
    n-grams of order >= k seen once. See the module docstring for the formulas and the edge cases."""
    if not isinstance(corpus, Corpus):
        c = Corpus()
        for sentence in corpus:
            c.add(list(sentence))
        corpus = c
    return estimate_arrays(*corpus.arrays(), order=order, prune_singletons_from=prune_singletons_from)


def estimate_arrays(vocab: Sequence[str], tokens: np.ndarray, lengths: np.ndarray, order: int = LMConfig.order,
                    prune_singletons_from: int | None = None) -> NgramModel:
    """:func:`estimate` from arrays: ``vocab`` starts with ``<unk>``, ``<s>``, ``</s>`` (ids 0, 1, 2);
    ``tokens`` (W,) are the word ids of all sentences one after the other, without markers; ``lengths``
    (S,) the number of words of each sentence (each >= 1)."""
    vocab, tokens, lengths = _checked(vocab, tokens, lengths, order, prune_singletons_from)
    notes: list[str] = []
    v = len(vocab)
    padded, pos = _pad(tokens, lengths)
    ctx, word, raw, suffix = _raw_counts(padded, pos, order, v)
    del padded, pos
    top = len(word)
    if top < order:
        notes.append(f"the longest sentence has {int(lengths.max())} words, too few for {order}-grams (they need "
                     f"{order - 2} words between <s> and </s>): the model has order {top}")
    adjusted = _adjusted_counts(ctx, word, raw, suffix)
    discounts = tuple(_discount(adjusted[i], i + 1) for i in range(top))
    for i, d in enumerate(discounts):
        if d.fallback:
            notes.append(f"{i + 1}-grams: {d.fallback}; used the fallback discounts "
                         f"D1={FALLBACK_DISCOUNTS[0]} D2={FALLBACK_DISCOUNTS[1]} D3+={FALLBACK_DISCOUNTS[2]}")
    keep = _kept(ctx, word, raw, suffix, prune_singletons_from)
    logprob, backoff = _interpolate(ctx, word, suffix, adjusted, discounts, keep, v)
    counts_before = [len(w) for w in word]
    if prune_singletons_from is not None:
        emptied = [i + 1 for i in range(top) if not keep[i].any()]
        if emptied:
            notes.append(f"pruning left no {', '.join(map(str, emptied))}-grams (all were seen once)")
        new_row = [np.cumsum(k) - 1 for k in keep]
        for i in range(top):
            k = keep[i]
            ctx[i] = new_row[i - 1][ctx[i][k]] if i else ctx[i][k]
            word[i], logprob[i], backoff[i] = word[i][k], logprob[i][k], backoff[i][k]
    info = {
        "requested_order": order,
        "sentences": int(len(lengths)),
        "tokens": int(len(tokens)),
        "vocabulary": v,
        "ngrams_before_pruning": counts_before,
        "prune_singletons_from": prune_singletons_from,
        "notes": notes,
    }
    return NgramModel(vocab, tuple(ctx), tuple(word), tuple(logprob), tuple(backoff), discounts, info)


def _checked(vocab: Sequence[str], tokens, lengths, order: int,
             prune_singletons_from: int | None) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The inputs of :func:`estimate_arrays`, checked, as a tuple and two int64 arrays."""
    if not MIN_ORDER <= order <= MAX_ORDER:
        raise LowresError(f"The n-gram order must be between {MIN_ORDER} and {MAX_ORDER}, not {order}.")
    if prune_singletons_from is not None and prune_singletons_from < 2:
        raise LowresError(f"Singletons can be pruned from order 2 or higher, not {prune_singletons_from} "
                          "(unigrams are never pruned).")
    vocab = tuple(vocab)
    if vocab[:3] != SPECIAL_WORDS:
        raise ValueError(f"the vocabulary must start with {SPECIAL_WORDS}, not {vocab[:3]}")
    tokens = np.asarray(tokens, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if int(lengths.sum()) != len(tokens) or (len(lengths) and int(lengths.min()) < 1):
        raise ValueError("sentence lengths must be >= 1 and add up to the number of tokens")
    if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= len(vocab)
                        or np.any((tokens == BOS_ID) | (tokens == EOS_ID))):
        raise ValueError("token ids must be word ids of the vocabulary other than <s> and </s>")
    if not len(lengths):
        raise LowresError("No sentences to estimate a language model from: the text is empty after normalisation.")
    return vocab, tokens, lengths


def _raw_counts(padded: np.ndarray, pos: np.ndarray, order: int, v: int) -> tuple[list, list, list, list]:
    """Raw counts of every n-gram, order by order, as (context row, word, count, suffix row) per order.

    ``here[t]`` is the row of the n-gram of the current order that ends at token t (-1 when the sentence is too
    short); an n-gram is keyed by (row of its first n-1 words, last word), so np.unique gives rows sorted by
    (context, word). The suffix row is the n-gram without its first word, in order n-1 (None for unigrams)."""
    ctx = [np.zeros(v, dtype=np.int64)]
    word = [np.arange(v, dtype=np.int64)]
    raw = [np.bincount(padded, minlength=v).astype(np.int64)]
    suffix: list[np.ndarray | None] = [None]
    here = padded
    ends = np.flatnonzero(pos >= 1).astype(padded.dtype)  # tokens that end a bigram
    for n in range(2, order + 1):
        if n > 2:
            ends = ends[pos[ends] >= n - 1]
        if not len(ends):
            break
        keys = here[ends - 1].astype(np.int64)
        keys *= v
        keys += padded[ends]
        uniq, inverse, cnt = np.unique(keys, return_inverse=True, return_counts=True)
        del keys
        ctx.append(uniq // v)
        word.append(uniq % v)
        del uniq
        raw.append(cnt.astype(np.int64))
        suf = np.empty(len(cnt), dtype=np.int64)
        suf[inverse] = here[ends]  # the (n-1)-gram ending at the same token
        suffix.append(suf)
        nxt = np.full(len(padded), -1, dtype=padded.dtype)
        nxt[ends] = inverse
        del inverse
        here = nxt
    return ctx, word, raw, suffix


def _adjusted_counts(ctx: list, word: list, raw: list, suffix: list) -> list[np.ndarray]:
    """Kneser-Ney's adjusted counts: raw at the top order and for n-grams starting with <s>, else continuation
    counts (how many distinct words precede the n-gram)."""
    top = len(word)
    first = [word[0]]
    for i in range(1, top):
        first.append(first[i - 1][ctx[i]])
    adjusted: list[np.ndarray] = [raw[top - 1]] * top
    for i in range(top - 2, -1, -1):
        a = np.bincount(suffix[i + 1], minlength=len(word[i])).astype(np.int64)
        starts_bos = first[i] == BOS_ID
        a[starts_bos] = raw[i][starts_bos]
        adjusted[i] = a
    adjusted[0] = adjusted[0].copy()
    adjusted[0][BOS_ID] = 0  # <s> is never predicted
    return adjusted


def _kept(ctx: list, word: list, raw: list, suffix: list, prune_singletons_from: int | None) -> list[np.ndarray]:
    """Which n-grams stay: all, or with pruning all but the singletons from that order on (a kept n-gram's context
    and suffix stay too: they are never rarer)."""
    keep = [np.ones(len(w), dtype=bool) for w in word]
    if prune_singletons_from is not None:
        top = len(word)
        for i in range(prune_singletons_from - 1, top):
            keep[i] = raw[i] > 1
        for i in range(top - 1, 0, -1):
            k = keep[i]
            keep[i - 1][ctx[i][k]] = True
            keep[i - 1][suffix[i][k]] = True
    return keep


def _interpolate(ctx: list, word: list, suffix: list, adjusted: list, discounts, keep: list,
                 v: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """log10 probabilities and backoff weights of every n-gram: uninterpolated probabilities u, interpolation
    weights γ, and the interpolation itself, bottom up."""
    top = len(word)
    table = [np.array([0.0, d.d1, d.d2, d.d3]) for d in discounts]
    a0 = adjusted[0].astype(np.float64)
    disc0 = table[0][np.minimum(adjusted[0], 3)]
    total0 = a0.sum()
    prob = [(a0 - disc0) / total0 + (disc0.sum() / total0) / (v - 1)]  # uniform over the vocabulary minus <s>
    gammas: list[np.ndarray] = []  # gammas[i]: γ of each n-gram of order i+1 as a context (1: no context)
    for i in range(1, top):
        a = adjusted[i]
        disc = table[i][np.minimum(a, 3)]
        m_prev = len(word[i - 1])
        denominator = np.bincount(ctx[i], weights=a, minlength=m_prev)
        # pruned n-grams give their whole adjusted count to γ (KenLM), kept ones their discount
        freed = np.bincount(ctx[i], weights=np.where(keep[i], disc, a), minlength=m_prev)
        has_ext = denominator > 0
        gamma = np.ones(m_prev)
        gamma[has_ext] = freed[has_ext] / denominator[has_ext]
        gammas.append(gamma)
        prob.append((a - disc) / denominator[ctx[i]] + gamma[ctx[i]] * prob[i - 1][suffix[i]])
    gammas.append(np.ones(len(word[top - 1])))
    prob[0][BOS_ID] = 1.0  # lmplz writes log10 p(<s>) = 0: scoring <s> explicitly costs nothing
    with np.errstate(divide="ignore"):
        logprob = [np.minimum(0.0, np.log10(p)) for p in prob]
        backoff = [np.log10(g) for g in gammas]
    backoff[top - 1] = np.zeros(len(word[top - 1]))
    return logprob, backoff


def _discount(adjusted: np.ndarray, order: int) -> Discount:
    """Chen & Goodman's discounts from the adjusted counts (M,) of one order, or the fallback."""
    a = adjusted[adjusted > 0]
    n = tuple(int(x) for x in np.bincount(np.minimum(a, 5), minlength=6)[1:5])
    n1, n2, n3, n4 = n
    missing = [k for k, nk in zip((1, 2, 3), (n1, n2, n3), strict=True) if nk == 0]
    if missing:
        return Discount(*FALLBACK_DISCOUNTS, n, f"no {order}-grams with adjusted count "
                        + " or ".join(str(k) for k in missing))
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    for k, dk in enumerate(d, 1):
        if not 0 <= dk <= k:  # lmplz's range check
            return Discount(*FALLBACK_DISCOUNTS, n, f"D{k}{'+' if k == 3 else ''} = {dk:.4f} is outside [0, {k}]")
    return Discount(*d, n)


# ---------------------------------------------------------------------------------------------------
# ARPA


def write_arpa(model: NgramModel, path: str | os.PathLike) -> None:
    """Write ``model`` as an ARPA file, atomically (a temp file beside it, then a rename). The n-grams of
    each order are in the model's (context, word) order, so the same model gives the same bytes."""
    # streamed (a big ARPA file is never held in memory whole); a 1 MiB buffer for its many short rows
    with atomic_writer(path, text=True, buffering=1 << 20) as f:
        write_arpa_to(model, f)


def write_arpa_to(model: NgramModel, f: TextIO) -> None:
    """Stream ``model`` as ARPA text into ``f``."""
    f.write("\\data\\\n")
    for n, m in enumerate(model.counts, 1):
        f.write(f"ngram {n}={m}\n")
    words = np.array(model.vocab, dtype=object)
    for i in range(model.order):
        f.write(f"\n\\{i + 1}-grams:\n")
        top = i == model.order - 1
        m = len(model.word[i])
        for start in range(0, m, _WRITE_CHUNK):
            rows = slice(start, min(m, start + _WRITE_CHUNK))
            texts = [" ".join(r) for r in words[model.ngram_ids(i + 1, rows)].tolist()]
            probs = model.logprob[i][rows].tolist()
            if top:
                f.write("".join(f"{p + 0.0:.7g}\t{t}\n" for p, t in zip(probs, texts, strict=True)))
            else:
                backs = model.backoff[i][rows].tolist()
                f.write("".join(f"{p + 0.0:.7g}\t{t}\t{b + 0.0:.7g}\n"
                                for p, t, b in zip(probs, texts, backs, strict=True)))
    f.write("\n\\end\\\n")


def read_arpa(path: str | os.PathLike) -> NgramModel:
    """Read an ARPA file (ours, KenLM's, SRILM's). Words are ids in the order of the unigram section.
    A missing backoff column is 0; n-grams whose context is missing are an error."""
    path = Path(path)
    if not path.is_file():
        raise LowresError(f"No ARPA file at {path}.")
    try:
        with open(path, encoding="utf-8") as f:
            return _parse_arpa(f, str(path))
    except UnicodeDecodeError as exc:
        raise LowresError(f"{path} is not UTF-8 text ({exc.reason}).") from None


def _parse_arpa(f: TextIO, where: str) -> NgramModel:
    # Only non-blank lines matter: sections are known by their headers and the promised counts.
    numbered = ((i, line.strip()) for i, line in enumerate(f, 1))
    lines = ((i, line) for i, line in numbered if line)
    lineno, line = 0, ""

    def bad(msg: str) -> LowresError:
        return LowresError(f"{where}:{lineno}: {msg}")

    # `lineno` is read by bad(); anything before \data\ (lmplz's verbose header, comments) is skipped
    for lineno, line in lines:  # noqa: B007
        if line == "\\data\\":
            break
    else:
        raise LowresError(f"{where}: no \\data\\ line; this is not an ARPA file.")
    counts: list[int] = []
    for lineno, line in lines:  # noqa: B007
        if not line.startswith("ngram "):
            break
        n_str, _, c_str = line[6:].partition("=")
        if not n_str.strip().isdigit() or not c_str.strip().isdigit() or int(n_str) != len(counts) + 1:
            raise bad(f"bad count line {line!r}")
        counts.append(int(c_str))
    if not counts or counts[0] == 0:
        raise bad("no n-gram counts (or no unigrams) in the \\data\\ section")

    vocab: list[str] = []
    index: dict[str, int] = {}
    ctx: list[np.ndarray] = []
    word: list[np.ndarray] = []
    logprob: list[np.ndarray] = []
    backoff: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    for n, expected in enumerate(counts, 1):
        if n > 1:  # the header of order 1 is the line that ended the counts
            lineno, line = next(lines, (lineno, ""))
        if line != f"\\{n}-grams:":
            raise bad(f"expected \\{n}-grams: after {counts[n - 2] if n > 1 else 'the counts'} "
                      f"{'lines' if n > 1 else ''}, found {line[:60]!r}")
        probs = np.empty(expected)
        backs = np.zeros(expected)
        ids = np.empty((expected, n), dtype=np.int64)
        for k in range(expected):
            lineno, line = next(lines, (lineno, ""))
            parts = line.split()
            if line.startswith("\\") or len(parts) not in (n + 1, n + 2):
                raise bad(f"the header promises {expected} {n}-grams, each a log10 prob, {n} words and an "
                          f"optional backoff; line {k + 1} of the section is {line[:80]!r}")
            try:
                probs[k] = float(parts[0])
                if len(parts) == n + 2:
                    backs[k] = float(parts[n + 1])
            except ValueError:
                raise bad(f"not a number in {line[:80]!r}") from None
            if n == 1:
                w = parts[1]
                if w in index:
                    raise bad(f"the word {w!r} appears twice among the unigrams")
                index[w] = len(vocab)
                vocab.append(w)
                ids[k, 0] = index[w]
            else:
                try:
                    ids[k] = [index[w] for w in parts[1:n + 1]]
                except KeyError as exc:
                    raise bad(f"the word {exc.args[0]!r} is not among the unigrams") from None
        v = len(vocab)
        if n == 1:
            c = np.zeros(expected, dtype=np.int64)
            order_idx = np.arange(expected)
        else:
            r = ids[:, 0]
            for j in range(1, n - 1):  # walk the context up the orders: row of ids[:, :j+1] in order j+1
                key = r * v + ids[:, j]
                found = np.minimum(np.searchsorted(keys[j], key), max(len(keys[j]) - 1, 0))
                ok = keys[j][found] == key if len(keys[j]) else np.zeros(len(key), dtype=bool)
                if not ok.all():
                    gram = " ".join(vocab[x] for x in ids[np.flatnonzero(~ok)[0], : j + 1])
                    raise LowresError(f"{where}: the {n}-grams need the context {gram!r}, which is not "
                                      f"among the {j + 1}-grams.")
                r = found
            c = r
            key = c * v + ids[:, -1]
            order_idx = np.argsort(key, kind="stable")
            sk = key[order_idx]
            dup = np.flatnonzero(sk[1:] == sk[:-1])
            if len(dup):
                gram = " ".join(vocab[x] for x in ids[order_idx[dup[0]]])
                raise LowresError(f"{where}: the {n}-gram {gram!r} appears twice.")
        ctx.append(c[order_idx])
        word.append(ids[order_idx, -1])
        logprob.append(probs[order_idx])
        backoff.append(backs[order_idx])
        keys.append(ctx[-1] * v + word[-1])
    lineno, line = next(lines, (lineno, ""))
    if line != "\\end\\":
        raise bad(f"expected \\end\\ after the {len(counts)}-grams, found {line[:60]!r}")
    return NgramModel(tuple(vocab), tuple(ctx), tuple(word), tuple(logprob), tuple(backoff),
                      info={"source": where})


# ---------------------------------------------------------------------------------------------------
# scoring


def _advance(model: NgramModel, state: list[int], w: int) -> tuple[float, int, list[int]]:
    """Score word id ``w`` after the history ``state`` (state[k-1]: row of the last k history words as a
    k-gram, -1 when absent; at most order-1 entries). Returns (log10 p, length of the n-gram used, new state).
    Standard backoff: the longest n-gram (history suffix, w) in the model gives the probability, plus the
    backoff weights of the longer history suffixes that are in the model."""
    n_max = model.order
    found = [w]  # found[k]: row of (last k history words, w) in order k+1
    for k, r in enumerate(state[: n_max - 1], 1):
        found.append(model.find(k + 1, r, w) if r >= 0 else -1)
    best = 0  # the longest match whose shorter suffixes all match too (KenLM stops at the first miss)
    while best + 1 < len(found) and found[best + 1] >= 0:
        best += 1
    logp = float(model.logprob[best][found[best]])
    for k in range(best + 1, len(found)):
        r = state[k - 1]
        if r >= 0:
            logp += float(model.backoff[k - 1][r])
    return logp, best + 1, [f if k <= best else -1 for k, f in enumerate(found[: n_max - 1])]


def sentence_scores(model: NgramModel, words: str | Sequence[str], bos: bool = True,
                    eos: bool = True) -> list[tuple[float, int, bool]]:
    """(log10 p, n-gram length used, is OOV) for each word and, with ``eos``, for ``</s>`` — the values of
    KenLM's ``Model.full_scores``. A word outside the vocabulary is scored as ``<unk>`` (log10 p = -inf
    when the model has no ``<unk>``)."""
    if isinstance(words, str):
        words = words.split()
    unk = model.word_id(UNK)
    bos_id = model.word_id(BOS)
    state = [bos_id] if bos and bos_id >= 0 else []
    out = []
    for w in [*words, EOS] if eos else words:
        i = model.word_id(w)
        oov = i < 0 or w == UNK
        if i < 0:
            i = unk
        if i < 0:
            out.append((-math.inf, 0, True))
            state = []
            continue
        logp, length, state = _advance(model, state, i)
        out.append((logp, length, oov))
    return out


def score_sentence(model: NgramModel, words: str | Sequence[str], bos: bool = True, eos: bool = True) -> float:
    """log10 p(sentence) = Σ log10 p(word | history), ``</s>`` included with ``eos`` (KenLM's ``Model.score``)."""
    return sum(s for s, _, _ in sentence_scores(model, words, bos, eos))


def score_word(model: NgramModel, history: Sequence[str], word: str) -> float:
    """log10 p(word | history), history oldest word first (start it with ``<s>`` for a sentence start)."""
    unk = model.word_id(UNK)
    state: list[int] = []
    for h in history[max(0, len(history) - model.order + 1):]:
        i = model.word_id(h)
        i = unk if i < 0 else i
        state = _advance(model, state, i)[2] if i >= 0 else []
    i = model.word_id(word)
    i = unk if i < 0 else i
    return _advance(model, state, i)[0] if i >= 0 else -math.inf


def perplexity(model: NgramModel, sentences: Iterable[str | Sequence[str]]) -> dict:
    """Perplexity over sentences (each word and each ``</s>`` predicted), with and without the OOV words
    (KenLM's query reports both), and the OOV rate among the words (``</s>`` not counted)."""
    total = oov_total = 0.0
    n_sent = n_words = n_oov = 0
    for s in sentences:
        scores = sentence_scores(model, s)
        n_sent += 1
        n_words += len(scores) - 1
        for logp, _, oov in scores:
            total += logp
            if oov:
                n_oov += 1
                oov_total += logp
    predicted = n_words + n_sent
    return {
        "sentences": n_sent,
        "words": n_words,
        "oov": n_oov,
        "oov_rate": round(n_oov / n_words, 6) if n_words else 0.0,
        "log10_prob": round(total, 4),
        "perplexity": _ppl(total, predicted),
        "perplexity_excluding_oov": _ppl(total - oov_total, predicted - n_oov),
    }


def _ppl(log10_total: float, n: int) -> float | None:
    if n <= 0:
        return None
    if math.isinf(log10_total):
        return math.inf
    return round(10 ** (-log10_total / n), 4)
