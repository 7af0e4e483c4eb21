"""Training objectives, one module each, run by lowres/train/harness.py: ``ctc`` (``lowres finetune``),
``wav2vec2`` (``lowres adapt``). A new objective is a new module here with a ``harness.Task`` subclass."""
