"""PreparedDir: the one reader of a ``lowres prepare`` folder (split -> manifest, vocabulary, report).

The contract: ``open`` refuses a missing folder and a folder without ``manifests/`` (or ``vocab.json``, unless
it is not needed) with one message that names the flag and says to run prepare; ``manifest(split)`` is
``manifests/{split}.jsonl`` for every split name; ``require`` lists the splits that exist when one does not;
``dev_manifest`` is None when dev.jsonl is missing or empty; the vocabulary loads in the units the report
names; a broken report is a LowresError naming the file, a missing one an empty dict.
"""

from __future__ import annotations

import json

import pytest
from factory import table

from lowres import LowresError
from lowres.config import SPLITS
from lowres.data.prepared import PreparedDir
from lowres.data.splits import HELDOUT_SPLITS, LABELED_SPLITS


def _fake(root, splits=("10min", "full", "dev", "test"), vocab=True, report: dict | None = None):
    (root / "manifests").mkdir(parents=True)
    for s in splits:
        (root / "manifests" / f"{s}.jsonl").write_text('{"id": "a"}\n', encoding="utf-8")
    if vocab:
        (root / "vocab.json").write_text(json.dumps({"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4}))
    if report is not None:
        (root / "prepare_report.json").write_text(json.dumps(report), encoding="utf-8")
    return root


def test_split_names_are_defined_once():
    assert SPLITS == LABELED_SPLITS == ("10min", "1h", "10h", "full")
    assert HELDOUT_SPLITS == ("dev", "test")


def test_open_refuses_what_is_not_a_prepared_folder(tmp_path):
    with pytest.raises(LowresError, match="--data .*nope: no such folder"):
        PreparedDir.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LowresError, match=r"is not a prepared folder \(no vocab.json or manifests/\)\. --data "
                                          r"takes the --out folder of `lowres prepare`: for a corpus, run "
                                          r"`lowres prepare .*empty --out prepared/empty` and pass --data "
                                          r"prepared/empty\."):
        PreparedDir.open(tmp_path / "empty")
    novocab = _fake(tmp_path / "novocab", vocab=False)
    with pytest.raises(LowresError, match=r"\(no vocab.json\)"):
        PreparedDir.open(novocab)
    assert PreparedDir.open(novocab, need_vocab=False).root == novocab  # eval and lm can do without
    with pytest.raises(LowresError, match="--train-data "):
        PreparedDir.open(tmp_path / "nope", flag="--train-data")


def test_manifests_by_split(tmp_path):
    d = PreparedDir.open(_fake(tmp_path / "p"))
    for split in LABELED_SPLITS + HELDOUT_SPLITS:
        assert d.manifest(split) == tmp_path / "p" / "manifests" / f"{split}.jsonl"
    assert d.available() == ["10min", "dev", "full", "test"]
    assert d.require("full") == d.manifest("full")
    with pytest.raises(LowresError, match=r"No split '1h' in .*Available: 10min, dev, full, test\."):
        d.require("1h")
    assert d.dev_manifest() == d.manifest("dev")
    d.manifest("dev").write_text("")  # prepare writes an empty dev.jsonl when there is no dev set
    assert d.dev_manifest() is None
    d.manifest("dev").unlink()
    assert d.dev_manifest() is None
    assert d.unlabeled_path == tmp_path / "p" / "unlabeled.jsonl"


def test_report_units_and_vocabulary(tmp_path):
    bare = PreparedDir.open(_fake(tmp_path / "bare"))
    assert bare.report == {} and bare.units == "grapheme" and bare.text_settings is None
    assert bare.load_vocab().units == "grapheme"
    cp = PreparedDir.open(_fake(tmp_path / "cp", report={"config": {"units": "codepoint"}, "text": {"lowercase": 1}}))
    assert cp.units == "codepoint" and cp.load_vocab().units == "codepoint" and cp.text_settings == {"lowercase": 1}
    old = PreparedDir.open(_fake(tmp_path / "old", report={"vocabulary": {"units": "codepoint"}}))
    assert old.units == "codepoint"
    broken = _fake(tmp_path / "broken")
    (broken / "prepare_report.json").write_text("{not json")
    with pytest.raises(LowresError, match="prepare_report.json is not a valid prepare report"):
        PreparedDir.open(broken).report  # noqa: B018
    (broken / "prepare_report.json").write_text("[1, 2]")
    with pytest.raises(LowresError, match="not a JSON object"):
        PreparedDir.open(broken).units  # noqa: B018


def test_a_real_prepared_folder(tmp_path):
    from lowres.config import PrepareConfig
    from lowres.data.prepare import prepare

    out = tmp_path / "prep"
    prepare(table(tmp_path / "corpus" / "data.csv", n=12), out, PrepareConfig(units="codepoint"))
    d = PreparedDir.open(out)
    assert set(LABELED_SPLITS + HELDOUT_SPLITS) <= set(d.available())
    assert d.units == "codepoint" and d.report["config"]["units"] == "codepoint"
    vocab = d.load_vocab()
    assert vocab.units == "codepoint" and len(vocab) > 3
    assert d.text_settings is not None and d.text_settings["unicode_form"] == "NFKC"


def test_cli_eval_names_the_missing_split(tmp_path):
    """eval --data/--split goes through PreparedDir (before the model is read)."""
    from typer.testing import CliRunner

    from lowres.cli import app

    runner = CliRunner()
    _fake(tmp_path / "p")
    res = runner.invoke(app, ["eval", "--model", str(tmp_path), "--data", str(tmp_path / "p"), "--split", "1h"])
    assert res.exit_code == 2 and "Available: 10min, dev, full, test" in " ".join(res.output.split())
    res = runner.invoke(app, ["eval", "--model", str(tmp_path), "--data", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no such folder" in res.output and "Traceback" not in res.output
