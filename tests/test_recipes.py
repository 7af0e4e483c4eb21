"""Shipped recipes hold only deltas, and resolving them gives exactly the configurations lowres always ran.

The contract:

- every key of a shipped recipe (recipes/*.toml) differs from the default it overrides: the dataclass field's
  default for the recipes loaded first (finetune_*, adapt), and, for the overlays the demo merges on top
  (demo_*), the value beneath it in at least one of the splits the demo uses. A key equal to its default is
  a second declaration of that default, and the two drift apart.
- every resolved configuration (``resolve_finetune`` for every split, ``resolve_adapt``, the demo's recipes
  with the flags ``lowres/demo.py`` passes, and the bare defaults) equals, key for key and value for value,
  the one recorded in tests/fixtures/resolved_configs.json. That file was written by the code before the
  recipes were cut to their deltas (issue #13); a change to a default or a recipe that moves a resolved value
  must update it on purpose.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lowres.config import (
    SPLITS,
    AdaptConfig,
    FinetuneConfig,
    PrepareConfig,
    flat_keys,
    load_recipe,
    recipe_dir,
    resolve_adapt,
    resolve_finetune,
    shipped_recipe,
    to_dict,
)

FIXTURE = Path(__file__).parent / "fixtures" / "resolved_configs.json"
EXPECTED = json.loads(FIXTURE.read_text(encoding="utf-8"))

# what each shipped recipe is merged over: (configuration class, the recipes beneath it, the splits it serves)
BASE_RECIPES = {"finetune_10min": FinetuneConfig, "finetune_1h": FinetuneConfig, "finetune_10h": FinetuneConfig,
                "adapt": AdaptConfig, "adapt_hubert": AdaptConfig}
# the recipes merged over a split's: the demo's (the splits the demo fine-tunes on) and the bases' fine-tuning
# methods (any split: lowres.bases.finetune_method)
OVERLAYS = {"demo_finetune": ("10min", "1h"), "demo_adapt": None, "tiny_ssl": SPLITS, "whisper": SPLITS}


def _same(a, b) -> bool:
    """TOML values against to_dict values: 2000 == 2000.0, tuples were turned into lists."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool | None):
        return math.isclose(a, b, rel_tol=0, abs_tol=0)
    return a == b


def test_every_shipped_recipe_is_covered():
    names = {p.stem for p in recipe_dir().glob("*.toml")}
    assert names == set(BASE_RECIPES) | set(OVERLAYS)
    assert {shipped_recipe(s) for s in SPLITS} <= set(BASE_RECIPES)


@pytest.mark.parametrize("name", sorted(BASE_RECIPES))
def test_recipe_keys_differ_from_the_dataclass_defaults(name):
    defaults = flat_keys(to_dict(BASE_RECIPES[name]()))
    recipe = flat_keys(load_recipe(name))
    unknown = sorted(set(recipe) - set(defaults))
    assert not unknown, f"{name}.toml sets unknown keys {unknown}"
    equal = sorted(k for k, v in recipe.items() if _same(v, defaults[k]))
    assert not equal, f"{name}.toml repeats the defaults of {equal}: delete those keys (lowres/config.py holds them)"


def test_overlay_recipe_keys_change_something():
    """The demo's recipes are merged over a shipped one: each key must differ from the dataclass default and
    from the value beneath it (for demo_finetune: in at least one split the demo uses)."""
    for name, splits in OVERLAYS.items():
        recipe = flat_keys(load_recipe(name))
        assert recipe, f"{name}.toml is empty"
        if splits is None:
            beneath = [flat_keys(to_dict(resolve_adapt()))]
            default = flat_keys(to_dict(AdaptConfig()))
        else:
            beneath = [flat_keys(to_dict(resolve_finetune(s))) for s in splits]
            default = flat_keys(to_dict(FinetuneConfig()))
        for key, value in recipe.items():
            assert not _same(value, default[key]), f"{name}.toml: {key} = {value!r} is the default"
            assert any(not _same(value, b[key]) for b in beneath), f"{name}.toml: {key} = {value!r} changes nothing"


def _demo_finetune(split: str, base: str, steps: int):
    from lowres.demo import finetune_flags

    # the flags lowres/demo.py run_demo passes (with --out demo, seed 0)
    return resolve_finetune(split, "demo_finetune", flags=finetune_flags("demo/prepared", base, steps, 0))


def _resolved() -> dict:
    from lowres.demo import FULL

    got = {"defaults/finetune": to_dict(FinetuneConfig()), "defaults/adapt": to_dict(AdaptConfig()),
           "defaults/prepare": to_dict(PrepareConfig())}
    for split in SPLITS:
        got[f"finetune/{split}"] = to_dict(resolve_finetune(split))
    got["adapt"] = to_dict(resolve_adapt())
    got["adapt/hubert"] = to_dict(resolve_adapt(objective="hubert"))
    got["demo/adapt"] = to_dict(resolve_adapt("demo_adapt", flags={
        "unlabeled": "demo/prepared/unlabeled.jsonl", "base": "tiny-ssl", "objective": "hubert",
        "train.max_steps": 40, "train.seed": 0}))
    got["demo/finetune-10min-tiny"] = to_dict(_demo_finetune("10min", "tiny", FULL.steps_10min))
    got["demo/finetune-10min-shipped"] = to_dict(_demo_finetune("10min", "tiny-ssl", FULL.steps_10min))
    got["demo/finetune-10min-adapted"] = to_dict(_demo_finetune("10min", "demo/adapt", FULL.steps_10min))
    got["demo/finetune-1h-shipped"] = to_dict(_demo_finetune("1h", "tiny-ssl", FULL.steps_1h))
    got["demo/finetune-1h-adapted"] = to_dict(_demo_finetune("1h", "demo/adapt", FULL.steps_1h))
    from lowres.train.finetune import finetune_config

    # what `lowres finetune --split 10min --base B` runs with, the base's method layered in
    got["method/tiny-ssl-10min"] = to_dict(finetune_config("10min", "tiny-ssl"))
    got["method/whisper-base-10min"] = to_dict(finetune_config("10min", "whisper-base"))
    return got


def test_resolved_configurations_are_exactly_the_recorded_ones():
    got = _resolved()
    assert sorted(got) == sorted(EXPECTED)
    for name, expected in EXPECTED.items():
        flat_got, flat_want = flat_keys(got[name]), flat_keys(expected)
        assert sorted(flat_got) == sorted(flat_want), name  # no key added or lost (config.json keeps loading)
        differ = {k: (flat_want[k], flat_got[k]) for k in flat_want
                  if flat_got[k] != flat_want[k] or type(flat_got[k]) is not type(flat_want[k])}
        assert not differ, f"{name}: (recorded, now) {differ}"


def test_recorded_configurations_still_load():
    """A config.json written before the change (the recorded dicts) rebuilds the same configuration."""
    from lowres.config import from_dict

    for name, expected in EXPECTED.items():
        if name == "defaults/prepare":
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in expected.items()}
            assert to_dict(PrepareConfig(**fields)) == expected
            continue
        cls = AdaptConfig if "adapt" in name and "finetune" not in name else FinetuneConfig
        assert to_dict(from_dict(cls, expected)) == expected, name


# ---------------------------------------------------------------------------------------------------
# every numeric setting is checked where it is resolved: a bad value is one message naming its dotted key,
# before a command touches torch, peft or --out (issue #14 item 2)


@pytest.mark.parametrize("args, key", [
    (["--set", "optim.lr=-1"], "optim.lr"),
    (["--set", "optim.lr=nan"], "optim.lr"),
    (["--lr", "inf"], "optim.lr"),
    (["--lora-rank", "0"], "lora.rank"),
    (["--set", "lora.dropout=1"], "lora.dropout"),
    (["--set", "train.log_every=0"], "train.log_every"),
    (["--set", "schedule.final_scale=0"], "schedule.final_scale"),
    (["--set", "augment.speed=[1.1,0.9]"], "augment.speed"),
])
def test_finetune_refuses_bad_values_before_writing(tmp_path, args, key):
    from typer.testing import CliRunner

    from lowres.cli import app

    data = tmp_path / "prep"
    (data / "manifests").mkdir(parents=True)
    (data / "vocab.json").write_text("{}")
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["finetune", "--data", str(data), "--base", "tiny", "--out", str(out), *args])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and f"Invalid setting: {key} must be" in text, res.output
    assert "Traceback" not in res.output and not out.exists()


@pytest.mark.parametrize("sets, key", [
    (("optim.lr=nan",), "optim.lr"),
    (("model.mask_prob=1",), "model.mask_prob"),
    (("model.mask_prob=0", "model.min_spans=0"), "model.mask_prob"),
    (("model.layerdrop=-0.1",), "model.layerdrop"),
    (("gumbel.min=0",), "gumbel.min"),
    (("loss.logit_temperature=0",), "loss.logit_temperature"),
    (("train.heads_warmup_steps=-2",), "train.heads_warmup_steps"),
])
def test_adapt_refuses_bad_values(sets, key):
    from lowres import LowresError

    with pytest.raises(LowresError, match=rf"Invalid setting: {key}\b.*\(given in --set\)"):
        resolve_adapt(sets=sets)


def test_shared_settings_have_one_rule():
    """mask_prob is the same setting in both commands: 0 is fine in both (adapt still masks min_spans spans),
    1 is refused by both with the same words."""
    from lowres import LowresError

    assert resolve_finetune("1h", sets=("model.mask_prob=0",)).model.mask_prob == 0
    assert resolve_adapt(sets=("model.mask_prob=0",)).model.mask_prob == 0
    messages = []
    for resolve in (lambda: resolve_finetune("1h", sets=("model.mask_prob=1",)),
                    lambda: resolve_adapt(sets=("model.mask_prob=1",))):
        with pytest.raises(LowresError) as info:
            resolve()
        messages.append(str(info.value))
    assert messages[0] == messages[1]
