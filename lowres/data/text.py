"""Transcript normalisation, shared by ``prepare``, training, evaluation and the language model.

Pure functions. The steps, in order:

1. control and invisible format characters (BOM, bidi marks, zero-width space) go; ZWJ/ZWNJ stay,
   since Persian and Indic spellings need them;
2. Unicode NFC, so that per-language rules match whatever the input's composition;
3. per-language rules (plain or regex replacements from a small TOML file, see ``lowres/data/lang/``);
   then, with ``digits = "spell"``, every digit becomes the rules' word for it (``digits`` in the TOML);
4. apostrophe variants between two letters (’ ‘ ´ ` ′ ʹ) become ``'`` and are kept (``keep_apostrophes``);
5. Unicode NFKC (default) or NFC: decomposed and precomposed spellings give the same result;
6. lower-casing (``lowercase``; ``str.lower``, not ``casefold``, so ß stays ß);
7. punctuation (Unicode category P*) and symbols (S*) become spaces, except characters the rules keep;
   letters (L*, including modifier letters such as the Hawaiian ʻokina U+02BB), combining marks (M*)
   and numbers (N*) are never touched — no diacritic is ever stripped;
8. combining marks with no base letter, and ZWJ/ZWNJ with no letter or mark before them (what is left of
   an emoji sequence), are dropped; digits are kept (default) or, with ``digits = "drop"``, dropped
   (``prepare`` leaves such utterances out instead: their transcript would no longer match the audio);
9. whitespace is collapsed.
"""

from __future__ import annotations

import tomllib
import unicodedata
from collections import Counter
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
    digit_words: tuple[str, ...] = ()  # the words for 0-9, for digits = "spell" (empty: the rules have none)
    source: str = field(default="", compare=False, repr=False)  # the TOML text (saved with prepared data)


@dataclass(frozen=True)
class TextConfig:
    unicode_form: str = "NFKC"  # NFKC (default) or NFC
    lowercase: bool = True  # --keep-case turns this off
    keep_apostrophes: bool = True  # apostrophes between letters, e.g. Swahili ng'ombe
    digits: str = "keep"  # keep | spell | drop (see DIGIT_POLICIES; always counted in the prepare report)
    rules: LanguageRules = field(default_factory=LanguageRules)

    def __post_init__(self):
        if self.unicode_form not in ("NFKC", "NFC"):
            raise LowresError(f"unicode form must be NFKC or NFC, not {self.unicode_form!r}")
        if self.digits not in DIGIT_POLICIES:
            raise LowresError(f"digits must be one of {', '.join(DIGIT_POLICIES)}, not {self.digits!r}")
        if self.digits == "spell" and not self.rules.digit_words:
            have = [n for n in available_rules() if load_rules(n).digit_words]
            raise LowresError(
                "--digits spell needs the words for 0-9 of the language: "
                + (f"the text rules {self.rules.name!r} have none" if self.rules.name else "no text rules are given")
                + f". Pass --lang with one of {', '.join(have)}, or your own --text-rules TOML with a line "
                "digits = [\"zero\", \"one\", ..., \"nine\"] in the language.")


# What each --digits policy does with a digit in a transcript. The transcript must still say what the audio
# says, so "drop" leaves the utterance out rather than the digit (a transcript without its spoken number
# would teach CTC to map the number's sound to nothing).
DIGIT_POLICIES = {
    "keep": "kept as digit symbols (the model learns to write '1' for the spoken number)",
    "spell": "spelt out digit by digit with the text rules' words for 0-9 ('737' -> 'seven three seven': right "
             "for codes, phone numbers and single digits; amounts like '12' need [[replace]] rules before it)",
    "drop": "the utterance is left out (prepare; in other text, such as an LM's, the digits are removed)",
}


def normalize(text: str, cfg: TextConfig = TextConfig()) -> str:
    """Normalise one transcript. The result is empty or words separated by single spaces."""
    text = _apply_rules(text, cfg)
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


def _apply_rules(text: str, cfg: TextConfig) -> str:
    """Steps 1-3: invisible characters out, NFC, the language's rules, digits spelt out where asked."""
    text = unicodedata.normalize("NFC", "".join(_clean_char(c) for c in text))
    for rep in cfg.rules.replacements:
        text = regex.sub(rep.old, rep.new, text) if rep.is_regex else text.replace(rep.old, rep.new)
    if cfg.digits == "spell":
        words = cfg.rules.digit_words
        text = _DIGIT.sub(lambda m: f" {words[unicodedata.digit(m.group())]} ", text)
    return text


_DIGIT = regex.compile(r"\p{Nd}")  # a decimal digit of any script (unicodedata.digit gives its value)


def _clean_char(c: str) -> str:
    cat = unicodedata.category(c)
    if cat == "Cc":  # tabs, newlines, NUL, ... are word breaks
        return " "
    if cat == "Cf" and c not in _KEEP_FORMAT:  # BOM, bidi marks, soft hyphen, zero width space
        return ""
    return c


def has_digit(text: str) -> bool:
    return any(unicodedata.category(c) == "Nd" for c in text)


def says_digits(raw: str, cfg: TextConfig) -> bool:
    """Whether ``raw`` holds a digit once the language's rules have run (rules may spell numbers)."""
    return has_digit(_apply_rules(raw, cfg))


def load_rules(source: str | Path) -> LanguageRules:
    """Rules from a TOML file path, or the name of a file shipped in ``lowres/data/lang/`` (e.g. ``haw``).

    Format::

        description = "Hawaiian"
        keep = ["-"]                      # characters never removed as punctuation
        digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
                                          # the words --digits spell writes for 0-9
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
    digits = data.get("digits", [])
    if not isinstance(digits, list) or (digits and (len(digits) != 10 or not all(
            isinstance(d, str) and d.strip() for d in digits))):
        raise LowresError(f"Text rules {name!r}: 'digits' must be the ten words for 0, 1, ..., 9, in order.")
    return LanguageRules(name=name, replacements=tuple(reps), keep=frozenset(keep),
                         digit_words=tuple(unicodedata.normalize("NFC", d.strip()) for d in digits),
                         source=toml_text)


def text_config_dict(cfg: TextConfig) -> dict:
    """What a run needs to normalise text exactly as ``prepare`` did (rules included, as TOML text)."""
    return {"unicode_form": cfg.unicode_form, "lowercase": cfg.lowercase, "keep_apostrophes": cfg.keep_apostrophes,
            "digits": cfg.digits, "rules_name": cfg.rules.name, "rules_toml": cfg.rules.source}


def text_config_from_dict(d: dict | None) -> TextConfig:
    d = d or {}
    rules = parse_rules(d["rules_toml"], d.get("rules_name", "")) if d.get("rules_toml") else LanguageRules()
    return TextConfig(unicode_form=d.get("unicode_form", "NFKC"), lowercase=d.get("lowercase", True),
                      keep_apostrophes=d.get("keep_apostrophes", True), digits=d.get("digits", "keep"), rules=rules)


# ---------------------------------------------------------------------------------------------------
# what normalisation did to a corpus, for prepare's report

# symbols that are usually said aloud, so that removing them leaves a transcript shorter than its audio
SPOKEN_SYMBOLS = frozenset("#%&*+=@$€£¥§°±×÷<>~^|/\\")
_BRACKETED = regex.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>|\{[^}]*\}")
_ACRONYM = regex.compile(r"(?<![\p{L}\p{M}])\p{Lu}{2,}(?![\p{L}\p{M}])")
_EXAMPLES = 3


@dataclass
class TextStats:
    """Counts of what normalisation changed in a corpus's transcripts, for ``prepare_report.json`` and the
    summary: characters removed as punctuation and as symbols (those usually spoken flagged), text in
    brackets, all-capital words, digits (before any ``--digits`` policy) and the scripts of the letters kept.
    Counting never changes a transcript (:func:`normalize` does that)."""

    cfg: TextConfig = field(default_factory=TextConfig)
    transcripts: int = 0
    punctuation: Counter = field(default_factory=Counter)
    symbols: Counter = field(default_factory=Counter)
    bracketed: list = field(default_factory=lambda: [0, []])  # transcripts, examples
    acronyms: list = field(default_factory=lambda: [0, []])
    digits: int = 0  # transcripts with a digit before the policy
    digits_kept: int = 0  # ... and after normalisation
    scripts: Counter = field(default_factory=Counter)  # letters per script, in the normalised text
    script_transcripts: Counter = field(default_factory=Counter)

    def add(self, raw: str, normalized: str) -> None:
        self.transcripts += 1
        if has_digit(raw):
            self.digits += 1
        if has_digit(normalized):
            self.digits_kept += 1
        _note(self.bracketed, [m.group() for m in _BRACKETED.finditer(raw)])
        upper = sum(c.isupper() for c in raw)
        if upper <= sum(c.islower() for c in raw):  # an all-capitals corpus (LibriSpeech) has no acronyms to find
            _note(self.acronyms, [m.group() for m in _ACRONYM.finditer(raw)])
        ruled = _apply_rules(raw, self.cfg)
        if self.cfg.keep_apostrophes:
            ruled = _APOSTROPHE_IN_WORD.sub("", ruled)
        keep = self.cfg.rules.keep
        for c in ruled:
            cat = unicodedata.category(c)[0]
            if c in keep or cat not in "PS":
                continue
            (self.punctuation if cat == "P" else self.symbols)[c] += 1
        seen = set()
        for c in normalized:
            if unicodedata.category(c) in ("Lu", "Ll", "Lt", "Lo"):
                script = unicodedata.name(c, "UNKNOWN").split(" ")[0]
                self.scripts[script] += 1
                seen.add(script)
        self.script_transcripts.update(seen)

    def report(self) -> dict:
        letters = sum(self.scripts.values()) or 1
        return {
            "transcripts": self.transcripts,
            "punctuation_removed": dict(self.punctuation.most_common(30)),
            "symbols_removed": dict(self.symbols.most_common(30)),
            "spoken_symbols_removed": self._spoken(),
            "bracketed": {"transcripts": self.bracketed[0], "examples": self.bracketed[1]},
            "acronyms": {"transcripts": self.acronyms[0], "examples": self.acronyms[1]},
            "digits": {"transcripts_with_digits": self.digits, "policy": self.cfg.digits,
                       "transcripts_with_digits_after": self.digits_kept,
                       "what_the_policy_does": DIGIT_POLICIES[self.cfg.digits]},
            "scripts": {k: {"letters": v, "share": round(v / letters, 4), "transcripts": self.script_transcripts[k]}
                        for k, v in self.scripts.most_common()},
        }

    def _spoken(self) -> dict[str, int]:
        """Removed characters that are usually said aloud (# and % are punctuation to Unicode, + a symbol)."""
        return {c: n for c, n in (self.punctuation + self.symbols).most_common() if c in SPOKEN_SYMBOLS}

    def advice(self) -> list[str]:
        """One line for each thing in the transcripts that a text rule (or a flag) would serve better."""
        out = []
        if self.digits:
            what = {"keep": "kept as digits; --digits spell writes them as words (--lang or your rules' digit words), "
                            "--digits drop leaves those utterances out",
                    "spell": "spelt out with the rules' digit words",
                    "drop": "those utterances are left out"}[self.cfg.digits]
            out.append(f"digits: {self.digits} transcript(s) hold digits: {what}")
        spoken = self._spoken()
        if spoken:
            listed = ", ".join(f"{c} {n}" for c, n in spoken.items())
            out.append(f"symbols removed that are usually spoken: {listed}; a [[replace]] rule in --text-rules "
                       "writes them as the words said (e.g. from = \"%\", to = \" percent \")")
        if self.bracketed[0]:
            out.append(f"{self.bracketed[0]} transcript(s) hold text in brackets (e.g. "
                       f"{', '.join(self.bracketed[1])}): its words are kept; if it marks noises or comments rather "
                       "than speech, remove it with a rule (from = '\\[[^\\]]*\\]', to = \" \", regex = true)")
        if self.acronyms[0]:
            out.append(f"{self.acronyms[0]} transcript(s) hold all-capital words (e.g. {', '.join(self.acronyms[1])}): "
                       "they are written as letters; where the language says them as words, spell them with rules")
        if len(self.scripts) > 1:
            letters = sum(self.scripts.values())
            shares = ", ".join(f"{k.title()} {100 * v / letters:.1f}% ({self.script_transcripts[k]} transcripts)"
                               for k, v in self.scripts.most_common())
            out.append(f"letters of {len(self.scripts)} scripts: {shares}")
        return out


def _note(slot: list, found: list[str]) -> None:
    if not found:
        return
    slot[0] += 1
    for f in found:
        if len(slot[1]) < _EXAMPLES and f not in slot[1]:
            slot[1].append(f[:40])


_SENTENCE_END = regex.compile(r"(?<=[.!?\u2026\u3002\u0964])\s+")  # . ! ? … 。 ।  followed by space


def read_sentences(path: Path) -> list[str]:
    """The sentences of a UTF-8 text file: its lines, each split after sentence-final punctuation followed by
    a space; blank ones left out. Raw text: normalise each with :func:`normalize`."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LowresError(f"{path}: no such text file.") from None
    except UnicodeDecodeError as exc:
        raise LowresError(f"{path}: not UTF-8 text (byte {exc.start}). Save it as UTF-8.") from None
    return [s for line in text.splitlines() for s in sentences_of(line)]


def sentences_of(line: str) -> list[str]:
    """One line's sentences: split after sentence-final punctuation followed by a space; blank ones left out."""
    return [s.strip() for s in _SENTENCE_END.split(line) if s.strip()]
