"""Pseudo-labelled manifests: ``lowres pseudolabel`` writes them, ``lowres finetune --pseudo`` reads them.

The manifest format (:mod:`lowres.data.manifest`) with two more keys on every line: ``"pseudo": true`` and
``"confidence"`` (0 to 1: how sure the model that wrote the transcript was; lowres/pseudolabel.py says what it
measures). Any manifest with those keys works, whoever wrote it.

Which pieces are plausible is measured against the labeled data by characters per second
(:func:`chars_per_second`, :func:`plausible_cps`): a hypothesis far faster or slower than anything the
labeled speakers said is a loop or a stretch the model lost, whatever its confidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lowres import LowresError
from lowres.data.manifest import ManifestError, Utterance, json_line, read_manifest_rows
from lowres.fsutil import atomic_write_lines

PSEUDO_MANIFEST = "pseudo.jsonl"  # what `lowres pseudolabel` keeps, in its --out folder


@dataclass(frozen=True, slots=True)
class PseudoPiece:
    utt: Utterance  # text: the model's transcript, normalised
    confidence: float  # 0-1


def pseudo_row(piece: PseudoPiece, base: Path | None) -> dict:
    """A pseudo-labelled manifest line: the utterance's keys, then ``pseudo`` and ``confidence``."""
    return {**piece.utt.to_row(base), "pseudo": True, "confidence": round(piece.confidence, 6)}


def write_pseudo(path: Path, pieces: Iterable[PseudoPiece]) -> int:
    """Atomically write ``pieces`` (in the given order) as a pseudo-labelled manifest; returns how many."""
    path = Path(path)
    base = path.parent.resolve()
    rows = [json_line(pseudo_row(p, base)) for p in pieces]
    atomic_write_lines(path, rows)
    return len(rows)


def pseudo_manifest_path(source: str | Path) -> Path:
    """``--pseudo``: the folder written by ``lowres pseudolabel`` (its ``pseudo.jsonl``) or a manifest file."""
    source = Path(source)
    if source.is_dir():
        if not (source / PSEUDO_MANIFEST).is_file():
            raise LowresError(f"--pseudo {source}: the folder has no {PSEUDO_MANIFEST}. Give the --out folder of a "
                              "finished `lowres pseudolabel` (or its pseudo.jsonl).")
        return source / PSEUDO_MANIFEST
    if not source.is_file():
        raise LowresError(f"--pseudo {source}: no such file or folder. Give the --out folder of `lowres pseudolabel`.")
    return source


def read_pseudo(source: str | Path) -> list[PseudoPiece]:
    """The pieces of a pseudo-labelled manifest (``source``: see :func:`pseudo_manifest_path`), in file order.

    A line without ``"pseudo": true`` or without a confidence between 0 and 1 is refused, naming it: a labeled
    manifest given to ``--pseudo`` by mistake would otherwise train as if its transcripts were guesses."""
    path = pseudo_manifest_path(source)
    pieces = []
    for utt, row, where in read_manifest_rows(path, require_text=True):
        conf = row.get("confidence")
        if row.get("pseudo") is not True:
            raise ManifestError(f"{where}: no \"pseudo\": true. --pseudo takes the output of `lowres pseudolabel`; "
                                "human transcripts belong in the labeled split (`lowres prepare`).")
        if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0.0 <= conf <= 1.0:
            raise ManifestError(f"{where}: 'confidence' must be a number from 0 to 1, found {conf!r}.")
        pieces.append(PseudoPiece(utt, float(conf)))
    return pieces


def most_confident(pieces: Sequence[PseudoPiece], keep: float) -> list[PseudoPiece]:
    """The ``keep`` share (0-1] of ``pieces`` with the highest confidence (at least one when there are any;
    ties go to the smaller id), returned in their original order."""
    if keep >= 1.0 or not pieces:
        return list(pieces)
    n = max(1, round(keep * len(pieces)))
    ranked = sorted(range(len(pieces)), key=lambda i: (-pieces[i].confidence, pieces[i].utt.id, i))
    chosen = set(ranked[:n])
    return [p for i, p in enumerate(pieces) if i in chosen]


def chars_per_second(text: str, duration_s: float) -> float:
    """Characters per second of a transcript, spaces left out (a pause is not a character)."""
    return sum(1 for c in text if not c.isspace()) / duration_s if duration_s > 0 else 0.0


def plausible_cps(labeled: Sequence[Utterance], margin: float) -> tuple[float, float] | None:
    """The range of characters per second a transcript may have: the labeled utterances' 1st to 99th
    percentile, widened by ``margin`` (a share) on each side. None without labeled utterances."""
    rates = sorted(chars_per_second(u.text, u.duration) for u in labeled if u.duration > 0)
    if not rates:
        return None
    lo = rates[int(0.01 * (len(rates) - 1))]
    hi = rates[round(0.99 * (len(rates) - 1))]
    return lo * (1.0 - margin), hi * (1.0 + margin)


def overlaps(pieces: Sequence[PseudoPiece], utts: Iterable[Utterance]) -> list[bool]:
    """For each piece, whether its stretch of audio (file, offset, duration) overlaps one of ``utts``' (files
    compared after resolving links, so a folder of links to the corpus's audio matches it)."""
    spans: dict[Path, list[tuple[float, float]]] = {}
    for u in utts:
        spans.setdefault(Path(u.audio_filepath).resolve(), []).append((u.offset, u.offset + u.duration))
    out = []
    for p in pieces:
        start, end = p.utt.offset, p.utt.offset + p.utt.duration
        out.append(any(a < end and start < b for a, b in spans.get(Path(p.utt.audio_filepath).resolve(), ())))
    return out
