import json
from collections import Counter

import pytest

from lowres import LowresError
from lowres.data.vocab import (
    BLANK_ID,
    UNK_ID,
    WORD_DELIMITER_ID,
    Vocab,
    build_vocab,
    count_symbols,
    ctc_frames_needed,
    split_units,
    tokenize,
)


def test_grapheme_clusters_are_symbols():
    assert split_units("g\u0303ua") == ["g\u0303", "u", "a"]  # Guarani g̃: one symbol
    assert split_units("ñe\u0303") == ["ñ", "e\u0303"]
    assert split_units("g\u0303ua", units="codepoint") == ["g", "\u0303", "u", "a"]


def test_lone_combining_mark_is_never_a_symbol():
    # after normalisation a mark always has a base; a cluster never starts with one
    counts = count_symbols(["g\u0303a g\u0303e"])
    assert "\u0303" not in counts
    assert counts["g\u0303"] == 2


def test_tokenize_puts_delimiters_between_words_only():
    assert tokenize("ab c") == ["a", "b", "|", "c"]
    assert tokenize("") == []


def test_build_vocab_min_count_and_ids():
    counts = count_symbols(["aab", "abz"])
    vocab, rare = build_vocab(counts, min_count=2)
    assert rare == ["z"]
    assert vocab.tokens[:3] == ("<pad>", "<unk>", "|")
    assert vocab.encode("ab z") == [vocab.tokens.index("a"), vocab.tokens.index("b"), WORD_DELIMITER_ID, UNK_ID]


def test_encode_decode_round_trip_and_doubled_letters():
    vocab, _ = build_vocab(count_symbols(["kitabu ng'ombe g\u0303uu"]), 1)
    text = "kitabu ng'ombe g\u0303uu"
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    # "uu" needs a blank between the letters to survive CTC collapsing
    assert ctc_frames_needed(vocab.encode("uu")) == 3
    assert vocab.decode([BLANK_ID]) == ""


def test_cluster_missing_falls_back_to_code_points():
    vocab = Vocab(("a", "e", "\u0301"))
    assert vocab.encode("\u00e9") == [UNK_ID]  # precomposed é is one code point, not in this vocabulary
    vocab2 = Vocab(("e", "\u0303"))
    assert vocab2.encode("e\u0303") == [vocab2.tokens.index("e"), vocab2.tokens.index("\u0303")]


def test_save_load_and_formats(tmp_path):
    counts = count_symbols(["aab ba", "c"])
    vocab, _ = build_vocab(counts, 1)
    vocab.save(tmp_path, counts)
    mapping = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert mapping == {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4, "c": 5}
    assert Vocab.load(tmp_path) == vocab
    lines = (tmp_path / "dict.ltr.txt").read_text().splitlines()
    assert lines[0] == "a 3" and set(lines) == {"a 3", "b 2", "| 1", "c 1"}


def test_vocab_json_is_read_by_hugging_face_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    counts = count_symbols(["g\u0303ua ng'ombe"])
    vocab, _ = build_vocab(counts, 1)
    vocab.save(tmp_path, counts)
    tok = transformers.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                            word_delimiter_token="|", bos_token=None, eos_token=None)
    ids = tok("g\u0303ua ng'ombe").input_ids
    assert ids == vocab.encode("g\u0303ua ng'ombe")
    assert tok.decode(ids) == "g\u0303ua ng'ombe"


def test_load_errors(tmp_path):
    with pytest.raises(LowresError, match="lowres prepare"):
        Vocab.load(tmp_path)
    (tmp_path / "vocab.json").write_text('{"a": 0}')
    with pytest.raises(LowresError, match="not a lowres vocabulary"):
        Vocab.load(tmp_path)
    counts = Counter()
    assert build_vocab(counts)[0].symbols == ()
