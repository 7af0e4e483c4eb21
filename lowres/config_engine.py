"""The configuration engine: turning recipes, ``--set a.b=c`` and flags into the frozen dataclasses of
lowres/config.py, and the validation helpers their ``__post_init__`` checks use.

- :func:`merge` lays a nested dict over a dataclass, strictly: an unknown key is an error naming the closest
  known key, and every value is coerced to its field's type (``"1e-3"`` to a float, ``[1, 2]`` to a tuple) or
  refused with the dotted key and what was expected;
- :func:`parse_sets` reads ``--set`` items (TOML values: ``--set optim.lr=1e-4``); :func:`load_recipe` a recipe
  by path or by shipped name; :func:`layer` merges and names the source of a refused value;
- :func:`check` / :func:`check_range` are the one-line rules the dataclasses use, each message naming its key.

It knows nothing of lowres's settings (lowres/config.py declares them) and imports nothing of lowres but its
error type.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from lowres import LowresError

# ---------------------------------------------------------------------------------------------------
# generic machinery


def to_dict(cfg) -> dict:
    """Nested plain dict (tuples become lists), ready for JSON or TOML."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        elif isinstance(value, Path):
            value = str(value)
        out[f.name] = value
    return out


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp, where: str):
    """``value`` (from TOML, JSON or a ``--set`` string) converted to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in typing.get_args(tp):
                return None
        last = None
        for a in args:
            try:
                return _coerce(value, a, where)
            except LowresError as exc:
                last = exc
        raise last or LowresError(f"{where}: bad value {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise LowresError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise LowresError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise LowresError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise LowresError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    as_float = float(value)  # "2e3" is a fine way to write 2000
                except ValueError:
                    as_float = None
                if as_float is not None and as_float.is_integer():
                    return int(as_float)
        raise LowresError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise LowresError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise LowresError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise LowresError(f"{where}: expected a string, got {value!r}")
    if typing.get_origin(tp) is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise LowresError(f"{where}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    raise LowresError(f"{where}: cannot set a value of type {_type_name(tp)}")


def _field_types(cls) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _unknown_key(cls, key: str, where: str, root=None) -> LowresError:
    """The message for unknown ``{where}{key}``: the closest key of the same section, else the same key (or a
    close one) in another section of ``root`` (``train.lr`` → ``optim.lr``), else the section's keys."""
    names = [f.name for f in dataclasses.fields(cls)]
    close = [where + n for n in difflib.get_close_matches(key, names, n=1)]
    elsewhere = [k for k in _dotted_keys(root) if k[:k.rfind(".") + 1] != where] if root is not None else []
    same = [k for k in elsewhere if k.rsplit(".", 1)[-1] == key]
    if same:  # the key itself, in another section: the likeliest mistake (train.lr for optim.lr)
        close = same[:3]
    elif not close and elsewhere:
        leaves = {k.rsplit(".", 1)[-1]: k for k in reversed(elsewhere)}
        close = [leaves[n] for n in difflib.get_close_matches(key, list(leaves), n=1)]
    hint = (f" Did you mean {' or '.join(close)}?" if close
            else f" Known keys: {', '.join(where + n for n in names)}.")
    return LowresError(f"Unknown setting {where}{key}.{hint} The settings and their defaults are in "
                       "lowres/config.py and recipes/README.md.")


def _dotted_keys(cfg, prefix: str = "") -> list[str]:
    """Every setting of dataclass ``cfg`` by its dotted name (``optim.lr``), sections walked."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += _dotted_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def merge(cfg, updates: dict, prefix: str = "", root=None):
    """A copy of dataclass ``cfg`` with the nested ``updates`` applied (types checked, unknown keys refused).
    ``root``: the whole configuration when ``cfg`` is one of its sections (where an unknown key is looked for)."""
    root = cfg if root is None else root
    hints = _field_types(type(cfg))
    changes = {}
    for key, value in updates.items():
        if key not in hints:
            raise _unknown_key(type(cfg), key, prefix, root)
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise LowresError(f"Setting {prefix}{key} is a section; give its keys, e.g. {prefix}{key}.name=value")
            changes[key] = merge(current, value, f"{prefix}{key}.", root)
        else:
            changes[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        return dataclasses.replace(cfg, **changes)
    except (ValueError, TypeError) as exc:  # the dataclass's own rule (its message names the dotted key)
        raise LowresError(f"Invalid setting: {exc}.") from None


def parse_sets(items: list[str] | tuple[str, ...]) -> dict:
    """``["optim.lr=1e-3", "lora.rank=16"]`` → nested dict of raw strings."""
    out: dict = {}
    for item in items or ():
        if "=" not in item:
            raise LowresError(f"--set takes key=value (for example --set optim.lr=1e-3), not {item!r}.")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise LowresError(f"--set {item!r}: empty key.")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise LowresError(f"--set {item!r} conflicts with another --set of {p}.")
        node[parts[-1]] = value.strip()
    return out


def from_dict(cls, data: dict):
    """Build dataclass ``cls`` from a nested dict such as a saved ``config.json`` (strict)."""
    return merge(cls(), data)


# ---------------------------------------------------------------------------------------------------
# recipes


def recipe_dir() -> Path:
    """Where the shipped recipes are: the package data folder when installed, ``recipes/`` in a checkout."""
    try:
        folder = resources.files("lowres.recipes")
        if isinstance(folder, Path) and folder.is_dir() and any(folder.glob("*.toml")):
            return folder
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "recipes"


def load_recipe(name_or_path: str | Path) -> dict:
    """A recipe as a nested dict: a TOML path, or a shipped recipe name such as ``finetune_1h``."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = recipe_dir() / f"{name_or_path}.toml"
        if shipped.is_file():
            path = shipped
        else:
            names = sorted(p.stem for p in recipe_dir().glob("*.toml"))
            raise LowresError(f"Recipe not found: {name_or_path}. Pass a TOML file, or one of: {', '.join(names)}.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise LowresError(f"Recipe {path} is not valid TOML: {exc}") from None


# ---------------------------------------------------------------------------------------------------
# validation: one rule per setting, each naming its dotted key (merge turns the ValueError into a LowresError)


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"


def check(section: str, cfg, name: str, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False, optional: bool = False, special: dict | None = None
           ) -> None:
    """Refuse ``cfg.<name>`` unless it is a finite number in the interval (``optional``: None is fine too;
    ``special``: values with a meaning of their own, e.g. ``{-1: "automatic"}``)."""
    value = getattr(cfg, name)
    special = special or {}
    if (value is None and optional) or (value in special and not isinstance(value, bool)):
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        key = f"{section}.{name}" if section else name
        also = "".join(f" or {v:g} ({why})" for v, why in special.items())
        kind = "an integer" if isinstance(value, int) and not isinstance(value, bool) else "a finite number"
        raise ValueError(f"{key} must be {kind} {_interval(low, high, low_open, high_open)}{also}, not {value!r}")


def check_range(section: str, cfg, name: str, low: float | None = None, *, low_open: bool = False) -> None:
    """A ``(lo, hi)`` pair: both finite (and above ``low``), lo <= hi."""
    lo, hi = getattr(cfg, name)
    key = f"{section}.{name}" if section else name
    for v in (lo, hi):
        if not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low)):
            bound = f" {_interval(low, None, low_open, False)}" if low is not None else ""
            raise ValueError(f"{key} must be two finite numbers{bound}, not {[lo, hi]!r}")
    if lo > hi:
        raise ValueError(f"{key} must be [low, high] with low <= high, not {[lo, hi]!r}")


def nest_flags(flags: dict | None) -> dict:
    """``{"optim.lr": 1e-3, "data": "p"}`` → ``{"optim": {"lr": 1e-3}, "data": "p"}``; None values left out."""
    updates: dict = {}
    for key, value in (flags or {}).items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        node = updates
        for part in section.split(".") if section else []:
            node = node.setdefault(part, {})
        node[name] = value
    return updates


def flat_keys(d: dict, prefix: str = "") -> dict:
    """``{"optim": {"lr": 1e-3}}`` → ``{"optim.lr": 1e-3}``: a nested dict by dotted key."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def merge_nested(base: dict, updates: dict) -> dict:
    """A copy of nested dict ``base`` with ``updates`` laid over it (sections merged key by key)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_nested(out[key], value)
        else:
            out[key] = value
    return out


def layer(cfg, updates: dict, source: str):
    """``merge`` that says where a refused value came from (a recipe file, --set, a flag)."""
    try:
        return merge(cfg, updates)
    except LowresError as exc:
        raise LowresError(f"{str(exc).rstrip('.')} (given in {source}).") from None
