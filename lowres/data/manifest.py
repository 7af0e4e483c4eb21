"""Manifests: one utterance per JSONL line, with the keys NeMo's manifests use.

``audio_filepath`` is stored relative to the folder of the manifest that holds it, so a prepared folder
and its corpus can be moved together (keeping their relative position) and every manifest stays valid.
Absolute paths are read as they are. A manifest written by another tool (NeMo, or by hand) is valid
when each line has at least ``audio_filepath`` and ``duration`` (and ``text`` for labeled use).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lowres import LowresError
from lowres.fsutil import atomic_write_text

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
        path = self.audio_filepath
        if base is not None:
            path = relative_path(path, base)
        row = {
            "id": self.id,
            "audio_filepath": path,
            "offset": round(self.offset, 6),
            "duration": round(self.duration, 6),
            "sample_rate": self.sample_rate,
            "speaker": self.speaker,
            "text": self.text,
            "raw_text": self.raw_text,
        }
        return json.dumps(row, ensure_ascii=False)


def relative_path(path: str, base: Path) -> str:
    """``path`` relative to ``base`` with forward slashes, or absolute when no relative path exists."""
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()


def write_manifest(path: str | Path, rows: Iterable[Utterance]) -> int:
    """Atomically write ``rows`` (in the given order) with paths relative to the manifest's folder."""
    path = Path(path)
    base = path.parent.resolve()
    lines = [u.to_json(base) for u in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


class ManifestError(LowresError):
    pass


def read_manifest(path: str | Path, require_text: bool = False) -> Iterator[Utterance]:
    """Stream the utterances of a JSONL manifest. A bad line raises :class:`ManifestError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"Manifest not found: {path}. Pass a .jsonl file written by `lowres prepare`.")
    base = path.parent.resolve()
    with open(path, encoding="utf-8", errors="strict") as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as exc:
                raise ManifestError(f"{path}:{lineno + 1}: not UTF-8 text ({exc.reason}).") from None
            if not line:
                break
            lineno += 1
            if not line.strip():
                continue
            yield parse_line(line, base, f"{path}:{lineno}", require_text)


def parse_line(line: str, base: Path, where: str, require_text: bool = False) -> Utterance:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where}: not a JSON object ({exc.msg}). Each line must be one JSON object.") from None
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected a JSON object, found {type(row).__name__}.")
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
        sample_rate=int(row.get("sample_rate", 0) or 0),
        raw_text=str(row.get("raw_text", "") or ""),
    )


def _finite_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
