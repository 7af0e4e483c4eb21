"""lowres/data/pseudo.py: the pseudo-labelled manifest, the kept share and the plausible speaking rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lowres import LowresError
from lowres.data.manifest import ManifestError, Utterance
from lowres.data.pseudo import (
    PseudoPiece,
    chars_per_second,
    most_confident,
    overlaps,
    plausible_cps,
    read_pseudo,
    write_pseudo,
)


def _piece(i: int, conf: float, text: str = "ab cd", duration: float = 1.0) -> PseudoPiece:
    return PseudoPiece(Utterance(f"p{i}", f"/audio/{i}.wav", duration, text=text), conf)


def test_write_then_read_round_trip_with_relative_paths(tmp_path):
    pieces = [_piece(0, 0.9), _piece(1, 0.25, "x")]
    write_pseudo(tmp_path / "pl" / "pseudo.jsonl", pieces)
    rows = [json.loads(x) for x in (tmp_path / "pl" / "pseudo.jsonl").read_text().splitlines()]
    assert [r["pseudo"] for r in rows] == [True, True] and rows[1]["confidence"] == 0.25
    assert rows[0]["audio_filepath"].endswith("audio/0.wav") and not rows[0]["audio_filepath"].startswith("/")
    back = read_pseudo(tmp_path / "pl")  # the folder stands for its pseudo.jsonl
    assert [(p.utt.id, p.utt.text, p.confidence) for p in back] == [(p.utt.id, p.utt.text, p.confidence)
                                                                     for p in pieces]
    assert [Path(p.utt.audio_filepath).resolve() for p in back] == [Path("/audio/0.wav"), Path("/audio/1.wav")]


@pytest.mark.parametrize("extra, message", [({}, '"pseudo": true'), ({"pseudo": True}, "'confidence'"),
                                            ({"pseudo": True, "confidence": 1.5}, "from 0 to 1"),
                                            ({"pseudo": True, "confidence": True}, "from 0 to 1")])
def test_a_line_that_is_not_a_pseudo_label_is_refused_naming_it(tmp_path, extra, message):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"audio_filepath": "a.wav", "duration": 1.0, "text": "ab", **extra}) + "\n")
    with pytest.raises(ManifestError, match=message) as err:
        read_pseudo(path)
    assert f"{path}:1" in str(err.value)
    with pytest.raises(LowresError, match="no pseudo.jsonl"):
        read_pseudo(tmp_path)
    with pytest.raises(LowresError, match="no such file or folder"):
        read_pseudo(tmp_path / "missing")


def test_most_confident_keeps_the_top_share_in_original_order():
    pieces = [_piece(i, c) for i, c in enumerate((0.5, 0.9, 0.1, 0.7, 0.7))]
    assert [p.utt.id for p in most_confident(pieces, 0.4)] == ["p1", "p3"]  # ties: the smaller id
    assert most_confident(pieces, 1.0) == pieces
    assert [p.utt.id for p in most_confident(pieces, 0.01)] == ["p1"]  # at least one
    assert most_confident([], 0.5) == []


def test_plausible_rate_is_the_labeled_range_widened():
    assert chars_per_second("ab cd", 2.0) == 2.0  # spaces are not characters
    assert chars_per_second("ab", 0.0) == 0.0
    labeled = [Utterance(f"l{i}", "/a.wav", 1.0, text="x" * n) for i, n in enumerate(range(5, 16))]
    lo, hi = plausible_cps(labeled, 0.2)
    assert lo == pytest.approx(5 * 0.8) and hi == pytest.approx(15 * 1.2)
    assert plausible_cps([], 0.2) is None


def test_overlaps_compares_stretches_of_the_same_file(tmp_path):
    (tmp_path / "long.wav").write_bytes(b"")
    (tmp_path / "link.wav").symlink_to(tmp_path / "long.wav")
    labeled = [Utterance("l", str(tmp_path / "long.wav"), 2.0, text="a", offset=6.0)]
    pieces = [PseudoPiece(Utterance(f"p{i}", str(tmp_path / name), d, offset=o), 0.5)
              for i, (name, o, d) in enumerate([("long.wav", 0.0, 5.0), ("long.wav", 5.0, 1.5), ("link.wav", 7.5, 3.0),
                                                ("other.wav", 6.0, 2.0), ("long.wav", 8.0, 1.0)])]
    assert overlaps(pieces, labeled) == [False, True, True, False, False]
