"""A table file: CSV, TSV, JSONL or JSON (NeMo manifests included), one utterance per row.

Columns are found by their common names, or set with --audio-column/--text-column/--speaker-column:

- audio: ``audio_filepath``, ``path``, ``audio``, ``file`` (also ``wav``, ``filename``, ``file_name``)
- transcript: ``text``, ``sentence``, ``transcript`` (also ``transcription``, ``normalized_text``)
- speaker (optional): ``speaker``, ``speaker_id``, ``client_id`` (also ``spk``)
- id (optional): ``id``, ``utt_id``, ``utterance_id``, ``key``
- segment (optional): ``offset`` and ``duration`` in seconds (a row with an ``offset`` is a piece of its file)
- split (optional): ``split`` with train / dev (validation, valid) / test

Relative audio paths are relative to the table file's folder.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path

from lowres import LowresError
from lowres.data.corpora.common import CorpusOptions, Record, Reject, iter_text_lines, split_fields

EXPECTED = "expected a .csv, .tsv, .jsonl or .json file with an audio path column and a transcript column."
ENDINGS = (".csv", ".tsv", ".jsonl", ".json", ".ndjson")
AUDIO_COLUMNS = ("audio_filepath", "path", "audio", "file", "wav", "filename", "file_name")
TEXT_COLUMNS = ("text", "sentence", "transcript", "transcription", "normalized_text")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id", "spk")
ID_COLUMNS = ("id", "utt_id", "utterance_id", "key")
_SPLITS = {"train": "train", "training": "train", "dev": "dev", "valid": "dev", "validation": "dev",
           "val": "dev", "test": "test", "eval": "test"}


def detect(root: Path) -> bool:
    return root.is_file() and root.suffix.lower() in ENDINGS


def _pick(columns: list[str], wanted: str | None, choices: tuple[str, ...], what: str, flag: str, path: Path,
          required: bool) -> str | None:
    if wanted:
        if wanted not in columns:
            raise LowresError(f"{path}: no column {wanted!r} for the {what} (found: {', '.join(columns)}).")
        return wanted
    lower = {c.lower(): c for c in columns}
    for name in choices:
        if name in lower:
            return lower[name]
    if required:
        raise LowresError(
            f"{path}: cannot tell which column holds the {what}. Found columns: {', '.join(columns) or '(none)'}; "
            f"known names are {', '.join(choices)}. Name it with {flag} COLUMN."
        )
    return None


def _rows(path: Path) -> Iterator[tuple[str, dict | None, str, str]]:
    """(source, row or None, reject reason, detail) per data row."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        yield from _delimited(path, "\t" if suffix == ".tsv" else ",")
        return
    # JSON: a JSON array, or one object per line (NeMo writes JSON lines into .json files)
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    except OSError as exc:
        raise LowresError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    if suffix == ".json" and head.startswith(b"["):
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise LowresError(f"{path} is not valid JSON: {exc}") from None
        for i, row in enumerate(data, 1):
            where = f"{path}[{i}]"
            yield (where, row, "", "") if isinstance(row, dict) else (where, None, "bad_line", "array item is not an object")
        return
    for lineno, line, reason, detail in iter_text_lines(path):
        where = f"{path}:{lineno}"
        if line is None:
            yield where, None, reason, detail
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            yield where, None, "bad_line", f"not a JSON object ({why})"
            continue
        if not isinstance(row, dict):
            yield where, None, "bad_line", "not a JSON object"
            continue
        yield where, row, "", ""


def _delimited(path: Path, delimiter: str) -> Iterator[tuple[str, dict | None, str, str]]:
    header: list[str] | None = None
    for lineno, line, reason, detail in iter_text_lines(path):
        where = f"{path}:{lineno}"
        if line is None:
            if header is None:
                raise LowresError(f"{where}: the header line cannot be read: {detail}.")
            yield where, None, reason, detail
            continue
        if not line.strip():
            continue
        try:
            values = split_fields(line, delimiter)
        except csv.Error as exc:
            if header is None:
                raise LowresError(f"{where}: the header line cannot be split into columns ({exc}).") from None
            yield where, None, "bad_line", f"cannot be split into fields ({exc})"
            continue
        if header is None:
            header = [v.strip() for v in values]
            continue
        if len(values) != len(header):
            yield where, None, "bad_line", f"{len(values)} fields where the header has {len(header)}"
            continue
        yield where, dict(zip(header, values, strict=True)), "", ""


def parse(root: Path, opts: CorpusOptions) -> Iterator[Record | Reject]:
    path = root.resolve()
    base = path.parent
    columns: dict[str, str | None] | None = None
    for where, row, reason, detail in _rows(path):
        if row is None:
            yield Reject(where, reason, detail)
            continue
        if columns is None:
            names = list(row.keys())
            columns = {
                "audio": _pick(names, opts.audio_column, AUDIO_COLUMNS, "audio path", "--audio-column", path, True),
                "text": _pick(names, opts.text_column, TEXT_COLUMNS, "transcript", "--text-column", path, True),
                "speaker": _pick(names, opts.speaker_column, SPEAKER_COLUMNS, "speaker", "--speaker-column", path,
                                 False),
                "id": _pick(names, None, ID_COLUMNS, "id", "", path, False),
            }
        audio_value = row.get(columns["audio"])
        if not isinstance(audio_value, str) or not audio_value.strip():
            yield Reject(where, "bad_line", f"no audio path in column {columns['audio']!r}")
            continue
        audio = Path(audio_value.strip())
        if not audio.is_absolute():
            audio = base / audio
        text = row.get(columns["text"])
        if text is not None and not isinstance(text, str):  # JSON: a number, list or object
            yield Reject(where, "bad_line", f"the transcript in column {columns['text']!r} is not a string")
            continue
        text = text or ""
        speaker = str(row.get(columns["speaker"]) or "") if columns["speaker"] else ""
        offset, duration = 0.0, None
        if "offset" in row:
            try:
                offset = float(row.get("offset") or 0.0)
                duration = float(row["duration"]) if row.get("duration") not in (None, "") else None
            except (TypeError, ValueError):
                yield Reject(where, "bad_line", "offset/duration are not numbers")
                continue
            if not math.isfinite(offset) or offset < 0 or (duration is not None and not duration > 0):
                yield Reject(where, "bad_segment", f"offset {offset} / duration {duration} is not a segment")
                continue
        split = "train"
        if "split" in row and str(row["split"]).strip():
            split = _SPLITS.get(str(row["split"]).strip().lower())
            if split is None:
                yield Reject(where, "bad_line", f"unknown split {row['split']!r} (train, dev or test)")
                continue
        utt_id = str(row.get(columns["id"]) or "") if columns["id"] else ""
        if not utt_id:
            stem = audio_value.strip().rsplit(".", 1)[0].replace("\\", "/").lstrip("./")
            utt_id = stem.replace("/", "_")
            if offset or duration is not None:
                utt_id += f"_{int(round(offset * 1000)):08d}"
        yield Record(id=utt_id, audio=audio, text=text, source=where, speaker=speaker, split=split,
                     group=path.name, offset=offset, duration=duration)
