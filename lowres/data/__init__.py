"""Corpora, manifests, text, vocabulary, splits, audio: everything before the model."""
