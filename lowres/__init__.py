"""lowres: speech recognition for languages with almost no transcribed audio.

The pipeline is a set of library functions (``prepare``, ``run_adapt``, ``run_finetune``, ``run_eval``);
the ``lowres`` command line is a thin layer over them.
"""

__version__ = "0.1.0"


class LowresError(Exception):
    """A user-facing error: the message says what is wrong and what to do. The CLI prints it without a
    traceback and exits with status 2."""
