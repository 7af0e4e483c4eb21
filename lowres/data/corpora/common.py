"""What every corpus layout shares: the :class:`Record` and :class:`Reject` a parser yields, the options the
command line gives them, and the readers of text lines, CSV fields and folders that keep hostile files from
stopping a corpus."""

from __future__ import annotations

import codecs
import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


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
    audio_source: str = ""  # where the corpus names the audio file, when not at ``source`` (Kaldi: wav.scp:N)


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


# Byte-order marks that name a wide encoding (UTF-32 first: its little-endian mark starts like UTF-16's).
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
              (codecs.BOM_UTF16_BE, "utf-16"))


def iter_text_lines(path: Path) -> Iterator[tuple[int, str | None, str, str]]:
    """Lines of a transcript file as ``(line number, text, reason, detail)``: ``text`` is None for a line
    that cannot be used, and ``reason`` (a rejects code) and ``detail`` say why; line 0 is the whole file.

    Each line is decoded on its own: a file with a stray Latin-1 line loses that line only (reported),
    never the whole file. A UTF-8 byte-order mark and CRLF line ends are accepted, and so are UTF-16 and
    UTF-32 files that start with their byte-order mark (Notepad's and Excel's "Unicode text"). A line with
    NUL bytes is not text (UTF-16 without a byte-order mark, or a binary file) and is rejected.
    """
    try:
        f = open(path, "rb")
    except OSError as exc:  # permission denied, a symlink loop, ...
        yield 0, None, "unreadable_file", f"cannot read {path.name}: {exc.strerror or exc}"
        return
    with f:
        head = f.read(4)
        f.seek(0)
        wide = next((codec for bom, codec in _WIDE_BOMS if head.startswith(bom)), None)
        if wide is not None:
            lines = f.read().decode(wide, errors="replace").split("\n")
            if lines[-1] == "":
                lines.pop()
            for lineno, line in enumerate(lines, 1):
                if "\ufffd" in line:
                    yield lineno, None, "bad_encoding", f"line is not valid {wide.upper()} (the file starts " \
                        "with its byte-order mark); convert the file to UTF-8"
                else:
                    yield lineno, line.rstrip("\r"), "", ""
            return
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]
            raw = raw.rstrip(b"\r\n")
            if b"\x00" in raw:
                yield lineno, None, "bad_encoding", (
                    "line holds NUL bytes, so the file is not UTF-8 text (UTF-16 without a byte-order mark?); "
                    "convert it with e.g. `iconv -f utf-16le -t utf-8`")
                continue
            try:
                yield lineno, raw.decode("utf-8"), "", ""
            except UnicodeDecodeError as exc:
                yield lineno, None, "bad_encoding", (
                    f"line is not UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                    "convert the file with e.g. `iconv -f latin1 -t utf-8`"
                )


def split_fields(line: str, delimiter: str, **fmt) -> list[str]:
    """The fields of one CSV/TSV line (from :func:`iter_text_lines`, so without NUL). A carriage return
    inside the line is a control character like any other, not the end of a record (the csv module refuses
    it, so it travels through as NUL). Raises ``csv.Error``, also for a quoted field left open at the end
    of the line: records are read one line each, so a line break inside quotes (or a stray opening quote)
    would otherwise cut a transcript short without a word."""
    values = next(csv.reader([line.replace("\r", "\x00") + "\n"], delimiter=delimiter, **fmt), [])
    if values and values[-1].endswith("\n"):  # only an open quoted field keeps the line end
        raise csv.Error("a quoted field is not closed on its line (a line break inside quotes, or a stray quote "
                        "mark); lowres reads one record per line")
    return [v.replace("\x00", "\r") for v in values]


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
