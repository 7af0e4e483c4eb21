"""`lowres demo --quick` end to end: synth → prepare → adapt → finetune (with and without adapt) → eval."""

from __future__ import annotations

import json

from test_finetune import invoke


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = invoke("demo", "--quick", "--out", out)
    assert res.exit_code == 0, res.output
    result = json.loads((out / "demo_results.json").read_text())
    rows = result["rows"]
    assert [(r["split"], r["adapt"]) for r in rows] == [("10min", False), ("10min", True)]
    for r in rows:
        assert 0.0 <= r["cer"] and 0.0 <= r["wer"]
        assert (out / r["run"].split("/")[-1] / "eval-test" / "metrics.json").is_file()
    # every intermediate folder is a normal lowres output
    assert (out / "synth" / "labeled" / "corpus.tsv").is_file()
    assert (out / "prepared" / "manifests" / "10min.jsonl").is_file()
    assert json.loads((out / "adapt" / "config.json").read_text())["lowres_run"] == "adapt"
    assert json.loads((out / "finetune-10min-adapted" / "config.json").read_text())["base"] == str(out / "adapt")
    assert "WER" in res.output and "CER" in res.output
    # a second run reuses what finished and prints the same table
    again = invoke("demo", "--quick", "--out", out)
    assert again.exit_code == 0
    assert json.loads((out / "demo_results.json").read_text())["rows"][0]["cer"] == rows[0]["cer"]
