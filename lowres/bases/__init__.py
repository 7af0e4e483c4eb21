"""Self-supervised bases that ship inside the package, usable offline by name (``--base tiny-ssl``).

Each is two files in this folder: ``NAME.safetensors`` (the encoder: torchaudio ``Wav2Vec2Model`` weights
under ``backbone.`` and the learned ``mask_emb``) and ``NAME.json`` (its architecture as a
:class:`~lowres.model.backbone.BackboneSpec`, the fingerprint of its weights, the objective it was trained
with and its provenance: languages, hours, updates, final metrics, the lowres commit, the build command).
``scripts/build_base.py`` rebuilds them from nothing with lowres's own commands; :func:`pack_base` is its
last step. Loading checks the fingerprint, so a damaged or edited file is refused rather than trained on.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from lowres import LowresError

SUFFIX_WEIGHTS, SUFFIX_INFO = ".safetensors", ".json"


def _folder():
    """This package's folder (a Traversable: a wheel may be installed zipped)."""
    return resources.files(__name__)


def shipped_names() -> tuple[str, ...]:
    """The names of the bases in this package (``tiny-ssl``)."""
    folder = _folder()
    names = {p.name[: -len(SUFFIX_INFO)] for p in folder.iterdir() if p.name.endswith(SUFFIX_INFO)}
    return tuple(sorted(n for n in names if (folder / f"{n}{SUFFIX_WEIGHTS}").is_file()))


def describe(name: str) -> dict:
    """The ``NAME.json`` of a shipped base: spec, fingerprint, objective, provenance."""
    info = _folder() / f"{name}{SUFFIX_INFO}"
    return json.loads(info.read_text(encoding="utf-8"))


def load_shipped(name: str):
    """A shipped base as a :class:`~lowres.model.backbone.LoadedBackbone`, its fingerprint checked."""
    from safetensors.torch import load

    from lowres.model.backbone import BackboneSpec, LoadedBackbone, build_model, fingerprint

    info = describe(name)
    spec = BackboneSpec.from_dict({**info["spec"], "pretrained": True, "name": name})
    weights = _folder() / f"{name}{SUFFIX_WEIGHTS}"
    damaged = (f"The shipped base {name} ({weights}) is damaged or was changed after it was built. Reinstall "
               "lowres (`pip install --force-reinstall lowres`), or rebuild it with scripts/build_base.py.")
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


def pack_base(run: str | Path, folder: str | Path, name: str, provenance: dict) -> Path:
    """Write ``folder/NAME.safetensors`` + ``NAME.json`` from a finished lowres adapt run (its encoder, no
    pretraining heads), with ``provenance`` plus the run's objective, updates and final training metrics."""
    from safetensors.torch import save

    from lowres.fsutil import atomic_write_bytes, atomic_write_json
    from lowres.runs import load_encoder, read_run

    run, folder = Path(run), Path(folder)
    record = read_run(run)
    if record.kind != "adapt":
        raise LowresError(f"{run} is a lowres {record.kind} run; a shipped base is packed from an adapt run.")
    loaded = load_encoder(run)
    state = {f"backbone.{k}": v.detach().contiguous() for k, v in loaded.model.state_dict().items()}
    state["mask_emb"] = loaded.mask_embedding.detach().contiguous()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    train_rows = [r for r in rows if "masked_accuracy" in r or "loss" in r]
    last = train_rows[-1] if train_rows else {}
    keep = ("step", "loss", "masked_accuracy", "unmasked_accuracy", "predicted_perplexity", "target_perplexity",
            "masked_fraction", "elapsed_s")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8")) if (run / "summary.json").is_file() else {}
    units = run / "units" / "units.json"
    spec = {k: v for k, v in record.spec().to_dict().items() if k not in ("pretrained", "name")}
    info = {
        "name": name,
        "spec": spec,
        "fingerprint": loaded.fingerprint,
        "objective": record.config.get("objective", "wav2vec2"),
        "updates": last.get("step"),
        "final_metrics": {k: last[k] for k in keep if k in last},
        "units": _without_pieces(units),
        "train_wall_seconds": summary.get("wall_seconds"),
        "adapt_config": record.config,
        "provenance": provenance,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{SUFFIX_WEIGHTS}"
    atomic_write_bytes(path, save(state, metadata={"name": name, "fingerprint": loaded.fingerprint}))
    atomic_write_json(folder / f"{name}{SUFFIX_INFO}", info)
    return path


def _without_pieces(units: Path) -> dict | None:
    """The run's units report without its per-piece list (the base ships without its audio)."""
    if not units.is_file():
        return None
    return {k: v for k, v in json.loads(units.read_text(encoding="utf-8")).items() if k != "pieces"}
