"""Word n-gram language models for lexicon-constrained CTC beam search.

KenLM's estimator (``lmplz``) is not on the package registries, so lowres estimates the model itself:
interpolated modified Kneser-Ney as ``lmplz`` does it (:mod:`lowres.lm.ngram`), an ARPA writer and reader
and a scorer in NumPy, the flashlight lexicon and the unit-level sentences for torchaudio's
``ctc_decoder`` (:mod:`lowres.lm.lexicon`) and ``build_lm`` (:mod:`lowres.lm.build`), the library function
behind ``lowres lm``. The folder's file names and tuned weights are :mod:`lowres.lm.folder`; decoding with
the result lives in :mod:`lowres.decode`.
"""

from lowres.lm.build import build_lm
from lowres.lm.folder import LMFolder, TunedWeights
from lowres.lm.lexicon import read_lexicon, spell, unit_sentences, write_lexicon
from lowres.lm.ngram import (
    BOS,
    EOS,
    UNK,
    Corpus,
    NgramModel,
    estimate,
    estimate_arrays,
    perplexity,
    read_arpa,
    score_sentence,
    score_word,
    write_arpa,
)

__all__ = [
    "BOS",
    "EOS",
    "UNK",
    "Corpus",
    "LMFolder",
    "NgramModel",
    "build_lm",
    "estimate",
    "estimate_arrays",
    "perplexity",
    "read_arpa",
    "read_lexicon",
    "score_sentence",
    "score_word",
    "spell",
    "TunedWeights",
    "unit_sentences",
    "write_arpa",
    "write_lexicon",
]
