"""The shipped self-supervised base (lowres/bases, built by scripts/build_base.py): it loads offline by name
with its fingerprint checked, it is self-supervised on the allowed languages only, a damaged file is refused
in one message, it fine-tunes better than a random init on the same budget, and the wheel carries it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from factory import invoke, read_jsonl

from lowres import LowresError, bases
from lowres.bases import available_names, default_objective, load_base, shipped
from lowres.model.backbone import fingerprint
from lowres.runtime import install_hint

NAME = "tiny-ssl"
# the languages the issue allows for the base (never one that a test, the demo or a benchmark fine-tunes on)
ALLOWED = {"en", "es", "fr", "de", "it", "pt", "tr", "id", "ru", "hi", "vi", "pl", "nl", "cs", "ro", "fi"}
REPO = Path(__file__).resolve().parent.parent


def test_shipped_base_loads_by_name_and_its_fingerprint_matches():
    assert NAME in bases.shipped_names() and NAME in available_names()
    loaded = load_base(NAME)
    info = bases.shipped_info(NAME)
    assert loaded.fingerprint == fingerprint(loaded.model) == info["fingerprint"]
    assert loaded.spec.pretrained and loaded.spec.name == NAME and loaded.mask_embedding is not None
    assert loaded.spec.embed_dim == info["spec"]["arch"]["encoder_embed_dim"]
    assert default_objective(NAME) == info["objective"] == "hubert"
    weights = Path(str(shipped._folder() / f"{NAME}.safetensors"))
    assert weights.stat().st_size <= 10 * 1024 * 1024


def test_shipped_base_provenance_is_self_supervised_on_allowed_languages():
    prov = bases.shipped_info(NAME)["provenance"]
    assert prov["transcripts_used"] is False
    assert 8 <= len(prov["languages"]) <= 12 and set(prov["languages"]) <= ALLOWED
    assert prov["unlabeled_hours"] > 0 and prov["lowres_commit"] and "build_base.py" in prov["build_command"]
    info = bases.shipped_info(NAME)
    assert info["updates"] > 0 and info["final_metrics"]["masked_accuracy"] > 0
    # HuBERT iterations from a random initialisation, each continuing the one before: nothing else went in
    its = prov["iterations"]
    assert [i["iteration"] for i in its] == list(range(1, len(its) + 1)) and its[0]["targets"] == "mfcc"
    assert prov["start"].startswith("tiny (random init)") and info["updates"] == its[-1]["updates"]
    assert info["adapt_config"]["base"] == "tiny" if len(its) == 1 else info["adapt_config"]["base"] not in available_names()


def _copy_of_the_package(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "bases"
    folder.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(Path(str(shipped._folder() / f"{NAME}{suffix}")), folder)
    monkeypatch.setattr(shipped, "_folder", lambda: folder)
    return folder


def test_changed_weights_are_refused_in_one_message(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    folder = _copy_of_the_package(tmp_path, monkeypatch)
    path = folder / f"{NAME}.safetensors"
    state = load_file(path)
    key = next(k for k in state if k.startswith("backbone.encoder"))
    state[key] = state[key] + 0.01
    save_file(state, path)
    with pytest.raises(LowresError, match="damaged or was changed.*fingerprint"):
        load_base(NAME)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(LowresError, match="damaged or was changed.*Restore lowres's files") as err:
        load_base(NAME)
    assert install_hint(reinstall=True) in str(err.value)  # the command that restores them where lowres came from


@pytest.mark.parametrize("lost", [".json", ".safetensors"])
def test_a_shipped_base_with_a_file_missing_says_so_not_unknown_name(tmp_path, monkeypatch, lost):
    """Without its JSON the base is not in shipped_names(); --base tiny-ssl used to answer "Unknown --base
    'tiny-ssl'. Did you mean tiny?" (a random init)."""
    folder = _copy_of_the_package(tmp_path, monkeypatch)
    (folder / f"{NAME}{lost}").unlink()
    with pytest.raises(LowresError) as err:
        load_base(NAME)
    message = str(err.value)
    assert "files are incomplete" in message and f"{NAME}{lost}" in message and "Did you mean" not in message
    assert install_hint(reinstall=True) in message  # git from a checkout, pip from a folder or a wheel
    for suffix in (".json", ".safetensors"):
        (folder / f"{NAME}{suffix}").unlink(missing_ok=True)
    with pytest.raises(LowresError, match="incomplete"):  # both gone: still a base lowres ships
        load_base(NAME)
    with pytest.raises(LowresError, match="Unknown --base 'tiny-sll'"):
        load_base("tiny-sll")


@pytest.mark.slow
def test_finetuning_the_shipped_base_beats_a_random_init_on_train_loss(tmp_path):
    """A few dozen updates on a small synthetic Swahili corpus (a language the base never heard), the same
    fine-tuning on both sides: the shipped base ends with a lower train loss than the random-init tiny."""
    synth, prep = tmp_path / "synth", tmp_path / "prep"
    assert invoke("synth", "--lang", "sw", "--hours", 0.1, "--unlabeled-hours", 0, "--out", synth, "-q",
                  "-j", 1).exit_code == 0
    assert invoke("prepare", synth / "labeled" / "corpus.tsv", "--lang", "sw", "--out", prep, "-q").exit_code == 0
    losses = {}
    for base in ("tiny", NAME):
        run = tmp_path / f"ft-{base}"
        res = invoke("finetune", "--data", prep, "--split", "full", "--base", base, "--out", run,
                     "--recipe", "demo_finetune", "--no-lora", "--max-steps", 40, "--set", "train.head_only_steps=0",
                     "--set", "model.freeze_feature_encoder=false", "--set", "train.log_every=1",
                     "--set", "train.dev_max_utterances=4", "-q")
        assert res.exit_code == 0, res.output
        rows = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r and "step" in r]
        losses[base] = sum(r["loss"] for r in rows[-10:]) / 10
    assert losses[NAME] < losses["tiny"], losses


@pytest.mark.slow
def test_the_wheel_carries_the_shipped_base_and_it_loads_from_elsewhere(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             "demo*", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    # pip's own build isolation: setuptools and wheel as pyproject.toml asks, from the package registry
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(wheels.glob("lowres-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert f"lowres/bases/{NAME}.safetensors" in names and f"lowres/bases/{NAME}.json" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import lowres, json; from lowres.bases import load_base; b = load_base('tiny-ssl'); "
            "print(json.dumps([lowres.__file__, b.fingerprint]))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, check=True, capture_output=True,
                         text=True).stdout
    where, got = json.loads(out.strip().splitlines()[-1])
    assert where.startswith(str(site)) and got == bases.shipped_info(NAME)["fingerprint"]
