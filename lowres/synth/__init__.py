"""Synthetic speech corpora spoken by eSpeak NG (``lowres synth``, ``lowres demo``)."""

from lowres.synth.corpus import SynthResult, build_corpus, list_languages

__all__ = ["SynthResult", "build_corpus", "list_languages"]
