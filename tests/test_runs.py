"""lowres/runs.py: the run folder's record, claiming a folder, and what a --resume may change.

Contract:
- config.json files written by earlier lowres versions (finetune and adapt layouts) read into a RunRecord
  and write back byte-for-byte the same dict (old run folders keep loading);
- claiming: --resume and --overwrite contradict; a file, a used folder without a flag, and --overwrite of a
  folder that is not a lowres run are refused; ``check_only`` touches nothing;
- a --resume refuses another --data, --split, --base, --unlabeled or a --recipe / --set that changes a
  setting, with a message naming the flag; the same input given by another path, and the few train settings
  a resume may change, are accepted; through the CLI, the refusal is one paragraph and exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lowres import LowresError
from lowres.cli import app
from lowres.config import AdaptConfig, FinetuneConfig, resolve_adapt, resolve_finetune, to_dict
from lowres.runs import RunRecord, claim_run_folder, read_run, resume_config, write_run

SPEC = {"family": "wav2vec2", "arch": {"extractor_conv_layer_config": [[64, 10, 5]], "encoder_embed_dim": 144},
        "normalize_waveform": True, "pretrained": False, "name": "tiny"}

OLD_FINETUNE = {  # the layout of config.json as lowres 0.1 wrote it
    "lowres_run": "finetune", "lowres_version": "0.1.0", "config": None, "backbone": SPEC, "base": "tiny",
    "base_fingerprint": "", "vocab_units": "grapheme", "text": {"lowercase": True},
    "train_manifest": "/data/p/manifests/1h.jsonl", "dev_manifest": None,
    "build": {"lora": False, "feature_encoder_trained": True, "pretrained_base": False, "head_only_steps": 0},
    "created": "2026-11-20 10:00:00"}
OLD_ADAPT = {
    "lowres_run": "adapt", "lowres_version": "0.1.0", "config": None, "backbone": SPEC, "base": "tiny",
    "base_fingerprint": "", "manifest": "/runs/a/data/unlabeled.jsonl", "heads_imported": False,
    "heads": {"conv_dim": 64, "groups": 2, "entries": 320, "dim": 256, "final_dim": 256}, "feature_penalty": 0.0,
    "heads_warmup_steps": 10, "temperature_start": 2.0, "created": "2026-11-20 10:00:00"}


def finetune_run(folder: Path, data: Path, split: str = "1h") -> Path:
    cfg = resolve_finetune(split, flags={"data": str(data.resolve()), "base": "tiny"})
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**OLD_FINETUNE, "config": to_dict(cfg)}))
    return folder


@pytest.mark.parametrize("layout", [OLD_FINETUNE, OLD_ADAPT], ids=["finetune", "adapt"])
def test_old_config_json_round_trips(tmp_path, layout):
    cfg = to_dict(FinetuneConfig() if layout["lowres_run"] == "finetune" else AdaptConfig())
    old = {**layout, "config": cfg}
    (tmp_path / "config.json").write_text(json.dumps(old))
    record = read_run(tmp_path)
    assert record.kind == layout["lowres_run"] and record.base == "tiny" and record.spec().name == "tiny"
    assert record.to_json() == old
    assert list(record.to_json()) == list(old)  # same key order: diffs of config.json stay readable
    write_run(tmp_path / "copy", record)
    assert json.loads((tmp_path / "copy" / "config.json").read_text()) == old


def test_read_run_explains_what_is_wrong(tmp_path):
    with pytest.raises(LowresError, match="not a lowres run folder"):
        read_run(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(LowresError, match="not valid JSON"):
        read_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(LowresError, match="not written by lowres"):
        read_run(tmp_path)


def test_claiming(tmp_path):
    with pytest.raises(LowresError, match="contradict"):
        claim_run_folder(tmp_path / "x", resume=True, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(LowresError, match="is a file"):
        claim_run_folder(tmp_path / "file", resume=False, overwrite=False)
    new = tmp_path / "new"
    assert claim_run_folder(new, resume=False, overwrite=False, check_only=True) == "new" and not new.exists()
    assert claim_run_folder(new, resume=False, overwrite=False) == "new" and new.is_dir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(LowresError, match="already holds files"):
        claim_run_folder(mine, resume=False, overwrite=False)
    with pytest.raises(LowresError, match="not a lowres run folder"):
        claim_run_folder(mine, resume=False, overwrite=True)
    with pytest.raises(LowresError, match="holds no run to continue"):
        claim_run_folder(mine, resume=True, overwrite=False)
    assert (mine / "notes.txt").read_text() == "precious"
    run = finetune_run(tmp_path / "run", tmp_path)
    assert claim_run_folder(run, resume=False, overwrite=True, check_only=True) == "new"
    assert (run / "config.json").is_file()  # check_only touched nothing
    assert claim_run_folder(run, resume=False, overwrite=True) == "new" and not any(run.iterdir())


def test_resume_refuses_other_inputs_and_settings(tmp_path, monkeypatch):
    data = tmp_path / "prep"
    data.mkdir()
    run = finetune_run(tmp_path / "run", data)
    record, cfg = resume_config(run, "finetune", FinetuneConfig, {"train": {"max_steps": 99, "accumulate": 2}})
    assert cfg.train.max_steps == 99 and cfg.train.accumulate == 2 and cfg.split == "1h"
    monkeypatch.chdir(tmp_path)
    # the same inputs, given as on the original command line (relative path, same split and base): accepted
    resume_config(run, "finetune", FinetuneConfig, {"data": "prep", "split": "1h", "base": "tiny"})
    for changes, flag in (({"split": "10min"}, "--split"), ({"data": str(tmp_path)}, "--data"),
                          ({"base": "small"}, "--base")):
        with pytest.raises(LowresError, match=f"own {flag}"):
            resume_config(run, "finetune", FinetuneConfig, changes)
    with pytest.raises(LowresError, match="optim.lr cannot change"):
        resume_config(run, "finetune", FinetuneConfig, {"optim": {"lr": 1.0}})
    with pytest.raises(LowresError, match="not an adapt run"):
        resume_config(run, "adapt", AdaptConfig, {})


def test_resume_refuses_another_unlabeled_source(tmp_path):
    cfg = resolve_adapt(flags={"unlabeled": str(tmp_path / "audio"), "base": "tiny"})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({**OLD_ADAPT, "config": to_dict(cfg)}))
    with pytest.raises(LowresError, match="own --unlabeled"):
        resume_config(tmp_path / "run", "adapt", AdaptConfig, {"unlabeled": str(tmp_path / "other")})


def test_cli_resume_with_another_split_or_recipe_is_refused(tmp_path):
    runner = CliRunner()
    data = tmp_path / "prep"
    data.mkdir()
    run = finetune_run(tmp_path / "run", data)
    before = (run / "config.json").read_text()
    res = runner.invoke(app, ["finetune", "--out", str(run), "--resume", "--split", "10min"])
    assert res.exit_code == 2 and "own --split (1h)" in res.output and "Traceback" not in res.output
    recipe = tmp_path / "r.toml"
    recipe.write_text("[optim]\nlr = 0.123\n")
    res = runner.invoke(app, ["finetune", "--out", str(run), "--resume", "--recipe", str(recipe)])
    assert res.exit_code == 2 and "optim.lr cannot change" in res.output
    assert (run / "config.json").read_text() == before  # nothing was touched
    assert {p.name for p in run.iterdir()} == {"config.json"}


def test_record_helpers_typed_config(tmp_path):
    cfg = resolve_finetune("10min", flags={"base": "tiny", "data": "/p"})
    record = RunRecord(kind="finetune", config=to_dict(cfg), backbone=SPEC, base="tiny")
    assert record.typed_config(FinetuneConfig) == cfg
    assert record.to_json()["created"]  # stamped when written


def test_a_run_folder_in_use_is_refused_naming_the_process_that_holds_it(tmp_path):
    """#14: two `finetune` processes into one --out both ran and interleaved their logs."""
    import subprocess
    import sys

    import factory

    prepared = factory.prepared_corpus(tmp_path / "corpus", n=12, speakers=4)
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from lowres.runs import RunLock; "
         "RunLock.take(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["finetune", "--data", prepared, "--split", "full", "--base", "tiny", "--out", out, "--max-steps", 2,
                "--eval-every", 0, *factory.FAST]
        res = factory.invoke(*args)
        text = " ".join(res.output.split())
        assert res.exit_code == 2 and "Traceback" not in res.output
        assert f"{out} is in use: another lowres process is training there (pid {holder.pid} on" in text
        assert {p.name for p in out.iterdir()} == {".lowres.lock"}  # nothing else was written
    finally:
        holder.kill()
        holder.wait()
    res = factory.invoke(*args)  # the holder is gone: its lock went with it, and the lock file is no obstacle
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
