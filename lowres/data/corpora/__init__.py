"""Corpus layouts. Each module has ``detect(root) -> bool`` and ``parse(root, opts)``, which yields
:class:`Record` for every utterance it finds and :class:`Reject` for every line or file it cannot use.
Parsers only read the layout; probing the audio and normalising text happen in ``prepare``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lowres import LowresError


@dataclass(slots=True)
class Record:
    id: str
    audio: Path  # absolute path of the audio file
    text: str  # raw transcript, exactly as the corpus has it
    source: str  # "file:line" (or a path) for messages and rejects
    speaker: str = ""  # "" when unknown
    split: str = "train"  # train | dev | test
    group: str = ""  # the corpus's own name for the set, e.g. "dev-clean" or "test.tsv"
    tags: frozenset = frozenset()  # official subsets this utterance belongs to (Libri-light: 10min, 1h, 10h)
    offset: float = 0.0  # seconds
    duration: float | None = None  # seconds; None = to the end of the file


@dataclass(slots=True)
class Reject:
    source: str
    reason: str
    detail: str
    id: str = ""

    def to_dict(self) -> dict:
        return {"source": self.source, "id": self.id, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class CorpusOptions:
    dev_dirs: tuple[Path, ...] = ()  # librispeech: dev folders named by flags
    test_dirs: tuple[Path, ...] = ()
    audio_column: str | None = None  # table: column names set by flags
    text_column: str | None = None
    speaker_column: str | None = None
    cv_pool: str = "train"  # commonvoice: train (train.tsv) or validated (validated.tsv minus dev/test)
    extra: dict = field(default_factory=dict)


def iter_text_lines(path: Path) -> Iterator[tuple[int, str | None, str]]:
    """Lines of a transcript file as ``(line number, text or None, error)``.

    Each line is decoded on its own: a file with a stray Latin-1 line loses that line only (reported),
    never the whole file. A UTF-8 byte-order mark and CRLF line ends are accepted.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            raw = raw.rstrip(b"\r\n")
            try:
                yield lineno, raw.decode("utf-8"), ""
            except UnicodeDecodeError as exc:
                yield lineno, None, (
                    f"line is not UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                    "convert the file with e.g. `iconv -f latin1 -t utf-8`"
                )


def walk_files(root: Path, suffixes: frozenset[str] | None = None, names_end: str | None = None) -> Iterator[Path]:
    """Files below ``root`` in sorted order, following folder symlinks but never the same folder twice
    (a symlink loop cannot hang or repeat the walk)."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if names_end is not None and not name.endswith(names_end):
                continue
            if suffixes is not None and Path(name).suffix.lower() not in suffixes:
                continue
            yield Path(dirpath) / name


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
