"""The LM folder format, in one place: the file names ``lowres lm`` writes and ``--lm`` reads, and how the
weights ``lowres eval --tune-lm`` finds are stored and read back.

An LM folder holds ``lm.arpa`` (word n-gram), ``lexicon.txt`` (words in the acoustic units), ``units.arpa``
(unit n-gram for lexicon-free decoding), ``lm_report.json`` (what :func:`lowres.lm.build.build_lm` did) and,
after tuning, ``tuned.json``: ``{mode: entry}`` with one entry per decoding mode (``lexicon`` /
``lexicon_free``), each holding at least ``lm_weight`` and ``word_score`` (plus the dev scores and grid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lowres import LowresError
from lowres.config import LEXICON_FREE_MODE, LEXICON_MODE

ARPA, LEXICON, UNITS_ARPA, REPORT, TUNED = "lm.arpa", "lexicon.txt", "units.arpa", "lm_report.json", "tuned.json"
OUTPUT_NAMES = (ARPA, LEXICON, UNITS_ARPA, REPORT, TUNED)  # what `lowres lm --overwrite` may replace
MODES = (LEXICON_MODE, LEXICON_FREE_MODE)  # the keys of tuned.json (lowres.config declares the two)


@dataclass(frozen=True)
class TunedWeights:
    """The weights stored for one decoding mode (None: that one is not stored); ``entry`` is the whole
    tuned.json entry (dev scores, grid)."""

    lm_weight: float | None
    word_score: float | None
    entry: dict


@dataclass(frozen=True)
class LMFolder:
    """Where the files of one LM folder are. Holds only the path: reading the folder is the methods' job."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))  # frozen: the one normalisation of the field

    @property
    def arpa(self) -> Path:
        return self.path / ARPA

    @property
    def lexicon(self) -> Path:
        return self.path / LEXICON

    @property
    def units_arpa(self) -> Path:
        return self.path / UNITS_ARPA

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def tuned(self) -> Path:
        return self.path / TUNED

    def model_file(self, mode: str) -> Path:
        """The n-gram the beam scores with in ``mode``: words with the lexicon, units without."""
        return self.units_arpa if _check_mode(mode) == LEXICON_FREE_MODE else self.arpa

    def read_tuned(self, mode: str) -> TunedWeights | None:
        """The weights ``--tune-lm`` stored for ``mode``, or None (no tuned.json, or nothing for the mode)."""
        data = self._tuned_data(strict=True)
        entry = data.get(_check_mode(mode))
        if not isinstance(entry, dict):
            return None
        try:
            return TunedWeights(*(float(entry[k]) if k in entry else None for k in ("lm_weight", "word_score")),
                                entry)
        except (TypeError, ValueError):
            raise LowresError(f"{self.tuned}: the {mode} weights are not numbers. Delete the file and run "
                              "`lowres eval --tune-lm` again.") from None

    def store_tuned(self, mode: str, entry: dict) -> TunedWeights:
        """Save ``entry`` (lm_weight, word_score, and how they were found) as ``mode``'s tuned weights,
        keeping the other mode's; returns what a later :meth:`read_tuned` gives."""
        from lowres.fsutil import atomic_write_json

        weights = TunedWeights(float(entry["lm_weight"]), float(entry["word_score"]), dict(entry))
        data = self._tuned_data(strict=False)  # an unreadable old file is replaced, as tuning rewrites it
        data[_check_mode(mode)] = entry
        try:
            atomic_write_json(self.tuned, data)
        except OSError as exc:
            raise LowresError(f"Could not write {self.tuned}: {exc}. The LM folder must be writable for "
                              "--tune-lm.") from None
        return weights

    def _tuned_data(self, strict: bool) -> dict:
        if not self.tuned.is_file():
            return {}
        try:
            data = json.loads(self.tuned.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if not strict:
                return {}
            raise LowresError(f"{self.tuned} is not valid JSON ({exc}). Delete it and run `lowres eval "
                              "--tune-lm` again.") from None
        return data if isinstance(data, dict) else {}


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"decoding mode must be one of {MODES}, not {mode!r}")
    return mode
