"""Kaldi data folder: ``wav.scp`` (plain paths), ``text``, optional ``utt2spk`` and ``segments``.

CORPUS is one data folder (a training pool: dev/test are carved out), or a folder whose sub-folders are
data folders named ``train*``, ``dev*``/``valid*`` and ``test*``/``eval*`` (Kaldi's ``data/`` layout).
Piped ``wav.scp`` entries (``... |``) and ``.ark`` offsets are rejected with a reason: lowres reads audio
files, not commands. Relative paths are looked up from the data folder, then from the folders above it
(Kaldi recipes run from the folder that holds ``data/``). A key repeated within a file is rejected (the
first line wins), and so is a ``wav.scp`` (or ``segments``) entry that ``text`` does not transcribe. An audio
file that is missing or cannot be decoded is blamed on the ``wav.scp`` line that names it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from lowres.data.corpora.common import CorpusOptions, Record, Reject, iter_text_lines

EXPECTED = "expected wav.scp and text files (a Kaldi data folder), or sub-folders train*/dev*/test* that hold them."


def _is_data_dir(d: Path) -> bool:
    return (d / "wav.scp").is_file() and (d / "text").is_file()


def _split_of(name: str) -> str | None:
    low = name.lower()
    if low.startswith("train"):
        return "train"
    if low.startswith(("dev", "valid")):
        return "dev"
    if low.startswith(("test", "eval")):
        return "test"
    return None


def _data_dirs(root: Path) -> list[tuple[Path, str]]:
    if _is_data_dir(root):
        return [(root, "train")]
    found = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.is_dir() and _is_data_dir(child):
            split = _split_of(child.name)
            if split:
                found.append((child, split))
    return found


def detect(root: Path) -> bool:
    return root.is_dir() and bool(_data_dirs(root))


def _table(path: Path) -> Iterator[tuple[str, str | None, str, Reject | None]]:
    """(source, key, rest, reject) for 'KEY REST' lines; key is None (and reject says why) for a line that
    cannot be read. A key seen before is a reject too (Kaldi's tables are maps: the first line wins)."""
    first: dict[str, str] = {}
    for lineno, line, reason, detail in iter_text_lines(path):
        where = f"{path}:{lineno}"
        if line is None:
            yield where, None, "", Reject(where, reason, detail)
            continue
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if parts[0] in first:
            yield where, None, "", Reject(where, "duplicate_id", f"{parts[0]!r} already used at {first[parts[0]]}",
                                          id=parts[0])
            continue
        first[parts[0]] = where
        yield where, parts[0], parts[1] if len(parts) > 1 else "", None


def _resolve(path_text: str, data_dir: Path) -> Path:
    p = Path(path_text)
    if p.is_absolute():
        return p
    for base in (data_dir, data_dir.parent, data_dir.parent.parent):
        if (base / p).exists():
            return (base / p).resolve()
    return (data_dir / p).resolve()


def parse(root: Path, opts: CorpusOptions) -> Iterator[Record | Reject]:
    for data_dir, split in _data_dirs(root.resolve()):
        yield from _parse_dir(data_dir, split)


def _parse_dir(d: Path, split: str) -> Iterator[Record | Reject]:
    recordings: dict[str, Path] = {}
    rec_source: dict[str, str] = {}
    bad_recordings: dict[str, str] = {}
    for where, key, rest, bad in _table(d / "wav.scp"):
        if key is None:
            yield bad
            continue
        rest = rest.strip()
        if rest.endswith("|") or rest.startswith("|"):
            reason = ("wav.scp entry is a command pipe; lowres reads audio files, not commands. Run the "
                      "command once to write a .wav file and list that file instead")
            bad_recordings[key] = reason
            yield Reject(where, "piped_wav_scp", reason, id=key)
            continue
        if not rest:
            bad_recordings[key] = "empty wav.scp entry"
            yield Reject(where, "bad_line", "no path after the recording id", id=key)
            continue
        if ".ark:" in rest:
            bad_recordings[key] = "ark offset"
            yield Reject(where, "unsupported_audio", "Kaldi .ark offsets are not audio files; "
                         "write the audio out as .wav/.flac", id=key)
            continue
        recordings[key] = _resolve(rest, d)
        rec_source[key] = where

    speakers: dict[str, str] = {}
    if (d / "utt2spk").is_file():
        for _where, key, rest, _bad in _table(d / "utt2spk"):
            if key is not None:
                speakers[key] = rest.strip()

    segments: dict[str, tuple[str, float, float | None, str]] = {}
    has_segments = (d / "segments").is_file()
    if has_segments:
        for where, key, rest, bad in _table(d / "segments"):
            if key is None:
                yield bad
                continue
            fields = rest.split()
            try:
                rec, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                yield Reject(where, "bad_line", "a segments line is 'UTT REC START END' (seconds)", id=key)
                continue
            if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or (end >= 0 and end <= start):
                yield Reject(where, "bad_segment", f"start {start} and end {end} do not make a segment", id=key)
                continue
            segments[key] = (rec, start, None if end < 0 else end - start, where)

    transcribed: set[str] = set()
    for where, key, rest, bad in _table(d / "text"):
        if key is None:
            yield bad
            continue
        transcribed.add(key)
        if has_segments:
            seg = segments.get(key)
            if seg is None:
                yield Reject(where, "missing_segment", "utterance has no line in segments", id=key)
                continue
            rec, offset, duration, _ = seg
        else:
            rec, offset, duration = key, 0.0, None
        if rec in bad_recordings:
            continue  # already reported on its wav.scp line
        audio = recordings.get(rec)
        if audio is None:
            yield Reject(where, "missing_audio", f"recording {rec!r} is not in wav.scp", id=key)
            continue
        yield Record(id=key, audio=audio, text=rest, source=where, speaker=speakers.get(key, ""), split=split,
                     group=d.name, offset=offset, duration=duration, audio_source=rec_source[rec])
    # what wav.scp (or segments) lists but text does not (an unreadable text line also shows up here by its id)
    untranscribed = ((k, seg[3]) for k, seg in segments.items()) if has_segments else rec_source.items()
    for key, where in untranscribed:
        if key not in transcribed:
            yield Reject(where, "no_transcript", f"{key!r} has no line in {d / 'text'}", id=key)
