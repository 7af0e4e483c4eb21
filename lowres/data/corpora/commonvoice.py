"""Common Voice release folder: ``clips/*.mp3`` and tab-separated ``train/dev/test/validated.tsv``
with ``client_id``, ``path`` and ``sentence`` columns.

The official dev and test sets are kept as they are. The training pool is ``train.tsv`` (default,
``--cv-pool train``), or ``validated.tsv`` minus every clip, speaker and sentence of dev and test
(``--cv-pool validated``; for small languages validated holds many more hours than train).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from lowres import LowresError
from lowres.data.corpora.common import CorpusOptions, Record, Reject, iter_text_lines, split_fields

EXPECTED = "expected a clips/ folder and train.tsv, dev.tsv, test.tsv or validated.tsv beside it."
_TSVS = ("train.tsv", "dev.tsv", "test.tsv", "validated.tsv")


def detect(root: Path) -> bool:
    return root.is_dir() and (root / "clips").is_dir() and any((root / t).is_file() for t in _TSVS)


def _rows(path: Path) -> Iterator[tuple[str, dict | None, str, str]]:
    """(source, row or None, reject reason, detail) for each data line of a TSV. Quotes are literal in
    Common Voice."""
    header: list[str] | None = None
    for lineno, line, reason, detail in iter_text_lines(path):
        where = f"{path}:{lineno}"
        if line is None:
            if header is None:
                raise LowresError(f"{where}: the header line cannot be read: {detail}.")
            yield where, None, reason, detail
            continue
        if header is None:
            header = line.split("\t")
            for col in ("path", "sentence"):
                if col not in header:
                    raise LowresError(
                        f"{path} has no {col!r} column (found: {', '.join(header)}). A Common Voice TSV "
                        "has client_id, path and sentence columns."
                    )
            continue
        if not line.strip():
            continue
        try:
            values = split_fields(line, "\t", quoting=csv.QUOTE_NONE)
        except csv.Error as exc:
            yield where, None, "bad_line", f"cannot be split into fields ({exc})"
            continue
        if len(values) < len(header):
            values += [""] * (len(header) - len(values))
        row = dict(zip(header, values, strict=False))
        if not row["path"].strip():
            yield where, None, "bad_line", "no clip name in the 'path' column"
            continue
        yield where, row, "", ""


def parse(root: Path, opts: CorpusOptions) -> Iterator[Record | Reject]:
    root = root.resolve()
    clips = root / "clips"
    if opts.cv_pool not in ("train", "validated"):
        raise LowresError(f"--cv-pool must be 'train' or 'validated', not {opts.cv_pool!r}.")
    held: dict[str, set] = {"path": set(), "speaker": set(), "sentence": set()}
    for split in ("dev", "test"):
        tsv = root / f"{split}.tsv"
        if not tsv.is_file():
            continue
        for where, row, reason, detail in _rows(tsv):
            if row is None:
                yield Reject(where, reason, detail)
                continue
            held["path"].add(row["path"])
            if row.get("client_id"):
                held["speaker"].add(row["client_id"])
            held["sentence"].add(row["sentence"])
            yield _record(row, clips, where, split, tsv.name)
    pool = root / "train.tsv"
    use_validated = opts.cv_pool == "validated" or not pool.is_file()
    if use_validated:
        pool = root / "validated.tsv"
        if not pool.is_file():
            return
    for where, row, reason, detail in _rows(pool):
        if row is None:
            yield Reject(where, reason, detail)
            continue
        if use_validated:
            if row["path"] in held["path"]:
                continue
            if row.get("client_id") in held["speaker"] or row["sentence"] in held["sentence"]:
                yield Reject(where, "heldout_overlap", "speaker or sentence of dev/test; kept out of training",
                             id=Path(row["path"]).stem)
                continue
        yield _record(row, clips, where, "train", pool.name)


def _record(row: dict, clips: Path, where: str, split: str, group: str) -> Record:
    rel = row["path"]
    audio = clips / rel
    if not audio.suffix and not audio.exists() and (clips / (rel + ".mp3")).exists():
        audio = clips / (rel + ".mp3")  # very old releases list paths without the ending
    return Record(id=Path(rel).stem, audio=audio, text=row.get("sentence", ""), source=where,
                  speaker=row.get("client_id", "") or "", split=split, group=group)
