"""lowres.train.checkpoint: what is saved comes back, the newest complete checkpoint wins, nothing unpickles.

Contract: a checkpoint folder holds model.safetensors, trainer.pt and meta.json (written last: a folder
without it is incomplete and ignored); ``checkpoints/latest`` names the newest complete one; only ``keep``
complete checkpoints stay; a trainer.pt holding Python objects is refused with a LowresError.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lowres import LowresError
from lowres.fsutil import save_safetensors
from lowres.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"head.weight": torch.randn(5, 3, generator=g), "head.bias": torch.randn(5, generator=g),
            "steps": torch.arange(4)}


def trainer(step: int) -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {"optimizer": opt.state_dict(), "step": step, "position": [1, 7]}


def folders(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step-*"))


def test_save_latest_load_round_trip(tmp_path):
    state = trainer(3)
    folder = save_checkpoint(tmp_path, 3, weights(), state, {"best_step": 2, "position": [1, 7]})
    assert folder == tmp_path / "checkpoints" / "step-00000003"
    assert latest_checkpoint(tmp_path) == folder
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-00000003"
    w, t, meta = load_checkpoint(folder)
    assert w.keys() == weights().keys()
    for k, v in weights().items():
        assert torch.equal(w[k], v) and w[k].dtype == v.dtype
    assert meta == {"step": 3, "best_step": 2, "position": [1, 7]}
    assert t["step"] == 3 and t["position"] == [1, 7]
    restored = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    restored.load_state_dict(t["optimizer"])  # a real optimizer state comes back usable
    for a, b in zip(restored.state_dict()["state"].values(), state["optimizer"]["state"].values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    # no temporary files are left behind
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_no_checkpoint_yet(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    assert latest_checkpoint(tmp_path) is None


def test_older_checkpoints_are_pruned_to_keep(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, weights(step), trainer(step), {})
    assert folders(tmp_path) == ["step-00000003", "step-00000004"]  # keep=2 by default
    _, _, meta = load_checkpoint(latest_checkpoint(tmp_path))
    assert meta["step"] == 4
    save_checkpoint(tmp_path, 5, weights(5), trainer(5), {}, keep=1)
    assert folders(tmp_path) == ["step-00000005"]
    save_checkpoint(tmp_path, 6, weights(6), trainer(6), {}, keep=3)
    save_checkpoint(tmp_path, 7, weights(7), trainer(7), {}, keep=3)
    assert folders(tmp_path) == ["step-00000005", "step-00000006", "step-00000007"]


def test_saving_the_same_step_again_replaces_it(tmp_path):
    save_checkpoint(tmp_path, 2, weights(0), trainer(2), {"n": 1})
    folder = save_checkpoint(tmp_path, 2, weights(1), trainer(2), {"n": 2})
    w, _, meta = load_checkpoint(folder)
    assert meta["n"] == 2 and torch.equal(w["head.weight"], weights(1)["head.weight"])


def test_a_partial_folder_without_meta_is_ignored_and_cleaned_up(tmp_path):
    save_checkpoint(tmp_path, 2, weights(), trainer(2), {})
    partial = tmp_path / "checkpoints" / "step-00000009"  # a writer killed before meta.json
    partial.mkdir()
    save_safetensors(partial / "model.safetensors", weights(9))
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    # even when the pointer is gone, or names the incomplete folder
    (tmp_path / "checkpoints" / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    (tmp_path / "checkpoints" / "latest").write_text("step-00000009\n")
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    # the next save removes the leftover
    save_checkpoint(tmp_path, 4, weights(), trainer(4), {})
    assert folders(tmp_path) == ["step-00000002", "step-00000004"]


def test_a_pointer_to_a_deleted_checkpoint_falls_back_to_the_newest_complete_one(tmp_path):
    for step in (1, 2):
        save_checkpoint(tmp_path, step, weights(), trainer(step), {})
    shutil.rmtree(tmp_path / "checkpoints" / "step-00000002")
    assert latest_checkpoint(tmp_path).name == "step-00000001"


class Payload:
    """Any Python object: unpickling it would run code of the pickle's choosing."""


def test_a_poisoned_trainer_state_is_refused(tmp_path):
    folder = save_checkpoint(tmp_path, 1, weights(), trainer(1), {})
    torch.save({"optimizer": Payload()}, folder / "trainer.pt")
    with pytest.raises(LowresError) as info:
        load_checkpoint(folder)
    message = str(info.value)
    assert str(folder) in message and "never unpickles" in message and "\n" not in message


@pytest.mark.parametrize("broken", ["model.safetensors", "meta.json", "trainer.pt"])
def test_a_damaged_checkpoint_is_a_clear_error(tmp_path, broken):
    folder = save_checkpoint(tmp_path, 1, weights(), trainer(1), {})
    (folder / broken).write_bytes(b"\x00garbage")
    with pytest.raises(LowresError, match="cannot be read") as info:
        load_checkpoint(folder)
    assert str(folder) in str(info.value) and "Delete that folder" in str(info.value)


def test_save_safetensors_round_trip_with_metadata(tmp_path):
    path = tmp_path / "sub" / "w.safetensors"
    source = {"a": torch.randn(2, 3).t(), "b": torch.ones(3, dtype=torch.bfloat16)}  # non-contiguous too
    save_safetensors(path, source, {"step": 5, "family": "wav2vec2"})
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"step": "5", "family": "wav2vec2"}
        assert torch.equal(f.get_tensor("a"), source["a"]) and f.get_tensor("b").dtype == torch.bfloat16
    assert [p.name for p in path.parent.iterdir()] == ["w.safetensors"]
