import unicodedata

import pytest

from lowres import LowresError
from lowres.data.text import TextConfig, load_rules, normalize, parse_rules


def test_defaults_lowercase_strip_punctuation_collapse_spaces():
    assert normalize("  Habari,   ya LEO?!  ") == "habari ya leo"
    assert normalize("Hello\tworld\nagain") == "hello world again"


def test_punctuation_and_symbols_by_category_become_word_breaks():
    assert normalize("a-b/c…d«e»f") == "a b c d e f"
    assert normalize("price: $5 + 10% 🙂") == "price 5 10"
    assert normalize("word,word") == "word word"


def test_apostrophes_inside_words_kept_and_unified():
    assert normalize("Ng'ombe na ng’ambo") == "ng'ombe na ng'ambo"
    assert normalize("'quoted' words") == "quoted words"  # quotes around words go
    assert normalize("don´t") == "don't"  # spacing acute used as an apostrophe
    assert normalize("ng'ombe", TextConfig(keep_apostrophes=False)) == "ng ombe"


def test_hawaiian_okina_survives():
    okina = "\u02bb"
    assert normalize(f"Hawai{okina}i") == f"hawai{okina}i"
    assert normalize(f"{okina}Ōlelo") == f"{okina}ōlelo"


def test_hawaiian_rules_turn_quotes_into_okina():
    rules = load_rules("haw")
    assert normalize("Hawai‘i", TextConfig(rules=rules)) == "hawaiʻi"
    assert normalize("Hawai'i", TextConfig(rules=rules)) == "hawaiʻi"


def test_combining_marks_never_stripped_and_compositions_agree():
    precomposed = "ɔ́kɔ̀ ŋ́ ñe'ẽ"
    decomposed = unicodedata.normalize("NFD", precomposed)
    assert decomposed != precomposed
    assert normalize(decomposed) == normalize(precomposed)
    assert "\u0301" in unicodedata.normalize("NFD", normalize(precomposed))  # the tone mark is still there
    guarani = "g\u0303uahẽ"  # g̃ has no precomposed form
    assert normalize(guarani) == unicodedata.normalize("NFKC", guarani)


def test_lone_combining_marks_are_dropped():
    assert normalize("\u0301abc") == "abc"
    assert normalize("ab \u0300 cd") == "ab cd"


def test_nfkc_vs_nfc():
    assert normalize("ﬁsh ²") == "fish 2"
    assert normalize("ﬁsh", TextConfig(unicode_form="NFC")) == "ﬁsh"


def test_keep_case_and_digits():
    assert normalize("Dar es Salaam 2024", TextConfig(lowercase=False)) == "Dar es Salaam 2024"
    assert normalize("miaka 20 iliyopita", TextConfig(digits="drop")) == "miaka iliyopita"


def test_control_bom_bidi_and_zero_width_characters():
    assert normalize("\ufeffhabari\u200b leo\u200e") == "habari leo"
    # ZWNJ is part of Persian spelling and must stay
    assert normalize("می\u200cخواهم") == "می\u200cخواهم"
    assert normalize("abc\x00def\x07") == "abc def"


def test_right_to_left_text_kept():
    assert normalize("שָׁלוֹם, עוֹלָם!") == "שָׁלוֹם עוֹלָם"


def test_empty_after_normalisation():
    assert normalize("?!... ---") == ""
    assert normalize("🙂🙂") == ""


def test_rules_file(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('keep = ["-"]\n[[replace]]\nfrom = "x"\nto = "ks"\n', encoding="utf-8")
    rules = load_rules(path)
    assert normalize("X-ray box", TextConfig(rules=rules)) == "x-ray boks"  # rules run before lower-casing
    with pytest.raises(LowresError, match="from"):
        parse_rules("[[replace]]\nto = 'a'\n")
    with pytest.raises(LowresError, match="No text rules"):
        load_rules("no-such-language")
    with pytest.raises(LowresError, match="not found"):
        load_rules(tmp_path / "missing.toml")


def test_bad_config_values():
    with pytest.raises(LowresError):
        TextConfig(unicode_form="NFD")
    with pytest.raises(LowresError, match="--digits spell needs the words for 0-9.*--lang with one of .*en"):
        TextConfig(digits="spell")  # no rules, so no digit words
    with pytest.raises(LowresError, match="one of keep, spell, drop"):
        TextConfig(digits="words")
    with pytest.raises(LowresError, match="ten words"):
        parse_rules('digits = ["one", "two"]')


# What the real corpora of benchmarks/real_speech.py hold (Asterisk prompts, Dutch voice acting, Russian IVR).
REAL = [
    ("Press #5 to record", "press 5 to record"),
    ("Het heeft je %1 uur gekost", "het heeft je 1 uur gekost"),
    ("Si c'est exact appuyer…", "si c'est exact appuyer"),
    ("Вы – единственный участник", "вы единственный участник"),
    ("Переадресация если «недоступен»", "переадресация если недоступен"),
    ("Dat wordt dan „Schelpdier“ genoemd", "dat wordt dan schelpdier genoemd"),
    ("the PBX, Mr. B.’s yard", "the pbx mr b s yard"),  # an apostrophe after a full stop is not inside a word
]


@pytest.mark.parametrize("raw,expected", REAL)
def test_real_transcript_symbols(raw, expected):
    assert normalize(raw) == expected


def test_digits_spelt_with_the_rules_words():
    en = TextConfig(digits="spell", rules=load_rules("en"))
    assert normalize("Press #5, then 737", en) == "press five then seven three seven"
    assert normalize("5% off & 2+2", en) == "five percent off and two plus two"  # the rules say %, & and +
    ru = TextConfig(digits="spell", rules=load_rules("ru"))
    assert normalize("Ёлка: нажмите 1", ru) == "елка нажмите один"
    assert normalize("٣ apples", en) == "three apples"  # a digit of another script has its value
    nl = TextConfig(digits="drop", rules=load_rules("nl"))
    assert normalize("bij steiger 5", nl) == "bij steiger"  # (prepare leaves such an utterance out instead)
    for name in ("en", "es", "fr", "it", "nl", "ru", "sw", "tr"):
        assert len(load_rules(name).digit_words) == 10, name


def test_text_stats_count_what_normalisation_did():
    from lowres.data.text import TextStats

    cfg = TextConfig(rules=load_rules("en"))
    stats = TextStats(cfg)
    for raw in ("Press # to exit [beep] (2 seconds of silence)", "Вы – единственный «участник» PBX", "5% of 3Dfx",
                "That's it…"):
        stats.add(raw, normalize(raw, cfg))
    report = stats.report()
    assert report["transcripts"] == 4
    assert report["spoken_symbols_removed"] == {"#": 1}  # % is said by the en rules, so not removed
    assert report["punctuation_removed"]["«"] == 1 and report["punctuation_removed"]["…"] == 1
    assert "'" not in report["punctuation_removed"]  # the apostrophe of that's is kept, not removed
    assert report["bracketed"] == {"transcripts": 1, "examples": ["[beep]", "(2 seconds of silence)"]}
    assert report["acronyms"] == {"transcripts": 1, "examples": ["PBX"]}
    assert report["digits"]["transcripts_with_digits"] == 2 and report["digits"]["policy"] == "keep"
    assert set(report["scripts"]) == {"LATIN", "CYRILLIC"} and report["scripts"]["CYRILLIC"]["transcripts"] == 1
    advice = "\n".join(stats.advice())
    assert "usually spoken: # 1" in advice and "text in brackets" in advice and "PBX" in advice
    assert "letters of 2 scripts" in advice and "2 transcript(s) hold digits" in advice
    upper = TextStats(cfg)
    upper.add("HELLO WORLD FROM LIBRISPEECH", "hello world from librispeech")
    assert upper.report()["acronyms"]["transcripts"] == 0  # an all-capitals corpus has no acronyms to find
