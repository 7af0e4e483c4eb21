"""Manifests: one utterance per JSONL line, with the keys NeMo's manifests use.

``audio_filepath`` is stored relative to the folder of the manifest that holds it, so a prepared folder
and its corpus can be moved together (keeping their relative position) and every manifest stays valid.
Absolute paths are read as they are. A manifest written by another tool (NeMo, or by hand) is valid
when each line has at least ``audio_filepath`` and ``duration`` (and ``text`` for labeled use); reading
stops at the first line that is not, with the file, line number and reason (:class:`ManifestError`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lowres import LowresError
from lowres.fsutil import atomic_write_lines

KEY_ORDER = ("id", "audio_filepath", "offset", "duration", "sample_rate", "speaker", "text", "raw_text")


@dataclass(slots=True)
class Utterance:
    id: str
    audio_filepath: str  # absolute in memory; made relative to the manifest folder when written
    duration: float  # seconds
    text: str = ""  # normalised transcript ("" for unlabeled audio)
    offset: float = 0.0  # seconds into the file
    speaker: str = ""
    sample_rate: int = 0  # of the file on disk (audio is resampled to 16 kHz on load)
    raw_text: str = ""

    def to_json(self, base: Path | None) -> str:
        return json_line(self.to_row(base))

    def to_row(self, base: Path | None) -> dict:
        """The manifest line as a dict (``audio_filepath`` relative to ``base`` when given), keys in
        ``KEY_ORDER``: other tools' extra keys (a pseudo-label's ``confidence``) go after them."""
        path = self.audio_filepath
        if base is not None:
            path = relative_path(path, base)
        return {
            "id": self.id,
            "audio_filepath": path,
            "offset": round(self.offset, 6),
            "duration": round(self.duration, 6),
            "sample_rate": self.sample_rate,
            "speaker": self.speaker,
            "text": self.text,
            "raw_text": self.raw_text,
        }


# Characters that str.splitlines() and many JSONL readers take for line ends; json.dumps keeps them raw.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(obj) -> str:
    """One JSONL line: UTF-8 kept readable, but nothing inside that any reader could take for a line end.

    A file name that is not valid UTF-8 reaches Python with surrogate escapes (PEP 383), which UTF-8 cannot
    hold: such a line is written with ``\\u`` escapes, and reading it back gives the same name."""
    line = json.dumps(obj, ensure_ascii=False).translate(_LINE_BREAKS)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj)
    return line


def relative_path(path: str, base: Path) -> str:
    """``path`` relative to ``base`` with forward slashes, or absolute when no relative path exists."""
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()


def spread_over_speakers(utts: list[Utterance], n: int) -> list[Utterance]:
    """``n`` utterances taken in turn from each speaker (speakers in order of first appearance, each speaker's
    utterances in manifest order), so that a subset of a speaker-sorted manifest (prepare sorts dev and test
    by id, hence by speaker) hears every voice instead of the first one. All of them when ``n`` covers them."""
    if n >= len(utts):
        return list(utts)
    by_speaker: dict[str, list[Utterance]] = {}
    for u in utts:
        by_speaker.setdefault(u.speaker, []).append(u)
    queues = [iter(q) for q in by_speaker.values()]
    out: list[Utterance] = []
    while len(out) < n:
        for q in queues:
            u = next(q, None)
            if u is not None and len(out) < n:
                out.append(u)
    return out


def write_manifest(path: str | Path, rows: Iterable[Utterance]) -> int:
    """Atomically write ``rows`` (in the given order) with paths relative to the manifest's folder."""
    path = Path(path)
    base = path.parent.resolve()
    written = 0

    def lines():  # streamed: a manifest of 100,000 lines is never one string in memory
        nonlocal written
        for u in rows:
            written += 1
            yield u.to_json(base)

    atomic_write_lines(path, lines())
    return written


class ManifestError(LowresError):
    pass


def read_manifest(path: str | Path, require_text: bool = False) -> Iterator[Utterance]:
    """Stream the utterances of a JSONL manifest; blank lines are skipped. A line that is not a valid
    record (not UTF-8, not a JSON object, a missing or bad field) raises :class:`ManifestError` naming the
    file, the line and the reason: the reader stops at the first bad line rather than guess."""
    for utt, _row, _where in read_manifest_rows(path, require_text):
        yield utt


def read_manifest_rows(path: str | Path, require_text: bool = False) -> Iterator[tuple[Utterance, dict, str]]:
    """:func:`read_manifest` with each line's JSON object and its ``file:line`` beside the utterance: for the
    keys that other writers add (a pseudo-label's ``confidence``)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"Manifest not found: {path}. Pass a .jsonl file written by `lowres prepare`.")
    base = path.parent.resolve()
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):  # bytes, decoded line by line, so the error names the right line
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ManifestError(f"{path}:{lineno}: not UTF-8 text (byte {exc.start}: "
                                    f"{raw[exc.start:exc.start + 1]!r}). Manifests are UTF-8 JSON lines.") from None
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            row = load_row(line, where)
            yield parse_row(row, base, where, require_text), row, where


def load_row(line: str, where: str) -> dict:
    """One manifest line as a JSON object, or :class:`ManifestError` naming ``where``."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise ManifestError(f"{where}: not a JSON object ({why}). Each line must be one JSON object.") from None
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected a JSON object, found {type(row).__name__}.")
    return row


def parse_row(row: dict, base: Path, where: str, require_text: bool = False) -> Utterance:
    """One manifest line already read as a JSON object (``where`` names it in errors)."""
    audio = row.get("audio_filepath", row.get("audio", row.get("path")))
    if not isinstance(audio, str) or not audio:
        raise ManifestError(f"{where}: missing 'audio_filepath'.")
    duration = row.get("duration")
    offset = row.get("offset", 0.0) or 0.0
    if not _finite_number(duration) or duration <= 0:
        raise ManifestError(f"{where}: 'duration' must be a positive number of seconds, found {duration!r}.")
    if not _finite_number(offset) or offset < 0:
        raise ManifestError(f"{where}: 'offset' must be a number of seconds >= 0, found {offset!r}.")
    text = row.get("text", "")
    if not isinstance(text, str):
        raise ManifestError(f"{where}: 'text' must be a string.")
    if require_text and not text.strip():
        raise ManifestError(f"{where}: empty 'text'; a labeled manifest needs a transcript on every line.")
    sample_rate = row.get("sample_rate", 0) or 0
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate < 0:
        raise ManifestError(f"{where}: 'sample_rate' must be a whole number of Hz, found {sample_rate!r}.")
    full = Path(audio)
    if not full.is_absolute():
        full = base / full
    return Utterance(
        id=str(row.get("id") or Path(audio).stem),
        audio_filepath=str(full),
        duration=float(duration),
        text=text,
        offset=float(offset),
        speaker=str(row.get("speaker", "") or ""),
        sample_rate=sample_rate,
        raw_text=str(row.get("raw_text", "") or ""),
    )


def _finite_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
