"""Training objectives, one module each, run by lowres/train/harness.py: ``ctc`` (``lowres finetune``),
``wav2vec2`` and ``hubert`` (``lowres adapt``; what the two share is ``unlabeled``). A new objective is a new
module here with a ``harness.Task`` subclass."""
