"""lowres.config: typed coercion of every field type, the precedence of the layers, and the error messages.

Contract: a value from TOML, JSON or a ``--set`` string becomes the field's annotated type or is refused
with a LowresError naming the setting; an unknown key is refused with the closest known name; the layers
apply in the order defaults < shipped recipe < --recipe < --set < explicit flags.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from lowres import LowresError
from lowres.config import (
    AdaptConfig,
    FinetuneConfig,
    PrepareConfig,
    from_dict,
    load_recipe,
    merge,
    parse_sets,
    recipe_dir,
    resolve_adapt,
    resolve_finetune,
    to_dict,
)

# ---------------------------------------------------------------------------------------------------
# coercion, one field type at a time (through merge, the public entry every layer goes through)


@pytest.mark.parametrize(("raw", "expected"), [("7", 7), ("2e3", 2000), ("1E2", 100), (3.0, 3), (12, 12),
                                               (" 5", 5)])
def test_int_fields_take_integers_written_any_exact_way(raw, expected):
    cfg = merge(FinetuneConfig(), {"train": {"max_steps": raw}})
    assert cfg.train.max_steps == expected and type(cfg.train.max_steps) is int


@pytest.mark.parametrize("raw", ["2.5", "2.5e0", 2.5, True, "many", "", [3]])
def test_int_fields_refuse_what_is_not_an_integer(raw):
    with pytest.raises(LowresError, match=r"train\.max_steps: expected an integer"):
        merge(FinetuneConfig(), {"train": {"max_steps": raw}})


@pytest.mark.parametrize(("raw", "expected"), [("1e-3", 1e-3), ("0.5", 0.5), (3, 3.0), (2.5, 2.5)])
def test_float_fields(raw, expected):
    cfg = merge(FinetuneConfig(), {"optim": {"lr": raw}})
    assert cfg.optim.lr == expected and type(cfg.optim.lr) is float


@pytest.mark.parametrize("raw", [True, "fast", None, [1.0]])
def test_float_fields_refuse_non_numbers(raw):
    with pytest.raises(LowresError, match=r"optim\.lr: expected a number"):
        merge(FinetuneConfig(), {"optim": {"lr": raw}})


@pytest.mark.parametrize(("raw", "expected"), [(True, True), (False, False), ("true", True), ("Yes", True),
                                               ("on", True), ("1", True), ("false", False), ("no", False),
                                               ("OFF", False), ("0", False)])
def test_bool_fields(raw, expected):
    assert merge(FinetuneConfig(), {"lora": {"enabled": raw}}).lora.enabled is expected


@pytest.mark.parametrize("raw", ["maybe", 1, 0.0, ""])
def test_bool_fields_refuse_anything_else(raw):
    with pytest.raises(LowresError, match=r"lora\.enabled: expected true or false"):
        merge(FinetuneConfig(), {"lora": {"enabled": raw}})


def test_str_fields_take_numbers_as_text_and_refuse_structures():
    assert merge(FinetuneConfig(), {"base": 300}).base == "300"
    assert merge(FinetuneConfig(), {"data": "prepared/sw"}).data == "prepared/sw"
    with pytest.raises(LowresError, match="base: expected a string"):
        merge(FinetuneConfig(), {"base": True})
    with pytest.raises(LowresError, match="base: expected a string"):
        merge(FinetuneConfig(), {"base": ["a"]})


@pytest.mark.parametrize("raw", [None, "none", "None", "null", "NULL"])
def test_optional_fields_take_none_and_null(raw):
    cfg = merge(FinetuneConfig(), {"optim": {"head_lr": 1e-3}, "model": {"dropout": 0.2}})
    cfg = merge(cfg, {"optim": {"head_lr": raw}, "model": {"dropout": raw, "freeze_feature_encoder": raw}})
    assert cfg.optim.head_lr is None and cfg.model.dropout is None and cfg.model.freeze_feature_encoder is None


def test_optional_fields_take_their_inner_type_and_refuse_others():
    cfg = merge(FinetuneConfig(), {"optim": {"head_lr": "3e-4"}, "model": {"freeze_feature_encoder": "false"}})
    assert cfg.optim.head_lr == 3e-4 and cfg.model.freeze_feature_encoder is False
    with pytest.raises(LowresError, match=r"optim\.head_lr"):
        merge(FinetuneConfig(), {"optim": {"head_lr": "quick"}})
    with pytest.raises(LowresError, match=r"model\.freeze_feature_encoder"):
        merge(FinetuneConfig(), {"model": {"freeze_feature_encoder": "sometimes"}})


@pytest.mark.parametrize("raw", ["[0.8, 0.95]", "0.8,0.95", [0.8, 0.95], (0.8, 0.95), ["0.8", "0.95"]])
def test_fixed_length_tuples(raw):
    cfg = merge(FinetuneConfig(), {"optim": {"betas": raw}})
    assert cfg.optim.betas == (0.8, 0.95) and all(type(b) is float for b in cfg.optim.betas)


@pytest.mark.parametrize(("raw", "message"), [("[0.9]", "expected 2 values, got 1"),
                                              ("0.9,0.9,0.9", "expected 2 values, got 3"),
                                              (0.9, "expected a list"), ("[0.9, \"x\"]", "expected a number")])
def test_fixed_length_tuples_refuse_wrong_shapes(raw, message):
    with pytest.raises(LowresError, match=rf"optim\.betas: {message}"):
        merge(FinetuneConfig(), {"optim": {"betas": raw}})


def test_variable_length_tuples():
    assert merge(PrepareConfig(), {"emit": "fairseq"}).emit == ("fairseq",)
    assert merge(PrepareConfig(), {"emit": ["fairseq"]}).emit == ("fairseq",)
    assert merge(PrepareConfig(), {"emit": "[]"}).emit == ()
    assert merge(PrepareConfig(), {"emit": ""}).emit == ()


def test_dataclass_validation_becomes_a_lowres_error_naming_the_setting():
    with pytest.raises(LowresError, match=r"mask_prob") as info:
        merge(FinetuneConfig(), {"model": {"mask_prob": 1.5}})
    assert "model.mask_prob" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(LowresError, match="max_steps"):
        merge(FinetuneConfig(), {"train": {"max_steps": 0}})
    with pytest.raises(LowresError, match="warmup"):
        merge(FinetuneConfig(), {"schedule": {"warmup": 0.5}})  # the shares no longer add up to 1


def test_merge_returns_a_copy_and_leaves_the_rest_alone():
    base = FinetuneConfig()
    cfg = merge(base, {"optim": {"lr": 1e-3}})
    assert base.optim.lr == FinetuneConfig().optim.lr  # frozen defaults untouched
    assert cfg.optim == dataclasses.replace(base.optim, lr=1e-3)
    assert (cfg.model, cfg.train, cfg.lora) == (base.model, base.train, base.lora)


def test_to_dict_from_dict_round_trip_through_json():
    cfg = merge(FinetuneConfig(), {"split": "10h", "optim": {"betas": [0.8, 0.9], "head_lr": 1e-3},
                                   "augment": {"speed": [0.95, 1.05]}, "model": {"dropout": None}})
    data = json.loads(json.dumps(to_dict(cfg)))
    assert data["optim"]["betas"] == [0.8, 0.9]
    assert from_dict(FinetuneConfig, data) == cfg
    adapt = merge(AdaptConfig(), {"gumbel": {"min": 0.1}, "lora": {"enabled": True}})
    assert from_dict(AdaptConfig, json.loads(json.dumps(to_dict(adapt)))) == adapt


# ---------------------------------------------------------------------------------------------------
# unknown keys and section-vs-value mistakes


@pytest.mark.parametrize(("updates", "name", "hint"), [
    ({"optim": {"lrr": 1}}, "optim.lrr", "Did you mean optim.lr?"),
    ({"splt": "1h"}, "splt", "Did you mean split?"),
    ({"train": {"max_step": 5}}, "train.max_step", "Did you mean train.max_steps?"),
    ({"lora": {"rnak": 4}}, "lora.rnak", "Did you mean lora.rank?"),
])
def test_unknown_key_names_the_closest_known_one(updates, name, hint):
    with pytest.raises(LowresError) as info:
        merge(FinetuneConfig(), updates)
    message = str(info.value)
    assert f"Unknown setting {name}." in message and hint in message and "\n" not in message


@pytest.mark.parametrize(("cls", "updates", "name", "hint"), [
    (FinetuneConfig, {"train": {"lr": 1e-4}}, "train.lr", "Did you mean optim.lr?"),  # the key is in another section
    (FinetuneConfig, {"lr": 1e-4}, "lr", "Did you mean optim.lr?"),  # a section's key given at the top
    (FinetuneConfig, {"optim": {"max_steps": 5}}, "optim.max_steps", "Did you mean train.max_steps?"),
    (FinetuneConfig, {"train": {"rnak": 4}}, "train.rnak", "Did you mean lora.rank?"),  # close, elsewhere
    (AdaptConfig, {"optim": {"min": 0.1}}, "optim.min", "Did you mean gumbel.min?"),
])
def test_unknown_key_is_looked_for_in_the_other_sections(cls, updates, name, hint):
    with pytest.raises(LowresError) as info:
        merge(cls(), updates)
    message = str(info.value)
    assert f"Unknown setting {name}." in message and hint in message and "\n" not in message, message
    assert "Known keys" not in message


def test_a_close_key_in_the_same_section_comes_before_one_elsewhere():
    with pytest.raises(LowresError, match=r"Did you mean train\.max_steps\?"):
        merge(FinetuneConfig(), {"train": {"max_step": 5}})  # not optim.*, not model.* ...


def test_unknown_key_with_nothing_close_lists_the_known_keys():
    with pytest.raises(LowresError) as info:
        merge(FinetuneConfig(), {"lora": {"zzzzzz": 1}})
    message = str(info.value)
    assert "Did you mean" not in message
    assert "Known keys:" in message and "lora.rank" in message and "lora.alpha" in message


def test_unknown_key_of_adapt_and_of_prepare():
    with pytest.raises(LowresError, match=r"Did you mean gumbel\.min\?"):
        merge(AdaptConfig(), {"gumbel": {"mn": 1}})
    with pytest.raises(LowresError, match=r"Did you mean seed\?"):
        merge(PrepareConfig(), {"sede": 1})


def test_a_section_given_a_value_and_a_value_given_a_section():
    with pytest.raises(LowresError, match=r"Setting optim is a section; give its keys, e\.g\. optim\.name=value"):
        merge(FinetuneConfig(), {"optim": "3"})
    with pytest.raises(LowresError, match=r"optim\.lr: expected a number"):
        merge(FinetuneConfig(), {"optim": {"lr": {"peak": 1}}})
    # the same mistakes from the command line
    with pytest.raises(LowresError, match="is a section"):
        resolve_finetune("1h", sets=("train=5",))
    with pytest.raises(LowresError, match=r"optim\.lr"):
        resolve_finetune("1h", sets=("optim.lr.peak=5",))


# ---------------------------------------------------------------------------------------------------
# parse_sets


def test_parse_sets_nests_dotted_keys_and_strips_spaces():
    assert parse_sets(["optim.lr=1e-3", " lora.rank = 16", "split=10h", "a.b.c=x=y"]) == {
        "optim": {"lr": "1e-3"}, "lora": {"rank": "16"}, "split": "10h", "a": {"b": {"c": "x=y"}}}
    assert parse_sets([]) == {} and parse_sets(None) == {}
    assert parse_sets(["optim.lr=1", "optim.lr=2"]) == {"optim": {"lr": "2"}}  # the last one wins


@pytest.mark.parametrize(("items", "message"), [
    (["optim.lr"], "--set takes key=value"),
    (["=3"], "empty key"),
    (["..=3"], "empty key"),
    (["optim=1", "optim.lr=2"], "conflicts with another --set of optim"),
])
def test_parse_sets_errors(items, message):
    with pytest.raises(LowresError, match=message):
        parse_sets(items)


# ---------------------------------------------------------------------------------------------------
# precedence: defaults < shipped recipe < --recipe < --set < explicit flags


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _flat(recipe: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in recipe.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _a_key_the_recipe_leaves_alone(cfg, recipe: dict) -> str:
    """A numeric setting the shipped recipe does not set (so its value must be the default)."""
    flat = _flat(recipe)
    for section in ("train", "optim"):
        for f in dataclasses.fields(getattr(cfg, section)):
            key = f"{section}.{f.name}"
            if key not in flat and type(getattr(getattr(cfg, section), f.name)) in (int, float):
                return key
    raise AssertionError("the recipe sets every numeric key")


@pytest.mark.parametrize("split", ["10min", "1h", "10h", "full"])
def test_finetune_defaults_then_shipped_recipe(split):
    shipped = load_recipe({"full": "finetune_10h"}.get(split, f"finetune_{split}"))
    cfg = resolve_finetune(split)
    assert cfg.split == split
    assert cfg == dataclasses.replace(merge(FinetuneConfig(), shipped), split=split)
    for key, value in _flat(shipped).items():  # every recipe value is in force
        assert _get(cfg, key) == (tuple(value) if isinstance(value, list) else value), key
    key = _a_key_the_recipe_leaves_alone(FinetuneConfig(), shipped)
    assert _get(cfg, key) == _get(FinetuneConfig(), key)


def test_finetune_each_layer_beats_the_one_before(tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text("[train]\nmax_steps = 111\nsave_every = 7\nlog_every = 3\n[optim]\nlr = 0.25\n")
    cfg = resolve_finetune("1h", recipe)
    assert (cfg.train.max_steps, cfg.train.save_every, cfg.train.log_every, cfg.optim.lr) == (111, 7, 3, 0.25)

    cfg = resolve_finetune("1h", recipe, sets=("train.max_steps=222", "train.save_every=2e1"))
    assert (cfg.train.max_steps, cfg.train.save_every, cfg.train.log_every) == (222, 20, 3)

    cfg = resolve_finetune("1h", recipe, sets=("train.max_steps=222", "train.save_every=2e1"),
                           flags={"train.max_steps": 333, "optim.lr": None, "data": "prep", "lora.enabled": False})
    assert (cfg.train.max_steps, cfg.train.save_every, cfg.train.log_every) == (333, 20, 3)
    assert cfg.optim.lr == 0.25  # a flag left at None does not override
    assert cfg.data == "prep" and cfg.lora.enabled is False
    # what a layer does not name stays what the layer below said
    assert cfg.model == resolve_finetune("1h").model


def test_finetune_split_is_checked_and_the_recipe_cannot_change_it(tmp_path):
    with pytest.raises(LowresError, match="--split must be one of 10min, 1h, 10h, full, not '2h'"):
        resolve_finetune("2h")
    recipe = tmp_path / "r.toml"
    recipe.write_text('split = "10h"\n')
    assert resolve_finetune("10min", recipe).split == "10min"


def test_adapt_layers(tmp_path):
    shipped = load_recipe("adapt")
    assert resolve_adapt() == merge(AdaptConfig(), shipped)
    assert resolve_adapt().lora.enabled is False
    key = _a_key_the_recipe_leaves_alone(AdaptConfig(), shipped)
    assert _get(resolve_adapt(), key) == _get(AdaptConfig(), key)
    recipe = tmp_path / "mine.toml"
    recipe.write_text("[train]\nmax_steps = 111\nlog_every = 3\n[gumbel]\nmin = 0.25\n")
    cfg = resolve_adapt(recipe)
    assert (cfg.train.max_steps, cfg.train.log_every, cfg.gumbel.min) == (111, 3, 0.25)
    cfg = resolve_adapt(recipe, sets=("train.max_steps=222", "gumbel.min=0.1"))
    assert (cfg.train.max_steps, cfg.train.log_every, cfg.gumbel.min) == (222, 3, 0.1)
    cfg = resolve_adapt(recipe, sets=("train.max_steps=222",), flags={"train.max_steps": 333, "base": "tiny",
                                                                       "unlabeled": None, "lora.enabled": True})
    assert (cfg.train.max_steps, cfg.base, cfg.unlabeled, cfg.lora.enabled) == (333, "tiny", "", True)


def test_recipes_are_found_by_name_or_path_and_bad_ones_are_refused(tmp_path):
    assert load_recipe("finetune_1h") == load_recipe(recipe_dir() / "finetune_1h.toml") and load_recipe("finetune_1h")
    with pytest.raises(LowresError, match="Recipe not found: no-such-recipe.*finetune_1h"):
        load_recipe("no-such-recipe")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nmax_steps = 1\n")
    with pytest.raises(LowresError, match=r"bad\.toml is not valid TOML"):
        load_recipe(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("[optim]\nlrr = 1e-3\n")
    with pytest.raises(LowresError, match=r"Did you mean optim\.lr\?"):
        resolve_finetune("1h", typo)
