"""benchmarks/real_speech.py's corpus writers, on hand-made lines of each format (no download).

Contract: a Fish Fillets ``dialogs_nl.lua`` gives (id, character, Dutch text) per dialogId/dialogStr pair, Lua
escapes undone; an Asterisk ``core-sounds-LANG.txt`` gives (id, text) per ``id: text`` line, comments and blank
lines skipped, ids with ``/`` kept; the Asterisk cleaner removes ``[...]``, ``<...>`` and ``(...)`` (non-speech
and comments); the split is seeded, utterance-level and 80/10/10; written corpora prepare with every utterance.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

from factory import write_audio

from lowres.data.prepare import prepare
from lowres.data.text import load_rules

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "real_speech.py"
_spec = importlib.util.spec_from_file_location("real_speech", _PATH)
rs = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rs  # (its dataclasses look their module up)
_spec.loader.exec_module(rs)

LUA = '''
-- Init
dialogId("bar-v-videt0", "font_big", "Somebody from Greenpeace should see this.")
dialogStr("Greenpeace zou hier eens moeten komen kijken.")


dialogId("war-v-pohadka", "font_small", "...to \\/etc to chat.")
dialogStr("Als er saaie programma's draaien, gaan wij naar \\/etc om te \\"kletsen\\".")

dialogId("bar-m-no",
         "font_small", "Well, you may be right.")
dialogStr("Nou ja, misschien heb je wel gelijk.")
'''

ASTERISK = '''\ufeff; Core Asterisk Sounds in English

activated: Activated.
ascending-2tone: [ascending tones]
conf-adminmenu-162: Please press 1 to mute (2 seconds of silence) or 8 to exit.
digits/1: one
letters/dollar: dollar [$]
beep-up: <beep ascending>
  ; an indented comment
'''


def test_parse_fillets():
    assert rs.parse_fillets(LUA) == [
        ("bar-v-videt0", "big", "Greenpeace zou hier eens moeten komen kijken."),
        ("war-v-pohadka", "small", 'Als er saaie programma\'s draaien, gaan wij naar /etc om te "kletsen".'),
        ("bar-m-no", "small", "Nou ja, misschien heb je wel gelijk."),
    ]


def test_parse_and_clean_asterisk():
    entries = rs.parse_asterisk(ASTERISK)
    assert [i for i, _ in entries] == ["activated", "ascending-2tone", "conf-adminmenu-162", "digits/1",
                                       "letters/dollar", "beep-up"]
    cleaned = {i: rs.clean_asterisk(t) for i, t in entries}
    assert cleaned == {"activated": "Activated.", "ascending-2tone": "", "digits/1": "one",
                       "conf-adminmenu-162": "Please press 1 to mute or 8 to exit.", "letters/dollar": "dollar",
                       "beep-up": ""}


def test_utterance_splits_seeded_and_sized():
    ids = [f"u{i:03d}" for i in range(200)]
    split = rs.utterance_splits(ids)
    assert split == rs.utterance_splits(list(reversed(ids)))
    assert [list(split.values()).count(s) for s in ("train", "dev", "test")] == [160, 20, 20]
    assert split != rs.utterance_splits(ids, seed=1)


def test_written_asterisk_corpus_prepares_whole(tmp_path):
    """The writer over a hand-made unpacked package: one voice, its own utterance-level split; prepare keeps
    every utterance (the voice trains and dev/test hear it, said in the report), narrow-band noted."""
    root = tmp_path / "root"
    doc = root / "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
    doc.parent.mkdir(parents=True)
    lines = ["; test", "beep: [beep]"] + [f"prompt-{i}: Please press {i % 10} now." for i in range(30)]
    doc.write_bytes(gzip.compress("\n".join(lines).encode()))
    sounds = root / "usr/share/asterisk/sounds/en_US_f_Allison"
    write_audio(sounds / "beep.wav", 0.5, 8000)
    for i in range(30):
        write_audio(sounds / f"prompt-{i}.wav", 2.5, 8000, seed=i)
    corpus = rs.CORPORA["en"]
    written = rs.write_corpus(corpus, root, tmp_path / "corpus")
    assert written == {"utterances": 30, "unlabeled_files": 31, "text_without_audio": 0, "not_speech": 1}
    rows = [json.loads(x) for x in (tmp_path / "corpus" / "corpus.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "dev", "test"} and {r["speaker"] for r in rows} == {corpus.voice}
    result = prepare(tmp_path / "corpus" / "corpus.jsonl", tmp_path / "prep", unlabeled=tmp_path / "corpus" / "unlabeled",
                     rules=load_rules("en"))
    assert result.report["kept"]["share"] == 1.0 and not result.report["warnings"]
    assert result.report["heldout"]["test"]["share_by_training_voices"] == 1.0
    assert result.report["audio"]["narrowband_share"] == 1.0
    assert result.report["unlabeled"]["heldout_files_excluded"] == 6  # dev and test audio never adapt
