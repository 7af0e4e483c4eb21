"""Word lists for synthetic sentences: the shipped ``lowres/data/lang/{lang}_words.txt`` or the user's file."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lowres import LowresError
from lowres.data.text import TextConfig, available_rules, load_rules, normalize

# Fewer distinct words than this and the sentences repeat themselves too much to be a test of anything.
MIN_WORDS = 50


@dataclass(frozen=True)
class Lexicon:
    words: tuple[str, ...]  # distinct, sorted
    source: str  # where the words come from (file, upstream source, licence)
    path: str  # the file read


def shipped_lexicons() -> tuple[str, ...]:
    """Language codes with a word list shipped in ``lowres/data/lang/`` (``sw``)."""
    folder = resources.files("lowres.data.lang")
    return tuple(sorted(p.name[: -len("_words.txt")] for p in folder.iterdir() if p.name.endswith("_words.txt")))


def load_lexicon(lang: str, words: str | Path | None = None) -> Lexicon:
    """The words for ``lang``: from ``words`` (a word list or running text) when given, else the shipped list."""
    if words is not None:
        return _user_lexicon(lang, Path(words))
    shipped = resources.files("lowres.data.lang") / f"{lang}_words.txt"
    if not shipped.is_file():
        have = ", ".join(shipped_lexicons()) or "none"
        raise LowresError(
            f"lowres ships no word list for {lang!r} (only for: {have}). Pass --words FILE: a word list "
            "(one word a line) or any UTF-8 text in the language; its words are extracted and normalised, "
            f"and sentences of 3-12 of them are spoken. At least {MIN_WORDS} distinct words are needed."
        )
    lines = shipped.read_text(encoding="utf-8").splitlines()
    found = sorted({ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")})
    name = f"lowres/data/lang/{lang}_words.txt"
    return Lexicon(tuple(found), " ".join([name + ".", *_header_fields(lines, ("SOURCE:", "LICENCE:"))]), name)


def _header_fields(lines: list[str], tags: tuple[str, ...]) -> list[str]:
    """The ``# TAG: ...`` comment fields of a word list, each with its indented continuation lines."""
    fields: list[str] = []
    current: list[str] | None = None
    for line in lines:
        if not line.startswith("#"):
            break
        body = line[1:]
        if body.strip().startswith(tags):
            current = [body.strip()]
            fields.append("")
        elif current is not None and body.startswith("   "):
            current.append(body.strip())
        else:
            current = None
        if current is not None:
            fields[-1] = " ".join(current)
    return fields


def _user_lexicon(lang: str, path: Path) -> Lexicon:
    if not path.is_file():
        raise LowresError(f"--words {path} is not a file. Give a word list (one word a line) or a UTF-8 text file "
                          "in the language.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LowresError(f"--words {path} is not UTF-8 text ({exc.reason} at byte {exc.start}). Save it as UTF-8 "
                          "and try again.") from None
    rules = load_rules(lang) if lang in available_rules() else None
    cfg = TextConfig(rules=rules) if rules is not None else TextConfig()
    found: set[str] = set()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for word in normalize(line, cfg).split():
            if _speakable(word):
                found.add(word)
    if len(found) < MIN_WORDS:
        raise LowresError(
            f"--words {path} holds {len(found)} distinct usable words; at least {MIN_WORDS} are needed (words with "
            "digits are left out, since eSpeak would read the digits as numbers). Give a longer word list or text."
        )
    return Lexicon(tuple(sorted(found)), f"the user's file {path}", str(path))


def _speakable(word: str) -> bool:
    """Letters (with their marks and apostrophes) only: a digit or symbol would be read out differently."""
    has_letter = False
    for c in word:
        cat = unicodedata.category(c)
        if cat[0] == "L":
            has_letter = True
        elif cat[0] != "M" and c != "'" and c not in "\u200c\u200d":
            return False
    return has_letter
