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
    with pytest.raises(LowresError):
        TextConfig(digits="spell")
