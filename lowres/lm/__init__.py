"""Word n-gram language models for lexicon-constrained CTC beam search.

KenLM's estimator (``lmplz``) is not on the package registries, so lowres estimates the model itself:
interpolated modified Kneser-Ney as ``lmplz`` does it (:mod:`lowres.lm.ngram`), an ARPA writer and reader
and a scorer in NumPy, the flashlight lexicon and the unit-level sentences for torchaudio's
``ctc_decoder`` (:mod:`lowres.lm.lexicon`) and ``build_lm`` (:mod:`lowres.lm.build`), the library function
behind ``lowres lm``. The folder's file names and tuned weights are :mod:`lowres.lm.folder`; decoding with
the result lives in :mod:`lowres.decode`.
"""

# The names below load their module on first use (PEP 562): decode.py reads the LM folder's layout
# (lowres.lm.folder) without paying for the estimator's imports.
_HOME = {"build_lm": "build", "LMFolder": "folder", "TunedWeights": "folder", "read_lexicon": "lexicon",
         "spell": "lexicon", "unit_sentences": "lexicon", "write_lexicon": "lexicon"}
_HOME.update(dict.fromkeys(("BOS", "EOS", "UNK", "Corpus", "NgramModel", "estimate", "estimate_arrays", "perplexity",
                            "read_arpa", "score_sentence", "score_word", "write_arpa"), "ngram"))


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'lowres.lm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"lowres.lm.{_HOME[name]}"), name)


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
