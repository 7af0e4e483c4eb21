"""The self-supervised bases that ship inside the package, usable offline by name (``--base tiny-ssl``).

Each is two files in the ``lowres/bases/`` folder: ``NAME.safetensors`` (the encoder: torchaudio
``Wav2Vec2Model`` weights under ``backbone.`` and the learned ``mask_emb``) and ``NAME.json`` (its architecture as
a :class:`~lowres.model.backbone.BackboneSpec`, the fingerprint of its weights, the objective it was trained with
and its provenance: languages, hours, updates, final metrics, the lowres commit, the build command).
``scripts/build_base.py`` rebuilds them from nothing with lowres's own commands and packs them. Loading checks
the fingerprint, so a damaged or edited file is refused rather than trained on.
"""

from __future__ import annotations

import json
from importlib import resources

from lowres import LowresError
from lowres.runtime import install_hint

SUFFIX_WEIGHTS, SUFFIX_INFO = ".safetensors", ".json"
RELEASED = ("tiny-ssl",)  # the bases every lowres release ships (scripts/build_base.py writes them)


def _folder():
    """The folder of the shipped bases (a Traversable: a wheel may be installed zipped)."""
    return resources.files("lowres.bases")


def shipped_names() -> tuple[str, ...]:
    """The names of the bases in the package (``tiny-ssl``)."""
    folder = _folder()
    names = {p.name[: -len(SUFFIX_INFO)] for p in folder.iterdir() if p.name.endswith(SUFFIX_INFO)}
    return tuple(sorted(n for n in names if (folder / f"{n}{SUFFIX_WEIGHTS}").is_file()))


def incomplete_shipped(name: str) -> str | None:
    """Why the shipped base ``name`` cannot be used when one of its two files is missing (None when it is whole,
    or when no such base ships): a message naming the missing file and how to restore it."""
    folder = _folder()
    files = {suffix: folder / f"{name}{suffix}" for suffix in (SUFFIX_WEIGHTS, SUFFIX_INFO)}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if not missing or (len(missing) == len(files) and name not in RELEASED):
        return None
    return (f"The shipped base {name}'s files are incomplete: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing from the installed package. Restore lowres's files "
            f"(`{install_hint(reinstall=True)}`), or rebuild the base with scripts/build_base.py.")


def shipped_info(name: str) -> dict:
    """The ``NAME.json`` of a shipped base: spec, fingerprint, objective, provenance."""
    info = _folder() / f"{name}{SUFFIX_INFO}"
    return json.loads(info.read_text(encoding="utf-8"))


def load_shipped(name: str):
    """A shipped base as a :class:`~lowres.model.backbone.LoadedBackbone`, its fingerprint checked."""
    from safetensors.torch import load

    from lowres.model.backbone import BackboneSpec, LoadedBackbone, build_model, fingerprint

    info = shipped_info(name)
    spec = BackboneSpec.from_dict({**info["spec"], "pretrained": True, "name": name})
    weights = _folder() / f"{name}{SUFFIX_WEIGHTS}"
    damaged = (f"The shipped base {name} ({weights}) is damaged or was changed after it was built. Restore lowres's "
               f"files (`{install_hint(reinstall=True)}`), or rebuild it with scripts/build_base.py.")
    try:
        state = load(weights.read_bytes())
    except Exception as exc:  # a truncated or overwritten file: safetensors' own errors name no file
        raise LowresError(f"{damaged} ({type(exc).__name__}: {exc})") from None
    model = build_model(spec)
    missing, unexpected = model.load_state_dict(
        {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, strict=False)
    if missing or unexpected or "mask_emb" not in state:
        raise LowresError(f"{damaged} (weights missing: {missing[:3]}, unexpected: {unexpected[:3]})")
    got = fingerprint(model)
    if got != info["fingerprint"]:
        raise LowresError(f"{damaged} (fingerprint {got}, recorded {info['fingerprint']})")
    prov = info.get("provenance", {})
    source = (f"lowres shipped base {name} ({info.get('objective', '?')} from scratch on "
              f"{prov.get('unlabeled_hours', '?')} h of unlabeled synthetic speech in "
              f"{len(prov.get('languages', []))} languages, {info.get('updates', '?')} updates)")
    return LoadedBackbone(model, spec, state["mask_emb"].clone(), {}, got, source=source)
