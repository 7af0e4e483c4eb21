"""Real recorded speech that any Debian-based machine can fetch: the corpora of lowres's real-speech benchmark
and of ``lowres demo --real``, downloaded with ``apt-get download`` (no root needed: the packages are only
unpacked, with ``dpkg-deb -x``, into a cache folder) and written as ``table`` corpora (``corpus.jsonl``: id,
audio, text, speaker, split, and ``unlabeled/``: every audio file of the language).

- ``nl``: Fish Fillets NG's Dutch voice acting (GPL-2): ~1,528 lines, ~91 min, 22.05 kHz Vorbis, 20 character
  voices of which two speak ~80%;
- ``en``, ``es``, ``fr``, ``it``, ``ru``: the Asterisk core sounds (CC-BY-SA-3.0 / CC-BY-3.0): one professional
  voice each, 24-31 min of short IVR prompts, 8 kHz wav (narrow-band: lowres upsamples it).

None of them has an official split: each gets a seeded utterance-level dev and test (10% + 10%), written into
the table's split column, so dev/test hear the training voices (there is no other voice to hear).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lowres import LowresError


@dataclass(frozen=True)
class Corpus:
    name: str
    title: str
    lang: str  # lowres's shipped text rules (--lang)
    packages: tuple[str, ...]  # Debian packages: transcripts first, then audio
    licence: str
    splits: tuple[str, ...] = ("10min",)  # the labeled splits fine-tuned on
    voice: str = ""  # Asterisk: the voice folder under usr/share/asterisk/sounds


def _asterisk(lang: str, voice: str, licence: str) -> Corpus:
    return Corpus(lang, f"Asterisk core sounds, {lang} ({voice})", lang,
                  (f"asterisk-core-sounds-{lang}", f"asterisk-core-sounds-{lang}-wav"), licence, voice=voice)


CORPORA = {c.name: c for c in (
    Corpus("nl", "Fish Fillets NG voice acting, Dutch", "nl", ("fillets-ng-data", "fillets-ng-data-nl"), "GPL-2",
           splits=("10min", "1h")),
    _asterisk("en", "en_US_f_Allison", "CC-BY-SA-3.0"),
    _asterisk("es", "es_MX_f_Allison", "CC-BY-SA-3.0"),
    _asterisk("fr", "fr_CA_f_June", "CC-BY-SA-3.0"),
    _asterisk("it", "it_IT_m_Carlo", "CC-BY-3.0"),
    _asterisk("ru", "ru_RU_f_IvrvoiceRU", "CC-BY-3.0"),
)}

DEV_SHARE = TEST_SHARE = 0.1  # the utterance-level held-out sets the writers draw
SPLIT_SEED = 0


def fetch(cache: Path, packages: tuple[str, ...], say=print) -> Path:
    """Download (``apt-get download``) and unpack (``dpkg-deb -x``) ``packages`` into ``cache``; what is there
    already is kept. Returns the unpacked root (``cache/root``)."""
    debs, root = cache / "debs", cache / "root"
    debs.mkdir(parents=True, exist_ok=True)
    for pkg in packages:
        marker = root / ".unpacked" / pkg
        if marker.is_file():
            continue
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if not found:
            if shutil.which("apt-get") is None:
                raise LowresError(f"apt-get is not on this machine, and {debs} holds no {pkg}_*.deb. Download the "
                                  f"Debian package {pkg} (https://packages.debian.org/bookworm/{pkg}) into {debs}, "
                                  "then run this again.")
            say(f"apt-get download {pkg}")
            r = subprocess.run(["apt-get", "download", pkg], cwd=debs, capture_output=True, text=True)
            found = sorted(debs.glob(f"{pkg}_*.deb"))
            if r.returncode or not found:
                raise LowresError(f"`apt-get download {pkg}` failed: {(r.stderr or r.stdout).strip()[-400:]}. Where "
                                  "it says 'Unable to locate package', run `apt-get update` (as root) once: the "
                                  "packages are in Debian main.")
        if shutil.which("dpkg-deb") is None:
            raise LowresError(f"dpkg-deb is not on this machine: unpack {found[-1]} into {root} yourself (`ar x` "
                              f"the .deb, then untar data.tar.*), touch {marker}, and run this again.")
        subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(found[-1].name + "\n")
    return root


# Fish Fillets NG: script/LEVEL/dialogs_nl.lua holds dialogId("ID", "FONT", "English") then dialogStr("Dutch");
# the audio is sound/LEVEL/nl/ID.ogg. The font names the character who speaks.
_LUA_STRING = r'"((?:[^"\\]|\\.)*)"'
_DIALOG = re.compile(r"dialogId\(\s*" + _LUA_STRING + r"\s*,\s*" + _LUA_STRING + r"\s*,\s*" + _LUA_STRING
                     + r"\s*\)\s*dialogStr\(\s*" + _LUA_STRING + r"\s*\)", re.S)


def _lua_unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": " ", "t": " "}.get(m.group(1), m.group(1)), s)


def parse_fillets(lua_text: str) -> list[tuple[str, str, str]]:
    """(id, character, Dutch text) for each dialogId/dialogStr pair of a ``dialogs_nl.lua``."""
    return [(m.group(1), m.group(2).removeprefix("font_"), _lua_unescape(m.group(4)).strip())
            for m in _DIALOG.finditer(lua_text)]


def parse_asterisk(text: str) -> list[tuple[str, str]]:
    """(id, text) for each ``id: text`` line of a ``core-sounds-LANG.txt`` (``;`` comments, blank lines and a
    byte-order mark skipped; ids may hold ``/``)."""
    out = []
    for line in text.lstrip("\ufeff").splitlines():
        m = re.match(r"^\s*([^\s:;][^\s:]*)\s*:\s*(.*?)\s*$", line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def clean_asterisk(text: str) -> str:
    """The spoken words of an Asterisk transcript: ``[...]`` and ``<...>`` mark non-speech (``[beep]``,
    ``dollar [$]``, ``<beep ascending>``) and ``(...)`` the translators' comments (``(enfatico)``, ``(You are now
    muted.)``, ``(2 seconds of silence)``): all are removed. Empty when the prompt is not speech."""
    text = re.sub(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)", " ", text)
    return " ".join(text.split())


def utterance_splits(ids: list[str], seed: int = SPLIT_SEED, dev: float = DEV_SHARE,
                     test: float = TEST_SHARE) -> dict[str, str]:
    """A seeded utterance-level train/dev/test split (the corpora have none of their own)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_test, n_dev = round(len(order) * test), round(len(order) * dev)
    return {i: "test" if k < n_test else "dev" if k < n_test + n_dev else "train" for k, i in enumerate(order)}


def write_corpus(corpus: Corpus, root: Path, folder: Path) -> dict:
    """``folder/corpus.jsonl`` (id, audio, text, speaker, split) and ``folder/unlabeled/`` (links to every audio
    file of the language; prepare leaves the dev/test ones out). Returns counts of what was written and left out."""
    if corpus.name == "nl":
        base = root / "usr/share/games/fillets-ng"
        rows, no_audio = [], 0
        for lua in sorted((base / "script").glob("*/dialogs_nl.lua")):
            level = lua.parent.name
            for uid, who, text in parse_fillets(lua.read_text(encoding="utf-8")):
                audio = base / "sound" / level / "nl" / f"{uid}.ogg"
                if not audio.is_file():
                    no_audio += 1
                    continue
                rows.append({"id": f"{level}/{uid}", "audio": str(audio), "text": text, "speaker": who})
        audio_files = sorted((base / "sound").glob("*/nl/*.ogg"))
        skipped = {"text_without_audio": no_audio}
    else:
        doc = root / f"usr/share/doc/asterisk-core-sounds-{corpus.lang}/core-sounds-{corpus.lang}.txt.gz"
        sounds = root / "usr/share/asterisk/sounds" / corpus.voice
        rows, skipped = [], {"text_without_audio": 0, "not_speech": 0}
        for uid, raw in parse_asterisk(gzip.decompress(doc.read_bytes()).decode("utf-8", errors="replace")):
            audio = sounds / f"{uid}.wav"
            text = clean_asterisk(raw)
            if not audio.is_file():
                skipped["text_without_audio"] += 1
            elif not text:
                skipped["not_speech"] += 1
            else:
                rows.append({"id": uid, "audio": str(audio), "text": text, "speaker": corpus.voice})
        audio_files = sorted(sounds.rglob("*.wav"))
    split = utterance_splits([r["id"] for r in rows])
    for r in rows:
        r["split"] = split[r["id"]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                         encoding="utf-8")
    links = folder / "unlabeled"
    if links.exists():
        shutil.rmtree(links)
    links.mkdir()
    for k, path in enumerate(audio_files):
        (links / f"{k:05d}_{path.name}").symlink_to(path)
    return {"utterances": len(rows), "unlabeled_files": len(audio_files), **skipped}
