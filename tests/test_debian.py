"""lowres/data/debian.py's corpus writers (the real-speech benchmark's and `lowres demo --real`'s corpora), on
hand-made lines of each format (no download).

Contract: a Fish Fillets ``dialogs_nl.lua`` gives (id, character, Dutch text) per dialogId/dialogStr pair, Lua
escapes undone; an Asterisk ``core-sounds-LANG.txt`` gives (id, text) per ``id: text`` line, comments and blank
lines skipped, ids with ``/`` kept; the Asterisk cleaner removes ``[...]``, ``<...>`` and ``(...)`` (non-speech
and comments); the split is seeded, utterance-level and 80/10/10; written corpora prepare with every utterance.
"""

from __future__ import annotations

import gzip
import json

from factory import write_audio

import lowres.data.debian as rs
from lowres.data.prepare import prepare
from lowres.data.text import load_rules

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


def test_fetch_says_what_to_do_without_apt_get(tmp_path, monkeypatch):
    """Off Debian (no apt-get) and with nothing downloaded: one message naming the package, the folder to put
    it in and where it is; an unpacked package is reused without asking apt-get anything."""
    import shutil

    import pytest

    from lowres import LowresError

    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(LowresError, match=r"apt-get is not on this machine.*fillets-ng-data-nl.*packages\.debian\.org"):
        rs.fetch(tmp_path, ("fillets-ng-data-nl",))
    marker = tmp_path / "root" / ".unpacked" / "fillets-ng-data-nl"
    marker.parent.mkdir(parents=True)
    marker.write_text("fillets-ng-data-nl_1.0.1-5_all.deb\n")
    assert rs.fetch(tmp_path, ("fillets-ng-data-nl",)) == tmp_path / "root"
