"""Transcript normalisation, shared by ``prepare``, training, evaluation and the language model.

Pure functions. The steps, in order:

1. control and invisible format characters (BOM, bidi marks, zero-width space) go; ZWJ/ZWNJ stay,
   since Persian and Indic spellings need them;
2. Unicode NFC, so that per-language rules match whatever the input's composition;
3. per-language rules (plain or regex replacements from a small TOML file, see ``lowres/data/lang/``);
4. apostrophe variants between two letters (’ ‘ ´ ` ′ ʹ) become ``'`` and are kept (``keep_apostrophes``);
5. Unicode NFKC (default) or NFC: decomposed and precomposed spellings give the same result;
6. lower-casing (``lowercase``; ``str.lower``, not ``casefold``, so ß stays ß);
7. punctuation (Unicode category P*) and symbols (S*) become spaces, except characters the rules keep;
   letters (L*, including modifier letters such as the Hawaiian ʻokina U+02BB), combining marks (M*)
   and numbers (N*) are never touched — no diacritic is ever stripped;
8. combining marks with no base letter, and ZWJ/ZWNJ with no letter or mark before them (what is left of
   an emoji sequence), are dropped; digits are kept (default) or dropped;
9. whitespace is collapsed.
"""

from __future__ import annotations

import tomllib
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import regex

from lowres import LowresError

# Invisible format characters (category Cf) that carry spelling: zero width non-joiner / joiner.
_KEEP_FORMAT = frozenset("\u200c\u200d")
_APOSTROPHES = "'\u2019\u2018\u00b4`\u2032\u02b9"
_APOSTROPHE_IN_WORD = regex.compile(rf"(?<=[\p{{L}}\p{{M}}])[{_APOSTROPHES}](?=\p{{L}})")
_SPACES = regex.compile(r"\s+")
# combining marks and joiners that start a word, and joiners after anything but a letter or mark
_LONE_MARKS = regex.compile(r"(?:^|(?<=\s))[\p{M}\u200c\u200d]+|(?<![\p{L}\p{M}])[\u200c\u200d]+")


@dataclass(frozen=True)
class Replacement:
    old: str
    new: str
    is_regex: bool = False


@dataclass(frozen=True)
class LanguageRules:
    """Per-language extras, loaded from TOML (see :func:`load_rules`)."""

    name: str = ""
    replacements: tuple[Replacement, ...] = ()
    keep: frozenset[str] = frozenset()  # punctuation/symbol characters that are part of the spelling
    source: str = field(default="", compare=False, repr=False)  # the TOML text (saved with prepared data)


@dataclass(frozen=True)
class TextConfig:
    unicode_form: str = "NFKC"  # NFKC (default) or NFC
    lowercase: bool = True  # --keep-case turns this off
    keep_apostrophes: bool = True  # apostrophes between letters, e.g. Swahili ng'ombe
    digits: str = "keep"  # keep | drop (digits are always counted in the prepare report)
    rules: LanguageRules = field(default_factory=LanguageRules)

    def __post_init__(self):
        if self.unicode_form not in ("NFKC", "NFC"):
            raise LowresError(f"unicode form must be NFKC or NFC, not {self.unicode_form!r}")
        if self.digits not in ("keep", "drop"):
            raise LowresError(f"digits must be 'keep' or 'drop', not {self.digits!r}")


def normalize(text: str, cfg: TextConfig = TextConfig()) -> str:
    """Normalise one transcript. The result is empty or words separated by single spaces."""
    text = "".join(_clean_char(c) for c in text)
    text = unicodedata.normalize("NFC", text)
    for rep in cfg.rules.replacements:
        text = regex.sub(rep.old, rep.new, text) if rep.is_regex else text.replace(rep.old, rep.new)
    if cfg.keep_apostrophes:
        text = _APOSTROPHE_IN_WORD.sub("\x00", text)  # placeholder survives the punctuation step
    text = unicodedata.normalize(cfg.unicode_form, text)
    if cfg.lowercase:
        text = text.lower()
    keep = cfg.rules.keep
    drop_digits = cfg.digits == "drop"
    out = []
    for c in text:
        if c == "\x00":
            out.append("'")
            continue
        cat = unicodedata.category(c)
        if c in keep:
            out.append(c)
        elif cat[0] in "PSZ" or (cat[0] == "C" and c not in _KEEP_FORMAT):
            out.append(" ")
        elif drop_digits and cat == "Nd":
            out.append(" ")
        else:
            out.append(c)
    text = _LONE_MARKS.sub("", "".join(out))
    return _SPACES.sub(" ", text).strip()


def _clean_char(c: str) -> str:
    cat = unicodedata.category(c)
    if cat == "Cc":  # tabs, newlines, NUL, ... are word breaks
        return " "
    if cat == "Cf" and c not in _KEEP_FORMAT:  # BOM, bidi marks, soft hyphen, zero width space
        return ""
    return c


def has_digit(text: str) -> bool:
    return any(unicodedata.category(c) == "Nd" for c in text)


def load_rules(source: str | Path) -> LanguageRules:
    """Rules from a TOML file path, or the name of a file shipped in ``lowres/data/lang/`` (e.g. ``haw``).

    Format::

        description = "Hawaiian"
        keep = ["-"]                      # characters never removed as punctuation
        [[replace]]                       # applied in order, after NFC, before lower-casing
        from = "‘"
        to = "ʻ"
        # regex = true                    # 'from' is a regular expression (the `regex` module)
    """
    path = Path(source)
    if path.suffix != ".toml" and not path.exists():
        shipped = resources.files("lowres.data.lang") / f"{source}.toml"
        if not shipped.is_file():
            raise LowresError(
                f"No text rules named {source!r}. Pass a TOML file path, or one of: "
                f"{', '.join(available_rules()) or '(none shipped)'}."
            )
        data_text = shipped.read_text(encoding="utf-8")
        name = str(source)
    else:
        if not path.is_file():
            raise LowresError(f"Text rules file not found: {path}. Pass an existing .toml file (see README).")
        data_text = path.read_text(encoding="utf-8")
        name = path.stem
    return parse_rules(data_text, name)


@lru_cache(maxsize=1)
def available_rules() -> tuple[str, ...]:
    folder = resources.files("lowres.data.lang")
    return tuple(sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml")))


def parse_rules(toml_text: str, name: str = "") -> LanguageRules:
    try:
        data = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        raise LowresError(f"Text rules {name!r} are not valid TOML: {exc}") from None
    reps = []
    for i, item in enumerate(data.get("replace", []), 1):
        if not isinstance(item, dict) or "from" not in item or "to" not in item:
            raise LowresError(f"Text rules {name!r}: [[replace]] entry {i} needs 'from' and 'to'.")
        old = unicodedata.normalize("NFC", str(item["from"]))
        is_regex = bool(item.get("regex", False))
        if is_regex:
            try:
                regex.compile(old)
            except regex.error as exc:
                raise LowresError(f"Text rules {name!r}: [[replace]] entry {i}: bad regex: {exc}") from None
        reps.append(Replacement(old, unicodedata.normalize("NFC", str(item["to"])), is_regex))
    keep = data.get("keep", [])
    if not isinstance(keep, list) or not all(isinstance(k, str) and len(k) == 1 for k in keep):
        raise LowresError(f"Text rules {name!r}: 'keep' must be a list of single characters.")
    return LanguageRules(name=name, replacements=tuple(reps), keep=frozenset(keep), source=toml_text)


def text_config_dict(cfg: TextConfig) -> dict:
    """What a run needs to normalise text exactly as ``prepare`` did (rules included, as TOML text)."""
    return {"unicode_form": cfg.unicode_form, "lowercase": cfg.lowercase, "keep_apostrophes": cfg.keep_apostrophes,
            "digits": cfg.digits, "rules_name": cfg.rules.name, "rules_toml": cfg.rules.source}


def text_config_from_dict(d: dict | None) -> TextConfig:
    d = d or {}
    rules = parse_rules(d["rules_toml"], d.get("rules_name", "")) if d.get("rules_toml") else LanguageRules()
    return TextConfig(unicode_form=d.get("unicode_form", "NFKC"), lowercase=d.get("lowercase", True),
                      keep_apostrophes=d.get("keep_apostrophes", True), digits=d.get("digits", "keep"), rules=rules)
