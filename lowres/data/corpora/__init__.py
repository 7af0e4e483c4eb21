"""Corpus layouts. Each module has ``detect(root) -> bool`` and ``parse(root, opts)``, which yields
:class:`Record` for every utterance it finds and :class:`Reject` for every line or file it cannot use.
Parsers only read the layout; probing the audio and normalising text happen in ``prepare``.
"""

from __future__ import annotations

from pathlib import Path

from lowres import LowresError
from lowres.data.corpora.common import (
    CorpusOptions,
    Record,
    Reject,
    iter_text_lines,
    split_fields,
    walk_files,
)

__all__ = ["CorpusOptions", "Record", "Reject", "FORMATS", "LAYOUT_HELP", "detect_format", "get_parser",
           "iter_text_lines", "split_fields", "walk_files"]


def _registry():
    from lowres.data.corpora import commonvoice, kaldi, librispeech, table

    return {"librispeech": librispeech, "commonvoice": commonvoice, "kaldi": kaldi, "table": table}


FORMATS = ("librispeech", "commonvoice", "kaldi", "table")

LAYOUT_HELP = """\
  librispeech  a folder of speaker/chapter/*.flac with *.trans.txt (LibriSpeech), or the Libri-light
               limited-supervision tree librispeech_finetuning/{1h/0..5,9h}/...
  commonvoice  a Common Voice release folder: clips/ plus train.tsv, dev.tsv, test.tsv, validated.tsv
  kaldi        a Kaldi data folder with wav.scp and text (optional utt2spk, segments), or a folder of such
               folders named train*/dev*/test*
  table        a .csv, .tsv, .jsonl or .json file (NeMo manifests too) with audio path and transcript columns"""


def get_parser(name: str):
    try:
        return _registry()[name]
    except KeyError:
        raise LowresError(
            f"Unknown corpus format {name!r}. Use --format with one of: {', '.join(FORMATS)}.\n{LAYOUT_HELP}"
        ) from None


def detect_format(root: Path, requested: str | None = None) -> str:
    """The layout of ``root``: the requested one (checked), or the only one that matches."""
    if not root.exists():
        raise LowresError(f"Corpus not found: {root}. Pass the folder (or table file) that holds the corpus.")
    registry = _registry()
    if requested:
        module = get_parser(requested)
        if not module.detect(root):
            raise LowresError(
                f"{root} does not look like a {requested!r} corpus: {module.EXPECTED}\n"
                f"Check the path, or pick another --format. The layouts lowres reads:\n{LAYOUT_HELP}"
            )
        return requested
    matches = [name for name, module in registry.items() if module.detect(root)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LowresError(
            f"{root} matches no corpus layout lowres knows. Expected one of:\n{LAYOUT_HELP}\n"
            "Point CORPUS at the folder (or table file) itself, or set --format to get a precise message."
        )
    raise LowresError(f"{root} matches several layouts ({', '.join(matches)}); choose one with --format.")
